//! The harness the ingest's moto tests share: a provisioned moto server, the function's
//! configuration on it, one active writing key, and readers for what the handler wrote.

#![allow(dead_code)] // each test file uses its own share of the harness

use aws_sdk_dynamodb::types::AttributeValue;
use keen_aws::batch::WriteBatcher;
use keen_aws::dlq::DeadLetterQueue;
use keen_aws::keys_table::KeysTable;
use keen_ingest::MskEvent;
use keen_ingest::{Config, DecodedRecord, Ingest, decode_event};
use keen_shared::addon::ReferenceData;
use keen_shared::key::{KeyModel, ProjectSalt, SecretKey, StoredKey};
use keen_shared::record::{HEADER_COLLECTION, HEADER_KEY_ID, HEADER_PROJECT_ID, Header};
use keen_testkit::{MotoServer, Provisioned};
use serde_json::{Value, json};
use std::sync::Arc;

pub const PROJECT: &str = "4f1c9a3be6d2a1b07c3e5f11";
pub const KEY_ID: &str = "0123456789abcdef";
pub const PEPPER: &[u8] = b"a test pepper of enough length";

pub fn batch_file() -> Vec<DecodedRecord> {
    let path = keen_testkit::repo_root().join("events/ingest-batch.json");
    let text = std::fs::read_to_string(&path).expect("events/ingest-batch.json");
    let event: MskEvent = serde_json::from_str(&text).expect("an MSK event");
    decode_event(&event)
}

pub fn geoip() -> std::path::PathBuf {
    let path = keen_testkit::repo_root().join(".test-data/GeoLite2-City-Test.mmdb");
    assert!(
        path.exists(),
        "run scripts/setup-test-env for {}",
        path.display()
    );
    path
}

pub struct Harness {
    pub moto: MotoServer,
    pub aws: Provisioned,
    pub config: Config,
}

impl Harness {
    pub async fn start(label: &str) -> Harness {
        let moto = MotoServer::start();
        let aws = moto.provisioned(&keen_testkit::unique_prefix(label)).await;
        let geoip = geoip();
        let geoip = geoip.to_str().expect("a UTF-8 path");
        let config = Config::read(&aws.env(&[("GEOIP_DATABASE", geoip)])).expect("config");
        let harness = Harness { moto, aws, config };
        harness.put_key(true).await;
        harness
    }

    pub fn keys(&self) -> KeysTable {
        KeysTable::new(self.aws.dynamodb.clone(), self.config.keys_table.clone())
    }

    pub async fn put_key(&self, active: bool) {
        let keys = self.keys();
        let salt: ProjectSalt = keys.put_project(PROJECT).await.expect("project");
        let model: KeyModel = serde_json::from_value(json!({
            "key_id": KEY_ID, "project_id": PROJECT, "name": "writer", "kind": "write",
            "permitted": [], "is_active": active, "options": {}
        }))
        .expect("model");
        let secret = SecretKey::import(&"w".repeat(40)).expect("key");
        let _ = keys.delete_key(PROJECT, &model.key_id).await;
        keys.put_key(&StoredKey::derive(model, &secret, PEPPER, &salt))
            .await
            .expect("put key");
    }

    pub fn ingest(&self, batcher: WriteBatcher) -> Ingest {
        Ingest::new(
            self.config.clone(),
            self.aws.dynamodb.clone(),
            batcher,
            DeadLetterQueue::new(
                self.aws.sqs.clone(),
                self.config.dead_letter_queue_url.clone(),
            ),
            self.keys(),
            Arc::new(ReferenceData::new(self.config.geoip_database.clone())),
        )
        .with_clock(|| 1_710_000_100_000)
    }

    pub async fn scan(
        &self,
        table: &str,
    ) -> Vec<std::collections::HashMap<String, AttributeValue>> {
        self.aws
            .dynamodb
            .scan()
            .table_name(table)
            .send()
            .await
            .expect("scan")
            .items
            .unwrap_or_default()
    }

    pub async fn event_heads(&self) -> Vec<std::collections::HashMap<String, AttributeValue>> {
        self.scan(&self.config.tables.events)
            .await
            .into_iter()
            .filter(|i| {
                let pk = keen_aws::items::string_attr(i, "pk").unwrap_or_default();
                let sk = keen_aws::items::string_attr(i, "sk").unwrap_or_default();
                !pk.ends_with("#counts") && !keen_shared::storage::is_part_sort_key(sk)
            })
            .collect()
    }

    pub async fn count(&self, collection: &str) -> u64 {
        keen_aws::counters::read_counters(
            &self.aws.dynamodb,
            &self.config.tables.counters,
            PROJECT,
            collection,
        )
        .await
        .expect("counters")
        .iter()
        .map(|(_, n)| n)
        .sum()
    }

    pub async fn queue_messages(&self) -> Vec<aws_sdk_sqs::types::Message> {
        let mut all = Vec::new();
        for _ in 0..10 {
            let page = self
                .aws
                .sqs
                .receive_message()
                .queue_url(&self.config.dead_letter_queue_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .visibility_timeout(60)
                .send()
                .await
                .expect("receive");
            let messages = page.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            all.extend(messages);
        }
        all
    }
}

pub fn no_failures(response: &Value) {
    assert_eq!(response, &json!({"batchItemFailures": []}));
}

pub fn simple_record(offset: i64) -> DecodedRecord {
    DecodedRecord {
        topic: "keen-inbound".into(),
        partition: 5,
        offset,
        timestamp_ms: 1_710_000_000_000 + offset,
        key: None,
        value: Some(format!("{{\"n\":{offset}}}").into_bytes()),
        headers: vec![
            Header::new(HEADER_PROJECT_ID, PROJECT),
            Header::new(HEADER_COLLECTION, "clicks"),
            Header::new(HEADER_KEY_ID, KEY_ID),
        ],
    }
}

/// `len` bytes that are neither UTF-8 nor compressible, the same for the same seed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut seed = seed;
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 56) as u8 | 0x80
        })
        .collect()
}
