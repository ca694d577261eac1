//! The MSK event as Lambda delivers it, decoded into records the core can read.
//!
//! Values and keys arrive base64; headers as lists of single-entry maps whose values are arrays
//! of SIGNED bytes. Records are keyed `"<topic>-<partition>"`, but a topic may contain `-`, so
//! the records' own `topic` and `partition` fields are used.
//!
//! The event's types are our own rather than `aws_lambda_events`' `KafkaEvent`: that crate (1.2)
//! reads the millisecond `timestamp` through a floating-point fraction and loses a millisecond
//! on about half of all values, and the record timestamp is part of an event's identity
//! (`keen.created_at`, and `keen.id` for records without a producer identity). Here it is read
//! as the integer Lambda sends.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keen_shared::dead_letter::DeadLetter;
use keen_shared::record::{Header, InboundRecord};
use serde::Deserialize as _;

/// One record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// Physical topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp, ms.
    pub timestamp_ms: i64,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value; `None` for a tombstone. A value that is not base64 (Lambda never sends one)
    /// is kept as its text, which the core rejects as invalid JSON: dead-lettered, not lost.
    pub value: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<Header>,
}

impl DecodedRecord {
    /// Whether the record carries a header named exactly `name`.
    pub fn header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.name == name)
    }

    /// The core's view of the record.
    pub fn as_inbound(&self) -> InboundRecord<'_> {
        InboundRecord {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: &self.headers,
        }
    }

    /// `{topic}:{partition}:{offset}`: the record's position, stored with its event.
    pub fn source(&self) -> String {
        format!("{}:{}:{}", self.topic, self.partition, self.offset)
    }

    /// The record a dead letter was made of: same position, timestamp, key, headers and value,
    /// hence the same keen.id on replay. `None` when the letter carries no payload (an SQS
    /// announcement that only points at the table item: read that item instead). A tombstone
    /// comes back as an empty value, which the core rejects the same way.
    pub fn from_dead_letter(letter: &DeadLetter) -> Option<DecodedRecord> {
        Some(DecodedRecord {
            topic: letter.source.topic.clone(),
            partition: letter.source.partition,
            offset: letter.source.offset,
            timestamp_ms: letter.source.timestamp,
            key: letter.key_bytes(),
            value: Some(letter.value_bytes()?),
            headers: letter.headers(),
        })
    }
}

/// The MSK event Lambda sends to the function (`eventSource` `aws:kafka`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MskEvent {
    /// `aws:kafka` (or `SelfManagedKafka`).
    #[serde(default)]
    pub event_source: Option<String>,
    /// The cluster's ARN.
    #[serde(default)]
    pub event_source_arn: Option<String>,
    /// Records by `"<topic>-<partition>"`.
    #[serde(default)]
    pub records: std::collections::HashMap<String, Vec<MskRecord>>,
    /// The cluster's bootstrap brokers.
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
}

/// One record of an [`MskEvent`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MskRecord {
    /// Physical topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// Partition.
    pub partition: i64,
    /// Offset.
    pub offset: i64,
    /// Milliseconds since the epoch, exactly (a fractional value is rounded).
    #[serde(deserialize_with = "exact_millis")]
    pub timestamp: i64,
    /// `CREATE_TIME` or `LOG_APPEND_TIME`.
    #[serde(default)]
    pub timestamp_type: Option<String>,
    /// The key, base64.
    #[serde(default)]
    pub key: Option<String>,
    /// The value, base64; absent for a tombstone.
    #[serde(default)]
    pub value: Option<String>,
    /// Headers in order, each a single-entry map of name → signed bytes.
    #[serde(default)]
    pub headers: Vec<std::collections::HashMap<String, Vec<i8>>>,
}

fn exact_millis<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::Error as _;
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_i64()
        .or_else(|| number.as_f64().map(|f| f.round() as i64))
        .ok_or_else(|| D::Error::custom(format!("timestamp {number} is not a millisecond count")))
}

/// Decodes every record of an MSK event, ordered by (topic, partition, offset).
pub fn decode_event(event: &MskEvent) -> Vec<DecodedRecord> {
    let mut records: Vec<DecodedRecord> = event
        .records
        .values()
        .flatten()
        .map(|record| DecodedRecord {
            topic: record.topic.clone().unwrap_or_default(),
            partition: i32::try_from(record.partition).unwrap_or(-1),
            offset: record.offset,
            timestamp_ms: record.timestamp,
            key: record.key.as_deref().and_then(|k| BASE64.decode(k).ok()),
            value: record
                .value
                .as_deref()
                .map(|v| BASE64.decode(v).unwrap_or_else(|_| v.as_bytes().to_vec())),
            headers: record
                .headers
                .iter()
                .flat_map(|map| map.iter())
                .map(|(name, bytes)| {
                    Header::new(
                        name.clone(),
                        bytes.iter().map(|b| *b as u8).collect::<Vec<u8>>(),
                    )
                })
                .collect(),
        })
        .collect();
    records
        .sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(timestamp: &str) -> MskEvent {
        serde_json::from_str(&format!(
            r#"{{"eventSource":"aws:kafka","records":{{"keen-inbound-0":[
                {{"topic":"keen-inbound","partition":0,"offset":5,"timestamp":{timestamp},
                  "timestampType":"CREATE_TIME","value":"e30="}}]}}}}"#
        ))
        .expect("an MSK event")
    }

    #[test]
    fn timestamps_are_exact_to_the_millisecond() {
        // Every millisecond of a whole second, where a float fraction loses about half.
        for ms in 1_710_000_000_000_i64..1_710_000_001_000 {
            let decoded = decode_event(&event(&ms.to_string()));
            assert_eq!(decoded[0].timestamp_ms, ms);
        }
        assert_eq!(
            decode_event(&event("1710000000123.0"))[0].timestamp_ms,
            1_710_000_000_123
        );
    }

    #[test]
    fn a_record_without_headers_or_key_decodes() {
        let decoded = decode_event(&event("1"));
        assert_eq!(decoded[0].headers, Vec::new());
        assert_eq!(decoded[0].key, None);
        assert_eq!(decoded[0].value.as_deref(), Some(b"{}".as_slice()));
    }
}
