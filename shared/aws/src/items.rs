//! What every table's adapter shares: items and their sizes, attribute helpers, bodies split
//! into parts when they pass an item's limit (events and dead letters), consistent reads,
//! conditional writes, paged queries, the table names and the storage errors. Layout decisions
//! live in [`keen_shared::storage`]; the modules named after the tables build on this one.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use keen_shared::storage::{self, Body};
use std::collections::HashMap;

/// An item: attribute name → value.
pub type Item = HashMap<String, AttributeValue>;

/// Table names, from the environment of the function.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Events.
    pub events: String,
    /// Hourly counters.
    pub counters: String,
    /// Collections.
    pub collections: String,
    /// Dedupe claims.
    pub dedupe: String,
    /// Dead letters.
    pub dead_letters: String,
}

impl Tables {
    /// Reads `EVENTS_TABLE`, `COUNTERS_TABLE`, `COLLECTIONS_TABLE`, `DEDUPE_TABLE` and
    /// `DEAD_LETTERS_TABLE`.
    pub fn read(env: &keen_config::Env<'_>) -> Result<Tables, keen_config::ConfigError> {
        Ok(Tables {
            events: env.required("EVENTS_TABLE", "the Events table's name")?,
            counters: env.required("COUNTERS_TABLE", "the Counters table's name")?,
            collections: env.required("COLLECTIONS_TABLE", "the Collections table's name")?,
            dedupe: env.required("DEDUPE_TABLE", "the Dedupe table's name")?,
            dead_letters: env.required("DEAD_LETTERS_TABLE", "the DeadLetters table's name")?,
        })
    }
}

/// `EVENT_SHARDS` (default [`storage::DEFAULT_SHARDS`]): shards per (project, collection, day).
/// Ingest and query must agree, so both read it here and both refuse a malformed value.
pub fn shards(env: &keen_config::Env<'_>) -> Result<u16, keen_config::ConfigError> {
    env.number_in(
        "EVENT_SHARDS",
        storage::DEFAULT_SHARDS,
        1..=1024,
        "a whole number from 1 to 1024, the same for ingest and query",
    )
}

/// Why a storage call failed. Transient from the record's point of view (the batch is retried),
/// unless [`StoreError::refuses_content`]: then the same call can never succeed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed: {message}")]
pub struct StoreError {
    /// What was being done.
    pub operation: &'static str,
    /// The service's words.
    pub message: String,
}

impl StoreError {
    pub(crate) fn new(operation: &'static str, error: impl std::fmt::Display) -> Self {
        StoreError {
            operation,
            message: error.to_string(),
        }
    }

    /// Whether DynamoDB refused the request's content (an item too large, a bad value): the
    /// same request can never succeed, so it must not be retried.
    pub fn refuses_content(&self) -> bool {
        crate::retry::refuses_content(&self.message)
    }
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn b(bytes: Vec<u8>) -> AttributeValue {
    AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(bytes))
}

/// The items of a compressed body kept in attribute `attr` under (pk, sk): the head holds the
/// body, or the count of the parts `{sk}#part#{n}` that hold it. `extra` goes on every item.
pub(crate) fn split_items(
    pk: &str,
    sk: &str,
    body: Body,
    attr: &str,
    extra: &[(&str, AttributeValue)],
) -> (Vec<Item>, Item) {
    let item = |sort_key: String| -> Item {
        let mut item: Item =
            HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sort_key))]);
        item.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        item
    };
    let mut head = item(sk.to_owned());
    let parts = match body {
        Body::Inline(bytes) => {
            head.insert(attr.to_owned(), b(bytes));
            Vec::new()
        }
        Body::Parts(chunks) => {
            head.insert("parts".to_owned(), n(chunks.len()));
            chunks
                .into_iter()
                .enumerate()
                .map(|(i, chunk)| {
                    let mut part = item(storage::part_sort_key(sk, i + 1));
                    part.insert(attr.to_owned(), b(chunk));
                    part
                })
                .collect()
        }
    };
    (parts, head)
}

/// Reads a head item and the body it holds in `attr` (inline or in parts), decompressed; `None`
/// when there is no head item. Consistent reads: a retry must see what it wrote.
pub(crate) async fn read_split(
    client: &Client,
    table: &str,
    pk: &str,
    sk: &str,
    attr: &str,
) -> Result<Option<(Item, Vec<u8>)>, StoreError> {
    let get = |sort_key: String| {
        let key = Item::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sort_key))]);
        get_consistent(client, table, key, "GetItem")
    };
    let Some(head) = get(sk.to_owned()).await? else {
        return Ok(None);
    };
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    if !head.contains_key(attr) && !head.contains_key("parts") {
        // A last-resort dead letter: the head alone, nothing of the record's content.
        return Ok(Some((head, Vec::new())));
    }
    if let Some(AttributeValue::B(body)) = head.get(attr) {
        chunks.push(body.as_ref().to_vec());
    } else if let Some(AttributeValue::N(count)) = head.get("parts") {
        for i in 1..=count.parse::<usize>().unwrap_or(0) {
            match get(storage::part_sort_key(sk, i))
                .await?
                .and_then(|mut p| p.remove(attr))
            {
                Some(AttributeValue::B(body)) => chunks.push(body.into_inner()),
                _ => {
                    return Err(StoreError::new(
                        "GetItem part",
                        format!("part {i} of {pk} {sk} is missing"),
                    ));
                }
            }
        }
    }
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    let bytes = storage::decompress_bytes(&refs).map_err(|e| StoreError::new("decode body", e))?;
    Ok(Some((head, bytes)))
}

