//! The DynamoDB write engine (`keen_aws::batch`) against a real moto server, with
//! faults injected around the real client (moto itself never throttles nor leaves items
//! unprocessed).

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use keen_aws::batch::{TableWrite, WriteBatcher, WriteOp};
use keen_aws::faults::{Fault, FaultInjecting};
use keen_aws::retry::WriteErrorKind;
use keen_testkit::{MotoServer, count_items, unique_prefix};

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn event(i: usize, body: Vec<u8>) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".into(),
            s(&format!("p1#purchases#2026-11-25#{}", i % 16)),
        ),
        ("sk".into(), s(&format!("{i:06}#{i:024x}"))),
        ("body".into(), AttributeValue::B(body.into())),
    ])
}

fn put(table: &str, item: HashMap<String, AttributeValue>, tag: usize) -> TableWrite {
    TableWrite {
        table: table.into(),
        op: WriteOp::Put(item),
        tag,
    }
}

async fn get(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sk: &str,
) -> Option<HashMap<String, AttributeValue>> {
    client
        .get_item()
        .table_name(table)
        .key("pk", s(pk))
        .key("sk", s(sk))
        .consistent_read(true)
        .send()
        .await
        .expect("get_item")
        .item
}

#[tokio::test]
async fn a_thousand_items_land_despite_unprocessed_items_and_throttling() {
    let moto = MotoServer::start();
    let provisioned = moto.provisioned(&unique_prefix("batch")).await;
    let table = provisioned.name("EVENTS_TABLE").to_owned();
    // 40 first calls for 1,000 items. 60 scripted faults, played one per call whichever call
    // comes: 56 calls answer 30% of their items unprocessed, 4 are throttled whole (all four
    // among the first 40 faults, so they are certainly played).
    let script: Vec<Fault> = (0..60)
        .map(|i| {
            if [3, 11, 19, 27].contains(&i) {
                Fault::throttle()
            } else {
                Fault::Unprocessed { fraction: 0.3 }
            }
        })
        .collect();
    let faulty = Arc::new(FaultInjecting::scripted(
        provisioned.dynamodb.clone(),
        script,
        2026,
    ));
    let batcher = WriteBatcher::with_api(faulty.clone());
    let writes = (0..1000)
        .map(|i| put(&table, event(i, vec![(i % 251) as u8; 200]), i))
        .collect();

    let report = batcher.write_all(writes).await;

    assert!(report.is_success(), "{:?}", report.errors);
    assert_eq!(count_items(&provisioned.dynamodb, &table).await, 1000);
    let injected = faulty.injected();
    assert_eq!(injected.failed_calls, 4);
    assert!(injected.withheld >= 7, "{injected:?}");
    assert_eq!(report.calls, injected.calls);
    assert_eq!(report.retries, report.calls - 40);
    let item = get(
        &provisioned.dynamodb,
        &table,
        "p1#purchases#2026-11-25#7",
        &format!("{:06}#{:024x}", 999, 999),
    )
    .await
    .expect("the last item is stored");
    assert_eq!(
        item.get("body"),
        Some(&AttributeValue::B(vec![(999 % 251) as u8; 200].into()))
    );
    eprintln!(
        "1,000 items: {} calls, {} retries, {injected:?}",
        report.calls, report.retries
    );
}

#[tokio::test]
async fn writes_to_one_key_land_in_order() {
    let moto = MotoServer::start();
    let provisioned = moto.provisioned(&unique_prefix("order")).await;
    let table = provisioned.name("EVENTS_TABLE").to_owned();
    let batcher = WriteBatcher::new(provisioned.dynamodb.clone());
    let key = |i| {
        let mut key = event(i, Vec::new());
        key.remove("body");
        key
    };
    let writes = vec![
        put(&table, event(1, vec![1]), 0),
        put(&table, event(2, vec![2]), 1),
        put(&table, event(1, vec![3]), 2),
        TableWrite {
            table: table.clone(),
            op: WriteOp::Delete(key(2)),
            tag: 3,
        },
        put(&table, event(1, vec![4]), 4),
    ];

    let report = batcher.write_all(writes).await;

    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.calls, 3, "three generations of key 1");
    let one = get(
        &provisioned.dynamodb,
        &table,
        "p1#purchases#2026-11-25#1",
        &format!("{:06}#{:024x}", 1, 1),
    )
    .await;
    assert_eq!(
        one.and_then(|item| item.get("body").cloned()),
        Some(AttributeValue::B(vec![4].into()))
    );
    assert_eq!(
        count_items(&provisioned.dynamodb, &table).await,
        1,
        "key 2 put then deleted"
    );
}
