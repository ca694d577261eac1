//! End-to-end: real Kafka clients produce through the gateway; the local event source mapping
//! feeds the ingest handler; the query API answers. What a customer sees, checked from the
//! outside, against what the producers got acknowledged.

use keen_e2e::{LocalStack, Project, python, run_client};
use keen_testkit::kafka::{Fault, FaultProxy};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod poison;
mod sdk;

const A: &str = "aaaa0000aaaa0000aaaa0000";
const B: &str = "bbbb0000bbbb0000bbbb0000";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";

fn client_args(bootstrap: &str, project: &Project, topic: &str, records: Value) -> Value {
    json!({
        "bootstrap": bootstrap, "mechanism": "PLAIN", "username": project.id,
        "password": project.write_key, "topic": topic, "records": records,
    })
}

fn kcat_produce(bootstrap: &str, project: &Project, topic: &str, values: &[String]) {
    let mut child = Command::new("kcat")
        .args(["-P", "-b", bootstrap, "-t", topic])
        .args(["-X", "security.protocol=SASL_PLAINTEXT"])
        .args(["-X", "sasl.mechanism=SCRAM-SHA-512"])
        .args(["-X", &format!("sasl.username={}", project.id)])
        .args(["-X", &format!("sasl.password={}", project.write_key)])
        .args(["-X", "acks=all", "-X", "message.timeout.ms=20000"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat on PATH (.ci/run installs it)");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for value in values {
            writeln!(stdin, "{value}").expect("write to kcat");
        }
    }
    let output = child.wait_with_output().expect("kcat runs");
    assert!(
        output.status.success(),
        "kcat: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn field<'a>(events: &'a [Value], name: &str) -> BTreeSet<&'a str> {
    events.iter().filter_map(|e| e[name].as_str()).collect()
}

/// Two projects write the same collection name with four different clients; each project
/// counts and extracts its own events only, in the stored shape: the keen object, the add-on
/// output, the write key's autofill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projects_and_four_clients_are_counted_and_extracted_per_project() {
    let stack = LocalStack::start().await;
    let autofill = |tenant: &str| json!({"writes": {"autofill": {"tenant": tenant}}});
    let a = stack.project(A, autofill("A")).await;
    let b = stack.project(B, autofill("B")).await;
    let bootstrap = stack.bootstrap();

    // A, confluent-kafka: the user agent arrives as a header, through a placeholder, into the
    // ua_parser add-on.
    let records: Vec<Value> = (0..4)
        .map(|n| {
            json!({
                "value": json!({
                    "client": "confluent", "n": n, "ua": "${keen.user_agent}",
                    "keen": {"addons": [{"name": "keen:ua_parser", "input": {"ua_string": "ua"},
                                         "output": "parsed"}]}
                }).to_string(),
                "headers": {"keen-user-agent": FIREFOX},
            })
        })
        .collect();
    let answer = run_client(
        &python(),
        "confluent_produce.py",
        &client_args(&bootstrap, &a, "purchases", json!(records)),
    );
    assert_eq!(answer["delivered"], 4, "{answer}");
    // A, kafkajs.
    let records: Vec<Value> = (0..3)
        .map(|n| json!({"value": json!({"client": "kafkajs", "n": n}).to_string()}))
        .collect();
    let mut args = client_args(&bootstrap, &a, "purchases", json!(records));
    args["mechanism"] = json!("plain");
    let answer = run_client("node", "kafkajs_produce.js", &args);
    assert_eq!(answer["delivered"], 3, "{answer}");
    // B, kafka-python (idempotent by default).
    let records: Vec<Value> = (0..3)
        .map(|n| json!({"value": json!({"client": "kafka-python", "n": n}).to_string()}))
        .collect();
    let answer = run_client(
        &python(),
        "kafka_python_produce.py",
        &client_args(&bootstrap, &b, "purchases", json!(records)),
    );
    assert_eq!(answer["delivered"], 3, "{answer}");
    // B, kcat (librdkafka 2.0.2) over SCRAM-SHA-512.
    let values: Vec<String> = (0..2)
        .map(|n| json!({"client": "kcat", "n": n}).to_string())
        .collect();
    kcat_produce(&bootstrap, &b, "purchases", &values);

    let timeout = Duration::from_secs(60);
    assert_eq!(stack.wait_count(&a, "purchases", 7, timeout), 7);
    assert_eq!(stack.wait_count(&b, "purchases", 5, timeout), 5);

    let events_a = stack.extraction(&a, "purchases");
    assert_eq!(events_a.len(), 7);
    assert_eq!(
        field(&events_a, "client"),
        BTreeSet::from(["confluent", "kafkajs"])
    );
    assert_eq!(field(&events_a, "tenant"), BTreeSet::from(["A"]));
    let ids: BTreeSet<&str> = events_a
        .iter()
        .map(|e| e["keen"]["id"].as_str().expect("keen.id"))
        .collect();
    assert_eq!(ids.len(), 7, "seven distinct keen.ids");
    for event in &events_a {
        let keen = &event["keen"];
        assert!(keen["id"].as_str().is_some_and(|id| id.len() == 24));
        for stamp in ["timestamp", "created_at"] {
            let text = keen[stamp].as_str().expect(stamp);
            assert_eq!(text.len(), 24, "{text}");
            assert!(text.ends_with('Z'), "{text}");
        }
        assert_eq!(
            keen["timestamp"], keen["created_at"],
            "no producer timestamp given"
        );
        assert!(keen.get("addons").is_none(), "keen.addons is never stored");
        if event["client"] == "confluent" {
            assert_eq!(event["ua"], FIREFOX, "the placeholder took the header");
            assert_eq!(event["parsed"]["browser"]["family"], "Firefox", "{event}");
            assert_eq!(event["parsed"]["browser"]["major"], 120, "{event}");
        }
    }
    let events_b = stack.extraction(&b, "purchases");
    assert_eq!(events_b.len(), 5);
    assert_eq!(
        field(&events_b, "client"),
        BTreeSet::from(["kafka-python", "kcat"])
    );
    assert_eq!(field(&events_b, "tenant"), BTreeSet::from(["B"]));

    // Each project's collections listing knows only its own.
    let (status, listing) = stack.get(&format!("/3.0/projects/{A}/events"), &a.read_key);
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing[0]["name"], "purchases");
    assert_eq!(listing[0]["count"], 7);
    assert_eq!(listing.as_array().map(Vec::len), Some(1), "{listing}");
    // A's key opens nothing of B's.
    let (status, _) = stack.get(
        &format!("/3.0/projects/{B}/queries/count?event_collection=purchases"),
        &a.read_key,
    );
    assert_eq!(status, 401);
}

