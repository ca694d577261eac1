//! Placeholders (product.md §4.2): a string value that is exactly `${keen.ip}` or
//! `${keen.user_agent}` takes the value of the record header `keen-ip` or `keen-user-agent`.
//!
//! With no such header the property is removed (an array element is removed from its array):
//! a Kafka producer is a server, so its socket address says nothing about the end user, and
//! inventing a value would be worse than leaving it out. Header bytes that are not UTF-8 are
//! decoded lossily, since user agents in the wild carry stray Latin-1 bytes.

use crate::event::EventObject;
use crate::record::{HEADER_IP, HEADER_USER_AGENT, InboundRecord};
use serde_json::Value;

/// The IP placeholder.
pub const IP_PLACEHOLDER: &str = "${keen.ip}";
/// The user-agent placeholder.
pub const USER_AGENT_PLACEHOLDER: &str = "${keen.user_agent}";

/// Header values the placeholders resolve to.
#[derive(Debug, Clone, Default)]
pub struct PlaceholderValues {
    ip: Option<String>,
    user_agent: Option<String>,
}

impl PlaceholderValues {
    /// Reads the placeholder headers of a record.
    pub fn from_record(record: &InboundRecord<'_>) -> Self {
        let text = |name| {
            record
                .header(name)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        PlaceholderValues {
            ip: text(HEADER_IP),
            user_agent: text(HEADER_USER_AGENT),
        }
    }

    /// Values given directly (tests, replays).
    pub fn new(ip: Option<String>, user_agent: Option<String>) -> Self {
        PlaceholderValues { ip, user_agent }
    }

    fn lookup(&self, text: &str) -> Option<Option<&String>> {
        match text {
            IP_PLACEHOLDER => Some(self.ip.as_ref()),
            USER_AGENT_PLACEHOLDER => Some(self.user_agent.as_ref()),
            _ => None,
        }
    }
}

/// Resolves every placeholder in `event`, at any depth.
pub fn resolve(event: &mut EventObject, values: &PlaceholderValues) {
    resolve_object(event, values, 0);
}

// Deeper than the event rules allow is rejected later anyway; stopping here keeps the walk's
// stack bounded whatever the input.
const WALK_LIMIT: usize = crate::event::MAX_DEPTH + 2;

fn resolve_object(map: &mut EventObject, values: &PlaceholderValues, depth: usize) {
    if depth > WALK_LIMIT {
        return;
    }
    map.retain(|_, value| resolve_value(value, values, depth));
}

/// Returns false when the value must be removed.
fn resolve_value(value: &mut Value, values: &PlaceholderValues, depth: usize) -> bool {
    match value {
        Value::String(text) => match values.lookup(text) {
            None => true,
            Some(None) => false,
            Some(Some(replacement)) => {
                replacement.clone_into(text);
                true
            }
        },
        Value::Object(map) => {
            resolve_object(map, values, depth + 1);
            true
        }
        Value::Array(items) if depth <= WALK_LIMIT => {
            items.retain_mut(|item| resolve_value(item, values, depth + 1));
            true
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolved(event: Value, values: &PlaceholderValues) -> Value {
        let Value::Object(mut map) = event else {
            panic!("object")
        };
        resolve(&mut map, values);
        Value::Object(map)
    }

    #[test]
    fn placeholders_take_header_values_at_any_depth() {
        let values = PlaceholderValues::new(Some("81.2.69.142".into()), Some("Mozilla/5.0".into()));
        let out = resolved(
            json!({
                "ip": "${keen.ip}",
                "nested": {"ua": "${keen.user_agent}", "list": ["${keen.ip}", "x"]},
                "not_exact": " ${keen.ip}",
                "other": "${keen.other}",
            }),
            &values,
        );
        assert_eq!(
            out,
            json!({
                "ip": "81.2.69.142",
                "nested": {"ua": "Mozilla/5.0", "list": ["81.2.69.142", "x"]},
                "not_exact": " ${keen.ip}",
                "other": "${keen.other}",
            })
        );
    }

    #[test]
    fn missing_headers_remove_the_property() {
        let values = PlaceholderValues::new(None, Some("UA".into()));
        let out = resolved(
            json!({"ip": "${keen.ip}", "ua": "${keen.user_agent}", "l": [1, "${keen.ip}", 2]}),
            &values,
        );
        assert_eq!(out, json!({"ua": "UA", "l": [1, 2]}));
    }

    #[test]
    fn headers_are_read_lossily() {
        let headers = [
            crate::record::Header::new(HEADER_IP, "10.0.0.1"),
            crate::record::Header::new(HEADER_USER_AGENT, vec![b'A', 0xe9, b'B']),
        ];
        let record = InboundRecord {
            topic: "t",
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: None,
            value: None,
            headers: &headers,
        };
        let values = PlaceholderValues::from_record(&record);
        assert_eq!(values.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(values.user_agent.as_deref(), Some("A\u{fffd}B"));
    }
}
