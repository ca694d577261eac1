//! The gateway's configuration, from the environment (README "Gateway configuration").
//!
//! Every limit has a default that is safe for one small instance; each is named after the
//! environment variable that changes it, so an error message can say exactly what to set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The largest record batch a customer may send (product.md §1, Kafka's `message.max.bytes`).
pub const MAX_BATCH_BYTES: usize = 1_048_588;

pub use keen_config::{BackingSettings, ConfigError, Env};

/// Where the gateway tells clients to connect (`host:port`), which behind a load balancer is the
/// balancer's name, not the listener's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub host: String,
    pub port: i32,
}

/// The gateway's producer towards the backing cluster.
#[derive(Debug, Clone)]
pub struct BackingConfig {
    /// Where and as whom.
    pub connection: BackingSettings,
    /// librdkafka `linger.ms`: the latency the backing producer may add to batch records. A
    /// decimal, as librdkafka takes it, but its broker thread sleeps in whole milliseconds
    /// (rounded up), so values between 0 and 1 wait about 1 ms unless other work wakes it.
    pub linger_ms: f64,
    /// librdkafka `compression.type` towards the backing cluster (`lz4`, `zstd`, `none`…).
    pub compression: String,
    /// How often the backing producer logs its queue and round-trip latencies
    /// (`BACKING_STATS_INTERVAL_MS`, librdkafka's `statistics.interval.ms`); 0, the default, never.
    pub stats_interval_ms: u64,
    /// How long a record may wait for the backing cluster's acknowledgement before its batch
    /// fails and the client is told to retry (`BACKING_MESSAGE_TIMEOUT_MS`, librdkafka's
    /// `message.timeout.ms`).
    pub message_timeout_ms: u64,
}

/// The limits that keep one connection, or one tenant, from exhausting the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request frame once authenticated (`GATEWAY_MAX_REQUEST_BYTES`).
    pub max_request_bytes: usize,
    /// Largest request frame before authentication: ApiVersions and SASL are tiny.
    pub max_unauthenticated_request_bytes: usize,
    /// Decompressed bytes one Produce request may expand to (`GATEWAY_MAX_DECOMPRESSED_BYTES`).
    pub max_decompressed_bytes: usize,
    /// Request bytes in flight on one connection (`GATEWAY_MAX_INFLIGHT_BYTES_PER_CONNECTION`).
    pub max_inflight_bytes_per_connection: usize,
    /// Request bytes in flight on the whole instance (`GATEWAY_MAX_INFLIGHT_BYTES`).
    pub max_inflight_bytes: usize,
    /// Decoded bytes of Produce requests held at once on the whole instance
    /// (`GATEWAY_MAX_DECODED_BYTES`): each request reserves `max_decompressed_bytes` to decode
    /// and keeps what it used until answered.
    pub max_decoded_bytes: usize,
    /// Open client connections (`GATEWAY_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Time a client has to finish SASL after connecting (`GATEWAY_SASL_TIMEOUT_MS`).
    pub sasl_timeout: Duration,
    /// A connection with no request for this long is closed (`GATEWAY_IDLE_TIMEOUT_MS`).
    pub idle_timeout: Duration,
    /// Open connections from one source address (`GATEWAY_MAX_CONNECTIONS_PER_SOURCE`).
    pub max_connections_per_source: usize,
    /// Time from a request's length prefix to its last byte (`GATEWAY_FRAME_TIMEOUT_MS`).
    pub frame_timeout: Duration,
    /// Array elements in one request, all arrays together: topics of a Metadata request,
    /// topics and partitions of a Produce (`GATEWAY_MAX_REQUEST_ELEMENTS`).
    pub max_request_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 8 * 1024 * 1024,
            max_unauthenticated_request_bytes: 64 * 1024,
            max_decompressed_bytes: 16 * 1024 * 1024,
            max_inflight_bytes_per_connection: 16 * 1024 * 1024,
            max_inflight_bytes: 256 * 1024 * 1024,
            max_decoded_bytes: 256 * 1024 * 1024,
            max_connections: 10_000,
            sasl_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            max_connections_per_source: 1_000,
            frame_timeout: Duration::from_secs(30),
            max_request_elements: 10_000,
        }
    }
}

