//! The mapping's retry contract against a real broker (tansu), with a scripted function in place
//! of the ingest handler: a partial batch response resumes each failed partition at its failed
//! offset and the others continue; a function error or panic replays the whole batch; offsets are
//! committed exactly up to what succeeded. Checked as Lambda's contract: per partition, each
//! invocation starts where the previous answer said the partition should resume.

mod common;

use common::{Outbound, PARTITIONS, committed, produce};
use keen_ingest::MskEvent;
use keen_local::config::{Env, EsmConfig, MAX_PAYLOAD_BYTES};
use keen_local::{EventSourceMapping, Function, Invocation};
use keen_testkit::TansuBroker;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const PER_PARTITION: i64 = 12;

/// What the scripted function does with one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Answer success.
    Succeed,
    /// Report the first partition of the batch as failed at its second record.
    FailFirstPartition,
    /// Return an error.
    Error,
    /// Panic.
    Panic,
}

/// One invocation as the function saw it: (partition, offsets in order), and what it did.
#[derive(Debug, Clone)]
struct Seen {
    partitions: BTreeMap<i32, Vec<i64>>,
    /// Length of the event JSON.
    bytes: usize,
    step: Step,
    /// For `FailFirstPartition`: the partition and offset reported.
    failed_at: Option<(i32, i64)>,
}

#[derive(Default)]
struct Scripted {
    script: Mutex<VecDeque<Step>>,
    seen: Mutex<Vec<Seen>>,
}

