//! Measures the ingest function (issue 3's figures), printing them:
//! - CPU time per event excluding I/O: MSK event JSON → records → core → items, single thread;
//! - peak memory (VmHWM) of one 6 MB invocation of about 10,000 events, all reference data
//!   loaded, handled end to end against a moto server;
//! - stored bytes (DynamoDB item size) of a typical 1 KB event.
//!
//! Run with `scripts/measure-ingest` (release build).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keen_aws::batch::WriteBatcher;
use keen_aws::dlq::DeadLetterQueue;
use keen_aws::events::EventFacts;
use keen_aws::items::Tables;
use keen_aws::keys_table::KeysTable;
use keen_ingest::MskEvent;
use keen_ingest::{Config, Ingest, decode_event};
use keen_shared::Outcome;
use keen_shared::addon::ReferenceData;
use keen_shared::key::{KeyModel, SecretKey, StoredKey};
use keen_shared::storage::EventLayout;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

const PROJECT: &str = "4f1c9a3be6d2a1b07c3e5f11";
const KEY_ID: &str = "0123456789abcdef";

fn main() {
    // Peak memory is a process-wide high-water mark: measure it in a process of its own that
    // does nothing but load the reference data and handle one invocation, as Lambda would.
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, path, events] = args.as_slice()
        && flag == "--memory"
    {
        let payload = std::fs::read(path).expect("the invocation file");
        return invocation_memory(payload, events.parse().unwrap_or(0));
    }
    let root = keen_testkit::repo_root();
    let full = root.join(".test-data/GeoLite2-City.mmdb");
    let geoip = if full.exists() {
        full
    } else {
        root.join(".test-data/GeoLite2-City-Test.mmdb")
    };
    let data = Arc::new(ReferenceData::new(Some(geoip.clone())));
    data.warm_up().expect("reference data");

    let (payload, events) = msk_event(6 * 1024 * 1024, &typical_event());
    println!(
        "== invocation: {} events, {:.2} MB of MSK event JSON, GeoIP {}",
        events,
        payload.len() as f64 / 1e6,
        geoip.display()
    );

    let key = key_model();
    let layout = EventLayout::default();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let cpu = cpu_seconds();
        let started = Instant::now();
        let event: MskEvent = serde_json::from_slice(&payload).expect("MSK event");
        let records = decode_event(&event);
        let mut items = 0usize;
        for record in &records {
            if let Outcome::Stored(stored) =
                keen_shared::process(&record.as_inbound(), Some(&key), &data)
            {
                let source = record.source();
                let facts = EventFacts {
                    project_id: &stored.project_id,
                    collection: &stored.collection,
                    keen_id: &stored.keen_id,
                    timestamp_ms: stored.timestamp_ms,
                    json: &stored.json,
                    source: &source,
                };
                items += keen_aws::events::event_items(&facts, &layout).parts.len() + 1;
            }
        }
        assert_eq!(items, events);
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        best = best.min(wall);
        println!(
            "   pass: wall {:.1} ms, process CPU {:.1} ms",
            wall * 1e3,
            cpu * 1e3
        );
    }
    println!(
        "CPU per event, excluding I/O (best pass, one thread): {:.1} µs",
        best * 1e6 / events as f64
    );

    // Stored bytes of a typical ~1 KB event.
    let typical = typical_event();
    let record = record_json(0, &typical);
    let one: MskEvent = serde_json::from_value(
        json!({"eventSource": "aws:kafka", "records": {"keen-inbound-0": [record]}}),
    )
    .expect("event");
    let decoded = decode_event(&one);
    let Outcome::Stored(stored) = keen_shared::process(&decoded[0].as_inbound(), Some(&key), &data)
    else {
        panic!("typical event rejected")
    };
    let source = decoded[0].source();
    let facts = EventFacts {
        project_id: &stored.project_id,
        collection: &stored.collection,
        keen_id: &stored.keen_id,
        timestamp_ms: stored.timestamp_ms,
        json: &stored.json,
        source: &source,
    };
    let items = keen_aws::events::event_items(&facts, &layout);
    let size = keen_aws::items::item_size(&items.head);
    println!(
        "typical event: {} bytes produced, {} bytes stored as JSON, body {} bytes compressed, item {} bytes = {} write unit(s) (target <= 1 KB)",
        typical.len(),
        stored.json.len(),
        items.stored_bytes,
        size,
        size.div_ceil(1024)
    );

    // About 10,000 smaller events fill the other 6 MB invocation, built here and handed over as
    // a file so that building it does not count towards the measured process's peak.
    let (payload, events) = msk_event(6 * 1024 * 1024, &small_event());
    let file = std::env::temp_dir().join(format!("keen-measure-{}.json", std::process::id()));
    std::fs::write(&file, &payload).expect("temp file");
    let exe = std::env::current_exe().expect("own path");
    let status = std::process::Command::new(exe)
        .arg("--memory")
        .arg(&file)
        .arg(events.to_string())
        .status()
        .expect("memory run");
    let _ = std::fs::remove_file(&file);
    assert!(status.success(), "the memory run failed");
}

fn geoip_database() -> std::path::PathBuf {
    let root = keen_testkit::repo_root();
    let full = root.join(".test-data/GeoLite2-City.mmdb");
    if full.exists() {
        full
    } else {
        root.join(".test-data/GeoLite2-City-Test.mmdb")
    }
}

