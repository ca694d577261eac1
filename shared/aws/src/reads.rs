//! What the query function reads: the stored events of one Events-table partition within a
//! time range, their number, and a project's Collections items. The layout (partition keys per
//! day and shard, sort keys `{keen.timestamp}#{keen.id}`, bodies split into parts) is
//! [`keen_shared::storage`]'s; choosing which partitions to read is the query domain's.

use super::store::{Item, StoreError, string_attr};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use keen_shared::storage;
use serde_json::Value;
use std::collections::BTreeMap;

/// The sort-key range of the instants `[start_ms, end_ms)`.
///
/// Sort keys are `{timestamp}#{id}` with a fixed-width timestamp, so every key of an instant
/// before `end_ms` sorts below the bare text of `end_ms`, and none equals it: `BETWEEN` (which is
/// inclusive) over `[text(start), text(end)]` selects exactly the half-open range. The text
/// clamps instants to the years 0000–9999, the range the stored format can spell.
pub fn sort_key_range(start_ms: i64, end_ms: i64) -> (String, String) {
    use keen_shared::timestamp::format_millis;
    (format_millis(start_ms), format_millis(end_ms))
}

/// Which end of the range to start from, and how many events at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOrder {
    /// Newest first (for `latest`), else oldest first.
    pub newest_first: bool,
    /// Stop after this many events.
    pub limit: Option<usize>,
}

impl ReadOrder {
    /// Every event, oldest first.
    pub const OLDEST_FIRST: ReadOrder = ReadOrder {
        newest_first: false,
        limit: None,
    };
}

/// One stored event, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Its sort key: `{keen.timestamp}#{keen.id}`, the order of a partition.
    pub sort_key: String,
    /// The event.
    pub event: Value,
}

fn query_error(operation: &'static str, error: impl std::fmt::Display) -> StoreError {
    StoreError {
        operation,
        message: error.to_string(),
    }
}

/// The pages of a Query, one `send` each, until DynamoDB names no next page.
struct Pages {
    query: QueryFluentBuilder,
    operation: &'static str,
    start: Option<Item>,
    done: bool,
}

impl Pages {
    fn new(query: QueryFluentBuilder, operation: &'static str) -> Pages {
        Pages {
            query,
            operation,
            start: None,
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<QueryOutput>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .query
            .clone()
            .set_exclusive_start_key(self.start.take())
            .send()
            .await
            .map_err(|e| {
                query_error(
                    self.operation,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e),
                )
            })?;
        match &page.last_evaluated_key {
            Some(key) if !key.is_empty() => self.start = Some(key.clone()),
            _ => self.done = true,
        }
        Ok(Some(page))
    }
}

/// A Query of partition `pk` over the sort keys of `range`.
fn range_query(
    client: &Client,
    table: &str,
    pk: &str,
    range: &(String, String),
) -> QueryFluentBuilder {
    client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
        .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
        .expression_attribute_values(":from", AttributeValue::S(range.0.clone()))
        .expression_attribute_values(":to", AttributeValue::S(range.1.clone()))
}

