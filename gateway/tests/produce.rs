//! Produce through the gateway with real clients; what lands in the backing topic is read back.

mod common;

use common::{INBOUND_PARTITIONS, INBOUND_TOPIC, Stack, python, run_client};
use keen_testkit::read_topic;
use serde_json::json;
use std::time::Duration;

/// Two projects produce to the same topic name over PLAIN, SCRAM-SHA-512 and SCRAM-SHA-256;
/// each record arrives once with its own project's headers, and forged tenant headers are gone.
#[tokio::test(flavor = "multi_thread")]
async fn two_projects_share_a_topic_name_and_keep_their_own_headers() {
    let stack = Stack::start().await;
    let alpha = stack.project("aaaaaaaaaaaaaaaaaaaaaaaa").await;
    let beta = stack.project("bbbbbbbbbbbbbbbbbbbbbbbb").await;
    let gateway = stack.gateway(&[]);
    let mut sent = 0;
    for (project, mechanism) in [
        (&alpha, "PLAIN"),
        (&beta, "SCRAM-SHA-512"),
        (&alpha, "SCRAM-SHA-256"),
    ] {
        let records: Vec<_> = (0..5)
            .map(|i| {
                json!({
                    "value": format!("{{\"project\":\"{}\",\"mechanism\":\"{mechanism}\",\"n\":{i}}}", project.id),
                    "headers": {"keen-project-id": "forged", "keen-key-id": "forged", "keen-producer": "1:2:3:4", "keen-ip": "81.2.69.142"},
                })
            })
            .collect();
        let answer = run_client(
            python().to_str().expect("utf-8 path"),
            "confluent_produce.py",
            &json!({
                "bootstrap": gateway.bootstrap(), "mechanism": mechanism,
                "username": project.id, "password": project.write_key,
                "topic": "purchases", "records": records,
                "config": {"enable.idempotence": true, "compression.type": "zstd"},
            }),
        );
        assert_eq!(answer["delivered"], 5, "{mechanism}: {answer}");
        sent += 5;
    }
    let records = read_topic(
        &stack.tansu.bootstrap(),
        INBOUND_TOPIC,
        INBOUND_PARTITIONS,
        sent,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(records.len(), sent, "every record exactly once");
    for record in &records {
        let value: serde_json::Value =
            serde_json::from_slice(record.value.as_deref().expect("value")).expect("json");
        let owner = if value["project"] == alpha.id.as_str() {
            &alpha
        } else {
            &beta
        };
        assert_eq!(
            record.header("keen-project-id"),
            Some(owner.id.as_bytes()),
            "{value}"
        );
        assert_eq!(record.header("keen-collection"), Some(&b"purchases"[..]));
        assert_eq!(
            record.header("keen-key-id"),
            Some(owner.write_key_id.as_bytes())
        );
        assert_eq!(
            record.header("keen-ip"),
            Some(&b"81.2.69.142"[..]),
            "customer headers are kept"
        );
        let producer =
            std::str::from_utf8(record.header("keen-producer").expect("idempotent producer"))
                .expect("utf-8");
        assert_ne!(producer, "1:2:3:4", "the forged producer header is gone");
        for reserved in [
            "keen-project-id",
            "keen-collection",
            "keen-key-id",
            "keen-producer",
        ] {
            let count = record
                .headers
                .iter()
                .filter(|(name, _)| name == reserved)
                .count();
            assert_eq!(count, 1, "{reserved} appears once in {:?}", record.headers);
        }
    }
    assert_eq!(
        records
            .iter()
            .filter(|r| r.header("keen-project-id") == Some(beta.id.as_bytes()))
            .count(),
        5
    );
}

/// A KIP-368 client (librdkafka ≥ 2.2) told a session lifetime of 2 s re-authenticates on the same
/// connection and keeps producing for 7 s; every record is acknowledged and stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_kip368_client_reauthenticates_and_keeps_producing() {
    let stack = Stack::start().await;
    let project = stack.project("abababababababababababab").await;
    let gateway = stack.gateway(&[("GATEWAY_SESSION_LIFETIME_MS", "2000")]);
    let records: Vec<_> = (0..7)
        .map(|i| json!({"value": format!("{{\"n\":{i}}}"), "partition": 0}))
        .collect();
    let answer = run_client(
        python().to_str().expect("utf-8 path"),
        "confluent_produce.py",
        &json!({
            "bootstrap": gateway.bootstrap(), "mechanism": "SCRAM-SHA-512",
            "username": project.id, "password": project.write_key,
            "topic": "sessions", "records": records, "interval": 1.0,
        }),
    );
    assert_eq!(answer["delivered"], 7, "{answer}");
    let stored = read_topic(
        &stack.tansu.bootstrap(),
        INBOUND_TOPIC,
        INBOUND_PARTITIONS,
        7,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(stored.len(), 7);
    let successes = gateway.metric(
        "keen_gateway_authentications_total{mechanism=\"SCRAM-SHA-512\",outcome=\"success\"}",
    );
    let connections = gateway.metric("keen_gateway_connections_total");
    eprintln!("{successes} SCRAM authentications over {connections} connections");
    assert!(
        successes > connections,
        "{successes} authentications over {connections} connections: the client re-authenticated in place"
    );
    // Each produce request (one record, one partition) is timed stage by stage, and the wait for
    // the backing cluster is part of the request's time.
    let stage = |stage: &str, what: &str| {
        gateway.metric(&format!(
            "keen_gateway_produce_stage_seconds_{what}{{stage=\"{stage}\"}}"
        ))
    };
    let requests = stage("request", "count");
    assert!(requests >= 7.0, "{requests} produce requests timed");
    for each in ["scheduling", "decoding", "handing_over", "acknowledgement"] {
        assert_eq!(stage(each, "count"), requests, "stage {each}");
    }
    assert!(stage("acknowledgement", "sum") > 0.0);
    assert!(stage("acknowledgement", "sum") < stage("request", "sum"));
}
