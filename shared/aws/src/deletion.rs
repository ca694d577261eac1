//! Deleting stored events for good (product.md §9, `DELETE /events/{collection}`), so that no
//! replay or redelivery brings one back.
//!
//! A deleted event's head item becomes a tombstone (its key and `src`, plus [`DELETED_AT`], no
//! body; its parts are deleted): readers skip tombstones, and the hourly counter of its hour is
//! decremented once, by the deletion. A redelivered record is not counted again (it sits below
//! its partition's high-water mark), but ingest writes events with BatchWriteItem, which cannot
//! be conditional, so a redelivery would overwrite the tombstone with the event. Two records
//! close that, in this order:
//! 1. the collection's Collections item gets [`DELETIONS_AT`] before any event is deleted;
//! 2. each deleted event gets a ledger item (`{pk}#deleted`, same sort key) before its tombstone.
//!
//! After writing, ingest reads the flag of each collection it wrote to (strongly consistent);
//! where it is set it looks its events up in the ledger and writes their tombstones again. If a
//! redelivery's write lands after a tombstone, the flag was set before that tombstone, hence
//! before ingest's read, which therefore sees it, and the ledger entry, written before the
//! tombstone, too.

use crate::batch::{TableWrite, WriteBatcher, WriteOp};
use crate::items::{Item, StoreError, batch_get_consistent, n, s, string_attr};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use keen_shared::storage;
use std::collections::{BTreeMap, HashSet};

/// The tombstone's attribute (ms of the deletion); also set on ledger items.
pub const DELETED_AT: &str = "deleted_at";
/// The Collections item's attribute (ms of the latest deletion in the collection).
pub const DELETIONS_AT: &str = "deletions_at";

/// The ledger partition of an Events partition.
pub fn ledger_partition(pk: &str) -> String {
    format!("{pk}#deleted")
}

/// A stored event to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub pk: String,
    pub sort_key: String,
    /// The head's `src`, kept on the tombstone (resend detection compares it).
    pub source: String,
    /// Part items (0: the body is in the head).
    pub parts: usize,
}

/// Marks a collection as holding deletions (step 1 of the module docs).
pub async fn mark_collection(
    client: &Client,
    collections_table: &str,
    project_id: &str,
    collection: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    client
        .update_item()
        .table_name(collections_table)
        .set_key(Some(crate::collections::collection_key(
            project_id, collection,
        )))
        .update_expression("SET #d = :now")
        .expression_attribute_names("#d", DELETIONS_AT)
        .expression_attribute_values(":now", n(now_ms))
        .send()
        .await
        .map_err(|e| {
            StoreError::new(
                "UpdateItem collection deletions",
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            )
        })?;
    Ok(())
}

/// Deletes `doomed`: ledger items first, then tombstones and part deletions (step 2).
pub async fn delete_events(
    batcher: &WriteBatcher,
    events_table: &str,
    doomed: &[Doomed],
    now_ms: i64,
) -> Result<(), StoreError> {
    let ledger = doomed
        .iter()
        .enumerate()
        .map(|(tag, d)| TableWrite {
            table: events_table.to_owned(),
            op: WriteOp::Put(Item::from([
                ("pk".to_owned(), s(ledger_partition(&d.pk))),
                ("sk".to_owned(), s(d.sort_key.clone())),
                (DELETED_AT.to_owned(), n(now_ms)),
            ])),
            tag,
        })
        .collect();
    write(batcher, ledger).await?;
    write(batcher, tombstones(events_table, doomed, now_ms)).await
}

/// Tombstones over `doomed`'s heads and deletions of their parts.
fn tombstones(events_table: &str, doomed: &[Doomed], now_ms: i64) -> Vec<TableWrite> {
    let mut writes = Vec::new();
    for (tag, d) in doomed.iter().enumerate() {
        writes.push(TableWrite {
            table: events_table.to_owned(),
            op: WriteOp::Put(Item::from([
                ("pk".to_owned(), s(d.pk.clone())),
                ("sk".to_owned(), s(d.sort_key.clone())),
                ("src".to_owned(), s(d.source.clone())),
                (DELETED_AT.to_owned(), n(now_ms)),
            ])),
            tag,
        });
        for part in 1..=d.parts {
            writes.push(TableWrite {
                table: events_table.to_owned(),
                op: WriteOp::Delete(Item::from([
                    ("pk".to_owned(), s(d.pk.clone())),
                    (
                        "sk".to_owned(),
                        s(storage::part_sort_key(&d.sort_key, part)),
                    ),
                ])),
                tag,
            });
        }
    }
    writes
}

