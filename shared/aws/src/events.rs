//! The Events table: a stored event's items (head and parts) as ingest writes them, what a
//! retry or a replay finds already there, and the reads of the query function (the events of one
//! partition within a time range, and their number). The layout (partition keys per day and
//! shard, sort keys `{keen.timestamp}#{keen.id}`, bodies split into parts) is
//! [`keen_shared::storage`]'s; choosing which partitions to read is the query domain's.

use crate::items::{Item, Pages, StoreError, query_error, read_split, s, split_items, string_attr};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use keen_shared::storage::{self, Body};
use serde_json::Value;
use std::collections::HashMap;

/// The items of one stored event: parts (to write first) and the head (to write last).
#[derive(Debug, Clone)]
pub struct EventItems {
    /// Part items, in order.
    pub parts: Vec<Item>,
    /// The head item.
    pub head: Item,
    /// Bytes of body stored (compressed), for the figures.
    pub stored_bytes: usize,
}

/// The facts about a stored event the items are built from.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    /// Owning project.
    pub project_id: &'a str,
    /// Collection.
    pub collection: &'a str,
    /// keen.id.
    pub keen_id: &'a keen_shared::keen::KeenId,
    /// keen.timestamp in ms.
    pub timestamp_ms: i64,
    /// The stored JSON.
    pub json: &'a str,
    /// `{topic}:{partition}:{offset}` of the record: tells a retry of this record from a resend
    /// of the same producer record at another offset.
    pub source: &'a str,
}

/// Builds the items of an event per the layout.
pub fn event_items(facts: &EventFacts<'_>, layout: &storage::EventLayout) -> EventItems {
    let pk = layout.partition_key(
        facts.project_id,
        facts.collection,
        facts.timestamp_ms,
        facts.keen_id,
    );
    let sk = storage::sort_key(facts.timestamp_ms, facts.keen_id);
    let body = Body::of_json(facts.json);
    let stored_bytes = body.stored_len();
    let (parts, mut head) = split_items(&pk, &sk, body, "body", &[]);
    head.insert("src".to_owned(), s(facts.source));
    EventItems {
        parts,
        head,
        stored_bytes,
    }
}

/// Reads an event back: the head item and, when split, its parts (consistent reads).
pub async fn read_event(
    client: &Client,
    table: &str,
    pk: &str,
    sk: &str,
) -> Result<Option<String>, StoreError> {
    match read_split(client, table, pk, sk, "body").await? {
        None => Ok(None),
        Some((_, bytes)) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| StoreError::new("decode event", "stored body is not UTF-8")),
    }
}

/// Existing head items' `src` by (pk, sk), read consistently in batches of 100. The keys must be
/// distinct: BatchGetItem refuses a request that names one twice.
pub async fn existing_sources(
    client: &Client,
    table: &str,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), String>, StoreError> {
    let heads = existing_heads(client, table, keys).await?;
    Ok(heads
        .into_iter()
        .map(|(key, head)| (key, head.source))
        .collect())
}

/// What a replay needs to know of an event head that already exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingHead {
    /// `{topic}:{partition}:{offset}` of the record that wrote it.
    pub source: String,
    /// Whether a replay wrote it (attribute [`REPLAYED_AT`]): only then may a replay count it.
    pub replayed: bool,
}

/// The head attribute a replay sets (ms): it tells an event a replay stored, and may count, from
/// one the ingest stored and counted itself.
pub const REPLAYED_AT: &str = "replayed_at";

