//! The adapters on dynalite, the local DynamoDB stand-in (issue 14): provisioning from
//! `template.yaml` (without TTL, which dynalite lacks, said once), the BatchWriteItem engine
//! against DynamoDB's real limits (25 writes a call, 400 KB items), and tables that survive a
//! restart of the server on the same data directory; permanent refusals kept apart (moved here
//! from the moto suite, whose item limit is not DynamoDB's). SQS stays on moto.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use keen_aws::batch::{TableWrite, WriteBatcher, WriteOp};
use keen_aws::provision::{DeploymentSpec, ProvisionedNames, provision};
use keen_aws::retry::WriteErrorKind;
use keen_testkit::{DynaliteServer, MotoServer, count_items, unique_prefix};

fn item(i: usize, body_bytes: usize) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".into(),
            AttributeValue::S(format!("p1#purchases#2026-12-04#{}", i % 16)),
        ),
        ("sk".into(), AttributeValue::S(format!("{i:06}"))),
        (
            "body".into(),
            AttributeValue::B(vec![b'x'; body_bytes].into()),
        ),
    ])
}

async fn provisioned(
    dynalite: &DynaliteServer,
    moto: &MotoServer,
    prefix: &str,
) -> ProvisionedNames {
    let spec = DeploymentSpec::deployment().expect("template.yaml parses");
    provision(&dynalite.dynamodb(), &moto.sqs(), &spec, prefix)
        .await
        .expect("provisioning on dynalite and moto")
}

#[tokio::test]
async fn the_template_provisions_on_dynalite_and_says_which_tables_lack_ttl() {
    let (dynalite, moto) = (DynaliteServer::start(), MotoServer::start());
    let prefix = unique_prefix("dl-prov");
    let names = provisioned(&dynalite, &moto, &prefix).await;
    let spec = DeploymentSpec::deployment().expect("template.yaml parses");
    let client = dynalite.dynamodb();
    for table in &spec.tables {
        let name = table.physical_name(&prefix);
        assert_eq!(names.get(&table.env_var()), Some(name.as_str()));
        client
            .describe_table()
            .table_name(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name} exists: {e:?}"));
    }
    let mut with_ttl: Vec<String> = spec
        .tables
        .iter()
        .filter(|t| t.ttl_attribute.is_some())
        .map(|t| t.physical_name(&prefix))
        .collect();
    with_ttl.sort();
    let mut without: Vec<String> = names.without_ttl().to_vec();
    without.sort();
    assert!(!with_ttl.is_empty(), "the template asks for TTL somewhere");
    assert_eq!(without, with_ttl);
    // Provisioning again reuses everything.
    let again = provisioned(&dynalite, &moto, &prefix).await;
    assert_eq!(
        again.iter().collect::<Vec<_>>(),
        names.iter().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_write_engine_keeps_dynamodbs_limits_on_dynalite() {
    let (dynalite, moto) = (DynaliteServer::start(), MotoServer::start());
    let prefix = unique_prefix("dl-batch");
    let names = provisioned(&dynalite, &moto, &prefix).await;
    let table = names.get("EVENTS_TABLE").expect("events table").to_owned();
    // 1,000 writes (40 calls of 25 at least), one of them an item over 400 KB.
    let writes: Vec<TableWrite> = (0..1000)
        .map(|i| TableWrite {
            table: table.clone(),
            op: WriteOp::Put(item(i, if i == 500 { 410 * 1024 } else { 300 })),
            tag: i,
        })
        .collect();
    let report = WriteBatcher::new(dynalite.dynamodb())
        .write_all(writes)
        .await;
    assert_eq!(report.failed_tags, [500], "{report:?}");
    let refused = report.refused();
    assert_eq!(refused.len(), 1, "{report:?}");
    assert!(refused[0].1.contains("ValidationException"), "{refused:?}");
    assert!(report.calls >= 40, "{report:?}");
    assert_eq!(count_items(&dynalite.dynamodb(), &table).await, 999);

    // DynamoDB's own limit, straight: 26 writes in one call are refused.
    let requests: Vec<_> = (0..26)
        .map(|i| {
            aws_sdk_dynamodb::types::WriteRequest::builder()
                .put_request(
                    aws_sdk_dynamodb::types::PutRequest::builder()
                        .set_item(Some(item(2000 + i, 10)))
                        .build()
                        .expect("put"),
                )
                .build()
        })
        .collect();
    let error = dynalite
        .dynamodb()
        .batch_write_item()
        .request_items(&table, requests)
        .send()
        .await
        .expect_err("26 writes are refused");
    assert_eq!(
        aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&error),
        Some("ValidationException")
    );
}

#[tokio::test]
async fn tables_and_items_survive_a_restart_on_the_same_directory() {
    let data = std::env::temp_dir().join(unique_prefix("dynalite-data"));
    let moto = MotoServer::start();
    let prefix = unique_prefix("dl-keep");
    let dynalite = DynaliteServer::start_at(Some(&data));
    let names = provisioned(&dynalite, &moto, &prefix).await;
    let table = names.get("EVENTS_TABLE").expect("events table").to_owned();
    let writes: Vec<TableWrite> = (0..100)
        .map(|i| TableWrite {
            table: table.clone(),
            op: WriteOp::Put(item(i, 100)),
            tag: i,
        })
        .collect();
    let report = WriteBatcher::new(dynalite.dynamodb())
        .write_all(writes)
        .await;
    assert!(report.is_success(), "{report:?}");
    dynalite.stop();

    let restarted = DynaliteServer::start_at(Some(&data));
    assert_eq!(count_items(&restarted.dynamodb(), &table).await, 100);
    // Provisioning a restarted stack finds every table as it left it.
    let again = provisioned(&restarted, &moto, &prefix).await;
    assert_eq!(again.get("EVENTS_TABLE"), Some(table.as_str()));
    drop(restarted);
    let _ = std::fs::remove_dir_all(&data);
}

/// Refusals are final and stay with their own writes: an item over 400 KB (ValidationException)
/// and a write to a table that does not exist (ResourceNotFoundException) fail alone, are not
/// retried, and the 24 others land. On dynalite, not moto: moto draws the item limit at 405,000
/// bytes, not DynamoDB's 409,600.
#[tokio::test]
async fn refusals_are_permanent_and_isolated() {
    let (dynalite, moto) = (DynaliteServer::start(), MotoServer::start());
    let names = provisioned(&dynalite, &moto, &unique_prefix("dl-refuse")).await;
    let table = names.get("EVENTS_TABLE").expect("events table").to_owned();
    let put = |table: &str, i: usize, bytes: usize| TableWrite {
        table: table.to_owned(),
        op: WriteOp::Put(item(i, bytes)),
        tag: i,
    };
    let mut writes: Vec<TableWrite> = (0..25).map(|i| put(&table, i, 100)).collect();
    writes[9] = put(&table, 9, 410 * 1024);
    writes.push(put("no-such-table", 100, 1));

    let report = WriteBatcher::new(dynalite.dynamodb())
        .write_all(writes)
        .await;

    assert_eq!(report.failed_tags, [9, 100], "{report:?}");
    assert_eq!(report.tags_of(WriteErrorKind::Permanent), [9, 100]);
    assert_eq!(report.retries, 0, "nothing permanent is retried");
    let messages: Vec<&str> = report.errors.iter().map(|(_, _, m)| m.as_str()).collect();
    assert!(
        messages[0].starts_with("ValidationException"),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("ResourceNotFoundException"),
        "{messages:?}"
    );
    assert_eq!(count_items(&dynalite.dynamodb(), &table).await, 24);
}
