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

mod decode;
mod keys;
mod metrics;
mod replay;

pub use decode::{DecodedRecord, MskEvent, MskRecord, decode_event};
pub use metrics::Counts;
pub use replay::{ReplayOutcome, ReplayReport, ReplayResult};

use aws_sdk_dynamodb::Client as DynamoDb;
use aws_sdk_dynamodb::types::AttributeValue;
use keen_shared::Outcome;
use keen_shared::adapters::batch::{TableWrite, WriteBatcher, WriteOp};
use keen_shared::adapters::dlq::{Announcement, DeadLetterQueue};
use keen_shared::adapters::store::{self, Claim, CollectionUpdate, CounterKey, EventFacts, Tables};
use keen_shared::addon::ReferenceData;
use keen_shared::dead_letter::{DeadLetter, table_keys};
use keen_shared::record::Tenant;
use keen_shared::storage::{self, EventLayout};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Everything the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Table names.
    pub tables: Tables,
    /// Keys table name.
    pub keys_table: String,
    /// SQS dead letter queue URL.
    pub dead_letter_queue_url: String,
    /// MaxMind City database path.
    pub geoip_database: Option<std::path::PathBuf>,
    /// Shards per (project, collection, day).
    pub shards: u16,
}

/// A configuration problem, named after the variable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {0} is not set; set it to the {1}")]
pub struct ConfigError(&'static str, &'static str);

impl Config {
    /// Reads `EVENTS_TABLE`, `COUNTERS_TABLE`, `COLLECTIONS_TABLE`, `DEDUPE_TABLE`, `DEAD_LETTERS_TABLE`,
    /// `KEYS_TABLE`, `DEAD_LETTER_QUEUE_URL`, `GEOIP_DATABASE` and `EVENT_SHARDS`.
    pub fn from_env() -> Result<Config, ConfigError> {
        let var = |name: &'static str, what: &'static str| {
            std::env::var(name).map_err(|_| ConfigError(name, what))
        };
        Ok(Config {
            tables: Tables {
                events: var("EVENTS_TABLE", "Events table name")?,
                counters: var("COUNTERS_TABLE", "Counters table name")?,
                collections: var("COLLECTIONS_TABLE", "Collections table name")?,
                dedupe: var("DEDUPE_TABLE", "Dedupe table name")?,
                dead_letters: var("DEAD_LETTERS_TABLE", "DeadLetters table name")?,
            },
            keys_table: var("KEYS_TABLE", "Keys table name")?,
            dead_letter_queue_url: var("DEAD_LETTER_QUEUE_URL", "SQS dead letter queue URL")?,
            // Empty means none: a template parameter cannot be left out, only left blank.
            geoip_database: std::env::var_os("GEOIP_DATABASE")
                .filter(|path| !path.is_empty())
                .map(Into::into),
            shards: std::env::var("EVENT_SHARDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(storage::DEFAULT_SHARDS),
        })
    }
}

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
}

/// Milliseconds since the epoch, from the system clock.
pub fn system_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Per-record fate within one invocation.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
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
struct Judged {
    tenants: Vec<Option<Tenant>>,
    outcomes: Vec<Option<Outcome>>,
    fates: Vec<Fate>,
}

/// What became of a batch.
struct Batch {
    outcomes: Vec<Option<Outcome>>,
    fates: Vec<Fate>,
    /// Replays only: the records this run counted (the others were counted by an earlier one).
    newly_counted: HashSet<usize>,
}

