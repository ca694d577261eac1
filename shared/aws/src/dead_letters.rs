//! The DeadLetters table: the items of a dead letter (bounded by construction, whatever the
//! record), reading one back whole, a project's dead letters newest first (product.md §9, and
//! the operator's `keenctl dead-letters`), and the removals and updates a replay makes.
//!
//! Contract:
//! - Items are those of [`dead_letter_items`]: a head per dead letter (`pk` =
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

use crate::items::{Item, StoreError, conditional, n, read_split, s, split_items, string_attr};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use keen_shared::dead_letter::{DeadLetter, PayloadRef, table_keys};
use keen_shared::storage::{self, Body};
use std::collections::{HashMap, HashSet};

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
