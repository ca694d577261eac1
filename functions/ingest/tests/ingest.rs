//! The ingest handler against moto (DynamoDB and SQS in server mode), with the MSK event of
//! `events/ingest-batch.json`: stored events, dead letters on the table and the queue, dedupe,
//! idempotent-producer resends, exact counters under redelivery, and injected write faults.

use aws_sdk_dynamodb::types::AttributeValue;
use keen_aws::batch::WriteBatcher;
use keen_aws::faults::{Fault, FaultInjecting};
use keen_aws::retry::Retrying;
use keen_ingest::DecodedRecord;
use keen_shared::addon::ReferenceData;
use keen_shared::key::KeyModel;
use keen_shared::record::Header;
use serde_json::{Value, json};
use std::sync::Arc;

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_batch_is_stored_dead_lettered_and_deduplicated() {
    let h = Harness::start("batch").await;
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    let records = batch_file();
    assert_eq!(records.len(), 8);

    let (response, counts) = ingest.handle(records.clone()).await;
    no_failures(&response);
    assert_eq!(counts.received, 8);
    assert_eq!(counts.stored, 3, "{counts:?}"); // 100, 103, 106
    assert_eq!(counts.duplicates, 1); // 104 repeats order-1
    assert_eq!(counts.resends, 1); // 107 repeats 106's producer identity
    assert_eq!(counts.dead_lettered_total(), 3);
    assert_eq!(counts.dead_lettered.get("InvalidEventError"), Some(&1));
    assert_eq!(
        counts.dead_lettered.get("InvalidPropertyNameError"),
        Some(&1)
    );
    assert_eq!(
        counts.dead_lettered.get("MissingTenantHeadersError"),
        Some(&1)
    );

    // The stored event reads back equal to the core's output.
    let heads = h.event_heads().await;
    assert_eq!(heads.len(), 3);
    let first = &records[0];
    let key: KeyModel = serde_json::from_value(json!({
        "key_id": KEY_ID, "project_id": PROJECT, "name": "writer", "kind": "write", "permitted": [], "is_active": true, "options": {}
    }))
    .expect("model");
    let data = ReferenceData::new(Some(geoip()));
    let expected = keen_shared::process(&first.as_inbound(), Some(&key), &data);
    let expected = expected.stored().expect("stored").clone();
    let layout = keen_shared::storage::EventLayout::new(16);
    let pk = layout.partition_key(
        PROJECT,
        "purchases",
        expected.timestamp_ms,
        &expected.keen_id,
    );
    let sk = keen_shared::storage::sort_key(expected.timestamp_ms, &expected.keen_id);
    let stored = keen_aws::events::read_event(&h.aws.dynamodb, &h.config.tables.events, &pk, &sk)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(stored, expected.json);
    let stored: Value = serde_json::from_str(&stored).expect("json");
    assert_eq!(
        stored["parsed_page_url"]["query_string"],
        json!({"source": "twitter", "foo": "bar/"})
    );
    assert_eq!(stored["timestamp_info"]["day_of_week_string"], "Saturday");
    assert_eq!(
        stored["ua"].as_str().map(|s| s.contains("CriOS")),
        Some(true)
    );

    // Dead letters: in the table and announced on the queue with attributes.
    let letters = h.scan(&h.config.tables.dead_letters).await;
    assert_eq!(letters.len(), 3);
    let messages = h.queue_messages().await;
    assert_eq!(messages.len(), 3);
    let mut codes: Vec<String> = messages
        .iter()
        .map(|m| {
            let body: Value =
                serde_json::from_str(m.body().unwrap_or_default()).expect("json body");
            assert!(body["source"]["offset"].is_i64());
            body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "InvalidEventError",
            "InvalidPropertyNameError",
            "MissingTenantHeadersError"
        ]
    );
    for message in &messages {
        let body: Value =
            serde_json::from_str(message.body().unwrap_or_default()).expect("json body");
        let attributes = message.message_attributes().expect("attributes");
        let code = attributes.get("error_code").and_then(|a| a.string_value());
        assert_eq!(code, body["error"]["code"].as_str());
        // SQS refuses empty attribute values: a record without tenant headers has no project.
        let project = attributes
            .get("project_id")
            .and_then(|a| a.string_value())
            .unwrap_or_default();
        assert_eq!(project, body["project_id"].as_str().unwrap_or_default());
    }

    assert_eq!(h.count("purchases").await, 3);
    let collection = h
        .aws
        .dynamodb
        .get_item()
        .table_name(&h.config.tables.collections)
        .key("pk", AttributeValue::S(PROJECT.into()))
        .key("sk", AttributeValue::S("purchases".into()))
        .send()
        .await
        .expect("get")
        .item
        .expect("collection item");
    let properties: Value = serde_json::from_str(
        keen_aws::items::string_attr(&collection, "properties").unwrap_or("{}"),
    )
    .expect("json");
    assert_eq!(properties["parsed_page_url.domain"], "string");
    assert_eq!(properties["price"], "number");

    // The same batch again: nothing stored twice, nothing counted twice.
    let (response, again) = ingest.handle(records).await;
    no_failures(&response);
    assert_eq!(h.event_heads().await.len(), 3);
    assert_eq!(h.count("purchases").await, 3);
    assert_eq!(again.duplicates, 1);
    // Nor dead-lettered twice: each record's dead letter is kept under the time it first failed,
    // so the redelivery overwrote the same three items.
    assert_eq!(again.dead_lettered_total(), 3);
    let sort_keys = |items: &[std::collections::HashMap<String, AttributeValue>]| {
        let mut keys: Vec<String> = items
            .iter()
            .filter_map(|item| keen_aws::items::string_attr(item, "sk").map(str::to_owned))
            .collect();
        keys.sort();
        keys
    };
    let letters_again = h.scan(&h.config.tables.dead_letters).await;
    assert_eq!(sort_keys(&letters_again), sort_keys(&letters));
    assert_eq!(letters_again.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_range_counts_only_what_is_new() {
    let h = Harness::start("retry").await;
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    let first: Vec<DecodedRecord> = (100..=200).map(simple_record).collect();
    no_failures(&ingest.handle(first).await.0);
    assert_eq!(h.count("clicks").await, 101);
    // Lambda redelivers 100–250 after 100–200 were processed: exactly 50 more.
    let retry: Vec<DecodedRecord> = (100..=250).map(simple_record).collect();
    no_failures(&ingest.handle(retry).await.0);
    assert_eq!(h.count("clicks").await, 151);
    assert_eq!(h.event_heads().await.len(), 151);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_throttling_is_retried_until_everything_is_stored() {
    let h = Harness::start("throttle").await;
    let faulty = FaultInjecting::shuffled(h.aws.dynamodb.clone(), 42, 10, 0.3, 4);
    let ingest = h.ingest(WriteBatcher::with_api(Arc::new(faulty)).with_policy(
        keen_aws::retry::RetryPolicy {
            max_attempts: 30,
            base_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(5),
        },
    ));
    let records: Vec<DecodedRecord> = (0..300).map(simple_record).collect();
    let (response, counts) = ingest.handle(records).await;
    no_failures(&response);
    assert!(counts.write_retries > 0, "faults were injected: {counts:?}");
    assert_eq!(h.event_heads().await.len(), 300);
    assert_eq!(h.count("clicks").await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_dead_lettered_and_a_failing_store_is_retried_from_the_first_offset() {
    let h = Harness::start("revoked").await;
    h.put_key(false).await;
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    let (response, counts) = ingest.handle((0..5).map(simple_record).collect()).await;
    no_failures(&response);
    assert_eq!(counts.dead_lettered.get("InvalidApiKeyError"), Some(&5));
    assert!(h.event_heads().await.is_empty());

    // Every write failing beyond the budget: the whole partition is retried from its first
    // offset, nothing is dead-lettered, nothing counted.
    h.put_key(true).await;
    let always_failing = FaultInjecting::scripted(
        h.aws.dynamodb.clone(),
        std::iter::repeat_n(Fault::throttle(), 1_000),
        7,
    );
    let ingest = h.ingest(
        WriteBatcher::with_api(Arc::new(always_failing)).with_policy(
            keen_aws::retry::RetryPolicy {
                max_attempts: 2,
                base_delay: std::time::Duration::from_millis(1),
                max_delay: std::time::Duration::from_millis(2),
            },
        ),
    );
    let (response, counts) = ingest.handle((10..20).map(simple_record).collect()).await;
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": {"partition": "keen-inbound-5", "offset": 10}}]})
    );
    assert_eq!(counts.retried, 10);
    assert_eq!(counts.dead_lettered_total(), 0);
    assert_eq!(h.count("clicks").await, 0);
}

/// Holds back every write of part 2 of any split event, forwarding the rest to the real client.
struct PartTwoFails(aws_sdk_dynamodb::Client);

impl keen_aws::batch::BatchWriteApi for PartTwoFails {
    fn batch_write(
        &self,
        mut request_items: std::collections::HashMap<
            String,
            Vec<aws_sdk_dynamodb::types::WriteRequest>,
        >,
    ) -> keen_aws::retry::BoxFuture<
        '_,
        Result<
            std::collections::HashMap<String, Vec<aws_sdk_dynamodb::types::WriteRequest>>,
            keen_aws::retry::CallError,
        >,
    > {
        let mut held = std::collections::HashMap::new();
        for (table, writes) in request_items.iter_mut() {
            let (part_two, rest): (Vec<_>, Vec<_>) =
                std::mem::take(writes).into_iter().partition(|w| {
                    w.put_request()
                        .and_then(|p| p.item().get("sk"))
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|sk| sk.ends_with("#part#2"))
                });
            *writes = rest;
            if !part_two.is_empty() {
                held.insert(table.clone(), part_two);
            }
        }
        request_items.retain(|_, w| !w.is_empty());
        Box::pin(async move {
            let mut unprocessed = if request_items.is_empty() {
                Default::default()
            } else {
                self.0.batch_write(request_items).await?
            };
            for (table, writes) in held {
                unprocessed
                    .entry(table)
                    .or_insert_with(Vec::new)
                    .extend(writes);
            }
            Ok(unprocessed)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_event_is_invisible_until_all_its_parts_are_written() {
    let h = Harness::start("large").await;
    // A valid 1,000,000-byte event that barely compresses (strings stay under 10,000 characters).
    let mut seed = 11u64;
    let mut chunk = || -> String {
        (0..9_990)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Printable ASCII without '"' and '\\', so the JSON text is the bytes themselves.
                let c = char::from(b'!' + ((seed >> 33) % 94) as u8);
                if c == '"' || c == '\\' { 'z' } else { c }
            })
            .collect()
    };
    let chunks: Vec<String> = (0..100).map(|_| chunk()).collect();
    let mut value = serde_json::to_string(&json!({ "chunks": chunks })).expect("json");
    let pad = 1_000_000 - value.len() - 9;
    value = format!("{{\"pad\":\"{}\",{}", "p".repeat(pad), &value[1..]);
    assert_eq!(value.len(), 1_000_000);
    let mut record = simple_record(42);
    record.value = Some(value.into_bytes());

    let failing = h.ingest(
        WriteBatcher::with_api(Arc::new(PartTwoFails(h.aws.dynamodb.clone()))).with_policy(
            keen_aws::retry::RetryPolicy {
                max_attempts: 3,
                base_delay: std::time::Duration::from_millis(1),
                max_delay: std::time::Duration::from_millis(2),
            },
        ),
    );
    let (response, counts) = failing.handle(vec![record.clone()]).await;
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": {"partition": "keen-inbound-5", "offset": 42}}]})
    );
    assert_eq!(counts.retried, 1);
    assert!(
        h.event_heads().await.is_empty(),
        "no head item while a part is missing"
    );
    assert_eq!(h.count("clicks").await, 0);

    // Lambda retries the record: stored once, reading back equal to the core's output.
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    no_failures(&ingest.handle(vec![record.clone()]).await.0);
    no_failures(&ingest.handle(vec![record.clone()]).await.0);
    let heads = h.event_heads().await;
    assert_eq!(heads.len(), 1);
    assert_eq!(
        heads[0].get("parts"),
        Some(&AttributeValue::N("3".into())),
        "the event is split in three parts"
    );
    assert_eq!(h.count("clicks").await, 1);
    let pk = keen_aws::items::string_attr(&heads[0], "pk").expect("pk");
    let sk = keen_aws::items::string_attr(&heads[0], "sk").expect("sk");
    let stored = keen_aws::events::read_event(&h.aws.dynamodb, &h.config.tables.events, pk, sk)
        .await
        .expect("read")
        .expect("present");
    let key: KeyModel = serde_json::from_value(json!({
        "key_id": KEY_ID, "project_id": PROJECT, "name": "writer", "kind": "write", "permitted": [], "is_active": true, "options": {}
    }))
    .expect("model");
    let expected =
        keen_shared::process(&record.as_inbound(), Some(&key), &ReferenceData::new(None));
    assert_eq!(
        Some(stored.as_str()),
        expected.stored().map(|e| e.json.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_in_a_later_invocation_is_stored_and_counted_once() {
    let h = Harness::start("resend").await;
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    let with_producer = |offset: i64| {
        let mut record = simple_record(offset);
        // The same producer record, resent through another gateway instance, lands at another
        // offset with the same identity and timestamp.
        record.timestamp_ms = 1_710_000_000_000;
        record
            .headers
            .push(Header::new("keen-producer", "77:0:1:5"));
        record
    };
    no_failures(&ingest.handle(vec![with_producer(300)]).await.0);
    let (response, counts) = ingest.handle(vec![with_producer(301)]).await;
    no_failures(&response);
    assert_eq!((counts.stored, counts.resends), (0, 1));
    assert_eq!(h.event_heads().await.len(), 1);
    assert_eq!(h.count("clicks").await, 1);
    // A retry of the first offset is a rewrite of its own item, not a resend.
    let (_, counts) = ingest.handle(vec![with_producer(300)]).await;
    assert_eq!((counts.stored, counts.resends), (1, 0));
    assert_eq!(h.count("clicks").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_with_a_replaced_timestamp_is_found_by_its_keen_id() {
    let h = Harness::start("clock").await;
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    // A producer two hours behind: each gateway instance that took a copy put its own clock in
    // the record timestamp, and said so.
    let copy = |offset: i64, clock_ms: i64| {
        let mut record = simple_record(offset);
        record.timestamp_ms = clock_ms;
        record.headers.extend([
            Header::new("keen-producer", "78:0:1:9"),
            Header::new("keen-producer-timestamp", "1709992800000"),
        ]);
        record
    };
    no_failures(&ingest.handle(vec![copy(400, 1_710_000_000_000)]).await.0);
    let (response, counts) = ingest.handle(vec![copy(401, 1_710_000_004_321)]).await;
    no_failures(&response);
    assert_eq!((counts.stored, counts.resends), (0, 1), "{counts:?}");
    assert_eq!(h.event_heads().await.len(), 1);
    assert_eq!(h.count("clicks").await, 1);
    // A retry of the first copy rewrites its own item.
    let (_, counts) = ingest.handle(vec![copy(400, 1_710_000_000_000)]).await;
    assert_eq!((counts.stored, counts.resends), (1, 0));
    assert_eq!(h.count("clicks").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_for_sqs_is_announced_by_reference_and_kept_whole() {
    let h = Harness::start("bigdl").await;
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    // 1,000,000 bytes of noise that is neither UTF-8 nor compressible: base64 alone is 1.33 MB.
    let noise = noise(5, 1_000_000);
    let mut record = simple_record(9);
    record.value = Some(noise.clone());
    let (response, counts) = ingest.handle(vec![record]).await;
    no_failures(&response);
    assert_eq!(counts.dead_lettered.get("InvalidEventError"), Some(&1));

    let messages = h.queue_messages().await;
    assert_eq!(messages.len(), 1);
    let body: keen_shared::dead_letter::DeadLetter =
        serde_json::from_str(messages[0].body().unwrap_or_default()).expect("envelope");
    assert_eq!(
        body.value_bytes(),
        None,
        "the announcement carries no payload"
    );
    let reference = body.payload_ref.expect("a reference to the table item");
    let stored = keen_aws::dead_letters::read_dead_letter(
        &h.aws.dynamodb,
        &h.config.tables.dead_letters,
        &reference,
    )
    .await
    .expect("read")
    .expect("present");
    assert_eq!(stored.value_bytes(), Some(noise), "never truncated");
    assert_eq!(stored.source.offset, 9);
    assert_eq!(stored.error.code, "InvalidEventError");

    // Too large as base64 but compressible: announced with the payload compressed, whole.
    let repetitive: Vec<u8> = (0..1_000_000u32).map(|i| 0x80 | (i % 7) as u8).collect();
    let mut record = simple_record(10);
    record.value = Some(repetitive.clone());
    no_failures(&ingest.handle(vec![record]).await.0);
    let messages = h.queue_messages().await;
    assert_eq!(messages.len(), 1);
    let body: keen_shared::dead_letter::DeadLetter =
        serde_json::from_str(messages[0].body().unwrap_or_default()).expect("envelope");
    assert!(body.payload_zstd_b64.is_some() && body.payload_ref.is_none());
    assert_eq!(body.value_bytes(), Some(repetitive));
}
