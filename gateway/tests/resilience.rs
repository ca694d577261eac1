//! Robustness and idempotence of the gateway, each against its own servers (moto, tansu, the real
//! `keen-gateway` binary): a resend after a lost response through one instance and through two,
//! the batch size limit to the byte, a zstd bomb, garbage on the wire, and SIGTERM in the middle
//! of a large produce.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::{Gateway, INBOUND_PARTITIONS, INBOUND_TOPIC, Project, Stack, python, run_client};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, TimestampType};
use keen_testkit::{BackingRecord, Fault, FaultProxy, read_topic};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The topic (collection) every test produces to.
const TOPIC: &str = "purchases";
/// Kafka's MESSAGE_TOO_LARGE.
const MESSAGE_TOO_LARGE: i16 = 10;
/// Kafka's UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;
/// The largest batch a customer may send (product.md §1).
const MAX_BATCH: usize = 1_048_588;

// ---------------------------------------------------------------------------------------------
// Clients and the proxy

/// The stock clients the resend tests drive.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// confluent-kafka (librdkafka 2.16) with `enable.idempotence=true`.
    Librdkafka,
    /// kafka-python 3 (idempotent by default).
    KafkaPython,
    /// kafkajs 2.2.4 with `idempotent: true`, `maxInFlightRequests: 1`.
    Kafkajs,
}

/// Produces `values` to [`TOPIC`] over SASL/PLAIN and returns the client script's JSON answer.
fn produce_with(client: Client, bootstrap: &str, project: &Project, values: &[String]) -> Value {
    let python = python();
    let python = python.to_str().expect("utf-8 path");
    let records: Vec<Value> = values.iter().map(|v| json!({ "value": v })).collect();
    match client {
        Client::Librdkafka => run_client(
            python,
            "confluent_produce.py",
            &json!({
                "bootstrap": bootstrap, "mechanism": "PLAIN",
                "username": project.id, "password": project.write_key,
                "topic": TOPIC, "records": records,
                // A reconnect waits 500 ms: time for the two-instance test to steer it.
                "config": {"enable.idempotence": true, "linger.ms": 20,
                           "reconnect.backoff.ms": 500, "reconnect.backoff.max.ms": 1000},
            }),
        ),
        Client::KafkaPython => run_client(
            python,
            "kafka_python_produce.py",
            &json!({
                "bootstrap": bootstrap, "mechanism": "PLAIN",
                "username": project.id, "password": project.write_key,
                "topic": TOPIC, "records": records, "flush_each": false,
            }),
        ),
        Client::Kafkajs => {
            // kafkajs runs its partitioner again on every retry: a keyless record may be resent
            // to another partition under that partition's next sequence, which no broker can
            // recognise as a resend (Kafka itself would store it twice). Explicit partitions keep
            // each record where it was first sent.
            let records: Vec<Value> = values
                .iter()
                .enumerate()
                .map(|(n, v)| json!({ "value": v, "partition": n % 4 }))
                .collect();
            run_client(
                "node",
                "kafkajs_produce.js",
                &json!({
                    "bootstrap": bootstrap, "mechanism": "plain",
                    "username": project.id, "password": project.write_key,
                    "topic": TOPIC, "records": records, "batches": 2,
                }),
            )
        }
    }
}

/// A fault proxy dropping the first Produce response, in front of `instances` gateways that all
/// advertise the proxy (so clients stay behind it). The proxy starts first, with no upstream, so
/// that its address is known to the gateways.
fn gateways_behind_proxy(stack: &Stack, instances: usize) -> (FaultProxy, Vec<Gateway>) {
    let proxy = FaultProxy::start_many(Vec::new(), Fault::DropFirstProduceResponse);
    let advertised = proxy.bootstrap();
    let gateways: Vec<Gateway> = (0..instances)
        .map(|_| stack.gateway(&[("GATEWAY_ADVERTISED", advertised.as_str())]))
        .collect();
    proxy.set_upstreams(gateways.iter().map(|g| g.addr).collect());
    (proxy, gateways)
}

/// Every record of the inbound topic: `expected` and whatever else arrives before it is quiet.
async fn inbound(stack: &Stack, expected: usize, timeout: Duration) -> Vec<BackingRecord> {
    read_topic(
        &stack.tansu.bootstrap(),
        INBOUND_TOPIC,
        INBOUND_PARTITIONS,
        expected,
        timeout,
    )
    .await
}

/// Records by value.
fn by_value(records: &[BackingRecord]) -> HashMap<Vec<u8>, Vec<&BackingRecord>> {
    let mut map: HashMap<Vec<u8>, Vec<&BackingRecord>> = HashMap::new();
    for record in records {
        map.entry(record.value.clone().unwrap_or_default())
            .or_default()
            .push(record);
    }
    map
}

fn duplicates_series(project: &Project) -> String {
    format!(
        "keen_gateway_duplicate_batches_total{{project_id=\"{}\"}}",
        project.id
    )
}

// ---------------------------------------------------------------------------------------------
// 1. A resend through one gateway is answered as a duplicate.

