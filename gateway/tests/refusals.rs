//! What a customer may not do (product.md §1), done with real clients: each attempt is refused
//! with its documented Kafka error code, and the test checks the code by the name the client
//! itself reports (librdkafka's, kafka-python's, kafkajs's), so a refusal the client cannot read
//! fails here. Nothing refused ever reaches the backing topic.
//!
//! What each client reports, as asserted below:
//! - SASL_AUTHENTICATION_FAILED: librdkafka (confluent-kafka, kcat) reports `_AUTHENTICATION`
//!   ("Local: Authentication failure") carrying the gateway's message; kafkajs throws
//!   `KafkaJSSASLAuthenticationError`; kafka-python 3 logs `SaslAuthenticationFailedError`
//!   (errno 58) and, as it retries a failed bootstrap, raises `KafkaTimeoutError` at the end.
//! - Consuming: librdkafka reports GROUP_AUTHORIZATION_FAILED (FindCoordinator) for a group and
//!   TOPIC_AUTHORIZATION_FAILED (ListOffsets, Fetch) for its partitions; kafka-python without a
//!   group raises `TopicAuthorizationFailedError` (29) from ListOffsets or Fetch.
//! - CreateTopics, DeleteTopics: CLUSTER_AUTHORIZATION_FAILED per topic.
//! - Transactions: TRANSACTIONAL_ID_AUTHORIZATION_FAILED, from the transactional FindCoordinator.
//! - An invalid topic name: librdkafka names INVALID_TOPIC_EXCEPTION (17) `TOPIC_EXCEPTION`;
//!   kafka-python raises `InvalidTopicError` (17) for names it does not refuse itself.

mod common;

use common::{Gateway, INBOUND_PARTITIONS, INBOUND_TOPIC, Project, Stack, python, run_client};
use keen_testkit::read_topic;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROJECT_ID: &str = "4ef05a1aaaaaaaaaaaaaaaaa";
const REVOKED_PROJECT_ID: &str = "4ef05a1bbbbbbbbbbbbbbbbb";
const UNKNOWN_PROJECT_ID: &str = "4ef05a1ccccccccccccccccc";
/// The start of the gateway's answer to a failed authentication.
const AUTH_FAILED: &str = "authentication failed: the username must be a project id";

/// A client's attempt to connect with credentials the gateway must refuse.
#[derive(Debug, Clone)]
struct BadLogin {
    label: &'static str,
    mechanism: &'static str,
    username: String,
    password: String,
    /// The `outcome` label of `keen_gateway_authentications_total`.
    outcome: &'static str,
}

impl BadLogin {
    fn args(&self, gateway: &Gateway, topic: &str) -> Value {
        json!({
            "bootstrap": gateway.bootstrap(), "mechanism": self.mechanism,
            "username": self.username, "password": self.password, "topic": topic,
        })
    }
}

fn python_path() -> String {
    python().to_str().expect("utf-8 path").to_owned()
}

/// Nothing at all in the backing topic.
async fn assert_backing_topic_empty(stack: &Stack) {
    let records = read_topic(
        &stack.tansu.bootstrap(),
        INBOUND_TOPIC,
        INBOUND_PARTITIONS,
        1,
        Duration::from_secs(2),
    )
    .await;
    assert!(records.is_empty(), "refused, yet stored: {records:?}");
}

fn assert_authentications_refused(gateway: &Gateway, logins: &[BadLogin], client: &str) {
    for login in logins {
        let series = format!(
            "keen_gateway_authentications_total{{mechanism=\"{}\",outcome=\"{}\"}}",
            login.mechanism, login.outcome
        );
        assert!(
            gateway.metric(&series) >= 1.0,
            "{client}, {}: {series} counted",
            login.label
        );
    }
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let series = format!(
            "keen_gateway_authentications_total{{mechanism=\"{mechanism}\",outcome=\"success\"}}"
        );
        assert_eq!(gateway.metric(&series), 0.0, "{client}: {series}");
    }
}

