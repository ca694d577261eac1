//! A customer's record batch, decoded with bounds, and turned into the physical records of the
//! inbound topic with the tenant headers (architecture.md, "Physical record").
//!
//! Decoding goes through `kafka-protocol`'s `RecordBatchDecoder` with our own decompressors:
//! each stops at the request's remaining decompressed budget, so a small "bomb" cannot expand
//! past it. Before the decoder sees the decompressed records, their counts are checked against
//! the bytes that hold them, because the decoder allocates by the counts it reads (see
//! [`crate::wire`]).

use bytes::{Buf, Bytes};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder, TimestampType};
use keen_shared::record::{
    HEADER_COLLECTION, HEADER_KEY_ID, HEADER_PRODUCER, HEADER_PRODUCER_TIMESTAMP,
    HEADER_PROJECT_ID, ProducerIdentity, RESERVED_HEADERS,
};
use std::fmt::Write as _;
use std::io::Read;

use crate::config::MAX_BATCH_BYTES;

/// Offsets inside a v2 record batch header (KIP-98).
const MAGIC_OFFSET: usize = 16;
const ATTRIBUTES_OFFSET: usize = 21;
const RECORD_COUNT_OFFSET: usize = 57;
/// Bytes before the records of a v2 batch.
const BATCH_HEADER_LEN: usize = 61;
/// The smallest encoded record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
const MIN_RECORD_LEN: usize = 7;
/// A producer timestamp further than this from the gateway's clock is replaced by the clock.
pub const MAX_TIMESTAMP_SKEW_MS: i64 = 60 * 60 * 1000;

/// Why a partition's records were refused; each maps to the Kafka error code the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error("record batch of {size} bytes is larger than message.max.bytes = 1048588")]
    MessageTooLarge { size: usize },
    #[error("records expand past the gateway's decompressed limit of {limit} bytes per request")]
    DecompressedTooLarge { limit: usize },
    #[error("only message format v2 (Kafka 0.11+) is supported; this batch is v{magic}")]
    UnsupportedMessageFormat { magic: i8 },
    #[error("transactional batches are not accepted: transactions are not supported")]
    Transactional,
    #[error("a produce request must carry exactly one record batch per partition, found {found}")]
    BatchCount { found: usize },
    #[error("corrupt record batch: {reason}")]
    Corrupt { reason: String },
}

impl RecordsError {
    /// The Kafka error code.
    pub fn code(&self) -> i16 {
        use kafka_protocol::ResponseError as E;
        match self {
            RecordsError::MessageTooLarge { .. } | RecordsError::DecompressedTooLarge { .. } => {
                E::MessageTooLarge.code()
            }
            // UNSUPPORTED_FOR_MESSAGE_FORMAT.
            RecordsError::UnsupportedMessageFormat { .. } => 43,
            RecordsError::Transactional => E::TransactionalIdAuthorizationFailed.code(),
            RecordsError::BatchCount { .. } => E::InvalidRecord.code(),
            RecordsError::Corrupt { .. } => E::CorruptMessage.code(),
        }
    }
}

/// Who is producing, stamped on every record.
#[derive(Debug, Clone)]
pub struct TenantStamp<'a> {
    pub project_id: &'a str,
    pub collection: &'a str,
    pub key_id: &'a str,
    /// The partition the client produced to.
    pub client_partition: i32,
}

/// The tenant headers' values, shared by every record of a batch (one copy per batch).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantHeaders {
    pub project_id: Bytes,
    pub collection: Bytes,
    pub key_id: Bytes,
}

/// One record for the inbound topic. Its headers are the customer's own (reserved names
/// dropped), then the batch's [`TenantHeaders`], then `keen-producer` for an idempotent
/// producer: see [`OutboundRecord::headers`]. Nothing here is allocated per record unless the
/// customer sent headers of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// The customer's headers; names share the decoded request's buffer: no copy per record.
    pub customer_headers: Vec<(StrBytes, Bytes)>,
    /// The value of `keen-producer`: a slice of one buffer per batch.
    pub producer: Option<Bytes>,
    /// The value of `keen-producer-timestamp`: an idempotent producer's own timestamp, when
    /// `timestamp_ms` replaced it.
    pub producer_timestamp: Option<Bytes>,
    pub timestamp_ms: i64,
}

