//! The `keen` namespace of an event (product.md §4.1) and the deterministic `keen.id`
//! (architecture.md, "keen.id").
//!
//! The producer may set `timestamp`, `location`, `addons` and `uniqueness_token`; the service
//! sets `created_at` and `id` and overwrites whatever the producer sent there. `addons` is taken
//! out for the add-on stage and never stored.

use crate::event::EventObject;
use crate::record::ProducerIdentity;
use crate::reject::{ErrorCode, JsonPath, Rejection};
use crate::timestamp;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;

/// The name of the namespace property.
pub const KEEN: &str = "keen";
/// The `keen.*` keys a producer may send.
pub const KNOWN_KEYS: [&str; 6] = [
    "timestamp",
    "created_at",
    "id",
    "location",
    "addons",
    "uniqueness_token",
];
/// Longest accepted `keen.uniqueness_token`, in characters.
pub const MAX_UNIQUENESS_TOKEN_LEN: usize = 64;

/// The 12-byte event id, shown as 24 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeenId([u8; 12]);

impl KeenId {
    /// The id of a record written by an idempotent producer: the same through any gateway
    /// instance and on every resend.
    pub fn for_producer(project_id: &str, collection: &str, producer: &ProducerIdentity) -> KeenId {
        let text = format!(
            "{project_id}\n{collection}\n{}\n{}\n{}\n{}",
            producer.producer_id, producer.epoch, producer.client_partition, producer.sequence
        );
        KeenId::of(&text)
    }

    /// The id of any other record: its position in the backing log, plus its write time so ids
    /// stay unique even if the inbound topic is ever recreated.
    pub fn for_position(
        physical_topic: &str,
        partition: i32,
        offset: i64,
        timestamp_ms: i64,
    ) -> KeenId {
        KeenId::of(&format!(
            "{physical_topic}\n{partition}\n{offset}\n{timestamp_ms}"
        ))
    }

    fn of(text: &str) -> KeenId {
        let digest = Sha256::digest(text.as_bytes());
        let mut id = [0u8; 12];
        id.copy_from_slice(&digest[..12]);
        KeenId(id)
    }

    /// The 24-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the hex form.
    pub fn parse(text: &str) -> Option<KeenId> {
        if text.len() != 24 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut id = [0u8; 12];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(KeenId(id))
    }

    /// The raw bytes (shard selection hashes them).
    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl fmt::Display for KeenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeenId({})", self.to_hex())
    }
}

/// What the service decided about an event's `keen` object; the object itself is written back
/// into the event.
#[derive(Debug, Clone, PartialEq)]
pub struct KeenObject {
    /// `keen.id`.
    pub id: KeenId,
    /// `keen.timestamp` in milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// `keen.uniqueness_token`, when the producer gave one.
    pub uniqueness_token: Option<String>,
    /// The add-on specs (event's own, then autofill's), removed from the stored event.
    pub addons: Vec<Value>,
}

/// The identity facts a `keen` object is built from.
#[derive(Debug, Clone, Copy)]
pub struct RecordIdentity {
    /// `keen.id`, derived by the caller from the record (see [`KeenId`]).
    pub id: KeenId,
    /// The backing record's timestamp: `keen.created_at`.
    pub created_at_ms: i64,
}

