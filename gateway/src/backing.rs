//! The backing cluster: every accepted record goes to the inbound topic through librdkafka
//! (the `rdkafka` crate with its bundled, current librdkafka), idempotent and with acks=all, so an
//! acknowledgement to the customer means "replicated in the backing cluster".

use crate::config::{BackingConfig, MAX_BATCH_BYTES};
use crate::records::{OutboundRecord, TenantHeaders};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Statistics};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Room for the tenant headers and record framing on top of a maximal customer batch. The
/// backing topic's `max.message.bytes` must be at least [`BACKING_MAX_MESSAGE_BYTES`].
pub const HEADER_OVERHEAD_BYTES: usize = 64 * 1024;
/// The producer's `message.max.bytes`, and the least the inbound topic must accept.
pub const BACKING_MAX_MESSAGE_BYTES: usize = MAX_BATCH_BYTES + HEADER_OVERHEAD_BYTES;

/// The backing cluster failed to take a batch; the client sees a retriable error and resends.
#[derive(Debug, thiserror::Error)]
pub enum BackingError {
    #[error("backing cluster: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the inbound topic {topic} was not found in the backing cluster: {detail}")]
    NoTopic { topic: String, detail: String },
    #[error("the backing producer went away before acknowledging")]
    Canceled,
}

/// The acknowledgement of one batch: every record's delivery report counts down on it, and the
/// last one wakes the waiting request. One shared object per batch, handed to librdkafka as each
/// record's opaque, keeps the per-record cost of the hot path to a reference count.
pub struct BatchAck {
    pending: AtomicUsize,
    /// The lowest offset acknowledged: the batch's first record, since one partition's records
    /// are written in order.
    first_offset: AtomicI64,
    failure: Mutex<Option<KafkaError>>,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

/// A batch the backing cluster acknowledged.
pub struct Acknowledged {
    /// The offset of the batch's first record.
    pub first_offset: i64,
    /// When the last record was handed to the producer: what follows is librdkafka's linger,
    /// the round trip to the cluster and the delivery reports.
    pub handed_over: Instant,
}

/// Whether the backing producer can take records: what `/ready` answers. A fatal error (a
/// fenced idempotent producer, which can never produce again) is final; the cluster being
/// unreachable (every broker down, or deliveries failing) holds until a delivery or a metadata
/// probe succeeds again.
#[derive(Debug, Default)]
pub struct BackingHealth {
    fatal: Mutex<Option<String>>,
    unreachable: Mutex<Option<(Instant, String)>>,
    /// Deliveries failing with none succeeding since: cleared by a delivery only, since a
    /// cluster that answers metadata may still refuse this producer (one whose broker lost its
    /// idempotence state after a restart times out forever).
    failing: Mutex<Option<(Instant, String)>>,
}

impl BackingHealth {
    /// `Ok` when records can be written, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(reason) = current(&self.fatal) {
            return Err(format!("backing producer failed fatally: {reason}"));
        }
        if let Some((since, reason)) = current(&self.unreachable) {
            let seconds = since.elapsed().as_secs();
            return Err(format!(
                "backing cluster unreachable for {seconds} s: {reason}"
            ));
        }
        if let Some((since, reason)) = current(&self.failing) {
            let seconds = since.elapsed().as_secs();
            return Err(format!(
                "backing deliveries failing for {seconds} s: {reason}"
            ));
        }
        Ok(())
    }

    /// Whether the producer must be replaced: it failed fatally, or the cluster answers but
    /// its deliveries have failed for longer than `patience`.
    pub fn needs_new_producer(&self, patience: Duration) -> bool {
        self.is_fatal()
            || (!self.is_unreachable()
                && current(&self.failing).is_some_and(|(since, _)| since.elapsed() > patience))
    }

    /// Whether the producer failed fatally (the process should be replaced).
    pub fn is_fatal(&self) -> bool {
        current(&self.fatal).is_some()
    }

    /// Whether the cluster is unreachable now (a probe should run).
    pub fn is_unreachable(&self) -> bool {
        current(&self.unreachable).is_some()
    }

    pub fn failed_fatally(&self, reason: &str) {
        keep_first(&self.fatal, || reason.to_owned());
    }

    pub fn went_unreachable(&self, reason: &str) {
        keep_first(&self.unreachable, || (Instant::now(), reason.to_owned()));
    }

    pub fn delivery_failed(&self, reason: &str) {
        keep_first(&self.failing, || (Instant::now(), reason.to_owned()));
    }

    /// The cluster answered (a delivery or a probe).
    pub fn reached(&self) {
        if take(&self.unreachable).is_some() {
            tracing::info!("backing cluster reachable again");
        }
    }

    pub fn delivered(&self) {
        take(&self.failing);
        self.reached();
    }

    /// A new producer replaced the old one: its failures are history.
    pub fn replaced(&self) {
        take(&self.fatal);
        take(&self.failing);
    }
}