impl OutboundRecord {
    /// Every header of the physical record, in order.
    pub fn headers<'a>(
        &'a self,
        tenant: &'a TenantHeaders,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.customer_headers
            .iter()
            .map(|(name, value)| (name.as_str(), &value[..]))
            .chain([
                (HEADER_PROJECT_ID, &tenant.project_id[..]),
                (HEADER_COLLECTION, &tenant.collection[..]),
                (HEADER_KEY_ID, &tenant.key_id[..]),
            ])
            .chain(
                self.producer
                    .as_deref()
                    .map(|value| (HEADER_PRODUCER, value)),
            )
            .chain(
                self.producer_timestamp
                    .as_deref()
                    .map(|value| (HEADER_PRODUCER_TIMESTAMP, value)),
            )
    }

    /// How many headers [`OutboundRecord::headers`] yields.
    pub fn header_count(&self) -> usize {
        self.customer_headers.len()
            + 3
            + usize::from(self.producer.is_some())
            + usize::from(self.producer_timestamp.is_some())
    }

    /// Bytes the record occupies in the backing topic, roughly: what the backing limit bounds.
    pub fn size(&self, tenant: &TenantHeaders) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers(tenant)
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
            + 32
    }
}

/// What one record costs decoded, beyond its bytes: `kafka-protocol`'s record, the outbound
/// record built from it, and its share of the batch's producer identities. Counted against
/// the request's decompressed budget.
pub const DECODED_RECORD_OVERHEAD: usize = std::mem::size_of::<kafka_protocol::records::Record>()
    + std::mem::size_of::<OutboundRecord>()
    + 40;

/// One decoded batch and the idempotent producer fields of its header.
#[derive(Debug, Clone)]
pub struct Batch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// The tenant headers of every record.
    pub tenant: TenantHeaders,
    pub records: Vec<OutboundRecord>,
    /// Bytes of the batch as received.
    pub wire_bytes: usize,
}

impl Batch {
    /// The sequence number of the batch's last record.
    pub fn last_sequence(&self) -> i32 {
        let count = i32::try_from(self.records.len()).unwrap_or(i32::MAX);
        self.base_sequence.wrapping_add(count.saturating_sub(1))
    }
}

