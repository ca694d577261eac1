//! What to do with each partition of a batch once the function answered: commit, or commit the
//! successful prefix and rewind to the first failed offset, as Lambda's MSK poller resumes a
//! partition after a partial batch response.
//!
//! Rules (Lambda's, with the local mapping's choices where Lambda is silent):
//! - `null`, `{}`, or an empty or null `batchItemFailures` is complete success.
//! - A failure `{"itemIdentifier":{"partition":"<topic>-<partition>","offset":N}}` fails its
//!   partition from N: offsets before N are committed, N and after are read again. Several
//!   failures on one partition fail it from the lowest.
//! - A failure naming a partition of the batch but an offset it does not hold fails that whole
//!   partition from its first offset: nothing of it is known to have succeeded.
//! - Anything else (not an object, an entry without a partition string and an integer offset, a
//!   partition not in the batch) is a malformed response: the whole batch is retried.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One partition of the inbound topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    /// `"<topic>-<partition>"`, the event's record key and the failure's identifier.
    pub fn event_key(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

/// The offsets a batch held, per partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOffsets(pub BTreeMap<TopicPartition, BTreeSet<i64>>);

impl BatchOffsets {
    pub fn insert(&mut self, topic: &str, partition: i32, offset: i64) {
        self.0
            .entry(TopicPartition {
                topic: topic.to_owned(),
                partition,
            })
            .or_default()
            .insert(offset);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The decision for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    pub partition: TopicPartition,
    /// The offset to commit (the next one to read), when some prefix of the batch succeeded.
    pub commit: Option<i64>,
    /// Where to read again from, when the partition failed.
    pub rewind: Option<i64>,
}

/// The decision for a whole batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub partitions: Vec<PartitionPlan>,
    /// Why the whole batch is retried, when the response could not be used.
    pub malformed: Option<String>,
}

impl Plan {
    /// Every partition read again from its first offset (a failed or malformed invocation).
    pub fn retry_all(batch: &BatchOffsets, reason: Option<String>) -> Plan {
        Plan {
            partitions: batch
                .0
                .iter()
                .filter_map(|(tp, offsets)| {
                    Some(PartitionPlan {
                        partition: tp.clone(),
                        commit: None,
                        rewind: Some(*offsets.first()?),
                    })
                })
                .collect(),
            malformed: reason,
        }
    }

    /// Partitions that are read again.
    pub fn rewound(&self) -> impl Iterator<Item = &PartitionPlan> {
        self.partitions.iter().filter(|p| p.rewind.is_some())
    }
}

/// Turns the function's response for `batch` into per-partition commits and rewinds.
pub fn plan(batch: &BatchOffsets, response: &Value) -> Plan {
    match failed_from(batch, response) {
        Err(reason) => Plan::retry_all(batch, Some(reason)),
        Ok(failed) => Plan {
            partitions: batch
                .0
                .iter()
                .filter_map(|(tp, offsets)| {
                    let first = *offsets.first()?;
                    let last = *offsets.last()?;
                    Some(match failed.get(tp) {
                        None => PartitionPlan {
                            partition: tp.clone(),
                            commit: Some(last + 1),
                            rewind: None,
                        },
                        Some(&from) => PartitionPlan {
                            partition: tp.clone(),
                            commit: (from > first).then_some(from),
                            rewind: Some(from),
                        },
                    })
                })
                .collect(),
            malformed: None,
        },
    }
}

/// The first failed offset of each failed partition, or why the response is unusable.
fn failed_from(
    batch: &BatchOffsets,
    response: &Value,
) -> Result<BTreeMap<TopicPartition, i64>, String> {
    let failures = match response {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Object(map) => match map.get("batchItemFailures") {
            None | Some(Value::Null) => return Ok(BTreeMap::new()),
            Some(Value::Array(list)) => list,
            Some(other) => return Err(format!("batchItemFailures is not a list: {other}")),
        },
        other => return Err(format!("the response is not an object: {other}")),
    };
    let by_key: BTreeMap<String, (&TopicPartition, &BTreeSet<i64>)> = batch
        .0
        .iter()
        .map(|(tp, offsets)| (tp.event_key(), (tp, offsets)))
        .collect();
    let mut failed: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for failure in failures {
        let identifier = failure.get("itemIdentifier");
        let key = identifier
            .and_then(|i| i.get("partition"))
            .and_then(Value::as_str);
        let offset = identifier
            .and_then(|i| i.get("offset"))
            .and_then(Value::as_i64);
        let (Some(key), Some(offset)) = (key, offset) else {
            return Err(format!(
                "a failure is not {{\"itemIdentifier\":{{\"partition\":\"<topic>-<partition>\",\"offset\":N}}}}: {failure}"
            ));
        };
        let Some((tp, offsets)) = by_key.get(key) else {
            return Err(format!(
                "a failure names partition {key:?}, not in the batch"
            ));
        };
        // An offset the batch did not hold says nothing about which records succeeded.
        let from = if offsets.contains(&offset) {
            offset
        } else {
            offsets.first().copied().unwrap_or(offset)
        };
        failed
            .entry((*tp).clone())
            .and_modify(|f| *f = (*f).min(from))
            .or_insert(from);
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch() -> BatchOffsets {
        let mut batch = BatchOffsets::default();
        for offset in 10..15 {
            batch.insert("keen-inbound", 0, offset);
        }
        for offset in [20, 21, 23] {
            batch.insert("keen-inbound", 1, offset);
        }
        batch.insert("keen-inbound", 2, 7);
        batch
    }

    fn decisions(plan: &Plan) -> Vec<(i32, Option<i64>, Option<i64>)> {
        plan.partitions
            .iter()
            .map(|p| (p.partition.partition, p.commit, p.rewind))
            .collect()
    }

    fn failure(partition: &str, offset: Value) -> Value {
        json!({"itemIdentifier": {"partition": partition, "offset": offset}})
    }

    #[test]
    fn success_commits_every_partition_past_its_last_offset() {
        for response in [
            json!({"batchItemFailures": []}),
            json!({"batchItemFailures": null}),
            json!({}),
            Value::Null,
        ] {
            let plan = plan(&batch(), &response);
            assert_eq!(plan.malformed, None);
            assert_eq!(
                decisions(&plan),
                [(0, Some(15), None), (1, Some(24), None), (2, Some(8), None)],
                "{response}"
            );
        }
    }

    #[test]
    fn a_failure_on_one_partition_leaves_the_others_committed() {
        let response = json!({"batchItemFailures": [failure("keen-inbound-0", json!(12))]});
        let plan = plan(&batch(), &response);
        assert_eq!(
            decisions(&plan),
            [
                (0, Some(12), Some(12)),
                (1, Some(24), None),
                (2, Some(8), None)
            ]
        );
        assert_eq!(plan.rewound().count(), 1);
    }

    #[test]
    fn a_failure_at_the_first_offset_commits_nothing_of_that_partition() {
        let response = json!({"batchItemFailures": [
            failure("keen-inbound-1", json!(21)),
            failure("keen-inbound-1", json!(20)),
            failure("keen-inbound-2", json!(7)),
        ]});
        assert_eq!(
            decisions(&plan(&batch(), &response)),
            [(0, Some(15), None), (1, None, Some(20)), (2, None, Some(7))]
        );
    }

    #[test]
    fn an_unknown_offset_fails_its_whole_partition_from_the_first_offset() {
        // 22 is a gap (a transaction marker, say), 99 beyond the batch.
        for offset in [22, 99, 3] {
            let response = json!({"batchItemFailures": [failure("keen-inbound-1", json!(offset))]});
            let plan = plan(&batch(), &response);
            assert_eq!(plan.malformed, None);
            assert_eq!(
                decisions(&plan),
                [(0, Some(15), None), (1, None, Some(20)), (2, Some(8), None)],
                "offset {offset}"
            );
        }
    }

    #[test]
    fn a_malformed_response_retries_the_whole_batch() {
        for response in [
            json!("ok"),
            json!([1]),
            json!({"batchItemFailures": "keen-inbound-0"}),
            json!({"batchItemFailures": [{"itemIdentifier": "keen-inbound-0"}]}),
            json!({"batchItemFailures": [failure("keen-inbound-0", json!("12"))]}),
            json!({"batchItemFailures": [{"partition": "keen-inbound-0", "offset": 12}]}),
            json!({"batchItemFailures": [failure("keen-inbound-9", json!(1))]}),
            json!({"batchItemFailures": [failure("other-0", json!(10))]}),
        ] {
            let plan = plan(&batch(), &response);
            assert!(plan.malformed.is_some(), "{response}");
            assert_eq!(
                decisions(&plan),
                [(0, None, Some(10)), (1, None, Some(20)), (2, None, Some(7))],
                "{response}"
            );
        }
    }

    #[test]
    fn a_topic_with_dashes_is_matched_by_its_full_key() {
        let mut batch = BatchOffsets::default();
        batch.insert("keen-inbound-1", 0, 5);
        batch.insert("keen-inbound", 10, 5);
        let response = json!({"batchItemFailures": [failure("keen-inbound-10", json!(5))]});
        let plan = plan(&batch, &response);
        let by_topic: Vec<(&str, i32, Option<i64>)> = plan
            .partitions
            .iter()
            .map(|p| (p.partition.topic.as_str(), p.partition.partition, p.rewind))
            .collect();
        assert_eq!(
            by_topic,
            [("keen-inbound", 10, Some(5)), ("keen-inbound-1", 0, None)]
        );
    }
}