/// Wrong password, unknown project, revoked key and read-only key, each through confluent-kafka,
/// kcat, kafkajs and kafka-python (a gateway each, so that one client's retries do not slow
/// the others down through the gateway's per-source failure delay).
#[tokio::test(flavor = "multi_thread")]
async fn failed_authentication_reaches_every_client_as_sasl_authentication_failed() {
    let stack = Stack::start().await;
    let project = stack.project(PROJECT_ID).await;
    let revoked = stack.project(REVOKED_PROJECT_ID).await;
    stack.revoke(&revoked, &revoked.write_key_id).await;
    let logins = [
        BadLogin {
            label: "wrong password",
            mechanism: "PLAIN",
            username: project.id.clone(),
            password: "not-a-key-of-this-project-0123456789abcdef".into(),
            outcome: "wrong_key",
        },
        BadLogin {
            label: "unknown project",
            mechanism: "SCRAM-SHA-512",
            username: UNKNOWN_PROJECT_ID.into(),
            password: project.write_key.clone(),
            outcome: "unknown_project",
        },
        BadLogin {
            label: "revoked key",
            mechanism: "SCRAM-SHA-256",
            username: revoked.id.clone(),
            password: revoked.write_key.clone(),
            outcome: "key_may_not_write",
        },
        BadLogin {
            label: "read-only key",
            mechanism: "PLAIN",
            username: project.id.clone(),
            password: project.read_key.clone(),
            outcome: "key_may_not_write",
        },
    ];
    let confluent = stack.gateway(&[]);
    let kcat = stack.gateway(&[]);
    let kafkajs = stack.gateway(&[]);
    let kafka_python = stack.gateway(&[]);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for login in &logins {
                let mut args = login.args(&confluent, "purchases");
                args["action"] = json!("produce");
                args["timeout"] = json!(15);
                let answer = run_client(&python_path(), "confluent_refusals.py", &args);
                assert_eq!(answer["delivered"], 0, "{}: {answer}", login.label);
                let reported = answer["client_errors"]
                    .as_array()
                    .expect("client_errors")
                    .iter()
                    .find(|e| e[0] == "_AUTHENTICATION")
                    .unwrap_or_else(|| panic!("{}: no _AUTHENTICATION in {answer}", login.label));
                let text = reported[2].as_str().expect("text");
                assert!(
                    text.contains("SASL authentication error") && text.contains(AUTH_FAILED),
                    "{}: {text}",
                    login.label
                );
            }
        });
        scope.spawn(|| {
            for login in &logins {
                let mut child = Command::new("kcat")
                    .args(["-P", "-b", &kcat.bootstrap(), "-t", "purchases"])
                    .args(["-X", "security.protocol=SASL_PLAINTEXT"])
                    .args(["-X", &format!("sasl.mechanism={}", login.mechanism)])
                    .args(["-X", &format!("sasl.username={}", login.username)])
                    .args(["-X", &format!("sasl.password={}", login.password)])
                    .args(["-X", "message.timeout.ms=15000"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("kcat on PATH");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(b"{\"refused\":true}\n")
                    .expect("write");
                let output = child.wait_with_output().expect("kcat runs");
                let stderr = String::from_utf8_lossy(&output.stderr);
                assert!(!output.status.success(), "{}: kcat succeeded", login.label);
                assert!(
                    stderr.contains("Local: Authentication failure")
                        && stderr.contains("SASL authentication error")
                        && stderr.contains(AUTH_FAILED),
                    "{}: {stderr}",
                    login.label
                );
            }
        });
        scope.spawn(|| {
            for login in &logins {
                let mut args = login.args(&kafkajs, "purchases");
                args["records"] = json!([{"value": "{\"refused\": true}"}]);
                let answer = run_client("node", "kafkajs_idempotent_produce.js", &args);
                assert_eq!(answer["delivered"], 0, "{}: {answer}", login.label);
                let error = answer["errors"][0].as_str().unwrap_or_default();
                assert!(
                    error.starts_with("KafkaJSSASLAuthenticationError: ")
                        && error.contains(AUTH_FAILED),
                    "{}: {answer}",
                    login.label
                );
            }
        });
        // kafka-python retries a bootstrap that failed authentication until its timeout: the
        // four attempts run side by side.
        std::thread::scope(|inner| {
            for login in &logins {
                let gateway = &kafka_python;
                inner.spawn(move || {
                    let mut args = login.args(gateway, "purchases");
                    args["action"] = json!("produce");
                    args["timeout"] = json!(8);
                    let answer = run_client(&python_path(), "kafka_python_refusals.py", &args);
                    assert_eq!(
                        answer["logged"]["SaslAuthenticationFailedError"], 58,
                        "{}: {answer}",
                        login.label
                    );
                    assert_eq!(
                        answer["exception"], "KafkaTimeoutError",
                        "{}: {answer}",
                        login.label
                    );
                    assert_eq!(answer["where"], "connect", "{}: {answer}", login.label);
                });
            }
        });
    });
    assert_authentications_refused(&confluent, &logins, "confluent-kafka");
    assert_authentications_refused(&kcat, &logins, "kcat");
    assert_authentications_refused(&kafkajs, &logins, "kafkajs");
    assert_authentications_refused(&kafka_python, &logins, "kafka-python");
    assert_backing_topic_empty(&stack).await;
}