/// The producer's first Produce response is lost (the proxy closes the connection instead of
/// forwarding it); the client resends the batch with the same producer id, epoch and sequence,
/// and the gateway, which wrote it already, answers it from its sequence windows: every record is
/// acknowledged and in the backing topic exactly once.
async fn a_resend_through_one_gateway_is_written_once(client: Client) {
    let stack = Stack::start().await;
    let project = stack.project("aaaaaaaaaaaaaaaaaaaaaaaa").await;
    let (proxy, gateways) = gateways_behind_proxy(&stack, 1);
    let values: Vec<String> = (0..10)
        .map(|n| format!("{{\"client\":\"{client:?}\",\"n\":{n}}}"))
        .collect();
    let answer = produce_with(client, &proxy.bootstrap(), &project, &values);
    assert_eq!(answer["delivered"], 10, "{client:?}: {answer}");
    assert_eq!(
        answer["errors"].as_array().map(Vec::len),
        Some(0),
        "{client:?}: {answer}"
    );
    assert_eq!(
        proxy.dropped_responses(),
        1,
        "the proxy swallowed one Produce response"
    );
    assert!(
        proxy.connections() >= 2,
        "the client reconnected after the lost response ({} connections)",
        proxy.connections()
    );

    let records = inbound(&stack, values.len(), Duration::from_secs(30)).await;
    let copies = by_value(&records);
    for value in &values {
        let n = copies.get(value.as_bytes()).map_or(0, Vec::len);
        assert_eq!(
            n, 1,
            "{client:?}: {value} is in the backing topic {n} times"
        );
    }
    assert_eq!(
        records.len(),
        values.len(),
        "{client:?}: nothing else was written"
    );
    let duplicates = gateways[0].metric(&duplicates_series(&project));
    println!(
        "{client:?}: 10 records acknowledged, 1 response dropped, {duplicates} duplicate batch(es) answered from the windows"
    );
    assert!(
        duplicates >= 1.0,
        "{client:?}: the resend was answered as a duplicate ({duplicates})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn librdkafka_resend_through_one_gateway_is_written_once() {
    a_resend_through_one_gateway_is_written_once(Client::Librdkafka).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_python_resend_through_one_gateway_is_written_once() {
    a_resend_through_one_gateway_is_written_once(Client::KafkaPython).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafkajs_resend_through_one_gateway_is_written_once() {
    a_resend_through_one_gateway_is_written_once(Client::Kafkajs).await;
}

// ---------------------------------------------------------------------------------------------
// 2. A resend that reaches another instance is written again, with the same producer identity.

/// Two gateways behind the proxy. Once the proxy has swallowed the response of the instance that
/// wrote the first batch, every new connection is steered to the other instance (behind a load
/// balancer a reconnect may land on either; here it always lands on the one that has not seen the
/// batch). The resend is written again there, so the records of that batch are in the backing
/// topic twice, and both copies carry the same `keen-producer` value
/// (`producer_id:epoch:partition:sequence`), which ingest turns into one keen.id, one event.
#[tokio::test(flavor = "multi_thread")]
async fn a_resend_through_another_gateway_carries_the_same_producer_identity() {
    let stack = Stack::start().await;
    let project = stack.project("bbbbbbbbbbbbbbbbbbbbbbbb").await;
    let (proxy, gateways) = gateways_behind_proxy(&stack, 2);
    let values: Vec<String> = (0..10).map(|n| format!("{{\"two\":{n}}}")).collect();
    let producer = {
        let (bootstrap, project, values) = (proxy.bootstrap(), project.clone(), values.clone());
        std::thread::spawn(move || produce_with(Client::Librdkafka, &bootstrap, &project, &values))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.dropped_responses() == 0 {
        assert!(
            Instant::now() < deadline && !producer.is_finished(),
            "no Produce response was dropped"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let accepted = format!(
        "keen_gateway_records_accepted_total{{project_id=\"{}\"}}",
        project.id
    );
    let wrote: Vec<usize> = (0..2)
        .filter(|&i| gateways[i].metric(&accepted) > 0.0)
        .collect();
    assert_eq!(wrote.len(), 1, "one instance wrote the first batch");
    let other = &gateways[1 - wrote[0]];
    proxy.set_upstreams(vec![other.addr]);
    let answer = tokio::task::spawn_blocking(move || producer.join().expect("producer thread"))
        .await
        .expect("join");
    assert_eq!(answer["delivered"], 10, "{answer}");
    assert_eq!(proxy.dropped_responses(), 1);
    assert!(
        other.metric(&accepted) > 0.0,
        "the resend reached the other instance"
    );

    let records = inbound(&stack, values.len(), Duration::from_secs(30)).await;
    let copies = by_value(&records);
    let mut identities = std::collections::HashSet::new();
    let mut written_twice = 0;
    for value in &values {
        let copies = copies.get(value.as_bytes()).cloned().unwrap_or_default();
        assert!(
            (1..=2).contains(&copies.len()),
            "{value} is in the backing topic {} times",
            copies.len()
        );
        let producers: Vec<&[u8]> = copies
            .iter()
            .map(|r| r.header("keen-producer").expect("idempotent producer"))
            .collect();
        assert!(
            producers.windows(2).all(|w| w[0] == w[1]),
            "{value}: copies carry different producer identities {producers:?}"
        );
        identities.insert(producers[0].to_vec());
        if copies.len() == 2 {
            written_twice += 1;
        }
    }
    assert_eq!(
        identities.len(),
        values.len(),
        "one producer identity per record: ingest stores each record once"
    );
    let deduplicated: f64 = gateways
        .iter()
        .map(|g| g.metric(&duplicates_series(&project)))
        .sum();
    println!(
        "two instances: {} connections ({} and {}), {written_twice} record(s) written twice, {deduplicated} batch(es) answered as duplicates",
        proxy.connections(),
        proxy.connections_to(gateways[0].addr),
        proxy.connections_to(gateways[1].addr),
    );
    assert!(
        written_twice >= 1 && deduplicated == 0.0,
        "the resend reached the other instance, which wrote it again"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. The batch size limit, to the byte.

/// A zigzag varint's length in bytes.
fn varint_len(value: i64) -> usize {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let mut len = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        len += 1;
    }
    len
}

/// Bytes of a v2 record batch holding one record with a null key, a `value_len`-byte value and no
/// headers: the 61-byte batch header, then the record (its length varint, attributes, timestamp
/// delta 0, offset delta 0, key length -1, value length and value, header count 0).
fn one_record_batch_len(value_len: usize) -> usize {
    let body = 1
        + varint_len(0)
        + varint_len(0)
        + varint_len(-1)
        + varint_len(value_len as i64)
        + value_len
        + varint_len(0);
    61 + varint_len(body as i64) + body
}

/// The value length that makes [`one_record_batch_len`] exactly `batch_len`.
fn value_len_for_batch(batch_len: usize) -> usize {
    let mut value_len = batch_len - 72;
    while one_record_batch_len(value_len) > batch_len {
        value_len -= 1;
    }
    while one_record_batch_len(value_len) < batch_len {
        value_len += 1;
    }
    assert_eq!(one_record_batch_len(value_len), batch_len);
    value_len
}

fn record(value: Bytes, offset: i64) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // Base sequence -1 (no idempotence); one offset/sequence step keeps the records together.
        sequence: offset as i32 - 1,
        timestamp: keen_gateway::clock_ms(),
        key: None,
        value: Some(value),
        headers: IndexMap::new(),
    }
}

/// One v2 record batch of `values` encoded by `kafka-protocol`, compressed with `compression`
/// ([`keen_gateway::records::encode_batch`]).
fn batch(values: &[Bytes], compression: Compression) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| record(v.clone(), i as i64))
        .collect();
    keen_gateway::records::encode_batch(&records, compression).expect("the batch encodes")
}

/// The size arithmetic agrees with `kafka-protocol`'s encoder around the limit.
#[test]
fn the_batch_size_arithmetic_matches_the_encoder() {
    for batch_len in [MAX_BATCH, MAX_BATCH + 1, 100, 16_384, 2_097_152 + 80] {
        let value_len = value_len_for_batch(batch_len);
        let encoded = batch(&[Bytes::from(vec![b'x'; value_len])], Compression::None);
        assert_eq!(encoded.len(), batch_len, "value of {value_len} bytes");
    }
    assert_eq!(value_len_for_batch(MAX_BATCH), 1_048_516);
}

/// kafka-python sends one record per batch (uncompressed, its own size check raised out of the
/// way): a batch of exactly 1,048,588 bytes is accepted, one of 1,048,589 is refused by the
/// gateway with MESSAGE_TOO_LARGE.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_exactly_the_limit_is_accepted_and_one_byte_more_refused() {
    let stack = Stack::start().await;
    let project = stack.project("cccccccccccccccccccccccc").await;
    let gateway = stack.gateway(&[]);
    let python = python();
    let send = |batch_len: usize, fill: &str| {
        run_client(
            python.to_str().expect("utf-8 path"),
            "kafka_python_produce.py",
            &json!({
                "bootstrap": gateway.bootstrap(), "mechanism": "PLAIN",
                "username": project.id, "password": project.write_key,
                "topic": TOPIC,
                "records": [{"value_len": value_len_for_batch(batch_len), "fill": fill, "partition": 0}],
                "config": {"max_request_size": 4_000_000, "compression_type": null,
                           "delivery_timeout_ms": 30_000},
            }),
        )
    };
    let bytes_series = format!(
        "keen_gateway_bytes_accepted_total{{project_id=\"{}\"}}",
        project.id
    );
    let too_large_series = "keen_gateway_produce_errors_total{error=\"MessageTooLarge\"}";

    let exact = send(MAX_BATCH, "a");
    assert_eq!(exact["delivered"], 1, "{exact}");
    assert_eq!(
        gateway.metric(&bytes_series),
        MAX_BATCH as f64,
        "the accepted batch was exactly 1,048,588 bytes on the wire"
    );

    let over = send(MAX_BATCH + 1, "b");
    assert_eq!(over["delivered"], 0, "{over}");
    let error = &over["errors"][0];
    assert_eq!(error["errno"], i64::from(MESSAGE_TOO_LARGE), "{over}");
    assert_eq!(error["error"], "MessageSizeTooLargeError", "{over}");
    assert_eq!(
        gateway.metric(too_large_series),
        1.0,
        "the gateway refused it, not the client"
    );
    assert_eq!(gateway.metric(&bytes_series), MAX_BATCH as f64);

    let records = inbound(&stack, 1, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 1);
    let value = records[0].value.as_deref().expect("value");
    assert_eq!(value.len(), value_len_for_batch(MAX_BATCH));
    assert!(value.iter().all(|&b| b == b'a'));
}

// ---------------------------------------------------------------------------------------------
// A raw Kafka client: requests encoded by kafka-protocol over a plain TcpStream.

struct RawClient {
    stream: TcpStream,
    next_correlation_id: i32,
}

/// A stack, a project `project_id`, a gateway with the defaults, and a raw client
/// authenticated to it as that project.
async fn authenticated(project_id: &str) -> (Stack, Project, Gateway, RawClient) {
    let stack = Stack::start().await;
    let project = stack.project(project_id).await;
    let gateway = stack.gateway(&[]);
    let mut client = RawClient::connect(gateway.addr);
    client.authenticate(&project);
    (stack, project, gateway, client)
}

/// A Metadata request naming `count` topics.
fn metadata_naming(count: usize) -> MetadataRequest {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let topics = (0..count)
        .map(|i| {
            MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(format!("topic-{i}")))))
        })
        .collect();
    MetadataRequest::default().with_topics(Some(topics))
}

