//! The request-decoding fuzz harness, shared by the cargo-fuzz target
//! (`fuzz_targets/request_decode.rs`, nightly) and its stable fallbacks (the example
//! `gateway/examples/fuzz_decode.rs` and the test `gateway/tests/fuzz_decode.rs`), which include
//! this file with `#[path]`.
//!
//! [`one_input`] feeds one frame through the path the gateway runs for every request
//! ([`keen_gateway::decode::decode_request`]: prefix, API key, advertised range, header, shape
//! check, body) and, for a Produce, [`keen_gateway::records::decode_batch`] on each partition's
//! records. It must never panic, whatever the bytes.
//!
//! The stable fallback has no coverage feedback, so it makes up for it with structure: inputs are
//! real requests encoded by `kafka-protocol` (every served and refused API at every advertised
//! version), mutated; Produce requests whose records (plain, before compression) are mutated and
//! then compressed with each codec into a batch with a correct CRC, so mutations reach the
//! decompressors and the record decoder behind them; and random bytes behind a plausible prefix.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, TimestampType};
use keen_gateway::config::Limits;
use keen_gateway::decode::decode_request;
use keen_gateway::records::{TenantStamp, decode_batch};
use std::time::{Duration, Instant};

/// The clock `decode_batch` compares record timestamps with (fixed: runs are reproducible).
pub const NOW_MS: i64 = 1_764_600_000_000;

/// How far an input got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Depth {
    /// Refused by the frame size, prefix, API key or version checks.
    Prefix = 0,
    /// Refused by the header, the shape check or the body decoder.
    Body = 1,
    /// A decoded request (for a Produce: no batch decoded).
    Request = 2,
    /// A Produce with at least one batch decoded into records.
    Records = 3,
}

/// Feeds one frame (the bytes after the length prefix) through the gateway's decoding path.
pub fn one_input(data: &[u8]) -> Depth {
    let limits = Limits::default();
    let Ok(size) = i32::try_from(data.len()) else {
        return Depth::Prefix;
    };
    if keen_gateway::wire::check_frame_size(size, limits.max_request_bytes).is_err() {
        return Depth::Prefix;
    }
    let request = match decode_request(Bytes::copy_from_slice(data)) {
        Ok(request) => request,
        Err(keen_gateway::decode::DecodeError::Wire(_)) => return Depth::Body,
        Err(_) => return Depth::Prefix,
    };
    let Some(RequestKind::Produce(produce)) = request.body else {
        return Depth::Request;
    };
    let mut depth = Depth::Request;
    let mut budget = limits.max_decompressed_bytes;
    for topic in &produce.topic_data {
        for partition in &topic.partition_data {
            let Some(records) = &partition.records else {
                continue;
            };
            let tenant = TenantStamp {
                project_id: "4f1c9a3be6d2a1b07c3e5f11",
                collection: topic.name.0.as_str(),
                key_id: "0123456789abcdef",
                client_partition: partition.index,
            };
            if let Ok(batch) = decode_batch(records, &mut budget, &tenant, NOW_MS) {
                // Touch what the gateway forwards, so nothing is optimised away.
                let bytes: usize = batch.records.iter().map(|r| r.size(&batch.tenant)).sum();
                if bytes > 0 {
                    depth = Depth::Records;
                }
            }
        }
    }
    depth
}

// ---------------------------------------------------------------------------------------------
// Randomness

/// xorshift64*: small, fast, reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds: real requests encoded by kafka-protocol

/// The starting material: whole request frames, and plain (uncompressed) record sequences with
/// their record counts, for the structure-aware Produce inputs.
pub struct Corpus {
    pub frames: Vec<Vec<u8>>,
    pub plain_records: Vec<(Vec<u8>, i32)>,
}