/// Decodes the one record batch of a partition, within `budget` decompressed bytes (reduced by
/// what this batch used), and stamps the tenant on each record.
pub fn decode_batch(
    records: &Bytes,
    budget: &mut usize,
    tenant: &TenantStamp<'_>,
    now_ms: i64,
) -> Result<Batch, RecordsError> {
    let batch_size = first_batch_size(records)?;
    if batch_size > MAX_BATCH_BYTES {
        return Err(RecordsError::MessageTooLarge { size: batch_size });
    }
    if batch_size != records.len() {
        // The bytes after the first batch may be another batch or garbage: either way refused.
        return Err(RecordsError::BatchCount {
            found: if records.len() > batch_size { 2 } else { 0 },
        });
    }
    let attributes =
        i16::from_be_bytes([records[ATTRIBUTES_OFFSET], records[ATTRIBUTES_OFFSET + 1]]);
    if attributes & (1 << 4) != 0 || attributes & (1 << 5) != 0 {
        // Transactional or control batches: only a transactional producer writes either.
        return Err(RecordsError::Transactional);
    }
    let record_count = i32::from_be_bytes(
        records[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4]
            .try_into()
            .map_err(|_| corrupt("short header"))?,
    );
    let record_count =
        usize::try_from(record_count).map_err(|_| corrupt("negative record count"))?;

    // Each record costs its decoded form on top of its bytes: millions of identical 7-byte
    // records compress into 1 KB, and decoded they would be hundreds of MB. Counted before a
    // byte is decompressed, from the header's count (which the decompressed bytes must match).
    let overhead = record_count.saturating_mul(DECODED_RECORD_OVERHEAD);
    let Some(limit) = budget.checked_sub(overhead) else {
        return Err(RecordsError::DecompressedTooLarge { limit: *budget });
    };
    let request_limit = *budget;
    let used = std::cell::Cell::new(0usize);
    let decompress = |compressed: &mut Bytes, compression: Compression| -> anyhow::Result<Bytes> {
        let plain = decompress_bounded(compressed, compression, limit)?;
        check_record_counts(&plain, record_count)?;
        used.set(plain.len());
        Ok(plain)
    };
    let mut input = records.clone();
    let set = RecordBatchDecoder::decode_with_custom_compression(&mut input, Some(decompress))
        .map_err(|error| {
            let text = format!("{error:#}");
            if text.contains(DECOMPRESSED_LIMIT) {
                RecordsError::DecompressedTooLarge {
                    limit: request_limit,
                }
            } else {
                corrupt(text)
            }
        })?;
    *budget = budget.saturating_sub(used.get().saturating_add(overhead));
    let Some(first) = set.records.first() else {
        return Err(corrupt("the batch holds no records"));
    };
    let (producer_id, producer_epoch) = (first.producer_id, first.producer_epoch);
    let base_sequence = first.sequence;

    // The tenant's values are shared by every record of the batch.
    let tenant_headers = TenantHeaders {
        project_id: Bytes::copy_from_slice(tenant.project_id.as_bytes()),
        collection: Bytes::copy_from_slice(tenant.collection.as_bytes()),
        key_id: Bytes::copy_from_slice(tenant.key_id.as_bytes()),
    };
    // An idempotent producer's identities, written one after the other into one buffer and
    // sliced per record below.
    let identities = (producer_id >= 0).then(|| {
        let mut text = String::with_capacity(set.records.len() * 40);
        let ends: Vec<usize> = set
            .records
            .iter()
            .map(|record| {
                let identity = ProducerIdentity {
                    producer_id,
                    epoch: producer_epoch,
                    client_partition: tenant.client_partition,
                    sequence: record.sequence,
                };
                // ProducerIdentity::to_header_value's form, without a String per record.
                let _ = write!(
                    text,
                    "{}:{}:{}:{}",
                    identity.producer_id,
                    identity.epoch,
                    identity.client_partition,
                    identity.sequence
                );
                text.len()
            })
            .collect();
        (Bytes::from(text), ends)
    });
    let mut out = Vec::with_capacity(set.records.len());
    for (index, record) in set.records.into_iter().enumerate() {
        let timestamp_ms = match record.timestamp_type {
            // abs_diff: a timestamp near i64::MIN must not overflow the subtraction.
            TimestampType::Creation
                if record.timestamp.abs_diff(now_ms) <= MAX_TIMESTAMP_SKEW_MS.unsigned_abs() =>
            {
                record.timestamp
            }
            _ => now_ms,
        };
        // A resend of an idempotent producer's record gets another clock reading: say so, so
        // that the ingest finds the first copy by keen.id.
        let producer_timestamp = (identities.is_some() && timestamp_ms != record.timestamp)
            .then(|| Bytes::from(record.timestamp.to_string()));
        let customer_headers: Vec<(StrBytes, Bytes)> = record
            .headers
            .into_iter()
            .filter(|(name, _)| !is_reserved(name.as_str()))
            .map(|(name, value)| (name, value.unwrap_or_default()))
            .collect();
        let producer = identities.as_ref().map(|(text, ends)| {
            let start = index.checked_sub(1).map_or(0, |previous| ends[previous]);
            text.slice(start..ends[index])
        });
        out.push(OutboundRecord {
            key: record.key,
            value: record.value,
            customer_headers,
            producer,
            producer_timestamp,
            timestamp_ms,
        });
    }
    Ok(Batch {
        producer_id,
        producer_epoch,
        base_sequence,
        tenant: tenant_headers,
        records: out,
        wire_bytes: batch_size,
    })
}

