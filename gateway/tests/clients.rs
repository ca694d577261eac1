//! The real-client matrix (product.md §1): every client the product names produces through the
//! gateway, over the SASL mechanisms and with the compression codecs it offers, and what lands in
//! the backing topic is read back: each record exactly once, its value byte for byte, with the
//! tenant headers (`keen-project-id`, `keen-collection`, `keen-key-id`) and, since every producer
//! here is idempotent, its own `keen-producer`.
//!
//! One stack per client (a test function each), so a failure names its client and the clients
//! run side by side.

mod common;

use common::{Gateway, INBOUND_PARTITIONS, INBOUND_TOPIC, Project, Stack, python, run_client};
use keen_testkit::kafka::BackingRecord;
use keen_testkit::read_topic;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const PROJECT_ID: &str = "c11e475aaaaaaaaaaaaaaaaa";
/// Text that every codec shrinks to a fraction: a compressed batch is far smaller than its
/// values, an uncompressed one is not.
const FILLER: &str = "the quick brown fox jumps over the lazy dog; ";

/// A record a client was asked to produce.
#[derive(Debug, Clone)]
struct Sent {
    collection: String,
    value: String,
    key: Option<String>,
}

impl Sent {
    fn new(collection: &str, client: &str, case: &str, n: usize, filler: usize) -> Sent {
        Sent {
            collection: collection.to_owned(),
            value: json!({"client": client, "case": case, "n": n, "text": FILLER.repeat(filler)})
                .to_string(),
            key: n.is_multiple_of(2).then(|| format!("key-{n}")),
        }
    }

    /// The record as the client scripts take it, with one customer header.
    fn to_script(&self) -> Value {
        json!({"value": self.value, "key": self.key, "headers": {"trace": format!("t-{}", self.value.len())}})
    }
}

/// Everything in the backing topic once `expected` records arrived (and a quiet period passed).
async fn read_back(stack: &Stack, expected: usize) -> Vec<BackingRecord> {
    read_topic(
        &stack.tansu.bootstrap(),
        INBOUND_TOPIC,
        INBOUND_PARTITIONS,
        expected,
        Duration::from_secs(30),
    )
    .await
}

fn header<'a>(record: &'a BackingRecord, name: &str) -> &'a str {
    std::str::from_utf8(
        record
            .header(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", record.headers)),
    )
    .expect("utf-8 header")
}

/// Every sent record arrived exactly once, value and key byte for byte, with the tenant headers
/// of `project`'s write key and an idempotent producer's `keen-producer` (all distinct).
fn assert_arrived_once(records: &[BackingRecord], sent: &[Sent], project: &Project) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut producers = BTreeSet::new();
    for record in records {
        let value = std::str::from_utf8(record.value.as_deref().expect("a value")).expect("utf-8");
        let Some(origin) = sent.iter().find(|s| s.value == value) else {
            panic!("a record nobody sent: {value}");
        };
        *seen.entry(origin.value.as_str()).or_default() += 1;
        assert_eq!(
            record.key.as_deref(),
            origin.key.as_deref().map(str::as_bytes),
            "key of {value}"
        );
        assert_eq!(header(record, "keen-project-id"), project.id);
        assert_eq!(header(record, "keen-collection"), origin.collection);
        assert_eq!(header(record, "keen-key-id"), project.write_key_id);
        let producer = header(record, "keen-producer");
        let parts: Vec<i64> = producer
            .split(':')
            .map(|p| p.parse().expect("numeric keen-producer part"))
            .collect();
        assert!(
            parts.len() == 4 && parts.iter().all(|&p| p >= 0),
            "keen-producer {producer:?} is producer_id:epoch:partition:sequence"
        );
        assert!(
            producers.insert(producer.to_owned()),
            "{producer} labels two records"
        );
    }
    for origin in sent {
        assert_eq!(
            seen.get(origin.value.as_str()).copied().unwrap_or(0),
            1,
            "{} arrives exactly once",
            origin.value
        );
    }
    assert_eq!(records.len(), sent.len(), "no record besides those sent");
}

fn bytes_accepted(gateway: &Gateway, project: &Project) -> f64 {
    gateway.metric(&format!(
        "keen_gateway_bytes_accepted_total{{project_id=\"{}\"}}",
        project.id
    ))
}

