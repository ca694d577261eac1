//! The Counters table: hourly counts per collection.
//!
//! Counters live in a table of their own (`{project}#{collection}#counts`, one item per hour): a
//! count reads a handful of small items there instead of sharing the Events table. Each
//! counter item keeps, per source partition of the inbound topic, the highest offset it has
//! counted (`hw#{topic}#{partition}`), updated in the same conditional write as the count: a
//! retried batch adds only the records past that mark, so counts are exact under redelivery.

use crate::items::{Item, StoreError, conditional, n, number_attr, s, string_attr};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use keen_shared::storage;

/// Adds `offsets` (all from one source partition, one collection and one hour) to the hourly
/// counter, counting only offsets past the partition's mark. Returns how many were added.
pub async fn add_to_counter(
    client: &Client,
    table: &str,
    counter: &CounterKey,
    offsets: &[i64],
) -> Result<u64, StoreError> {
    let pk = storage::counters_partition_key(&counter.project_id, &counter.collection);
    let mark = format!("hw#{}", counter.source_partition);
    for _ in 0..5 {
        let current = client
            .get_item()
            .table_name(table)
            .key("pk", s(pk.clone()))
            .key("sk", s(counter.hour.clone()))
            .consistent_read(true)
            .projection_expression("#m")
            .expression_attribute_names("#m", mark.clone())
            .send()
            .await
            .map_err(|e| {
                StoreError::new(
                    "GetItem counter",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e),
                )
            })?;
        let previous = current.item.as_ref().and_then(|i| number_attr(i, &mark));
        let fresh: Vec<i64> = offsets
            .iter()
            .copied()
            .filter(|o| previous.is_none_or(|p| *o > p))
            .collect();
        let Some(&highest) = fresh.iter().max() else {
            return Ok(0);
        };
        let mut update = client
            .update_item()
            .table_name(table)
            .key("pk", s(pk.clone()))
            .key("sk", s(counter.hour.clone()))
            .update_expression("SET #c = if_not_exists(#c, :zero) + :n, #m = :hw")
            .expression_attribute_names("#c", "count")
            .expression_attribute_names("#m", mark.clone())
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":n", n(fresh.len()))
            .expression_attribute_values(":hw", n(highest));
        update = match previous {
            None => update.condition_expression("attribute_not_exists(#m)"),
            Some(p) => update
                .condition_expression("#m = :prev")
                .expression_attribute_values(":prev", n(p)),
        };
        if conditional(update.send().await, "UpdateItem counter")? {
            return Ok(fresh.len() as u64);
        }
        // Someone moved the mark meanwhile (a concurrent retry): read again.
    }
    Err(StoreError::new(
        "UpdateItem counter",
        "the counter kept changing; retry the batch",
    ))
}

/// Identifies one hourly counter and the source partition whose mark guards it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    /// Project.
    pub project_id: String,
    /// Collection.
    pub collection: String,
    /// `yyyy-mm-ddThh`.
    pub hour: String,
    /// `{topic}#{partition}` of the inbound topic.
    pub source_partition: String,
}

/// Counts one replayed record in its hourly counter, once: the record's `{source
/// partition}#{offset}` joins the counter's set of replayed records (attribute `replayed`) in the
/// same conditional write as the count, so a replay that is retried or repeated adds nothing.
/// The partition's high-water mark cannot serve here: a replayed record sits at an old offset,
/// below the mark, and would never be counted. Returns whether this call counted it.
///
/// The set grows by about 40 bytes per replayed record of the hour, within the 400 KB item
/// limit for some 9,000 replays of one collection's hour.
pub async fn count_replayed(
    client: &Client,
    table: &str,
    counter: &CounterKey,
    offset: i64,
) -> Result<bool, StoreError> {
    let pk = storage::counters_partition_key(&counter.project_id, &counter.collection);
    let member = format!("{}#{offset}", counter.source_partition);
    let result = client
        .update_item()
        .table_name(table)
        .key("pk", s(pk))
        .key("sk", s(counter.hour.clone()))
        .update_expression("ADD #c :one, #r :member_set")
        .condition_expression("attribute_not_exists(#r) OR NOT contains(#r, :member)")
        .expression_attribute_names("#c", "count")
        .expression_attribute_names("#r", "replayed")
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":member_set", AttributeValue::Ss(vec![member.clone()]))
        .expression_attribute_values(":member", s(member))
        .send()
        .await;
    conditional(result, "UpdateItem replay counter")
}

/// Reads the hourly counts of a collection: `(hour, count)` in order.
pub async fn read_counters(
    client: &Client,
    table: &str,
    project_id: &str,
    collection: &str,
) -> Result<Vec<(String, u64)>, StoreError> {
    let pk = storage::counters_partition_key(project_id, collection);
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk.clone()))
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| {
                StoreError::new(
                    "Query counters",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e),
                )
            })?;
        for item in page.items.unwrap_or_default() {
            let hour = string_attr(&item, "sk").unwrap_or_default().to_owned();
            let count = number_attr(&item, "count").unwrap_or(0);
            out.push((hour, count));
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    Ok(out)
}