/// Everything the gateway needs, read once at start.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub advertised: Advertised,
    /// PEM certificate chain and private key: TLS on the listener when both are set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Expect a PROXY protocol v2 header on every connection (behind an NLB).
    pub proxy_protocol: bool,
    pub metrics_listen: Option<SocketAddr>,
    pub backing: BackingConfig,
    pub inbound_topic: String,
    /// Partitions every customer topic appears to have.
    pub partitions: i32,
    pub keys_table: String,
    /// The node id this gateway announces; every instance announces the same one, since every
    /// instance advertises the same (load balancer) address.
    pub node_id: i32,
    pub limits: Limits,
    /// Decompressed produce bytes per second per project and task; 0 = unlimited
    /// (`GATEWAY_PROJECT_QUOTA_BYTES_PER_SEC`).
    pub project_quota_bytes_per_sec: u64,
    /// Produced records per second per project and task; 0 = unlimited
    /// (`GATEWAY_PROJECT_QUOTA_RECORDS_PER_SEC`).
    pub project_quota_records_per_sec: u64,
    /// SASL session lifetime announced to clients (KIP-368), and enforced.
    pub session_lifetime: Duration,
    /// How long in-flight produces may take to finish on shutdown.
    pub shutdown_grace: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("advertised", &self.advertised)
            .field("tls", &self.tls)
            .field("proxy_protocol", &self.proxy_protocol)
            .field("metrics_listen", &self.metrics_listen)
            .field("backing", &self.backing)
            .field("inbound_topic", &self.inbound_topic)
            .field("partitions", &self.partitions)
            .field("keys_table", &self.keys_table)
            .field("limits", &self.limits)
            .field(
                "project_quota_bytes_per_sec",
                &self.project_quota_bytes_per_sec,
            )
            .field(
                "project_quota_records_per_sec",
                &self.project_quota_records_per_sec,
            )
            .field("session_lifetime", &self.session_lifetime)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::read(&Env::process())
    }

    /// Reads the configuration from `env` (the process environment, or a test's pairs).
    pub fn read(env: &Env<'_>) -> Result<Config, ConfigError> {
        let get = |var: &'static str| env.get(var);
        let listen: SocketAddr = env
            .parsed("GATEWAY_LISTEN", "an address such as 0.0.0.0:9092")?
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
        let advertised = match get("GATEWAY_ADVERTISED") {
            Some(value) => parse_advertised(&value)?,
            None => Advertised {
                host: listen.ip().to_string(),
                port: i32::from(listen.port()),
            },
        };
        let tls = match (get("GATEWAY_TLS_CERT"), get("GATEWAY_TLS_KEY")) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    var: "GATEWAY_TLS_KEY",
                    what: "GATEWAY_TLS_CERT is set: give the PEM private key too",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    var: "GATEWAY_TLS_CERT",
                    what: "GATEWAY_TLS_KEY is set: give the PEM certificate chain too",
                });
            }
        };
        let metrics_listen =
            env.parsed("GATEWAY_METRICS_LISTEN", "an address such as 0.0.0.0:9404")?;
        let defaults = Limits::default();
        let limits = Limits {
            max_request_bytes: env
                .number("GATEWAY_MAX_REQUEST_BYTES", defaults.max_request_bytes)?,
            max_unauthenticated_request_bytes: defaults.max_unauthenticated_request_bytes,
            max_decompressed_bytes: env.number(
                "GATEWAY_MAX_DECOMPRESSED_BYTES",
                defaults.max_decompressed_bytes,
            )?,
            max_inflight_bytes_per_connection: env.number(
                "GATEWAY_MAX_INFLIGHT_BYTES_PER_CONNECTION",
                defaults.max_inflight_bytes_per_connection,
            )?,
            max_inflight_bytes: env
                .number("GATEWAY_MAX_INFLIGHT_BYTES", defaults.max_inflight_bytes)?,
            max_decoded_bytes: env
                .number("GATEWAY_MAX_DECODED_BYTES", defaults.max_decoded_bytes)?,
            max_connections: env.number("GATEWAY_MAX_CONNECTIONS", defaults.max_connections)?,
            sasl_timeout: Duration::from_millis(env.number(
                "GATEWAY_SASL_TIMEOUT_MS",
                defaults.sasl_timeout.as_millis() as u64,
            )?),
            idle_timeout: Duration::from_millis(env.number(
                "GATEWAY_IDLE_TIMEOUT_MS",
                defaults.idle_timeout.as_millis() as u64,
            )?),
            max_connections_per_source: env.number(
                "GATEWAY_MAX_CONNECTIONS_PER_SOURCE",
                defaults.max_connections_per_source,
            )?,
            frame_timeout: Duration::from_millis(env.number(
                "GATEWAY_FRAME_TIMEOUT_MS",
                defaults.frame_timeout.as_millis() as u64,
            )?),
            max_request_elements: env.number(
                "GATEWAY_MAX_REQUEST_ELEMENTS",
                defaults.max_request_elements,
            )?,
        };
        if limits.max_request_bytes < MAX_BATCH_BYTES + 1024 {
            return Err(ConfigError::Invalid {
                var: "GATEWAY_MAX_REQUEST_BYTES",
                value: limits.max_request_bytes.to_string(),
                what: "must leave room for one maximal batch (1,048,588 bytes) plus the request around it",
            });
        }
        if limits.max_inflight_bytes_per_connection < limits.max_request_bytes
            || limits.max_inflight_bytes < limits.max_inflight_bytes_per_connection
        {
            return Err(ConfigError::Invalid {
                var: "GATEWAY_MAX_INFLIGHT_BYTES_PER_CONNECTION",
                value: limits.max_inflight_bytes_per_connection.to_string(),
                what: "must be at least GATEWAY_MAX_REQUEST_BYTES and at most GATEWAY_MAX_INFLIGHT_BYTES",
            });
        }
        if limits.max_decoded_bytes < limits.max_decompressed_bytes
            || u32::try_from(limits.max_decompressed_bytes).is_err()
        {
            return Err(ConfigError::Invalid {
                var: "GATEWAY_MAX_DECODED_BYTES",
                value: limits.max_decoded_bytes.to_string(),
                what: "must be at least GATEWAY_MAX_DECOMPRESSED_BYTES (itself under 4 GiB)",
            });
        }
        let partitions: i32 = env.number("GATEWAY_PARTITIONS", 8)?;
        if !(1..=1024).contains(&partitions) {
            return Err(ConfigError::Invalid {
                var: "GATEWAY_PARTITIONS",
                value: partitions.to_string(),
                what: "must be between 1 and 1024",
            });
        }
        Ok(Config {
            listen,
            advertised,
            tls,
            proxy_protocol: env.flag("GATEWAY_PROXY_PROTOCOL")?,
            metrics_listen,
            backing: BackingConfig {
                connection: BackingSettings::from_env(
                    env,
                    "the backing Kafka cluster's bootstrap servers",
                )?,
                linger_ms: milliseconds(env, "BACKING_LINGER_MS", 1.0)?,
                compression: env.get_or("BACKING_COMPRESSION", "lz4"),
                stats_interval_ms: env.number("BACKING_STATS_INTERVAL_MS", 0)?,
                message_timeout_ms: env.number("BACKING_MESSAGE_TIMEOUT_MS", 30_000)?,
            },
            inbound_topic: env.get_or("INBOUND_TOPIC", "keen-inbound"),
            partitions,
            keys_table: env.required(
                "KEYS_TABLE",
                "the Keys table name (keenctl provision prints it)",
            )?,
            node_id: env.number("GATEWAY_NODE_ID", 1)?,
            limits,
            project_quota_bytes_per_sec: env.number(
                "GATEWAY_PROJECT_QUOTA_BYTES_PER_SEC",
                crate::quota::DEFAULT_BYTES_PER_SEC,
            )?,
            project_quota_records_per_sec: env.number(
                "GATEWAY_PROJECT_QUOTA_RECORDS_PER_SEC",
                crate::quota::DEFAULT_RECORDS_PER_SEC,
            )?,
            session_lifetime: Duration::from_millis(
                env.number("GATEWAY_SESSION_LIFETIME_MS", 25_000)?,
            ),
            shutdown_grace: Duration::from_millis(env.number("GATEWAY_SHUTDOWN_GRACE_MS", 30_000)?),
        })
    }
}

