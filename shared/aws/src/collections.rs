//! The Collections table: what ingest learns of each collection (first and last event
//! times, property paths and their types), merged once per invocation, and the listing the
//! query function answers with.

use crate::items::{
    Item, Pages, StoreError, conditional, get_consistent, n, number_attr, s, string_attr,
};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use keen_shared::storage;
use std::collections::BTreeMap;

/// What one invocation saw of a collection, merged into the Collections table once.
#[derive(Debug, Clone, Default)]
pub struct CollectionUpdate {
    /// Earliest keen.timestamp seen, ms.
    pub first_ms: Option<i64>,
    /// Latest keen.timestamp seen, ms.
    pub last_ms: Option<i64>,
    /// Property paths and types seen (`number|string` where mixed) that the caller does not know
    /// to be recorded already; empty (and not `truncated`): the schema is not touched.
    pub paths: BTreeMap<String, String>,
    /// Whether paths were seen that the schema's bounds leave out.
    pub truncated: bool,
}

/// The Collections item's key: one item per (project, collection).
pub(crate) fn collection_key(project_id: &str, collection: &str) -> Item {
    Item::from([
        ("pk".to_owned(), s(project_id)),
        ("sk".to_owned(), s(collection)),
    ])
}

/// Merges an invocation's view of a collection into its Collections item. The first and last
/// event times are each one conditional UpdateItem (moved only outwards, so concurrent batches of
/// other partitions never lose a value); the schema is read and rewritten only when
/// `update.paths` is not empty, under an optimistic lock on `version`, and only if it changes.
/// Returns the recorded schema when it was read, so that the caller can skip paths it already
/// knows next time.
pub async fn update_collection(
    client: &Client,
    table: &str,
    project_id: &str,
    collection: &str,
    update: &CollectionUpdate,
) -> Result<Option<BTreeMap<String, String>>, StoreError> {
    let key = || collection_key(project_id, collection);
    let edge = |name: &'static str, at: Option<i64>, outwards: &'static str| {
        let key = key();
        async move {
            let Some(at) = at else { return Ok(true) };
            let result = client
                .update_item()
                .table_name(table)
                .set_key(Some(key))
                .update_expression(format!("SET {name}_ms = :ms, {name}_at = :at"))
                .condition_expression(format!(
                    "attribute_not_exists({name}_ms) OR {name}_ms {outwards} :ms"
                ))
                .expression_attribute_values(":ms", n(at))
                .expression_attribute_values(":at", s(keen_shared::timestamp::format_millis(at)))
                .send()
                .await;
            // A condition that did not hold means the item already reaches further: done.
            conditional(result, "UpdateItem collection times").map(|_| true)
        }
    };
    let (first, last) = tokio::join!(
        edge("first_event", update.first_ms, ">"),
        edge("last_event", update.last_ms, "<"),
    );
    first?;
    last?;
    if update.paths.is_empty() && !update.truncated {
        return Ok(None);
    }
    for _ in 0..8 {
        let current = client
            .get_item()
            .table_name(table)
            .set_key(Some(key()))
            .consistent_read(true)
            .projection_expression("properties, properties_truncated, version")
            .send()
            .await
            .map_err(|e| {
                StoreError::new(
                    "GetItem collection",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e),
                )
            })?
            .item;
        let version: Option<i64> = current.as_ref().and_then(|i| number_attr(i, "version"));
        let mut known: BTreeMap<String, String> = current
            .as_ref()
            .and_then(|i| string_attr(i, "properties"))
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let was_truncated = current
            .as_ref()
            .and_then(|i| i.get("properties_truncated"))
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false);
        let before = known.clone();
        let truncated =
            storage::merge_schema(&mut known, &update.paths) || was_truncated || update.truncated;
        if before == known && truncated == was_truncated {
            return Ok(Some(known)); // nothing new: spare the write
        }
        let mut write = client
            .update_item()
            .table_name(table)
            .set_key(Some(key()))
            .update_expression("SET properties = :p, properties_truncated = :t, version = :next")
            .expression_attribute_values(
                ":p",
                s(serde_json::to_string(&known).unwrap_or_else(|_| "{}".to_owned())),
            )
            .expression_attribute_values(":t", AttributeValue::Bool(truncated))
            .expression_attribute_values(":next", n(version.unwrap_or(0) + 1));
        write = match version {
            Some(version) => write
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(version)),
            None => write.condition_expression("attribute_not_exists(version)"),
        };
        if conditional(write.send().await, "UpdateItem collection schema")? {
            return Ok(Some(known));
        }
        // Changed meanwhile by another batch: read again.
    }
    Err(StoreError::new(
        "UpdateItem collection schema",
        "the collection's schema kept changing; retry the batch",
    ))
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

/// A collection's recorded first and last event times, ms (read consistently: a deletion
/// compares them with what it recomputes).
pub async fn read_edges(
    client: &Client,
    table: &str,
    project_id: &str,
    collection: &str,
) -> Result<(Option<i64>, Option<i64>), StoreError> {
    let item = get_consistent(
        client,
        table,
        collection_key(project_id, collection),
        "GetItem collection times",
    )
    .await?
    .unwrap_or_default();
    Ok((
        number_attr(&item, "first_event_ms"),
        number_attr(&item, "last_event_ms"),
    ))
}

/// After a deletion: moves the recorded first and last event times in to those of the events
/// that remain (`None`: none remain, and the time is removed). Each is rewritten only if it
/// still holds `seen`, the value read before the remaining events were counted, so an ingest
/// that moved it outwards meanwhile (a new event) keeps its value.
pub async fn move_edges_in(
    client: &Client,
    table: &str,
    project_id: &str,
    collection: &str,
    seen: (Option<i64>, Option<i64>),
    remaining: (Option<i64>, Option<i64>),
) -> Result<(), StoreError> {
    for (name, seen, remaining) in [
        ("first_event", seen.0, remaining.0),
        ("last_event", seen.1, remaining.1),
    ] {
        let Some(seen) = seen else { continue };
        if Some(seen) == remaining {
            continue;
        }
        let update = client
            .update_item()
            .table_name(table)
            .set_key(Some(collection_key(project_id, collection)))
            .condition_expression(format!("{name}_ms = :seen"))
            .expression_attribute_values(":seen", n(seen));
        let update = match remaining {
            Some(at) => update
                .update_expression(format!("SET {name}_ms = :ms, {name}_at = :at"))
                .expression_attribute_values(":ms", n(at))
                .expression_attribute_values(":at", s(keen_shared::timestamp::format_millis(at))),
            None => update.update_expression(format!("REMOVE {name}_ms, {name}_at")),
        };
        conditional(update.send().await, "UpdateItem collection times")?;
    }
    Ok(())
}