impl Ingest {
    /// Builds the function state. `batcher` and `queue` are injected so tests can wrap the real
    /// clients with fault injection.
    pub fn new(
        config: Config,
        dynamodb: DynamoDb,
        batcher: WriteBatcher,
        queue: DeadLetterQueue,
        keys_table: keen_shared::adapters::keys_table::KeysTable,
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
            keen_shared::adapters::keys_table::KeysTable::new(dynamodb, config.keys_table.clone()),
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
        let mut counts = Counts {
            received: records.len() as u64,
            ..Counts::default()
        };
        let now_ms = (self.clock)();
        let batch = self.run(&records, Mode::Live, now_ms, &mut counts).await;
        let (outcomes, fates) = (batch.outcomes, batch.fates);

        let first_failed = first_failed_offsets(&records, &fates);
        for (i, fate) in fates.iter().enumerate() {
            match fate {
                Fate::Store => counts.stored += 1,
                Fate::Duplicate => counts.duplicates += 1,
                Fate::Resend | Fate::AlreadyStored => counts.resends += 1,
                Fate::DeadLetter => {
                    if let Some(Outcome::DeadLettered(r)) = &outcomes[i] {
                        *counts
                            .dead_lettered
                            .entry(r.code.as_str().to_owned())
                            .or_default() += 1;
                    }
                }
                Fate::Retry => counts.retried += 1,
            }
        }
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
    async fn judge(&self, records: &[DecodedRecord]) -> Judged {
        let mut fates: Vec<Fate> = vec![Fate::Retry; records.len()];

        // 1. Tenants and keys, each key looked up once.
        let tenants: Vec<Option<Tenant>> = records
            .iter()
            .map(|r| Tenant::from_record(&r.as_inbound()).ok())
            .collect();
        let wanted: HashSet<(String, String)> = tenants
            .iter()
            .flatten()
            .map(|t| (t.project_id.clone(), t.key_id.clone()))
            .collect();
        let looked_up = self.keys.lookup_all(wanted).await;

        // 2. The core, record by record.
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let outcome = match &tenants[i] {
                None => Some(keen_shared::process(&record.as_inbound(), None, &self.data)),
                Some(tenant) => {
                    match looked_up.get(&(tenant.project_id.clone(), tenant.key_id.clone())) {
                        Some(Ok(model)) => Some(keen_shared::process(
                            &record.as_inbound(),
                            model.as_ref(),
                            &self.data,
                        )),
                        _ => None, // key lookup failed transiently: retry the record
                    }
                }
            };
            fates[i] = match &outcome {
                Some(Outcome::Stored(_)) => Fate::Store,
                Some(Outcome::DeadLettered(_)) => Fate::DeadLetter,
                None => Fate::Retry,
            };
            outcomes.push(outcome);
        }

        // 3. One record per keen.id within the batch (a resend in the same batch).
        let mut seen_ids = HashSet::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            if let Some(Outcome::Stored(event)) = outcome
                && !seen_ids.insert(event.keen_id)
            {
                fates[i] = Fate::Resend;
            }
        }
        Judged {
            tenants,
            outcomes,
            fates,
        }
    }

    /// The whole of a batch in `mode`; the fates say what became of each record.
    async fn run(
        &self,
        records: &[DecodedRecord],
        mode: Mode,
        now_ms: i64,
        counts: &mut Counts,
    ) -> Batch {
        // 1–3.
        let Judged {
            tenants,
            outcomes,
            mut fates,
        } = self.judge(records).await;

        // 4. Uniqueness tokens: claim before writing.
        self.claim_tokens(&outcomes, &mut fates, now_ms).await;

        // 5. Resends of idempotent producers' records already stored from another offset (and,
        // for a replay, events the ingest itself stored meanwhile).
        self.skip_resends(records, &tenants, &outcomes, &mut fates, mode)
            .await;

        // 6. Events: parts first, then heads of events whose parts all landed.
        self.write_events(records, &outcomes, &mut fates, counts, mode, now_ms)
            .await;

        // 7. Dead letters: table and queue. A replay keeps its one dead letter itself.
        if mode == Mode::Live {
            self.dead_letter(records, &tenants, &outcomes, &mut fates, now_ms)
                .await;
        }

        // 8. Counters and collections, over the successful prefix of each partition (a replay's
        // records stand each on its own: none waits for another's redelivery).
        let first_failed = match mode {
            Mode::Live => first_failed_offsets(records, &fates),
            Mode::Replay => BTreeMap::new(),
        };
        let newly_counted = self
            .count_and_describe(records, &outcomes, &mut fates, &first_failed, mode)
            .await;
        Batch {
            outcomes,
            fates,
            newly_counted,
        }
    }

    async fn claim_tokens(&self, outcomes: &[Option<Outcome>], fates: &mut [Fate], now_ms: i64) {
        let mut claims = Vec::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            if fates[i] != Fate::Store {
                continue;
            }
            let Some(Outcome::Stored(event)) = outcome else {
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
            fates[i] = Fate::Retry;
            claims.push((i, async move {
                store::claim_token(&client, &table, &key, &id, now_ms / 1000).await
            }));
        }
        bounded(claims, |i, result| apply_claim(fates, i, result)).await;
    }

    async fn skip_resends(
        &self,
        records: &[DecodedRecord],
        tenants: &[Option<Tenant>],
        outcomes: &[Option<Outcome>],
        fates: &mut [Fate],
        mode: Mode,
    ) {
        // Only an idempotent producer's record can reach us at two offsets with one keen.id. A
        // replay checks every record: the ingest may have stored it meanwhile.
        let mut keys: Vec<(String, String)> = Vec::new();
        let mut by_key: HashMap<(String, String), usize> = HashMap::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            let producer = tenants[i].as_ref().is_some_and(|t| t.producer.is_some());
            if fates[i] != Fate::Store || (mode == Mode::Live && !producer) {
                continue;
            }
            let Some(Outcome::Stored(event)) = outcome else {
                continue;
            };
            let pk = self.layout.partition_key(
                &event.project_id,
                &event.collection,
                event.timestamp_ms,
                &event.keen_id,
            );
            let sk = storage::sort_key(event.timestamp_ms, &event.keen_id);
            keys.push((pk.clone(), sk.clone()));
            by_key.insert((pk, sk), i);
        }
        if keys.is_empty() {
            return;
        }
        match store::existing_heads(&self.dynamodb, &self.config.tables.events, &keys).await {
            Ok(found) => {
                for (key, head) in found {
                    let Some(&i) = by_key.get(&key) else { continue };
                    if head.source != records[i].source() {
                        fates[i] = Fate::Resend;
                    } else if mode == Mode::Replay && !head.replayed {
                        fates[i] = Fate::AlreadyStored;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "resend check failed; the records will be retried");
                for &i in by_key.values() {
                    fates[i] = Fate::Retry;
                }
            }
        }
    }

    async fn write_events(
        &self,
        records: &[DecodedRecord],
        outcomes: &[Option<Outcome>],
        fates: &mut [Fate],
        counts: &mut Counts,
        mode: Mode,
        now_ms: i64,
    ) {
        let mut parts = Vec::new();
        let mut heads = Vec::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            if fates[i] != Fate::Store {
                continue;
            }
            let Some(Outcome::Stored(event)) = outcome else {
                continue;
            };
            let source = records[i].source();
            let facts = EventFacts {
                project_id: &event.project_id,
                collection: &event.collection,
                keen_id: &event.keen_id,
                timestamp_ms: event.timestamp_ms,
                json: &event.json,
                source: &source,
            };
            let mut items = store::event_items(&facts, &self.layout);
            if mode == Mode::Replay {
                items.head.insert(
                    store::REPLAYED_AT.to_owned(),
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
        if !parts.is_empty() {
            let report = self.batcher.write_all(parts).await;
            counts.write_retries += u64::from(report.retries);
            for tag in report.failed_tags {
                fates[tag] = Fate::Retry;
            }
        }
        // A head is written only once all its parts are: readers start from heads.
        heads.retain(|w| fates[w.tag] == Fate::Store);
        if !heads.is_empty() {
            let report = self.batcher.write_all(heads).await;
            counts.write_retries += u64::from(report.retries);
            for tag in report.failed_tags {
                fates[tag] = Fate::Retry;
            }
        }
    }

    async fn dead_letter(
        &self,
        records: &[DecodedRecord],
        tenants: &[Option<Tenant>],
        outcomes: &[Option<Outcome>],
        fates: &mut [Fate],
        now_ms: i64,
    ) {
        // Each record's dead letter is kept under the time it first failed (claimed in the Dedupe
        // table), so a redelivered batch overwrites its dead letters instead of adding more.
        let mut claims = Vec::new();
        let mut letters: BTreeMap<usize, DeadLetter> = BTreeMap::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            if fates[i] != Fate::DeadLetter {
                continue;
            }
            let Some(Outcome::DeadLettered(rejection)) = outcome else {
                continue;
            };
            let letter = DeadLetter::new(
                &records[i].as_inbound(),
                tenants[i].as_ref(),
                rejection,
                now_ms,
            );
            let client = self.dynamodb.clone();
            let table = self.config.tables.dedupe.clone();
            let id = letter.id.clone();
            letters.insert(i, letter);
            // Until its claim answers, the record counts as one to retry (a lost task included).
            fates[i] = Fate::Retry;
            claims.push((i, async move {
                store::claim_dead_letter(&client, &table, &id, now_ms).await
            }));
        }
        bounded(claims, |i, result| {
            apply_dead_letter_claim(fates, &mut letters, i, result)
        })
        .await;

        let mut writes = Vec::new();
        let mut announcements = Vec::new();
        for (&i, letter) in &letters {
            if fates[i] != Fate::DeadLetter {
                continue;
            }
            let (parts, head) = store::dead_letter_items(letter, now_ms / 1000);
            for part in parts {
                writes.push(TableWrite {
                    table: self.config.tables.dead_letters.clone(),
                    op: WriteOp::Put(part),
                    tag: i,
                });
            }
            writes.push(TableWrite {
                table: self.config.tables.dead_letters.clone(),
                op: WriteOp::Put(head),
                tag: i,
            });
            announcements.push(announcement(letter, i));
        }
        if !writes.is_empty() {
            let report = self.batcher.write_all(writes).await;
            for tag in report.failed_tags {
                fates[tag] = Fate::Retry;
            }
        }
        announcements.retain(|a| fates[a.tag] == Fate::DeadLetter);
        if !announcements.is_empty() {
            let report = self.queue.announce_all(announcements).await;
            for tag in report.failed_tags {
                fates[tag] = Fate::Retry;
            }
        }
    }

    async fn count_and_describe(
        &self,
        records: &[DecodedRecord],
        outcomes: &[Option<Outcome>],
        fates: &mut [Fate],
        first_failed: &BTreeMap<(String, i32), i64>,
        mode: Mode,
    ) -> HashSet<usize> {
        let mut newly_counted = HashSet::new();
        let mut counters: BTreeMap<CounterKey, Vec<(i64, usize)>> = BTreeMap::new();
        let mut collections: BTreeMap<(String, String), CollectionBatch> = BTreeMap::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            if fates[i] != Fate::Store {
                continue;
            }
            let record = &records[i];
            // Past the first failure of its partition the record will be redelivered: count it then.
            if first_failed
                .get(&(record.topic.clone(), record.partition))
                .is_some_and(|&f| record.offset >= f)
            {
                continue;
            }
            let Some(Outcome::Stored(event)) = outcome else {
                continue;
            };
            let key = CounterKey {
                project_id: event.project_id.clone(),
                collection: event.collection.clone(),
                hour: storage::hour_of(event.timestamp_ms),
                source_partition: format!("{}#{}", record.topic, record.partition),
            };
            counters.entry(key).or_default().push((record.offset, i));
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
                storage::merge_schema(&mut entry.update.paths, &storage::property_paths(&map));
            }
            entry.members.push(i);
        }
        if mode == Mode::Replay {
            // One replayed record at a time: each is its own conditional write on its counter.
            for (key, members) in std::mem::take(&mut counters) {
                for (offset, i) in members {
                    match store::count_replayed(
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
                            fates[i] = Fate::Retry;
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
                    let result = store::add_to_counter(
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
                let result = store::update_collection(
                    &self.dynamodb,
                    &self.config.tables.collections,
                    &project,
                    &collection,
                    &update,
                )
                .await;
                (result, members)
            },
        );
        let (counted, described) = futures_util::future::join(
            futures_util::future::join_all(counter_updates),
            futures_util::future::join_all(collection_updates),
        )
        .await;
        for (result, members) in counted {
            if let Err(error) = result {
                tracing::warn!(%error, "counter update failed; the records will be retried");
                for i in members {
                    fates[i] = Fate::Retry;
                }
            }
        }
        for (result, members) in described {
            if let Err(error) = result {
                tracing::warn!(%error, "collection update failed; the records will be retried");
                for i in members {
                    fates[i] = Fate::Retry;
                }
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

fn apply_claim(fates: &mut [Fate], i: usize, result: Result<Claim, store::StoreError>) {
    fates[i] = match result {
        Ok(Claim::Won) => Fate::Store,
        Ok(Claim::Duplicate) => Fate::Duplicate,
        Err(error) => {
            tracing::warn!(%error, "dedupe claim failed; the record will be retried");
            Fate::Retry
        }
    };
}

fn apply_dead_letter_claim(
    fates: &mut [Fate],
    letters: &mut BTreeMap<usize, DeadLetter>,
    i: usize,
    result: Result<i64, store::StoreError>,
) {
    match result {
        Ok(first_failed_ms) => {
            if let Some(letter) = letters.get_mut(&i) {
                letter.failed_at = keen_shared::timestamp::format_millis(first_failed_ms);
            }
            fates[i] = Fate::DeadLetter;
        }
        Err(error) => {
            tracing::warn!(%error, "dead letter claim failed; the record will be retried");
            fates[i] = Fate::Retry;
        }
    }
}

/// The SQS announcement of a dead letter: whole when it fits, else with the payload compressed,
/// else pointing at the table item that holds it (never truncated).
fn announcement(letter: &DeadLetter, tag: usize) -> Announcement {
    let attributes = vec![
        ("project_id".to_owned(), letter.project_id.clone()),
        ("collection".to_owned(), letter.collection.clone()),
        ("error_code".to_owned(), letter.error.code.clone()),
    ];
    let make = |body: String| Announcement {
        body,
        attributes: attributes.clone(),
        tag,
        dedupe_id: letter.id.clone(),
    };
    let whole = make(letter.to_json());
    if keen_shared::adapters::dlq::message_size(&whole)
        <= keen_shared::adapters::dlq::MAX_MESSAGE_BYTES
    {
        return whole;
    }
    let compressed = make(letter.with_compressed_payload().to_json());
    if keen_shared::adapters::dlq::message_size(&compressed)
        <= keen_shared::adapters::dlq::MAX_MESSAGE_BYTES
    {
        return compressed;
    }
    make(letter.with_payload_ref(table_keys(letter)).to_json())
}

/// The first offset of each partition whose record must be retried.
fn first_failed_offsets(records: &[DecodedRecord], fates: &[Fate]) -> BTreeMap<(String, i32), i64> {
    let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (record, fate) in records.iter().zip(fates) {
        if *fate == Fate::Retry {
            let entry = first
                .entry((record.topic.clone(), record.partition))
                .or_insert(record.offset);
            *entry = (*entry).min(record.offset);
        }
    }
    first
}
