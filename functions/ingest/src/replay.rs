//! Replaying dead letters after a fix (product.md §8): each dead letter becomes again the record
//! it was and goes through the same steps as a delivery from the inbound topic.
//!
//! Contract:
//! - Identity: the record is rebuilt from the envelope (topic, partition, offset, timestamp,
//!   key, headers, value), so its keen.id is the one the first attempt would have had, and
//!   storing it rewrites one event item however often it is replayed.
//! - Counting: a replayed record sits below its partition's high-water mark, which the
//!   ingest's counters go by; a replay instead adds the record's position to the hourly
//!   counter's set of replayed records in the same conditional write as the count
//!   ([`keen_aws::counters::count_replayed`]), so it is counted once however often it is replayed, retried
//!   or interrupted. The event heads a replay writes are marked: an event the ingest stored
//!   itself (a later delivery after the cause was fixed) is left alone and not counted again.
//! - The dead letter: removed (every copy of its id, head first) once its record is stored or
//!   found to be a duplicate; when the record is rejected again, exactly one copy remains (the
//!   newest, others removed) carrying the new error, its `failed_at` and payload unchanged.
//!   Nothing is announced on the queue again: the operator who replays reads the report.
//! - A record without tenant headers is replayed like any other and stays dead-lettered: the
//!   headers are the gateway's proof of who wrote the record, which nobody can add afterwards.
//! - A transient failure leaves the dead letter as it was; replaying again is always safe.

use crate::{DecodedRecord, Fate, Ingest, Mode};
use keen_aws::dead_letters;
use keen_shared::Outcome;
use keen_shared::dead_letter::{DeadLetter, PayloadRef, SERVICE_VERSION, table_keys};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What became of one replayed dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Stored (and counted) as the event with this keen.id; the dead letter is removed. In a
    /// preview: would be stored.
    Stored { keen_id: String },
    /// Not stored again, and the dead letter is removed: the event is already there (an
    /// earlier replay or the ingest stored it), or its uniqueness token or producer identity
    /// belongs to an event already stored.
    Duplicate { reason: String },
    /// Rejected again; the one dead letter left carries this error.
    StillInvalid { code: String, message: String },
    /// Something transient failed (storage, key lookup) or the dead letter cannot be replayed
    /// as given; the dead letter is as it was unless the message says otherwise.
    Failed { error: String },
}

impl ReplayOutcome {
    /// `stored`, `duplicate`, `still_invalid` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            ReplayOutcome::Stored { .. } => "stored",
            ReplayOutcome::Duplicate { .. } => "duplicate",
            ReplayOutcome::StillInvalid { .. } => "still_invalid",
            ReplayOutcome::Failed { .. } => "failed",
        }
    }
}

/// One dead letter's replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayResult {
    /// The dead letter's id.
    pub id: String,
    /// Its project.
    pub project_id: String,
    /// Its collection.
    pub collection: String,
    /// What happened.
    pub outcome: ReplayOutcome,
}

/// The results of a replay, one per distinct dead letter id, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub results: Vec<ReplayResult>,
}

impl ReplayReport {
    /// How many dead letters ended each way (`stored`, `duplicate`, `still_invalid`,
    /// `failed`), for a summary line.
    pub fn totals(&self) -> BTreeMap<&'static str, usize> {
        let mut totals = BTreeMap::new();
        for result in &self.results {
            *totals.entry(result.outcome.name()).or_default() += 1;
        }
        totals
    }

    /// Whether every dead letter reached a final state (nothing to replay again).
    pub fn all_settled(&self) -> bool {
        !self
            .results
            .iter()
            .any(|r| matches!(r.outcome, ReplayOutcome::Failed { .. }))
    }
}

