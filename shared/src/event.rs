//! The event rules of product.md §4: decoding a record value and validating names and values.
//!
//! Decoding (step 1 of product.md §3) accepts only UTF-8 JSON whose top level is a non-empty
//! object. Validation (step 5) walks the whole event once, depth first in key order, and reports
//! the first breach with its JSON path. The `keen` namespace has rules of its own
//! ([`crate::keen`]).

use crate::reject::{ErrorCode, JsonPath, Rejection};
use serde_json::{Map, Value};

/// Deepest accepted nesting: the top-level object is depth 1.
pub const MAX_DEPTH: usize = 100;
/// Longest accepted property name, in characters.
pub const MAX_PROPERTY_NAME_LEN: usize = 255;
/// String values must be shorter than this, in characters.
pub const MAX_STRING_LEN: usize = 10_000;

/// An event as decoded: the top-level object.
pub type EventObject = Map<String, Value>;

/// Decodes a record value into an event object (product.md §3 step 1).
pub fn decode(value: Option<&[u8]>) -> Result<EventObject, Rejection> {
    let Some(bytes) = value else {
        return Err(invalid_event(
            "the record has no value (a tombstone); send a JSON object as the record value",
            "invalid_json",
        ));
    };
    if let Err(error) = std::str::from_utf8(bytes) {
        return Err(invalid_event(
            format!(
                "the record value is not valid UTF-8 (invalid byte at position {}); \
                 send the event as UTF-8 JSON",
                error.valid_up_to()
            ),
            "invalid_json",
        ));
    }
    let parsed: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(error) => return Err(json_error(&error)),
    };
    match parsed {
        Value::Object(map) if map.is_empty() => Err(invalid_event(
            "the event is an empty object; an event needs at least one property",
            "empty_object",
        )),
        Value::Object(map) => Ok(map),
        other => Err(invalid_event(
            format!(
                "the event is a JSON {}; the top level of an event must be an object",
                json_type_name(&other)
            ),
            "not_an_object",
        )),
    }
}

fn json_error(error: &serde_json::Error) -> Rejection {
    let text = error.to_string();
    // serde_json refuses documents nested past 128 levels before we see them: that is the
    // depth rule, not a syntax problem, and the customer should be told so.
    if text.starts_with("recursion limit exceeded") {
        return too_deep(None);
    }
    if text.starts_with("number out of range") {
        return Rejection::new(
            ErrorCode::InvalidPropertyValueError,
            format!(
                "a number at line {} column {} is outside the signed 64-bit integer range",
                error.line(),
                error.column()
            ),
        );
    }
    invalid_event(
        format!("the record value is not valid JSON: {text}"),
        "invalid_json",
    )
}

fn invalid_event(message: impl Into<String>, detail: &'static str) -> Rejection {
    Rejection::new(ErrorCode::InvalidEventError, message).with_detail(detail)
}

fn too_deep(path: Option<&JsonPath<'_>>) -> Rejection {
    let rejection = invalid_event(
        format!("the event is nested more than {MAX_DEPTH} levels deep; flatten it"),
        "too_deep",
    );
    match path {
        Some(path) => rejection.with_path(path.to_string()),
        None => rejection,
    }
}

/// The JSON type name used in messages and in the collection schema.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validates every property name and value of `event` (product.md §4). `raw` is the record value
/// the event was decoded from, consulted only to settle numbers at the very edge of the 64-bit
/// range, where a 64-bit float cannot tell in-range from out-of-range.
pub fn validate(event: &EventObject, raw: Option<&[u8]>) -> Result<(), Rejection> {
    let root = JsonPath::Root;
    let mut walk = Walk {
        raw,
        edge_checked: None,
    };
    walk.object(event, &root, 1)
}

struct Walk<'r> {
    raw: Option<&'r [u8]>,
    /// Whether the raw text holds an out-of-range number literal, once computed.
    edge_checked: Option<bool>,
}

