//! `keen-esm` as a process, between real servers: tansu as the backing cluster and moto (with the
//! tables and queue of template.yaml) under the ingest handler. Records are written straight to
//! the inbound topic with the tenant headers, as the gateway writes them.
//!
//! - valid records are stored and counted, invalid ones dead-lettered (table and queue), and
//!   SIGTERM stops the mapping with exit status 0;
//! - across a graceful restart and a SIGKILL, both mid-stream, every record is stored exactly
//!   once: as many event items and as large a count as records produced.

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use common::{COLLECTION, KEY_ID, Outbound, PARTITIONS, PROJECT, TOPIC, produce};
use keen_aws::keys_table::KeysTable;
use keen_shared::key::{KeyModel, SecretKey, StoredKey};
use keen_testkit::{MotoServer, Provisioned, TansuBroker};
use serde_json::json;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

type Item = HashMap<String, AttributeValue>;

/// The servers and the mapping's environment.
struct Stack {
    moto: MotoServer,
    broker: TansuBroker,
    aws: Provisioned,
    group: String,
}

impl Stack {
    async fn start(label: &str) -> Stack {
        let moto = MotoServer::start();
        let aws = moto.provisioned(&keen_testkit::unique_prefix(label)).await;
        let keys = KeysTable::new(aws.dynamodb.clone(), aws.name("KEYS_TABLE"));
        let salt = keys.put_project(PROJECT).await.expect("project");
        let model: KeyModel = serde_json::from_value(json!({
            "key_id": KEY_ID, "project_id": PROJECT, "name": "writer", "kind": "write",
            "permitted": [], "is_active": true, "options": {}
        }))
        .expect("model");
        let secret = SecretKey::import(&"w".repeat(40)).expect("key");
        keys.put_key(&StoredKey::derive(
            model,
            &secret,
            b"a test pepper of enough length",
            &salt,
        ))
        .await
        .expect("put key");
        let broker = TansuBroker::start();
        broker.create_topic(TOPIC, PARTITIONS as u32);
        Stack {
            moto,
            broker,
            aws,
            group: keen_testkit::unique_prefix(label)
                .trim_end_matches('-')
                .to_owned(),
        }
    }

    fn esm(&self, batch_size: usize) -> Esm {
        self.esm_of(batch_size, 4)
    }

    /// A `keen-esm` with `members` consumers in the group (`ESM_CONCURRENCY`).
    fn esm_of(&self, batch_size: usize, members: usize) -> Esm {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keen-esm"));
        // Nothing of the developer's shell (AWS profile, endpoints) leaks in.
        command.env_clear();
        for (var, name) in self.aws.names.iter() {
            command.env(var, name);
        }
        command
            .env("BACKING_BOOTSTRAP", self.broker.bootstrap())
            .env("INBOUND_TOPIC", TOPIC)
            .env("ESM_GROUP_ID", &self.group)
            .env("ESM_BATCH_SIZE", batch_size.to_string())
            .env("ESM_BATCH_WINDOW_MS", "50")
            .env("ESM_CONCURRENCY", members.to_string())
            .env("GEOIP_DATABASE", "")
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", keen_testkit::REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info");
        Esm::spawn(command)
    }

    async fn count(&self) -> u64 {
        keen_aws::counters::read_counters(
            &self.aws.dynamodb,
            self.aws.name("COUNTERS_TABLE"),
            PROJECT,
            COLLECTION,
        )
        .await
        .expect("counters")
        .iter()
        .map(|(_, n)| n)
        .sum()
    }

    /// Head items of a table (events or dead letters): not counters, not parts of split items.
    async fn heads(&self, env_var: &str) -> Vec<Item> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .aws
                .dynamodb
                .scan()
                .table_name(self.aws.name(env_var))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan");
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        items.retain(|item| {
            let pk = keen_aws::items::string_attr(item, "pk").unwrap_or_default();
            let sk = keen_aws::items::string_attr(item, "sk").unwrap_or_default();
            !pk.ends_with("#counts") && !keen_shared::storage::is_part_sort_key(sk)
        });
        items
    }

    /// Waits until the counters reach `at_least`; returns the count.
    async fn wait_for_count(&self, at_least: u64, timeout: Duration, esm: &mut Esm) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.count().await;
            if count >= at_least {
                return count;
            }
            assert!(
                esm.child.try_wait().expect("status").is_none(),
                "keen-esm exited early; log:\n{}",
                esm.log()
            );
            assert!(
                Instant::now() < deadline,
                "counted {count} of {at_least} within {timeout:?}; keen-esm log:\n{}",
                esm.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn produce(&self, records: &[Outbound]) {
        produce(&self.broker.bootstrap(), TOPIC, records);
    }
}