fn name(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn topic(text: &str) -> TopicName {
    TopicName(name(text))
}

/// A request frame: header at the API's header version, then the body.
pub fn encode_frame(api: ApiKey, version: i16, correlation_id: i32, body: &RequestKind) -> Vec<u8> {
    let mut buf = BytesMut::new();
    use kafka_protocol::protocol::Encodable;
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(name("rdkafka")))
        .encode(&mut buf, api.request_header_version(version))
        .expect("header encodes");
    body.encode(&mut buf, version).expect("body encodes");
    buf.to_vec()
}

fn record(
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, &[u8])],
) -> Record {
    let mut map = IndexMap::new();
    for (k, v) in headers {
        map.insert(name(k), Some(Bytes::copy_from_slice(v)));
    }
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: 8_412_301,
        producer_epoch: 0,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: offset as i32,
        timestamp: NOW_MS + offset,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: map,
    }
}

/// Compresses as Kafka clients do (snappy: raw blocks, or the Java client's xerial framing).
pub fn compress(plain: &[u8], compression: Compression, xerial: bool) -> Vec<u8> {
    keen_gateway::records::compress(plain, compression, xerial).expect("compresses")
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn encode_batch(records: &[Record], compression: Compression) -> Bytes {
    keen_gateway::records::encode_batch(records, compression).expect("the batch encodes")
}

fn record_sets() -> Vec<Vec<Record>> {
    vec![
        vec![record(
            0,
            None,
            Some(b"{\"item\":\"golden widget\",\"price\":25}"),
            &[],
        )],
        vec![
            record(
                0,
                Some(b"user-1"),
                Some(b"{\"a\":1}"),
                &[("keen-ip", b"81.2.69.142")],
            ),
            record(1, None, None, &[("keen-project-id", b"forged"), ("h", b"")]),
            record(2, Some(b""), Some(&[0u8; 300]), &[]),
        ],
        (0..20)
            .map(|i| record(i, None, Some(format!("{{\"n\":{i}}}").as_bytes()), &[]))
            .collect(),
    ]
}

fn produce(partitions: Vec<(i32, Option<Bytes>)>, transactional: bool) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_transactional_id(transactional.then(|| TransactionalId(name("tx"))))
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(topic("purchases"))
                    .with_partition_data(
                        partitions
                            .into_iter()
                            .map(|(index, records)| {
                                produce_request::PartitionProduceData::default()
                                    .with_index(index)
                                    .with_records(records)
                            })
                            .collect(),
                    ),
            ]),
    )
}

