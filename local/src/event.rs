//! The MSK event as Lambda writes it, built from consumed records.
//!
//! Shape: `{"eventSource":"aws:kafka","eventSourceArn":…,"bootstrapServers":…,"records":
//! {"<topic>-<partition>":[{"topic","partition","offset","timestamp","timestampType","key"?,
//! "value"?,"headers":[{"name":[signed bytes]}]}]}}`. Keys and values are base64 and left out
//! when null (Lambda omits a tombstone's value); header bytes are signed (`ë` → `[-61,-85]`).
//!
//! Each record is serialised once, when it joins the batch, so that the batch knows its exact
//! payload size before deciding whether the next record still fits under the 6 MB bound.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The ARN the local mapping puts in `eventSourceArn` (no real cluster has it).
pub const LOCAL_EVENT_SOURCE_ARN: &str = "arn:aws:kafka:us-east-1:000000000000:cluster/keen-local/00000000-0000-0000-0000-000000000000-1";

/// How the broker stamped a record's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
    /// The record has no timestamp (message format v0); sent with timestamp -1.
    None,
}

impl TimestampType {
    fn as_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CREATE_TIME",
            TimestampType::LogAppendTime => "LOG_APPEND_TIME",
            TimestampType::None => "NO_TIMESTAMP_TYPE",
        }
    }
}

/// One record as read from the inbound topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch; -1 when the record has none.
    pub timestamp_ms: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Vec<u8>>,
    /// `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// In record order; a null header value is sent as an empty byte list.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl ConsumedRecord {
    /// The record's JSON object, as Lambda writes it.
    pub fn to_json(&self) -> Value {
        let mut record = Map::new();
        record.insert("topic".into(), json!(self.topic));
        record.insert("partition".into(), json!(self.partition));
        record.insert("offset".into(), json!(self.offset));
        record.insert("timestamp".into(), json!(self.timestamp_ms));
        record.insert("timestampType".into(), json!(self.timestamp_type.as_str()));
        if let Some(key) = &self.key {
            record.insert("key".into(), json!(BASE64.encode(key)));
        }
        if let Some(value) = &self.value {
            record.insert("value".into(), json!(BASE64.encode(value)));
        }
        let headers: Vec<Value> = self
            .headers
            .iter()
            .map(|(name, bytes)| {
                let signed: Vec<i8> = bytes
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(|b| *b as i8)
                    .collect();
                json!({ name.as_str(): signed })
            })
            .collect();
        record.insert("headers".into(), Value::Array(headers));
        Value::Object(record)
    }
}

/// Where the records came from: the event's envelope fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSource {
    pub arn: String,
    pub bootstrap_servers: String,
}

/// One batch's records, serialised, grouped by topic-partition in offset order, with the exact
/// length of the event JSON they make.
#[derive(Debug)]
pub struct EventBuilder {
    /// `{"eventSource":…,"records":{` without the records and the closing `}}`.
    head: String,
    partitions: BTreeMap<(String, i32), Vec<(i64, String)>>,
    records: usize,
    len: usize,
}

impl EventBuilder {
    pub fn new(source: &EventSource) -> Self {
        let head = format!(
            "{{\"eventSource\":\"aws:kafka\",\"eventSourceArn\":{},\"bootstrapServers\":{},\"records\":{{",
            Value::from(source.arn.as_str()),
            Value::from(source.bootstrap_servers.as_str()),
        );
        let len = head.len() + 2;
        EventBuilder {
            head,
            partitions: BTreeMap::new(),
            records: 0,
            len,
        }
    }

    /// Records in the batch.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Length in bytes of the event JSON [`EventBuilder::build`] would return now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no record joined yet.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Serialises `record`; returns it with the bytes it would add to the event.
    pub fn prepare(&self, record: &ConsumedRecord) -> PreparedRecord {
        let json = record.to_json().to_string();
        let key = (record.topic.clone(), record.partition);
        let added = match self.partitions.get(&key) {
            // `,` + the record.
            Some(_) => 1 + json.len(),
            // [`,`] + `"<topic>-<partition>":[` + the record + `]`.
            None => {
                let comma = usize::from(!self.partitions.is_empty());
                comma + partition_key_json(&key.0, key.1).len() + 2 + json.len() + 1
            }
        };
        PreparedRecord {
            key,
            offset: record.offset,
            json,
            added,
        }
    }

    /// Adds a record [`EventBuilder::prepare`]d against this builder's current state.
    pub fn push(&mut self, record: PreparedRecord) {
        self.len += record.added;
        self.records += 1;
        self.partitions
            .entry(record.key)
            .or_default()
            .push((record.offset, record.json));
    }

    /// The event JSON text: records keyed `"<topic>-<partition>"`, in offset order.
    pub fn build(&mut self) -> String {
        let mut out = String::with_capacity(self.len);
        out.push_str(&self.head);
        for (i, ((topic, partition), records)) in self.partitions.iter_mut().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&partition_key_json(topic, *partition));
            out.push_str(":[");
            records.sort_by_key(|(offset, _)| *offset);
            for (j, (_, json)) in records.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str(json);
            }
            out.push(']');
        }
        out.push_str("}}");
        out
    }
}

/// A serialised record waiting to join a batch.
#[derive(Debug, Clone)]
pub struct PreparedRecord {
    key: (String, i32),
    offset: i64,
    json: String,
    /// Bytes it adds to the event built so far.
    pub added: usize,
}