/// Checks and builds the `keen` object of `event` in place (product.md §3 step 6).
pub fn build(event: &mut EventObject, identity: RecordIdentity) -> Result<KeenObject, Rejection> {
    let root = JsonPath::Root;
    let path = root.key(KEEN);
    let mut keen = match event.remove(KEEN) {
        None => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(Rejection::at(
                ErrorCode::NamespaceTypeError,
                &path,
                format!(
                    "keen is a {}; it must be an object (or absent)",
                    crate::event::json_type_name(&other)
                ),
            ));
        }
    };
    if let Some(unknown) = keen.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
        let at = path.key(unknown);
        return Err(keen_property(
            &at,
            format!(
                "{at} is not a keen property; the producer may only set keen.timestamp, \
                 keen.location, keen.addons and keen.uniqueness_token"
            ),
        ));
    }

    let created_at = timestamp::format_millis(identity.created_at_ms);
    let (timestamp_ms, timestamp_text) = match keen.remove("timestamp") {
        None => (identity.created_at_ms, created_at.clone()),
        Some(Value::String(text)) => match timestamp::parse(&text) {
            Ok(parsed) => {
                let ms = parsed.unix_millis();
                (ms, timestamp::format_millis(ms))
            }
            Err(why) => {
                let at = path.key("timestamp");
                return Err(keen_property(
                    &at,
                    format!(
                        "keen.timestamp {text:?} is not an ISO-8601 date-time ({why}); use a \
                         form like 2024-03-09T10:11:12.345Z"
                    ),
                ));
            }
        },
        Some(other) => {
            let at = path.key("timestamp");
            return Err(keen_property(
                &at,
                format!(
                    "keen.timestamp is a {}; it must be an ISO-8601 date-time string",
                    crate::event::json_type_name(&other)
                ),
            ));
        }
    };

    if let Some(location) = keen.get("location") {
        check_location(location, &path.key("location"))?;
    }

    let uniqueness_token = match keen.get("uniqueness_token") {
        None => None,
        Some(Value::String(token))
            if (1..=MAX_UNIQUENESS_TOKEN_LEN).contains(&token.chars().count()) =>
        {
            Some(token.clone())
        }
        Some(other) => {
            let at = path.key("uniqueness_token");
            let why = match other {
                Value::String(token) if token.is_empty() => "is empty".to_owned(),
                Value::String(token) => format!("is {} characters long", token.chars().count()),
                other => format!("is a {}", crate::event::json_type_name(other)),
            };
            return Err(keen_property(
                &at,
                format!("keen.uniqueness_token {why}; it must be a string of 1 to 64 characters"),
            ));
        }
    };

    let addons = match keen.remove("addons") {
        None => Vec::new(),
        Some(Value::Array(specs)) => specs,
        Some(other) => {
            return Err(Rejection::at(
                ErrorCode::InvalidAddonError,
                &path.key("addons"),
                format!(
                    "keen.addons is a {}; it must be an array of add-on specs",
                    crate::event::json_type_name(&other)
                ),
            ));
        }
    };

    keen.insert("timestamp".to_owned(), Value::String(timestamp_text));
    keen.insert("created_at".to_owned(), Value::String(created_at));
    keen.insert("id".to_owned(), Value::String(identity.id.to_hex()));
    event.insert(KEEN.to_owned(), Value::Object(keen));
    Ok(KeenObject {
        id: identity.id,
        timestamp_ms,
        uniqueness_token,
        addons,
    })
}

fn keen_property(path: &JsonPath<'_>, message: String) -> Rejection {
    Rejection::at(ErrorCode::InvalidKeenNamespaceProperty, path, message)
}