/// Every seed: served APIs at every advertised version, Produce batches in every codec, and the
/// refused APIs whose bodies the gateway decodes.
pub fn corpus() -> Corpus {
    let mut requests: Vec<(ApiKey, i16, RequestKind)> = Vec::new();
    for version in 0..=4 {
        requests.push((
            ApiKey::ApiVersions,
            version,
            RequestKind::ApiVersions(
                ApiVersionsRequest::default()
                    .with_client_software_name(name("librdkafka"))
                    .with_client_software_version(name("2.16.0")),
            ),
        ));
    }
    for version in 0..=1 {
        requests.push((
            ApiKey::SaslHandshake,
            version,
            RequestKind::SaslHandshake(
                SaslHandshakeRequest::default().with_mechanism(name("PLAIN")),
            ),
        ));
    }
    for version in 0..=2 {
        requests.push((
            ApiKey::SaslAuthenticate,
            version,
            RequestKind::SaslAuthenticate(SaslAuthenticateRequest::default().with_auth_bytes(
                Bytes::from_static(b"\0project\0a-key-of-thirty-two-characters!"),
            )),
        ));
    }
    for version in 0..=12 {
        requests.push((
            ApiKey::Metadata,
            version,
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(topic("purchases"))),
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(topic("bad name!"))),
                ]))),
        ));
    }
    for version in 0..=5 {
        requests.push((
            ApiKey::InitProducerId,
            version,
            RequestKind::InitProducerId(
                InitProducerIdRequest::default()
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            ),
        ));
    }
    let sets = record_sets();
    for version in 3..=12 {
        for (i, compression) in CODECS.into_iter().enumerate() {
            let set = &sets[i % sets.len()];
            let batch = encode_batch(set, compression);
            requests.push((
                ApiKey::Produce,
                version,
                produce(vec![(i as i32, Some(batch))], false),
            ));
        }
        // Several partitions, a missing batch, two batches in one partition, a transaction.
        let one = encode_batch(&sets[0], Compression::None);
        let mut two = one.to_vec();
        two.extend_from_slice(&one);
        requests.push((
            ApiKey::Produce,
            version,
            produce(
                vec![
                    (0, Some(one.clone())),
                    (7, None),
                    (3, Some(Bytes::from(two))),
                ],
                false,
            ),
        ));
        requests.push((
            ApiKey::Produce,
            version,
            produce(vec![(1, Some(one))], true),
        ));
    }
    for version in 1..=7 {
        requests.push((
            ApiKey::ListOffsets,
            version,
            RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic("purchases"))
                    .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()]),
            ])),
        ));
    }
    for version in 2..=7 {
        requests.push((
            ApiKey::CreateTopics,
            version,
            RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(topic("a"))
                    .with_assignments(vec![
                        create_topics_request::CreatableReplicaAssignment::default()
                            .with_broker_ids(vec![BrokerId(1), BrokerId(2)]),
                    ])
                    .with_configs(vec![
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(name("retention.ms")),
                    ]),
            ])),
        ));
    }
    for version in 1..=6 {
        let mut request = DeleteTopicsRequest::default();
        if version >= 6 {
            request.topics = vec![
                delete_topics_request::DeleteTopicState::default().with_name(Some(topic("a"))),
            ];
        } else {
            request.topic_names = vec![topic("a"), topic("b")];
        }
        requests.push((
            ApiKey::DeleteTopics,
            version,
            RequestKind::DeleteTopics(request),
        ));
    }
    for version in 2..=8 {
        requests.push((
            ApiKey::OffsetCommit,
            version,
            RequestKind::OffsetCommit(OffsetCommitRequest::default().with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic("a"))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default(),
                        ]),
                ])),
        ));
    }
    for version in 0..=3 {
        requests.push((
            ApiKey::TxnOffsetCommit,
            version,
            RequestKind::TxnOffsetCommit(TxnOffsetCommitRequest::default().with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(topic("a"))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default(),
                    ]),
            ])),
        ));
        requests.push((
            ApiKey::AddPartitionsToTxn,
            version,
            RequestKind::AddPartitionsToTxn(
                AddPartitionsToTxnRequest::default().with_v3_and_below_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(topic("a"))
                        .with_partitions(vec![0, 1]),
                ]),
            ),
        ));
        requests.push((
            ApiKey::CreatePartitions,
            version,
            RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic("a"))
                    .with_assignments(Some(vec![
                        create_partitions_request::CreatePartitionsAssignment::default()
                            .with_broker_ids(vec![BrokerId(1)]),
                    ])),
            ])),
        ));
        requests.push((
            ApiKey::FindCoordinator,
            version,
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(name("group"))),
        ));
    }
    for version in 0..=5 {
        requests.push((
            ApiKey::DescribeGroups,
            version,
            RequestKind::DescribeGroups(
                DescribeGroupsRequest::default().with_groups(vec![GroupId(name("g"))]),
            ),
        ));
    }
    for version in 0..=2 {
        requests.push((
            ApiKey::DeleteGroups,
            version,
            RequestKind::DeleteGroups(
                DeleteGroupsRequest::default().with_groups_names(vec![GroupId(name("g"))]),
            ),
        ));
    }
    let mut frames: Vec<Vec<u8>> = requests
        .iter()
        .enumerate()
        .map(|(i, (api, version, body))| encode_frame(*api, *version, i as i32, body))
        .collect();
    // The other refused APIs, with default bodies (Fetch with a partition, since its refusal
    // echoes them), at every advertised version.
    for &(api, min, max) in keen_gateway::api::ADVERTISED {
        for version in min..=max {
            let body = match api {
                ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default().with_topics(vec![
                    fetch_request::FetchTopic::default()
                        .with_topic(topic("purchases"))
                        .with_partitions(vec![fetch_request::FetchPartition::default()]),
                ])),
                ApiKey::OffsetFetch => RequestKind::OffsetFetch(OffsetFetchRequest::default()),
                ApiKey::JoinGroup => RequestKind::JoinGroup(JoinGroupRequest::default()),
                ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
                ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default()),
                ApiKey::SyncGroup => RequestKind::SyncGroup(SyncGroupRequest::default()),
                ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
                ApiKey::AddOffsetsToTxn => {
                    RequestKind::AddOffsetsToTxn(AddOffsetsToTxnRequest::default())
                }
                ApiKey::EndTxn => RequestKind::EndTxn(EndTxnRequest::default()),
                _ => continue,
            };
            frames.push(encode_frame(api, version, frames.len() as i32, &body));
        }
    }
    let plain_records = sets
        .iter()
        .map(|set| {
            let batch = encode_batch(set, Compression::None);
            (batch[BATCH_HEADER..].to_vec(), set.len() as i32)
        })
        .collect();
    Corpus {
        frames,
        plain_records,
    }
}