/// A customer header whose name is one of the gateway's: dropped, so no customer can write
/// into another project. Compared without case, so look-alikes are dropped too, and up to the
/// first NUL: a consumer that reads header names as C strings (librdkafka's API does, and so
/// the local event source mapping) would see `keen-producer\0x` as `keen-producer`.
fn is_reserved(name: &str) -> bool {
    let seen_as_c_string = name.split('\0').next().unwrap_or(name);
    RESERVED_HEADERS
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(seen_as_c_string))
}

fn corrupt(reason: impl Into<String>) -> RecordsError {
    RecordsError::Corrupt {
        reason: reason.into(),
    }
}

/// Size of the first batch in `records` (its length field plus the 12 bytes before it), after
/// checking it is a v2 batch.
fn first_batch_size(records: &Bytes) -> Result<usize, RecordsError> {
    if records.len() < BATCH_HEADER_LEN {
        if records.len() > MAGIC_OFFSET && records[MAGIC_OFFSET] < 2 {
            return Err(RecordsError::UnsupportedMessageFormat {
                magic: records[MAGIC_OFFSET] as i8,
            });
        }
        return Err(corrupt(format!(
            "{} bytes cannot hold a record batch header",
            records.len()
        )));
    }
    let magic = records[MAGIC_OFFSET] as i8;
    if magic != 2 {
        return Err(RecordsError::UnsupportedMessageFormat { magic });
    }
    let length = (&records[8..12]).get_i32();
    let length = usize::try_from(length).map_err(|_| corrupt("negative batch length"))?;
    Ok(length.saturating_add(12))
}

/// Marker in the error text of a decompression that hit the limit.
const DECOMPRESSED_LIMIT: &str = "decompressed size limit";

/// Decompressed output grows by doubling up to this size, then is given the whole limit at once.
const GROWTH_CAP: u64 = 1 << 20;

/// Decompresses `compressed` into at most `limit` bytes.
pub fn decompress_bounded(
    compressed: &mut Bytes,
    compression: Compression,
    limit: usize,
) -> anyhow::Result<Bytes> {
    let input = compressed.split_to(compressed.len());
    let over = || anyhow::anyhow!("{DECOMPRESSED_LIMIT} of {limit} bytes exceeded");
    let read_bounded = |reader: &mut dyn Read| -> anyhow::Result<Bytes> {
        let failed = |e: std::io::Error| anyhow::anyhow!("decompression failed: {e}");
        let bound = limit as u64 + 1;
        let mut out = Vec::new();
        let mut read = reader
            .take(bound.min(GROWTH_CAP))
            .read_to_end(&mut out)
            .map_err(failed)?;
        if read as u64 == GROWTH_CAP && bound > GROWTH_CAP {
            // Larger than that: room for the rest at once. Doubling past here would copy the
            // buffer each time, old and new both resident (jemalloc moves large blocks where
            // glibc remaps them); pages of the reservation that are never written cost no memory.
            out.reserve_exact(limit + 1 - out.len());
            read += reader
                .take(bound - GROWTH_CAP)
                .read_to_end(&mut out)
                .map_err(failed)?;
        }
        if read > limit {
            return Err(over());
        }
        Ok(Bytes::from(out))
    };
    match compression {
        Compression::None => {
            if input.len() > limit {
                return Err(over());
            }
            Ok(input)
        }
        Compression::Gzip => read_bounded(&mut flate2::read::MultiGzDecoder::new(&input[..])),
        Compression::Lz4 => read_bounded(&mut lz4_flex::frame::FrameDecoder::new(&input[..])),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(&input[..])
                .map_err(|e| anyhow::anyhow!("zstd: {e}"))?;
            // Frames that need a window over 8 MiB are refused rather than allocated for.
            decoder
                .window_log_max(23)
                .map_err(|e| anyhow::anyhow!("zstd: {e}"))?;
            read_bounded(&mut decoder)
        }
        Compression::Snappy => decompress_snappy(&input, limit).map_err(|e| match e {
            SnappyError::Limit => over(),
            SnappyError::Other(text) => anyhow::anyhow!("snappy: {text}"),
        }),
    }
}

