//! Listeners and limits: TLS with a certificate from files, the PROXY protocol v2 behind a load
//! balancer, the connection limit, and the per-project quota.

mod common;

use common::{INBOUND_PARTITIONS, INBOUND_TOPIC, Stack, python, run_client};
use keen_testkit::read_topic;
use proxy_header::{ProxiedAddress, ProxyHeader};
use serde_json::json;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn produce(
    bootstrap: &str,
    project: &common::Project,
    password: &str,
    extra: serde_json::Value,
    n: usize,
) -> serde_json::Value {
    let records: Vec<_> = (0..n)
        .map(|i| json!({"value": format!("{{\"n\":{i}}}")}))
        .collect();
    let mut argument = json!({
        "bootstrap": bootstrap, "mechanism": "PLAIN",
        "username": project.id, "password": password,
        "topic": "listeners", "records": records,
        "config": {"message.timeout.ms": 15000},
    });
    if let (Some(target), Some(extra)) = (argument.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            if key == "config" {
                for (k, v) in value.as_object().into_iter().flatten() {
                    target["config"][k] = v.clone();
                }
            } else {
                target.insert(key.clone(), value.clone());
            }
        }
    }
    run_client(
        python().to_str().expect("utf-8"),
        "confluent_produce.py",
        &argument,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_listener_with_a_certificate_from_files() {
    let stack = Stack::start().await;
    let project = stack.project("cccccccccccccccccccccccc").await;
    let dir = std::env::temp_dir().join(keen_testkit::unique_prefix("tls"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let gateway = stack.gateway(&[
        ("GATEWAY_TLS_CERT", cert.to_str().expect("utf-8")),
        ("GATEWAY_TLS_KEY", key.to_str().expect("utf-8")),
    ]);
    let answer = produce(
        &gateway.bootstrap(),
        &project,
        &project.write_key,
        json!({"security_protocol": "SASL_SSL", "config": {"ssl.ca.location": cert.to_str().expect("utf-8")}}),
        3,
    );
    assert_eq!(answer["delivered"], 3, "{answer}");
    // A plaintext client on the TLS port gets nowhere.
    let plain = produce(
        &gateway.bootstrap(),
        &project,
        &project.write_key,
        json!({"config": {"message.timeout.ms": 3000}}),
        1,
    );
    assert_eq!(plain["delivered"], 0, "{plain}");
    let records = read_topic(
        &stack.tansu.bootstrap(),
        INBOUND_TOPIC,
        INBOUND_PARTITIONS,
        3,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(records.len(), 3);
    assert!(
        gateway.metric("keen_gateway_connections_refused_total{reason=\"tls_handshake\"}") >= 1.0
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A stand-in for the NLB: prepends a PROXY v2 header naming `source`, then relays bytes.
async fn proxy_v2(upstream: SocketAddr, source: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let mut header = Vec::new();
                ProxyHeader::with_address(ProxiedAddress::stream(source, upstream))
                    .encode_v2(&mut header)
                    .expect("encode");
                if server.write_all(&header).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_protocol_v2_gives_the_client_address() {
    let stack = Stack::start().await;
    let project = stack.project("dddddddddddddddddddddddd").await;
    let listen = common::free_addr();
    let source: SocketAddr = "203.0.113.7:40000".parse().expect("addr");
    let balancer = proxy_v2(listen, source).await;
    let mut env = stack.gateway_env(listen, common::free_addr());
    env.push(("GATEWAY_PROXY_PROTOCOL".into(), "true".into()));
    env.push(("GATEWAY_ADVERTISED".into(), balancer.to_string()));
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gateway = stack.gateway(&extra);
    assert_eq!(gateway.addr, listen);
    let answer = produce(
        &balancer.to_string(),
        &project,
        &project.write_key,
        json!({}),
        2,
    );
    assert_eq!(answer["delivered"], 2, "{answer}");
    // A failed authentication is logged with the client's address, not the balancer's.
    let failed = produce(
        &balancer.to_string(),
        &project,
        "wrong-key-0123456789abcdef0123456789",
        json!({"config": {"message.timeout.ms": 3000}}),
        1,
    );
    assert_eq!(failed["delivered"], 0);
    assert!(
        gateway.log_text().contains("203.0.113.7:40000"),
        "log:\n{}",
        gateway.log_text()
    );
    // A connection without the header is closed.
    let mut direct = TcpStream::connect(listen).expect("connect");
    direct
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    std::io::Write::write_all(&mut direct, &[0, 0, 0, 20, 0, 18, 0, 0]).expect("write");
    let mut buf = [0u8; 16];
    assert_eq!(
        direct.read(&mut buf).unwrap_or(0),
        0,
        "closed without an answer"
    );
    // Counted as it closes; on a loaded machine the scrape may come first, so wait a little.
    let refused = "keen_gateway_connections_refused_total{reason=\"proxy_header\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gateway.metric(refused) < 1.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gateway.metric(refused) >= 1.0, "{}", gateway.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_are_closed() {
    let stack = Stack::start().await;
    let gateway = stack.gateway(&[("GATEWAY_MAX_CONNECTIONS", "2")]);
    let first = TcpStream::connect(gateway.addr).expect("first");
    let second = TcpStream::connect(gateway.addr).expect("second");
    let mut third = TcpStream::connect(gateway.addr).expect("third connects at TCP level");
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 4];
    assert_eq!(
        third.read(&mut buf).unwrap_or(0),
        0,
        "the third is closed at once"
    );
    assert_eq!(
        gateway.metric("keen_gateway_connections_refused_total{reason=\"connection_limit\"}"),
        1.0
    );
    // The gauge is raised by each connection's task, which may not have run yet under load.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gateway.metric("keen_gateway_connections_open") != 2.0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(gateway.metric("keen_gateway_connections_open"), 2.0);
    drop((first, second));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_over_its_quota_is_throttled_and_another_is_not() {
    let stack = Stack::start().await;
    let heavy = stack.project("eeeeeeeeeeeeeeeeeeeeeeee").await;
    let light = stack.project("ffffffffffffffffffffffff").await;
    let gateway = stack.gateway(&[("GATEWAY_PROJECT_QUOTA_BYTES_PER_SEC", "20000")]);
    // ~100 KB in batches of ~10 KB: far over one second's 20 KB.
    let big = json!({"config": {"batch.size": 10000, "linger.ms": 20, "compression.type": "none"}});
    let records: Vec<_> = (0..200)
        .map(|i| json!({"value": format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(480))}))
        .collect();
    let answer = run_client(
        python().to_str().expect("utf-8"),
        "confluent_produce.py",
        &json!({
            "bootstrap": gateway.bootstrap(), "mechanism": "PLAIN", "username": heavy.id,
            "password": heavy.write_key, "topic": "quota", "records": records, "config": big["config"],
        }),
    );
    assert_eq!(answer["delivered"], 200, "throttled, not refused: {answer}");
    let heavy_throttle = gateway.metric(&format!(
        "keen_gateway_throttle_seconds_total{{project_id=\"{}\"}}",
        heavy.id
    ));
    assert!(heavy_throttle > 1.0, "throttled for {heavy_throttle} s");
    let light_answer = produce(&gateway.bootstrap(), &light, &light.write_key, json!({}), 3);
    assert_eq!(light_answer["delivered"], 3);
    assert_eq!(
        gateway.metric(&format!(
            "keen_gateway_throttle_seconds_total{{project_id=\"{}\"}}",
            light.id
        )),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_do_not_multiply_a_projects_quota() {
    let stack = Stack::start().await;
    let heavy = stack.project("dddddddddddddddddddddddd").await;
    let gateway = stack.gateway(&[("GATEWAY_PROJECT_QUOTA_RECORDS_PER_SEC", "100")]);
    // Eight producers (eight connections), each with one request of 100 records: 800 records
    // against 100/s and one second of burst. A per-connection pause would read all eight
    // requests at once; the project's pause reads the next only once the deficit is paid.
    let started = std::time::Instant::now();
    let config = json!({"linger.ms": 500, "message.timeout.ms": 60000});
    // One partition and a long linger: each client's 100 records in one request.
    for answer in clients_at_once(&gateway, &heavy, 8, 100, &config) {
        assert_eq!(answer["delivered"], 100, "throttled, not refused: {answer}");
    }
    // A lower bound only (a slow machine makes it longer, never shorter): 700 records past the
    // burst at 100/s cannot all be taken in less than 7 s; 5 s leaves room for the last
    // request being read as soon as the deficit before it is paid.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5),
        "800 records taken in {took:?} at 100 records/s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_session_is_not_cut_off_for_the_time_it_was_held() {
    let stack = Stack::start().await;
    let heavy = stack.project("cccccccccccccccccccccccc").await;
    // Sessions of 2 s, 100 records/s: four clients' 150 records each, in requests of about 50,
    // take about 6 s, so each re-authenticates while its requests wait for the project's turn.
    let gateway = stack.gateway(&[
        ("GATEWAY_PROJECT_QUOTA_RECORDS_PER_SEC", "100"),
        ("GATEWAY_SESSION_LIFETIME_MS", "2000"),
    ]);
    let config = json!({"batch.num.messages": 50, "linger.ms": 5, "message.timeout.ms": 60000,
                        "enable.idempotence": true});
    for answer in clients_at_once(&gateway, &heavy, 4, 150, &config) {
        assert_eq!(answer["delivered"], 150, "{answer}");
    }
    let log = gateway.log_text();
    assert!(
        !log.contains("session expired without re-authentication"),
        "a request the client sent in time was refused as late:\n{log}"
    );
}

/// Runs `clients` confluent-kafka producers of `project` at once, each sending `records` small
/// records to partition 0 with `config`; returns their answers.
fn clients_at_once(
    gateway: &common::Gateway,
    project: &common::Project,
    clients: usize,
    records: usize,
    config: &serde_json::Value,
) -> Vec<serde_json::Value> {
    let argument = json!({
        "bootstrap": gateway.bootstrap(), "mechanism": "PLAIN", "username": project.id,
        "password": project.write_key, "topic": "quota",
        "records": (0..records).map(|i| json!({"value": format!("{{\"n\":{i}}}"), "partition": 0})).collect::<Vec<_>>(),
        "config": config,
    });
    let running: Vec<_> = (0..clients)
        .map(|_| {
            let argument = argument.clone();
            std::thread::spawn(move || {
                run_client(
                    python().to_str().expect("utf-8"),
                    "confluent_produce.py",
                    &argument,
                )
            })
        })
        .collect();
    running
        .into_iter()
        .map(|client| client.join().expect("client"))
        .collect()
}
