//! A record's way through one invocation: its [`Entry`] (the record, its tenant, the core's
//! outcome) and its [`Fate`], which each step of `Ingest::run` moves on, and the helpers that
//! apply the answers of claims, writes and announcements to fates.

use crate::DecodedRecord;
use keen_aws::dedupe::Claim;
use keen_aws::items::StoreError;
use keen_shared::dead_letter::DeadLetter;
use keen_shared::record::Tenant;
use keen_shared::reject::Rejection;
use keen_shared::{Outcome, StoredEvent};
use std::collections::BTreeMap;

/// Per-record fate within one invocation, held by the record's [`Entry`]. Every record starts
/// as `Retry` and each step of [`Ingest::run`] may move it, in this order:
///
/// | step | from | to |
/// |---|---|---|
/// | 1–3 judge | `Retry` | `Store` or `DeadLetter` (the core's outcome); stays `Retry` when its key could not be looked up or time ran out; `Resend` for a second record with the same keen.id |
/// | 4 uniqueness tokens | `Store` | `Duplicate` (token held by another event), `Resend` (clock-stamped resend), `Retry` (claim failed) |
/// | 5 resends | `Store` | `Resend`, `AlreadyStored` (replays), `Retry` (check failed) |
/// | 6 events | `Store` | `DeadLetter` (the table refused it for good), `Retry` (write failed) |
/// | 7 dead letters | `DeadLetter` | `Retry` (claim, table or queue failed transiently) |
/// | 8 counters, collections | `Store` | `Retry` (update failed) |
///
/// What is left `Retry` is redelivered from the first such offset of its partition (the partial
/// batch response); every other fate is terminal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    /// Being written as an event.
    Store,
    /// Dropped as a uniqueness-token duplicate (counted, not stored).
    Duplicate,
    /// Already stored from another offset (an idempotent producer's resend).
    Resend,
    /// Being dead-lettered.
    DeadLetter,
    /// Transient failure: retried by Lambda from the first such offset of its partition.
    Retry,
    /// Replays only: the event is stored already, written by the ingest itself (a later delivery
    /// of the record after its cause was fixed), which also counted it.
    AlreadyStored,
}

/// One record of a batch and all that is known of it: who sent it, what the core made of it,
/// and its fate so far. Every step reads and moves the fate here, so a record's way through the
/// batch is one value, not the same index into four parallel lists.
pub(crate) struct Entry<'a> {
    pub(crate) record: &'a DecodedRecord,
    pub(crate) tenant: Option<Tenant>,
    /// `None`: not judged (its key could not be looked up, or time ran out).
    pub(crate) outcome: Option<Outcome>,
    pub(crate) fate: Fate,
    /// Its event was deleted and its tombstone written again (step 6b): stored, but no event
    /// to describe.
    pub(crate) stays_deleted: bool,
}

impl Entry<'_> {
    /// The event, while the record is still to be stored.
    pub(crate) fn to_store(&self) -> Option<&StoredEvent> {
        match (&self.fate, &self.outcome) {
            (Fate::Store, Some(Outcome::Stored(event))) => Some(event),
            _ => None,
        }
    }

    /// The rejection, while the record is still to be dead-lettered.
    pub(crate) fn to_dead_letter(&self) -> Option<&Rejection> {
        match (&self.fate, &self.outcome) {
            (Fate::DeadLetter, Some(Outcome::DeadLettered(rejection))) => Some(rejection),
            _ => None,
        }
    }
}

pub(crate) fn apply_claim(fate: &mut Fate, result: Result<Claim, StoreError>) {
    *fate = match result {
        Ok(Claim::Won) => Fate::Store,
        Ok(Claim::Duplicate) => Fate::Duplicate,
        Err(error) => {
            tracing::warn!(%error, "dedupe claim failed; the record will be retried");
            Fate::Retry
        }
    };
}

pub(crate) fn apply_dead_letter_claim(
    fate: &mut Fate,
    letters: &mut BTreeMap<usize, DeadLetter>,
    i: usize,
    result: Result<i64, StoreError>,
) {
    match result {
        Ok(first_failed_ms) => {
            if let Some(letter) = letters.get_mut(&i) {
                letter.failed_at = keen_shared::timestamp::format_millis(first_failed_ms);
            }
            *fate = Fate::DeadLetter;
        }
        Err(error) => {
            tracing::warn!(%error, "dead letter claim failed; the record will be retried");
            *fate = Fate::Retry;
        }
    }
}

/// Applies a write or announcement report: transient failures become [`Fate::Retry`]; refusals
/// of the content are returned with their reason (retrying them is useless).
pub(crate) fn settle(
    report: &keen_aws::retry::WriteReport,
    entries: &mut [Entry<'_>],
) -> Vec<(usize, String)> {
    let refused = report.refused();
    for &tag in &report.failed_tags {
        if !refused.iter().any(|(t, _)| *t == tag) {
            entries[tag].fate = Fate::Retry;
        }
    }
    refused
}

/// The first offset of each partition whose record must be retried.
pub(crate) fn first_failed_offsets(entries: &[Entry<'_>]) -> BTreeMap<(String, i32), i64> {
    let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for entry in entries.iter().filter(|e| e.fate == Fate::Retry) {
        let record = entry.record;
        let offset = first
            .entry((record.topic.clone(), record.partition))
            .or_insert(record.offset);
        *offset = (*offset).min(record.offset);
    }
    first
}