/// Consuming, administering topics, transactions and invalid topic names, with an accepted key:
/// each refused with its code, and nothing stored.
#[tokio::test(flavor = "multi_thread")]
async fn produce_only_refusals_reach_the_clients_with_their_codes() {
    let stack = Stack::start().await;
    let project = stack.project(PROJECT_ID).await;
    let gateway = stack.gateway(&[]);
    let args = |mechanism: &str, topic: &str| -> Value {
        json!({
            "bootstrap": gateway.bootstrap(), "mechanism": mechanism,
            "username": project.id, "password": project.write_key, "topic": topic,
        })
    };
    let confluent = |mut args: Value, action: &str| -> Value {
        args["action"] = json!(action);
        args["timeout"] = json!(15);
        run_client(&python_path(), "confluent_refusals.py", &args)
    };
    let kafka_python = |mut args: Value, action: &str| -> Value {
        args["action"] = json!(action);
        args["timeout"] = json!(15);
        run_client(&python_path(), "kafka_python_refusals.py", &args)
    };

    // A consumer group: FindCoordinator is refused.
    let mut subscribe = args("PLAIN", "purchases");
    subscribe["group"] = json!("analytics");
    let answer = confluent(subscribe, "subscribe");
    assert_eq!(
        answer["message_errors"][0][0], "GROUP_AUTHORIZATION_FAILED",
        "{answer}"
    );
    assert_eq!(answer["message_errors"][0][1], 30, "{answer}");
    assert_eq!(answer["messages"], 0);

    // librdkafka's partitions, from an offset it knows: Fetch is refused per partition.
    let mut assign = args("SCRAM-SHA-512", "purchases");
    assign["offset"] = json!(0);
    assign["until"] = json!("TOPIC_AUTHORIZATION_FAILED");
    let answer = confluent(assign, "assign");
    let errors = answer["message_errors"].as_array().expect("errors");
    let fetch = errors
        .iter()
        .find(|e| e[0] == "TOPIC_AUTHORIZATION_FAILED")
        .unwrap_or_else(|| panic!("no TOPIC_AUTHORIZATION_FAILED: {answer}"));
    assert_eq!(fetch[1], 29);
    assert!(
        fetch[2].as_str().unwrap_or_default().contains("Fetch"),
        "{answer}"
    );

    // kafka-python without a group: ListOffsets (from the beginning), then Fetch (from offset 0).
    let answer = kafka_python(args("PLAIN", "purchases"), "assign");
    assert_eq!(
        answer["exception"], "TopicAuthorizationFailedError",
        "{answer}"
    );
    assert_eq!(answer["errno"], 29, "{answer}");
    let mut seek = args("SCRAM-SHA-256", "purchases");
    seek["seek"] = json!(0);
    let answer = kafka_python(seek, "assign");
    assert_eq!(
        answer["exception"], "TopicAuthorizationFailedError",
        "{answer}"
    );
    assert_eq!(answer["errno"], 29, "{answer}");
    let refused = |api: &str| {
        gateway.metric(&format!(
            "keen_gateway_refused_requests_total{{api=\"{api}\"}}"
        ))
    };
    assert!(refused("FindCoordinator") >= 1.0);
    assert!(refused("ListOffsets") >= 1.0);
    // A refusal the clients can read is not retried at once, forever.
    let fetches = refused("Fetch");
    assert!(
        (1.0..=30.0).contains(&fetches),
        "{fetches} Fetch requests refused"
    );

    // Topic administration, per topic.
    for action in ["create_topics", "delete_topics"] {
        let mut admin = args("PLAIN", "");
        admin["topics"] = json!(["purchases", "refunds"]);
        let answer = confluent(admin, action);
        for topic in ["purchases", "refunds"] {
            assert_eq!(
                answer["results"][topic][0], "CLUSTER_AUTHORIZATION_FAILED",
                "{action}: {answer}"
            );
            assert_eq!(answer["results"][topic][1], 31, "{action}: {answer}");
        }
    }

    // Transactions.
    let mut transactional = args("SCRAM-SHA-512", "");
    transactional["transactional_id"] = json!("checkout-1");
    let answer = confluent(transactional, "transactions");
    assert_eq!(
        answer["exception"][0], "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        "{answer}"
    );
    assert_eq!(answer["exception"][1], 53, "{answer}");

    // Topic names that break product.md §2.
    let too_long = "a".repeat(65);
    for topic in ["_internal", "bad topic!", too_long.as_str(), "purchases."] {
        let answer = confluent(args("PLAIN", topic), "produce");
        assert_eq!(answer["delivered"], 0, "{topic}: {answer}");
        assert_eq!(
            answer["delivery_errors"][0][0], "TOPIC_EXCEPTION",
            "{topic}: {answer}"
        );
        assert_eq!(answer["delivery_errors"][0][1], 17, "{topic}: {answer}");
    }
    // kafka-python refuses "bad topic!" itself; these it sends.
    for topic in ["_internal", too_long.as_str()] {
        let answer = kafka_python(args("PLAIN", topic), "produce");
        assert_eq!(
            answer["exception"], "InvalidTopicError",
            "{topic}: {answer}"
        );
        assert_eq!(answer["errno"], 17, "{topic}: {answer}");
    }
    assert_backing_topic_empty(&stack).await;
}

