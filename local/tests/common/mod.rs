//! Shared by the mapping's integration tests: writing records straight to the inbound topic, as
//! the gateway would, and reading a group's committed offsets.

#![allow(dead_code)]

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

pub const PROJECT: &str = "4f1c9a3be6d2a1b07c3e5f11";
pub const KEY_ID: &str = "0123456789abcdef";
pub const COLLECTION: &str = "purchases";
pub const TOPIC: &str = "keen-inbound";
pub const PARTITIONS: i32 = 4;

/// One record for the inbound topic.
pub struct Outbound {
    pub partition: i32,
    pub value: Vec<u8>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

impl Outbound {
    /// A record as the gateway writes it: the tenant headers, then the customer's bytes.
    pub fn tenant(partition: i32, value: impl Into<Vec<u8>>) -> Self {
        Outbound {
            partition,
            value: value.into(),
            headers: vec![
                ("keen-project-id", PROJECT.into()),
                ("keen-collection", COLLECTION.into()),
                ("keen-key-id", KEY_ID.into()),
            ],
        }
    }
}

/// Writes `records` and waits until the broker acknowledged all of them.
pub fn produce(bootstrap: &str, topic: &str, records: &[Outbound]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("a producer");
    for record in records {
        let mut headers = OwnedHeaders::new();
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_slice()),
            });
        }
        let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(record.partition)
            .payload(record.value.as_slice())
            .headers(headers);
        loop {
            match producer.send(base) {
                Ok(()) => break,
                Err((error, back)) => {
                    base = back;
                    eprintln!("produce: {error}; retrying");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("every record acknowledged");
}

/// The group's committed offset of each partition (-1 for none). Compare with the number of
/// records produced: tansu's ListOffsets does not report the high watermark.
pub fn committed(bootstrap: &str, group: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    (0..PARTITIONS)
        .map(|partition| {
            match committed
                .find_partition(topic, partition)
                .map(|p| p.offset())
            {
                Some(Offset::Offset(n)) => n,
                _ => -1,
            }
        })
        .collect()
}