enum SnappyError {
    Limit,
    Other(String),
}

/// Kafka's snappy is either a raw snappy block (librdkafka) or the xerial framing the Java client
/// writes: a 16-byte header, then blocks each prefixed by its big-endian length.
fn decompress_snappy(input: &[u8], limit: usize) -> Result<Bytes, SnappyError> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    let raw_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), SnappyError> {
        let len =
            snap::raw::decompress_len(block).map_err(|e| SnappyError::Other(e.to_string()))?;
        if out.len() + len > limit {
            return Err(SnappyError::Limit);
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| SnappyError::Other(e.to_string()))?;
        Ok(())
    };
    let mut out = Vec::new();
    if let Some(mut rest) = input.strip_prefix(XERIAL_MAGIC) {
        if rest.len() < 8 {
            return Err(SnappyError::Other("short xerial header".into()));
        }
        rest = &rest[8..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(SnappyError::Other("truncated xerial block length".into()));
            }
            let len = (&rest[..4]).get_u32() as usize;
            rest = &rest[4..];
            let block = rest
                .get(..len)
                .ok_or_else(|| SnappyError::Other("truncated xerial block".into()))?;
            raw_block(block, &mut out)?;
            rest = &rest[len..];
        }
    } else {
        raw_block(input, &mut out)?;
    }
    Ok(Bytes::from(out))
}

/// Checks that `record_count` records, and each record's header count, fit in the bytes that
/// hold them, before the decoder allocates by those counts.
fn check_record_counts(records: &[u8], record_count: usize) -> anyhow::Result<()> {
    if record_count.saturating_mul(MIN_RECORD_LEN) > records.len() {
        anyhow::bail!(
            "{record_count} records cannot fit in {} bytes",
            records.len()
        );
    }
    let mut rest = records;
    for _ in 0..record_count {
        let length = varint(&mut rest)?;
        let length =
            usize::try_from(length).map_err(|_| anyhow::anyhow!("negative record length"))?;
        let Some(mut record) = rest.get(..length) else {
            anyhow::bail!("record of {length} bytes with {} remaining", rest.len());
        };
        rest = &rest[length..];
        if record.is_empty() {
            anyhow::bail!("empty record");
        }
        record = &record[1..]; // attributes
        varint(&mut record)?; // timestamp delta
        varint(&mut record)?; // offset delta
        for _ in 0..2 {
            // key, then value
            let len = varint(&mut record)?;
            if len > 0 {
                let len = len as usize;
                if len > record.len() {
                    anyhow::bail!(
                        "record field of {len} bytes with {} remaining",
                        record.len()
                    );
                }
                record = &record[len..];
            }
        }
        let headers = varint(&mut record)?;
        // Each header takes at least two bytes (key length and value length).
        if headers < 0 || (headers as usize).saturating_mul(2) > record.len() {
            anyhow::bail!("{headers} headers cannot fit in {} bytes", record.len());
        }
    }
    Ok(())
}

/// A zigzag varint of at most 10 bytes (record fields are varints or varlongs).
fn varint(buf: &mut &[u8]) -> anyhow::Result<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let Some((&byte, rest)) = buf.split_first() else {
            anyhow::bail!("truncated varint");
        };
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    anyhow::bail!("varint longer than 10 bytes")
}

