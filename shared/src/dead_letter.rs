//! The dead letter envelope of product.md §8: one per rejected record, never truncated, carrying
//! the record's full identity so that a replay yields the keen.id the first attempt would have
//! had.

use crate::record::{Header, InboundRecord, Tenant};
use crate::reject::{ErrorCode, Rejection};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The service version written into every dead letter.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `{code, message, path?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterError {
    /// The product error code.
    pub code: String,
    /// What was wrong, for the customer.
    pub message: String,
    /// JSON path of the offending value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Machine-readable refinement (`invalid_json`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One record header: UTF-8 values as text, anything else as base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHeader {
    /// Header name.
    pub key: String,
    /// The value, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value, base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
}

/// Where the record sits in the backing log: its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Physical topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp, milliseconds.
    pub timestamp: i64,
    /// The record key, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_b64: Option<String>,
    /// Every header, in order.
    pub headers: Vec<SourceHeader>,
}

/// The envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Deterministic id from the record's identity (topic, partition, offset): a retried batch
    /// writes a dead letter with the same id, which readers use to drop repeats.
    pub id: String,
    /// The owning project; empty when the record carried no tenant headers.
    pub project_id: String,
    /// The collection; empty when unknown.
    pub collection: String,
    /// Why.
    pub error: DeadLetterError,
    /// Identity of the record.
    pub source: Source,
    /// The original value as text, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The original value, base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_b64: Option<String>,
    /// The original value, zstd-compressed then base64, when sent where the plain form does not
    /// fit (the SQS announcement of a large record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_zstd_b64: Option<String>,
    /// Where the full dead letter is stored, when the announcement could carry no payload at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_ref: Option<PayloadRef>,
    /// Set when the whole dead letter could not be stored or announced (a service refused it):
    /// why. This form then carries the record's identity and the reason only, so that the record
    /// is still accounted for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resort: Option<String>,
    /// When processing failed, `YYYY-MM-DDTHH:MM:SS.sssZ`.
    pub failed_at: String,
    /// The service version that rejected it.
    pub service_version: String,
}

/// The longest error message a dead letter keeps: messages are the service's own words, and a
/// bound keeps a quoted value from growing the envelope.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// The longest error path a dead letter keeps (100 levels of 255-character names stay within).
pub const MAX_PATH_BYTES: usize = 32 * 1024;

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
fn capped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The DeadLetters table item holding a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadRef {
    /// Partition key.
    pub pk: String,
    /// Sort key.
    pub sk: String,
}

impl DeadLetter {
    /// The dead letter of `record`, rejected for `rejection` at `failed_at_ms`.
    pub fn new(
        record: &InboundRecord<'_>,
        tenant: Option<&Tenant>,
        rejection: &Rejection,
        failed_at_ms: i64,
    ) -> Self {
        let mut letter = DeadLetter {
            id: dead_letter_id(record.topic, record.partition, record.offset),
            project_id: tenant.map(|t| t.project_id.clone()).unwrap_or_default(),
            collection: tenant.map(|t| t.collection.clone()).unwrap_or_default(),
            error: DeadLetterError {
                code: rejection.code.as_str().to_owned(),
                message: capped(&rejection.message, MAX_MESSAGE_BYTES),
                path: rejection.path.as_deref().map(|p| capped(p, MAX_PATH_BYTES)),
                detail: rejection.detail.map(str::to_owned),
            },
            source: Source {
                topic: record.topic.to_owned(),
                partition: record.partition,
                offset: record.offset,
                timestamp: record.timestamp_ms,
                key_b64: record.key.map(|k| BASE64.encode(k)),
                headers: record.headers.iter().map(SourceHeader::from).collect(),
            },
            payload: None,
            payload_b64: None,
            payload_zstd_b64: None,
            payload_ref: None,
            last_resort: None,
            failed_at: crate::timestamp::format_millis(failed_at_ms),
            service_version: SERVICE_VERSION.to_owned(),
        };
        letter.set_payload(record.value.unwrap_or_default());
        letter
    }

    /// Carries `value` as text when it is UTF-8, else as base64 (in place of any other form).
    pub fn set_payload(&mut self, value: &[u8]) {
        self.payload_zstd_b64 = None;
        self.payload_ref = None;
        match std::str::from_utf8(value) {
            Ok(text) => (self.payload, self.payload_b64) = (Some(text.to_owned()), None),
            Err(_) => (self.payload, self.payload_b64) = (None, Some(BASE64.encode(value))),
        }
    }

    /// The error code, parsed.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.error.code)
    }

    /// The original value bytes, whichever form carries them.
    pub fn value_bytes(&self) -> Option<Vec<u8>> {
        if let Some(text) = &self.payload {
            return Some(text.as_bytes().to_vec());
        }
        if let Some(b64) = &self.payload_b64 {
            return BASE64.decode(b64).ok();
        }
        if let Some(b64) = &self.payload_zstd_b64 {
            let compressed = BASE64.decode(b64).ok()?;
            return zstd::bulk::decompress(&compressed, crate::storage::MAX_BODY_BYTES).ok();
        }
        None
    }

    /// The record headers, decoded.
    pub fn headers(&self) -> Vec<Header> {
        self.source
            .headers
            .iter()
            .map(|h| {
                let value = match (&h.value, &h.value_b64) {
                    (Some(text), _) => text.as_bytes().to_vec(),
                    (None, Some(b64)) => BASE64.decode(b64).unwrap_or_default(),
                    (None, None) => Vec::new(),
                };
                Header::new(h.key.clone(), value)
            })
            .collect()
    }

    /// The record key, decoded.
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        self.source
            .key_b64
            .as_ref()
            .and_then(|k| BASE64.decode(k).ok())
    }

    /// The same dead letter with the payload compressed (for announcements that must fit a
    /// message limit); nothing is truncated.
    pub fn with_compressed_payload(&self) -> DeadLetter {
        let mut copy = self.clone();
        if let Some(bytes) = self.value_bytes() {
            copy.payload = None;
            copy.payload_b64 = None;
            copy.payload_zstd_b64 = Some(BASE64.encode(crate::storage::compress(&bytes)));
        }
        copy
    }

    /// The same dead letter without payload, pointing at the table item that holds it whole.
    pub fn with_payload_ref(&self, reference: PayloadRef) -> DeadLetter {
        let mut copy = self.clone();
        copy.payload = None;
        copy.payload_b64 = None;
        copy.payload_zstd_b64 = None;
        copy.payload_ref = Some(reference);
        copy
    }

    /// The same dead letter without the record's content (payload, key, headers), pointing at
    /// the table item that holds it whole: an announcement no record can make too large.
    pub fn with_source_ref(&self, reference: PayloadRef) -> DeadLetter {
        let mut copy = self.with_payload_ref(reference);
        copy.source.key_b64 = None;
        copy.source.headers = Vec::new();
        copy
    }

    /// The last-resort form of this dead letter, for when a service refused the whole one for
    /// `reason`: the record's identity (topic, partition, offset, timestamp), tenant, error and
    /// the reason, nothing of the record's content, so that it is small and plain by
    /// construction and the record stays accounted for (replay reads the record again from the
    /// inbound topic while it is retained).
    pub fn last_resort(&self, reason: &str) -> DeadLetter {
        let mut copy = self.clone();
        copy.payload = None;
        copy.payload_b64 = None;
        copy.payload_zstd_b64 = None;
        copy.payload_ref = None;
        copy.source.key_b64 = None;
        copy.source.headers = Vec::new();
        copy.error.path = copy.error.path.map(|p| capped(&p, 1_024));
        copy.last_resort = Some(capped(reason, 1_024));
        copy
    }

    /// JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

impl From<&Header> for SourceHeader {
    fn from(header: &Header) -> Self {
        match std::str::from_utf8(&header.value) {
            Ok(text) => SourceHeader {
                key: header.name.clone(),
                value: Some(text.to_owned()),
                value_b64: None,
            },
            Err(_) => SourceHeader {
                key: header.name.clone(),
                value: None,
                value_b64: Some(BASE64.encode(&header.value)),
            },
        }
    }
}

/// 24 hex characters from the record's position in the backing log.
pub fn dead_letter_id(topic: &str, partition: i32, offset: i64) -> String {
    let digest = Sha256::digest(format!("dead-letter\n{topic}\n{partition}\n{offset}").as_bytes());
    hex::encode(&digest[..12])
}

/// DeadLetters table keys: `pk` = `{project_id}#{collection}`, `sk` = `{failed_at}#{id}`.
pub fn table_keys(letter: &DeadLetter) -> PayloadRef {
    PayloadRef {
        pk: format!("{}#{}", letter.project_id, letter.collection),
        sk: format!("{}#{}", letter.failed_at, letter.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keeps_identity_and_payload() {
        let headers = vec![
            Header::new("keen-project-id", "p"),
            Header::new("bin", vec![0xff, 0x00]),
        ];
        let record = InboundRecord {
            topic: "keen-inbound",
            partition: 2,
            offset: 77,
            timestamp_ms: 1_710_000_000_123,
            key: Some(b"k1"),
            value: Some(b"{\"a\":"),
            headers: &headers,
        };
        let tenant = Tenant {
            project_id: "p".into(),
            collection: "c".into(),
            key_id: "k".into(),
            producer: None,
        };
        let rejection =
            Rejection::new(ErrorCode::InvalidEventError, "bad").with_detail("invalid_json");
        let letter = DeadLetter::new(&record, Some(&tenant), &rejection, 1_710_000_001_000);
        assert_eq!(letter.code(), Some(ErrorCode::InvalidEventError));
        assert_eq!(letter.payload.as_deref(), Some("{\"a\":"));
        assert_eq!(letter.source.key_b64.as_deref(), Some("azE="));
        assert_eq!(letter.failed_at, "2024-03-09T16:00:01.000Z");
        assert_eq!(letter.id, dead_letter_id("keen-inbound", 2, 77));
        assert_eq!(letter.headers(), headers);
        assert_eq!(table_keys(&letter).pk, "p#c");

        let json = letter.to_json();
        let back: DeadLetter = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back, letter);

        let compressed = letter.with_compressed_payload();
        assert_eq!(compressed.payload, None);
        assert_eq!(compressed.value_bytes(), letter.value_bytes());
        let referenced = letter.with_payload_ref(table_keys(&letter));
        assert_eq!(referenced.value_bytes(), None);
        assert!(referenced.payload_ref.is_some());
        let bare = letter.with_source_ref(table_keys(&letter));
        assert_eq!((bare.source.key_b64, bare.source.headers.len()), (None, 0));
        assert_eq!(bare.source.offset, 77);

        let last = letter.last_resort("ValidationException: too large");
        assert_eq!(last.value_bytes(), None);
        assert_eq!(last.source.headers.len(), 0);
        assert_eq!(last.id, letter.id);
        assert_eq!(last.error, letter.error);
        assert_eq!(
            last.last_resort.as_deref(),
            Some("ValidationException: too large")
        );
    }

    #[test]
    fn messages_and_paths_are_bounded() {
        let record = InboundRecord {
            topic: "t",
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: None,
            value: Some(b"{}"),
            headers: &[],
        };
        let rejection = Rejection::new(ErrorCode::InvalidEventError, "é".repeat(10_000))
            .with_path("$.".to_owned() + &"a".repeat(100_000));
        let letter = DeadLetter::new(&record, None, &rejection, 0);
        assert!(letter.error.message.len() <= MAX_MESSAGE_BYTES);
        assert!(letter.error.message.ends_with('…'));
        assert!(
            letter
                .error
                .path
                .as_ref()
                .is_some_and(|p| p.len() <= MAX_PATH_BYTES)
        );
    }

    #[test]
    fn binary_payloads_are_base64() {
        let record = InboundRecord {
            topic: "t",
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: None,
            value: Some(&[0xff, 0xfe]),
            headers: &[],
        };
        let rejection = Rejection::new(ErrorCode::MissingTenantHeadersError, "no tenant");
        let letter = DeadLetter::new(&record, None, &rejection, 0);
        assert_eq!(letter.payload, None);
        assert_eq!(letter.value_bytes(), Some(vec![0xff, 0xfe]));
        assert_eq!(letter.project_id, "");
    }
}
