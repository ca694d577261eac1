//! Records that used to stop a partition for good: each must reach a terminal outcome (stored,
//! or dead-lettered with a reason) in one invocation, and the records after it must go on.
//! Against moto, which refuses items over 405,000 bytes as DynamoDB refuses them over 400 KB.

use aws_sdk_dynamodb::types::{AttributeValue, WriteRequest};
use keen_aws::batch::{BatchWriteApi, WriteBatcher};
use keen_aws::dead_letters::{DeadLetterQuery, list_dead_letters};
use keen_aws::retry::{BoxFuture, CallError};
use keen_shared::dead_letter::DeadLetter;
use keen_shared::record::Header;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::*;

fn invalid_with(offset: i64, value: &[u8]) -> keen_ingest::DecodedRecord {
    let mut record = simple_record(offset);
    record.value = Some(value.to_vec());
    record
}

async fn dead_letters(h: &Harness) -> Vec<DeadLetter> {
    let query = DeadLetterQuery {
        project_id: PROJECT.to_owned(),
        collection: Some("clicks".to_owned()),
        limit: 100,
        ..DeadLetterQuery::default()
    };
    list_dead_letters(&h.aws.dynamodb, &h.config.tables.dead_letters, &query)
        .await
        .expect("dead letters")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_pills_are_dead_lettered_or_stored_and_the_partition_goes_on() {
    let h = Harness::start("poison").await;
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));

    // 1. Not JSON, and U+FFFF, a character SQS refuses raw.
    let ffff = invalid_with(1, b"\xEF\xBF\xBF");
    // 2. A 320 KB key and an invalid value: key and payload together pass 400 KB.
    let mut big_key = invalid_with(2, b"{");
    big_key.key = Some(vec![b'k'; 320_000]);
    // 3. A 320 KB header of noise (base64 in the envelope: 427 KB) and an invalid value.
    let mut big_header = invalid_with(3, b"[1]");
    big_header
        .headers
        .push(Header::new("x-trace", noise(3, 320_000)));
    // 4. A valid event with 800 property paths of ~500 characters: the schema of its collection
    //    would pass 400 KB.
    let mut wide = Map::new();
    for i in 0..800 {
        let parent = format!("{i:04}{}", "p".repeat(246));
        wide.insert(parent, json!({ "c".repeat(249): i }));
    }
    let wide = invalid_with(4, Value::Object(wide).to_string().as_bytes());
    // 5. Thousands of user-agent parses of a 9,999-character user agent.
    let addons: Vec<Value> = (0..5_000)
        .map(|i| json!({"name": "keen:ua_parser", "input": {"ua_string": "ua"}, "output": format!("o{i}")}))
        .collect();
    let parses = json!({"ua": "Mozilla/5.0 ".repeat(834)[..9_999], "keen": {"addons": addons}});
    let parses = invalid_with(5, parses.to_string().as_bytes());
    // 6. And an honest event after them all.
    let honest = simple_record(6);

    let started = Instant::now();
    let (response, counts) = ingest
        .handle(vec![ffff, big_key, big_header, wide, parses, honest])
        .await;
    let took = started.elapsed();
    no_failures(&response);
    assert_eq!(counts.stored, 2, "{counts:?}");
    assert_eq!(counts.dead_lettered.get("InvalidEventError"), Some(&3));
    assert_eq!(counts.dead_lettered.get("InvalidAddonError"), Some(&1));
    assert_eq!((counts.last_resort, counts.unrecorded), (0, 0));
    assert_eq!(h.count("clicks").await, 2);
    eprintln!("six records in {took:?}");

    // Every dead letter is whole in the table: key, headers and payload.
    let letters = dead_letters(&h).await;
    let by_offset = |offset: i64| {
        letters
            .iter()
            .find(|l| l.source.offset == offset)
            .unwrap_or_else(|| panic!("dead letter of offset {offset}"))
    };
    assert_eq!(by_offset(1).payload.as_deref(), Some("\u{FFFF}"));
    assert_eq!(by_offset(1).error.detail.as_deref(), Some("invalid_json"));
    let key = by_offset(2).key_bytes().expect("key");
    assert_eq!(key.len(), 320_000);
    assert_eq!(by_offset(2).value_bytes(), Some(b"{".to_vec()));
    let trace = by_offset(3)
        .headers()
        .into_iter()
        .find(|h| h.name == "x-trace")
        .expect("header kept");
    assert_eq!(trace.value, noise(3, 320_000));
    assert_eq!(by_offset(5).error.code, "InvalidAddonError");
    assert!(
        by_offset(5).error.message.contains("32"),
        "{}",
        by_offset(5).error.message
    );

    // Every dead letter is announced, the U+FFFF one as a JSON escape that reads back exactly.
    let messages = h.queue_messages().await;
    assert_eq!(messages.len(), 4);
    let announced: Vec<DeadLetter> = messages
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap_or_default()).expect("envelope"))
        .collect();
    let first = announced
        .iter()
        .find(|l| l.source.offset == 1)
        .expect("announced");
    assert_eq!(first.value_bytes(), Some(b"\xEF\xBF\xBF".to_vec()));
    let body = messages
        .iter()
        .map(|m| m.body().unwrap_or_default())
        .find(|b| b.contains("\\uFFFF"))
        .expect("escaped");
    assert!(!body.contains('\u{FFFF}'));

    // The wide collection's item stays under DynamoDB's limit and says it left paths out.
    let item = h
        .scan(&h.config.tables.collections)
        .await
        .into_iter()
        .find(|i| keen_aws::items::string_attr(i, "sk") == Some("clicks"))
        .expect("collection item");
    assert!(
        keen_aws::items::item_size(&item) < 400_000,
        "{}",
        keen_aws::items::item_size(&item)
    );
    assert_eq!(
        item.get("properties_truncated"),
        Some(&AttributeValue::Bool(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_on_over_its_input_bound_is_dead_lettered() {
    let h = Harness::start("addon-bound").await;
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    let spec = json!({"name": "keen:ua_parser", "input": {"ua_string": "ua"}, "output": "device"});
    let event = |ua: String| json!({"ua": ua, "keen": {"addons": [spec.clone()]}}).to_string();
    let long = invalid_with(1, event("a".repeat(2_049)).as_bytes());
    let fine = invalid_with(2, event("a".repeat(2_048)).as_bytes());
    let (response, counts) = ingest.handle(vec![long, fine]).await;
    no_failures(&response);
    assert_eq!(counts.stored, 1, "{counts:?}");
    let letters = dead_letters(&h).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].source.offset, 1);
    assert_eq!(letters[0].error.path.as_deref(), Some("$.ua"));
    assert!(
        letters[0].error.message.contains("2049 bytes"),
        "{}",
        letters[0].error.message
    );
}

/// Forwards every write to the real client, except those `refuse` picks: refused as DynamoDB
/// refuses an item over its size limit.
struct Refusing {
    inner: aws_sdk_dynamodb::Client,
    refuse: fn(&str, &HashMap<String, AttributeValue>) -> bool,
}

impl BatchWriteApi for Refusing {
    fn batch_write(
        &self,
        request_items: HashMap<String, Vec<WriteRequest>>,
    ) -> BoxFuture<'_, Result<HashMap<String, Vec<WriteRequest>>, CallError>> {
        let refused = request_items.iter().any(|(table, writes)| {
            writes
                .iter()
                .filter_map(|w| w.put_request())
                .any(|put| (self.refuse)(table, put.item()))
        });
        Box::pin(async move {
            if refused {
                return Err(CallError::permanent(
                    "ValidationException",
                    "Item size has exceeded the maximum allowed size",
                ));
            }
            self.inner.batch_write(request_items).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_never_retried_and_leave_a_last_resort_dead_letter() {
    let h = Harness::start("refusals").await;
    // Events of offset 3 and every whole dead letter (one with a payload) are refused.
    let refusing = Refusing {
        inner: h.aws.dynamodb.clone(),
        refuse: |table, item| {
            let sk = item.get("sk").and_then(|v| v.as_s().ok()).cloned();
            (table.contains("Events") && item.contains_key("src") && {
                let src = item.get("src").and_then(|v| v.as_s().ok());
                src.is_some_and(|s| s.ends_with(":3"))
            }) || (table.contains("DeadLetters")
                && (item.contains_key("payload") || item.contains_key("parts"))
                && sk.is_some())
        },
    };
    let ingest = h.ingest(WriteBatcher::with_api(Arc::new(refusing)));
    let records = vec![
        simple_record(1),
        invalid_with(2, b"not json"),
        simple_record(3),
        simple_record(4),
    ];
    let (response, counts) = ingest.handle(records).await;
    no_failures(&response);
    assert_eq!(counts.stored, 2, "{counts:?}");
    assert_eq!(counts.dead_lettered.get("InvalidEventError"), Some(&2));
    assert_eq!(
        counts.last_resort, 2,
        "both dead letters in the last-resort form"
    );
    assert_eq!(counts.retried, 0);
    assert_eq!(h.count("clicks").await, 2);

    let letters = dead_letters(&h).await;
    assert_eq!(letters.len(), 2);
    for letter in &letters {
        let why = letter.last_resort.as_deref().expect("last resort");
        assert!(why.starts_with("ValidationException"), "{why}");
        assert_eq!(letter.value_bytes(), None);
    }
    let refused_event = letters
        .iter()
        .find(|l| l.source.offset == 3)
        .expect("the refused event");
    assert_eq!(refused_event.error.detail.as_deref(), Some("store_refused"));
    let announced = h.queue_messages().await;
    assert_eq!(announced.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_its_time_leaves_the_rest_to_the_next_invocation() {
    let h = Harness::start("deadline").await;
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    let records: Vec<_> = (10..20).map(simple_record).collect();

    // No time is left: only the first record is judged (progress), the rest come back in the
    // partial batch response.
    let deadline = Instant::now();
    let (response, counts) = ingest.handle_until(records.clone(), Some(deadline)).await;
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": {"partition": "keen-inbound-5", "offset": 11}}]})
    );
    assert_eq!((counts.stored, counts.deferred), (1, 9), "{counts:?}");
    assert_eq!(h.count("clicks").await, 1);

    // Lambda redelivers from offset 11 with time to spare: all stored, each counted once.
    let (response, counts) = ingest
        .handle_until(
            records[1..].to_vec(),
            Some(Instant::now() + Duration::from_secs(120)),
        )
        .await;
    no_failures(&response);
    assert_eq!((counts.stored, counts.deferred), (9, 0));
    assert_eq!(h.count("clicks").await, 10);
    assert_eq!(h.event_heads().await.len(), 10);
}
