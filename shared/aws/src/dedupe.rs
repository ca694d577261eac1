//! The Dedupe table: uniqueness claims on events (architecture.md, "Dedupe table") and the
//! first failure time of each record's dead letter, so a redelivered record is dead-lettered
//! under the same item.

use crate::items::{Item, StoreError, conditional, get_consistent, n, number_attr, s};
use aws_sdk_dynamodb::Client;
use keen_shared::storage;

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
