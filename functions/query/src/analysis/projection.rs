//! `property_names` (product.md §9): an extraction that returns only some properties of each
//! event.

use super::QueryError;
use serde_json::{Map, Value};

/// At most this many paths: more is a mistake, and the projection costs per event returned.
pub const MAX_PROPERTY_NAMES: usize = 1_000;

/// Parses the `property_names` parameter: a non-empty JSON array of dotted paths
/// (`["keen.timestamp", "user.address.city"]`), duplicates kept once, or one path alone (Keen's
/// Python SDK JSON-encodes a lone name as `"price"`, its Ruby SDK sends it bare).
pub fn parse_property_names(text: &str) -> Result<Vec<String>, QueryError> {
    let bad = |what: String| {
        QueryError::InvalidParameter(format!(
            "property_names {what}; give a JSON array of dotted property paths, e.g. \
             [\"keen.timestamp\", \"user.address.city\"]"
        ))
    };
    let trimmed = text.trim();
    let items = match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Array(items)) => items,
        Ok(Value::String(path)) => vec![Value::String(path)],
        Ok(_) => return Err(bad("is not a JSON array".into())),
        Err(e) if trimmed.starts_with('[') => {
            return Err(bad(format!("is not valid JSON ({e})")));
        }
        Err(_) => vec![Value::String(trimmed.to_owned())],
    };
    if items.is_empty() {
        return Err(bad("is empty (omit it to get whole events)".into()));
    }
    if items.len() > MAX_PROPERTY_NAMES {
        return Err(bad(format!(
            "holds {} paths, more than the {MAX_PROPERTY_NAMES} accepted",
            items.len()
        )));
    }
    let mut paths: Vec<String> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::String(path) = item else {
            return Err(bad(format!("[{index}] is not a string")));
        };
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(bad(format!("[{index}] {path:?} is not a dotted path")));
        }
        if !paths.contains(path) {
            paths.push(path.clone());
        }
    }
    Ok(paths)
}

/// The event with only the given dotted paths, nested as in the event (`user.address.city`
/// gives `{"user": {"address": {"city": …}}}`). Absent paths are omitted; a path and one below
/// it (`user`, `user.age`) give the whole of the higher one. A non-object event projects to `{}`.
pub fn project(event: &Value, paths: &[String]) -> Value {
    let mut out = Map::new();
    for path in paths {
        let segments: Vec<&str> = path.split('.').collect();
        if let Some(value) = super::filter::lookup(event, path) {
            insert(&mut out, &segments, value);
        }
    }
    Value::Object(out)
}

fn insert(out: &mut Map<String, Value>, segments: &[&str], value: &Value) {
    let [first, rest @ ..] = segments else {
        return;
    };
    if rest.is_empty() {
        out.insert((*first).to_owned(), value.clone());
        return;
    }
    let slot = out
        .entry((*first).to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    // Already holding the whole object (a shorter path came first): it includes this one.
    if let Value::Object(inner) = slot {
        if rest.len() == 1 && inner.contains_key(rest[0]) {
            return;
        }
        insert(inner, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| (*p).to_owned()).collect()
    }

    fn event() -> Value {
        json!({
            "price": 20,
            "note": null,
            "user": {"address": {"city": "Berlin", "zip": "10115"}, "age": 41},
            "keen": {"timestamp": "2024-03-09T10:00:00.000Z", "id": "1bb51b6fbfd8d21897271fce"}
        })
    }

    #[test]
    fn projection_keeps_nesting_and_omits_absent_paths() {
        let cases = [
            (vec!["price"], json!({"price": 20})),
            (vec!["note"], json!({"note": null})),
            (
                vec!["user.address.city", "keen.timestamp"],
                json!({"user": {"address": {"city": "Berlin"}}, "keen": {"timestamp": "2024-03-09T10:00:00.000Z"}}),
            ),
            (
                vec!["user.address.city", "user.age"],
                json!({"user": {"address": {"city": "Berlin"}, "age": 41}}),
            ),
            (
                vec!["user.age", "user"],
                json!({"user": event()["user"].clone()}),
            ),
            (
                vec!["user", "user.age"],
                json!({"user": event()["user"].clone()}),
            ),
            (
                vec!["user", "user.address.city"],
                json!({"user": event()["user"].clone()}),
            ),
            (vec!["absent", "user.absent", "price.cents"], json!({})),
            (vec![], json!({})),
        ];
        for (list, expected) in cases {
            assert_eq!(project(&event(), &paths(&list)), expected, "{list:?}");
        }
        assert_eq!(project(&json!([1]), &paths(&["a"])), json!({}));
    }

    #[test]
    fn property_names_parse() {
        assert_eq!(
            parse_property_names(r#"["keen.timestamp", "user.address.city", "keen.timestamp"]"#),
            Ok(paths(&["keen.timestamp", "user.address.city"]))
        );
        // One path alone: bare (Ruby SDK) or JSON-encoded (Python SDK).
        assert_eq!(parse_property_names("price"), Ok(paths(&["price"])));
        assert_eq!(parse_property_names("\"a.b\""), Ok(paths(&["a.b"])));
        let cases = [
            ("[\"a\"", "not valid JSON"),
            ("a..b", "[0] \"a..b\" is not a dotted path"),
            ("{}", "not a JSON array"),
            ("[]", "is empty"),
            ("[1]", "[0] is not a string"),
            (r#"["a", ""]"#, "[1] \"\" is not a dotted path"),
            (r#"["a.", "b"]"#, "[0] \"a.\" is not a dotted path"),
        ];
        for (text, expected) in cases {
            match parse_property_names(text) {
                Err(QueryError::InvalidParameter(message)) => {
                    assert!(message.contains(expected), "{text}: {message}");
                }
                other => panic!("{text} gave {other:?}"),
            }
        }
        let many = serde_json::to_string(
            &(0..=MAX_PROPERTY_NAMES)
                .map(|i| format!("p{i}"))
                .collect::<Vec<_>>(),
        )
        .expect("serialises");
        assert!(parse_property_names(&many).is_err());
    }
}