/// A running `keen-esm`.
struct Esm {
    child: Child,
    ready: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Esm {
    fn spawn(mut command: Command) -> Esm {
        let log = std::env::temp_dir().join(format!(
            "{}esm.log",
            keen_testkit::unique_prefix("keen-esm-test")
        ));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning keen-esm");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        Esm { child, ready, log }
    }

    /// Waits for the readiness line.
    fn wait_ready(&self) -> String {
        let line = self
            .ready
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no readiness line; log:\n{}", self.log()));
        assert!(
            line.starts_with("keen-esm consuming keen-inbound from 127.0.0.1:"),
            "{line}"
        );
        line
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The per-batch log lines.
    fn batch_lines(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["fields"]["message"] == "batch")
            .collect()
    }
}

impl Drop for Esm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn valid(range: std::ops::Range<usize>) -> Vec<Outbound> {
    range
        .map(|n| {
            Outbound::tenant(
                (n % PARTITIONS as usize) as i32,
                format!("{{\"n\":{n},\"item\":\"cup\"}}"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_records_are_stored_and_invalid_ones_dead_lettered() {
    let stack = Stack::start("esm-store").await;
    let mut records = valid(0..30);
    for n in 0..4 {
        records.push(Outbound::tenant(n, format!("not json {n}")));
    }
    stack.produce(&records);

    let mut esm = stack.esm(100);
    esm.wait_ready();
    assert_eq!(
        stack
            .wait_for_count(30, Duration::from_secs(60), &mut esm)
            .await,
        30
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let letters = loop {
        let letters = stack.heads("DEAD_LETTERS_TABLE").await;
        if letters.len() >= 4 || Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(letters.len(), 4, "{letters:?}");
    assert_eq!(stack.heads("EVENTS_TABLE").await.len(), 30);
    let queued = stack
        .aws
        .sqs
        .receive_message()
        .queue_url(stack.aws.name("DEAD_LETTER_QUEUE_URL"))
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default();
    assert_eq!(queued.len(), 4);

    let batches = esm.batch_lines();
    assert!(!batches.is_empty(), "no batch line; log:\n{}", esm.log());
    let received: u64 = batches
        .iter()
        .map(|b| b["fields"]["records"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(received, 34, "{batches:?}");
    let status = esm.terminate();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_sigkill_mid_stream_store_every_record_exactly_once() {
    const PHASE: usize = 200;
    let stack = Stack::start("esm-restart").await;
    // One member per run: when four members of a group rejoin tansu's coordinator together
    // after a graceful leave, their assignment took 5 to 38 s, and now and then never came
    // (over 180 s; seen in CI). With one member it comes in 5 s every time. What this test is
    // about (nothing lost or stored twice across stops and kills) does not depend on how many
    // members share the partitions; the other tests run four.
    let start_esm = |batch_size| stack.esm_of(batch_size, 1);

    // Phase 1: consume, then stop gracefully partway.
    stack.produce(&valid(0..PHASE));
    let mut esm = start_esm(5);
    esm.wait_ready();
    let seen = stack
        .wait_for_count(40, Duration::from_secs(60), &mut esm)
        .await;
    assert!(
        seen < PHASE as u64,
        "the stop should land mid-stream, counted {seen}"
    );
    let status = esm.terminate();
    assert!(status.success(), "exit status {status}");

    // Phase 2: records arrive while nothing consumes; restart, then SIGKILL partway.
    stack.produce(&valid(PHASE..2 * PHASE));
    let mut esm = start_esm(5);
    esm.wait_ready();
    let before_kill = stack.count().await;
    let seen = stack
        .wait_for_count(before_kill + 60, Duration::from_secs(60), &mut esm)
        .await;
    assert!(
        seen < 2 * PHASE as u64,
        "the kill should land mid-stream, counted {seen}"
    );
    esm.kill();

    // Phase 3: more records, and a last run drains everything.
    stack.produce(&valid(2 * PHASE..3 * PHASE));
    let mut esm = start_esm(5);
    esm.wait_ready();
    let total = 3 * PHASE as u64;
    stack
        .wait_for_count(total, Duration::from_secs(120), &mut esm)
        .await;
    // Anything re-delivered after the kill has been processed by now: let a stray batch land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.count().await, total, "counted twice");
    let heads = stack.heads("EVENTS_TABLE").await;
    assert_eq!(heads.len() as u64, total);
    let status = esm.terminate();
    assert!(status.success(), "exit status {status}");
    // The stop committed the last batch: a next start has nothing to re-deliver.
    let committed = common::committed(&stack.broker.bootstrap(), &stack.group, TOPIC);
    assert_eq!(
        committed.iter().sum::<i64>(),
        total as i64,
        "committed {committed:?}"
    );
}
