//! The built `keenctl` binary against a real moto server: provision, then keys; dead letters
//! written by the ingest handler, listed, shown and replayed.

use keen_testkit::{DynaliteServer, MotoServer, count_items, unique_prefix};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

const PEPPER: &str = "the keenctl test pepper, long enough";

/// `keenctl` with a clean AWS environment: only what the test passes reaches it.
fn keenctl(moto: &MotoServer, args: &[&str], stdin: Option<&str>) -> Output {
    keenctl_with_env(moto, args, stdin, &BTreeMap::new())
}

/// As [`keenctl`], with `env` set on top.
fn keenctl_with_env(
    moto: &MotoServer,
    args: &[&str],
    stdin: Option<&str>,
    env: &BTreeMap<String, String>,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keenctl"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(&name);
        }
    }
    command
        .args(["--endpoint-url", moto.endpoint(), "--region", "us-east-1"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TEST_PEPPER", PEPPER)
        .env_remove("KEY_PEPPER")
        .env_remove("KEYS_TABLE")
        .envs(env)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("keenctl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("stdin written");
    }
    child.wait_with_output().expect("keenctl finished")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "keenctl failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// The `export NAME=value` lines of `keenctl provision`.
fn exports_of(output: &Output) -> BTreeMap<String, String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let assignment = line.strip_prefix("export ").expect("export lines");
            let (name, value) = assignment.split_once('=').expect("NAME=value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn provision_create_import_and_list_keys() {
    let moto = MotoServer::start();
    let prefix = unique_prefix("cli");
    let output = keenctl(&moto, &["provision", "--prefix", &prefix], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let exports = exports_of(&output);
    let names: Vec<_> = exports.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "COLLECTIONS_TABLE",
            "COUNTERS_TABLE",
            "DEAD_LETTERS_TABLE",
            "DEAD_LETTER_QUEUE_URL",
            "DEDUPE_TABLE",
            "EVENTS_TABLE",
            "KEYS_TABLE"
        ]
    );
    let keys_table = exports["KEYS_TABLE"].clone();
    assert_eq!(keys_table, format!("{prefix}KeysTable"));
    // Provisioning again is harmless and prints the same.
    let again = keenctl(&moto, &["provision", "--prefix", &prefix], None);
    assert_eq!(again.stdout, output.stdout);

    let base = [
        "--keys-table",
        keys_table.as_str(),
        "--pepper-env",
        "TEST_PEPPER",
    ];
    let run = |args: &[&str], stdin: Option<&str>| {
        let all: Vec<&str> = base.iter().chain(args).copied().collect();
        keenctl(&moto, &all, stdin)
    };

    let created = json_of(&run(
        &[
            "create-key",
            "p1",
            "--name",
            "tenant 7",
            "--kind",
            "access",
            "--permitted",
            "writes,queries",
            "--options",
            r#"{"writes":{"autofill":{"tenant":{"id":7}}}}"#,
        ],
        None,
    ));
    let key = created["key"].as_str().expect("key shown once");
    assert_eq!(key.len(), 64);
    let key_id = created["key_id"].as_str().expect("key_id");

    let imported_key = "an imported key read from stdin!".replace(' ', "-");
    let imported = json_of(&run(
        &[
            "import-key",
            "p1",
            "--name",
            "mine",
            "--kind",
            "write",
            "--key",
            "-",
        ],
        Some(&format!("{imported_key}\n")),
    ));
    let imported_id = imported["key_id"].as_str().expect("key_id");

    let listed = json_of(&run(&["list-keys", "p1"], None));
    let text = listed.to_string();
    assert!(!text.contains(key), "list-keys shows a key");
    assert!(!text.contains(&imported_key), "list-keys shows a key");
    let keys = listed["keys"].as_array().expect("keys");
    let mut ids: Vec<&str> = keys.iter().filter_map(|k| k["key_id"].as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![key_id, imported_id];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let tenant = keys
        .iter()
        .find(|k| k["key_id"] == key_id)
        .expect("created key");
    assert_eq!(
        tenant["permitted"],
        serde_json::json!(["writes", "queries"])
    );
    assert_eq!(tenant["options"]["writes"]["autofill"]["tenant"]["id"], 7);

    let revoked = json_of(&run(&["revoke-key", "p1", key_id], None));
    assert_eq!(revoked["is_active"], false);

    // A refusal prints the answer and exits 1.
    let refused = run(&["list-keys", "nobody"], None);
    assert_eq!(refused.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&refused.stdout).expect("JSON");
    assert_eq!(answer["error"]["code"], "ProjectNotFound");

    // Usage errors exit 2 and say what is wrong.
    let usage = run(&["create-key", "p1", "--kind", "write"], None);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--name is required"));

    // A missing pepper is a configuration failure (exit 3) that names the variable.
    let no_pepper = keenctl(
        &moto,
        &["--keys-table", &keys_table, "list-keys", "p1"],
        None,
    );
    assert_eq!(no_pepper.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&no_pepper.stderr).contains("KEY_PEPPER is not set"));
}

/// The local stack's split: the tables on dynalite (`--dynamodb-endpoint-url`), the queue on
/// moto (`--endpoint-url`); dynalite has no TimeToLive API, which provisioning says once.
#[tokio::test]
async fn provision_splits_tables_and_queue_between_two_endpoints() {
    let moto = MotoServer::start();
    let dynalite = DynaliteServer::start();
    let prefix = unique_prefix("cli");
    let tables = ["--dynamodb-endpoint-url", dynalite.endpoint()];
    let provision: Vec<&str> = tables
        .iter()
        .copied()
        .chain(["provision", "--prefix", &prefix])
        .collect();
    let output = keenctl(&moto, &provision, None);
    let exports = exports_of(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("no TimeToLive API").count(),
        1,
        "said once: {stderr}"
    );

    let on_dynalite = dynalite
        .dynamodb()
        .list_tables()
        .send()
        .await
        .expect("tables");
    let on_moto = moto.dynamodb().list_tables().send().await.expect("tables");
    assert_eq!(on_dynalite.table_names().len(), 6, "{on_dynalite:?}");
    assert!(on_moto.table_names().is_empty(), "{on_moto:?}");
    let queue = &exports["DEAD_LETTER_QUEUE_URL"];
    assert!(queue.starts_with(moto.endpoint()), "{queue}");

    // Keys go to dynalite's Keys table, and are read back from there.
    let keys_table = exports["KEYS_TABLE"].as_str();
    let run = |args: &[&str]| {
        let all: Vec<&str> = tables
            .iter()
            .copied()
            .chain(["--keys-table", keys_table, "--pepper-env", "TEST_PEPPER"])
            .chain(args.iter().copied())
            .collect();
        keenctl(&moto, &all, None)
    };
    assert_eq!(count_items(&dynalite.dynamodb(), keys_table).await, 0);
    json_of(&run(&[
        "create-key",
        "p1",
        "--name",
        "n",
        "--kind",
        "write",
    ]));
    assert!(count_items(&dynalite.dynamodb(), keys_table).await > 0);
    let listed = json_of(&run(&["list-keys", "p1"]));
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(1), "{listed}");
}