/// `keen.location` must be exactly `{"coordinates": [longitude, latitude]}`.
fn check_location(location: &Value, path: &JsonPath<'_>) -> Result<(), Rejection> {
    let bad = |why: &str| {
        keen_property(
            path,
            format!(
                "keen.location {why}; it must be {{\"coordinates\": [longitude, latitude]}} \
                 with longitude in [-180, 180] and latitude in [-90, 90]"
            ),
        )
    };
    let Value::Object(map) = location else {
        return Err(bad("is not an object"));
    };
    if map.len() != 1 {
        return Err(bad("must hold only coordinates"));
    }
    let Some(Value::Array(pair)) = map.get("coordinates") else {
        return Err(bad("has no coordinates array"));
    };
    let [longitude, latitude] = pair.as_slice() else {
        return Err(bad("coordinates must hold exactly two numbers"));
    };
    let (Some(longitude), Some(latitude)) = (longitude.as_f64(), latitude.as_f64()) else {
        return Err(bad("coordinates must be numbers"));
    };
    if !(-180.0..=180.0).contains(&longitude) || !(-90.0..=90.0).contains(&latitude) {
        return Err(bad("coordinates are out of range"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CREATED: i64 = 1_710_000_000_123;

    fn identity() -> RecordIdentity {
        RecordIdentity {
            id: KeenId::for_position("keen-inbound", 3, 18231, CREATED),
            created_at_ms: CREATED,
        }
    }

    fn build_from(value: Value) -> Result<(EventObject, KeenObject), Rejection> {
        let Value::Object(mut event) = value else {
            panic!("test events are objects")
        };
        let keen = build(&mut event, identity())?;
        Ok((event, keen))
    }

    #[test]
    fn golden_keen_ids() {
        assert_eq!(
            KeenId::for_position("keen-inbound", 3, 18231, 1_710_000_000_123).to_hex(),
            "1bb51b6fbfd8d21897271fce"
        );
        let producer = ProducerIdentity {
            producer_id: 8412301,
            epoch: 0,
            client_partition: 2,
            sequence: 57,
        };
        assert_eq!(
            KeenId::for_producer("4f1c9a3be6d2a1b07c3e5f11", "purchases", &producer).to_hex(),
            "e38767ec2ce7ce5d71ae1d73"
        );
        let id = KeenId::parse("e38767ec2ce7ce5d71ae1d73").expect("hex");
        assert_eq!(id.to_string(), "e38767ec2ce7ce5d71ae1d73");
        assert_eq!(KeenId::parse("E38767EC2CE7CE5D71AE1D73"), None);
        assert_eq!(KeenId::parse("e38767"), None);
    }

    #[test]
    fn service_fields_are_set_and_overwritten() {
        let (event, keen) = build_from(json!({
            "a": 1,
            "keen": {"id": "mine", "created_at": "2000-01-01T00:00:00Z"}
        }))
        .expect("valid");
        assert_eq!(
            event["keen"],
            json!({
                "id": "1bb51b6fbfd8d21897271fce",
                "created_at": "2024-03-09T16:00:00.123Z",
                "timestamp": "2024-03-09T16:00:00.123Z",
            })
        );
        assert_eq!(keen.timestamp_ms, CREATED);
        assert_eq!(keen.uniqueness_token, None);
        let (event, _) = build_from(json!({"a": 1})).expect("no keen");
        assert_eq!(event["keen"]["timestamp"], "2024-03-09T16:00:00.123Z");
    }

    #[test]
    fn producer_timestamp_is_normalised() {
        let (event, keen) =
            build_from(json!({"keen": {"timestamp": "2024-01-02T03:04:05.678901+01:00"}}))
                .expect("ok");
        assert_eq!(event["keen"]["timestamp"], "2024-01-02T02:04:05.678Z");
        assert_eq!(keen.timestamp_ms, 1_704_161_045_678);
    }

    #[test]
    fn keen_rules_table() {
        use ErrorCode::*;
        let cases = [
            (json!({"keen": "x"}), NamespaceTypeError, "$.keen"),
            (json!({"keen": [1]}), NamespaceTypeError, "$.keen"),
            (json!({"keen": null}), NamespaceTypeError, "$.keen"),
            (
                json!({"keen": {"foo": 1}}),
                InvalidKeenNamespaceProperty,
                "$.keen.foo",
            ),
            (
                json!({"keen": {"timestamp": "yesterday"}}),
                InvalidKeenNamespaceProperty,
                "$.keen.timestamp",
            ),
            (
                json!({"keen": {"timestamp": 1700000000}}),
                InvalidKeenNamespaceProperty,
                "$.keen.timestamp",
            ),
            (
                json!({"keen": {"location": [1, 2]}}),
                InvalidKeenNamespaceProperty,
                "$.keen.location",
            ),
            (
                json!({"keen": {"location": {"coordinates": [1]}}}),
                InvalidKeenNamespaceProperty,
                "$.keen.location",
            ),
            (
                json!({"keen": {"location": {"coordinates": [1, "2"]}}}),
                InvalidKeenNamespaceProperty,
                "$.keen.location",
            ),
            (
                json!({"keen": {"location": {"coordinates": [181, 0]}}}),
                InvalidKeenNamespaceProperty,
                "$.keen.location",
            ),
            (
                json!({"keen": {"location": {"coordinates": [0, -90.5]}}}),
                InvalidKeenNamespaceProperty,
                "$.keen.location",
            ),
            (
                json!({"keen": {"location": {"coordinates": [0, 0], "x": 1}}}),
                InvalidKeenNamespaceProperty,
                "$.keen.location",
            ),
            (
                json!({"keen": {"uniqueness_token": ""}}),
                InvalidKeenNamespaceProperty,
                "$.keen.uniqueness_token",
            ),
            (
                json!({"keen": {"uniqueness_token": "t".repeat(65)}}),
                InvalidKeenNamespaceProperty,
                "$.keen.uniqueness_token",
            ),
            (
                json!({"keen": {"uniqueness_token": 7}}),
                InvalidKeenNamespaceProperty,
                "$.keen.uniqueness_token",
            ),
            (
                json!({"keen": {"addons": {}}}),
                InvalidAddonError,
                "$.keen.addons",
            ),
        ];
        for (event, code, path) in cases {
            let err = build_from(event.clone()).expect_err(&event.to_string());
            assert_eq!(
                (err.code, err.path.as_deref()),
                (code, Some(path)),
                "event {event}"
            );
        }
    }

    #[test]
    fn accepted_keen_properties() {
        let token = "t".repeat(64);
        let (event, keen) = build_from(json!({
            "keen": {
                "location": {"coordinates": [-180, 90]},
                "uniqueness_token": token,
                "addons": [{"name": "keen:url_parser"}],
            }
        }))
        .expect("valid");
        assert_eq!(
            event["keen"]["location"],
            json!({"coordinates": [-180, 90]})
        );
        assert_eq!(event["keen"]["uniqueness_token"], json!(token));
        assert!(
            event["keen"].get("addons").is_none(),
            "addons are never stored"
        );
        assert_eq!(keen.addons.len(), 1);
        assert_eq!(keen.uniqueness_token.as_deref(), Some(token.as_str()));
    }
}
