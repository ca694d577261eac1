//! What one invocation did, logged once as structured JSON and as CloudWatch embedded metrics.

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Counts of one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records in the event.
    pub received: u64,
    /// Events written.
    pub stored: u64,
    /// Dropped as uniqueness-token duplicates.
    pub duplicates: u64,
    /// Idempotent producers' resends already stored from another offset.
    pub resends: u64,
    /// Dead-lettered, by error code.
    pub dead_lettered: BTreeMap<String, u64>,
    /// Left for Lambda to retry (transient failures).
    pub retried: u64,
    /// Write calls retried inside the invocation (throttling, unprocessed items).
    pub write_retries: u64,
    /// Compressed body bytes written.
    pub stored_bytes: u64,
    /// Records left to the next invocation because this one's time was running out.
    pub deferred: u64,
    /// Dead letters stored or announced in their last-resort form (the whole one was refused).
    pub last_resort: u64,
    /// Dead letters refused even in their last-resort form: only the log line holds them.
    pub unrecorded: u64,
}

impl Counts {
    /// Records dead-lettered, all codes.
    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered.values().sum()
    }

    /// The CloudWatch embedded metric format line.
    pub fn embedded_metrics(&self, timestamp_ms: i64) -> Value {
        let mut line = json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "KeenInbound",
                    "Dimensions": [["Function"]],
                    "Metrics": [
                        {"Name": "Received", "Unit": "Count"},
                        {"Name": "Stored", "Unit": "Count"},
                        {"Name": "Duplicates", "Unit": "Count"},
                        {"Name": "Resends", "Unit": "Count"},
                        {"Name": "DeadLettered", "Unit": "Count"},
                        {"Name": "Retried", "Unit": "Count"},
                        {"Name": "WriteRetries", "Unit": "Count"},
                        {"Name": "StoredBytes", "Unit": "Bytes"},
                        {"Name": "Deferred", "Unit": "Count"},
                        {"Name": "LastResortDeadLetters", "Unit": "Count"},
                        {"Name": "UnrecordedDeadLetters", "Unit": "Count"}
                    ]
                }]
            },
            "Function": "ingest",
            "Received": self.received,
            "Stored": self.stored,
            "Duplicates": self.duplicates,
            "Resends": self.resends,
            "DeadLettered": self.dead_lettered_total(),
            "Retried": self.retried,
            "WriteRetries": self.write_retries,
            "StoredBytes": self.stored_bytes,
            "Deferred": self.deferred,
            "LastResortDeadLetters": self.last_resort,
            "UnrecordedDeadLetters": self.unrecorded,
        });
        if let Value::Object(map) = &mut line {
            for (code, n) in &self.dead_lettered {
                map.insert(format!("DeadLettered.{code}"), json!(n));
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_metrics_declare_every_value_they_carry() {
        let counts = Counts {
            received: 10,
            stored: 6,
            duplicates: 1,
            resends: 1,
            dead_lettered: BTreeMap::from([("InvalidEventError".to_owned(), 2)]),
            ..Counts::default()
        };
        let line = counts.embedded_metrics(1_710_000_000_000);
        let declared = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .expect("metrics");
        for metric in declared {
            let name = metric["Name"].as_str().expect("name");
            assert!(line[name].is_u64(), "{name} has a value");
        }
        assert_eq!(line["DeadLettered"], 2);
        assert_eq!(line["DeadLettered.InvalidEventError"], 2);
        assert_eq!(line["_aws"]["Timestamp"], 1_710_000_000_000i64);
    }
}