fn invocation_memory(payload: Vec<u8>, events: usize) {
    let geoip = geoip_database();
    let data = Arc::new(ReferenceData::new(Some(geoip.clone())));
    data.warm_up().expect("reference data");
    let key = key_model();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let moto = keen_testkit::MotoServer::start();
        let aws = moto.provisioned("measure-").await;
        let keys = KeysTable::new(aws.dynamodb.clone(), aws.name("KEYS_TABLE"));
        let salt = keys.put_project(PROJECT).await.expect("project");
        let secret = SecretKey::import(&"m".repeat(40)).expect("key");
        keys.put_key(&StoredKey::derive(key.clone(), &secret, b"a pepper of enough length", &salt)).await.expect("key");
        let config = Config {
            tables: Tables {
                events: aws.name("EVENTS_TABLE").to_owned(),
                counters: aws.name("COUNTERS_TABLE").to_owned(),
                collections: aws.name("COLLECTIONS_TABLE").to_owned(),
                dedupe: aws.name("DEDUPE_TABLE").to_owned(),
                dead_letters: aws.name("DEAD_LETTERS_TABLE").to_owned(),
            },
            keys_table: aws.name("KEYS_TABLE").to_owned(),
            dead_letter_queue_url: aws.name("DEAD_LETTER_QUEUE_URL").to_owned(),
            geoip_database: Some(geoip),
            shards: 16,
            time_reserve: keen_ingest::DEFAULT_TIME_RESERVE,
        };
        let ingest = Ingest::new(
            config.clone(),
            aws.dynamodb.clone(),
            WriteBatcher::new(aws.dynamodb.clone()),
            DeadLetterQueue::new(aws.sqs.clone(), config.dead_letter_queue_url.clone()),
            keys,
            data,
        );
        let before = vm_hwm_kb();
        let started = Instant::now();
        let event: MskEvent = serde_json::from_slice(&payload).expect("MSK event");
        let (response, counts) = ingest.handle(decode_event(&event)).await;
        println!(
            "whole invocation of {events} events against moto: {:.1} s, stored {}, response {response}",
            started.elapsed().as_secs_f64(),
            counts.stored
        );
        println!("peak memory (VmHWM): {:.1} MB with reference data loaded and the event built, {:.1} MB after the invocation (target <= 256 MB)", before as f64 / 1024.0, vm_hwm_kb() as f64 / 1024.0);
    });
}

fn key_model() -> KeyModel {
    serde_json::from_value(json!({"key_id": KEY_ID, "project_id": PROJECT, "name": "measure", "kind": "write", "permitted": [], "is_active": true, "options": {}})).expect("model")
}

/// A typical web event: about 1 KB once enriched.
fn typical_event() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "item": "golden widget", "price": 1999, "currency": "EUR", "quantity": 3,
        "customer": {"id": "c-8841203", "tier": "gold"},
        "page_url": "https://shop.example.com/products/golden-widget?utm_source=newsletter",
        "referrer": "https://www.google.com/search?q=golden+widget",
        "ua": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "ip": "81.2.69.142",
        "keen": {"addons": [
            {"name": "keen:ua_parser", "input": {"ua_string": "ua"}, "output": "tech"},
            {"name": "keen:ip_to_geo", "input": {"ip": "ip"}, "output": "geo"},
            {"name": "keen:url_parser", "input": {"url": "page_url"}, "output": "parsed_page_url"}
        ]}
    }))
    .expect("json")
}

/// A small event (about 230 bytes) with two add-ons.
fn small_event() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "item": "widget", "price": 1999, "ip": "81.2.69.142",
        "page_url": "https://shop.example.com/p/1?utm_source=news",
        "keen": {"addons": [
            {"name": "keen:ip_to_geo", "input": {"ip": "ip"}, "output": "geo"},
            {"name": "keen:url_parser", "input": {"url": "page_url"}, "output": "page"}
        ]}
    }))
    .expect("json")
}

fn record_json(offset: usize, value: &[u8]) -> Value {
    let header = |name: &str, value: &str| json!({ name: value.bytes().map(|b| b as i8).collect::<Vec<i8>>() });
    json!({
        "topic": "keen-inbound", "partition": offset % 8, "offset": offset, "timestamp": 1_710_000_000_000i64 + offset as i64,
        "timestampType": "CREATE_TIME", "value": BASE64.encode(value),
        "headers": [
            header("keen-project-id", PROJECT), header("keen-collection", "purchases"), header("keen-key-id", KEY_ID),
        ]
    })
}

/// An MSK event of at most `limit` bytes of JSON, as full as it gets.
fn msk_event(limit: usize, value: &[u8]) -> (Vec<u8>, usize) {
    let mut partitions: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut bytes = 200; // the envelope
    let mut count = 0;
    loop {
        let record = record_json(count, value);
        bytes += serde_json::to_vec(&record).expect("json").len() + 1;
        if bytes > limit {
            break;
        }
        let key = format!("keen-inbound-{}", count % 8);
        match partitions.get_mut(&key) {
            Some(Value::Array(list)) => list.push(record),
            _ => {
                partitions.insert(key, Value::Array(vec![record]));
            }
        }
        count += 1;
    }
    let payload = serde_json::to_vec(&json!({"eventSource": "aws:kafka", "records": partitions}))
        .expect("json");
    assert!(payload.len() <= limit, "{} bytes", payload.len());
    (payload, count)
}

/// User + system CPU seconds of this process (from /proc, 10 ms resolution).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

/// Peak resident memory of this process, in KB.
fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