fn current<T: Clone>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Sets `slot` unless it is set: the first reason is the one reported.
fn keep_first<T>(slot: &Mutex<Option<T>>, value: impl FnOnce() -> T) {
    slot.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(value);
}

fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// Where delivery reports and client errors go.
#[derive(Default)]
pub struct Deliveries {
    health: Arc<BackingHealth>,
}

impl ClientContext for Deliveries {
    /// librdkafka's client-level errors: a fatal one ends the producer for good; every broker
    /// down makes the gateway unready until a delivery or a probe succeeds.
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Fatal) => {
                tracing::error!(%error, reason, "backing producer failed fatally");
                self.health.failed_fatally(reason);
            }
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                tracing::warn!(%error, reason, "every backing broker is down");
                self.health.went_unreachable(reason);
            }
            _ => tracing::warn!(%error, reason, "backing producer error"),
        }
    }

    /// With `BACKING_STATS_INTERVAL_MS`: where a record's time goes between the gateway and the
    /// backing broker, per broker (microseconds, librdkafka's rolling windows): waiting in the
    /// producer queue for a batch and a free request slot, waiting to be written, the round trip.
    fn stats(&self, statistics: Statistics) {
        for broker in statistics.brokers.values().filter(|b| b.nodeid >= 0) {
            let p = |window: &Option<rdkafka::statistics::Window>| {
                window.as_ref().map_or((0, 0), |w| (w.p50, w.p99))
            };
            let (queue_p50, queue_p99) = p(&broker.int_latency);
            let (outbuf_p50, outbuf_p99) = p(&broker.outbuf_latency);
            let (rtt_p50, rtt_p99) = p(&broker.rtt);
            tracing::info!(
                broker = %broker.name,
                queue_p50, queue_p99, outbuf_p50, outbuf_p99, rtt_p50, rtt_p99,
                awaiting_response = broker.waitresp_cnt,
                queued_messages = statistics.msg_cnt,
                "backing producer latencies (us)"
            );
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Arc<BatchAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        match result {
            Ok(message) => {
                self.health.delivered();
                ack.first_offset
                    .fetch_min(message.offset(), Ordering::AcqRel);
            }
            Err((error, _)) => {
                self.health.delivery_failed(&error.to_string());
                ack.failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert_with(|| error.clone());
            }
        }
        if ack.pending.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(done) = ack
                .done
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        {
            let _ = done.send(());
        }
    }
}

/// The producer of the inbound topic.
pub struct Backing {
    /// Replaced whole when it cannot recover ([`Backing::replace_producer`]).
    producer: RwLock<Arc<ThreadedProducer<Deliveries>>>,
    client: ClientConfig,
    health: Arc<BackingHealth>,
    topic: String,
    partitions: i32,
}