/// What became of a connection the test expects the gateway to close.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Closed,
    Answered(usize),
    StillOpen,
}

impl RawClient {
    fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect to the gateway");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            next_correlation_id: 1,
        }
    }

    /// A connection from another loopback address (`127.0.0.x`), as another source would be.
    async fn connect_from(addr: SocketAddr, source: [u8; 4]) -> Option<RawClient> {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind a loopback source");
        let stream = socket.connect(addr).await.ok()?.into_std().expect("std");
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Some(RawClient {
            stream,
            next_correlation_id: 1,
        })
    }

    /// Whether the gateway still answers ApiVersions on this connection.
    fn still_answers(&mut self) -> bool {
        let (correlation_id, frame) = self.frame(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("keen-resilience"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        );
        if self.stream.write_all(&frame).is_err() {
            return false;
        }
        match self.read_frame() {
            Some(mut answer) => ResponseHeader::decode(&mut answer, 0)
                .is_ok_and(|header| header.correlation_id == correlation_id),
            None => false,
        }
    }

    /// An encoded request frame (length prefix included).
    fn frame<T: Encodable>(&mut self, api: ApiKey, version: i16, body: &T) -> (i32, BytesMut) {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("keen-resilience")))
            .encode(&mut buf, api.request_header_version(version))
            .expect("header encodes");
        body.encode(&mut buf, version).expect("body encodes");
        let len = i32::try_from(buf.len() - 4).expect("frame size");
        buf[..4].copy_from_slice(&len.to_be_bytes());
        (correlation_id, buf)
    }

    fn send<T: Encodable>(&mut self, api: ApiKey, version: i16, body: &T) -> i32 {
        let (correlation_id, frame) = self.frame(api, version, body);
        self.write(&frame);
        correlation_id
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the gateway");
    }

    /// Writes what it can: the gateway may close while garbage is still being sent.
    fn write_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// The next response frame (without its length prefix); `None` once the gateway closed.
    fn read_frame(&mut self) -> Option<Bytes> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).ok()?;
        let len = usize::try_from(i32::from_be_bytes(prefix)).ok()?;
        let mut frame = vec![0u8; len];
        self.stream.read_exact(&mut frame).ok()?;
        Some(Bytes::from(frame))
    }

    fn receive<T: Decodable>(&mut self, api: ApiKey, version: i16, correlation_id: i32) -> T {
        let mut frame = self
            .read_frame()
            .unwrap_or_else(|| panic!("{api:?} v{version}: the gateway closed instead"));
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
            .expect("response header");
        assert_eq!(header.correlation_id, correlation_id, "answers in order");
        T::decode(&mut frame, version).expect("response body")
    }

    fn call<Q: Encodable, A: Decodable>(&mut self, api: ApiKey, version: i16, body: &Q) -> A {
        let correlation_id = self.send(api, version, body);
        self.receive(api, version, correlation_id)
    }

    fn api_versions(&mut self) -> ApiVersionsResponse {
        self.call(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("keen-resilience"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        )
    }

    /// ApiVersions, SaslHandshake v1 (PLAIN), SaslAuthenticate.
    fn authenticate(&mut self, project: &Project) {
        assert_eq!(self.api_versions().error_code, 0);
        let handshake: SaslHandshakeResponse = self.call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        );
        assert_eq!(handshake.error_code, 0);
        let token = format!("\0{}\0{}", project.id, project.write_key);
        let authenticated: SaslAuthenticateResponse = self.call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
        );
        assert_eq!(
            authenticated.error_code, 0,
            "{:?}",
            authenticated.error_message
        );
    }

    /// Closes the sending side, then reads until the gateway closes or `timeout` passes.
    fn ending(&mut self, close_sending: bool, timeout: Duration) -> Ending {
        if close_sending {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("timeout");
        let mut answered = 0;
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return if answered == 0 {
                        Ending::Closed
                    } else {
                        Ending::Answered(answered)
                    };
                }
                Ok(n) => answered += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ending::StillOpen;
                }
                // Reset: the gateway closed with our bytes unread.
                Err(_) => return Ending::Closed,
            }
        }
    }
}