// ---------------------------------------------------------------------------------------------
// Mutation and generation

const BATCH_HEADER: usize = 61;
const INTERESTING_8: [u8; 6] = [0, 1, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_16: [i16; 8] = [0, 1, -1, 2, 12, 99, i16::MAX, i16::MIN];
const INTERESTING_32: [i32; 11] = [
    0,
    1,
    -1,
    -2,
    7,
    61,
    1 << 16,
    1 << 20,
    1_048_589,
    i32::MAX,
    i32::MIN,
];

/// Applies one to four random edits to `data`; `other` is material to splice in.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..=rng.below(4) {
        let len = data.len();
        let at = rng.below(len.max(1));
        match rng.below(11) {
            0 if len > 0 => data[at] ^= 1 << rng.below(8),
            1 if len > 0 => data[at] = rng.next_u64() as u8,
            2 if len > 0 => data[at] = *rng.pick(&INTERESTING_8),
            3 if len >= 2 => {
                let at = rng.below(len - 1);
                data[at..at + 2].copy_from_slice(&rng.pick(&INTERESTING_16).to_be_bytes());
            }
            4 if len >= 4 => {
                let at = rng.below(len - 3);
                data[at..at + 4].copy_from_slice(&rng.pick(&INTERESTING_32).to_be_bytes());
            }
            5 => {
                let n = 1 + rng.below(16);
                let bytes = rng.bytes(n);
                data.splice(at..at, bytes);
            }
            6 if len > 0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                data.drain(at..end);
            }
            7 => data.truncate(at),
            8 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(64)).min(other.len());
                data.splice(at..at, other[from..end].iter().copied());
            }
            9 if len > 0 => {
                let end = (at + 1 + rng.below(32)).min(len);
                let chunk = data[at..end].to_vec();
                for _ in 0..=rng.below(8) {
                    data.splice(at..at, chunk.iter().copied());
                }
            }
            // An over-long compact varint or count.
            _ => data
                .splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f])
                .for_each(drop),
        }
    }
}