/// The batch bytes the gateway accepted for `values`: well under their size when compressed
/// (FILLER repeats), at least their size when not.
fn assert_compression(codec: &str, batch_bytes: f64, values: &[Sent]) {
    let value_bytes: usize = values.iter().map(|s| s.value.len()).sum();
    if codec == "none" {
        assert!(
            batch_bytes >= value_bytes as f64,
            "uncompressed batches ({batch_bytes} bytes) hold the {value_bytes} value bytes"
        );
    } else {
        assert!(
            batch_bytes > 0.0 && batch_bytes < value_bytes as f64 / 3.0,
            "{codec} batches ({batch_bytes} bytes) are compressed ({value_bytes} value bytes)"
        );
    }
}

fn script_args(gateway: &Gateway, project: &Project, mechanism: &str, topic: &str) -> Value {
    json!({
        "bootstrap": gateway.bootstrap(), "mechanism": mechanism,
        "username": project.id, "password": project.write_key, "topic": topic,
    })
}

/// kafka-python (idempotent by default) over PLAIN and SCRAM-SHA-512 with gzip, snappy, lz4 and
/// zstd.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_python_produces_with_every_codec_over_plain_and_scram() {
    let stack = Stack::start().await;
    let project = stack.project(PROJECT_ID).await;
    let gateway = stack.gateway(&[]);
    let mut sent = Vec::new();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        for mechanism in ["PLAIN", "SCRAM-SHA-512"] {
            let topic = format!("kafka-python.{codec}.{mechanism}");
            let records: Vec<Sent> = (0..3)
                .map(|n| Sent::new(&topic, "kafka-python", &topic, n, 20))
                .collect();
            let mut args = script_args(&gateway, &project, mechanism, &topic);
            args["records"] = records.iter().map(Sent::to_script).collect();
            args["config"] = json!({"compression_type": codec});
            let answer = run_client(
                python().to_str().expect("utf-8 path"),
                "kafka_python_matrix_produce.py",
                &args,
            );
            assert_eq!(answer["delivered"], 3, "{topic}: {answer}");
            assert_eq!(
                answer["idempotent"], true,
                "{topic}: kafka-python kept idempotence on"
            );
            sent.extend(records);
        }
    }
    let records = read_back(&stack, sent.len()).await;
    assert_arrived_once(&records, &sent, &project);
    for record in &records {
        assert!(
            header(record, "trace").starts_with("t-"),
            "the customer's header is kept"
        );
    }
}

/// kafkajs as an idempotent producer (`idempotent: true`, `maxInFlightRequests: 1`) over PLAIN
/// and SCRAM-SHA-512, gzip, two sends each.
#[tokio::test(flavor = "multi_thread")]
async fn kafkajs_idempotent_producer_over_plain_and_scram() {
    let stack = Stack::start().await;
    let project = stack.project(PROJECT_ID).await;
    let gateway = stack.gateway(&[]);
    let mut sent = Vec::new();
    for mechanism in ["PLAIN", "SCRAM-SHA-512"] {
        let topic = format!("kafkajs.gzip.{mechanism}");
        let records: Vec<Sent> = (0..4)
            .map(|n| Sent::new(&topic, "kafkajs", &topic, n, 20))
            .collect();
        let mut args = script_args(&gateway, &project, mechanism, &topic);
        args["records"] = records.iter().map(Sent::to_script).collect();
        args["compression"] = json!("gzip");
        args["batches"] = json!(2);
        let before = bytes_accepted(&gateway, &project);
        let answer = run_client("node", "kafkajs_idempotent_produce.js", &args);
        assert_eq!(answer["delivered"], 4, "{topic}: {answer}");
        assert_eq!(answer["errors"], json!([]), "{topic}: {answer}");
        assert_compression(
            "gzip",
            bytes_accepted(&gateway, &project) - before,
            &records,
        );
        sent.extend(records);
    }
    let records = read_back(&stack, sent.len()).await;
    assert_arrived_once(&records, &sent, &project);
}

