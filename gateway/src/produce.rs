//! Produce (v3–v12): per partition, check the topic and partition, decode the batch within the
//! request's decompressed budget, answer a known idempotent resend with its original offset,
//! otherwise write every record to the inbound topic and answer once all are acknowledged.

use crate::Gateway;
use crate::auth::Principal;
use crate::idempotence::ProducerPartition;
use crate::metrics::Metrics;
use crate::records::{RecordsError, TenantStamp, decode_batch};
use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::protocol::StrBytes;
use keen_shared::collection::check_name;
use std::time::Instant;

/// The outcome of one partition.
#[derive(Debug)]
struct PartitionOutcome {
    index: i32,
    error_code: i16,
    base_offset: i64,
    message: Option<String>,
}

impl PartitionOutcome {
    fn error(index: i32, error_code: i16, message: impl Into<String>) -> Self {
        PartitionOutcome {
            index,
            error_code,
            base_offset: -1,
            message: Some(message.into()),
        }
    }
}

/// Handles one Produce request; the response says per partition what happened. `failed` in the
/// result is true when any partition failed (with acks=0 that closes the connection).
pub async fn handle(
    gateway: &Gateway,
    principal: &Principal,
    request: ProduceRequest,
    version: i16,
    throttle: Throttle,
    order: Order,
    decoding: Option<tokio::sync::OwnedSemaphorePermit>,
    received: Instant,
) -> (ProduceResponse, bool) {
    let stages = &gateway.metrics.produce_stages;
    let started = Instant::now();
    stages
        .scheduling
        .observe(started.duration_since(received).as_secs_f64());
    let transactional = request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.0.is_empty());
    let acks_valid = matches!(request.acks, -1..=1);
    let now_ms = crate::clock_ms();
    let mut budget = gateway.config.limits.max_decompressed_bytes;
    // The instance's decoded bytes: the reader reserved this request's whole budget before
    // handing it over (in request order, so no request waits for one read after it); what
    // decoding does not use goes back below, the rest is held until the answer.
    let mut decoded_permit = decoding;
    // Decode every partition of every topic first (in order: the decompressed budget is per
    // request), then write them all at once, so a request spanning several topics waits for
    // its slowest partition, not for the sum of them.
    let decoded: Vec<(StrBytes, Vec<Decoded>)> = request
        .topic_data
        .into_iter()
        .map(|topic| {
            let name = topic.name.0;
            let topic_error = if transactional {
                Some((
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    "transactions are not supported: produce without a transactional.id".to_owned(),
                ))
            } else if !acks_valid {
                Some((
                    ResponseError::InvalidRequiredAcks.code(),
                    format!("acks={} is not valid; use all (-1), 1 or 0", request.acks),
                ))
            } else {
                check_name(name.as_str())
                    .err()
                    .map(|e| (ResponseError::InvalidTopicException.code(), e.to_string()))
            };
            let partitions = topic
                .partition_data
                .into_iter()
                .map(|partition| match &topic_error {
                    Some((code, message)) => Decoded::Answered(PartitionOutcome::error(
                        partition.index,
                        *code,
                        message.clone(),
                    )),
                    None => decode_partition(
                        gateway,
                        principal,
                        name.as_str(),
                        partition,
                        &mut budget,
                        now_ms,
                    ),
                })
                .collect();
            (name, partitions)
        })
        .collect();
    stages.decoding.observe(started.elapsed().as_secs_f64());
    let used = gateway.config.limits.max_decompressed_bytes - budget;
    if let Some(permit) = decoded_permit.as_mut() {
        // Keep what the decoded records use until the answer; the rest goes back now.
        drop(permit.split(permit.num_permits().saturating_sub(used)));
    }
    // The quota is charged on what the request decoded to: its wire bytes were charged as it
    // was read; the rest of its decompressed bytes and its records are charged now.
    let records: usize = decoded
        .iter()
        .flat_map(|(_, partitions)| partitions)
        .map(|d| match d {
            Decoded::Ready { batch, .. } => batch.records.len(),
            Decoded::Answered(_) => 0,
        })
        .sum();
    let decoded_bytes = (gateway.config.limits.max_decompressed_bytes - budget)
        .saturating_sub(records * crate::records::DECODED_RECORD_OVERHEAD);
    let wait = gateway.quota.charge(
        &principal.project_id,
        decoded_bytes.saturating_sub(throttle.charged_bytes),
        records,
    );
    let wait = throttle.extend(wait);
    if !wait.is_zero() {
        gateway
            .metrics
            .throttle_seconds
            .get_or_create(&Metrics::label("project_id", principal.project_id.clone()))
            .inc_by(wait.as_secs_f64());
    }
    let throttle_time_ms = i32::try_from(throttle.total().as_millis()).unwrap_or(i32::MAX);
    // The project's next Produce may be read now: its cost is known and its pause, if any, set.
    drop(throttle.turn);
    // Per-partition order across a connection's pipelined requests: this request hands its
    // records to the producer only after the one before it did, then waits for its
    // acknowledgements alongside the others.
    if let Some(previous) = order.previous {
        let _ = previous.await;
    }
    let mut staged = Vec::with_capacity(decoded.len());
    for (name, partitions) in decoded {
        let mut waiting = Vec::with_capacity(partitions.len());
        for partition in partitions {
            waiting.push(enqueue_partition(gateway, principal, name.as_str(), partition).await);
        }
        staged.push((name, waiting));
    }
    drop(order.enqueued);
    let written = join_all(staged.into_iter().map(|(name, partitions)| async move {
        let outcomes = join_all(
            partitions
                .into_iter()
                .map(|p| finish_partition(gateway, principal, p)),
        )
        .await;
        (name, outcomes)
    }))
    .await;
    let mut failed = false;
    let mut topics = Vec::with_capacity(written.len());
    for (name, partitions) in written {
        for outcome in &partitions {
            if outcome.error_code != 0 {
                failed = true;
                gateway
                    .metrics
                    .produce_errors
                    .get_or_create(&Metrics::label("error", error_name(outcome.error_code)))
                    .inc();
            }
        }
        topics.push(response_topic(name, partitions, version));
    }
    let response = ProduceResponse::default()
        .with_responses(topics)
        .with_throttle_time_ms(throttle_time_ms);
    stages.request.observe(received.elapsed().as_secs_f64());
    drop(decoded_permit);
    (response, failed)
}