/// CRC-32C (Castagnoli), table-driven: record batches carry it over their content.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut crc = i as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
            *slot = crc;
        }
        table
    });
    !data.iter().fold(!0u32, |crc, &byte| {
        table[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// A v2 batch around `payload` (already compressed with `compression`), header fields partly
/// random, with a correct length and CRC so that the decoder gets past them.
fn batch_around(rng: &mut Rng, payload: &[u8], compression: Compression, count: i32) -> Vec<u8> {
    let mut attributes = compression as i16;
    if rng.chance(16) {
        attributes |= 1 << (3 + rng.below(4)); // timestamp type, transactional, control, horizon
    }
    let producer_id: i64 = if rng.chance(3) { -1 } else { 8_412_301 };
    let mut b = Vec::with_capacity(BATCH_HEADER + payload.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((BATCH_HEADER - 12 + payload.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&count.wrapping_sub(1).to_be_bytes());
    let timestamp = if rng.chance(8) { 0 } else { NOW_MS };
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(rng.below(1000) as i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(payload);
    if rng.chance(32) {
        // Edit the header after the length (and maybe the CRC) are right.
        let at = 12 + rng.below(BATCH_HEADER - 12);
        b[at] = rng.next_u64() as u8;
    }
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// One input: a mutated seed frame, a structure-aware Produce, or random bytes behind a plausible
/// prefix.
pub fn generate(rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
    match rng.below(10) {
        0..=3 => {
            let mut frame = rng.pick(&corpus.frames).clone();
            let other = rng.pick(&corpus.frames).clone();
            mutate(rng, &mut frame, &other);
            frame
        }
        4..=8 => {
            let partitions = 1 + rng.below(3);
            let data = (0..partitions)
                .map(|p| {
                    let (plain, count) = rng.pick(&corpus.plain_records).clone();
                    let mut plain = plain;
                    if !rng.chance(4) {
                        let (other, _) = rng.pick(&corpus.plain_records).clone();
                        mutate(rng, &mut plain, &other);
                    }
                    let count = if rng.chance(8) {
                        *rng.pick(&INTERESTING_32)
                    } else {
                        count
                    };
                    let compression = *rng.pick(&CODECS);
                    let payload = compress(&plain, compression, rng.chance(2));
                    let mut batch = batch_around(rng, &payload, compression, count);
                    if rng.chance(16) {
                        let copy = batch.clone();
                        batch.extend_from_slice(&copy);
                    }
                    (p as i32 * 3, Some(Bytes::from(batch)))
                })
                .collect();
            let version = 3 + rng.below(10) as i16;
            let mut frame = encode_frame(ApiKey::Produce, version, 1, &produce(data, false));
            if rng.chance(8) {
                let other = rng.pick(&corpus.frames).clone();
                mutate(rng, &mut frame, &other);
            }
            frame
        }
        _ => {
            let (api, min, max) = *rng.pick(keen_gateway::api::ADVERTISED);
            let version = if rng.chance(8) {
                rng.next_u64() as i16
            } else {
                min + rng.below((max - min + 1) as usize) as i16
            };
            let mut frame = Vec::new();
            frame.extend_from_slice(&(api as i16).to_be_bytes());
            frame.extend_from_slice(&version.to_be_bytes());
            frame.extend_from_slice(&(rng.next_u64() as i32).to_be_bytes());
            let n = rng.below(128);
            frame.extend(rng.bytes(n));
            frame
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub inputs: u64,
    pub elapsed: Duration,
    /// Inputs by [`Depth`].
    pub depths: [u64; 4],
    /// The first input that panicked, and the panic message.
    pub crash: Option<(Vec<u8>, String)>,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.inputs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} inputs in {:.1} s ({:.0}/s); refused at the prefix {}, at the header or body {}, decoded {}, with records {}",
            self.inputs,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.depths[0],
            self.depths[1],
            self.depths[2],
            self.depths[3],
        )
    }
}

/// Runs generated inputs for `duration` (or until `max_inputs`), stopping at the first panic.
/// The seeds themselves go first.
pub fn run(seed: u64, duration: Duration, max_inputs: u64) -> Report {
    let corpus = corpus();
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut report = Report::default();
    let mut seeds = corpus.frames.iter();
    while report.inputs < max_inputs {
        if report.inputs % 256 == 0 && started.elapsed() >= duration {
            break;
        }
        let input = match seeds.next() {
            Some(frame) => frame.clone(),
            None => generate(&mut rng, &corpus),
        };
        report.inputs += 1;
        match std::panic::catch_unwind(|| one_input(&input)) {
            Ok(depth) => report.depths[depth as usize] += 1,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                report.crash = Some((input, message));
                break;
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Lowercase hex, for printing a crashing input.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