impl Ingest {
    /// Replays dead letters (whole, payload included, as
    /// [`dead_letters::list_dead_letters`] reads them) through the ingest's steps, keeping each
    /// record's identity. See the module documentation for what happens to each dead letter.
    pub async fn replay(&self, letters: &[DeadLetter]) -> ReplayReport {
        let letters = distinct(letters);
        let now_ms = (self.clock)();
        let mut outcomes: Vec<Option<ReplayOutcome>> = vec![None; letters.len()];

        // Every copy of each dead letter, one query per collection, before anything is written:
        // a letter whose copies cannot be found is not replayed, so none is left behind.
        let mut copies: HashMap<(String, String), HashMap<String, Vec<PayloadRef>>> =
            HashMap::new();
        for letter in &letters {
            let group = (letter.project_id.clone(), letter.collection.clone());
            if copies.contains_key(&group) {
                continue;
            }
            match dead_letters::dead_letter_copies(
                &self.dynamodb,
                &self.config.tables.dead_letters,
                &group.0,
                &group.1,
            )
            .await
            {
                Ok(found) => {
                    copies.insert(group, found);
                }
                Err(error) => {
                    for (i, other) in letters.iter().enumerate() {
                        if (&other.project_id, &other.collection) == (&group.0, &group.1) {
                            outcomes[i] = Some(failed(format!(
                                "reading the dead letters of the collection failed: {error}"
                            )));
                        }
                    }
                }
            }
        }

        let mut records = Vec::new();
        let mut replayed = Vec::new();
        for (i, letter) in letters.iter().enumerate() {
            if outcomes[i].is_some() {
                continue;
            }
            match DecodedRecord::from_dead_letter(letter) {
                Some(record) => {
                    records.push(record);
                    replayed.push(i);
                }
                None => {
                    outcomes[i] = Some(failed(
                        "the dead letter carries no payload (an announcement pointing at the \
                         table): replay the dead letter as read from the DeadLetters table"
                            .to_owned(),
                    ));
                }
            }
        }

        let mut counts = crate::Counts::default();
        let batch = self
            .run(&records, Mode::Replay, now_ms, None, &mut counts)
            .await;

        for (r, &i) in replayed.iter().enumerate() {
            let letter = &letters[i];
            let own = copies
                .get(&(letter.project_id.clone(), letter.collection.clone()))
                .and_then(|c| c.get(&letter.id))
                .cloned()
                .unwrap_or_default();
            let outcome = match (&batch.entries[r].fate, &batch.entries[r].outcome) {
                (Fate::Store, Some(Outcome::Stored(event))) => {
                    if batch.newly_counted.contains(&r) {
                        ReplayOutcome::Stored {
                            keen_id: event.keen_id.to_hex(),
                        }
                    } else {
                        duplicate("the event is already stored by an earlier replay")
                    }
                }
                (Fate::AlreadyStored, _) => {
                    duplicate("the event is already stored: the ingest stored this record itself")
                }
                (Fate::Duplicate, _) => {
                    duplicate("its uniqueness token is held by an event already stored")
                }
                (Fate::Resend, _) => {
                    duplicate("the same producer record is already stored from another offset")
                }
                (Fate::DeadLetter, Some(Outcome::DeadLettered(rejection))) => {
                    let fresh = DeadLetter::new(
                        &records[r].as_inbound(),
                        batch.entries[r].tenant.as_ref(),
                        rejection,
                        now_ms,
                    );
                    let outcome = ReplayOutcome::StillInvalid {
                        code: fresh.error.code.clone(),
                        message: fresh.error.message.clone(),
                    };
                    match self.keep_one(letter, &own, fresh).await {
                        Ok(()) => outcome,
                        Err(error) => failed(format!(
                            "rejected again, but updating the dead letter failed: {error}"
                        )),
                    }
                }
                _ => failed(
                    "a transient failure (storage or key lookup, see the logs); the dead \
                     letter is unchanged: replay it again"
                        .to_owned(),
                ),
            };
            let settled = matches!(
                outcome,
                ReplayOutcome::Stored { .. } | ReplayOutcome::Duplicate { .. }
            );
            outcomes[i] = Some(if settled {
                match self.remove_all(&own).await {
                    Ok(()) => outcome,
                    Err(error) => failed(format!(
                        "the record is stored, but removing its dead letter failed: {error}; \
                         replaying it again is safe"
                    )),
                }
            } else {
                outcome
            });
        }

        report(&letters, outcomes)
    }