/// A request's place in its connection's order: it enqueues after `previous` signalled (or
/// was dropped), and signals the next one by dropping `enqueued`.
pub struct Order {
    pub previous: Option<tokio::sync::oneshot::Receiver<()>>,
    pub enqueued: tokio::sync::oneshot::Sender<()>,
}

/// A request's throttle: what was charged as it was read, and the connection's pause, which
/// the produce task may lengthen once it knows what the request decoded to.
pub struct Throttle {
    /// Bytes already charged to the quota (the request's wire size).
    pub charged_bytes: usize,
    /// The wait already owed when the request was read.
    pub read_wait: std::time::Duration,
    /// The instant before which the connection reads nothing more; shared with its reader.
    pub muted_until: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    /// The project's turn (quota on): dropped once the request is charged in full, so the
    /// project's next Produce, on any connection, is read only then.
    pub turn: Option<crate::quota::Turn>,
}

impl Throttle {
    /// Adds `wait` to the connection's pause; returns it.
    fn extend(&self, wait: std::time::Duration) -> std::time::Duration {
        if !wait.is_zero() {
            let mut until = self
                .muted_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let later = Instant::now() + wait;
            *until = Some(until.map_or(later, |u| u.max(later)));
        }
        wait
    }

    /// The whole wait this request costs, as `throttle_time_ms` reports it.
    fn total(&self) -> std::time::Duration {
        let until = self
            .muted_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pending = until.map_or(std::time::Duration::ZERO, |u| {
            u.saturating_duration_since(Instant::now())
        });
        pending.max(self.read_wait).min(crate::quota::MAX_THROTTLE)
    }
}

/// A partition decoded and ready to write, or already answered.
enum Decoded {
    Answered(PartitionOutcome),
    Ready {
        index: i32,
        batch: crate::records::Batch,
    },
}

fn decode_partition(
    gateway: &Gateway,
    principal: &Principal,
    collection: &str,
    partition: PartitionProduceData,
    budget: &mut usize,
    now_ms: i64,
) -> Decoded {
    let index = partition.index;
    if !(0..gateway.config.partitions).contains(&index) {
        return Decoded::Answered(PartitionOutcome::error(
            index,
            ResponseError::UnknownTopicOrPartition.code(),
            format!(
                "partition {index} does not exist; every topic has partitions 0 to {}",
                gateway.config.partitions - 1
            ),
        ));
    }
    let Some(records) = partition.records else {
        return Decoded::Answered(PartitionOutcome::error(
            index,
            ResponseError::CorruptMessage.code(),
            "the partition carries no records",
        ));
    };
    let tenant = TenantStamp {
        project_id: &principal.project_id,
        collection,
        key_id: &principal.key_id,
        client_partition: index,
    };
    match decode_batch(&records, budget, &tenant, now_ms) {
        Ok(batch) => Decoded::Ready { index, batch },
        Err(error) => {
            if matches!(error, RecordsError::DecompressedTooLarge { .. }) {
                tracing::warn!(project_id = %principal.project_id, %error, "batch refused");
            }
            Decoded::Answered(PartitionOutcome::error(
                index,
                error.code(),
                error.to_string(),
            ))
        }
    }
}

