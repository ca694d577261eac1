//! What the function reads from its environment.

use keen_aws::items::Tables;
use std::time::Duration;

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Table names.
    pub tables: Tables,
    /// Keys table name.
    pub keys_table: String,
    /// SQS dead letter queue URL.
    pub dead_letter_queue_url: String,
    /// MaxMind City database path.
    pub geoip_database: Option<std::path::PathBuf>,
    /// Shards per (project, collection, day).
    pub shards: u16,
    /// Time kept back from the invocation's deadline for the writes after judging
    /// (`INGEST_TIME_RESERVE_MS`, default [`DEFAULT_TIME_RESERVE`]).
    pub time_reserve: Duration,
}

/// Time kept back for the writes: half the template's 120 s timeout; the writes of a batch take
/// well under a second, and even a throttled table spends at most about 15 s per write step
/// (eight attempts, waits up to 2 s).
pub const DEFAULT_TIME_RESERVE: Duration = Duration::from_secs(60);

pub use keen_config::{ConfigError, Env};

impl Config {
    /// Reads the process environment ([`Config::read`]).
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::read(&Env::process())
    }

    /// Reads `EVENTS_TABLE`, `COUNTERS_TABLE`, `COLLECTIONS_TABLE`, `DEDUPE_TABLE`,
    /// `DEAD_LETTERS_TABLE`, `KEYS_TABLE`, `DEAD_LETTER_QUEUE_URL`, `GEOIP_DATABASE` (empty:
    /// none, as a template parameter cannot be left out), `EVENT_SHARDS` and
    /// `INGEST_TIME_RESERVE_MS` from `env`; a malformed value is an error, never a default.
    pub fn read(env: &Env<'_>) -> Result<Config, ConfigError> {
        Ok(Config {
            tables: Tables::read(env)?,
            keys_table: env.required("KEYS_TABLE", "the Keys table's name")?,
            dead_letter_queue_url: env
                .required("DEAD_LETTER_QUEUE_URL", "the SQS dead letter queue's URL")?,
            geoip_database: env.get("GEOIP_DATABASE").map(Into::into),
            shards: keen_aws::items::shards(env)?,
            time_reserve: env.millis("INGEST_TIME_RESERVE_MS", DEFAULT_TIME_RESERVE)?,
        })
    }
}
