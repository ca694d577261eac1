//! The consume–invoke–commit loop: the local stand-in for Lambda's MSK event source mapping.
//!
//! Contract:
//! - Reads the inbound topic's partitions, shared out between the process's `ESM_CONCURRENCY`
//!   consumers by partition number (consumer k of n takes partitions p with p mod n = k), each
//!   from the offset committed under `ESM_GROUP_ID` (else the earliest); offsets are committed
//!   synchronously and only for records the function accounted for, so a crash at any point
//!   re-delivers, never loses (storage is idempotent: keen.id is the record's position).
//!   Partitions are assigned, not taken through the group protocol: tansu's coordinator, given
//!   four members that join while records wait, rebalanced them over and over for minutes after
//!   a restart on a kept topic; one process owns the topic locally, so there is nothing for a
//!   coordinator to share out.
//! - A batch closes at the batch size, when the window after its first record ends, or when the
//!   next record would push the event JSON past 6 MB (that record opens the next batch).
//! - A partial batch response commits each failed partition's successful prefix and rewinds it
//!   to the failed offset; an error or panic of the function rewinds the whole batch. A rewound
//!   partition is paused for a capped, jittered, growing delay while the others keep flowing:
//!   one poison partition does not stall the topic, as with Lambda's per-partition pollers.
//! - Shutdown (the watch turns true) lets the batch in hand finish and commit, then returns.

use crate::config::EsmConfig;
use crate::event::{ConsumedRecord, EventBuilder, EventSource, TimestampType};
use crate::plan::{BatchOffsets, PartitionPlan, Plan, TopicPartition, plan};
use keen_ingest::Counts;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The first retry of a rewound partition waits about this long…
pub const RETRY_BASE: Duration = Duration::from_millis(100);
/// …doubling per attempt up to this (Lambda backs off to minutes; locally seconds keep a
/// developer's loop short).
pub const RETRY_CAP: Duration = Duration::from_secs(10);
/// How long a synchronous commit, seek or pause may take before it counts as failed.
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a consumer error before polling again, so a dead broker is not spun on.
const ERROR_PAUSE: Duration = Duration::from_millis(200);

/// What the function answered.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The partial batch response (`{"batchItemFailures":[…]}`).
    pub response: Value,
    /// The ingest's counts, for the batch log line.
    pub counts: Option<Counts>,
}

/// The invoked function: given the event JSON text, answers like a Lambda handler. An `Err` is
/// a function error (Lambda's `Unhandled`): the whole batch is retried.
pub trait Function: Send + Sync + 'static {
    fn invoke(&self, event: String) -> impl Future<Output = Result<Invocation, String>> + Send;
}

/// The mapping could not start or its consumer broke for good.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("the backing cluster consumer could not be created: {0}")]
    Consumer(#[source] KafkaError),
    #[error("reading the partitions of {topic} failed: {source}")]
    Subscribe {
        topic: String,
        #[source]
        source: KafkaError,
    },
    /// Without the seek the partition would move on past a failed record; stopping (with
    /// nothing past the failure committed) is the only way not to lose it.
    #[error("rewinding {partition} to offset {offset} failed: {source}; restart the mapping")]
    Seek {
        partition: String,
        offset: i64,
        #[source]
        source: KafkaError,
    },
}

/// What a run did, for tests and the final log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub batches: u64,
    pub records: u64,
    /// Partitions rewound (partial responses, errors, panics).
    pub rewinds: u64,
}

/// The consumers' context: librdkafka's defaults (no rebalance happens: partitions are
/// assigned).
pub struct MappingContext;

impl ClientContext for MappingContext {}

impl ConsumerContext for MappingContext {}

/// A rewound partition's retry state.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    attempts: u32,
    /// While set, the partition is paused until then.
    resume_at: Option<Instant>,
}

/// The event source mapping.
pub struct EventSourceMapping<F> {
    config: EsmConfig,
    source: EventSource,
    consumer: StreamConsumer<MappingContext>,
    function: Arc<F>,
    backoff: HashMap<TopicPartition, Backoff>,
    /// A record that did not fit under the payload bound: it opens the next batch.
    carry: Option<ConsumedRecord>,
    summary: RunSummary,
}

