//! Reading and tidying the DeadLetters table: a project's dead letters newest first (product.md
//! §9, and the operator's `keenctl dead-letters`), and the removals and updates a replay makes.
//!
//! Contract:
//! - Items are those of [`super::store::dead_letter_items`]: a head per dead letter (`pk` =
//!   `{project_id}#{collection}`, `sk` = `{failed_at}#{id}`, attributes `id`, `error_code`,
//!   `envelope`, `project_id`, and the payload inline or as a part count) and its parts
//!   (`{sk}#part#{n}`). Only heads carry `id`, which is how a query tells them from parts.
//! - One collection is read from the table itself; a whole project through the `by_project`
//!   index (template.yaml), which holds heads only. Either way the timeframe is a range of the
//!   sort key, whose fixed-width `failed_at` prefix sorts as time does.
//! - A retried batch writes the same dead letter again under a later `failed_at`: a listing
//!   keeps the newest copy of each id among those it reads, and a replay removes every copy.
//! - Listed dead letters are the full §8 envelope: the payload is read (parts joined and
//!   decompressed) for each one returned, never for those filtered out.

use super::store::{Item, StoreError, conditional, read_dead_letter, stored_envelope, string_attr};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use keen_shared::dead_letter::{DeadLetter, PayloadRef, table_keys};
use keen_shared::storage;
use std::collections::{HashMap, HashSet};

/// The DeadLetters index that lists a whole project (template.yaml).
pub const BY_PROJECT_INDEX: &str = "by_project";

/// Dead letters read at once (one page of heads at a time, and this many payload reads in
/// flight).
const READS_IN_FLIGHT: usize = 16;

/// Which dead letters to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// The owning project.
    pub project_id: String,
    /// One collection; all of the project's when `None`.
    pub collection: Option<String>,
    /// Only this error code (`InvalidEventError`…).
    pub code: Option<String>,
    /// `failed_at >= from_ms`.
    pub from_ms: Option<i64>,
    /// `failed_at < to_ms`.
    pub to_ms: Option<i64>,
    /// At most this many dead letters (distinct ids).
    pub limit: usize,
}

/// The dead letters `query` selects, newest first by `failed_at`, one per id (its newest copy),
/// at most `query.limit`, each with its payload.
pub async fn list_dead_letters(
    client: &Client,
    table: &str,
    query: &DeadLetterQuery,
) -> Result<Vec<DeadLetter>, StoreError> {
    let empty_timeframe =
        matches!((query.from_ms, query.to_ms), (Some(from), Some(to)) if from >= to);
    if query.limit == 0 || empty_timeframe {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut chosen: Vec<PayloadRef> = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let page = head_page(client, table, query, start.take()).await?;
        for head in &page.heads {
            let (Some(pk), Some(sk), Some(id)) = (
                string_attr(head, "pk"),
                string_attr(head, "sk"),
                string_attr(head, "id"),
            ) else {
                continue;
            };
            if seen.insert(id.to_owned()) {
                chosen.push(PayloadRef {
                    pk: pk.to_owned(),
                    sk: sk.to_owned(),
                });
                if chosen.len() == query.limit {
                    return read_all(client, table, &chosen).await;
                }
            }
        }
        match page.next {
            Some(key) => start = Some(key),
            None => return read_all(client, table, &chosen).await,
        }
    }
}

/// One page of head items (keys, `id`, `error_code`), newest first.
struct HeadPage {
    heads: Vec<Item>,
    next: Option<Item>,
}

async fn head_page(
    client: &Client,
    table: &str,
    query: &DeadLetterQuery,
    start: Option<Item>,
) -> Result<HeadPage, StoreError> {
    let mut request = client
        .query()
        .table_name(table)
        .scan_index_forward(false)
        .set_exclusive_start_key(start)
        .projection_expression("pk, sk, id, error_code");
    let mut condition = match &query.collection {
        Some(collection) => {
            request = request
                .expression_attribute_values(
                    ":hash",
                    AttributeValue::S(format!("{}#{collection}", query.project_id)),
                )
                .consistent_read(true);
            "pk = :hash".to_owned()
        }
        None => {
            request = request
                .index_name(BY_PROJECT_INDEX)
                .expression_attribute_values(":hash", AttributeValue::S(query.project_id.clone()));
            "project_id = :hash".to_owned()
        }
    };
    // `{failed_at}#{id}` with a fixed-width failed_at: every key of an instant before `to` sorts
    // below the bare text of `to`, and every key of an instant at or after `from` at or above
    // the text of `from`; no key equals either, so BETWEEN is the half-open range.
    let text = keen_shared::timestamp::format_millis;
    match (query.from_ms, query.to_ms) {
        (Some(from), Some(to)) => {
            condition.push_str(" AND sk BETWEEN :from AND :to");
            request = request
                .expression_attribute_values(":from", AttributeValue::S(text(from)))
                .expression_attribute_values(":to", AttributeValue::S(text(to)));
        }
        (Some(from), None) => {
            condition.push_str(" AND sk >= :from");
            request = request.expression_attribute_values(":from", AttributeValue::S(text(from)));
        }
        (None, Some(to)) => {
            condition.push_str(" AND sk < :to");
            request = request.expression_attribute_values(":to", AttributeValue::S(text(to)));
        }
        (None, None) => {}
    }
    // Parts have no `id`: the table's own pages hold them next to their heads.
    let mut filter = "attribute_exists(id)".to_owned();
    if let Some(code) = &query.code {
        filter.push_str(" AND error_code = :code");
        request = request.expression_attribute_values(":code", AttributeValue::S(code.clone()));
    }
    let output = request
        .key_condition_expression(condition)
        .filter_expression(filter)
        .send()
        .await
        .map_err(|e| store_error("Query dead letters", e))?;
    Ok(HeadPage {
        heads: output.items.unwrap_or_default(),
        next: output.last_evaluated_key.filter(|key| !key.is_empty()),
    })
}

