//! The built `keenctl` binary against a real moto server: provision, then keys.

use keen_testkit::{MotoServer, unique_prefix};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

const PEPPER: &str = "the keenctl test pepper, long enough";

/// `keenctl` with a clean AWS environment: only what the test passes reaches it.
fn keenctl(moto: &MotoServer, args: &[&str], stdin: Option<&str>) -> Output {
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
    let exports: BTreeMap<String, String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let assignment = line.strip_prefix("export ").expect("export lines");
            let (name, value) = assignment.split_once('=').expect("NAME=value");
            (name.to_owned(), value.to_owned())
        })
        .collect();
    let names: Vec<_> = exports.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "COLLECTIONS_TABLE",
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