const PRODUCE_VERSION: i16 = 9;
/// Kafka's REQUEST_TIMED_OUT: retriable.
const REQUEST_TIMED_OUT: i16 = 7;

fn produce_request(partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ])
}

/// The error code of the one partition of a produce response.
fn partition_error(response: &ProduceResponse) -> i16 {
    response.responses[0].partition_responses[0].error_code
}

/// xorshift64: deterministic pseudo-random bytes.
fn pseudo_random(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------------------------
// 4. A zstd bomb.

/// Peak resident memory the gateway may reach while refusing the bombs below.
const BOMB_RSS_BOUND_KIB: u64 = 200 * 1024;

/// A batch of ~1 MB on the wire (a megabyte of incompressible bytes) whose zstd payload expands
/// to 65 MiB, four times the gateway's decompressed limit (16 MiB, the default), sent four times
/// pipelined on one connection: each is refused with MESSAGE_TOO_LARGE, the gateway's peak RSS
/// stays under 200 MiB, and the same connection then produces normally.
#[tokio::test(flavor = "multi_thread")]
async fn a_zstd_bomb_is_refused_within_bounded_memory() {
    let stack = Stack::start().await;
    let project = stack.project("dddddddddddddddddddddddd").await;
    let gateway = stack.gateway(&[("GATEWAY_MAX_DECOMPRESSED_BYTES", "16777216")]);

    let mut value = pseudo_random(1_000_000, 0x9e37_79b9_7f4a_7c15);
    value.resize(value.len() + 64 * 1024 * 1024, 0);
    let expanded = value.len();
    let bomb = batch(&[Bytes::from(value)], Compression::Zstd);
    assert!(
        (900_000..=MAX_BATCH).contains(&bomb.len()),
        "the bomb is ~1 MB on the wire: {} bytes",
        bomb.len()
    );

    let mut client = RawClient::connect(gateway.addr);
    client.authenticate(&project);
    let before = gateway.peak_rss_kib();
    let ids: Vec<i32> = (0..4)
        .map(|_| {
            client.send(
                ApiKey::Produce,
                PRODUCE_VERSION,
                &produce_request(0, bomb.clone()),
            )
        })
        .collect();
    for id in ids {
        let response: ProduceResponse = client.receive(ApiKey::Produce, PRODUCE_VERSION, id);
        assert_eq!(
            partition_error(&response),
            MESSAGE_TOO_LARGE,
            "{response:?}"
        );
    }
    let peak = gateway.peak_rss_kib();
    println!(
        "zstd bomb: {} bytes on the wire expanding to {expanded} bytes, 4 pipelined; gateway peak RSS {} KiB before, {} KiB after (bound {} KiB)",
        bomb.len(),
        before,
        peak,
        BOMB_RSS_BOUND_KIB
    );
    assert!(peak > 0, "VmHWM is readable");
    assert!(
        peak < BOMB_RSS_BOUND_KIB,
        "peak RSS {peak} KiB over {BOMB_RSS_BOUND_KIB} KiB"
    );
    assert_eq!(
        gateway.metric("keen_gateway_produce_errors_total{error=\"MessageTooLarge\"}"),
        4.0
    );

    // The same connection still produces.
    let normal = batch(
        &[Bytes::from_static(b"{\"after\":\"bomb\"}")],
        Compression::Zstd,
    );
    let response: ProduceResponse = client.call(
        ApiKey::Produce,
        PRODUCE_VERSION,
        &produce_request(1, normal),
    );
    assert_eq!(partition_error(&response), 0, "{response:?}");
    let records = inbound(&stack, 1, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].value.as_deref(),
        Some(&b"{\"after\":\"bomb\"}"[..])
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile connections.

/// Slowloris from two other sources while an honest librdkafka producer works: one source opens
/// 12 unauthenticated connections and keeps them busy with ApiVersions, another authenticates
/// 4 and trickles the body of an 8 MiB request, one byte every 200 ms. The gateway takes 4 per
/// source (GATEWAY_MAX_CONNECTIONS_PER_SOURCE), closes the unauthenticated ones 2 s after their
/// accept however busy they keep (GATEWAY_SASL_TIMEOUT_MS) and the trickling ones 2 s after
/// their length prefix (GATEWAY_FRAME_TIMEOUT_MS), and the honest producer is answered all along.
#[tokio::test(flavor = "multi_thread")]
async fn slowloris_from_other_sources_leaves_an_honest_producer_served() {
    let stack = Stack::start().await;
    let project = stack.project("abababababababababababab").await;
    let gateway = stack.gateway(&[
        ("GATEWAY_MAX_CONNECTIONS", "16"),
        ("GATEWAY_MAX_CONNECTIONS_PER_SOURCE", "4"),
        ("GATEWAY_SASL_TIMEOUT_MS", "2000"),
        ("GATEWAY_FRAME_TIMEOUT_MS", "2000"),
        ("GATEWAY_MAX_INFLIGHT_BYTES_PER_CONNECTION", "8388608"),
        ("GATEWAY_MAX_INFLIGHT_BYTES", "33554432"),
    ]);

    // Unauthenticated, from 127.0.0.2: the fifth connection on is closed at once.
    let mut idle = Vec::new();
    for _ in 0..12 {
        if let Some(client) = RawClient::connect_from(gateway.addr, [127, 0, 0, 2]).await {
            idle.push(client);
        }
    }
    let mut kept: Vec<RawClient> = idle
        .into_iter()
        .filter_map(|mut client| client.still_answers().then_some(client))
        .collect();
    assert_eq!(kept.len(), 4, "four connections per source");
    assert!(
        gateway.metric("keen_gateway_connections_refused_total{reason=\"source_limit\"}") >= 8.0
    );

    // Authenticated, from 127.0.0.3: each announces 8 MiB (its whole per-connection budget,
    // a quarter of the instance's) and trickles it.
    let mut trickling = Vec::new();
    for _ in 0..4 {
        let mut client = RawClient::connect_from(gateway.addr, [127, 0, 0, 3])
            .await
            .expect("connects");
        client.authenticate(&project);
        client.write(&(8 * 1024 * 1024 - 8i32).to_be_bytes());
        trickling.push(client);
    }
    let trickle = std::thread::spawn(move || {
        let started = Instant::now();
        let mut open = trickling.len();
        while open > 0 && started.elapsed() < Duration::from_secs(20) {
            open = 0;
            for client in &mut trickling {
                if client.stream.write_all(&[0]).is_ok() {
                    open += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (trickling, started.elapsed())
    });

    // Meanwhile the honest producer, from 127.0.0.1.
    still_produces(&gateway, &project, "slowloris");

    // The busy unauthenticated connections were closed by their deadline from accept.
    let started = Instant::now();
    while !kept.is_empty() && started.elapsed() < Duration::from_secs(20) {
        kept.retain_mut(|client| client.still_answers());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        kept.is_empty(),
        "{} unauthenticated connections kept",
        kept.len()
    );
    // The trickling ones were closed by their frame deadline.
    let (mut trickling, took) = trickle.join().expect("trickle");
    for client in &mut trickling {
        assert_ne!(
            client.ending(false, Duration::from_secs(1)),
            Ending::StillOpen
        );
    }
    assert!(took < Duration::from_secs(20), "trickled for {took:?}");
    still_produces(&gateway, &project, "slowloris ended");
}

/// Pipelined produces of one connection to one partition land in the backing topic in the
/// order they were sent (architecture.md: per-partition order): 40 requests of 50 records each,
/// written without waiting for answers, the larger ones first so that a request racing ahead
/// of an earlier one would show.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_produces_keep_their_order_per_partition() {
    let (stack, _project, _gateway, mut client) = authenticated("adadadadadadadadadadadad").await;
    let requests = 40;
    let per_request = 50;
    let ids: Vec<i32> = (0..requests)
        .map(|r| {
            // Early requests carry larger values (more to decode and hand over).
            let pad = "x".repeat(4_000usize.saturating_sub(r * 100));
            let values: Vec<Bytes> = (0..per_request)
                .map(|i| {
                    Bytes::from(format!(
                        "{{\"n\":{},\"pad\":\"{pad}\"}}",
                        r * per_request + i
                    ))
                })
                .collect();
            client.send(
                ApiKey::Produce,
                PRODUCE_VERSION,
                &produce_request(0, batch(&values, Compression::Lz4)),
            )
        })
        .collect();
    for id in ids {
        let response: ProduceResponse = client.receive(ApiKey::Produce, PRODUCE_VERSION, id);
        assert_eq!(partition_error(&response), 0, "{response:?}");
    }
    let mut records = inbound(&stack, requests * per_request, Duration::from_secs(60)).await;
    assert_eq!(records.len(), requests * per_request);
    let partitions: std::collections::HashSet<i32> = records.iter().map(|r| r.partition).collect();
    assert_eq!(
        partitions.len(),
        1,
        "one client partition maps to one inbound partition"
    );
    records.sort_by_key(|r| r.offset);
    let order: Vec<u64> = records
        .iter()
        .map(|r| {
            let value: Value =
                serde_json::from_slice(r.value.as_deref().expect("value")).expect("json");
            value["n"].as_u64().expect("n")
        })
        .collect();
    let expected: Vec<u64> = (0..(requests * per_request) as u64).collect();
    assert_eq!(order, expected, "stored in the order sent");
}

/// RSS bound for a Metadata request naming 200,000 topics (about 5 MB on the wire).
const METADATA_RSS_BOUND_KIB: u64 = 200 * 1024;

/// A Metadata request naming 200,000 topics is refused before it is decoded (more array
/// elements than GATEWAY_MAX_REQUEST_ELEMENTS): the connection is closed, the gateway's RSS
/// stays bounded and it goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_metadata_request_naming_200000_topics_is_refused_within_bounded_memory() {
    let (_stack, project, gateway, mut client) = authenticated("acacacacacacacacacacacac").await;
    let before = gateway.metric(MALFORMED);
    client.send(ApiKey::Metadata, 12, &metadata_naming(200_000));
    assert_eq!(
        client.ending(false, Duration::from_secs(10)),
        Ending::Closed
    );
    assert!(malformed_rose(&gateway, before) > before);
    assert!(
        gateway
            .log_text()
            .contains("more than 10000 array elements in one request"),
        "the log names the limit"
    );
    let peak = gateway.peak_rss_kib();
    println!(
        "metadata with 200,000 topics: gateway peak RSS {peak} KiB (bound {METADATA_RSS_BOUND_KIB} KiB)"
    );
    assert!(peak > 0 && peak < METADATA_RSS_BOUND_KIB, "{peak} KiB");
    still_produces(&gateway, &project, "200,000 topics");
}

/// A client that sends large-answer requests and never reads its answers: the answers' bytes
/// count against the connection's in-flight budget until written, so the gateway stops
/// reading from it instead of queueing answers without bound (200 Metadata answers of ~1 MB
/// each would be 200 MB), and other clients are still served.
#[tokio::test(flavor = "multi_thread")]
async fn answers_a_client_never_reads_stay_within_its_budget() {
    let (_stack, project, gateway, mut client) = authenticated("afafafafafafafafafafafaf").await;
    let (_, frame) = client.frame(ApiKey::Metadata, 12, &metadata_naming(9_000));
    client
        .stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    let mut sent = 0;
    for _ in 0..200 {
        if client.stream.write_all(&frame).is_err() {
            break;
        }
        sent += 1;
    }
    let peak = gateway.peak_rss_kib();
    println!(
        "a client that never reads: {sent} of 200 Metadata requests ({} bytes each) taken; gateway peak RSS {peak} KiB",
        frame.len()
    );
    assert!(
        sent < 200,
        "the gateway kept reading a client that never reads"
    );
    assert!(peak > 0 && peak < METADATA_RSS_BOUND_KIB, "{peak} KiB");
    still_produces(&gateway, &project, "a client that never reads");
}

/// Waits up to `timeout` for `/ready` to answer `status`; the last answer.
fn ready_becomes(gateway: &Gateway, status: u16, timeout: Duration) -> (u16, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = gateway.ready();
        if answer.0 == status || Instant::now() >= deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The backing cluster stops for longer than the backing message timeout, then comes back:
/// meanwhile `/ready` answers 503 with the reason and a produce is answered with a retriable
/// error (never a silent success); afterwards `/ready` answers 200 again and produces are
/// stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_backing_outage_makes_the_gateway_unready_until_it_recovers() {
    let mut stack = Stack::start().await;
    let project = stack.project("a0a0a0a0a0a0a0a0a0a0a0a0").await;
    let gateway = stack.gateway(&[("BACKING_MESSAGE_TIMEOUT_MS", "3000")]);
    assert_eq!(gateway.ready(), (200, "ready\n".to_owned()));
    still_produces(&gateway, &project, "before the outage");

    stack.tansu.stop();
    let mut client = RawClient::connect(gateway.addr);
    client.authenticate(&project);
    let response: ProduceResponse = client.call(
        ApiKey::Produce,
        PRODUCE_VERSION,
        &produce_request(
            0,
            batch(
                &[Bytes::from_static(b"{\"during\":\"outage\"}")],
                Compression::None,
            ),
        ),
    );
    assert_eq!(
        partition_error(&response),
        REQUEST_TIMED_OUT,
        "{response:?}"
    );
    let (status, reason) = ready_becomes(&gateway, 503, Duration::from_secs(30));
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("unreachable"), "{reason}");

    stack.tansu.restart();
    stack
        .tansu
        .create_topic(INBOUND_TOPIC, INBOUND_PARTITIONS as u32);
    let (status, reason) = ready_becomes(&gateway, 200, Duration::from_secs(60));
    assert_eq!(status, 200, "{reason}");
    still_produces(&gateway, &project, "after the outage");
}

/// RSS bound for three batches of 1,200,000 tiny records each.
const MANY_RECORDS_RSS_BOUND_KIB: u64 = 200 * 1024;

/// Three zstd batches of 1,200,000 identical 7-byte records (as many as `kafka-protocol`'s zstd
/// fits under the 1 MB batch limit; 2,000,000 take 1.6 MB, refused for their size alone), hundreds
/// of MB once decoded, sent in parallel on three connections: each is refused with MESSAGE_TOO_LARGE
/// from its header's record count before it is decompressed, the gateway's RSS stays bounded,
/// and an honest producer is answered.
#[tokio::test(flavor = "multi_thread")]
async fn batches_of_millions_of_tiny_records_are_refused_within_bounded_memory() {
    let stack = Stack::start().await;
    let project = stack.project("aeaeaeaeaeaeaeaeaeaeaeae").await;
    let gateway = stack.gateway(&[]);
    let value = Bytes::from_static(b"{\"a\":1}");
    let values = vec![value; 1_200_000];
    let tiny = batch(&values, Compression::Zstd);
    drop(values);
    println!(
        "1,200,000 records of 7 bytes: {} bytes on the wire",
        tiny.len()
    );
    assert!(tiny.len() <= MAX_BATCH, "{} bytes", tiny.len());
    let senders: Vec<_> = (0..3)
        .map(|_| {
            let tiny = tiny.clone();
            let mut client = RawClient::connect(gateway.addr);
            client.authenticate(&project);
            std::thread::spawn(move || {
                let response: ProduceResponse =
                    client.call(ApiKey::Produce, PRODUCE_VERSION, &produce_request(0, tiny));
                partition_error(&response)
            })
        })
        .collect();
    for sender in senders {
        assert_eq!(sender.join().expect("sender"), MESSAGE_TOO_LARGE);
    }
    let peak = gateway.peak_rss_kib();
    println!(
        "3 x 1,200,000 records: gateway peak RSS {peak} KiB (bound {MANY_RECORDS_RSS_BOUND_KIB} KiB)"
    );
    assert!(peak > 0 && peak < MANY_RECORDS_RSS_BOUND_KIB, "{peak} KiB");
    still_produces(&gateway, &project, "millions of tiny records");
}

// ---------------------------------------------------------------------------------------------
// 5. Garbage on the wire.

const MALFORMED: &str = "keen_gateway_malformed_frames_total";

/// Waits until the malformed-frames counter passes `before`.
fn malformed_rose(gateway: &Gateway, before: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = gateway.metric(MALFORMED);
        if now > before || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A normal client produces one record: the gateway is still up and serving.
fn still_produces(gateway: &Gateway, project: &Project, case: &str) {
    let answer = produce_with(
        Client::Librdkafka,
        &gateway.bootstrap(),
        project,
        &[format!("{{\"after\":\"{case}\"}}")],
    );
    assert_eq!(answer["delivered"], 1, "after {case}: {answer}");
}

/// A hand-written request header (the cases below are invalid requests, so no encoder writes
/// them): api key, version, correlation id, null client id, and the tagged-field count of the
/// flexible header versions.
fn raw_header(api_key: i16, version: i16, flexible: bool) -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(&api_key.to_be_bytes());
    header.extend_from_slice(&version.to_be_bytes());
    header.extend_from_slice(&7i32.to_be_bytes());
    header.extend_from_slice(&(-1i16).to_be_bytes());
    if flexible {
        header.push(0);
    }
    header
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Random bytes, a truncated frame, a huge length prefix (before and after authentication), an
/// authenticated request with an array count of 2^31-1 (Produce v3 and, compact, Metadata v12),
/// an unknown API key: each closes its connection and counts as malformed, and after each a
/// normal client still produces. ApiVersions v99 is answered (KIP-511) in v0 with
/// UNSUPPORTED_VERSION and the API table, and the connection goes on.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_never_takes_the_gateway_down() {
    let stack = Stack::start().await;
    let project = stack.project("eeeeeeeeeeeeeeeeeeeeeeee").await;
    let mut gateway = stack.gateway(&[]);
    let mut produced = 0;

    type Case = (&'static str, bool, Box<dyn Fn(&mut RawClient)>);
    let cases: Vec<Case> = vec![
        (
            "random bytes",
            false,
            Box::new(|c| c.write_lossy(&pseudo_random(4096, 0xdead_beef_cafe_f00d))),
        ),
        (
            "truncated frame",
            false,
            Box::new(|c| {
                let mut bytes = 100i32.to_be_bytes().to_vec();
                bytes.extend_from_slice(&raw_header(18, 0, false));
                c.write(&bytes);
            }),
        ),
        (
            "huge length prefix before authentication",
            false,
            Box::new(|c| c.write(&0x7fff_ffffi32.to_be_bytes())),
        ),
        (
            "huge length prefix after authentication",
            true,
            Box::new(|c| c.write(&0x7fff_ffffi32.to_be_bytes())),
        ),
        (
            "Produce v3 with 2^31-1 topics",
            true,
            Box::new(|c| {
                let mut body = raw_header(0, 3, false);
                body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
                body.extend_from_slice(&(-1i16).to_be_bytes()); // acks
                body.extend_from_slice(&30_000i32.to_be_bytes()); // timeout
                body.extend_from_slice(&i32::MAX.to_be_bytes()); // topic count
                c.write(&framed(&body));
            }),
        ),
        (
            "Metadata v12 with 2^32-2 topics (compact count)",
            true,
            Box::new(|c| {
                let mut body = raw_header(3, 12, true);
                body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
                c.write(&framed(&body));
            }),
        ),
        (
            "unknown API key 999",
            false,
            Box::new(|c| c.write(&framed(&raw_header(999, 0, false)))),
        ),
    ];
    for (case, authenticate, send) in &cases {
        let before = gateway.metric(MALFORMED);
        let mut client = RawClient::connect(gateway.addr);
        if *authenticate {
            client.authenticate(&project);
        }
        send(&mut client);
        // The truncated frame only ends when the client closes; the others end at once.
        let close_sending = *case == "truncated frame" || *case == "random bytes";
        let ending = client.ending(close_sending, Duration::from_secs(15));
        assert_eq!(ending, Ending::Closed, "{case}: closed without an answer");
        let after = malformed_rose(&gateway, before);
        assert!(after > before, "{case}: {MALFORMED} {before} → {after}");
        assert!(gateway.is_running(), "{case} took the gateway down");
        still_produces(&gateway, &project, case);
        produced += 1;
        println!(
            "{case}: connection closed, {MALFORMED} {before} → {after}, a client still produces"
        );
    }

    // KIP-511: ApiVersions at a version the gateway does not know.
    let before = gateway.metric(MALFORMED);
    let mut client = RawClient::connect(gateway.addr);
    let (correlation_id, mut frame) = client.frame(
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("future-client"))
            .with_client_software_version(StrBytes::from_static_str("99")),
    );
    frame[6..8].copy_from_slice(&99i16.to_be_bytes()); // api_version 99
    client.write(&frame);
    let mut answer = client.read_frame().expect("ApiVersions v99 is answered");
    let header = ResponseHeader::decode(&mut answer, 0).expect("v0 header");
    assert_eq!(header.correlation_id, correlation_id);
    let versions = ApiVersionsResponse::decode(&mut answer, 0).expect("a v0 body");
    assert_eq!(versions.error_code, UNSUPPORTED_VERSION);
    let range = |api: ApiKey| {
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == api as i16)
            .map(|k| (k.min_version, k.max_version))
    };
    assert_eq!(range(ApiKey::ApiVersions), Some((0, 4)), "{versions:?}");
    assert_eq!(range(ApiKey::Produce), Some((3, 12)), "{versions:?}");
    // The client retries at a version from the table, on the same connection, and produces.
    client.authenticate(&project);
    let response: ProduceResponse = client.call(
        ApiKey::Produce,
        PRODUCE_VERSION,
        &produce_request(
            2,
            batch(
                &[Bytes::from_static(b"{\"after\":\"v99\"}")],
                Compression::None,
            ),
        ),
    );
    assert_eq!(partition_error(&response), 0, "{response:?}");
    produced += 1;
    drop(client);
    assert_eq!(
        gateway.metric(MALFORMED),
        before,
        "a KIP-511 exchange is not malformed"
    );
    assert!(gateway.is_running());

    let records = inbound(&stack, produced, Duration::from_secs(30)).await;
    assert_eq!(records.len(), produced, "every normal produce landed, once");
}

// ---------------------------------------------------------------------------------------------
// 6. SIGTERM during a large produce.

/// confluent-kafka produces 100,000 small records (acks=all, idempotence on); once the gateway
/// has accepted 10,000 it gets SIGTERM. It stops reading, answers what it read, and exits 0
/// within its grace period. Every record the client saw acknowledged is in the backing topic
/// exactly once; a record not acknowledged may be missing or present, but never twice.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_large_produce_loses_no_acknowledged_record() {
    const COUNT: usize = 100_000;
    const GRACE: Duration = Duration::from_secs(10);
    let stack = Stack::start().await;
    let project = stack.project("ffffffffffffffffffffffff").await;
    let grace_ms = GRACE.as_millis().to_string();
    let mut gateway = stack.gateway(&[("GATEWAY_SHUTDOWN_GRACE_MS", grace_ms.as_str())]);
    let accepted_series = format!(
        "keen_gateway_records_accepted_total{{project_id=\"{}\"}}",
        project.id
    );
    let argument = json!({
        "bootstrap": gateway.bootstrap(), "mechanism": "PLAIN",
        "username": project.id, "password": project.write_key,
        "topic": TOPIC, "count": COUNT, "prefix": "sigterm-",
        "config": {"message.timeout.ms": 8000},
    });
    let python = python();
    let client = std::thread::spawn(move || {
        run_client(
            python.to_str().expect("utf-8 path"),
            "confluent_flood.py",
            &argument,
        )
    });

    let deadline = Instant::now() + Duration::from_secs(180);
    let accepted_at_signal = loop {
        let accepted = gateway.metric(&accepted_series);
        if accepted >= 10_000.0 {
            break accepted;
        }
        assert!(
            Instant::now() < deadline && !client.is_finished(),
            "the gateway accepted only {accepted} records"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let signalled = Instant::now();
    gateway.signal_term();
    let status = gateway
        .wait_exit(GRACE + Duration::from_secs(5))
        .expect("the gateway exits within its grace period");
    let exited_after = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");

    let answer = tokio::task::spawn_blocking(move || client.join().expect("client thread"))
        .await
        .expect("join");
    let acked: Vec<usize> = answer["acked"]
        .as_array()
        .expect("acked")
        .iter()
        .map(|v| v.as_u64().expect("index") as usize)
        .collect();
    let records = inbound(&stack, acked.len(), Duration::from_secs(120)).await;
    let mut copies = vec![0u32; COUNT];
    for record in &records {
        let value =
            std::str::from_utf8(record.value.as_deref().unwrap_or_default()).expect("utf-8 value");
        let index: usize = value
            .strip_prefix("sigterm-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected record {value}"));
        copies[index] += 1;
    }
    let mut is_acked = vec![false; COUNT];
    for &i in &acked {
        assert!(!is_acked[i], "record {i} acknowledged twice");
        is_acked[i] = true;
    }
    let acked_missing = (0..COUNT)
        .filter(|&i| is_acked[i] && copies[i] == 0)
        .count();
    let twice = (0..COUNT).filter(|&i| copies[i] > 1).count();
    let unacked_present = (0..COUNT)
        .filter(|&i| !is_acked[i] && copies[i] > 0)
        .count();
    let unacked_missing = (0..COUNT)
        .filter(|&i| !is_acked[i] && copies[i] == 0)
        .count();
    println!(
        "SIGTERM after {accepted_at_signal} accepted: the gateway exited 0 after {:.2} s; of {COUNT} records {} acknowledged ({} failed: {}), {} in the backing topic; acknowledged but missing {acked_missing}, more than once {twice}, unacknowledged present {unacked_present}, unacknowledged missing {unacked_missing}",
        exited_after.as_secs_f64(),
        acked.len(),
        answer["failed"],
        answer["errors"],
        records.len(),
    );
    assert_eq!(acked_missing, 0, "every acknowledged record is stored");
    assert_eq!(twice, 0, "no record is stored twice");
    assert!(
        acked.len() as f64 >= accepted_at_signal,
        "what the gateway had accepted before the signal was acknowledged"
    );
    assert!(
        acked.len() < COUNT,
        "the signal came in the middle of the produce"
    );
}

/// acks=0 gets no answer at all, yet its records are written, and the next answer on the
/// connection is the next request's; an acks=0 batch that fails closes the connection instead
/// of answering, as Kafka does.
#[tokio::test(flavor = "multi_thread")]
async fn acks_zero_is_never_answered_and_its_failure_closes_the_connection() {
    let (stack, _project, _gateway, mut client) = authenticated("acacacacacacacacacacacac").await;
    let records = batch(&[Bytes::from_static(b"{\"acks\":0}")], Compression::None);
    client.send(
        ApiKey::Produce,
        PRODUCE_VERSION,
        &produce_request(0, records.clone()).with_acks(0),
    );
    // `receive` checks the correlation id: an answer to the produce would come first and fail.
    assert_eq!(client.api_versions().error_code, 0);
    let stored = read_topic(
        &stack.tansu.bootstrap(),
        INBOUND_TOPIC,
        INBOUND_PARTITIONS,
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].value.as_deref(), Some(&b"{\"acks\":0}"[..]));
    // Partition 99 does not exist: the failure cannot be answered, so the connection closes.
    client.send(
        ApiKey::Produce,
        PRODUCE_VERSION,
        &produce_request(99, records).with_acks(0),
    );
    assert_eq!(
        client.ending(false, Duration::from_secs(10)),
        Ending::Closed
    );
}
