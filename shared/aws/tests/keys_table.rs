//! The Keys table adapter on a real moto server.

use keen_aws::keys_table::{KeysTable, KeysTableError};
use keen_shared::key::{
    KeyId, KeyKind, KeyModel, KeyOptions, ProjectSalt, StoredKey, generate_key,
};
use keen_testkit::{MotoServer, sdk_config_for, unique_prefix};

const PEPPER: &[u8] = b"a pepper for the keys table tests";

fn model(project_id: &str, kind: KeyKind) -> KeyModel {
    KeyModel {
        key_id: KeyId::generate(),
        project_id: project_id.to_owned(),
        name: format!("{kind:?} key"),
        kind,
        permitted: Vec::new(),
        is_active: true,
        options: KeyOptions::default(),
    }
}

#[tokio::test]
async fn projects_and_keys_round_trip() {
    let moto = MotoServer::start();
    let provisioned = moto.provisioned(&unique_prefix("keys")).await;
    let table = KeysTable::new(provisioned.dynamodb.clone(), provisioned.name("KEYS_TABLE"));
    table.warm_up().await.expect("table reachable");

    assert_eq!(table.get_project("p1").await.expect("read"), None);
    let salt = table.put_project("p1").await.expect("created");
    assert_eq!(
        table.put_project("p1").await.expect("again"),
        salt,
        "idempotent"
    );
    assert_eq!(
        table.get_project("p1").await.expect("read"),
        Some(salt.clone())
    );

    let keys: Vec<StoredKey> = [KeyKind::Master, KeyKind::Write, KeyKind::Read]
        .into_iter()
        .map(|kind| StoredKey::derive(model("p1", kind), &generate_key(), PEPPER, &salt))
        .collect();
    for key in &keys {
        table.put_key(key).await.expect("put");
    }
    let error = table.put_key(&keys[0]).await.expect_err("same key id");
    assert!(matches!(error, KeysTableError::KeyExists { .. }), "{error}");
    assert!(!error.is_transient());

    let got = table
        .get_key("p1", &keys[1].model.key_id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(got, keys[1]);
    assert_eq!(
        table
            .get_key("p2", &keys[1].model.key_id)
            .await
            .expect("read"),
        None,
        "keys are per project"
    );

    let mut listed = table.list_keys("p1").await.expect("list");
    listed.sort_by(|a, b| a.model.key_id.cmp(&b.model.key_id));
    let mut expected = keys.clone();
    expected.sort_by(|a, b| a.model.key_id.cmp(&b.model.key_id));
    assert_eq!(listed, expected);
    assert!(table.list_keys("p2").await.expect("list").is_empty());

    // What the query function reads: the same keys, in the same order, without verifiers.
    let digested = table.list_digested_keys("p1").await.expect("list digested");
    let full = table.list_keys("p1").await.expect("list");
    assert_eq!(digested.len(), full.len());
    for (digested, full) in digested.iter().zip(&full) {
        assert_eq!(digested.model, full.model);
        assert_eq!(digested.digest, full.digest);
    }
    assert!(
        table
            .list_digested_keys("p2")
            .await
            .expect("list")
            .is_empty()
    );

    table
        .set_active("p1", &keys[1].model.key_id, false)
        .await
        .expect("revoke");
    let revoked = table
        .get_key("p1", &keys[1].model.key_id)
        .await
        .expect("read")
        .expect("present");
    assert!(!revoked.model.is_active);
    table
        .set_active("p1", &keys[1].model.key_id, true)
        .await
        .expect("unrevoke");

    table
        .delete_key("p1", &keys[2].model.key_id)
        .await
        .expect("delete");
    assert_eq!(table.list_keys("p1").await.expect("list").len(), 2);
    let absent = KeyId::generate();
    for error in [
        table
            .delete_key("p1", &keys[2].model.key_id)
            .await
            .expect_err("gone"),
        table
            .set_active("p1", &absent, false)
            .await
            .expect_err("absent"),
    ] {
        assert!(
            matches!(error, KeysTableError::KeyNotFound { .. }),
            "{error}"
        );
    }
}

#[tokio::test]
async fn failures_say_whether_to_retry() {
    let moto = MotoServer::start();
    let missing = KeysTable::new(moto.dynamodb(), "no-such-table");
    let error = missing.get_project("p1").await.expect_err("no table");
    assert!(matches!(error, KeysTableError::Service { .. }), "{error}");
    assert!(!error.is_transient());

    // A server that is not there: the connection is refused, which is worth retrying. The
    // testkit's configuration, with the SDK's default retries (and so its sleep), still ends in
    // a dispatch failure rather than a configuration error.
    let port = moto.port();
    drop(moto);
    let config = sdk_config_for(&format!("http://127.0.0.1:{port}"));
    let down = KeysTable::new(aws_sdk_dynamodb::Client::new(&config), "t");
    let error = down.get_project("p1").await.expect_err("down");
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("dispatch"), "{error}");
}

#[tokio::test]
async fn salts_never_change_once_written() {
    let moto = MotoServer::start();
    let provisioned = moto.provisioned(&unique_prefix("salt")).await;
    let table = KeysTable::new(provisioned.dynamodb.clone(), provisioned.name("KEYS_TABLE"));
    // Concurrent first writers all end up with the one stored salt.
    let (a, b, c) = tokio::join!(
        table.put_project("p9"),
        table.put_project("p9"),
        table.put_project("p9")
    );
    let salts: Vec<ProjectSalt> = vec![a.expect("a"), b.expect("b"), c.expect("c")];
    assert!(salts.iter().all(|salt| *salt == salts[0]));
    assert_eq!(
        table.get_project("p9").await.expect("read"),
        Some(salts[0].clone())
    );
}