/// Reads the dead letters at `keys` whole, in order, several at a time. A head that vanished in
/// between (replayed, or expired) is left out.
async fn read_all(
    client: &Client,
    table: &str,
    keys: &[PayloadRef],
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut letters = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(READS_IN_FLIGHT) {
        let mut reads = tokio::task::JoinSet::new();
        for (i, key) in chunk.iter().enumerate() {
            let (client, table, key) = (client.clone(), table.to_owned(), key.clone());
            reads.spawn(async move { (i, read_dead_letter(&client, &table, &key).await) });
        }
        let mut read: Vec<Option<DeadLetter>> = vec![None; chunk.len()];
        while let Some(joined) = reads.join_next().await {
            let (i, result) = joined.map_err(|e| StoreError {
                operation: "GetItem dead letter",
                message: format!("the read task failed: {e}"),
            })?;
            read[i] = result?;
        }
        letters.extend(read.into_iter().flatten());
    }
    Ok(letters)
}

/// The newest copy of dead letter `id` of a collection, whole; `None` when there is none.
pub async fn find_dead_letter(
    client: &Client,
    table: &str,
    project_id: &str,
    collection: &str,
    id: &str,
) -> Result<Option<DeadLetter>, StoreError> {
    let copies = dead_letter_copies(client, table, project_id, collection).await?;
    let Some(newest) = copies.get(id).and_then(|c| c.first()) else {
        return Ok(None);
    };
    read_dead_letter(client, table, newest).await
}

/// Every head of a collection's dead letters, by id, each id's copies newest first (a retried
/// batch writes one dead letter again under a later `failed_at`).
pub async fn dead_letter_copies(
    client: &Client,
    table: &str,
    project_id: &str,
    collection: &str,
) -> Result<HashMap<String, Vec<PayloadRef>>, StoreError> {
    let pk = format!("{project_id}#{collection}");
    let mut copies: HashMap<String, Vec<PayloadRef>> = HashMap::new();
    let mut start: Option<Item> = None;
    loop {
        let output = client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .filter_expression("attribute_exists(id)")
            .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
            .projection_expression("pk, sk, id")
            .scan_index_forward(false)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| store_error("Query dead letter copies", e))?;
        for item in output.items.unwrap_or_default() {
            if let (Some(sk), Some(id)) = (string_attr(&item, "sk"), string_attr(&item, "id")) {
                copies.entry(id.to_owned()).or_default().push(PayloadRef {
                    pk: pk.clone(),
                    sk: sk.to_owned(),
                });
            }
        }
        match output.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(copies),
        }
    }
}

/// Deletes a dead letter: the head first, then its parts, so that no reader ever finds a head
/// whose parts are gone (parts without a head are invisible, and expire). Returns whether there
/// was a head.
pub async fn delete_dead_letter(
    client: &Client,
    table: &str,
    keys: &PayloadRef,
) -> Result<bool, StoreError> {
    let deleted = client
        .delete_item()
        .table_name(table)
        .key("pk", AttributeValue::S(keys.pk.clone()))
        .key("sk", AttributeValue::S(keys.sk.clone()))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
        .send()
        .await
        .map_err(|e| store_error("DeleteItem dead letter", e))?
        .attributes;
    let Some(head) = deleted else {
        return Ok(false);
    };
    let parts = head
        .get("parts")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    for n in 1..=parts {
        client
            .delete_item()
            .table_name(table)
            .key("pk", AttributeValue::S(keys.pk.clone()))
            .key("sk", AttributeValue::S(storage::part_sort_key(&keys.sk, n)))
            .send()
            .await
            .map_err(|e| store_error("DeleteItem dead letter part", e))?;
    }
    Ok(true)
}

/// Rewrites the error (and service version) of a stored dead letter in place, payload and
/// `failed_at` unchanged: a replay that fails again keeps the one dead letter up to date
/// instead of adding a copy. Returns `false` when the dead letter is no longer stored.
pub async fn update_dead_letter_error(
    client: &Client,
    table: &str,
    letter: &DeadLetter,
) -> Result<bool, StoreError> {
    let keys = table_keys(letter);
    let result = client
        .update_item()
        .table_name(table)
        .key("pk", AttributeValue::S(keys.pk))
        .key("sk", AttributeValue::S(keys.sk))
        .update_expression("SET envelope = :envelope, error_code = :code")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_values(":envelope", AttributeValue::S(stored_envelope(letter)))
        .expression_attribute_values(":code", AttributeValue::S(letter.error.code.clone()))
        .send()
        .await;
    conditional(result, "UpdateItem dead letter")
}

fn store_error<E, R>(
    operation: &'static str,
    error: aws_sdk_dynamodb::error::SdkError<E, R>,
) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError {
        operation,
        message: DisplayErrorContext(error).to_string(),
    }
}
