//! The ingest function's DynamoDB items: events (head and parts), hourly counters, the
//! Collections table, dedupe claims and dead letters. Layout decisions live in
//! [`keen_shared::storage`] and [`keen_shared::dead_letter`]; this module only turns them into items and
//! conditional updates.
//!
//! Counters live in a table of their own (`{project}#{collection}#counts`, one item per hour): a
//! count reads a handful of small items there instead of sharing the Events table. Each
//! counter item keeps, per source partition of the inbound topic, the highest offset it has
//! counted (`hw#{topic}#{partition}`), updated in the same conditional write as the count: a
//! retried batch adds only the records past that mark, so counts are exact under redelivery.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use keen_shared::dead_letter::{DeadLetter, table_keys};
use keen_shared::storage::{self, Body};
use std::collections::{BTreeMap, HashMap};

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
    fn new(operation: &'static str, error: impl std::fmt::Display) -> Self {
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

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn b(bytes: Vec<u8>) -> AttributeValue {
    AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(bytes))
}

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

/// The items of a compressed body kept in attribute `attr` under (pk, sk): the head holds the
/// body, or the count of the parts `{sk}#part#{n}` that hold it. `extra` goes on every item.
fn split_items(
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
async fn read_split(
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
fn number_attr<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// The item under `key`, read consistently (a retry must see what it wrote); `operation` names
/// the read in an error.
async fn get_consistent(
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

/// Outcome of a dedupe claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The token is ours (new, expired, or already held by this very event).
    Won,
    /// Another event holds the token: this one is a duplicate.
    Duplicate,
}

/// Claims a uniqueness token for an event (architecture.md, "Dedupe table").
pub async fn claim_token(
    client: &Client,
    table: &str,
    key: &str,
    keen_id: &str,
    now_s: i64,
) -> Result<Claim, StoreError> {
    let result = client
        .put_item()
        .table_name(table)
        .item("pk", s(key))
        .item("keen_id", s(keen_id))
        .item("expires_at", n(now_s + storage::DEDUPE_TTL_SECONDS))
        .condition_expression("attribute_not_exists(pk) OR expires_at < :now OR keen_id = :id")
        .expression_attribute_values(":now", n(now_s))
        .expression_attribute_values(":id", s(keen_id))
        .send()
        .await;
    Ok(if conditional(result, "PutItem dedupe")? {
        Claim::Won
    } else {
        Claim::Duplicate
    })
}

/// The Dedupe key under which a dead letter's first failure time is kept.
fn dead_letter_claim_key(dead_letter_id: &str) -> String {
    format!("dead-letter#{dead_letter_id}")
}

/// Claims a record's dead letter for a failure at `failed_at_ms` and answers the failure time
/// the dead letter is kept under: this one, or the one of the attempt that claimed it first.
/// A record is dead-lettered again when its batch is redelivered (the function or the mapping
/// died before the batch was committed, or a later record of the partition asked for a retry);
/// the DeadLetters sort key begins with `failed_at`, so the same first time means the same item,
/// overwritten, rather than a second dead letter of the same record.
pub async fn claim_dead_letter(
    client: &Client,
    table: &str,
    dead_letter_id: &str,
    failed_at_ms: i64,
) -> Result<i64, StoreError> {
    let key = dead_letter_claim_key(dead_letter_id);
    let result = client
        .put_item()
        .table_name(table)
        .item("pk", s(key.clone()))
        .item("failed_at_ms", n(failed_at_ms))
        .item(
            "expires_at",
            n(failed_at_ms / 1000 + storage::DEAD_LETTER_TTL_SECONDS),
        )
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    if conditional(result, "PutItem dead letter claim")? {
        return Ok(failed_at_ms);
    }
    let key = Item::from([("pk".to_owned(), s(key))]);
    let existing = get_consistent(client, table, key, "GetItem dead letter claim").await?;
    let first = existing
        .as_ref()
        .and_then(|item| number_attr(item, "failed_at_ms"));
    // Claimed, then gone (expired between the two calls): this attempt's time will do.
    Ok(first.unwrap_or(failed_at_ms))
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
    let mut found = HashMap::new();
    for chunk in keys.chunks(100) {
        let mut pending: Vec<Item> = chunk
            .iter()
            .map(|(pk, sk)| {
                HashMap::from([
                    ("pk".to_owned(), s(pk.clone())),
                    ("sk".to_owned(), s(sk.clone())),
                ])
            })
            .collect();
        let mut attempts = 0;
        while !pending.is_empty() {
            attempts += 1;
            let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .projection_expression("pk, sk, src, #r")
                .expression_attribute_names("#r", REPLAYED_AT)
                .build()
                .map_err(|e| StoreError::new("BatchGetItem", e))?;
            let output = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| {
                    StoreError::new(
                        "BatchGetItem",
                        aws_sdk_dynamodb::error::DisplayErrorContext(e),
                    )
                })?;
            for item in output
                .responses
                .unwrap_or_default()
                .remove(table)
                .unwrap_or_default()
            {
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
            if let Some(rest) = output.unprocessed_keys.and_then(|mut u| u.remove(table)) {
                pending = rest.keys;
            }
            if !pending.is_empty() {
                if attempts >= 8 {
                    return Err(StoreError::new(
                        "BatchGetItem",
                        "unprocessed keys after 8 attempts",
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempts.min(6))).await;
            }
        }
    }
    Ok(found)
}

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
    let key = || {
        Item::from([
            ("pk".to_owned(), s(project_id)),
            ("sk".to_owned(), s(collection)),
        ])
    };
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

/// The DeadLetters table items of a dead letter: the envelope without payload as JSON, the
/// payload zstd-compressed, split into parts like a large event when needed.
///
/// Bounded by construction, whatever the record: the envelope's own texts are capped
/// ([`keen_shared::dead_letter::MAX_MESSAGE_BYTES`], [`keen_shared::dead_letter::MAX_PATH_BYTES`]); a key
/// and headers of more than [`MAX_INLINE_SOURCE_BYTES`] move out of the envelope into the
/// compressed body (with the payload; head flag [`SOURCE_IN_BODY`]); and the payload stays inline
/// only when it fits beside the envelope, else it goes to parts of at most
/// [`storage::MAX_BODY_CHUNK`] bytes.
pub fn dead_letter_items(letter: &DeadLetter, now_s: i64) -> (Vec<Item>, Item) {
    let keys = table_keys(letter);
    let expires = [("expires_at", n(now_s + storage::DEAD_LETTER_TTL_SECONDS))];
    let (envelope, content, source_in_body) = if letter.last_resort.is_some() {
        (letter.to_json(), None, false)
    } else if source_bytes(letter) > MAX_INLINE_SOURCE_BYTES {
        let record = RecordContent {
            key_b64: letter.source.key_b64.clone(),
            headers: letter.source.headers.clone(),
            payload_b64: letter
                .value_bytes()
                .map(|v| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v)),
        };
        let json = serde_json::to_vec(&record).unwrap_or_default();
        (stored_envelope(letter), Some(json), true)
    } else {
        (
            stored_envelope(letter),
            Some(letter.value_bytes().unwrap_or_default()),
            false,
        )
    };
    let (parts, mut head) = match content {
        Some(bytes) => {
            // Room left in the head beside the envelope and the other attributes.
            let inline_max = storage::MAX_BODY_CHUNK.saturating_sub(envelope.len() + 2_048);
            let body = Body::of_bytes_within(&bytes, inline_max, storage::MAX_BODY_CHUNK);
            split_items(&keys.pk, &keys.sk, body, "payload", &expires)
        }
        None => {
            let mut head = Item::from([
                ("pk".to_owned(), s(keys.pk.clone())),
                ("sk".to_owned(), s(keys.sk.clone())),
            ]);
            head.extend(expires.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            (Vec::new(), head)
        }
    };
    head.insert("id".to_owned(), s(letter.id.clone()));
    head.insert("error_code".to_owned(), s(letter.error.code.clone()));
    head.insert("envelope".to_owned(), s(envelope));
    if source_in_body {
        head.insert(SOURCE_IN_BODY.to_owned(), AttributeValue::Bool(true));
    }
    // The key of the index that lists a whole project. Only heads carry it, so parts stay out
    // of the index; and a record without tenant headers has no project, which an index key
    // cannot be (DynamoDB refuses an empty string there).
    if !letter.project_id.is_empty() {
        head.insert(
            DEAD_LETTER_PROJECT_ATTR.to_owned(),
            s(letter.project_id.clone()),
        );
    }
    (parts, head)
}

/// The DeadLetters head attribute keying the `by_project` index (template.yaml).
pub const DEAD_LETTER_PROJECT_ATTR: &str = "project_id";

/// Key and headers (their JSON) of more than this many bytes are kept in the compressed body
/// rather than in the head's envelope: a record may carry a ~1 MB key or header.
pub const MAX_INLINE_SOURCE_BYTES: usize = 64 * 1024;

/// Head flag: the body holds the record's key, headers and payload ([`RecordContent`]), and
/// the envelope has none of them.
pub const SOURCE_IN_BODY: &str = "source_in_body";

/// What a dead letter's body holds when its key and headers are too large for the head.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RecordContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    headers: Vec<keen_shared::dead_letter::SourceHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
}

/// The bytes the record's key and headers take in an envelope.
fn source_bytes(letter: &DeadLetter) -> usize {
    letter.source.key_b64.as_ref().map_or(0, String::len)
        + serde_json::to_string(&letter.source.headers).map_or(usize::MAX, |json| json.len())
}

/// The envelope as a head item keeps it: JSON without the payload, which lives in `payload`
/// (and without key and headers when they are too large for the head).
pub fn stored_envelope(letter: &DeadLetter) -> String {
    let mut envelope = letter.clone();
    envelope.payload = None;
    envelope.payload_b64 = None;
    envelope.payload_zstd_b64 = None;
    envelope.payload_ref = None;
    if source_bytes(letter) > MAX_INLINE_SOURCE_BYTES {
        envelope.source.key_b64 = None;
        envelope.source.headers = Vec::new();
    }
    envelope.to_json()
}

/// Reads a dead letter back whole, payload included, from its table keys.
pub async fn read_dead_letter(
    client: &Client,
    table: &str,
    keys: &keen_shared::dead_letter::PayloadRef,
) -> Result<Option<DeadLetter>, StoreError> {
    let Some((head, body)) = read_split(client, table, &keys.pk, &keys.sk, "payload").await? else {
        return Ok(None);
    };
    let envelope = string_attr(&head, "envelope").unwrap_or_default();
    let mut letter: DeadLetter =
        serde_json::from_str(envelope).map_err(|e| StoreError::new("decode dead letter", e))?;
    if letter.last_resort.is_some() {
        return Ok(Some(letter));
    }
    if head.get(SOURCE_IN_BODY).is_some() {
        let content: RecordContent = serde_json::from_slice(&body)
            .map_err(|e| StoreError::new("decode dead letter content", e))?;
        let value = content
            .payload_b64
            .map(|b64| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64))
            .transpose()
            .map_err(|e| StoreError::new("decode dead letter payload", e))?
            .unwrap_or_default();
        letter.source.key_b64 = content.key_b64;
        letter.source.headers = content.headers;
        letter.set_payload(&value);
    } else {
        letter.set_payload(&body);
    }
    Ok(Some(letter))
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
