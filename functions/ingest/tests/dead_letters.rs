//! Dead letters against moto, written by the real handler: the listing the query API and
//! `keenctl` use (order, filters, repeats, split payloads), and replay (identity kept, stored
//! and counted once, one dead letter left for a record still invalid).

mod common;

use common::*;
use keen_aws::batch::WriteBatcher;
use keen_aws::dead_letters::{DeadLetterQuery, find_dead_letter, list_dead_letters};
use keen_ingest::{DecodedRecord, ReplayOutcome};
use keen_shared::dead_letter::DeadLetter;
use keen_shared::keen::KeenId;

const T1: i64 = 1_710_000_100_000;
const T2: i64 = 1_710_000_200_000;
const T3: i64 = 1_710_000_300_000;

fn record(collection: &str, offset: i64, value: &[u8]) -> DecodedRecord {
    let mut record = simple_record(offset);
    record.value = Some(value.to_vec());
    for header in &mut record.headers {
        if header.name == keen_shared::record::HEADER_COLLECTION {
            header.value = collection.as_bytes().to_vec();
        }
    }
    record
}

fn query(collection: Option<&str>) -> DeadLetterQuery {
    DeadLetterQuery {
        project_id: PROJECT.to_owned(),
        collection: collection.map(str::to_owned),
        code: None,
        from_ms: None,
        to_ms: None,
        limit: 100,
    }
}

fn offsets(letters: &[DeadLetter]) -> Vec<i64> {
    letters.iter().map(|l| l.source.offset).collect()
}

fn sorted(letters: &[DeadLetter]) -> Vec<i64> {
    let mut offsets = offsets(letters);
    offsets.sort_unstable();
    offsets
}