impl Walk<'_> {
    fn object(
        &mut self,
        map: &EventObject,
        path: &JsonPath<'_>,
        depth: usize,
    ) -> Result<(), Rejection> {
        if depth > MAX_DEPTH {
            return Err(too_deep(Some(path)));
        }
        for (name, value) in map {
            let here = path.key(name);
            check_property_name(name, &here)?;
            self.value(value, &here, depth)?;
        }
        Ok(())
    }

    fn value(&mut self, value: &Value, path: &JsonPath<'_>, depth: usize) -> Result<(), Rejection> {
        match value {
            Value::Null | Value::Bool(_) => Ok(()),
            Value::String(text) => check_string(text, path),
            Value::Number(number) => self.number(number, path),
            Value::Object(map) => self.object(map, path, depth + 1),
            Value::Array(items) => {
                if depth + 1 > MAX_DEPTH {
                    return Err(too_deep(Some(path)));
                }
                for (index, item) in items.iter().enumerate() {
                    self.value(item, &path.index(index), depth + 1)?;
                }
                Ok(())
            }
        }
    }

    fn number(
        &mut self,
        number: &serde_json::Number,
        path: &JsonPath<'_>,
    ) -> Result<(), Rejection> {
        if number.is_i64() {
            return Ok(());
        }
        if number.is_u64() {
            return Err(number_out_of_range(path));
        }
        let float = number.as_f64().unwrap_or(f64::NAN);
        const EDGE: f64 = 9_223_372_036_854_775_808.0; // 2^63
        if float.abs() < EDGE {
            return Ok(());
        }
        if float.abs() > EDGE || float.is_nan() {
            return Err(number_out_of_range(path));
        }
        // Exactly ±2^63 as a float: the literal may have been just inside or just outside the
        // range. Settle it from the text (rare enough that a second scan costs nothing).
        let out_of_range = *self
            .edge_checked
            .get_or_insert_with(|| self.raw.is_some_and(raw_has_out_of_range_number));
        if out_of_range {
            Err(number_out_of_range(path))
        } else {
            Ok(())
        }
    }
}

fn number_out_of_range(path: &JsonPath<'_>) -> Rejection {
    Rejection::at(
        ErrorCode::InvalidPropertyValueError,
        path,
        format!(
            "the number at {path} is outside the signed 64-bit integer range \
             (-9223372036854775808 to 9223372036854775807); send it as a string"
        ),
    )
}

/// Checks a property name (product.md §4): 1 to 255 characters, not only whitespace, no `.`,
/// not starting with `$`.
pub fn check_property_name(name: &str, path: &JsonPath<'_>) -> Result<(), Rejection> {
    let problem = property_name_problem(name);
    match problem {
        None => Ok(()),
        Some(problem) => Err(Rejection::at(
            ErrorCode::InvalidPropertyNameError,
            path,
            format!("the property name at {path} {problem}"),
        )),
    }
}

/// What is wrong with a property name, if anything (shared with add-on output paths).
pub fn property_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty; property names need 1 to 255 characters".to_owned());
    }
    // Byte length bounds the character count from above: only long names pay for counting.
    if name.len() > MAX_PROPERTY_NAME_LEN {
        let chars = name.chars().count();
        if chars > MAX_PROPERTY_NAME_LEN {
            return Some(format!(
                "is {chars} characters long; the limit is {MAX_PROPERTY_NAME_LEN}"
            ));
        }
    }
    if name.starts_with('$') {
        return Some("starts with '$', which is reserved".to_owned());
    }
    if name.contains('.') {
        return Some(
            "contains '.', which separates nested properties; use another character".to_owned(),
        );
    }
    if name.chars().all(char::is_whitespace) {
        return Some("is only whitespace".to_owned());
    }
    None
}

fn check_string(text: &str, path: &JsonPath<'_>) -> Result<(), Rejection> {
    if text.len() < MAX_STRING_LEN {
        return Ok(());
    }
    let chars = text.chars().count();
    if chars < MAX_STRING_LEN {
        return Ok(());
    }
    Err(Rejection::at(
        ErrorCode::InvalidPropertyValueError,
        path,
        format!(
            "the string at {path} is {chars} characters long; strings must be shorter than \
             {MAX_STRING_LEN} characters"
        ),
    ))
}

