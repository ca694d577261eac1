//! The ingest function: drains the inbound topic (an MSK event), runs every record through the
//! event core, and persists the outcome exactly once (architecture.md).
//!
//! Per invocation: decode the records; look each writing key up once (cached ≤ 30 s); process
//! every record; claim uniqueness tokens; skip resends of an idempotent producer's record that
//! is already stored from another offset; write event parts, then heads; count and describe each
//! collection once; dead-letter rejects to the table and the queue. Any transient failure turns
//! into the Kafka partial batch response — the first failed offset of each affected partition —
//! so Lambda retries from there; deterministic keen.ids make the retry rewrite the same items,
//! and counters advance only over the successful prefix of each partition.
//!
//! [`Ingest::replay`] runs dead letters through the same steps after an operator's fix, keeping
//! each record's identity (see the `replay` module for how it counts and what it does with the
//! dead letter).

mod config;
mod decode;
mod deleted;
mod fate;
mod keys;
mod memo;
mod metrics;
mod replay;

pub use config::{Config, ConfigError, DEFAULT_TIME_RESERVE, Env};
pub use decode::{DecodedRecord, MskEvent, MskRecord, decode_event};
use fate::{Entry, Fate, apply_claim, apply_dead_letter_claim, first_failed_offsets, settle};
use memo::CollectionMemo;
pub use metrics::Counts;
pub use replay::{ReplayOutcome, ReplayReport, ReplayResult};

use aws_sdk_dynamodb::Client as DynamoDb;
use aws_sdk_dynamodb::types::AttributeValue;
use keen_aws::batch::{TableWrite, WriteBatcher, WriteOp};
use keen_aws::collections::CollectionUpdate;
use keen_aws::counters::CounterKey;
use keen_aws::dlq::{self, Announcement, DeadLetterQueue};
use keen_aws::events::EventFacts;
use keen_shared::Outcome;
use keen_shared::addon::ReferenceData;
use keen_shared::dead_letter::{DeadLetter, table_keys};
use keen_shared::record::{HEADER_PRODUCER_TIMESTAMP, Tenant};
use keen_shared::reject::{ErrorCode, Rejection};
use keen_shared::storage::{self, EventLayout};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The function's state, built once per execution environment.
pub struct Ingest {
    config: Config,
    dynamodb: DynamoDb,
    batcher: WriteBatcher,
    queue: DeadLetterQueue,
    keys: keys::KeyCache,
    data: Arc<ReferenceData>,
    layout: EventLayout,
    clock: fn() -> i64,
    /// What this process knows the Collections table already holds.
    collections: Mutex<CollectionMemo>,
}

/// Milliseconds since the epoch, from the system clock.
pub fn system_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whether a batch is the inbound topic's (Lambda's delivery) or an operator's replay of dead
/// letters. They differ in three ways: a replay sends no new dead letter (it keeps the one it
/// replays, see [`Ingest::replay`]), counts each record once by its identity rather than by the
/// partition's high-water mark (a replayed record sits below the mark), and marks the event
/// heads it writes so that it tells its own earlier work from the ingest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Live,
    Replay,
}

/// Steps 1–3 of a batch.
struct Judged<'a> {
    entries: Vec<Entry<'a>>,
    /// Records left unjudged for the next invocation (time ran out).
    deferred: u64,
}

/// What became of a batch.
struct Batch<'a> {
    entries: Vec<Entry<'a>>,
    /// Replays only: the records this run counted (the others were counted by an earlier one).
    newly_counted: HashSet<usize>,
    /// Records left unjudged for the next invocation (time ran out).
    deferred: u64,
}

impl Ingest {
    /// Builds the function state. `batcher` and `queue` are injected so tests can wrap the real
    /// clients with fault injection.
    pub fn new(
        config: Config,
        dynamodb: DynamoDb,
        batcher: WriteBatcher,
        queue: DeadLetterQueue,
        keys_table: keen_aws::keys_table::KeysTable,
        data: Arc<ReferenceData>,
    ) -> Self {
        let layout = EventLayout::new(config.shards);
        Ingest {
            config,
            dynamodb,
            batcher,
            queue,
            keys: keys::KeyCache::new(keys_table),
            data,
            layout,
            clock: system_clock_ms,
            collections: Mutex::new(CollectionMemo::default()),
        }
    }