fn text_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Records as the gateway stamps them, written by `key_id` of project `p1`.
fn inbound(key_id: &str, offset: i64, value: &str) -> keen_ingest::DecodedRecord {
    use keen_shared::record::{HEADER_COLLECTION, HEADER_KEY_ID, HEADER_PROJECT_ID, Header};
    keen_ingest::DecodedRecord {
        topic: "keen-inbound".into(),
        partition: 1,
        offset,
        timestamp_ms: 1_710_000_000_000 + offset,
        key: None,
        value: Some(value.as_bytes().to_vec()),
        headers: vec![
            Header::new(HEADER_PROJECT_ID, "p1"),
            Header::new(HEADER_COLLECTION, "clicks"),
            Header::new(HEADER_KEY_ID, key_id),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_replayed_after_a_key_is_reinstated() {
    let moto = MotoServer::start();
    let prefix = unique_prefix("cli-dl");
    let mut env = exports_of(&keenctl(&moto, &["provision", "--prefix", &prefix], None));
    env.insert("GEOIP_DATABASE".into(), String::new());
    let run = |args: &[&str]| {
        let all: Vec<&str> = ["--pepper-env", "TEST_PEPPER"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        keenctl_with_env(&moto, &all, None, &env)
    };

    // A key revoked by mistake: what it wrote is dead-lettered, as is a value that is no JSON.
    let created = json_of(&run(&[
        "create-key",
        "p1",
        "--name",
        "w",
        "--kind",
        "write",
    ]));
    let key_id = created["key_id"].as_str().expect("key_id").to_owned();
    json_of(&run(&["revoke-key", "p1", &key_id]));
    let dynamodb = moto.dynamodb();
    let config = keen_ingest::Config::read(&keen_config::Env::from_pairs(env.clone()))
        .expect("ingest config");
    let ingest = keen_ingest::Ingest::with_clients(
        config.clone(),
        dynamodb.clone(),
        moto.sqs(),
        std::sync::Arc::new(keen_shared::addon::ReferenceData::new(None)),
    );
    let (_, counts) = ingest
        .handle(vec![
            inbound(&key_id, 0, r#"{"n":0}"#),
            inbound(&key_id, 1, r#"{"n":1}"#),
            inbound(&key_id, 2, "not json"),
        ])
        .await;
    assert_eq!(counts.dead_lettered_total(), 3, "{counts:?}");
    json_of(&run(&["unrevoke-key", "p1", &key_id]));

    let list = |extra: &[&str]| {
        let mut args = vec!["dead-letters", "list", "--project", "p1"];
        args.extend_from_slice(extra);
        let output = run(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        text_of(&output)
    };
    let table = list(&[]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("FAILED_AT"));
    assert!(table.contains("keen-inbound/1/2"));
    assert_eq!(list(&["--code", "InvalidApiKeyError"]).lines().count(), 3);
    assert_eq!(
        list(&["--collection", "clicks", "--limit", "1"])
            .lines()
            .count(),
        2
    );
    assert_eq!(
        list(&["--until", "2000-01-01T00:00:00Z"]).lines().count(),
        1
    );
    let bad = run(&[
        "dead-letters",
        "list",
        "--project",
        "p1",
        "--since",
        "yesterday",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));

    // show: the whole envelope.
    let invalid_id = lines
        .iter()
        .find(|l| l.contains("keen-inbound/1/2"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("id column")
        .to_owned();
    let shown = json_of(&run(&[
        "dead-letters",
        "show",
        "--project",
        "p1",
        "--collection",
        "clicks",
        "--id",
        &invalid_id,
    ]));
    assert_eq!(shown["payload"], "not json");
    assert_eq!(shown["source"]["offset"], 2);
    assert_eq!(shown["error"]["code"], "InvalidEventError");

    // A dry run writes nothing.
    let dry = run(&["dead-letters", "replay", "--project", "p1", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(1), "{}", text_of(&dry));
    assert_eq!(
        text_of(&dry).matches("would be stored").count(),
        2,
        "{}",
        text_of(&dry)
    );
    assert_eq!(list(&[]).lines().count(), 4);

    // Replay: two stored, one still invalid (exit 1), and only that one is left.
    let replayed = run(&["dead-letters", "replay", "--project", "p1"]);
    let report = text_of(&replayed);
    assert_eq!(replayed.status.code(), Some(1), "{report}");
    assert_eq!(report.matches("  stored (").count(), 2, "{report}");
    assert!(
        report.contains("still invalid (InvalidEventError)"),
        "{report}"
    );
    assert!(
        report.contains("3 dead letters: still invalid 1, stored 2"),
        "{report}"
    );
    let left = list(&[]);
    assert_eq!(left.lines().count(), 2, "{left}");
    assert!(left.contains(&invalid_id));

    // Again: nothing new is stored or counted.
    let again = run(&[
        "dead-letters",
        "replay",
        "--project",
        "p1",
        "--id",
        &invalid_id,
        "--id",
        "000000000000000000000000",
    ]);
    let report = text_of(&again);
    assert!(
        report.contains("000000000000000000000000  not found"),
        "{report}"
    );
    assert!(
        report.contains("1 dead letters: still invalid 1"),
        "{report}"
    );
    let counted: u64 =
        keen_aws::counters::read_counters(&dynamodb, &config.tables.counters, "p1", "clicks")
            .await
            .expect("counters")
            .iter()
            .map(|(_, n)| n)
            .sum();
    assert_eq!(counted, 2);

    // Replay without the ingest's environment says what is missing.
    let bare = keenctl(&moto, &["dead-letters", "replay", "--project", "p1"], None);
    assert_eq!(bare.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("EVENTS_TABLE"));
}