/// Dead letter heads in the table (parts left out), as (collection, offset).
async fn stored_heads(h: &Harness) -> Vec<(String, i64)> {
    let mut heads: Vec<(String, i64)> = h
        .scan(&h.config.tables.dead_letters)
        .await
        .iter()
        .filter_map(|item| {
            let envelope: DeadLetter =
                serde_json::from_str(keen_aws::items::string_attr(item, "envelope")?).ok()?;
            Some((envelope.collection, envelope.source.offset))
        })
        .collect();
    heads.sort();
    heads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_is_newest_first_filtered_and_whole() {
    let h = Harness::start("dl-list").await;
    let at = |clock: fn() -> i64| {
        h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()))
            .with_clock(clock)
    };

    // T1: two clicks, one view; T2: a click with a bad property name; T3: a view, and the
    // first click again (a redelivered batch: the same dead letter, kept under its first
    // failure, T1).
    no_failures(
        &at(|| T1)
            .handle(vec![
                record("clicks", 1, b"not json"),
                record("clicks", 2, b"[1]"),
                record("views", 3, b"{"),
            ])
            .await
            .0,
    );
    no_failures(
        &at(|| T2)
            .handle(vec![record("clicks", 4, br#"{"$bad": 1}"#)])
            .await
            .0,
    );
    // 1,000,000 bytes that are neither UTF-8 nor compressible: stored in parts.
    let noise = noise(3, 1_000_000);
    no_failures(
        &at(|| T3)
            .handle(vec![
                record("clicks", 1, b"not json"),
                record("views", 5, &noise),
            ])
            .await
            .0,
    );
    let parts = h
        .scan(&h.config.tables.dead_letters)
        .await
        .iter()
        .filter(|i| {
            keen_shared::storage::is_part_sort_key(
                keen_aws::items::string_attr(i, "sk").unwrap_or(""),
            )
        })
        .count();
    assert!(parts >= 2, "the large payload is split ({parts} parts)");

    let client = &h.aws.dynamodb;
    let table = &h.config.tables.dead_letters;
    let list = |q: DeadLetterQuery| async move {
        list_dead_letters(client, table, &q).await.expect("listing")
    };

    // One dead letter per record in the table: the redelivery overwrote the first.
    assert_eq!(
        stored_heads(&h).await,
        [
            ("clicks".to_owned(), 1),
            ("clicks".to_owned(), 2),
            ("clicks".to_owned(), 4),
            ("views".to_owned(), 3),
            ("views".to_owned(), 5)
        ]
    );

    // One collection, newest first; 1 and 2 failed at the same instant (T1), in the ids' order.
    let clicks = list(query(Some("clicks"))).await;
    assert_eq!(clicks.len(), 3);
    assert_eq!(clicks[0].source.offset, 4);
    assert_eq!(clicks[0].error.code, "InvalidPropertyNameError");
    assert_eq!(sorted(&clicks[1..]), [1, 2]);
    let repeated = clicks
        .iter()
        .find(|l| l.source.offset == 1)
        .expect("offset 1");
    assert_eq!(repeated.failed_at, "2024-03-09T16:01:40.000Z");
    assert_eq!(repeated.payload.as_deref(), Some("not json"));

    // The whole project through the index; the large payload comes back whole.
    let all = list(query(None)).await;
    assert_eq!(offsets(&all[..2]), [5, 4]);
    assert_eq!(sorted(&all[2..]), [1, 2, 3]);
    let large = all.iter().find(|l| l.source.offset == 5).expect("large");
    assert_eq!(large.value_bytes(), Some(noise));
    assert_eq!(large.collection, "views");

    // Code filter, timeframe (from inclusive, to exclusive), limit.
    let names = list(DeadLetterQuery {
        code: Some("InvalidPropertyNameError".into()),
        ..query(None)
    })
    .await;
    assert_eq!(offsets(&names), [4]);
    let middle = list(DeadLetterQuery {
        from_ms: Some(T1),
        to_ms: Some(T3),
        ..query(None)
    })
    .await;
    assert_eq!(sorted(&middle), [1, 2, 3, 4]);
    assert_eq!(middle[0].source.offset, 4);
    let before_t2 = list(DeadLetterQuery {
        to_ms: Some(T2),
        ..query(Some("clicks"))
    })
    .await;
    assert_eq!(sorted(&before_t2), [1, 2]);
    assert!(
        before_t2
            .iter()
            .all(|l| l.failed_at == "2024-03-09T16:01:40.000Z")
    );
    let since_t2 = list(DeadLetterQuery {
        from_ms: Some(T2),
        ..query(Some("clicks"))
    })
    .await;
    assert_eq!(offsets(&since_t2), [4]);
    let first_two = list(DeadLetterQuery {
        limit: 2,
        ..query(Some("clicks"))
    })
    .await;
    assert_eq!(offsets(&first_two), offsets(&clicks[..2]));
    assert!(
        list(DeadLetterQuery {
            limit: 0,
            ..query(None)
        })
        .await
        .is_empty()
    );
    assert!(list(query(Some("nothing"))).await.is_empty());

    // One by id.
    let found = find_dead_letter(client, table, PROJECT, "clicks", &repeated.id)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(&found, repeated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_a_key_is_reinstated_stores_and_counts_once() {
    let h = Harness::start("dl-replay").await;
    // The operator revoked the wrong key: everything it wrote is dead-lettered.
    h.put_key(false).await;
    let revoked = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    no_failures(&revoked.handle((0..3).map(simple_record).collect()).await.0);
    // Rejected on its own merits too: still invalid once the key is back; and twice (a retry).
    let bad = record("clicks", 7, b"not json");
    no_failures(&revoked.handle(vec![bad.clone(), simple_record(50)]).await.0);
    no_failures(&revoked.with_clock(|| T3).handle(vec![bad.clone()]).await.0);
    assert_eq!(h.count("clicks").await, 0);

    // The key is reinstated (a new ingest: its key cache is fresh). Lambda happens to deliver
    // offset 50 again: the ingest stores and counts it itself.
    h.put_key(true).await;
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    no_failures(&ingest.handle(vec![simple_record(50)]).await.0);
    assert_eq!(h.count("clicks").await, 1);

    let client = &h.aws.dynamodb;
    let table = &h.config.tables.dead_letters;
    let letters = list_dead_letters(client, table, &query(None))
        .await
        .expect("listing");
    assert_eq!(letters.len(), 5);
    let report = ingest.replay(&letters).await;
    for result in &report.results {
        let offset = letters
            .iter()
            .find(|l| l.id == result.id)
            .expect("letter")
            .source
            .offset;
        match offset {
            0..=2 => assert_eq!(
                result.outcome,
                ReplayOutcome::Stored {
                    // The keen.id the first attempt would have had.
                    keen_id: KeenId::for_position(
                        "keen-inbound",
                        5,
                        offset,
                        1_710_000_000_000 + offset
                    )
                    .to_hex()
                },
                "{result:?}"
            ),
            7 => assert!(
                matches!(&result.outcome, ReplayOutcome::StillInvalid { code, .. } if code == "InvalidEventError"),
                "{result:?}"
            ),
            50 => assert!(
                matches!(result.outcome, ReplayOutcome::Duplicate { .. }),
                "{result:?}"
            ),
            other => panic!("unexpected offset {other}"),
        }
    }
    assert!(report.all_settled());
    assert_eq!(h.event_heads().await.len(), 4);
    assert_eq!(h.count("clicks").await, 4);
    // Only the invalid record is still dead-lettered, once, with the error of this replay.
    assert_eq!(stored_heads(&h).await, [("clicks".to_owned(), 7)]);
    let left = list_dead_letters(client, table, &query(None))
        .await
        .expect("listing");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].error.code, "InvalidEventError");
    assert_eq!(left[0].payload.as_deref(), Some("not json"));

    // Replaying the very same letters again: nothing new stored or counted, one dead letter.
    let again = ingest.replay(&letters).await;
    assert_eq!(again.totals().get("stored"), None, "{again:?}");
    assert_eq!(again.totals().get("duplicate"), Some(&4), "{again:?}");
    assert_eq!(again.totals().get("still_invalid"), Some(&1), "{again:?}");
    assert_eq!(h.event_heads().await.len(), 4);
    assert_eq!(h.count("clicks").await, 4);
    assert_eq!(stored_heads(&h).await, [("clicks".to_owned(), 7)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_interrupted_after_writing_is_counted_once_when_resumed() {
    let h = Harness::start("dl-resume").await;
    h.put_key(false).await;
    let revoked = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    no_failures(&revoked.handle(vec![simple_record(9)]).await.0);
    h.put_key(true).await;
    let ingest = h.ingest(WriteBatcher::new(h.aws.dynamodb.clone()));
    let letters = list_dead_letters(&h.aws.dynamodb, &h.config.tables.dead_letters, &query(None))
        .await
        .expect("listing");
    assert_eq!(letters.len(), 1);

    // The event head is written by a replay that then died before counting.
    let preview = ingest.preview_replay(&letters).await;
    assert!(matches!(
        preview.results[0].outcome,
        ReplayOutcome::Stored { .. }
    ));
    assert!(h.event_heads().await.is_empty(), "a preview writes nothing");
    let report = ingest.replay(&letters).await;
    assert!(matches!(
        report.results[0].outcome,
        ReplayOutcome::Stored { .. }
    ));
    // Simulate the crash: undo the count, keep the head (marked as the replay's own).
    h.aws
        .dynamodb
        .delete_item()
        .table_name(&h.config.tables.counters)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(
                keen_shared::storage::counters_partition_key(PROJECT, "clicks"),
            ),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(keen_shared::storage::hour_of(
                1_710_000_000_009,
            )),
        )
        .send()
        .await
        .expect("counter removed");
    assert_eq!(h.count("clicks").await, 0);
    let resumed = ingest.replay(&letters).await;
    assert!(
        matches!(resumed.results[0].outcome, ReplayOutcome::Stored { .. }),
        "{resumed:?}"
    );
    assert_eq!(h.count("clicks").await, 1);
    assert_eq!(h.event_heads().await.len(), 1);
    assert!(stored_heads(&h).await.is_empty());
}