async fn write(batcher: &WriteBatcher, writes: Vec<TableWrite>) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let report = batcher.write_all(writes).await;
    match report.errors.first() {
        None if report.is_success() => Ok(()),
        None => Err(StoreError::new(
            "BatchWriteItem deletion",
            "writes did not land",
        )),
        Some((_, _, reason)) => Err(StoreError::new("BatchWriteItem deletion", reason.clone())),
    }
}

/// Writes `doomed`'s tombstones again: ingest, after a redelivery overwrote them.
pub async fn restore_tombstones(
    batcher: &WriteBatcher,
    events_table: &str,
    doomed: &[Doomed],
    now_ms: i64,
) -> Result<(), StoreError> {
    write(batcher, tombstones(events_table, doomed, now_ms)).await
}

/// Takes `per_hour` (`yyyy-mm-ddThh` → events deleted) off the collection's hourly counters.
pub async fn uncount(
    client: &Client,
    counters_table: &str,
    project_id: &str,
    collection: &str,
    per_hour: &BTreeMap<String, u64>,
) -> Result<(), StoreError> {
    let pk = storage::counters_partition_key(project_id, collection);
    for (hour, deleted) in per_hour {
        client
            .update_item()
            .table_name(counters_table)
            .key("pk", s(pk.clone()))
            .key("sk", s(hour.clone()))
            .update_expression("ADD #c :minus")
            .expression_attribute_names("#c", "count")
            .expression_attribute_values(":minus", AttributeValue::N(format!("-{deleted}")))
            .send()
            .await
            .map_err(|e| {
                StoreError::new(
                    "UpdateItem counter (deletion)",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e),
                )
            })?;
    }
    Ok(())
}

/// Of `keys`, those whose item carries `attribute` (a consistent read; keys must be distinct).
async fn having(
    client: &Client,
    table: &str,
    keys: &[(String, String)],
    attribute: &str,
    what: &'static str,
) -> Result<HashSet<(String, String)>, StoreError> {
    let items = batch_get_consistent(
        client,
        table,
        keys,
        "pk, sk, #a",
        &[("#a", attribute)],
        what,
    )
    .await?;
    Ok(items
        .iter()
        .filter(|item| item.contains_key(attribute))
        .filter_map(|item| {
            Some((
                string_attr(item, "pk")?.to_owned(),
                string_attr(item, "sk")?.to_owned(),
            ))
        })
        .collect())
}

/// Of `collections` (project, collection), those that hold deletions (step 1's flag).
pub async fn collections_with_deletions(
    client: &Client,
    collections_table: &str,
    collections: &[(String, String)],
) -> Result<HashSet<(String, String)>, StoreError> {
    having(
        client,
        collections_table,
        collections,
        DELETIONS_AT,
        "BatchGetItem collection deletions",
    )
    .await
}

/// Of `events` (Events pk, sort key), those the ledger says were deleted.
pub async fn deleted_among(
    client: &Client,
    events_table: &str,
    events: &[(String, String)],
) -> Result<HashSet<(String, String)>, StoreError> {
    let ledger: Vec<(String, String)> = events
        .iter()
        .map(|(pk, sk)| (ledger_partition(pk), sk.clone()))
        .collect();
    Ok(having(
        client,
        events_table,
        &ledger,
        DELETED_AT,
        "BatchGetItem deletion ledger",
    )
    .await?
    .into_iter()
    .filter_map(|(pk, sk)| {
        pk.strip_suffix("#deleted")
            .map(|events_pk| (events_pk.to_owned(), sk))
    })
    .collect())
}
