//! The Kafka test infrastructure against a real tansu broker and the real librdkafka client:
//! records produced (directly, and through a proxy that drops a Produce response) are read back
//! with their keys, values and headers, exactly once.

use keen_testkit::kafka::{Fault, FaultProxy, TansuBroker, read_topic};
use keen_testkit::unique_prefix;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 8;
const READ_TIMEOUT: Duration = Duration::from_secs(20);

fn topic_name() -> String {
    format!("{}topic", unique_prefix("testkit-kafka"))
}

/// An idempotent producer, acks=all, as the gateway's backing producer would be.
fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

fn value(i: usize) -> String {
    format!("value-{i}")
}

/// Sends `count` records, record `i` to partition `i % 8` with key `key-i`, a `trace` header and
/// an `index` header; all are enqueued before any delivery is awaited, so they travel in batches.
/// Returns how many deliveries were acknowledged.
async fn produce(producer: &FutureProducer, topic: &str, count: usize) -> usize {
    let mut deliveries = Vec::new();
    for i in 0..count {
        let key = format!("key-{i}");
        let value = value(i);
        let index = i.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some("abc"),
            })
            .insert(Header {
                key: "index",
                value: Some(&index),
            });
        let partition = i32::try_from(i).expect("small") % PARTITIONS;
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(&key)
            .payload(&value)
            .headers(headers);
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((error, _)) => panic!("enqueueing record {i}: {error}"),
        }
    }
    let mut acknowledged = 0;
    for (i, delivery) in deliveries.into_iter().enumerate() {
        match delivery.await {
            Ok(Ok(_)) => acknowledged += 1,
            Ok(Err((error, _))) => panic!("record {i} was not delivered: {error}"),
            Err(cancelled) => panic!("record {i}'s delivery was cancelled: {cancelled}"),
        }
    }
    producer
        .flush(Duration::from_secs(10))
        .expect("producer flush");
    acknowledged
}

/// Every record `0..count` is there exactly once, in its partition, with its key and headers.
fn assert_each_record_once(records: &[keen_testkit::BackingRecord], topic: &str, count: usize) {
    assert_eq!(
        records.len(),
        count,
        "{count} records expected, got {}: {:?}",
        records.len(),
        records
            .iter()
            .map(|record| (
                record.partition,
                record.offset,
                String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned()
            ))
            .collect::<Vec<_>>()
    );
    for i in 0..count {
        let expected = value(i);
        let matching: Vec<_> = records
            .iter()
            .filter(|record| record.value.as_deref() == Some(expected.as_bytes()))
            .collect();
        assert_eq!(matching.len(), 1, "{expected} should be there once");
        let record = matching[0];
        assert_eq!(record.topic, topic);
        assert_eq!(
            record.partition,
            i32::try_from(i).expect("small") % PARTITIONS
        );
        assert_eq!(record.key.as_deref(), Some(format!("key-{i}").as_bytes()));
        assert_eq!(
            record.headers,
            vec![
                ("trace".to_owned(), b"abc".to_vec()),
                ("index".to_owned(), i.to_string().into_bytes()),
            ]
        );
        assert_eq!(record.header("index"), Some(i.to_string().as_bytes()));
        assert!(record.timestamp_ms > 0, "{record:?} has a timestamp");
    }
}

#[tokio::test]
async fn records_produced_to_tansu_are_read_back_with_keys_and_headers() {
    let tansu = TansuBroker::start();
    let topic = topic_name();
    tansu.create_topic(&topic, 8);

    let producer = producer(&tansu.bootstrap());
    assert_eq!(produce(&producer, &topic, 10).await, 10);

    let records = read_topic(&tansu.bootstrap(), &topic, PARTITIONS, 10, READ_TIMEOUT).await;
    assert_each_record_once(&records, &topic, 10);
    // Within a partition, offsets count up from 0.
    for partition in 0..PARTITIONS {
        let offsets: Vec<i64> = records
            .iter()
            .filter(|record| record.partition == partition)
            .map(|record| record.offset)
            .collect();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, expected, "partition {partition}");
    }
}

#[tokio::test]
async fn a_dropped_produce_response_is_retried_and_each_record_lands_once() {
    // tansu advertises the proxy, so the producer's every connection goes through it.
    let proxy = FaultProxy::start_many(Vec::new(), Fault::DropFirstProduceResponse);
    let tansu = TansuBroker::start_advertising(proxy.addr());
    proxy.set_upstreams(vec![tansu.addr()]);
    let topic = topic_name();
    tansu.create_topic(&topic, 8);

    let producer = producer(&proxy.bootstrap());
    assert_eq!(
        produce(&producer, &topic, 12).await,
        12,
        "every record acknowledged despite the dropped response"
    );
    assert_eq!(proxy.dropped_responses(), 1);
    assert!(
        proxy.connections() >= 2,
        "the producer reconnected after the dropped response ({} connections)",
        proxy.connections()
    );

    // The idempotent producer resent the unanswered batch and tansu deduplicated it.
    let records = read_topic(&tansu.bootstrap(), &topic, PARTITIONS, 12, READ_TIMEOUT).await;
    assert_each_record_once(&records, &topic, 12);
}

#[tokio::test]
async fn without_a_fault_the_proxy_passes_everything_through() {
    let proxy = FaultProxy::start_many(Vec::new(), Fault::None);
    let tansu = TansuBroker::start_advertising(proxy.addr());
    proxy.set_upstreams(vec![tansu.addr()]);
    let topic = topic_name();
    tansu.create_topic(&topic, 8);

    let producer = producer(&proxy.bootstrap());
    assert_eq!(produce(&producer, &topic, 8).await, 8);
    assert_eq!(proxy.dropped_responses(), 0);

    let records = read_topic(&proxy.bootstrap(), &topic, PARTITIONS, 8, READ_TIMEOUT).await;
    assert_each_record_once(&records, &topic, 8);
}

#[test]
fn the_proxy_sends_new_connections_to_its_upstreams_in_turn() {
    let first = TansuBroker::start();
    let second = TansuBroker::start();
    let proxy = FaultProxy::start_many(vec![first.addr(), second.addr()], Fault::None);

    let clients: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(proxy.addr()).expect("connect to the proxy"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.connections() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(proxy.connections_to(first.addr()), 2);
    assert_eq!(proxy.connections_to(second.addr()), 2);
    drop(clients);

    // A real client's requests and responses cross it intact.
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", proxy.bootstrap())
        .create()
        .expect("producer");
    let metadata = producer
        .client()
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata through the proxy");
    assert_eq!(metadata.brokers().len(), 1);
}
