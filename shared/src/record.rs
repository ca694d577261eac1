//! A record of the physical inbound topic, as the ingest function receives it, and the tenant
//! headers the gateway stamps on it (architecture.md, "Physical record").
//!
//! Only the gateway may write the inbound topic, so these headers are trusted; the gateway
//! strips any customer header with a reserved name before adding its own.

use crate::reject::{ErrorCode, Rejection};

/// The project that owns the record.
pub const HEADER_PROJECT_ID: &str = "keen-project-id";
/// The collection (the topic the customer produced to).
pub const HEADER_COLLECTION: &str = "keen-collection";
/// The id of the key the producer authenticated with.
pub const HEADER_KEY_ID: &str = "keen-key-id";
/// `{producer_id}:{epoch}:{client_partition}:{sequence}` of an idempotent producer's record.
pub const HEADER_PRODUCER: &str = "keen-producer";
/// An idempotent producer's own record timestamp (decimal milliseconds), set when the gateway
/// replaced it by its clock (more than an hour off): a resend of that record through another
/// instance, or after a restart, gets another clock reading, so the ingest finds it by keen.id
/// instead of by its (different) sort key.
pub const HEADER_PRODUCER_TIMESTAMP: &str = "keen-producer-timestamp";
/// Headers only the gateway may set.
pub const RESERVED_HEADERS: [&str; 5] = [
    HEADER_PROJECT_ID,
    HEADER_COLLECTION,
    HEADER_KEY_ID,
    HEADER_PRODUCER,
    HEADER_PRODUCER_TIMESTAMP,
];
/// Customer header feeding the `${keen.ip}` placeholder.
pub const HEADER_IP: &str = "keen-ip";
/// Customer header feeding the `${keen.user_agent}` placeholder.
pub const HEADER_USER_AGENT: &str = "keen-user-agent";

/// One Kafka record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value bytes.
    pub value: Vec<u8>,
}

impl Header {
    /// A header from a name and bytes.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A decoded record of the inbound topic: what the core needs to process it.
#[derive(Debug, Clone, Copy)]
pub struct InboundRecord<'a> {
    /// The physical topic (`keen-inbound`), not the collection.
    pub topic: &'a str,
    /// Partition of the physical topic.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// The record timestamp in milliseconds: when the gateway durably accepted it.
    pub timestamp_ms: i64,
    /// The customer's record key.
    pub key: Option<&'a [u8]>,
    /// The customer's value bytes, untouched; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// All headers, the gateway's and the customer's.
    pub headers: &'a [Header],
}

impl<'a> InboundRecord<'a> {
    /// The value of the last header called `name` (Kafka's "last header wins").
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .rev()
            .find(|h| h.name == name)
            .map(|h| h.value.as_slice())
    }
}

/// The idempotent producer identity of one record, as the gateway saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerIdentity {
    /// Producer id handed out by the gateway.
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// The partition the client produced to (of the customer's topic).
    pub client_partition: i32,
    /// The record's own sequence number (base sequence + offset delta).
    pub sequence: i32,
}

impl ProducerIdentity {
    /// Parses `{producer_id}:{epoch}:{client_partition}:{sequence}`.
    pub fn parse(text: &str) -> Option<ProducerIdentity> {
        let mut parts = text.split(':');
        let identity = ProducerIdentity {
            producer_id: parts.next()?.parse().ok()?,
            epoch: parts.next()?.parse().ok()?,
            client_partition: parts.next()?.parse().ok()?,
            sequence: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(identity)
    }

    /// The header value form.
    pub fn to_header_value(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.producer_id, self.epoch, self.client_partition, self.sequence
        )
    }
}

/// Who wrote a record: read from the gateway's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The project id (SASL username).
    pub project_id: String,
    /// The collection name as produced (validated later, see [`crate::collection`]).
    pub collection: String,
    /// The id of the authenticating key.
    pub key_id: String,
    /// Present when the record came from an idempotent producer.
    pub producer: Option<ProducerIdentity>,
}

impl Tenant {
    /// Reads the tenant headers of `record`.
    pub fn from_record(record: &InboundRecord<'_>) -> Result<Tenant, Rejection> {
        let project_id = required_header(record, HEADER_PROJECT_ID)?;
        check_project_id(&project_id).map_err(|problem| {
            Rejection::new(
                ErrorCode::MissingTenantHeadersError,
                format!("the {HEADER_PROJECT_ID} header is not a valid project id: {problem}"),
            )
        })?;
        let collection = required_header(record, HEADER_COLLECTION)?;
        let key_id = required_header(record, HEADER_KEY_ID)?;
        let producer = match record.header(HEADER_PRODUCER) {
            None => None,
            Some(bytes) => {
                let parsed = std::str::from_utf8(bytes)
                    .ok()
                    .and_then(ProducerIdentity::parse);
                Some(parsed.ok_or_else(|| {
                    Rejection::new(
                        ErrorCode::MissingTenantHeadersError,
                        format!(
                            "the {HEADER_PRODUCER} header is not \
                             producer_id:epoch:partition:sequence"
                        ),
                    )
                })?)
            }
        };
        Ok(Tenant {
            project_id,
            collection,
            key_id,
            producer,
        })
    }
}

fn required_header(record: &InboundRecord<'_>, name: &str) -> Result<String, Rejection> {
    let bytes = record.header(name).ok_or_else(|| {
        Rejection::new(
            ErrorCode::MissingTenantHeadersError,
            format!(
                "the record has no {name} header; records must reach the inbound topic through \
                 the gateway, which sets it"
            ),
        )
    })?;
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.is_empty() => Ok(text.to_owned()),
        _ => Err(Rejection::new(
            ErrorCode::MissingTenantHeadersError,
            format!("the {name} header is empty or not UTF-8"),
        )),
    }
}