/// Scans JSON text for a number literal outside `[i64::MIN, i64::MAX]`, exactly.
fn raw_has_out_of_range_number(raw: &[u8]) -> bool {
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'"' => {
                i += 1;
                while i < raw.len() && raw[i] != b'"' {
                    i += if raw[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < raw.len()
                    && matches!(raw[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                if !literal_in_i64_range(&raw[start..i]) {
                    return true;
                }
            }
            _ => i += 1,
        }
    }
    false
}

/// Whether a JSON number literal lies within `[i64::MIN, i64::MAX]`, decided exactly on its
/// decimal digits.
fn literal_in_i64_range(literal: &[u8]) -> bool {
    let (negative, rest) = match literal.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, literal),
    };
    let (mantissa, exponent) = match rest.iter().position(|b| matches!(b, b'e' | b'E')) {
        Some(at) => (
            &rest[..at],
            std::str::from_utf8(&rest[at + 1..])
                .ok()
                .and_then(|e| e.parse::<i64>().ok()),
        ),
        None => (rest, Some(0)),
    };
    let Some(exponent) = exponent else {
        return false;
    };
    let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
        Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
        None => (mantissa, &[][..]),
    };
    // digits = all significant digits; the decimal point sits after `point` of them.
    let digits: Vec<u8> = int_part.iter().chain(frac_part).copied().collect();
    let first_nonzero = digits.iter().position(|&d| d != b'0');
    let Some(first_nonzero) = first_nonzero else {
        return true;
    }; // zero
    let digits = &digits[first_nonzero..];
    let point = int_part.len() as i64 - first_nonzero as i64 + exponent;
    // Integer part digits of the value, and whether a non-zero fraction follows.
    if point > 19 {
        return false;
    }
    if point <= 0 {
        return true; // |value| < 1
    }
    let point = point as usize;
    let mut integer: Vec<u8> = digits.iter().take(point).copied().collect();
    while integer.len() < point {
        integer.push(b'0');
    }
    let has_fraction = digits.len() > point && digits[point..].iter().any(|&d| d != b'0');
    let limit: &[u8] = if negative {
        b"9223372036854775808"
    } else {
        b"9223372036854775807"
    };
    if integer.len() < limit.len() {
        return true;
    }
    match integer.as_slice().cmp(limit) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Equal => !has_fraction,
        std::cmp::Ordering::Greater => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(raw: &str) -> Result<(), Rejection> {
        let event = decode(Some(raw.as_bytes()))?;
        validate(&event, Some(raw.as_bytes()))
    }

    fn code_of(raw: &str) -> Option<ErrorCode> {
        check(raw).err().map(|r| r.code)
    }

    fn nested(depth: usize) -> String {
        // depth 1 = {"a":0}
        let mut text = String::from("0");
        for _ in 0..depth {
            text = format!("{{\"a\":{text}}}");
        }
        text
    }

    fn nested_arrays(depth: usize) -> String {
        // the top-level object counts as 1, each array adds 1
        let mut text = String::from("0");
        for _ in 1..depth {
            text = format!("[{text}]");
        }
        format!("{{\"a\":{text}}}")
    }

    #[test]
    fn decoding_rules() {
        use ErrorCode::*;
        type Case<'a> = (&'a [u8], Option<(ErrorCode, &'a str)>);
        let cases: Vec<Case<'_>> = vec![
            (b"{\"a\":1}", None),
            (b"  {\"a\":1}\n", None),
            (b"{}", Some((InvalidEventError, "empty_object"))),
            (b"[]", Some((InvalidEventError, "not_an_object"))),
            (b"[{\"a\":1}]", Some((InvalidEventError, "not_an_object"))),
            (b"\"text\"", Some((InvalidEventError, "not_an_object"))),
            (b"42", Some((InvalidEventError, "not_an_object"))),
            (b"null", Some((InvalidEventError, "not_an_object"))),
            (b"", Some((InvalidEventError, "invalid_json"))),
            (b"{\"a\":", Some((InvalidEventError, "invalid_json"))),
            (
                b"{\"a\":1}{\"b\":2}",
                Some((InvalidEventError, "invalid_json")),
            ),
            (b"{\"a\":NaN}", Some((InvalidEventError, "invalid_json"))),
            (b"{'a':1}", Some((InvalidEventError, "invalid_json"))),
            (
                b"{\"a\":\"\xff\"}",
                Some((InvalidEventError, "invalid_json")),
            ),
            (
                b"\xef\xbb\xbf{\"a\":1}",
                Some((InvalidEventError, "invalid_json")),
            ),
        ];
        for (raw, expected) in cases {
            let got = decode(Some(raw))
                .err()
                .map(|r| (r.code, r.detail.unwrap_or("")));
            assert_eq!(got, expected, "value {:?}", String::from_utf8_lossy(raw));
        }
        let tombstone = decode(None).expect_err("no value");
        assert_eq!(tombstone.detail, Some("invalid_json"));
        assert!(tombstone.message.contains("tombstone"));
    }

    #[test]
    fn depth_boundary_is_100() {
        assert_eq!(code_of(&nested(100)), None);
        let err = check(&nested(101)).expect_err("too deep");
        assert_eq!(
            (err.code, err.detail),
            (ErrorCode::InvalidEventError, Some("too_deep"))
        );
        assert_eq!(
            err.path.as_deref().map(|p| p.matches(".a").count()),
            Some(100)
        );
        assert_eq!(code_of(&nested_arrays(100)), None);
        assert_eq!(
            code_of(&nested_arrays(101)),
            Some(ErrorCode::InvalidEventError)
        );
        // Past serde_json's own recursion limit the depth rule still names the problem.
        let err = check(&nested(500)).expect_err("far too deep");
        assert_eq!(err.detail, Some("too_deep"));
    }

    #[test]
    fn property_name_rules() {
        let ok = ["a", "A b", " x ", "not$first$", "ünïcödé", "a-b_c", "keen2"];
        for name in ok {
            assert_eq!(
                code_of(&json!({ name: 1 }).to_string()),
                None,
                "name {name:?}"
            );
        }
        let long_ok = "n".repeat(255);
        let long_bad = "n".repeat(256);
        let multibyte_ok = "é".repeat(255);
        assert_eq!(code_of(&json!({ long_ok: 1 }).to_string()), None);
        assert_eq!(code_of(&json!({ multibyte_ok: 1 }).to_string()), None);
        let bad = ["", " ", "\t\n", "a.b", ".", "$a", "$", long_bad.as_str()];
        for name in bad {
            let err = check(&json!({ name: 1 }).to_string()).expect_err(name);
            assert_eq!(
                err.code,
                ErrorCode::InvalidPropertyNameError,
                "name {name:?}"
            );
            assert!(err.path.is_some());
        }
        // Checked at every level, inside arrays too.
        let err = check(r#"{"a":[1,{"b":{"c.d":1}}]}"#).expect_err("nested");
        assert_eq!(err.code, ErrorCode::InvalidPropertyNameError);
        assert_eq!(err.path.as_deref(), Some(r#"$.a[1].b["c.d"]"#));
    }

    #[test]
    fn string_length_boundary() {
        let ok = "s".repeat(9_999);
        let bad = "s".repeat(10_000);
        let ok_multibyte = "ß".repeat(9_999);
        assert_eq!(code_of(&json!({ "a": ok }).to_string()), None);
        assert_eq!(code_of(&json!({ "a": ok_multibyte }).to_string()), None);
        let err = check(&json!({ "a": { "b": [bad] } }).to_string()).expect_err("long");
        assert_eq!(err.code, ErrorCode::InvalidPropertyValueError);
        assert_eq!(err.path.as_deref(), Some("$.a.b[0]"));
        assert!(err.message.contains("10000 characters"));
    }

    #[test]
    fn number_range_boundaries() {
        let ok = [
            "9223372036854775807",
            "-9223372036854775808",
            "0",
            "-0",
            "1.5",
            "-1e18",
            "9.2e18",
            "9223372036854775807.0",
            "-9223372036854775808.0",
            "-9223372036854775807.9",
            "-9.223372036854775808e18",
            "1e-400",
            "123456789012345678901234567890e-20",
        ];
        for n in ok {
            assert_eq!(code_of(&format!("{{\"n\":{n}}}")), None, "number {n}");
        }
        let bad = [
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807.5",
            "9223372036854775808.0",
            "-9223372036854775808.5",
            "-9223372036854775809.0",
            "9.3e18",
            "1e19",
            "-1e19",
            "1e300",
            "1e400",
            "-1e400",
        ];
        for n in bad {
            let err = check(&format!("{{\"x\":[{{\"n\":{n}}}]}}")).expect_err(n);
            assert_eq!(err.code, ErrorCode::InvalidPropertyValueError, "number {n}");
        }
        assert_eq!(
            check(r#"{"x":[{"n":9223372036854775808}]}"#)
                .expect_err("u64")
                .path
                .as_deref(),
            Some("$.x[0].n")
        );
    }

    #[test]
    fn arrays_and_nulls_are_stored_as_given() {
        assert_eq!(
            code_of(r#"{"a":null,"b":[null,[],{},[1,"x",{"c":null}]],"d":{}}"#),
            None
        );
    }

    #[test]
    fn exact_literal_range() {
        assert!(literal_in_i64_range(b"9223372036854775807"));
        assert!(!literal_in_i64_range(b"9223372036854775808"));
        assert!(literal_in_i64_range(b"-9223372036854775808"));
        assert!(literal_in_i64_range(b"0.00000"));
        assert!(literal_in_i64_range(b"92233720368547758.07e2"));
        assert!(!literal_in_i64_range(b"92233720368547758.08e2"));
        assert!(literal_in_i64_range(b"9223372036854775807000e-3"));
        assert!(!literal_in_i64_range(b"9223372036854775807001e-3"));
        assert!(!literal_in_i64_range(b"1e99999999999999999999"));
        assert!(!raw_has_out_of_range_number(
            br#"{"s":"9223372036854775808","n":1}"#
        ));
        assert!(raw_has_out_of_range_number(
            br#"{"s":"\"","n":9223372036854775808}"#
        ));
    }
}