impl Backing {
    /// Connects and learns the inbound topic's partition count (blocking: call at start).
    pub fn connect(config: &BackingConfig, topic: &str) -> Result<Backing, BackingError> {
        let mut client = ClientConfig::new();
        for (key, value) in config.connection.client_properties() {
            client.set(key, value);
        }
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", config.linger_ms.to_string())
            .set("compression.type", &config.compression)
            .set("message.max.bytes", BACKING_MAX_MESSAGE_BYTES.to_string())
            // Bounded by the gateway's in-flight limits long before this one.
            .set("queue.buffering.max.kbytes", (1024 * 1024).to_string())
            .set("message.timeout.ms", config.message_timeout_ms.to_string())
            .set("client.id", "keen-gateway")
            // Batching is linger.ms's job; Nagle would only hold small batches back.
            .set("socket.nagle.disable", "true")
            .set(
                "statistics.interval.ms",
                config.stats_interval_ms.to_string(),
            );
        let health = Arc::new(BackingHealth::default());
        let producer: ThreadedProducer<Deliveries> = client.create_with_context(Deliveries {
            health: health.clone(),
        })?;
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|&n| n > 0)
            .ok_or_else(|| BackingError::NoTopic {
                topic: topic.to_owned(),
                detail: "create it first (the local stack and the template do)".into(),
            })?;
        Ok(Backing {
            producer: RwLock::new(Arc::new(producer)),
            client,
            health,
            topic: topic.to_owned(),
            partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
        })
    }

    /// Partitions of the inbound topic.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The inbound partition of a client's (project, collection, partition): a producer's
    /// per-partition order is kept, and one hot collection still spreads over many partitions.
    pub fn partition_for(&self, project_id: &str, collection: &str, client_partition: i32) -> i32 {
        inbound_partition(project_id, collection, client_partition, self.partitions)
    }

    /// Writes `records`, with the `tenant` headers, to `partition` and waits until every one is
    /// acknowledged. Any failure fails the whole batch (the client resends it).
    pub async fn send(
        &self,
        partition: i32,
        tenant: &TenantHeaders,
        records: &[OutboundRecord],
    ) -> Result<Acknowledged, BackingError> {
        self.enqueue(partition, tenant, records)
            .await?
            .acknowledged()
            .await
    }

    /// Hands `records` to the producer, in order, and returns what waits for their
    /// acknowledgement. Records enqueued before others on one partition are written before
    /// them (the producer is idempotent), so a caller that enqueues in request order keeps
    /// the order of a connection's pipelined requests.
    pub async fn enqueue(
        &self,
        partition: i32,
        tenant: &TenantHeaders,
        records: &[OutboundRecord],
    ) -> Result<Pending, BackingError> {
        if records.is_empty() {
            return Ok(Pending::Empty);
        }
        let (done, acknowledged) = oneshot::channel();
        let ack = Arc::new(BatchAck {
            pending: AtomicUsize::new(records.len()),
            first_offset: AtomicI64::new(i64::MAX),
            failure: Mutex::new(None),
            done: Mutex::new(Some(done)),
        });
        let producer = self.current();
        for (sent, record) in records.iter().enumerate() {
            let mut headers = OwnedHeaders::new_with_capacity(record.header_count());
            for (key, value) in record.headers(tenant) {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut base: BaseRecord<'_, [u8], [u8], _> =
                BaseRecord::with_opaque_to(&self.topic, ack.clone())
                    .partition(partition)
                    .timestamp(record.timestamp_ms)
                    .headers(headers);
            if let Some(key) = &record.key {
                base = base.key(key.as_ref());
            }
            if let Some(value) = &record.value {
                base = base.payload(value.as_ref());
            }
            loop {
                match producer.send(base) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // librdkafka's queue drains as the cluster acknowledges; wait a little.
                        base = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((error, _)) => {
                        // Records already queued still report; the batch fails as a whole, and
                        // the ones not queued will never report: settle their share now.
                        let unsent = records.len() - sent;
                        if ack.pending.fetch_sub(unsent, Ordering::AcqRel) == unsent {
                            return Err(error.into());
                        }
                        let _ = acknowledged.await;
                        return Err(error.into());
                    }
                }
            }
        }
        Ok(Pending::Batch {
            ack,
            acknowledged,
            handed_over: Instant::now(),
        })
    }

    fn current(&self) -> Arc<ThreadedProducer<Deliveries>> {
        self.producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the producer with a new one (blocking: the old one waits for its outstanding
    /// records to fail or land before it goes; use spawn_blocking). A fatal producer never
    /// writes again, and one whose cluster lost its idempotence state can time out forever.
    pub fn replace_producer(&self) -> Result<(), BackingError> {
        let fresh: ThreadedProducer<Deliveries> = self.client.create_with_context(Deliveries {
            health: self.health.clone(),
        })?;
        let old = std::mem::replace(
            &mut *self
                .producer
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            Arc::new(fresh),
        );
        self.health.replaced();
        drop(old);
        tracing::info!("backing producer replaced");
        Ok(())
    }

    /// The producer's health, for `/ready`.
    pub fn health(&self) -> Arc<BackingHealth> {
        self.health.clone()
    }

    /// While the cluster is unreachable, asks it for the inbound topic's metadata (blocking:
    /// use spawn_blocking); an answer makes the gateway ready again without waiting for a
    /// customer's produce to succeed.
    pub fn probe(&self, timeout: Duration) {
        if !self.health.is_unreachable() {
            return;
        }
        let answered = self
            .current()
            .client()
            // All topics: asking for one by name would create it on a broker that auto-creates.
            .fetch_metadata(None, timeout)
            .is_ok_and(|metadata| {
                metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == self.topic && t.error().is_none())
            });
        if answered {
            self.health.reached();
        }
    }

    /// Waits until everything sent is acknowledged, or `timeout` (blocking: use spawn_blocking).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.current().flush(timeout)
    }
}