/// A duration in milliseconds that may have a fraction (librdkafka's float properties).
fn milliseconds(env: &Env<'_>, var: &'static str, default: f64) -> Result<f64, ConfigError> {
    let Some(value) = env.get(var) else {
        return Ok(default);
    };
    match value.parse::<f64>() {
        Ok(ms) if (0.0..=900_000.0).contains(&ms) => Ok(ms),
        _ => Err(ConfigError::Invalid {
            var,
            value,
            what: "milliseconds from 0 to 900000 (fractions allowed, e.g. 0.5)",
        }),
    }
}

fn parse_advertised(value: &str) -> Result<Advertised, ConfigError> {
    let invalid = || ConfigError::Invalid {
        var: "GATEWAY_ADVERTISED",
        value: value.to_owned(),
        what: "host:port, the address clients should connect to",
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(invalid());
    }
    Ok(Advertised {
        host: host.to_owned(),
        port: i32::from(port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::read(&Env::from_pairs(vars.iter().copied()))
    }

    const REQUIRED: [(&str, &str); 2] =
        [("BACKING_BOOTSTRAP", "127.0.0.1:1"), ("KEYS_TABLE", "keys")];

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = config(&REQUIRED).expect("valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.advertised.host, "127.0.0.1");
        assert_eq!(config.advertised.port, 9092);
        assert_eq!(config.inbound_topic, "keen-inbound");
        assert_eq!(config.partitions, 8);
        assert_eq!(config.limits, Limits::default());
        assert!(!config.proxy_protocol);
        assert!(config.tls.is_none());
        assert_eq!(config.project_quota_bytes_per_sec, 16 * 1024 * 1024);
        assert_eq!(config.project_quota_records_per_sec, 50_000);
        assert_eq!(config.limits.max_connections_per_source, 1_000);
        assert_eq!(config.limits.max_request_elements, 10_000);
        assert_eq!(config.limits.max_decoded_bytes, 256 * 1024 * 1024);
        let mut vars = REQUIRED.to_vec();
        vars.push(("GATEWAY_MAX_DECODED_BYTES", "1048576"));
        let error = self::config(&vars).expect_err("under one request's budget");
        assert!(
            error.to_string().contains("GATEWAY_MAX_DECODED_BYTES"),
            "{error}"
        );
    }

    #[test]
    fn missing_and_invalid_values_name_the_variable() {
        let error = config(&[("KEYS_TABLE", "k")]).expect_err("no bootstrap");
        assert!(error.to_string().contains("BACKING_BOOTSTRAP"), "{error}");
        let mut vars = REQUIRED.to_vec();
        vars.push(("GATEWAY_ADVERTISED", "no-port"));
        let error = config(&vars).expect_err("bad advertised");
        assert!(error.to_string().contains("GATEWAY_ADVERTISED"), "{error}");
        let mut vars = REQUIRED.to_vec();
        vars.push(("GATEWAY_TLS_CERT", "/c.pem"));
        let error = config(&vars).expect_err("cert without key");
        assert!(error.to_string().contains("GATEWAY_TLS_KEY"), "{error}");
        let mut vars = REQUIRED.to_vec();
        vars.push(("GATEWAY_MAX_REQUEST_BYTES", "1000"));
        let error = config(&vars).expect_err("too small");
        assert!(
            error.to_string().contains("GATEWAY_MAX_REQUEST_BYTES"),
            "{error}"
        );
    }

    #[test]
    fn backing_statistics_are_off_unless_asked_for() {
        assert_eq!(
            config(&REQUIRED).expect("valid").backing.stats_interval_ms,
            0
        );
        let mut vars = REQUIRED.to_vec();
        vars.push(("BACKING_STATS_INTERVAL_MS", "1000"));
        assert_eq!(
            config(&vars).expect("valid").backing.stats_interval_ms,
            1000
        );
        vars.push(("BACKING_STATS_INTERVAL_MS", "often"));
        let error = config(&vars).expect_err("not a number");
        assert!(
            error.to_string().contains("BACKING_STATS_INTERVAL_MS"),
            "{error}"
        );
    }

    #[test]
    fn linger_takes_fractions_of_a_millisecond() {
        assert_eq!(config(&REQUIRED).expect("valid").backing.linger_ms, 1.0);
        for (value, expected) in [("0", Some(0.0)), ("0.25", Some(0.25)), ("5", Some(5.0))] {
            let mut vars = REQUIRED.to_vec();
            vars.push(("BACKING_LINGER_MS", value));
            assert_eq!(config(&vars).ok().map(|c| c.backing.linger_ms), expected);
        }
        for value in ["-1", "soon", "NaN", "1000000"] {
            let mut vars = REQUIRED.to_vec();
            vars.push(("BACKING_LINGER_MS", value));
            let error = config(&vars).expect_err(value);
            assert!(error.to_string().contains("BACKING_LINGER_MS"), "{error}");
        }
    }

    #[test]
    fn advertised_address_is_parsed() {
        let mut vars = REQUIRED.to_vec();
        vars.push(("GATEWAY_ADVERTISED", "kafka.example.com:9094"));
        vars.push(("GATEWAY_PROXY_PROTOCOL", "true"));
        let config = config(&vars).expect("valid");
        assert_eq!(
            config.advertised,
            Advertised {
                host: "kafka.example.com".into(),
                port: 9094
            }
        );
        assert!(config.proxy_protocol);
    }
}
