//! `keen-esm`: the ingest function's environment plus the mapping's own (see `config`), then
//! consume until SIGTERM or Ctrl-C, finishing and committing the batch in hand.

use keen_aws::batch::WriteBatcher;
use keen_aws::dlq::DeadLetterQueue;
use keen_aws::keys_table::KeysTable;
use keen_ingest::{Config, Ingest};
use keen_local::{EsmConfig, EventSourceMapping, IngestFunction};
use keen_shared::addon::ReferenceData;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "keen-esm stopped");
            eprintln!("keen-esm: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let esm = EsmConfig::from_env()?;
    let config = Config::from_env()?;
    tracing::info!(?esm, "starting");
    let sdk = aws_config::load_from_env().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let keys = KeysTable::new(dynamodb.clone(), config.keys_table.clone());
    // Fails early, with the table's name, when the endpoint or tables are wrong.
    keys.warm_up().await?;
    let data = Arc::new(ReferenceData::new(config.geoip_database.clone()));
    data.warm_up()?;
    let ingest = Ingest::new(
        config.clone(),
        dynamodb.clone(),
        WriteBatcher::new(dynamodb),
        DeadLetterQueue::new(sqs, config.dead_letter_queue_url.clone()),
        keys,
        data,
    );
    let function = Arc::new(IngestFunction::new(ingest));
    let ready = Arc::new(AtomicBool::new(false));
    let members = (0..esm.concurrency)
        .map(|index| {
            EventSourceMapping::member(
                esm.clone(),
                Arc::clone(&function),
                Arc::clone(&ready),
                (index, esm.concurrency),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let on_signal = Arc::clone(&stop);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing the batch in hand");
        let _ = on_signal.send(true);
        // Keep the sender alive: a dropped sender also reads as shutdown, which is fine, but
        // a second signal should not be needed.
        std::future::pending::<()>().await;
    });
    let mut running = tokio::task::JoinSet::new();
    for member in members {
        running.spawn(member.run(shutdown.clone()));
    }
    // Every member finishes its batch in hand; the first failure is the process's.
    let mut outcome: Result<(), Box<dyn std::error::Error>> = Ok(());
    while let Some(joined) = running.join_next().await {
        let failure: Option<Box<dyn std::error::Error>> = match joined {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(error.into()),
            Err(join) => Some(format!("a consumer task failed: {join}").into()),
        };
        if let Some(error) = failure
            && outcome.is_ok()
        {
            // The others finish their batches and stop too: a mapping with a dead member
            // would leave that member's partitions unconsumed.
            let _ = stop.send(true);
            outcome = Err(error);
        }
    }
    outcome
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
