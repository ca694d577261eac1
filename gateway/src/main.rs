//! `keen-gateway`: configuration from the environment (see the README), then serve until
//! SIGTERM or Ctrl-C, finishing in-flight produces and flushing the backing producer.

use keen_aws::keys_table::KeysTable;
use keen_aws::secrets::load_pepper;
use keen_gateway::auth::Credentials;
use keen_gateway::backing::Backing;
use keen_gateway::config::Config;
use keen_gateway::{Gateway, metrics, server};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// jemalloc serves Rust and C (librdkafka) alike: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "gateway stopped");
            eprintln!("keen-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    tracing::info!(?config, "starting");
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let pepper = load_pepper(&aws).await?;
    let keys = KeysTable::new(
        aws_sdk_dynamodb::Client::new(&aws),
        config.keys_table.clone(),
    );
    keys.warm_up().await?;
    let backing_config = config.backing.clone();
    let topic = config.inbound_topic.clone();
    let backing =
        tokio::task::spawn_blocking(move || Backing::connect(&backing_config, &topic)).await??;
    tracing::info!(topic = %config.inbound_topic, partitions = backing.partitions(), "backing cluster reached");
    let tls = match &config.tls {
        Some((cert, key)) => Some(server::tls_acceptor(cert, key)?),
        None => None,
    };
    let listener = server::bind(config.listen).await?;
    let gateway = Arc::new(Gateway::new(
        config,
        Credentials::new(keys, pepper),
        backing,
    ));
    let health = gateway.backing.health();
    if let Some(listen) = gateway.config.metrics_listen {
        let metrics = gateway.metrics.clone();
        let ready: metrics::Readiness = {
            let health = health.clone();
            Arc::new(move || health.readiness())
        };
        // Bound before the readiness line below: whoever waits for it can scrape at once.
        match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => {
                tokio::spawn(async move {
                    if let Err(error) = metrics::serve_on(listener, metrics, ready).await {
                        tracing::error!(%error, "metrics listener failed");
                    }
                });
            }
            Err(error) => tracing::error!(%error, %listen, "metrics listener failed"),
        }
    }
    tracing::info!(listen = %gateway.config.listen, tls = gateway.config.tls.is_some(), "listening");
    // Printed for scripts that wait for readiness.
    println!("keen-gateway listening on {}", gateway.config.listen);
    let signals = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            gateway.stop();
        })
    };
    // While the cluster is unreachable, probe it so readiness comes back without waiting for
    // a customer's produce. A producer that failed fatally, or whose deliveries keep failing
    // though the cluster answers, is replaced by a new one; if even that fails, the gateway
    // stops (in-flight requests answered with their errors) and exits non-zero, so ECS or the
    // operator starts a fresh one.
    let patience = Duration::from_millis(gateway.config.backing.message_timeout_ms) * 2;
    let watch = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let checking = gateway.clone();
                let replaced = tokio::task::spawn_blocking(move || {
                    let backing = &checking.backing;
                    backing.probe(Duration::from_secs(2));
                    if !backing.health().needs_new_producer(patience) {
                        return Ok(());
                    }
                    tracing::warn!(reason = ?backing.health().readiness().err(), "replacing the backing producer");
                    backing.replace_producer()
                })
                .await;
                if let Ok(Err(error)) = replaced {
                    tracing::error!(%error, "the backing producer could not be replaced: stopping");
                    gateway.backing.health().failed_fatally(&error.to_string());
                    gateway.stop();
                    return;
                }
            }
        })
    };
    server::run(gateway.clone(), listener, tls).await;
    signals.abort();
    let fatal = health.is_fatal();
    watch.abort();
    let flushing = gateway.clone();
    let flushed =
        tokio::task::spawn_blocking(move || flushing.backing.flush(Duration::from_secs(30)))
            .await?;
    if let Err(error) = flushed {
        tracing::warn!(%error, "backing producer did not flush everything");
    }
    if fatal {
        return Err("the backing producer failed fatally".into());
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