/// An item's size as DynamoDB counts it for write units and the 400 KB limit: attribute names
/// plus values (strings and binaries by length, numbers about one byte per two digits).
pub fn item_size(item: &Item) -> usize {
    fn value_size(value: &AttributeValue) -> usize {
        match value {
            AttributeValue::S(text) => text.len(),
            AttributeValue::B(bytes) => bytes.as_ref().len(),
            AttributeValue::N(number) => {
                let digits = number.bytes().filter(u8::is_ascii_digit).count();
                digits.div_ceil(2) + 1
            }
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::L(values) => {
                3 + values.iter().map(|v| 1 + value_size(v)).sum::<usize>()
            }
            AttributeValue::M(map) => {
                3 + map
                    .iter()
                    .map(|(k, v)| 1 + k.len() + value_size(v))
                    .sum::<usize>()
            }
            AttributeValue::Ss(items) => items.iter().map(String::len).sum(),
            _ => 0,
        }
    }
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

/// The key of an item (pk, sk).
pub fn item_key(item: &Item) -> Item {
    item.iter()
        .filter(|(k, _)| *k == "pk" || *k == "sk")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The text of a string attribute.
pub fn string_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(text)) => Some(text),
        _ => None,
    }
}

/// A number attribute of an item, if present and of type `T`.
pub(crate) fn number_attr<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// The item under `key`, read consistently (a retry must see what it wrote); `operation` names
/// the read in an error.
pub(crate) async fn get_consistent(
    client: &Client,
    table: &str,
    key: Item,
    operation: &'static str,
) -> Result<Option<Item>, StoreError> {
    client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map(|output| output.item)
        .map_err(|e| StoreError::new(operation, aws_sdk_dynamodb::error::DisplayErrorContext(e)))
}

/// A write that carries a condition: PutItem or UpdateItem.
pub(crate) trait ConditionalWrite {
    /// The condition did not hold (not a failure of the call).
    fn condition_failed(&self) -> bool;
}

impl ConditionalWrite for aws_sdk_dynamodb::operation::update_item::UpdateItemError {
    fn condition_failed(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

impl ConditionalWrite for aws_sdk_dynamodb::operation::put_item::PutItemError {
    fn condition_failed(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

/// A conditional write's answer: whether it was applied (false: its condition did not hold).
pub(crate) fn conditional<T, E, R>(
    result: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
    operation: &'static str,
) -> Result<bool, StoreError>
where
    E: ConditionalWrite
        + aws_sdk_dynamodb::error::ProvideErrorMetadata
        + std::error::Error
        + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(error) if error.as_service_error().is_some_and(E::condition_failed) => Ok(false),
        Err(error) => {
            // `{code}: …` first, so that a refusal of the content is recognised as such.
            let code = error
                .as_service_error()
                .and_then(|e| e.code())
                .unwrap_or("Unknown")
                .to_owned();
            let context = aws_sdk_dynamodb::error::DisplayErrorContext(error);
            Err(StoreError::new(operation, format!("{code}: {context}")))
        }
    }
}

pub(crate) fn query_error(operation: &'static str, error: impl std::fmt::Display) -> StoreError {
    StoreError {
        operation,
        message: error.to_string(),
    }
}

/// The pages of a Query, one `send` each, until DynamoDB names no next page.
pub(crate) struct Pages {
    query: QueryFluentBuilder,
    operation: &'static str,
    start: Option<Item>,
    done: bool,
}

impl Pages {
    pub(crate) fn new(query: QueryFluentBuilder, operation: &'static str) -> Pages {
        Pages {
            query,
            operation,
            start: None,
            done: false,
        }
    }

    pub(crate) async fn next(&mut self) -> Result<Option<QueryOutput>, StoreError> {
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

/// The items of `keys` (pk, sk) that exist in `table`, read consistently in batches of 100 with
/// only `projection` (names as `#n` placeholders in `names`), retrying unprocessed keys with a
/// growing pause; the keys must be distinct (BatchGetItem refuses a request naming one twice).
/// `what` names the read in errors.
pub async fn batch_get_consistent(
    client: &Client,
    table: &str,
    keys: &[(String, String)],
    projection: &str,
    names: &[(&str, &str)],
    what: &'static str,
) -> Result<Vec<Item>, StoreError> {
    let mut found = Vec::new();
    for chunk in keys.chunks(100) {
        let mut pending: Vec<Item> = chunk
            .iter()
            .map(|(pk, sk)| Item::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))]))
            .collect();
        let mut attempts = 0;
        while !pending.is_empty() {
            attempts += 1;
            let mut request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .projection_expression(projection);
            for (placeholder, name) in names {
                request = request.expression_attribute_names(*placeholder, *name);
            }
            let request = request.build().map_err(|e| StoreError::new(what, e))?;
            let output = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| {
                    StoreError::new(what, aws_sdk_dynamodb::error::DisplayErrorContext(e))
                })?;
            found.extend(
                output
                    .responses
                    .unwrap_or_default()
                    .remove(table)
                    .unwrap_or_default(),
            );
            if let Some(rest) = output.unprocessed_keys.and_then(|mut u| u.remove(table)) {
                pending = rest.keys;
            }
            if !pending.is_empty() {
                if attempts >= 8 {
                    return Err(StoreError::new(what, "unprocessed keys after 8 attempts"));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempts.min(6))).await;
            }
        }
    }
    Ok(found)
}