/// A batch handed to the producer, waiting for its acknowledgement.
pub enum Pending {
    Empty,
    Batch {
        ack: Arc<BatchAck>,
        acknowledged: oneshot::Receiver<()>,
        handed_over: Instant,
    },
}

impl Pending {
    /// Waits until every record is acknowledged; any failure fails the whole batch.
    pub async fn acknowledged(self) -> Result<Acknowledged, BackingError> {
        let (ack, acknowledged, handed_over) = match self {
            Pending::Empty => {
                return Ok(Acknowledged {
                    first_offset: -1,
                    handed_over: Instant::now(),
                });
            }
            Pending::Batch {
                ack,
                acknowledged,
                handed_over,
            } => (ack, acknowledged, handed_over),
        };
        if acknowledged.await.is_err() {
            return Err(BackingError::Canceled);
        }
        if let Some(error) = ack
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(BackingError::Kafka(error));
        }
        Ok(Acknowledged {
            first_offset: ack.first_offset.load(Ordering::Acquire),
            handed_over,
        })
    }
}

/// The inbound partition of a record lives with the physical record's contract.
pub use keen_shared::record::inbound_partition;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_producer() {
        let health = BackingHealth::default();
        assert_eq!(health.readiness(), Ok(()));
        health.went_unreachable("all brokers down");
        health.went_unreachable("a later reason does not replace the first");
        let reason = health.readiness().expect_err("unready");
        assert!(
            reason.contains("unreachable") && reason.contains("all brokers down"),
            "{reason}"
        );
        health.reached();
        assert_eq!(health.readiness(), Ok(()));
        health.delivery_failed("message timed out");
        health.reached();
        assert!(
            health
                .readiness()
                .expect_err("still failing")
                .contains("timed out")
        );
        assert!(health.needs_new_producer(Duration::ZERO));
        health.replaced();
        assert_eq!(health.readiness(), Ok(()));
        health.failed_fatally("producer fenced");
        health.reached();
        let reason = health.readiness().expect_err("fatal is final");
        assert!(reason.contains("fatally: producer fenced"), "{reason}");
        assert!(health.is_fatal());
    }

    #[test]
    fn a_maximal_batch_with_headers_fits_the_backing_limit() {
        // The worst case the gateway forwards: one record holding a whole maximal batch, with the
        // tenant headers at their longest (64-character collection, producer identity).
        let tenant = TenantHeaders {
            project_id: bytes::Bytes::from(vec![b'p'; 64]),
            collection: bytes::Bytes::from(vec![b'c'; 64]),
            key_id: bytes::Bytes::from(vec![b'k'; 16]),
        };
        let record = OutboundRecord {
            key: None,
            value: Some(bytes::Bytes::from(vec![b'x'; MAX_BATCH_BYTES])),
            customer_headers: Vec::new(),
            producer: Some(bytes::Bytes::from(
                "9223372036854775807:32767:2147483647:2147483647",
            )),
            producer_timestamp: Some(bytes::Bytes::from(i64::MIN.to_string())),
            timestamp_ms: 0,
        };
        assert_eq!(record.header_count(), 5);
        // Kafka's record batch overhead is 61 bytes plus ≤ 21 per record: far inside the margin.
        assert!(record.size(&tenant) + 61 + 21 < BACKING_MAX_MESSAGE_BYTES);
    }
}