fn partition_key_json(topic: &str, partition: i32) -> String {
    Value::from(format!("{topic}-{partition}")).to_string()
}

/// The MSK event JSON Lambda would send for `records` (any order).
pub fn event_json(source: &EventSource, records: &[ConsumedRecord]) -> String {
    let mut builder = EventBuilder::new(source);
    for record in records {
        let prepared = builder.prepare(record);
        builder.push(prepared);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keen_ingest::MskEvent;

    fn source() -> EventSource {
        EventSource {
            arn: LOCAL_EVENT_SOURCE_ARN.into(),
            bootstrap_servers: "127.0.0.1:9093".into(),
        }
    }

    fn record(topic: &str, partition: i32, offset: i64) -> ConsumedRecord {
        ConsumedRecord {
            topic: topic.into(),
            partition,
            offset,
            timestamp_ms: 1_710_000_000_123,
            timestamp_type: TimestampType::CreateTime,
            key: Some(b"k".to_vec()),
            value: Some(format!("{{\"n\":{offset}}}").into_bytes()),
            headers: vec![("keen-collection".into(), Some(b"purchases".to_vec()))],
        }
    }

    #[test]
    fn a_record_is_written_as_lambda_writes_it() {
        let mut r = record("keen-inbound", 3, 18231);
        r.headers = vec![
            ("city".into(), Some("ë".as_bytes().to_vec())),
            ("empty".into(), None),
        ];
        let text = event_json(&source(), &[r]);
        let event: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            event,
            json!({
                "eventSource": "aws:kafka",
                "eventSourceArn": LOCAL_EVENT_SOURCE_ARN,
                "bootstrapServers": "127.0.0.1:9093",
                "records": {"keen-inbound-3": [{
                    "topic": "keen-inbound", "partition": 3, "offset": 18231,
                    "timestamp": 1_710_000_000_123_i64, "timestampType": "CREATE_TIME",
                    "key": "aw==", "value": BASE64.encode(b"{\"n\":18231}"),
                    "headers": [{"city": [-61, -85]}, {"empty": []}]
                }]}
            })
        );
    }

    #[test]
    fn null_key_and_tombstone_value_are_left_out_and_parse_as_none() {
        let mut r = record("keen-inbound", 0, 5);
        r.key = None;
        r.value = None;
        r.timestamp_type = TimestampType::LogAppendTime;
        let text = event_json(&source(), &[r]);
        let raw: Value = serde_json::from_str(&text).expect("JSON");
        let first = &raw["records"]["keen-inbound-0"][0];
        assert!(first.get("key").is_none() && first.get("value").is_none());
        assert_eq!(first["timestampType"], "LOG_APPEND_TIME");

        // Exactly what lambda_runtime would hand the function, and what ingest then reads.
        let event: MskEvent = serde_json::from_str(&text).expect("an MskEvent");
        let parsed = &event.records["keen-inbound-0"][0];
        assert_eq!((parsed.key.as_ref(), parsed.value.as_ref()), (None, None));
        let decoded = keen_ingest::decode_event(&event);
        assert_eq!(decoded[0].value, None);
        assert_eq!(decoded[0].key, None);
        assert_eq!(first["timestamp"], 1_710_000_000_123_i64);
        // Exactly, to the millisecond (aws_lambda_events' KafkaEvent lost one on about half).
        assert_eq!(decoded[0].timestamp_ms, 1_710_000_000_123);
        assert_eq!(
            decoded[0].headers[0].value.as_slice(),
            b"purchases".as_slice()
        );
    }

    #[test]
    fn records_are_grouped_by_topic_partition_in_offset_order() {
        // A topic with a dash, and records arriving out of order across partitions.
        let records = vec![
            record("keen-inbound", 1, 7),
            record("keen-inbound", 0, 3),
            record("keen-inbound", 1, 6),
            record("keen-inbound", 10, 1),
            record("keen-inbound", 0, 4),
        ];
        let text = event_json(&source(), &records);
        let event: Value = serde_json::from_str(&text).expect("JSON");
        let offsets = |key: &str| -> Vec<i64> {
            event["records"][key]
                .as_array()
                .expect(key)
                .iter()
                .map(|r| r["offset"].as_i64().expect("offset"))
                .collect()
        };
        assert_eq!(offsets("keen-inbound-0"), [3, 4]);
        assert_eq!(offsets("keen-inbound-1"), [6, 7]);
        assert_eq!(offsets("keen-inbound-10"), [1]);
        assert_eq!(event["records"].as_object().expect("records").len(), 3);
        let parsed: MskEvent = serde_json::from_str(&text).expect("an MskEvent");
        let decoded = keen_ingest::decode_event(&parsed);
        assert_eq!(decoded.len(), 5);
        assert_eq!(decoded[0].topic, "keen-inbound");
    }

    #[test]
    fn the_builder_knows_the_exact_length_of_the_event() {
        let mut builder = EventBuilder::new(&source());
        assert_eq!(builder.len(), builder.build().len());
        for r in [
            record("a", 0, 1),
            record("a", 0, 2),
            record("b-\"x\"", 2, 9),
            record("a", 1, 3),
        ] {
            let prepared = builder.prepare(&r);
            let before = builder.len();
            builder.push(prepared);
            assert!(builder.len() > before);
            assert_eq!(builder.len(), builder.build().len());
        }
        assert_eq!(builder.records(), 4);
    }
}
