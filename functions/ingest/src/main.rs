//! The ingest Lambda: wires the environment's tables, queue and reference data to the handler.

use keen_ingest::MskEvent;
use keen_ingest::{Config, Ingest, decode_event, system_clock_ms};
use keen_shared::addon::ReferenceData;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .init();

    let config = Config::from_env()?;
    let sdk = aws_config::load_from_env().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);

    // Open the connections now: the first TLS handshake would otherwise land on the first batch.
    let _ = dynamodb
        .describe_table()
        .table_name(&config.tables.events)
        .send()
        .await;
    let _ = sqs
        .get_queue_attributes()
        .queue_url(&config.dead_letter_queue_url)
        .send()
        .await;
    let data = Arc::new(ReferenceData::new(config.geoip_database.clone()));
    data.warm_up()?;

    let ingest = Ingest::with_clients(config, dynamodb, sqs, data);
    let ingest = &ingest;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<MskEvent>| async move {
        let records = decode_event(&event.payload);
        // Lambda's deadline is wall-clock milliseconds; the handler watches a monotonic one.
        // A deadline already past when the invocation starts is no deadline Lambda gives (cargo
        // lambda's emulator sends one): the batch is then judged without one.
        let left_ms = (event.context.deadline as i64)
            .saturating_sub(system_clock_ms())
            .max(0);
        let deadline =
            (left_ms > 0).then(|| Instant::now() + Duration::from_millis(left_ms as u64));
        if deadline.is_none() {
            tracing::warn!(
                deadline_ms = event.context.deadline,
                "the invocation's deadline has already passed; judging the batch without one"
            );
        }
        let (response, counts) = ingest.handle_until(records, deadline).await;
        tracing::info!(
            time_given_ms = left_ms,
            received = counts.received,
            stored = counts.stored,
            duplicates = counts.duplicates,
            resends = counts.resends,
            dead_lettered = counts.dead_lettered_total(),
            dead_lettered_by_code = ?counts.dead_lettered,
            retried = counts.retried,
            deferred = counts.deferred,
            last_resort = counts.last_resort,
            unrecorded = counts.unrecorded,
            "batch processed"
        );
        println!("{}", counts.embedded_metrics(system_clock_ms()));
        Ok::<_, Error>(response)
    }))
    .await
}