/// Existing head items by (pk, sk), read consistently in batches of 100. The keys must be
/// distinct: BatchGetItem refuses a request that names one twice.
pub async fn existing_heads(
    client: &Client,
    table: &str,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), ExistingHead>, StoreError> {
    let items = crate::items::batch_get_consistent(
        client,
        table,
        keys,
        "pk, sk, src, #r",
        &[("#r", REPLAYED_AT)],
        "BatchGetItem",
    )
    .await?;
    let mut found = HashMap::new();
    for item in items {
        if let (Some(pk), Some(sk), Some(src)) = (
            string_attr(&item, "pk"),
            string_attr(&item, "sk"),
            string_attr(&item, "src"),
        ) {
            found.insert(
                (pk.to_owned(), sk.to_owned()),
                ExistingHead {
                    source: src.to_owned(),
                    replayed: item.contains_key(REPLAYED_AT),
                },
            );
        }
    }
    Ok(found)
}

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
pub struct EventRow {
    /// Its sort key: `{keen.timestamp}#{keen.id}`, the order of a partition.
    pub sort_key: String,
    /// The event.
    pub event: Value,
    /// The head's `src` (`{topic}:{partition}:{offset}` of the record that wrote it).
    pub source: String,
    /// Its part items (0: the body is in the head).
    pub parts: usize,
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
/// Part items and tombstones (deleted events, [`crate::deletion`]) are skipped while paging; an
/// event split into parts is assembled from them, so the caller sees whole events only. A head whose parts are missing (a write in progress that
/// a retry will complete) is an error rather than a silently absent event.
pub async fn read_events(
    client: &Client,
    table: &str,
    pk: &str,
    range: &(String, String),
    order: ReadOrder,
) -> Result<Vec<EventRow>, StoreError> {
    let mut out = Vec::new();
    let query = range_query(client, table, pk, range).scan_index_forward(!order.newest_first);
    let mut pages = Pages::new(query, "Query events");
    while let Some(page) = pages.next().await? {
        for item in page.items.unwrap_or_default() {
            let Some(sort_key) = string_attr(&item, "sk") else {
                continue;
            };
            if storage::is_part_sort_key(sort_key) || item.contains_key(crate::deletion::DELETED_AT)
            {
                continue;
            }
            let sort_key = sort_key.to_owned();
            let (json, parts) = match item.get("body") {
                Some(AttributeValue::B(body)) => (
                    storage::decompress(&[body.as_ref()])
                        .map_err(|e| query_error("decode event body", e))?,
                    0,
                ),
                _ => read_parts(client, table, pk, &sort_key, &item).await?,
            };
            let event: Value =
                serde_json::from_str(&json).map_err(|e| query_error("decode event JSON", e))?;
            let source = string_attr(&item, "src").unwrap_or_default().to_owned();
            out.push(EventRow {
                sort_key,
                event,
                source,
                parts,
            });
            if order.limit.is_some_and(|limit| out.len() >= limit) {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// The body of a head item that holds a part count instead of the body, and that count.
async fn read_parts(
    client: &Client,
    table: &str,
    pk: &str,
    sort_key: &str,
    head: &Item,
) -> Result<(String, usize), StoreError> {
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
    let json = storage::decompress(&refs).map_err(|e| query_error("decode event body", e))?;
    Ok((json, count))
}

/// The number of events of partition `pk` in `range`, without reading their bodies: only head
/// items carry the `src` attribute, so parts are not counted, and tombstones are left out.
pub async fn count_events(
    client: &Client,
    table: &str,
    pk: &str,
    range: &(String, String),
) -> Result<u64, StoreError> {
    let query = range_query(client, table, pk, range)
        .filter_expression("attribute_exists(src) AND attribute_not_exists(#d)")
        .expression_attribute_names("#d", crate::deletion::DELETED_AT)
        .select(Select::Count);
    let mut pages = Pages::new(query, "Query event count");
    let mut total = 0u64;
    while let Some(page) = pages.next().await? {
        total += u64::try_from(page.count).unwrap_or(0);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{item_size, n};
    use keen_shared::keen::KeenId;

    #[test]
    fn small_events_are_one_item_and_large_ones_are_split() {
        let id = KeenId::for_position("keen-inbound", 0, 1, 0);
        let small = "{\"a\":1}";
        let facts = EventFacts {
            project_id: "p",
            collection: "c",
            keen_id: &id,
            timestamp_ms: 0,
            json: small,
            source: "keen-inbound:0:1",
        };
        let items = event_items(&facts, &storage::EventLayout::default());
        assert!(items.parts.is_empty());
        assert!(items.head.contains_key("body"));
        assert_eq!(string_attr(&items.head, "src"), Some("keen-inbound:0:1"));
        let one: Item = HashMap::from([("ab".to_owned(), s("xyz")), ("n".to_owned(), n(12345))]);
        assert_eq!(item_size(&one), 2 + 3 + 1 + 4);

        let mut seed = 1u64;
        let noise: String = (0..900_000)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'!' + ((seed >> 33) % 90) as u8)
            })
            .collect();
        let big = format!("{{\"n\":\"{noise}\"}}");
        let facts = EventFacts {
            json: &big,
            ..facts
        };
        let items = event_items(&facts, &storage::EventLayout::default());
        assert!(items.parts.len() >= 2);
        assert!(!items.head.contains_key("body"));
        assert_eq!(items.head.get("parts"), Some(&n(items.parts.len())));
    }

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