/// kcat (Debian's librdkafka 2.0.2) over PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 with every codec
/// and `enable.idempotence=true`: each codec round-trips.
#[tokio::test(flavor = "multi_thread")]
async fn kcat_librdkafka_2_0_2_round_trips_every_codec_over_every_mechanism() {
    let stack = Stack::start().await;
    let project = stack.project(PROJECT_ID).await;
    let gateway = stack.gateway(&[]);
    let mut sent = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let topic = format!("kcat.{codec}.{mechanism}");
            // kcat sends no keys here: one value per line.
            let records: Vec<Sent> = (0..2)
                .map(|n| Sent {
                    key: None,
                    ..Sent::new(&topic, "kcat", &topic, n, 40)
                })
                .collect();
            let before = bytes_accepted(&gateway, &project);
            let mut child = Command::new("kcat")
                .args(["-P", "-b", &gateway.bootstrap(), "-t", &topic, "-z", codec])
                .args(["-X", "security.protocol=SASL_PLAINTEXT"])
                .args(["-X", &format!("sasl.mechanism={mechanism}")])
                .args(["-X", &format!("sasl.username={}", project.id)])
                .args(["-X", &format!("sasl.password={}", project.write_key)])
                .args(["-X", "enable.idempotence=true", "-X", "acks=all"])
                .args(["-X", "message.timeout.ms=20000"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("kcat on PATH (scripts/setup-test-env installs it)");
            {
                let mut stdin = child.stdin.take().expect("stdin");
                for record in &records {
                    writeln!(stdin, "{}", record.value).expect("write to kcat");
                }
            }
            let output = child.wait_with_output().expect("kcat runs");
            assert!(
                output.status.success(),
                "{topic}: kcat {:?}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            assert_compression(codec, bytes_accepted(&gateway, &project) - before, &records);
            sent.extend(records);
        }
    }
    let records = read_back(&stack, sent.len()).await;
    assert_arrived_once(&records, &sent, &project);
}

/// The Rust `rdkafka` crate (bundled, current librdkafka) in process: a FutureProducer with
/// `enable.idempotence=true` and `acks=all` over SCRAM-SHA-512.
#[tokio::test(flavor = "multi_thread")]
async fn rdkafka_future_producer_over_scram_sha_512() {
    let stack = Stack::start().await;
    let project = stack.project(PROJECT_ID).await;
    let gateway = stack.gateway(&[]);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", gateway.bootstrap())
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", &project.id)
        .set("sasl.password", &project.write_key)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    let topic = "rdkafka.lz4.SCRAM-SHA-512";
    let sent: Vec<Sent> = (0..10)
        .map(|n| Sent::new(topic, "rdkafka", topic, n, 20))
        .collect();
    let deliveries: Vec<_> = sent
        .iter()
        .map(|record| {
            let mut message = FutureRecord::to(topic)
                .payload(record.value.as_bytes())
                .headers(OwnedHeaders::new().insert(Header {
                    key: "trace",
                    value: Some("rdkafka"),
                }));
            if let Some(key) = &record.key {
                message = message.key(key.as_bytes());
            }
            producer.send(message, Duration::from_secs(20))
        })
        .collect();
    for delivery in deliveries {
        let delivered = delivery.await;
        assert!(delivered.is_ok(), "delivery failed: {delivered:?}");
    }
    let records = read_back(&stack, sent.len()).await;
    assert_arrived_once(&records, &sent, &project);
    assert!(records.iter().all(|r| header(r, "trace") == "rdkafka"));
}

/// confluent-kafka (current librdkafka) with every codec, idempotent, over each mechanism.
#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_produces_with_every_codec() {
    let stack = Stack::start().await;
    let project = stack.project(PROJECT_ID).await;
    let gateway = stack.gateway(&[]);
    let mut sent = Vec::new();
    let mechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
    for (i, codec) in ["none", "gzip", "snappy", "lz4", "zstd"]
        .into_iter()
        .enumerate()
    {
        let mechanism = mechanisms[i % mechanisms.len()];
        let topic = format!("confluent.{codec}.{mechanism}");
        let records: Vec<Sent> = (0..3)
            .map(|n| Sent::new(&topic, "confluent-kafka", &topic, n, 40))
            .collect();
        let mut args = script_args(&gateway, &project, mechanism, &topic);
        args["records"] = records.iter().map(Sent::to_script).collect();
        args["config"] = json!({"compression.type": codec, "enable.idempotence": true});
        let before = bytes_accepted(&gateway, &project);
        let answer = run_client(
            python().to_str().expect("utf-8 path"),
            "confluent_produce.py",
            &args,
        );
        assert_eq!(answer["delivered"], 3, "{topic}: {answer}");
        assert_compression(codec, bytes_accepted(&gateway, &project) - before, &records);
        sent.extend(records);
    }
    let records = read_back(&stack, sent.len()).await;
    assert_arrived_once(&records, &sent, &project);
}