impl Scripted {
    fn new(script: &[Step]) -> Arc<Self> {
        Arc::new(Scripted {
            script: Mutex::new(script.iter().copied().collect()),
            seen: Mutex::default(),
        })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Function for Scripted {
    async fn invoke(&self, event: String) -> Result<Invocation, String> {
        let bytes = event.len();
        let event: MskEvent = serde_json::from_str(&event).map_err(|e| e.to_string())?;
        let mut partitions: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for record in keen_ingest::decode_event(&event) {
            partitions
                .entry(record.partition)
                .or_default()
                .push(record.offset);
        }
        let step = self
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .unwrap_or(Step::Succeed);
        let failed_at = match step {
            Step::FailFirstPartition => partitions
                .iter()
                .next()
                .map(|(p, offsets)| (*p, offsets[offsets.len().min(2) - 1])),
            _ => None,
        };
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Seen {
                partitions,
                bytes,
                step,
                failed_at,
            });
        match step {
            Step::Succeed => Ok(Invocation {
                response: json!({"batchItemFailures": []}),
                counts: None,
            }),
            Step::FailFirstPartition => {
                let (partition, offset) = failed_at.ok_or("an empty batch")?;
                Ok(Invocation {
                    response: json!({"batchItemFailures": [{"itemIdentifier": {
                        "partition": format!("{}-{partition}", common::TOPIC), "offset": offset
                    }}]}),
                    counts: None,
                })
            }
            Step::Error => Err("injected function error".into()),
            Step::Panic => panic!("injected panic in the function"),
        }
    }
}

/// Runs a mapping over a fresh topic holding `PER_PARTITION` records per partition until the
/// group committed everything, then stops it; returns what the function saw.
async fn run_script(script: &[Step]) -> Vec<Seen> {
    run_script_bounded(script, MAX_PAYLOAD_BYTES).await
}

async fn run_script_bounded(script: &[Step], max_payload_bytes: usize) -> Vec<Seen> {
    let broker = TansuBroker::start();
    broker.create_topic(common::TOPIC, PARTITIONS as u32);
    let records: Vec<Outbound> = (0..PER_PARTITION)
        .flat_map(|n| (0..PARTITIONS).map(move |p| Outbound::tenant(p, format!("{{\"n\":{n}}}"))))
        .collect();
    produce(&broker.bootstrap(), common::TOPIC, &records);

    let group = keen_testkit::unique_prefix("esm-retries");
    let config = EsmConfig {
        max_payload_bytes,
        ..EsmConfig::read(&Env::from_pairs([
            ("BACKING_BOOTSTRAP", broker.bootstrap()),
            ("INBOUND_TOPIC", common::TOPIC.to_owned()),
            ("ESM_GROUP_ID", group.clone()),
            ("ESM_CONCURRENCY", "1".to_owned()),
            ("ESM_BATCH_SIZE", "10".to_owned()),
            ("ESM_BATCH_WINDOW_MS", "50".to_owned()),
        ]))
        .expect("config")
    };
    let function = Scripted::new(script);
    let mapping = EventSourceMapping::new(config, Arc::clone(&function)).expect("a mapping");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(mapping.run(shutdown));

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let bootstrap = broker.bootstrap();
        let group = group.clone();
        let offsets =
            tokio::task::spawn_blocking(move || committed(&bootstrap, &group, common::TOPIC))
                .await
                .expect("offsets");
        if offsets.iter().all(|committed| *committed == PER_PARTITION) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not everything committed: {offsets:?}; seen {:?}",
            function.seen()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.send(true).expect("the mapping listens");
    let summary = running.await.expect("run").expect("a clean stop");
    let seen = function.seen();
    assert_eq!(summary.batches, seen.len() as u64);
    seen
}

/// Lambda's resume contract, partition by partition: every invocation starts a partition where
/// the previous answer left it, delivers it contiguously, and every record is delivered.
fn assert_resumes_as_lambda(seen: &[Seen]) {
    let mut next: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    for (i, invocation) in seen.iter().enumerate() {
        for (partition, offsets) in &invocation.partitions {
            let expected: Vec<i64> =
                (next[partition]..next[partition] + offsets.len() as i64).collect();
            assert_eq!(
                offsets, &expected,
                "invocation {i} ({:?}) delivered partition {partition} out of turn; all: {seen:#?}",
                invocation.step
            );
            let first = offsets[0];
            let last = offsets[offsets.len() - 1];
            let resume = match (invocation.step, invocation.failed_at) {
                (Step::Error | Step::Panic, _) => first,
                (Step::FailFirstPartition, Some((p, at))) if p == *partition => at,
                _ => last + 1,
            };
            next.insert(*partition, resume);
        }
    }
    assert!(
        next.values().all(|n| *n == PER_PARTITION),
        "not every record was delivered and acknowledged: {next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_response_resumes_the_failed_partition_at_the_failed_offset() {
    let seen = run_script(&[
        Step::FailFirstPartition,
        Step::Succeed,
        Step::FailFirstPartition,
    ])
    .await;
    assert_resumes_as_lambda(&seen);
    let (partition, offset) = seen[0]
        .failed_at
        .expect("the first batch failed a partition");
    // The records before the failed one were committed with the batch: never delivered again.
    let before: Vec<i64> = seen
        .iter()
        .flat_map(|s| s.partitions.get(&partition).cloned().unwrap_or_default())
        .filter(|o| *o < offset)
        .collect();
    let distinct: BTreeSet<i64> = before.iter().copied().collect();
    assert_eq!(before.len(), distinct.len(), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_or_panic_replays_the_whole_batch() {
    let seen = run_script(&[Step::Error, Step::Panic, Step::Succeed, Step::Error]).await;
    assert_resumes_as_lambda(&seen);
    assert!(seen.len() >= 5, "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_closes_before_the_payload_bound_and_the_next_record_opens_the_next() {
    // About 400 bytes per record: a 2,000-byte bound holds four, well under the batch size 10.
    let seen = run_script_bounded(&[Step::FailFirstPartition], 2_000).await;
    assert_resumes_as_lambda(&seen);
    for invocation in &seen {
        assert!(invocation.bytes <= 2_000, "{invocation:?}");
        let records: usize = invocation.partitions.values().map(Vec::len).sum();
        assert!((1..10).contains(&records), "{invocation:?}");
    }
}