/// A partition handed to the producer (or already answered), waiting for its acknowledgement.
enum Staged {
    Answered(PartitionOutcome),
    Waiting {
        index: i32,
        collection: String,
        batch: crate::records::Batch,
        producer: Option<ProducerPartition>,
        started: Instant,
        pending: Result<crate::backing::Pending, crate::backing::BackingError>,
    },
}

async fn enqueue_partition(
    gateway: &Gateway,
    principal: &Principal,
    collection: &str,
    decoded: Decoded,
) -> Staged {
    let (index, batch) = match decoded {
        Decoded::Answered(outcome) => return Staged::Answered(outcome),
        Decoded::Ready { index, batch } => (index, batch),
    };
    let producer = (batch.producer_id >= 0).then(|| ProducerPartition {
        project_id: principal.project_id.clone(),
        collection: collection.to_owned(),
        partition: index,
        producer_id: batch.producer_id,
    });
    if let Some(key) = &producer
        && let Some(base_offset) = gateway.windows.duplicate_of(
            key,
            batch.producer_epoch,
            batch.base_sequence,
            batch.last_sequence(),
        )
    {
        // Kafka answers a resend it still remembers as a success with the original offset.
        let project = Metrics::label("project_id", principal.project_id.clone());
        gateway.metrics.duplicates.get_or_create(&project).inc();
        return Staged::Answered(PartitionOutcome {
            index,
            error_code: 0,
            base_offset,
            message: None,
        });
    }
    let inbound = gateway
        .backing
        .partition_for(&principal.project_id, collection, index);
    let started = Instant::now();
    let pending = gateway
        .backing
        .enqueue(inbound, &batch.tenant, &batch.records)
        .await;
    Staged::Waiting {
        index,
        collection: collection.to_owned(),
        batch,
        producer,
        started,
        pending,
    }
}

async fn finish_partition(
    gateway: &Gateway,
    principal: &Principal,
    staged: Staged,
) -> PartitionOutcome {
    let (index, collection, batch, producer, started, pending) = match staged {
        Staged::Answered(outcome) => return outcome,
        Staged::Waiting {
            index,
            collection,
            batch,
            producer,
            started,
            pending,
        } => (index, collection, batch, producer, started, pending),
    };
    let project = Metrics::label("project_id", principal.project_id.clone());
    let acknowledged = match pending {
        Ok(pending) => pending.acknowledged().await,
        Err(error) => Err(error),
    };
    match acknowledged {
        Ok(acknowledged) => {
            let base_offset = acknowledged.first_offset;
            let metrics = &gateway.metrics;
            let stages = &metrics.produce_stages;
            stages.handing_over.observe(
                acknowledged
                    .handed_over
                    .duration_since(started)
                    .as_secs_f64(),
            );
            stages
                .acknowledgement
                .observe(acknowledged.handed_over.elapsed().as_secs_f64());
            metrics
                .records_accepted
                .get_or_create(&project)
                .inc_by(batch.records.len() as u64);
            metrics
                .bytes_accepted
                .get_or_create(&project)
                .inc_by(batch.wire_bytes as u64);
            if let Some(key) = producer {
                gateway.windows.written(
                    key,
                    batch.producer_epoch,
                    batch.base_sequence,
                    batch.last_sequence(),
                    base_offset,
                );
            }
            PartitionOutcome {
                index,
                error_code: 0,
                base_offset,
                message: None,
            }
        }
        Err(error) => {
            tracing::warn!(project_id = %principal.project_id, %collection, %error, "backing cluster refused a batch");
            // Retriable for the client: it resends, and the resend is deduplicated downstream.
            PartitionOutcome::error(
                index,
                ResponseError::RequestTimedOut.code(),
                "the batch could not be stored right now; the client retries it",
            )
        }
    }
}

fn response_topic(
    name: StrBytes,
    partitions: Vec<PartitionOutcome>,
    version: i16,
) -> TopicProduceResponse {
    let partition_responses = partitions
        .into_iter()
        .map(|outcome| {
            let mut response = PartitionProduceResponse::default()
                .with_index(outcome.index)
                .with_error_code(outcome.error_code)
                .with_base_offset(outcome.base_offset)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            // Error messages exist from v8 on; older versions carry the code alone.
            if version >= 8
                && let Some(message) = outcome.message
            {
                response.error_message = Some(StrBytes::from_string(message.clone()));
                if outcome.error_code == ResponseError::InvalidRecord.code() {
                    response.record_errors = vec![
                        BatchIndexAndErrorMessage::default()
                            .with_batch_index(0)
                            .with_batch_index_error_message(Some(StrBytes::from_string(message))),
                    ];
                }
            }
            response
        })
        .collect();
    TopicProduceResponse::default()
        .with_name(kafka_protocol::messages::TopicName(name))
        .with_partition_responses(partition_responses)
}

/// A label for an error code.
pub fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code).map_or_else(|| "NONE".to_owned(), |e| format!("{e:?}"))
}
