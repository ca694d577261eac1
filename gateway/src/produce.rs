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
    throttle_time_ms: i32,
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
    let written = join_all(decoded.into_iter().map(|(name, partitions)| async move {
        let outcomes = join_all(
            partitions
                .into_iter()
                .map(|d| write_partition(gateway, principal, name.as_str(), d)),
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
    (response, failed)
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

async fn write_partition(
    gateway: &Gateway,
    principal: &Principal,
    collection: &str,
    decoded: Decoded,
) -> PartitionOutcome {
    let (index, batch) = match decoded {
        Decoded::Answered(outcome) => return outcome,
        Decoded::Ready { index, batch } => (index, batch),
    };
    let producer = (batch.producer_id >= 0).then(|| ProducerPartition {
        project_id: principal.project_id.clone(),
        collection: collection.to_owned(),
        partition: index,
        producer_id: batch.producer_id,
    });
    let project = Metrics::label("project_id", principal.project_id.clone());
    if let Some(key) = &producer
        && let Some(base_offset) = gateway.windows.duplicate_of(
            key,
            batch.producer_epoch,
            batch.base_sequence,
            batch.last_sequence(),
        )
    {
        // Kafka answers a resend it still remembers as a success with the original offset.
        gateway.metrics.duplicates.get_or_create(&project).inc();
        return PartitionOutcome {
            index,
            error_code: 0,
            base_offset,
            message: None,
        };
    }
    let inbound = gateway
        .backing
        .partition_for(&principal.project_id, collection, index);
    let started = Instant::now();
    match gateway
        .backing
        .send(inbound, &batch.tenant, &batch.records)
        .await
    {
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