/// The longest accepted project id.
pub const MAX_PROJECT_ID_LEN: usize = 64;

/// Project ids are 1 to 64 characters from `A-Z a-z 0-9 _ -`: they are part of storage keys,
/// which use `#` as a separator, and of SASL usernames.
pub fn check_project_id(project_id: &str) -> Result<(), &'static str> {
    if project_id.is_empty() || project_id.len() > MAX_PROJECT_ID_LEN {
        return Err("it must be 1 to 64 characters long");
    }
    if !project_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("only A-Z, a-z, 0-9, '_' and '-' are allowed");
    }
    Ok(())
}

/// The partition of the inbound topic a customer's record goes to: hash(project, collection,
/// client partition) mod partitions (architecture.md), so a producer's per-partition order is
/// kept and one hot collection still spreads over many partitions.
pub fn inbound_partition(
    project_id: &str,
    collection: &str,
    client_partition: i32,
    partitions: i32,
) -> i32 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(project_id.as_bytes())
        .chain_update([0])
        .chain_update(collection.as_bytes())
        .chain_update([0])
        .chain_update(client_partition.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(partitions.max(1).unsigned_abs())) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_mapping_is_stable_and_spreads_one_collection() {
        let p = inbound_partition("4f1c9a3be6d2a1b07c3e5f11", "purchases", 3, 8);
        assert_eq!(
            p,
            inbound_partition("4f1c9a3be6d2a1b07c3e5f11", "purchases", 3, 8)
        );
        assert!((0..8).contains(&p));
        let spread: std::collections::HashSet<i32> = (0..8)
            .map(|c| inbound_partition("4f1c9a3be6d2a1b07c3e5f11", "purchases", c, 8))
            .collect();
        assert!(spread.len() >= 4, "8 client partitions land on {spread:?}");
        // The separator keeps ("ab","c") and ("a","bc") apart.
        let a: Vec<i32> = (0..16)
            .map(|c| inbound_partition("ab", "c", c, 1024))
            .collect();
        let b: Vec<i32> = (0..16)
            .map(|c| inbound_partition("a", "bc", c, 1024))
            .collect();
        assert_ne!(a, b);
    }

    fn record(headers: &[Header]) -> InboundRecord<'_> {
        InboundRecord {
            topic: "keen-inbound",
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: None,
            value: Some(b"{}"),
            headers,
        }
    }

    #[test]
    fn tenant_is_read_from_headers() {
        let headers = vec![
            Header::new(HEADER_PROJECT_ID, "p1"),
            Header::new(HEADER_COLLECTION, "purchases"),
            Header::new(HEADER_KEY_ID, "0123456789abcdef"),
            Header::new(HEADER_PRODUCER, "8412301:0:2:57"),
        ];
        let tenant = Tenant::from_record(&record(&headers)).expect("valid");
        assert_eq!(tenant.project_id, "p1");
        assert_eq!(tenant.collection, "purchases");
        assert_eq!(tenant.key_id, "0123456789abcdef");
        assert_eq!(
            tenant.producer,
            Some(ProducerIdentity {
                producer_id: 8412301,
                epoch: 0,
                client_partition: 2,
                sequence: 57
            })
        );
    }

    #[test]
    fn missing_or_bad_tenant_headers_are_rejected() {
        let full = [
            Header::new(HEADER_PROJECT_ID, "p1"),
            Header::new(HEADER_COLLECTION, "c"),
            Header::new(HEADER_KEY_ID, "k"),
        ];
        for skip in 0..full.len() {
            let headers: Vec<Header> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, h)| h.clone())
                .collect();
            let rejection = Tenant::from_record(&record(&headers)).expect_err("incomplete");
            assert_eq!(rejection.code, ErrorCode::MissingTenantHeadersError);
            assert!(
                rejection.message.contains(&full[skip].name),
                "{}",
                rejection.message
            );
        }
        let mut bad = full.to_vec();
        bad.push(Header::new(HEADER_PRODUCER, "1:2:3"));
        assert_eq!(
            Tenant::from_record(&record(&bad))
                .expect_err("bad producer")
                .code,
            ErrorCode::MissingTenantHeadersError
        );
        let mut bad_project = full.to_vec();
        bad_project[0] = Header::new(HEADER_PROJECT_ID, "p#1");
        assert!(Tenant::from_record(&record(&bad_project)).is_err());
        let mut not_utf8 = full.to_vec();
        not_utf8[1] = Header::new(HEADER_COLLECTION, vec![0xff, 0xfe]);
        assert!(Tenant::from_record(&record(&not_utf8)).is_err());
    }

    #[test]
    fn last_header_wins() {
        let headers = [
            Header::new("keen-ip", "1.1.1.1"),
            Header::new("keen-ip", "2.2.2.2"),
        ];
        assert_eq!(record(&headers).header("keen-ip"), Some(&b"2.2.2.2"[..]));
    }

    #[test]
    fn producer_identity_round_trips() {
        let id = ProducerIdentity {
            producer_id: -1,
            epoch: 3,
            client_partition: 7,
            sequence: i32::MAX,
        };
        assert_eq!(ProducerIdentity::parse(&id.to_header_value()), Some(id));
        assert_eq!(ProducerIdentity::parse("1:2:3:4:5"), None);
        assert_eq!(ProducerIdentity::parse("a:2:3:4"), None);
    }
}