/// Compresses `plain` as Kafka producers do: the inverse of [`decompress_bounded`]. For snappy,
/// `xerial` chooses the Java client's framing over librdkafka's raw block. The gateway itself
/// never compresses; this serves tools, tests and the fuzz harness that build batches.
pub fn compress(plain: &[u8], compression: Compression, xerial: bool) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    Ok(match compression {
        Compression::None => plain.to_vec(),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(plain)?;
            encoder.finish()?
        }
        Compression::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            encoder.write_all(plain)?;
            encoder.finish().map_err(std::io::Error::other)?
        }
        Compression::Zstd => zstd::bulk::compress(plain, 1)?,
        Compression::Snappy => {
            let block = snap::raw::Encoder::new()
                .compress_vec(plain)
                .map_err(std::io::Error::other)?;
            if !xerial {
                return Ok(block);
            }
            let mut out = b"\x82SNAPPY\x00".to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let len = u32::try_from(block.len()).map_err(std::io::Error::other)?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&block);
            out
        }
    })
}

/// One v2 record batch of `records`, encoded by `kafka-protocol` and compressed with [`compress`].
pub fn encode_batch(
    records: &[kafka_protocol::records::Record],
    compression: Compression,
) -> anyhow::Result<Bytes> {
    let mut buf = bytes::BytesMut::new();
    kafka_protocol::records::RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        records.iter(),
        &kafka_protocol::records::RecordEncodeOptions {
            version: 2,
            compression,
        },
        Some(
            |plain: &mut bytes::BytesMut, out: &mut bytes::BytesMut, c: Compression| {
                out.extend_from_slice(&compress(plain, c, false)?);
                Ok(())
            },
        ),
    )?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::Record;

    const NOW: i64 = 1_764_600_000_000;

    fn tenant() -> TenantStamp<'static> {
        TenantStamp {
            project_id: "4f1c9a3be6d2a1b07c3e5f11",
            collection: "purchases",
            key_id: "0123456789abcdef",
            client_partition: 2,
        }
    }

    fn record(value: &[u8], headers: &[(&str, &[u8])], timestamp: i64, sequence: i32) -> Record {
        let mut map = IndexMap::new();
        for (k, v) in headers {
            map.insert(
                StrBytes::from_string((*k).to_owned()),
                Some(Bytes::copy_from_slice(v)),
            );
        }
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 8_412_301,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(sequence - 57),
            sequence,
            timestamp,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: map,
        }
    }

    fn encode(records: &[Record], compression: Compression) -> Bytes {
        encode_batch(records, compression).expect("encodes")
    }

    #[test]
    fn every_codec_round_trips_with_tenant_headers_and_forged_ones_dropped() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encode(
                &[
                    record(
                        b"{\"a\":1}",
                        &[("keen-project-id", b"victim"), ("keen-ip", b"1.2.3.4")],
                        NOW,
                        57,
                    ),
                    record(b"{\"a\":2}", &[("KEEN-COLLECTION", b"x")], NOW + 1, 58),
                ],
                compression,
            );
            let mut budget = 1 << 20;
            let decoded = decode_batch(&batch, &mut budget, &tenant(), NOW).expect("decodes");
            assert_eq!(decoded.producer_id, 8_412_301);
            assert_eq!(decoded.base_sequence, 57);
            assert_eq!(decoded.last_sequence(), 58);
            assert_eq!(decoded.records.len(), 2, "{compression:?}");
            let first = &decoded.records[0];
            assert_eq!(first.value.as_deref(), Some(&b"{\"a\":1}"[..]));
            let names: Vec<&str> = first.headers(&decoded.tenant).map(|(n, _)| n).collect();
            assert_eq!(
                names,
                [
                    "keen-ip",
                    "keen-project-id",
                    "keen-collection",
                    "keen-key-id",
                    "keen-producer"
                ]
            );
            assert_eq!(first.header_count(), names.len());
            let values: Vec<&[u8]> = first.headers(&decoded.tenant).map(|(_, v)| v).collect();
            assert_eq!(values[1], b"4f1c9a3be6d2a1b07c3e5f11");
            assert_eq!(values[4], b"8412301:0:2:57");
            let identity = ProducerIdentity {
                producer_id: 8_412_301,
                epoch: 0,
                client_partition: 2,
                sequence: 57,
            };
            assert_eq!(values[4], identity.to_header_value().as_bytes());
            let second = &decoded.records[1];
            assert!(
                second
                    .headers(&decoded.tenant)
                    .all(|(n, _)| n != "KEEN-COLLECTION")
            );
            assert_eq!(
                second.headers(&decoded.tenant).last().expect("producer").1,
                b"8412301:0:2:58"
            );
            assert_eq!(second.timestamp_ms, NOW + 1);
            assert!(budget < 1 << 20);
        }
    }

    #[test]
    fn many_tiny_records_are_refused_by_their_decoded_size_before_decompression() {
        // 200,000 empty records compress to under 256 KB with zstd; decoded they would
        // take 200,000 times the per-record overhead.
        let records: Vec<Record> = (0..200_000).map(|i| record(b"", &[], NOW, i)).collect();
        let batch = encode(&records, Compression::Zstd);
        assert!(batch.len() < 256 * 1024, "{} bytes", batch.len());
        let mut budget = 16 << 20;
        let error = decode_batch(&batch, &mut budget, &tenant(), NOW).expect_err("refused");
        assert_eq!(
            error,
            RecordsError::DecompressedTooLarge { limit: 16 << 20 }
        );
        assert!(DECODED_RECORD_OVERHEAD > 100, "{DECODED_RECORD_OVERHEAD}");
        // A thousand of them fit, and cost their overhead.
        let batch = encode(&records[..1000], Compression::Zstd);
        let mut budget = 16 << 20;
        decode_batch(&batch, &mut budget, &tenant(), NOW).expect("decodes");
        assert!((16 << 20) - budget >= 1000 * DECODED_RECORD_OVERHEAD);
    }

    #[test]
    fn reserved_names_cut_at_a_nul_are_dropped_and_other_nul_names_kept() {
        let batch = encode(
            &[record(
                b"{}",
                &[
                    ("keen-producer\0x", b"1:0:0:0"),
                    ("Keen-Project-Id\0", b"victim"),
                    ("trace\0id", b"kept"),
                ],
                NOW,
                0,
            )],
            Compression::None,
        );
        let decoded = decode_batch(&batch, &mut (1 << 20), &tenant(), NOW).expect("decodes");
        let record = &decoded.records[0];
        let headers: Vec<(&str, &[u8])> = record.headers(&decoded.tenant).collect();
        assert_eq!(headers[0], ("trace\0id", &b"kept"[..]));
        assert_eq!(
            headers.iter().filter(|(n, _)| n.contains('\0')).count(),
            1,
            "{headers:?}"
        );
        assert_eq!(
            headers
                .iter()
                .find(|(n, _)| *n == "keen-project-id")
                .map(|h| h.1),
            Some(&b"4f1c9a3be6d2a1b07c3e5f11"[..])
        );
    }

    #[test]
    fn timestamps_far_from_the_clock_are_replaced_by_it() {
        let batch = encode(
            &[
                record(b"{}", &[], NOW - MAX_TIMESTAMP_SKEW_MS - 1, 0),
                record(b"{}", &[], NOW + MAX_TIMESTAMP_SKEW_MS, 1),
            ],
            Compression::None,
        );
        let decoded = decode_batch(&batch, &mut (1 << 20), &tenant(), NOW).expect("decodes");
        assert_eq!(decoded.records[0].timestamp_ms, NOW);
        assert_eq!(decoded.records[1].timestamp_ms, NOW + MAX_TIMESTAMP_SKEW_MS);
        // The idempotent producer's own timestamp travels with a replaced one, last header.
        let replaced = (NOW - MAX_TIMESTAMP_SKEW_MS - 1).to_string();
        assert_eq!(
            decoded.records[0].headers(&decoded.tenant).last(),
            Some((HEADER_PRODUCER_TIMESTAMP, replaced.as_bytes()))
        );
        assert_eq!(decoded.records[1].producer_timestamp, None);

        // Found by the request_decode fuzz target: the skew check overflowed (a panic with
        // overflow checks, a wrong answer without) for timestamps near i64::MIN.
        for timestamp in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let batch = encode(&[record(b"{}", &[], timestamp, 0)], Compression::None);
            let decoded = decode_batch(&batch, &mut (1 << 20), &tenant(), NOW).expect("decodes");
            assert_eq!(decoded.records[0].timestamp_ms, NOW, "{timestamp}");
        }
    }

    #[test]
    fn a_zstd_bomb_stops_at_the_decompressed_limit() {
        let huge = vec![b'a'; 4 << 20];
        let batch = encode(&[record(&huge, &[], NOW, 0)], Compression::Zstd);
        assert!(
            batch.len() < 4096,
            "the bomb is small on the wire: {}",
            batch.len()
        );
        let error = decode_batch(&batch, &mut (1 << 20), &tenant(), NOW).expect_err("refused");
        assert_eq!(error, RecordsError::DecompressedTooLarge { limit: 1 << 20 });
        assert_eq!(error.code(), 10);
    }

    #[test]
    fn size_limit_is_exact() {
        // Grow one record's value until the batch is exactly the limit, then one byte more.
        let size_with =
            |n: usize| encode(&[record(&vec![b'x'; n], &[], NOW, 0)], Compression::None);
        let base = size_with(1_000_000).len();
        let exact = size_with(1_000_000 + MAX_BATCH_BYTES - base);
        assert_eq!(exact.len(), MAX_BATCH_BYTES);
        decode_batch(&exact, &mut (16 << 20), &tenant(), NOW).expect("accepted");
        let over = size_with(1_000_001 + MAX_BATCH_BYTES - base);
        let error = decode_batch(&over, &mut (16 << 20), &tenant(), NOW).expect_err("refused");
        assert_eq!(
            error,
            RecordsError::MessageTooLarge {
                size: MAX_BATCH_BYTES + 1
            }
        );
    }

    #[test]
    fn lying_counts_are_refused_before_allocation() {
        let mut batch = encode(&[record(b"{}", &[], NOW, 0)], Compression::None).to_vec();
        // A record count of 1,000 in a one-record batch: refused by the count check; fix the CRC
        // after patching to make the count the only problem.
        let mut patch_count = |count: i32| {
            batch[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4]
                .copy_from_slice(&count.to_be_bytes());
            let crc = crc32c_of(&batch[21..]);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
            Bytes::from(batch.clone())
        };
        let error =
            decode_batch(&patch_count(1_000), &mut (1 << 20), &tenant(), NOW).expect_err("refused");
        assert!(
            matches!(error, RecordsError::Corrupt { ref reason } if reason.contains("cannot fit")),
            "{error:?}"
        );
        // i32::MAX records would not fit the budget decoded: refused before anything else.
        let error = decode_batch(&patch_count(i32::MAX), &mut (1 << 20), &tenant(), NOW)
            .expect_err("refused");
        assert_eq!(error, RecordsError::DecompressedTooLarge { limit: 1 << 20 });

        // A header count of 2^30 inside an otherwise valid record.
        let mut plain = Vec::new();
        let body: &[u8] = &[0, 0, 0, 1, 0, 0x80, 0x80, 0x80, 0x80, 0x08];
        plain.push((body.len() as u8) << 1);
        plain.extend_from_slice(body);
        assert!(check_record_counts(&plain, 1).is_err());
    }

    #[test]
    fn old_message_formats_are_named() {
        let mut batch = encode(&[record(b"{}", &[], NOW, 0)], Compression::None).to_vec();
        batch[MAGIC_OFFSET] = 1;
        let error =
            decode_batch(&Bytes::from(batch), &mut (1 << 20), &tenant(), NOW).expect_err("v1");
        assert_eq!(error, RecordsError::UnsupportedMessageFormat { magic: 1 });
        assert_eq!(error.code(), 43);
    }

    /// CRC-32C (Castagnoli), bitwise: only for patching test batches.
    fn crc32c_of(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
