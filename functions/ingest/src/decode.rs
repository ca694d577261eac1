//! The MSK event as Lambda delivers it, decoded into records the core can read.
//!
//! Values and keys arrive base64; headers as lists of single-entry maps whose values are arrays
//! of SIGNED bytes. Records are keyed `"<topic>-<partition>"`, but a topic may contain `-`, so
//! the records' own `topic` and `partition` fields are used.

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keen_shared::dead_letter::DeadLetter;
use keen_shared::record::{Header, InboundRecord};

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

/// Decodes every record of an MSK event, ordered by (topic, partition, offset).
pub fn decode_event(event: &KafkaEvent) -> Vec<DecodedRecord> {
    let mut records: Vec<DecodedRecord> = event
        .records
        .values()
        .flatten()
        .map(|record| DecodedRecord {
            topic: record.topic.clone().unwrap_or_default(),
            partition: i32::try_from(record.partition).unwrap_or(-1),
            offset: record.offset,
            timestamp_ms: record.timestamp.0.timestamp_millis(),
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