/// One batch in hand.
struct Batch {
    event: EventBuilder,
    offsets: BatchOffsets,
}

impl<F: Function> EventSourceMapping<F> {
    /// Creates the consumer of every partition of the topic.
    pub fn new(config: EsmConfig, function: Arc<F>) -> Result<Self, MappingError> {
        Self::member(config, function, Arc::new(AtomicBool::new(false)), (0, 1))
    }

    /// Consumer `slot.0` of `slot.1` in one process (`ESM_CONCURRENCY`): it takes the partitions
    /// whose number modulo `slot.1` is `slot.0`. Members share the function and the readiness
    /// flag: the readiness line is printed once, by the first member assigned its partitions.
    pub fn member(
        config: EsmConfig,
        function: Arc<F>,
        ready: Arc<AtomicBool>,
        slot: (usize, usize),
    ) -> Result<Self, MappingError> {
        let mut client = ClientConfig::new();
        for (key, value) in config.backing.client_properties() {
            client.set(key, value);
        }
        client
            .set("group.id", &config.group_id)
            .set("client.id", "keen-local-esm")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("enable.partition.eof", "false");
        let consumer: StreamConsumer<MappingContext> = client
            .create_with_context(MappingContext)
            .map_err(MappingError::Consumer)?;
        let failed = |source| MappingError::Subscribe {
            topic: config.topic.clone(),
            source,
        };
        let metadata = consumer
            .fetch_metadata(Some(&config.topic), BROKER_CALL_TIMEOUT)
            .map_err(failed)?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == config.topic)
            .map_or(0, |t| t.partitions().len());
        let (index, of) = (slot.0, slot.1.max(1));
        let mut assignment = TopicPartitionList::new();
        for partition in (0..partitions).filter(|p| p % of == index) {
            // From the group's committed offset, else auto.offset.reset (earliest).
            assignment
                .add_partition_offset(
                    &config.topic,
                    i32::try_from(partition).unwrap_or(i32::MAX),
                    Offset::Stored,
                )
                .map_err(failed)?;
        }
        consumer.assign(&assignment).map_err(failed)?;
        tracing::info!(partitions = assignment.count(), "partitions assigned");
        if partitions == 0 {
            return Err(failed(KafkaError::Subscription(format!(
                "the topic {} has no partitions (does it exist?)",
                config.topic
            ))));
        }
        if !ready.swap(true, Ordering::AcqRel) {
            // Printed for scripts and tests that wait for readiness.
            println!(
                "keen-esm consuming {} from {}",
                config.topic, config.backing.bootstrap
            );
        }
        let source = EventSource {
            arn: crate::event::LOCAL_EVENT_SOURCE_ARN.to_owned(),
            bootstrap_servers: config.backing.bootstrap.clone(),
        };
        Ok(EventSourceMapping {
            config,
            source,
            consumer,
            function,
            backoff: HashMap::new(),
            carry: None,
            summary: RunSummary::default(),
        })
    }

    /// Consumes, invokes and commits until `shutdown` turns true (or its sender is dropped),
    /// then finishes the batch in hand and returns.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<RunSummary, MappingError> {
        tracing::info!(
            topic = %self.config.topic,
            bootstrap = %self.config.backing.bootstrap,
            group = %self.config.group_id,
            batch_size = self.config.batch_size,
            batch_window_ms = self.config.batch_window.as_millis() as u64,
            "consuming"
        );
        let mut outcome = Ok(());
        while let Some(batch) = self.gather(&mut shutdown).await {
            outcome = self.process(batch).await;
            if outcome.is_err() || stopping(&shutdown) {
                break;
            }
        }
        let _ = self.consumer.unassign();
        tracing::info!(
            batches = self.summary.batches,
            records = self.summary.records,
            rewinds = self.summary.rewinds,
            "stopped"
        );
        outcome.map(|()| self.summary)
    }

    /// Reads one batch; `None` when shutdown came before any record did.
    async fn gather(&mut self, shutdown: &mut watch::Receiver<bool>) -> Option<Batch> {
        let mut batch = Batch {
            event: EventBuilder::new(&self.source),
            offsets: BatchOffsets::default(),
        };
        let mut closes_at: Option<Instant> = None;
        if let Some(record) = self.carry.take() {
            let prepared = batch.event.prepare(&record);
            batch.event.push(prepared);
            batch
                .offsets
                .insert(&record.topic, record.partition, record.offset);
            closes_at = Some(Instant::now() + self.config.batch_window);
        }
        loop {
            self.resume_due();
            if batch.event.records() >= self.config.batch_size {
                break;
            }
            if stopping(shutdown) {
                if batch.event.is_empty() {
                    return None;
                }
                break;
            }
            let now = Instant::now();
            if closes_at.is_some_and(|at| at <= now) {
                break;
            }
            // Wake for the window's end, a paused partition's resumption, or at least once a
            // second to notice a shutdown whose sender went away.
            let wake = [closes_at, self.next_resume()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_secs(1));
            let received = tokio::select! {
                _ = shutdown.changed() => continue,
                received = tokio::time::timeout_at(wake, self.consumer.recv()) => received,
            };
            let message = match received {
                Err(_elapsed) => continue,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "consumer error");
                    tokio::time::sleep(ERROR_PAUSE).await;
                    continue;
                }
                Ok(Ok(message)) => consumed(&message),
            };
            let prepared = batch.event.prepare(&message);
            if !batch.event.is_empty()
                && batch.event.len() + prepared.added > self.config.max_payload_bytes
            {
                self.carry = Some(message);
                break;
            }
            batch.event.push(prepared);
            batch
                .offsets
                .insert(&message.topic, message.partition, message.offset);
            closes_at.get_or_insert(Instant::now() + self.config.batch_window);
        }
        Some(batch)
    }

    /// Invokes the function with one batch, then commits and rewinds as its answer says.
    async fn process(&mut self, mut batch: Batch) -> Result<(), MappingError> {
        let records = batch.event.records();
        let building = std::time::Instant::now();
        let event = batch.event.build();
        let build_ms = building.elapsed().as_secs_f64() * 1000.0;
        let bytes = event.len();
        let started = std::time::Instant::now();
        let function = Arc::clone(&self.function);
        // Spawned so that a panicking handler is a failed invocation, not a dead mapping.
        let answer = tokio::spawn(async move { function.invoke(event).await }).await;
        let invoke_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (plan, counts) = match answer {
            Ok(Ok(invocation)) => (
                plan(&batch.offsets, &invocation.response),
                invocation.counts,
            ),
            Ok(Err(error)) => (
                Plan::retry_all(&batch.offsets, Some(format!("function error: {error}"))),
                None,
            ),
            Err(join) => (
                Plan::retry_all(&batch.offsets, Some(format!("function panicked: {join}"))),
                None,
            ),
        };
        let committing = std::time::Instant::now();
        let committed = self.commit(&plan);
        let commit_ms = committing.elapsed().as_secs_f64() * 1000.0;
        let mut rewound = 0;
        for partition in plan.rewound() {
            self.rewind(partition)?;
            rewound += 1;
        }
        for partition in plan.partitions.iter().filter(|p| p.rewind.is_none()) {
            self.backoff.remove(&partition.partition);
        }
        self.summary.batches += 1;
        self.summary.records += records as u64;
        self.summary.rewinds += rewound;
        let counts = counts.unwrap_or_default();
        tracing::info!(
            records,
            partitions = plan.partitions.len(),
            bytes,
            build_ms,
            invoke_ms,
            commit_ms,
            committed,
            rewound,
            malformed = plan.malformed.as_deref(),
            stored = counts.stored,
            duplicates = counts.duplicates,
            resends = counts.resends,
            dead_lettered = counts.dead_lettered_total(),
            retried = counts.retried,
            "batch"
        );
        Ok(())
    }

    /// Commits every offset the plan allows, synchronously; false when the broker refused.
    fn commit(&self, plan: &Plan) -> bool {
        let mut offsets = TopicPartitionList::new();
        for p in &plan.partitions {
            if let Some(next) = p.commit
                && let Err(error) = offsets.add_partition_offset(
                    &p.partition.topic,
                    p.partition.partition,
                    Offset::Offset(next),
                )
            {
                tracing::warn!(%error, "offset not committable");
            }
        }
        if offsets.count() == 0 {
            return true;
        }
        // A failed commit re-delivers those records after a restart or rebalance; storage is
        // idempotent, so that costs time, not correctness.
        for attempt in 1..=3 {
            match self.consumer.commit(&offsets, CommitMode::Sync) {
                Ok(()) => return true,
                Err(error) => tracing::warn!(%error, attempt, "commit failed"),
            }
        }
        false
    }

    /// Seeks a failed partition back to its failed offset and pauses it for the backoff.
    fn rewind(&mut self, plan: &PartitionPlan) -> Result<(), MappingError> {
        let Some(from) = plan.rewind else {
            return Ok(());
        };
        let tp = &plan.partition;
        if self
            .carry
            .as_ref()
            .is_some_and(|r| r.topic == tp.topic && r.partition == tp.partition)
        {
            self.carry = None;
        }
        let state = self.backoff.entry(tp.clone()).or_insert(Backoff {
            attempts: 0,
            resume_at: None,
        });
        state.attempts = state.attempts.saturating_add(1);
        let delay = retry_delay(state.attempts, jitter());
        state.resume_at = Some(Instant::now() + delay);
        let attempts = state.attempts;
        let mut list = TopicPartitionList::new();
        list.add_partition(&tp.topic, tp.partition);
        if let Err(error) = self.consumer.pause(&list) {
            tracing::warn!(%error, partition = %tp.event_key(), "pause failed");
        }
        self.consumer
            .seek(
                &tp.topic,
                tp.partition,
                Offset::Offset(from),
                BROKER_CALL_TIMEOUT,
            )
            .map_err(|source| MappingError::Seek {
                partition: tp.event_key(),
                offset: from,
                source,
            })?;
        tracing::warn!(
            partition = %tp.event_key(),
            offset = from,
            attempts,
            retry_in_ms = delay.as_millis() as u64,
            "partition rewound"
        );
        Ok(())
    }

    /// Resumes paused partitions whose backoff is over.
    fn resume_due(&mut self) {
        let now = Instant::now();
        for (tp, state) in &mut self.backoff {
            if state.resume_at.is_some_and(|at| at <= now) {
                state.resume_at = None;
                let mut list = TopicPartitionList::new();
                list.add_partition(&tp.topic, tp.partition);
                if let Err(error) = self.consumer.resume(&list) {
                    tracing::warn!(%error, partition = %tp.event_key(), "resume failed");
                }
            }
        }
    }

    fn next_resume(&self) -> Option<Instant> {
        self.backoff.values().filter_map(|s| s.resume_at).min()
    }
}

fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// The record as the event needs it (bytes copied out of librdkafka's buffer).
fn consumed(message: &BorrowedMessage<'_>) -> ConsumedRecord {
    let (timestamp_ms, timestamp_type) = match message.timestamp() {
        rdkafka::Timestamp::CreateTime(ms) => (ms, TimestampType::CreateTime),
        rdkafka::Timestamp::LogAppendTime(ms) => (ms, TimestampType::LogAppendTime),
        rdkafka::Timestamp::NotAvailable => (-1, TimestampType::None),
    };
    ConsumedRecord {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms,
        timestamp_type,
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The wait before retry `attempt` (1-based): exponential from [`RETRY_BASE`], capped at
/// [`RETRY_CAP`], with the upper half jittered by `jitter` in [0, 1) so that retries of several
/// partitions spread out.
pub fn retry_delay(attempt: u32, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let full = RETRY_BASE.saturating_mul(1 << exponent).min(RETRY_CAP);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A uniform value in [0, 1); 0.5 if the system has no randomness to give.
fn jitter() -> f64 {
    getrandom::u64()
        .map(|bits| (bits >> 11) as f64 / (1u64 << 53) as f64)
        .unwrap_or(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_are_capped_and_jittered_within_bounds() {
        assert_eq!(retry_delay(1, 0.0), Duration::from_millis(50));
        assert_eq!(retry_delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(retry_delay(2, 0.0), Duration::from_millis(100));
        assert_eq!(retry_delay(4, 0.0), Duration::from_millis(400));
        for attempt in [8, 9, 40, u32::MAX] {
            assert!(retry_delay(attempt, 0.999) <= RETRY_CAP);
            assert!(retry_delay(attempt, 0.0) >= RETRY_CAP / 2);
        }
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