/// kcat reads its records from stdin with `fread` of up to 1 KiB: lines of exactly 1024 bytes
/// reach it one by one.
fn kcat_line(n: i64) -> Vec<u8> {
    let head = format!("{{\"n\":{n},\"pad\":\"");
    let mut line = head.into_bytes();
    line.resize(1024 - 3, b'.');
    line.extend_from_slice(b"\"}\n");
    line
}

/// A key revoked while a kcat connection (librdkafka 2.0.2, no KIP-368 re-authentication) is
/// open stops being accepted: the gateway re-checks the key on every produce through its 30 s
/// cache and closes the connection, and librdkafka's reconnection is refused. A record written
/// over 30 s after the revocation is never stored; one written just after it still is (the
/// connection was open and the cache fresh).
#[tokio::test(flavor = "multi_thread")]
async fn a_key_revoked_during_an_open_kcat_connection_stops_writing() {
    let stack = Stack::start().await;
    let project: Project = stack.project(PROJECT_ID).await;
    let gateway = stack.gateway(&[]);
    let mut kcat = Command::new("kcat")
        .args(["-P", "-E", "-b", &gateway.bootstrap(), "-t", "revocation"])
        .args(["-X", "security.protocol=SASL_PLAINTEXT"])
        .args(["-X", "sasl.mechanism=SCRAM-SHA-512"])
        .args(["-X", &format!("sasl.username={}", project.id)])
        .args(["-X", &format!("sasl.password={}", project.write_key)])
        .args(["-X", "enable.idempotence=true", "-X", "linger.ms=0"])
        .args(["-X", "message.timeout.ms=3000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat on PATH");
    let mut stdin = kcat.stdin.take().expect("stdin");
    // n = -1: written before the revocation, on the connection that stays open.
    stdin.write_all(&kcat_line(-1)).expect("write");
    let before = read_topic(
        &stack.tansu.bootstrap(),
        INBOUND_TOPIC,
        INBOUND_PARTITIONS,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(before.len(), 1, "the record before the revocation arrives");

    stack.revoke(&project, &project.write_key_id).await;
    let revoked_at = Instant::now();
    // Record n is written n + 0.5 s after the revocation, the last one past 35 s.
    let mut written = Vec::new();
    for n in 0..=35 {
        let due = revoked_at + Duration::from_millis(500 + 1000 * n);
        tokio::time::sleep_until(due.into()).await;
        let at = revoked_at.elapsed();
        stdin
            .write_all(&kcat_line(n as i64))
            .expect("kcat -E keeps reading");
        written.push((n as i64, at));
    }
    assert!(written.last().expect("written").1 > Duration::from_secs(35));
    drop(stdin);
    // kcat exits once every record was delivered or timed out (message.timeout.ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    while kcat.try_wait().expect("kcat").is_none() {
        assert!(Instant::now() < deadline, "kcat did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = kcat.wait_with_output().expect("kcat output");
    let stderr = String::from_utf8_lossy(&output.stderr);

    let stored: Vec<i64> = read_topic(
        &stack.tansu.bootstrap(),
        INBOUND_TOPIC,
        INBOUND_PARTITIONS,
        written.len() + 1,
        Duration::from_secs(3),
    )
    .await
    .iter()
    .map(|r| {
        let value: Value =
            serde_json::from_slice(r.value.as_deref().expect("value")).expect("json");
        value["n"].as_i64().expect("n")
    })
    .collect();
    eprintln!("stored (record n written n + 0.5 s after the revocation, -1 before it): {stored:?}");
    assert!(stored.contains(&-1), "{stored:?}");
    assert!(
        stored.contains(&0),
        "a record right after the revocation still passes on the open connection: {stored:?}"
    );
    for (n, at) in &written {
        if *at > Duration::from_secs(31) {
            assert!(
                !stored.contains(n),
                "record {n}, written {at:?} after the revocation, was stored: {stored:?}"
            );
        }
    }
    assert!(
        gateway
            .log_text()
            .contains("key no longer writes: closing the connection"),
        "the gateway closed the open connection"
    );
    assert!(
        gateway.metric(
            "keen_gateway_authentications_total{mechanism=\"SCRAM-SHA-512\",outcome=\"key_may_not_write\"}"
        ) >= 1.0,
        "kcat's reconnection was refused"
    );
    assert!(
        stderr.contains("Authentication failure") || stderr.contains("SASL authentication error"),
        "kcat was told: {stderr}"
    );
}