    /// The function state on plain clients: the real write batcher, queue and Keys table.
    pub fn with_clients(
        config: Config,
        dynamodb: DynamoDb,
        sqs: aws_sdk_sqs::Client,
        data: Arc<ReferenceData>,
    ) -> Self {
        Ingest::new(
            config.clone(),
            dynamodb.clone(),
            WriteBatcher::new(dynamodb.clone()),
            DeadLetterQueue::new(sqs, config.dead_letter_queue_url.clone()),
            keen_aws::keys_table::KeysTable::new(dynamodb, config.keys_table.clone()),
            data,
        )
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: fn() -> i64) -> Self {
        self.clock = clock;
        self
    }

    /// Handles one MSK event. Returns the partial batch response (empty list when everything was
    /// stored or dead-lettered) and the counts.
    pub async fn handle(&self, records: Vec<DecodedRecord>) -> (Value, Counts) {
        self.handle_until(records, None).await
    }

    /// [`Ingest::handle`] within a time budget: records not yet judged when less than
    /// [`Config::time_reserve`] is left before `deadline` (the invocation's, from Lambda) are
    /// left to the next invocation through the partial batch response, so that a slow batch
    /// still makes progress instead of timing out and being retried whole, forever. At least one
    /// record is always judged.
    pub async fn handle_until(
        &self,
        records: Vec<DecodedRecord>,
        deadline: Option<Instant>,
    ) -> (Value, Counts) {
        let mut counts = Counts {
            received: records.len() as u64,
            ..Counts::default()
        };
        let now_ms = (self.clock)();
        let cutoff = deadline.map(|d| judging_cutoff(d, self.config.time_reserve, Instant::now()));
        let batch = self
            .run(&records, Mode::Live, now_ms, cutoff, &mut counts)
            .await;

        let first_failed = first_failed_offsets(&batch.entries);
        for entry in &batch.entries {
            match entry.fate {
                Fate::Store => counts.stored += 1,
                Fate::Duplicate => counts.duplicates += 1,
                Fate::Resend | Fate::AlreadyStored => counts.resends += 1,
                Fate::DeadLetter => {
                    if let Some(rejection) = entry.to_dead_letter() {
                        *counts
                            .dead_lettered
                            .entry(rejection.code.as_str().to_owned())
                            .or_default() += 1;
                    }
                }
                Fate::Retry => counts.retried += 1,
            }
        }
        counts.deferred = batch.deferred;
        let failures: Vec<Value> = first_failed
            .iter()
            .map(|((topic, partition), offset)| {
                json!({"itemIdentifier": {"partition": format!("{topic}-{partition}"), "offset": offset}})
            })
            .collect();
        (json!({ "batchItemFailures": failures }), counts)
    }