/// The gateway issue's resend through two instances: the produce response of the instance that
/// wrote a batch is dropped and the client's resend reaches the other instance, which writes it
/// again; both copies carry the same `keen-producer` identity, so one event is stored per record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_through_two_gateways_yields_one_event_per_record() {
    resend_through_two_gateways(None).await;
}

/// The same with a producer clock two hours behind: each instance replaces the timestamps with
/// its own clock reading, so the two copies differ in timestamp (and sort key); still one event
/// per record. The second instance knows nothing of the first, as after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_with_a_skewed_producer_clock_yields_one_event_per_record() {
    let two_hours_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        - 2 * 3_600_000;
    let events = resend_through_two_gateways(Some(two_hours_ago)).await;
    for event in events {
        let created = event["keen"]["created_at"].as_str().expect("created_at");
        assert!(
            created > "2026",
            "the gateway's clock, not the producer's: {created}"
        );
    }
}

/// Produces ten idempotent records (with `timestamp_ms`, if given) through two gateway
/// instances, the first produce response dropped; returns the extraction.
async fn resend_through_two_gateways(timestamp_ms: Option<i64>) -> Vec<Value> {
    let mut stack = LocalStack::start().await;
    let a = stack.project(A, json!({})).await;
    let proxy = FaultProxy::start_many(Vec::new(), Fault::DropFirstProduceResponse);
    let advertised = proxy.bootstrap();
    // Instance 0 was started by the stack without the proxy's address: start two that
    // advertise the proxy, so clients stay behind it.
    let first = stack.start_gateway(&[("GATEWAY_ADVERTISED", advertised.as_str())]);
    let second = stack.start_gateway(&[("GATEWAY_ADVERTISED", advertised.as_str())]);
    proxy.set_upstreams(vec![first]);
    let records: Vec<Value> = (0..10)
        .map(|n| json!({"value": json!({"resend": n}).to_string(), "timestamp": timestamp_ms}))
        .collect();
    let producer = {
        let mut args = client_args(&proxy.bootstrap(), &a, "resends", json!(records));
        // The idempotent producer (what stamps keen-producer); a reconnect waits 500 ms, time
        // to steer it to the other instance.
        args["config"] = json!({"enable.idempotence": true, "linger.ms": 20,
                                "reconnect.backoff.ms": 500, "reconnect.backoff.max.ms": 1000});
        std::thread::spawn(move || run_client(&python(), "confluent_produce.py", &args))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.dropped_responses() == 0 {
        assert!(
            Instant::now() < deadline && !producer.is_finished(),
            "no Produce response was dropped"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // Every reconnect now lands on the instance that has not seen the batch.
    proxy.set_upstreams(vec![second]);
    let answer = producer.join().expect("producer thread");
    assert_eq!(answer["delivered"], 10, "{answer}");
    assert_eq!(proxy.dropped_responses(), 1);

    let count = stack.wait_count(&a, "resends", 10, Duration::from_secs(60));
    assert_eq!(count, 10, "one event per acknowledged record");
    let events = stack.extraction(&a, "resends");
    let values: BTreeSet<i64> = events.iter().filter_map(|e| e["resend"].as_i64()).collect();
    assert_eq!(values, (0..10).collect());
    assert_eq!(events.len(), 10);
    events
}

/// Stopping the event source mapping (SIGTERM) and killing it (SIGKILL) while producers write
/// loses nothing and duplicates nothing: the count and the extraction equal what the producer got
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_killing_the_event_source_mapping_loses_and_duplicates_nothing() {
    let mut stack = LocalStack::start().await;
    let a = stack.project(A, json!({})).await;
    let total = 3_000;
    let records: Vec<Value> = (0..total)
        .map(|n| json!({"value": json!({"seq": n}).to_string()}))
        .collect();
    let producer = {
        let mut args = client_args(&stack.bootstrap(), &a, "stream", json!(records));
        // A steady stream over a few seconds rather than one burst.
        args["interval"] = json!(0.002);
        std::thread::spawn(move || run_client(&python(), "confluent_produce.py", &args))
    };
    let stored_so_far = |stack: &LocalStack| stack.count(&a, "stream");
    // Let some batches through, then stop cleanly mid-stream and restart.
    wait_until(|| stored_so_far(&stack) > 200, "first events stored");
    assert!(stack.stop_esm("TERM"), "SIGTERM: the mapping exits 0");
    std::thread::sleep(Duration::from_millis(500));
    stack.start_esm(&[]);
    let before_kill = stored_so_far(&stack);
    wait_until(
        || stored_so_far(&stack) > before_kill + 200,
        "events stored after the restart",
    );
    stack.stop_esm("KILL");
    std::thread::sleep(Duration::from_millis(500));
    stack.start_esm(&[]);

    let answer = producer.join().expect("producer thread");
    let acknowledged = answer["delivered"].as_u64().expect("delivered");
    assert_eq!(acknowledged, total as u64, "{answer}");
    let count = stack.wait_count(&a, "stream", acknowledged, Duration::from_secs(120));
    assert_eq!(count, acknowledged, "count equals what was acknowledged");
    let events = stack.extraction(&a, "stream");
    assert_eq!(events.len() as u64, acknowledged);
    let seqs: BTreeSet<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(
        seqs.len() as u64,
        acknowledged,
        "no event twice, none missing"
    );
}

/// The tables' server (dynalite) and the queue's (moto) killed while the event source mapping
/// is mid-way through what was acknowledged, then started again on their data: the mapping
/// retries what failed meanwhile, and every acknowledged event is counted exactly once, the
/// ones stored before the crash included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_killed_mid_load_comes_back_and_every_event_is_counted_once() {
    let mut stack = LocalStack::start_persistent().await;
    let a = stack.project(A, json!({})).await;
    let total = 3_000;
    let records: Vec<Value> = (0..total)
        .map(|n| json!({"value": json!({"seq": n}).to_string()}))
        .collect();
    // The mapping is stopped while the producer writes, so the whole load waits in the topic.
    assert!(stack.stop_esm("TERM"));
    let args = client_args(&stack.bootstrap(), &a, "stream", json!(records));
    let answer = run_client(&python(), "confluent_produce.py", &args);
    assert_eq!(answer["delivered"], json!(total), "{answer}");
    stack.start_esm(&[]);
    wait_until(
        || stack.count(&a, "stream") > 300,
        "the first events stored",
    );
    let at_the_crash = stack.count(&a, "stream");
    assert!(at_the_crash < total as u64, "still mid-way: {at_the_crash}");
    stack.restart_storage();

    let count = stack.wait_count(&a, "stream", total as u64, Duration::from_secs(180));
    assert_eq!(
        count, total as u64,
        "count after the restart (crash at {at_the_crash})"
    );
    let events = stack.extraction(&a, "stream");
    let seqs: BTreeSet<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(events.len(), total as usize);
    assert_eq!(seqs.len(), total as usize, "no event twice, none missing");
}

fn wait_until(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until nothing answers on any of `ports` (`what` names the wait in a timeout).
fn wait_ports_closed(ports: &[u16], what: &str) {
    for port in ports {
        wait_until(
            || std::net::TcpStream::connect(("127.0.0.1", *port)).is_err(),
            what,
        );
    }
}

/// `scripts/dev` with `env` and `args`, read until it says the stack runs.
struct DevStack {
    child: std::process::Child,
    /// Its output so far.
    output: String,
}

impl DevStack {
    fn start(env: &[(&str, String)], args: &[&str]) -> DevStack {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(keen_testkit::repo_root().join("scripts/dev"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("scripts/dev");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(line) => {
                    let done = line.contains("The local stack is running");
                    seen.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let mut stderr = String::new();
                        let _ = std::io::Read::read_to_string(
                            child.stderr.as_mut().expect("stderr"),
                            &mut stderr,
                        );
                        panic!(
                            "scripts/dev exited {status:?}:\n{}\n{stderr}",
                            seen.join("\n")
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "scripts/dev did not come up:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
        DevStack {
            child,
            output: seen.join("\n"),
        }
    }

    /// A crash of the whole stack: SIGKILL to the script and to every process it started (as
    /// listed in `state`/pids), nothing stopped in order, nothing drained.
    fn crash(mut self, state: &std::path::Path) {
        let pids = std::fs::read_to_string(state.join("pids")).expect("the stack's pids");
        let _ = self.child.kill();
        for pid in pids
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
        {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        let _ = self.child.wait();
    }

    /// Ctrl-C; waits until the script exits.
    fn interrupt(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "scripts/dev ignored Ctrl-C");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `GET path_and_query` on 127.0.0.1:`port`; the whole response.
fn http_get(port: u16, path_and_query: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("query API");
    write!(
        stream,
        "GET {path_and_query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).expect("read");
    response
}

const DEV_PROJECT: &str = "dddd0000dddd0000dddd0000";
const DEV_READ_KEY: &str = "read-key-for-the-dev-stack-0123456789";
const DEV_WRITE_KEY: &str = "write-key-for-the-dev-stack-0123456789";

/// A state directory, seven free ports and the environment of a `scripts/dev` of its own.
fn dev_setup(
    extra: &[(&'static str, &str)],
) -> (std::path::PathBuf, Vec<u16>, Vec<(&'static str, String)>) {
    let state = std::env::temp_dir().join(format!("keen-dev-{}", keen_testkit::unique_prefix("")));
    // Seven distinct ports: each is held until all are chosen, or the system could hand the same
    // released port out twice.
    let held: Vec<std::net::TcpListener> = (0..7)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind"))
        .collect();
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    drop(held);
    let mut env = vec![
        ("DEV_STATE_DIR", state.display().to_string()),
        ("DEV_PROFILE", "dev".to_owned()),
        ("DEV_AWS_PORT", ports[0].to_string()),
        ("DEV_GATEWAY_PORT", ports[1].to_string()),
        ("DEV_QUERY_PORT", ports[2].to_string()),
        ("DEV_BACKING_PORT", ports[3].to_string()),
        ("DEV_METRICS_PORT", ports[4].to_string()),
        ("DEV_DYNAMODB_PORT", ports[5].to_string()),
        ("DEV_BROKER_STORE_PORT", ports[6].to_string()),
        ("DEV_PROJECT_ID", DEV_PROJECT.to_owned()),
        (
            "DEV_MASTER_KEY",
            "master-key-for-the-dev-stack-0123456789".to_owned(),
        ),
        ("DEV_WRITE_KEY", DEV_WRITE_KEY.to_owned()),
        ("DEV_READ_KEY", DEV_READ_KEY.to_owned()),
        // Loads go in at once.
        ("GATEWAY_PROJECT_QUOTA_RECORDS_PER_SEC", "0".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    (state, ports, env)
}

/// The count of `collection` in the dev project, waited for until it reaches `expected` (two
/// minutes at most), then checked again a little later: counted once, nothing more arriving.
fn dev_count_settles_at(query_port: u16, collection: &str, expected: u64) {
    let path = format!(
        "/3.0/projects/{DEV_PROJECT}/queries/count?event_collection={collection}&api_key={DEV_READ_KEY}"
    );
    let expected = format!(r#"{{"result":{expected}}}"#);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut response = http_get(query_port, &path);
    while !response.ends_with(&expected) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        response = http_get(query_port, &path);
    }
    assert!(response.ends_with(&expected), "{response}");
    std::thread::sleep(Duration::from_secs(3));
    let response = http_get(query_port, &path);
    assert!(response.ends_with(&expected), "counted once: {response}");
}

/// With `DEV_BROKER_STORAGE=s3` the broker keeps the inbound topic: a load acknowledged and then
/// every process of the stack SIGKILLed at once loses nothing; restarted, the stack ingests what
/// was left, each event once.
#[test]
fn scripts_dev_with_a_kept_broker_loses_nothing_to_a_crash() {
    let bins = keen_e2e::binaries();
    assert!(bins.join("keen-gateway").exists());
    let (state, ports, env) = dev_setup(&[("DEV_BROKER_STORAGE", "s3")]);
    let dev = DevStack::start(&env, &[]);
    assert!(dev.output.contains("(1 in dev-demo)"), "{}", dev.output);
    let load = 3_000;
    let project_keys = Project {
        id: DEV_PROJECT.to_owned(),
        master_key: String::new(),
        write_key: DEV_WRITE_KEY.to_owned(),
        write_key_id: String::new(),
        read_key: DEV_READ_KEY.to_owned(),
    };
    let records: Vec<Value> = (0..load)
        .map(|n| json!({"value": json!({"seq": n}).to_string()}))
        .collect();
    let bootstrap = format!("127.0.0.1:{}", ports[1]);
    let answer = run_client(
        &python(),
        "confluent_produce.py",
        &client_args(&bootstrap, &project_keys, "load", json!(records)),
    );
    assert_eq!(answer["delivered"], json!(load), "{answer}");
    dev.crash(&state);
    wait_ports_closed(&ports, "the crashed stack's ports to close");
    let restarted = DevStack::start(&env, &[]);
    assert!(
        restarted.output.contains("(2 in dev-demo)"),
        "{}",
        restarted.output
    );
    dev_count_settles_at(ports[2], "load", load);
    restarted.interrupt();
    let _ = std::fs::remove_dir_all(&state);
}

/// The README's first command: `scripts/dev` starts the whole stack, shows one event counted,
/// refuses a second start while it runs, and stops everything on Ctrl-C (SIGINT), after the
/// event source mapping has ingested everything acknowledged (Ctrl-C comes right after a load).
/// Started again, it finds its data (the demo event, the load, the keys), each event once;
/// `--fresh` starts empty.
#[test]
fn scripts_dev_starts_the_stack_shows_it_working_and_stops_cleanly() {
    let bins = keen_e2e::binaries(); // built already: the script's own build is then a no-op
    assert!(bins.join("keen-gateway").exists());
    let (state, ports, env) = dev_setup(&[]);
    let project = DEV_PROJECT;
    let read_key = DEV_READ_KEY;
    let count = format!(
        "/3.0/projects/{project}/queries/count?event_collection=dev-demo&api_key={read_key}"
    );
    let dev = DevStack::start(&env, &[]);
    assert!(
        dev.output.contains("counted by the query API"),
        "{}",
        dev.output
    );
    // The demo event is there, through the printed query API.
    let response = http_get(ports[2], &count);
    assert!(response.ends_with(r#"{"result":1}"#), "{response}");

    // A second start says a stack runs.
    let second = Command::new(keen_testkit::repo_root().join("scripts/dev"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("second scripts/dev");
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    // A load, acknowledged, then Ctrl-C at once: the script drains the inbound topic, exits, and
    // every port is free again.
    let load = 3_000;
    let project_keys = Project {
        id: project.to_owned(),
        master_key: String::new(),
        write_key: "write-key-for-the-dev-stack-0123456789".to_owned(),
        write_key_id: String::new(),
        read_key: read_key.to_owned(),
    };
    let records: Vec<Value> = (0..load)
        .map(|n| json!({"value": json!({"seq": n}).to_string()}))
        .collect();
    let bootstrap = format!("127.0.0.1:{}", ports[1]);
    let answer = run_client(
        &python(),
        "confluent_produce.py",
        &client_args(&bootstrap, &project_keys, "load", json!(records)),
    );
    assert_eq!(answer["delivered"], json!(load), "{answer}");
    dev.interrupt();
    for port in &ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", *port)).is_err(),
            "port {port} still served after Ctrl-C"
        );
    }

    // Started again, the stack keeps its tables and keys: the first demo event and the second
    // are counted, once each, and the whole load.
    let again = DevStack::start(&env, &[]);
    assert!(again.output.contains("(2 in dev-demo)"), "{}", again.output);
    let response = http_get(ports[2], &count);
    assert!(response.ends_with(r#"{"result":2}"#), "{response}");
    let response = http_get(ports[2], &count.replace("dev-demo", "load"));
    assert!(
        response.ends_with(&format!(r#"{{"result":{load}}}"#)),
        "{response}"
    );
    // The same load again, in the same hour, from offset 0 of a new broker: counted in full.
    let answer = run_client(
        &python(),
        "confluent_produce.py",
        &client_args(&bootstrap, &project_keys, "load", json!(records)),
    );
    assert_eq!(answer["delivered"], json!(load), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected = format!(r#"{{"result":{}}}"#, 2 * load);
    let mut response = http_get(ports[2], &count.replace("dev-demo", "load"));
    while !response.ends_with(&expected) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        response = http_get(ports[2], &count.replace("dev-demo", "load"));
    }
    assert!(response.ends_with(&expected), "{response}");
    again.interrupt();
    wait_ports_closed(&ports, "the stopped stack's ports to close");

    // --fresh forgets it all.
    let fresh = DevStack::start(&env, &["--fresh"]);
    assert!(fresh.output.contains("(1 in dev-demo)"), "{}", fresh.output);
    fresh.interrupt();
    let _ = std::fs::remove_dir_all(&state);
}

/// Records that cannot be stored show up in the customer's dead-letter listing and on the
/// operator's SQS queue with their codes, and replay after a fix: a write key revoked by mistake
/// while records waited in the inbound topic dead-letters them (InvalidApiKeyError); once the key
/// is reinstated, `keenctl dead-letters replay` stores them exactly once (twice is still once),
/// and a record that is invalid on its own stays dead-lettered once, with its real reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_announced_and_replayable() {
    let mut stack = LocalStack::start().await;
    let a = stack.project(A, json!({})).await;
    // Records wait in the inbound topic while the mapping is down…
    assert!(stack.stop_esm("TERM"));
    let mut records: Vec<Value> = (0..5)
        .map(|n| json!({"value": json!({"order": n}).to_string()}))
        .collect();
    records.push(json!({"value": json!({"$bad": 1}).to_string()}));
    let answer = run_client(
        &python(),
        "confluent_produce.py",
        &client_args(&stack.bootstrap(), &a, "orders", json!(records)),
    );
    assert_eq!(answer["delivered"], 6, "{answer}");
    // …and the key that wrote them is revoked by mistake before they are processed.
    let (code, out, err) = stack.keenctl(&["revoke-key", A, &a.write_key_id]);
    assert_eq!(code, 0, "{out}{err}");
    stack.start_esm(&[]);

    let dead_path = format!("/3.0/projects/{A}/dead_letters?event_collection=orders");
    let letters = wait_for_letters(&stack, &a, &dead_path, 6);
    for letter in &letters {
        assert_eq!(letter["error"]["code"], "InvalidApiKeyError", "{letter}");
        assert_eq!(letter["collection"], "orders");
        assert_eq!(letter["source"]["topic"], keen_e2e::INBOUND_TOPIC);
        assert!(letter["payload"].as_str().is_some(), "{letter}");
    }
    assert_eq!(stack.count(&a, "orders"), 0);
    // The operator's queue announced each one, with its attributes.
    let queue = stack.provisioned.name("DEAD_LETTER_QUEUE_URL").to_owned();
    let mut announced = Vec::new();
    for _ in 0..20 {
        let page = stack
            .provisioned
            .sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .visibility_timeout(300)
            .send()
            .await
            .expect("receive");
        announced.extend(page.messages.unwrap_or_default());
        if announced.len() >= 6 {
            break;
        }
    }
    assert_eq!(announced.len(), 6);
    for message in &announced {
        let attribute = |name: &str| {
            message
                .message_attributes
                .as_ref()
                .and_then(|m| m.get(name))
                .and_then(|v| v.string_value.clone())
                .unwrap_or_default()
        };
        assert_eq!(attribute("error_code"), "InvalidApiKeyError");
        assert_eq!(attribute("project_id"), A);
        assert_eq!(attribute("collection"), "orders");
    }

    // The fix, then the replay (twice: the second stores nothing new).
    let (code, out, err) = stack.keenctl(&["unrevoke-key", A, &a.write_key_id]);
    assert_eq!(code, 0, "{out}{err}");
    for _ in 0..2 {
        let (code, out, err) = stack.keenctl(&[
            "dead-letters",
            "replay",
            "--project",
            A,
            "--collection",
            "orders",
        ]);
        // Exit 1: one record is still invalid.
        assert_eq!(code, 1, "{out}{err}");
        assert_eq!(stack.count(&a, "orders"), 5, "{out}");
    }
    let events = stack.extraction(&a, "orders");
    let orders: BTreeSet<i64> = events.iter().filter_map(|e| e["order"].as_i64()).collect();
    assert_eq!(orders, (0..5).collect());
    assert_eq!(events.len(), 5);
    // One dead letter is left: the record that is invalid on its own, with its real reason.
    let (status, body) = stack.get(&dead_path, &a.master_key);
    assert_eq!(status, 200, "{body}");
    let left = body["result"].as_array().expect("array");
    assert_eq!(left.len(), 1, "{body}");
    assert_eq!(left[0]["error"]["code"], "InvalidPropertyNameError");
    assert_eq!(left[0]["payload"], r#"{"$bad":1}"#);
}

fn wait_for_letters(
    stack: &LocalStack,
    project: &Project,
    path: &str,
    expected: usize,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = stack.get(path, &project.master_key);
        assert_eq!(status, 200, "{body}");
        let letters = body["result"].as_array().expect("array").clone();
        if letters.len() >= expected || Instant::now() >= deadline {
            assert_eq!(letters.len(), expected, "{body}");
            return letters;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
