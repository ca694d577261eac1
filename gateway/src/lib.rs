//! The gateway: a produce-only Kafka front door (architecture.md, "The gateway").
//!
//! Customers' stock producers speak the Kafka protocol to it over SASL (PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512) with username = project id and password = a key; every record they produce is
//! written to the one inbound topic of the backing cluster with the tenant headers, and
//! acknowledged only once the backing cluster acknowledged it with acks=all.

pub mod api;
pub mod auth;
pub mod backing;
pub mod config;
pub mod connection;
pub mod decode;
pub mod handlers;
pub mod idempotence;
pub mod metrics;
pub mod produce;
pub mod quota;
pub mod records;
pub mod server;
pub mod wire;

use crate::auth::{Credentials, FailureTracker};
use crate::backing::Backing;
use crate::config::Config;
use crate::idempotence::SequenceWindows;
use crate::metrics::Metrics;
use crate::quota::ProduceQuota;
use std::sync::Arc;
use tokio::sync::{Semaphore, watch};

/// The state every connection shares.
pub struct Gateway {
    pub config: Config,
    pub credentials: Credentials,
    pub backing: Backing,
    pub windows: SequenceWindows,
    pub quota: ProduceQuota,
    pub metrics: Arc<Metrics>,
    pub failures: FailureTracker,
    /// Request bytes in flight on the whole instance.
    pub inflight: Arc<Semaphore>,
    /// Decoded bytes (decompressed records and their decoded form) held by Produce requests on
    /// the whole instance, from decoding until answered.
    pub decoding: Arc<Semaphore>,
    /// Flips to `true` once, when the gateway is asked to stop.
    pub shutdown: watch::Sender<bool>,
}

impl Gateway {
    pub fn new(config: Config, credentials: Credentials, backing: Backing) -> Self {
        Gateway {
            inflight: Arc::new(Semaphore::new(config.limits.max_inflight_bytes)),
            decoding: Arc::new(Semaphore::new(config.limits.max_decoded_bytes)),
            quota: ProduceQuota::new(
                config.project_quota_bytes_per_sec,
                config.project_quota_records_per_sec,
            ),
            config,
            credentials,
            backing,
            windows: SequenceWindows::default(),
            metrics: Arc::new(Metrics::default()),
            failures: FailureTracker::default(),
            shutdown: watch::channel(false).0,
        }
    }

    /// Asks every listener and connection to stop.
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }
}

/// Milliseconds since the epoch.
pub fn clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