/// Reads the events of partition `pk` whose sort keys lie in `range` (from [`sort_key_range`]).
///
/// Part items are skipped while paging; an event split into parts is assembled from them, so
/// the caller sees whole events only. A head whose parts are missing (a write in progress that
/// a retry will complete) is an error rather than a silently absent event.
pub async fn read_events(
    client: &Client,
    table: &str,
    pk: &str,
    range: &(String, String),
    order: ReadOrder,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out = Vec::new();
    let query = range_query(client, table, pk, range).scan_index_forward(!order.newest_first);
    let mut pages = Pages::new(query, "Query events");
    while let Some(page) = pages.next().await? {
        for item in page.items.unwrap_or_default() {
            let Some(sort_key) = string_attr(&item, "sk") else {
                continue;
            };
            if storage::is_part_sort_key(sort_key) {
                continue;
            }
            let sort_key = sort_key.to_owned();
            let json = match item.get("body") {
                Some(AttributeValue::B(body)) => storage::decompress(&[body.as_ref()])
                    .map_err(|e| query_error("decode event body", e))?,
                _ => read_parts(client, table, pk, &sort_key, &item).await?,
            };
            let event: Value =
                serde_json::from_str(&json).map_err(|e| query_error("decode event JSON", e))?;
            out.push(StoredEvent { sort_key, event });
            if order.limit.is_some_and(|limit| out.len() >= limit) {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// The body of a head item that holds a part count instead of the body.
async fn read_parts(
    client: &Client,
    table: &str,
    pk: &str,
    sort_key: &str,
    head: &Item,
) -> Result<String, StoreError> {
    let count: usize = head
        .get("parts")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            query_error(
                "read event",
                format!("{pk} {sort_key} holds neither a body nor a part count"),
            )
        })?;
    let mut chunks = Vec::with_capacity(count);
    for n in 1..=count {
        let part = client
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .key("sk", AttributeValue::S(storage::part_sort_key(sort_key, n)))
            .send()
            .await
            .map_err(|e| {
                query_error(
                    "GetItem event part",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e),
                )
            })?
            .item;
        match part.and_then(|mut p| p.remove("body")) {
            Some(AttributeValue::B(body)) => chunks.push(body.into_inner()),
            _ => {
                return Err(query_error(
                    "read event",
                    format!("part {n} of {pk} {sort_key} is missing"),
                ));
            }
        }
    }
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    storage::decompress(&refs).map_err(|e| query_error("decode event body", e))
}

/// The number of events of partition `pk` in `range`, without reading their bodies: only head
/// items carry the `src` attribute, so parts are not counted.
pub async fn count_events(
    client: &Client,
    table: &str,
    pk: &str,
    range: &(String, String),
) -> Result<u64, StoreError> {
    let query = range_query(client, table, pk, range)
        .filter_expression("attribute_exists(src)")
        .select(Select::Count);
    let mut pages = Pages::new(query, "Query event count");
    let mut total = 0u64;
    while let Some(page) = pages.next().await? {
        total += u64::try_from(page.count).unwrap_or(0);
    }
    Ok(total)
}

/// A project's collection as the Collections table describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    /// Its name.
    pub name: String,
    /// First and last keen.timestamp seen, `YYYY-MM-DDTHH:MM:SS.sssZ`.
    pub first_event_at: Option<String>,
    /// See `first_event_at`.
    pub last_event_at: Option<String>,
    /// Property paths and their inferred JSON types.
    pub properties: BTreeMap<String, String>,
    /// Whether paths past the recorded maximum were left out.
    pub properties_truncated: bool,
}

/// Every collection of a project, by name.
pub async fn read_collections(
    client: &Client,
    table: &str,
    project_id: &str,
) -> Result<Vec<CollectionInfo>, StoreError> {
    let query = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(project_id.to_owned()));
    let mut pages = Pages::new(query, "Query collections");
    let mut out = Vec::new();
    while let Some(page) = pages.next().await? {
        for item in page.items.unwrap_or_default() {
            let text = |name: &str| string_attr(&item, name).map(str::to_owned);
            out.push(CollectionInfo {
                name: text("sk").unwrap_or_default(),
                first_event_at: text("first_event_at"),
                last_event_at: text("last_event_at"),
                properties: string_attr(&item, "properties")
                    .and_then(|p| serde_json::from_str(p).ok())
                    .unwrap_or_default(),
                properties_truncated: item
                    .get("properties_truncated")
                    .and_then(|v| v.as_bool().ok())
                    .copied()
                    .unwrap_or(false),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sort_key_range_is_half_open() {
        let (from, to) = sort_key_range(1_000, 2_000);
        let key = |ms: i64| {
            format!(
                "{}#0123456789abcdef01234567",
                keen_shared::timestamp::format_millis(ms)
            )
        };
        assert!(from.as_str() <= key(1_000).as_str());
        assert!(key(1_999).as_str() <= to.as_str());
        assert!(
            key(2_000).as_str() > to.as_str(),
            "the end instant is excluded"
        );
        assert!(key(999).as_str() < from.as_str());
    }

    #[test]
    fn unbounded_ranges_clamp_to_spellable_years() {
        let (from, to) = sort_key_range(i64::MIN, i64::MAX);
        assert_eq!(from, "0000-01-01T00:00:00.000Z");
        assert_eq!(to, "9999-12-31T23:59:59.999Z");
    }
}
