//! The mapping's own settings, read from the environment. The ingest function's settings (tables,
//! queue, GeoIP) are `keen_ingest::Config::from_env`'s business and are read there.
//!
//! The backing-cluster variables are the gateway's (`BACKING_BOOTSTRAP`, `BACKING_SECURITY_PROTOCOL`,
//! `BACKING_SASL_*`, `BACKING_SSL_CA_LOCATION`), so one environment file drives both.

use std::time::Duration;

/// Lambda's largest Kafka batch size.
pub const MAX_BATCH_SIZE: usize = 10_000;
/// Lambda's largest batching window (5 minutes).
pub const MAX_BATCH_WINDOW: Duration = Duration::from_secs(300);
/// Lambda's synchronous invocation payload limit: 6 MB of event JSON.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

pub use keen_config::{BackingSettings, ConfigError, Env};

/// Everything the mapping reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsmConfig {
    pub backing: BackingSettings,
    /// `INBOUND_TOPIC` (default `keen-inbound`).
    pub topic: String,
    /// `ESM_GROUP_ID` (default `keen-local-esm`): the consumer group whose committed offsets
    /// survive restarts.
    pub group_id: String,
    /// `ESM_BATCH_SIZE` (default 100, 1 to 10,000).
    pub batch_size: usize,
    /// `ESM_BATCH_WINDOW_MS` (default 100, at most 300,000).
    pub batch_window: Duration,
    /// The invocation payload bound (6 MB, as Lambda's; not configurable there either).
    pub max_payload_bytes: usize,
    /// `ESM_CONCURRENCY` (default 4, 1 to 64): consumers in the process, each owning the
    /// partitions whose number modulo this is its own, and invoking one batch at a time — so at most one batch per partition is in
    /// flight and each partition stays in order, as with Lambda's per-partition concurrency.
    pub concurrency: usize,
}

impl EsmConfig {
    /// Reads the process environment; an empty variable counts as unset.
    pub fn from_env() -> Result<EsmConfig, ConfigError> {
        Self::read(&Env::process())
    }

    /// Reads the settings from `env` (the process environment, or a test's pairs).
    pub fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let batch_size: usize = env.number_in(
            "ESM_BATCH_SIZE",
            100,
            1..=MAX_BATCH_SIZE,
            "must be between 1 and 10000, as Lambda's BatchSize for Kafka",
        )?;
        let window = Duration::from_millis(env.number_in(
            "ESM_BATCH_WINDOW_MS",
            100,
            0..=MAX_BATCH_WINDOW.as_millis() as u64,
            "must be at most 300000 (5 minutes), as Lambda's batching window",
        )?);
        let concurrency: usize =
            env.number_in("ESM_CONCURRENCY", 4, 1..=64, "must be between 1 and 64")?;
        Ok(EsmConfig {
            backing: BackingSettings::from_env(
                env,
                "the backing Kafka cluster's bootstrap servers (host:port,…)",
            )?,
            topic: env.get_or("INBOUND_TOPIC", "keen-inbound"),
            group_id: env.get_or("ESM_GROUP_ID", "keen-local-esm"),
            batch_size,
            batch_window: window,
            max_payload_bytes: MAX_PAYLOAD_BYTES,
            concurrency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&'static str, &str)]) -> Result<EsmConfig, ConfigError> {
        EsmConfig::read(&Env::from_pairs(vars.iter().copied()))
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = read(&[("BACKING_BOOTSTRAP", "127.0.0.1:9093")]).expect("config");
        assert_eq!(config.topic, "keen-inbound");
        assert_eq!(config.group_id, "keen-local-esm");
        assert_eq!(config.batch_size, 100);
        assert_eq!(config.batch_window, Duration::from_millis(100));
        assert_eq!(config.max_payload_bytes, 6 * 1024 * 1024);
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.backing.security_protocol, None);
    }

    #[test]
    fn bootstrap_is_required_and_limits_are_lambdas() {
        assert!(matches!(
            read(&[]),
            Err(ConfigError::Missing {
                var: "BACKING_BOOTSTRAP",
                ..
            })
        ));
        for size in ["0", "10001", "many"] {
            let error =
                read(&[("BACKING_BOOTSTRAP", "b:1"), ("ESM_BATCH_SIZE", size)]).expect_err(size);
            assert!(error.to_string().contains("ESM_BATCH_SIZE"), "{error}");
        }
        assert_eq!(
            read(&[("BACKING_BOOTSTRAP", "b:1"), ("ESM_BATCH_SIZE", "10000")])
                .expect("max")
                .batch_size,
            10_000
        );
        assert!(
            read(&[
                ("BACKING_BOOTSTRAP", "b:1"),
                ("ESM_BATCH_WINDOW_MS", "300001")
            ])
            .is_err()
        );
    }

    #[test]
    fn the_password_never_reaches_debug_output() {
        let config = read(&[
            ("BACKING_BOOTSTRAP", "b:1"),
            ("BACKING_SASL_PASSWORD", "hunter2-secret"),
        ])
        .expect("config");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