    /// What a replay would do, writing nothing: the key lookups and the event rules only
    /// (`Stored` means "would be stored"; whether it would be a duplicate is not checked).
    pub async fn preview_replay(&self, letters: &[DeadLetter]) -> ReplayReport {
        let letters = distinct(letters);
        let mut records = Vec::new();
        let mut previewed = Vec::new();
        let mut outcomes: Vec<Option<ReplayOutcome>> = vec![None; letters.len()];
        for (i, letter) in letters.iter().enumerate() {
            match DecodedRecord::from_dead_letter(letter) {
                Some(record) => {
                    records.push(record);
                    previewed.push(i);
                }
                None => outcomes[i] = Some(failed("the dead letter carries no payload".to_owned())),
            }
        }
        let judged = self.judge(&records, None).await;
        for (r, &i) in previewed.iter().enumerate() {
            outcomes[i] = Some(
                match (&judged.entries[r].fate, &judged.entries[r].outcome) {
                    (Fate::Resend, _) => {
                        duplicate("another letter replayed with it has its keen.id")
                    }
                    (_, Some(Outcome::Stored(event))) => ReplayOutcome::Stored {
                        keen_id: event.keen_id.to_hex(),
                    },
                    (_, Some(Outcome::DeadLettered(rejection))) => ReplayOutcome::StillInvalid {
                        code: rejection.code.as_str().to_owned(),
                        message: rejection.message.clone(),
                    },
                    (_, None) => failed("the writing key could not be looked up".to_owned()),
                },
            );
        }
        report(&letters, outcomes)
    }

    /// Leaves exactly one copy of a dead letter rejected again: the replayed one when it is
    /// still stored (else the newest), with the new error; the other copies are removed.
    async fn keep_one(
        &self,
        letter: &DeadLetter,
        copies: &[PayloadRef],
        fresh: DeadLetter,
    ) -> Result<(), keen_aws::items::StoreError> {
        let replayed = table_keys(letter);
        let Some(kept) = copies
            .iter()
            .find(|c| **c == replayed)
            .or_else(|| copies.first())
        else {
            return Ok(()); // no copy left (expired meanwhile): nothing to keep
        };
        let mut updated = letter.clone();
        updated.failed_at = kept
            .sk
            .split_once('#')
            .map(|(failed_at, _)| failed_at.to_owned())
            .unwrap_or_else(|| letter.failed_at.clone());
        updated.error = fresh.error;
        updated.service_version = SERVICE_VERSION.to_owned();
        dead_letters::update_dead_letter_error(
            &self.dynamodb,
            &self.config.tables.dead_letters,
            &updated,
        )
        .await?;
        let others: Vec<PayloadRef> = copies.iter().filter(|c| *c != kept).cloned().collect();
        self.remove_all(&others).await
    }

    async fn remove_all(&self, copies: &[PayloadRef]) -> Result<(), keen_aws::items::StoreError> {
        for copy in copies {
            dead_letters::delete_dead_letter(
                &self.dynamodb,
                &self.config.tables.dead_letters,
                copy,
            )
            .await?;
        }
        Ok(())
    }
}

/// The letters with each id once (the first given), in order.
fn distinct(letters: &[DeadLetter]) -> Vec<DeadLetter> {
    let mut seen = HashSet::new();
    letters
        .iter()
        .filter(|l| seen.insert(l.id.clone()))
        .cloned()
        .collect()
}

/// One result per letter; a letter nothing was decided for is reported as failed (never
/// expected: every path above decides).
fn report(letters: &[DeadLetter], outcomes: Vec<Option<ReplayOutcome>>) -> ReplayReport {
    ReplayReport {
        results: letters
            .iter()
            .zip(outcomes)
            .map(|(letter, outcome)| ReplayResult {
                id: letter.id.clone(),
                project_id: letter.project_id.clone(),
                collection: letter.collection.clone(),
                outcome: outcome.unwrap_or_else(|| failed("not replayed".to_owned())),
            })
            .collect(),
    }
}

fn failed(error: String) -> ReplayOutcome {
    ReplayOutcome::Failed { error }
}

fn duplicate(reason: &str) -> ReplayOutcome {
    ReplayOutcome::Duplicate {
        reason: reason.to_owned(),
    }
}