    /// Steps 1–3 of a batch: tenants, keys (each looked up once), the core record by record,
    /// and one record per keen.id.
    async fn judge<'a>(&self, records: &'a [DecodedRecord], cutoff: Option<Instant>) -> Judged<'a> {
        // 1. Tenants and keys, each key looked up once.
        let mut entries: Vec<Entry<'a>> = records
            .iter()
            .map(|record| Entry {
                record,
                tenant: Tenant::from_record(&record.as_inbound()).ok(),
                outcome: None,
                fate: Fate::Retry,
                stays_deleted: false,
            })
            .collect();
        let wanted: HashSet<(String, String)> = entries
            .iter()
            .filter_map(|e| e.tenant.as_ref())
            .map(|t| (t.project_id.clone(), t.key_id.clone()))
            .collect();
        let looked_up = self.keys.lookup_all(wanted).await;

        // 2. The core, record by record, while time is left (the records after are retried).
        let mut deferred = 0;
        for (i, entry) in entries.iter_mut().enumerate() {
            if i > 0 && cutoff.is_some_and(|cutoff| Instant::now() >= cutoff) {
                deferred = records.len() - i;
                break;
            }
            let inbound = entry.record.as_inbound();
            entry.outcome = match &entry.tenant {
                None => Some(keen_shared::process(&inbound, None, &self.data)),
                Some(tenant) => {
                    match looked_up.get(&(tenant.project_id.clone(), tenant.key_id.clone())) {
                        Some(Ok(model)) => {
                            Some(keen_shared::process(&inbound, model.as_deref(), &self.data))
                        }
                        _ => None, // key lookup failed transiently: retry the record
                    }
                }
            };
            entry.fate = match &entry.outcome {
                Some(Outcome::Stored(_)) => Fate::Store,
                Some(Outcome::DeadLettered(_)) => Fate::DeadLetter,
                None => Fate::Retry,
            };
        }

        // 3. One record per keen.id within the batch (a resend in the same batch).
        let mut seen_ids = HashSet::new();
        for entry in &mut entries {
            if let Some(Outcome::Stored(event)) = &entry.outcome
                && !seen_ids.insert(event.keen_id)
            {
                entry.fate = Fate::Resend;
            }
        }
        if deferred > 0 {
            tracing::warn!(
                deferred,
                "the invocation's time is running out: the remaining records go to the next one"
            );
        }
        Judged {
            entries,
            deferred: deferred as u64,
        }
    }

    /// The whole of a batch in `mode`: each step moves the records' fates on, in this order;
    /// the entries say what became of each record.
    async fn run<'a>(
        &self,
        records: &'a [DecodedRecord],
        mode: Mode,
        now_ms: i64,
        cutoff: Option<Instant>,
        counts: &mut Counts,
    ) -> Batch<'a> {
        // 1–3. Tenants, keys, the core, one record per keen.id.
        let Judged {
            mut entries,
            deferred,
        } = self.judge(records, cutoff).await;

        // 4. Uniqueness tokens: claim before writing.
        self.claim_tokens(&mut entries, now_ms).await;

        // 5. Resends of idempotent producers' records already stored from another offset (and,
        // for a replay, events the ingest itself stored meanwhile).
        self.skip_resends(&mut entries, mode).await;

        // 6. Events: parts first, then heads of events whose parts all landed.
        // An event the table refuses for good (none should be: items are bounded by
        // construction) is dead-lettered rather than retried forever.
        self.write_events(&mut entries, counts, mode, now_ms).await;

        // 6b. Events deleted meanwhile stay deleted (their tombstones written again).
        let with_deletions = self.keep_deleted(&mut entries, now_ms).await;

        // 7. Dead letters: table and queue. A replay keeps its one dead letter itself.
        if mode == Mode::Live {
            self.dead_letter(&mut entries, counts, now_ms).await;
        }

        // 8. Counters and collections, over the successful prefix of each partition (a replay's
        // records stand each on its own: none waits for another's redelivery).
        let first_failed = match mode {
            Mode::Live => first_failed_offsets(&entries),
            Mode::Replay => BTreeMap::new(),
        };
        let newly_counted = self
            .count_and_describe(&mut entries, &first_failed, &with_deletions, mode)
            .await;
        Batch {
            entries,
            newly_counted,
            deferred,
        }
    }

    async fn claim_tokens(&self, entries: &mut [Entry<'_>], now_ms: i64) {
        let mut claims = Vec::new();
        for (i, entry) in entries.iter_mut().enumerate() {
            let Some(event) = entry.to_store() else {
                continue;
            };
            let Some(token) = &event.uniqueness_token else {
                continue;
            };
            let client = self.dynamodb.clone();
            let table = self.config.tables.dedupe.clone();
            let key = storage::dedupe_key(&event.project_id, &event.collection, token);
            let id = event.keen_id.to_hex();
            // Until its claim answers, the record counts as one to retry (a lost task included).
            entry.fate = Fate::Retry;
            claims.push((i, async move {
                keen_aws::dedupe::claim_token(&client, &table, &key, &id, now_ms / 1000).await
            }));
        }
        bounded(claims, |i, result| {
            apply_claim(&mut entries[i].fate, result)
        })
        .await;

        // An idempotent producer's record whose timestamp the gateway replaced by its clock: a
        // resend through another instance or after a restart got another reading, hence another
        // sort key. The first copy claims the keen.id with its sort key; a later copy finds
        // another sort key there and is a resend of a stored record.
        let mut claims = Vec::new();
        for (i, entry) in entries.iter_mut().enumerate() {
            if !entry.record.header(HEADER_PRODUCER_TIMESTAMP) {
                continue;
            }
            let Some(event) = entry.to_store() else {
                continue;
            };
            let client = self.dynamodb.clone();
            let table = self.config.tables.dedupe.clone();
            let key =
                storage::clock_resend_key(&event.project_id, &event.collection, &event.keen_id);
            let sort_key = storage::sort_key(event.timestamp_ms, &event.keen_id);
            entry.fate = Fate::Retry;
            claims.push((i, async move {
                keen_aws::dedupe::claim_token(&client, &table, &key, &sort_key, now_ms / 1000).await
            }));
        }
        bounded(claims, |i, result| {
            let fate = &mut entries[i].fate;
            apply_claim(fate, result);
            if *fate == Fate::Duplicate {
                *fate = Fate::Resend;
            }
        })
        .await;
    }

    /// The Events table key (pk, sk) of a stored event's head.
    fn event_key(&self, event: &keen_shared::pipeline::StoredEvent) -> (String, String) {
        let pk = self.layout.partition_key(
            &event.project_id,
            &event.collection,
            event.timestamp_ms,
            &event.keen_id,
        );
        (pk, storage::sort_key(event.timestamp_ms, &event.keen_id))
    }

    /// The items a stored event is written as: its head, and its parts when it is split.
    fn event_items(
        &self,
        event: &keen_shared::pipeline::StoredEvent,
        source: &str,
    ) -> keen_aws::events::EventItems {
        keen_aws::events::event_items(
            &EventFacts {
                project_id: &event.project_id,
                collection: &event.collection,
                keen_id: &event.keen_id,
                timestamp_ms: event.timestamp_ms,
                json: &event.json,
                source,
            },
            &self.layout,
        )
    }

    async fn skip_resends(&self, entries: &mut [Entry<'_>], mode: Mode) {
        // Only an idempotent producer's record can reach us at two offsets with one keen.id. A
        // replay checks every record: the ingest may have stored it meanwhile.
        let mut keys: Vec<(String, String)> = Vec::new();
        let mut by_key: HashMap<(String, String), usize> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let producer = entry.tenant.as_ref().is_some_and(|t| t.producer.is_some());
            if mode == Mode::Live && !producer {
                continue;
            }
            let Some(event) = entry.to_store() else {
                continue;
            };
            let (pk, sk) = self.event_key(event);
            keys.push((pk.clone(), sk.clone()));
            by_key.insert((pk, sk), i);
        }
        if keys.is_empty() {
            return;
        }
        match keen_aws::events::existing_heads(&self.dynamodb, &self.config.tables.events, &keys)
            .await
        {
            Ok(found) => {
                for (key, head) in found {
                    let Some(&i) = by_key.get(&key) else { continue };
                    let entry = &mut entries[i];
                    if head.source != entry.record.source() {
                        entry.fate = Fate::Resend;
                    } else if mode == Mode::Replay && !head.replayed {
                        entry.fate = Fate::AlreadyStored;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "resend check failed; the records will be retried");
                for &i in by_key.values() {
                    entries[i].fate = Fate::Retry;
                }
            }
        }
    }

    async fn write_events(
        &self,
        entries: &mut [Entry<'_>],
        counts: &mut Counts,
        mode: Mode,
        now_ms: i64,
    ) {
        let mut parts = Vec::new();
        let mut heads = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let Some(event) = entry.to_store() else {
                continue;
            };
            let source = entry.record.source();
            let mut items = self.event_items(event, &source);
            if mode == Mode::Replay {
                items.head.insert(
                    keen_aws::events::REPLAYED_AT.to_owned(),
                    AttributeValue::N(now_ms.to_string()),
                );
            }
            counts.stored_bytes += items.stored_bytes as u64;
            for part in items.parts {
                parts.push(TableWrite {
                    table: self.config.tables.events.clone(),
                    op: WriteOp::Put(part),
                    tag: i,
                });
            }
            heads.push(TableWrite {
                table: self.config.tables.events.clone(),
                op: WriteOp::Put(items.head),
                tag: i,
            });
        }
        for writes in [parts, heads] {
            // A head is written only once all its parts are: readers start from heads.
            let writes: Vec<TableWrite> = writes
                .into_iter()
                .filter(|w| entries[w.tag].fate == Fate::Store)
                .collect();
            if writes.is_empty() {
                continue;
            }
            let report = self.batcher.write_all(writes).await;
            counts.write_retries += u64::from(report.retries);
            let refused: BTreeMap<usize, String> = report.refused().into_iter().collect();
            for tag in report.failed_tags {
                let entry = &mut entries[tag];
                match refused.get(&tag) {
                    Some(reason) => {
                        tracing::error!(%reason, "the Events table refused an event; dead-lettering it");
                        entry.fate = Fate::DeadLetter;
                        entry.outcome = Some(Outcome::DeadLettered(store_refused(reason)));
                    }
                    None => entry.fate = Fate::Retry,
                }
            }
        }
    }

    async fn dead_letter(&self, entries: &mut [Entry<'_>], counts: &mut Counts, now_ms: i64) {
        // Each record's dead letter is kept under the time it first failed (claimed in the Dedupe
        // table), so a redelivered batch overwrites its dead letters instead of adding more.
        let mut claims = Vec::new();
        let mut letters: BTreeMap<usize, DeadLetter> = BTreeMap::new();
        for (i, entry) in entries.iter_mut().enumerate() {
            let Some(rejection) = entry.to_dead_letter() else {
                continue;
            };
            let letter = DeadLetter::new(
                &entry.record.as_inbound(),
                entry.tenant.as_ref(),
                rejection,
                now_ms,
            );
            let client = self.dynamodb.clone();
            let table = self.config.tables.dedupe.clone();
            let id = letter.id.clone();
            letters.insert(i, letter);
            // Until its claim answers, the record counts as one to retry (a lost task included).
            entry.fate = Fate::Retry;
            claims.push((i, async move {
                keen_aws::dedupe::claim_dead_letter(&client, &table, &id, now_ms).await
            }));
        }
        bounded(claims, |i, result| {
            apply_dead_letter_claim(&mut entries[i].fate, &mut letters, i, result)
        })
        .await;

        // The table: each dead letter whole; one refused for good in its last-resort form.
        let pending: Vec<usize> = letters
            .keys()
            .copied()
            .filter(|&i| entries[i].fate == Fate::DeadLetter)
            .collect();
        let refused = self.store_dead_letters(&letters, &pending, entries).await;
        let mut stored_whole: HashSet<usize> = pending.iter().copied().collect();
        if !refused.is_empty() {
            let mut last_resorts = BTreeMap::new();
            for (i, reason) in refused {
                tracing::error!(%reason, id = %letters[&i].id, "the DeadLetters table refused a dead letter; writing its last-resort form");
                stored_whole.remove(&i);
                last_resorts.insert(i, letters[&i].last_resort(&reason));
            }
            let tags: Vec<usize> = last_resorts.keys().copied().collect();
            counts.last_resort += tags.len() as u64;
            for (i, reason) in self.store_dead_letters(&last_resorts, &tags, entries).await {
                // Bounded and plain by construction: this cannot happen short of a bug. The log
                // line (and the metric) is then the record's only trace: never retried forever.
                tracing::error!(%reason, id = %last_resorts[&i].id, source = ?last_resorts[&i].source, "the last-resort dead letter was refused too");
                counts.unrecorded += 1;
            }
            letters.extend(last_resorts);
        }

        // The queue: each announcement as it fits; one refused for good in its last-resort form.
        let announcements: Vec<Announcement> = letters
            .iter()
            .filter(|(i, _)| entries[**i].fate == Fate::DeadLetter)
            .map(|(&i, letter)| announcement(letter, i))
            .collect();
        let refused = self.announce(announcements, entries).await;
        if !refused.is_empty() {
            let mut last_resorts = Vec::new();
            for (i, reason) in refused {
                tracing::error!(%reason, id = %letters[&i].id, "SQS refused a dead letter announcement; announcing its last-resort form");
                let mut last = letters[&i].last_resort(&reason);
                if stored_whole.contains(&i) {
                    last.payload_ref = Some(table_keys(&letters[&i]));
                }
                last_resorts.push(announcement(&last, i));
            }
            counts.last_resort += last_resorts.len() as u64;
            for (i, reason) in self.announce(last_resorts, entries).await {
                tracing::error!(%reason, id = %letters[&i].id, "the last-resort announcement was refused too");
                counts.unrecorded += 1;
            }
        }
    }

    /// Writes the dead letters `tags` of `letters` to the DeadLetters table. Those that failed
    /// transiently become [`Fate::Retry`]; those the table refused for good are returned with
    /// the reason (their fate stays: retrying them is useless).
    async fn store_dead_letters(
        &self,
        letters: &BTreeMap<usize, DeadLetter>,
        tags: &[usize],
        entries: &mut [Entry<'_>],
    ) -> Vec<(usize, String)> {
        let now_s = (self.clock)() / 1000;
        let mut writes = Vec::new();
        for &i in tags {
            let (parts, head) = keen_aws::dead_letters::dead_letter_items(&letters[&i], now_s);
            for item in parts.into_iter().chain([head]) {
                writes.push(TableWrite {
                    table: self.config.tables.dead_letters.clone(),
                    op: WriteOp::Put(item),
                    tag: i,
                });
            }
        }
        if writes.is_empty() {
            return Vec::new();
        }
        let report = self.batcher.write_all(writes).await;
        settle(&report, entries)
    }

    /// Announces on the dead letter queue; as [`Ingest::store_dead_letters`] for the outcome.
    async fn announce(
        &self,
        announcements: Vec<Announcement>,
        entries: &mut [Entry<'_>],
    ) -> Vec<(usize, String)> {
        if announcements.is_empty() {
            return Vec::new();
        }
        let report = self.queue.announce_all(announcements).await;
        settle(&report, entries)
    }

    async fn count_and_describe(
        &self,
        entries: &mut [Entry<'_>],
        first_failed: &BTreeMap<(String, i32), i64>,
        with_deletions: &HashSet<(String, String)>,
        mode: Mode,
    ) -> HashSet<usize> {
        let mut newly_counted = HashSet::new();
        let mut counters: BTreeMap<CounterKey, Vec<(i64, usize)>> = BTreeMap::new();
        let mut collections: BTreeMap<(String, String), CollectionBatch> = BTreeMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let Some(event) = entry.to_store() else {
                continue;
            };
            let record = entry.record;
            // Past the first failure of its partition the record will be redelivered: count it then.
            if first_failed
                .get(&(record.topic.clone(), record.partition))
                .is_some_and(|&f| record.offset >= f)
            {
                continue;
            }
            let key = CounterKey {
                project_id: event.project_id.clone(),
                collection: event.collection.clone(),
                hour: storage::hour_of(event.timestamp_ms),
                source_partition: format!("{}#{}", record.topic, record.partition),
            };
            counters.entry(key).or_default().push((record.offset, i));
            // A deleted event's record that came again is stored as a tombstone: it must not
            // move the collection's first or last event time back out to it.
            if entry.stays_deleted {
                continue;
            }
            let entry = collections
                .entry((event.project_id.clone(), event.collection.clone()))
                .or_default();
            let at = event.timestamp_ms;
            entry.update.first_ms = Some(entry.update.first_ms.unwrap_or(at).min(at));
            entry.update.last_ms = Some(entry.update.last_ms.unwrap_or(at).max(at));
            // Work the paths out of the JSON once per shape, not once per event.
            if entry.shapes.insert(event.shape)
                && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&event.json)
            {
                let left_out =
                    storage::merge_schema(&mut entry.update.paths, &storage::property_paths(&map));
                entry.update.truncated |= left_out;
            }
            entry.members.push(i);
        }
        if mode == Mode::Replay {
            // One replayed record at a time: each is its own conditional write on its counter.
            for (key, members) in std::mem::take(&mut counters) {
                for (offset, i) in members {
                    match keen_aws::counters::count_replayed(
                        &self.dynamodb,
                        &self.config.tables.counters,
                        &key,
                        offset,
                    )
                    .await
                    {
                        Ok(true) => {
                            newly_counted.insert(i);
                        }
                        Ok(false) => {}
                        Err(error) => {
                            tracing::warn!(%error, "replay counter update failed; replay again");
                            entries[i].fate = Fate::Retry;
                        }
                    }
                }
            }
        }
        // Every counter (one per hour and source partition) and every collection is its own item:
        // their conditional updates go out together rather than one round trip after another.
        let counter_updates =
            counters
                .into_iter()
                .filter(|_| mode == Mode::Live)
                .map(|(key, members)| async move {
                    let offsets: Vec<i64> = members.iter().map(|(o, _)| *o).collect();
                    let result = keen_aws::counters::add_to_counter(
                        &self.dynamodb,
                        &self.config.tables.counters,
                        &key,
                        &offsets,
                    )
                    .await;
                    (
                        result,
                        members.into_iter().map(|(_, i)| i).collect::<Vec<_>>(),
                    )
                });
        let collection_updates = collections.into_iter().map(
            |(
                (project, collection),
                CollectionBatch {
                    update, members, ..
                },
            )| async move {
                let edges = (update.first_ms, update.last_ms);
                let mut update = self
                    .collections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .novel(&project, &collection, update);
                // A deletion may have moved the recorded times in past what this process
                // remembers writing: for such a collection the times are always offered (each
                // write moves a time only outwards).
                if with_deletions.contains(&(project.clone(), collection.clone())) {
                    (update.first_ms, update.last_ms) = edges;
                }
                let result = keen_aws::collections::update_collection(
                    &self.dynamodb,
                    &self.config.tables.collections,
                    &project,
                    &collection,
                    &update,
                )
                .await;
                if let Ok(recorded) = &result {
                    self.collections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .learn(&project, &collection, &update, recorded.as_ref());
                }
                (result, members)
            },
        );
        let (counted, described) = futures_util::future::join(
            futures_util::future::join_all(counter_updates),
            futures_util::future::join_all(collection_updates),
        )
        .await;
        let failures =
            counted
                .into_iter()
                .filter_map(|(result, members)| result.err().map(|e| ("counter", e, members)))
                .chain(described.into_iter().filter_map(|(result, members)| {
                    result.err().map(|e| ("collection", e, members))
                }));
        for (what, error, members) in failures {
            if error.refuses_content() {
                // Bounded by construction, so a bug: the events are stored, and retrying can
                // never succeed. Say so loudly and let the partition go on.
                tracing::error!(%error, what, "the update was refused for good; not retried");
                continue;
            }
            tracing::warn!(%error, what, "update failed; the records will be retried");
            for i in members {
                entries[i].fate = Fate::Retry;
            }
        }
        newly_counted
    }
}

/// One invocation's view of a collection, merged into the Collections table once.
#[derive(Default)]
struct CollectionBatch {
    update: CollectionUpdate,
    /// Records that contributed (retried if the update fails).
    members: Vec<usize>,
    /// Shapes whose paths are already in `update`.
    shapes: HashSet<u64>,
}

/// Runs each record's `calls` with at most 16 in flight and hands every answer to `apply` as it
/// comes. A call whose task is lost is not answered: its record keeps the fate it was given
/// before the call (one to retry).
async fn bounded<T, F>(calls: Vec<(usize, F)>, mut apply: impl FnMut(usize, T))
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for (i, call) in calls {
        running.spawn(async move { (i, call.await) });
        if running.len() >= 16
            && let Some(Ok((i, answer))) = running.join_next().await
        {
            apply(i, answer);
        }
    }
    while let Some(joined) = running.join_next().await {
        if let Ok((i, answer)) = joined {
            apply(i, answer);
        }
    }
}

/// The SQS announcement of a dead letter: whole when it fits, else with the payload compressed,
/// else pointing at the table item that holds it (never truncated). Characters SQS refuses are
/// JSON escapes, and attribute values are made acceptable, so that no record's content can make
/// the announcement refused.
fn announcement(letter: &DeadLetter, tag: usize) -> Announcement {
    let attributes = vec![
        (
            "project_id".to_owned(),
            dlq::sqs_safe_text(&letter.project_id),
        ),
        (
            "collection".to_owned(),
            dlq::sqs_safe_text(&letter.collection),
        ),
        (
            "error_code".to_owned(),
            dlq::sqs_safe_text(&letter.error.code),
        ),
    ];
    let make = |form: DeadLetter| Announcement {
        body: dlq::sqs_safe_json(form.to_json()),
        attributes: attributes.clone(),
        tag,
        dedupe_id: letter.id.clone(),
    };
    let fits = |a: &Announcement| dlq::message_size(a) <= dlq::MAX_MESSAGE_BYTES;
    if letter.last_resort.is_some() {
        return make(letter.clone());
    }
    let whole = make(letter.clone());
    if fits(&whole) {
        return whole;
    }
    let compressed = make(letter.with_compressed_payload());
    if fits(&compressed) {
        return compressed;
    }
    let referenced = make(letter.with_payload_ref(table_keys(letter)));
    if fits(&referenced) {
        return referenced;
    }
    // A key or headers near the record limit: the table item holds them too.
    make(letter.with_source_ref(table_keys(letter)))
}

/// The rejection of an event the Events table refused for good.
fn store_refused(reason: &str) -> Rejection {
    Rejection::new(
        ErrorCode::InvalidEventError,
        format!(
            "the event store refused this event ({reason}); it is kept here and can be replayed \
             once the fault is fixed"
        ),
    )
    .with_detail("store_refused")
}

/// When judging stops: `reserve` before the deadline, but never more than half of the time left
/// at `start`, so a function with a short timeout (or a local runtime's default) still judges
/// records instead of deferring them all.
fn judging_cutoff(deadline: Instant, reserve: Duration, start: Instant) -> Instant {
    let left = deadline.saturating_duration_since(start);
    deadline - reserve.min(left / 2)
}

#[cfg(test)]
mod cutoff_tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept_back_but_never_more_than_half_the_time_left() {
        let start = Instant::now();
        let reserve = Duration::from_secs(60);
        // Lambda's 120 s timeout: judge for 60 s, keep 60 s for the writes.
        let deadline = start + Duration::from_secs(120);
        assert_eq!(
            judging_cutoff(deadline, reserve, start),
            start + Duration::from_secs(60)
        );
        // A 30 s timeout: judge for 15 s.
        let deadline = start + Duration::from_secs(30);
        assert_eq!(
            judging_cutoff(deadline, reserve, start),
            start + Duration::from_secs(15)
        );
        // A 15 minute timeout: the reserve alone.
        let deadline = start + Duration::from_secs(900);
        assert_eq!(
            judging_cutoff(deadline, reserve, start),
            start + Duration::from_secs(840)
        );
        // Past the deadline: stop now (the first record is still judged).
        assert_eq!(judging_cutoff(start, reserve, start), start);
    }
}
