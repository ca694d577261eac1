//! Running analyses against the Events table and the hourly counters.
//!
//! Which partitions to read, how events match and how they aggregate is the query domain's
//! ([`crate::analysis`]); this module fetches in parallel and feeds events to it as they arrive,
//! so memory follows the answer, not the events read.

use crate::analysis::grouping::Aggregation;
use crate::analysis::metric::Budget;
use crate::analysis::{self, QueryError, QueryKind, QueryRequest, Window, interval};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use keen_aws::counters::read_counters;
use keen_aws::events::{EventRow, ReadOrder, sort_key_range};
use keen_aws::items::StoreError;
use keen_shared::key::KeyModel;
use keen_shared::storage;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Partition reads in flight at once for one query.
const PARALLEL_READS: usize = 32;

/// What one query may read before it is refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Events-table partitions (days × shards).
    pub partitions: usize,
    /// Events returned by an extraction (the Lambda response holds at most 6 MB).
    pub events: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        // 4,096 partitions: 256 days of a 16-shard deployment, about 130 rounds of 32 parallel
        // queries. 10,000 events: typical events fit the 6 MB response several times over.
        Bounds {
            partitions: 4_096,
            events: 10_000,
        }
    }
}

/// Why a query produced no answer.
#[derive(Debug)]
pub enum Failure {
    /// The request is wrong or too large: 4xx.
    Query(QueryError),
    /// Storage could not be read: 503, retry.
    Store(StoreError),
}

impl From<QueryError> for Failure {
    fn from(error: QueryError) -> Self {
        Failure::Query(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

/// What the engine reads with.
#[derive(Clone, Copy)]
pub struct Engine<'a> {
    pub dynamodb: &'a aws_sdk_dynamodb::Client,
    pub events_table: &'a str,
    pub counters_table: &'a str,
    pub shards: u16,
    pub bounds: Bounds,
}

/// The hourly counters of a collection and the days that hold data, from one query.
struct Counters {
    hours: Vec<(String, u64)>,
    days: Vec<String>,
}

impl Counters {
    /// The (day, shard) partitions of `window` that hold data, within the engine's partition
    /// bound.
    fn plan(&self, engine: Engine<'_>, window: Window) -> Result<Vec<(String, u16)>, QueryError> {
        analysis::plan_reads(window, &self.days, engine.shards, engine.bounds.partitions)
    }
}

async fn counters(
    engine: Engine<'_>,
    project: &str,
    collection: &str,
) -> Result<Counters, Failure> {
    let hours = read_counters(engine.dynamodb, engine.counters_table, project, collection).await?;
    let days: BTreeSet<String> = hours
        .iter()
        .filter(|(_, count)| *count > 0)
        .filter_map(|(hour, _)| hour.get(..10).map(str::to_owned))
        .collect();
    Ok(Counters {
        hours,
        days: days.into_iter().collect(),
    })
}

/// Every event of a collection, from its counters (the collections listing).
pub async fn total_count(
    engine: Engine<'_>,
    project: &str,
    collection: &str,
) -> Result<u64, Failure> {
    let counters = counters(engine, project, collection).await?;
    Ok(counters.hours.iter().map(|(_, count)| count).sum())
}

/// The request, with the key's own query filters ANDed on.
fn request_for(
    kind: QueryKind,
    params: &[(String, String)],
    key: &KeyModel,
) -> Result<QueryRequest, QueryError> {
    let mut request = QueryRequest::from_params(kind, params)?;
    request.and_key_filters(key)?;
    Ok(request)
}

/// Edge windows (partial counter hours) a counter-backed count reads before scanning the whole
/// window costs less: an interval finer than an hour makes every bucket an edge.
const MAX_COUNTER_EDGES: usize = 4;

/// Every analysis but extraction and funnel (`/queries/count`, `/queries/sum`, …,
/// `/queries/multi_analysis`), with group_by and interval.
pub async fn analyze(
    engine: Engine<'_>,
    project: &str,
    kind: QueryKind,
    params: &[(String, String)],
    key: &KeyModel,
    now_ms: i64,
) -> Result<Value, Failure> {
    let request = request_for(kind, params, key)?;
    let window = request.window(now_ms);
    let buckets = match request.interval {
        Some(every) => interval::buckets(window, every, &request.timezone)?,
        None => vec![window],
    };
    let Some(metrics) = request.metrics.clone() else {
        return Err(QueryError::InvalidParameter(format!(
            "{} is not an aggregate analysis",
            kind.as_str()
        ))
        .into());
    };
    let counters = counters(engine, project, &request.event_collection).await?;
    let mut aggregation = Aggregation::new(
        metrics,
        request.group_by.clone(),
        buckets,
        request.interval.is_some(),
        Budget::default(),
    );
    let splits: Vec<analysis::CounterSplit> = aggregation
        .buckets()
        .iter()
        .map(|bucket| analysis::split_for_counters(*bucket))
        .collect();
    let edges = splits.iter().map(|split| split.edges.len()).sum::<usize>();
    if request.counts_from_counters() && edges <= MAX_COUNTER_EDGES {
        for (bucket, split) in splits.iter().enumerate() {
            let n =
                count_split(engine, project, &request.event_collection, &counters, split).await?;
            aggregation.add_count(bucket, n);
        }
    } else {
        let plan = counters.plan(engine, window)?;
        let range = sort_key_range(window.start_ms, window.end_ms);
        let mut reads = partition_reads(
            engine,
            project,
            &request.event_collection,
            &range,
            plan,
            ReadOrder::OLDEST_FIRST,
        );
        while let Some(events) = reads.next().await {
            for stored in events? {
                if request.filters.matches(&stored.event)
                    && let Some(at) = stored_at(&stored)
                {
                    aggregation.add(at, &stored.event)?;
                }
            }
        }
    }
    Ok(json!({
        "result": aggregation.render(&request.order_by, request.limit, &request.timezone)
    }))
}

/// When an event was stored for: its sort key starts with `keen.timestamp`.
fn stored_at(stored: &EventRow) -> Option<i64> {
    let timestamp = stored.sort_key.split('#').next()?;
    keen_shared::timestamp::parse(timestamp)
        .ok()
        .map(|t| t.unix_millis())
}

/// A count without filters over one window: whole hours summed from the counters, the partial
/// hours at its edges counted from the events.
async fn count_split(
    engine: Engine<'_>,
    project: &str,
    collection: &str,
    counters: &Counters,
    split: &analysis::CounterSplit,
) -> Result<u64, Failure> {
    let from_counters: u64 = counters
        .hours
        .iter()
        .filter(|(hour, _)| split.covers_hour(hour))
        .map(|(_, count)| count)
        .sum();
    let mut partitions = Vec::new();
    for edge in &split.edges {
        for (day, shard) in counters.plan(engine, *edge)? {
            partitions.push((*edge, day, shard));
        }
    }
    let from_edges: u64 = stream::iter(partitions)
        .map(|(edge, day, shard)| {
            let pk = storage::day_partition_key(project, collection, &day, shard);
            async move {
                keen_aws::events::count_events(
                    engine.dynamodb,
                    engine.events_table,
                    &pk,
                    &sort_key_range(edge.start_ms, edge.end_ms),
                )
                .await
            }
        })
        .buffer_unordered(PARALLEL_READS)
        .try_fold(0u64, |sum, n| async move { Ok(sum + n) })
        .await?;
    Ok(from_counters + from_edges)
}

/// `/queries/funnel`: each step's actors from its own collection, window and filters (the key's
/// filters ANDed onto every step), then the funnel's arithmetic over them.
pub async fn funnel(
    engine: Engine<'_>,
    project: &str,
    params: &[(String, String)],
    key: &KeyModel,
    now_ms: i64,
) -> Result<Value, Failure> {
    let given = analysis::Given::collect(params)?;
    let Some(steps) = given.get("steps") else {
        return Err(QueryError::MissingRequiredProperty(
            "steps is required by funnel: give a JSON array of steps, each with \
             event_collection and actor_property"
                .into(),
        )
        .into());
    };
    let mut funnel = analysis::funnel::Funnel {
        steps: analysis::funnel::parse_steps(&Value::String(steps.to_owned()))?,
        timeframe: given.timeframe()?,
        timezone: given.timezone()?,
    };
    funnel.and_key_filters(&analysis::key_filters(key.options.queries.as_ref())?);
    let mut budget = Budget::default();
    let mut partitions_left = engine.bounds.partitions;
    let mut actors = Vec::with_capacity(funnel.steps.len());
    for (index, step) in funnel.steps.iter().enumerate() {
        let window = funnel.step_window(index, now_ms);
        let counters = counters(engine, project, &step.event_collection).await?;
        let plan = analysis::plan_reads(window, &counters.days, engine.shards, partitions_left)?;
        partitions_left -= plan.len();
        let range = sort_key_range(window.start_ms, window.end_ms);
        let mut reads = partition_reads(
            engine,
            project,
            &step.event_collection,
            &range,
            plan,
            ReadOrder::OLDEST_FIRST,
        );
        let mut found = BTreeSet::new();
        while let Some(events) = reads.next().await {
            for stored in events? {
                if let Some(actor) = step.actor_of(&stored.event)
                    && !found.contains(&actor)
                {
                    budget.charge(actor.size_bytes())?;
                    analysis::funnel::add_actor(&mut found, actor, index)?;
                }
            }
        }
        actors.push(found);
    }
    Ok(analysis::funnel::evaluate(&funnel, &actors))
}

/// Events one `DELETE /events/{collection}` may remove (Keen's own bound per call).
pub const MAX_DELETE: usize = 50_000;

/// `DELETE /events/{collection}` (master key): the events matching `filters` within `timeframe`
/// (all time without one), deleted for good ([`keen_aws::deletion`]): tombstones, the counters
/// decremented, and a ledger that keeps a redelivered record from bringing one back. More than
/// [`MAX_DELETE`] matches is refused before anything is deleted.
pub async fn delete(
    engine: Engine<'_>,
    batcher: &keen_aws::batch::WriteBatcher,
    collections_table: &str,
    project: &str,
    collection: &str,
    params: &[(String, String)],
    now_ms: i64,
) -> Result<u64, Failure> {
    use keen_aws::deletion::{self, Doomed};
    let given = analysis::Given::collect(params)?;
    keen_shared::collection::check_name(collection).map_err(|e| {
        QueryError::InvalidCollectionName(format!("collection {collection:?}: {e}"))
    })?;
    let timezone = given.timezone()?;
    let window = given
        .timeframe()?
        .map_or(Window::ALL_TIME, |t| t.resolve(now_ms, &timezone));
    let filters = given.filters()?;
    let counters = counters(engine, project, collection).await?;
    let plan = counters.plan(engine, window)?;
    let range = sort_key_range(window.start_ms, window.end_ms);
    let mut reads = keyed_partition_reads(
        engine,
        project,
        collection,
        &range,
        plan,
        ReadOrder::OLDEST_FIRST,
    );
    let mut doomed = Vec::new();
    let mut per_hour: std::collections::BTreeMap<String, u64> = Default::default();
    while let Some(read) = reads.next().await {
        let (pk, rows) = read?;
        for row in rows {
            if !filters.matches(&row.event) {
                continue;
            }
            if doomed.len() == MAX_DELETE {
                return Err(QueryError::QueryTooLarge(format!(
                    "more than {MAX_DELETE} events match; one deletion removes at most \
                     {MAX_DELETE}: narrow the timeframe or add filters, and delete in several \
                     calls (nothing was deleted)"
                ))
                .into());
            }
            if let Some(at) = stored_at(&row) {
                *per_hour.entry(storage::hour_of(at)).or_default() += 1;
            }
            doomed.push(Doomed {
                pk: pk.clone(),
                sort_key: row.sort_key,
                source: row.source,
                parts: row.parts,
            });
        }
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    deletion::mark_collection(
        engine.dynamodb,
        collections_table,
        project,
        collection,
        now_ms,
    )
    .await?;
    deletion::delete_events(batcher, engine.events_table, &doomed, now_ms).await?;
    deletion::uncount(
        engine.dynamodb,
        engine.counters_table,
        project,
        collection,
        &per_hour,
    )
    .await?;
    // The listing's first and last event times move in to the events that remain.
    let seen =
        keen_aws::collections::read_edges(engine.dynamodb, collections_table, project, collection)
            .await?;
    let remaining = remaining_edges(engine, project, collection).await?;
    keen_aws::collections::move_edges_in(
        engine.dynamodb,
        collections_table,
        project,
        collection,
        seen,
        remaining,
    )
    .await?;
    tracing::info!(project, collection, events = doomed.len(), "events deleted");
    Ok(doomed.len() as u64)
}

/// The earliest and latest keen.timestamp of a collection's events (`None`: it holds none):
/// the counters name the first and last hours holding any, and each of those hours' partitions
/// is read for one event from the matching end. A bounded read however large the collection.
async fn remaining_edges(
    engine: Engine<'_>,
    project: &str,
    collection: &str,
) -> Result<(Option<i64>, Option<i64>), Failure> {
    let counters = counters(engine, project, collection).await?;
    let live = || {
        counters
            .hours
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(hour, _)| hour.as_str())
    };
    let (Some(first_hour), Some(last_hour)) = (live().min(), live().max()) else {
        return Ok((None, None));
    };
    let edge =
        |hour, newest_first| hour_edge(engine, project, collection, &counters, hour, newest_first);
    Ok((edge(first_hour, false).await?, edge(last_hour, true).await?))
}

/// The earliest (`newest_first`: latest) keen.timestamp of the events in counter hour `hour`:
/// one event read from the matching end of each of its partitions.
async fn hour_edge(
    engine: Engine<'_>,
    project: &str,
    collection: &str,
    counters: &Counters,
    hour: &str,
    newest_first: bool,
) -> Result<Option<i64>, Failure> {
    let Some(start_ms) = storage::hour_start_ms(hour) else {
        return Ok(None);
    };
    let window = Window {
        start_ms,
        end_ms: start_ms + 3_600_000,
    };
    let range = sort_key_range(window.start_ms, window.end_ms);
    let order = ReadOrder {
        newest_first,
        limit: Some(1),
    };
    let plan = counters.plan(engine, window)?;
    let mut reads = partition_reads(engine, project, collection, &range, plan, order);
    let mut ends = Vec::new();
    while let Some(rows) = reads.next().await {
        ends.extend(rows?.iter().filter_map(stored_at));
    }
    Ok(if newest_first {
        ends.into_iter().max()
    } else {
        ends.into_iter().min()
    })
}

/// A collection as a key restricted by `filters` may see it: its matching events counted, the
/// first and last of their timestamps, and the property paths and types they hold (merged as
/// ingest merges the schema, within the same bounds); `None` when no event matches. Reads the
/// whole collection, within the partition bound like any query.
pub async fn describe_matching(
    engine: Engine<'_>,
    project: &str,
    collection: &str,
    filters: &analysis::Filters,
) -> Result<Option<Value>, Failure> {
    let counters = counters(engine, project, collection).await?;
    let plan = counters.plan(engine, Window::ALL_TIME)?;
    let range = sort_key_range(Window::ALL_TIME.start_ms, Window::ALL_TIME.end_ms);
    let mut reads = partition_reads(
        engine,
        project,
        collection,
        &range,
        plan,
        ReadOrder::OLDEST_FIRST,
    );
    let mut count = 0u64;
    let (mut first, mut last): (Option<i64>, Option<i64>) = (None, None);
    let mut properties = std::collections::BTreeMap::new();
    let mut truncated = false;
    while let Some(events) = reads.next().await {
        for stored in events? {
            if !filters.matches(&stored.event) {
                continue;
            }
            count += 1;
            if let Some(at) = stored_at(&stored) {
                first = Some(first.map_or(at, |f| f.min(at)));
                last = Some(last.map_or(at, |l| l.max(at)));
            }
            if let Some(object) = stored.event.as_object() {
                truncated |=
                    storage::merge_schema(&mut properties, &storage::property_paths(object));
            }
        }
    }
    if count == 0 {
        return Ok(None);
    }
    let at = |ms: Option<i64>| ms.map(keen_shared::timestamp::format_millis);
    Ok(Some(json!({
        "name": collection,
        "count": count,
        "first_event_at": at(first),
        "last_event_at": at(last),
        "properties": properties,
        "properties_truncated": truncated,
    })))
}

/// `GET /queries/extraction`.
pub async fn extraction(
    engine: Engine<'_>,
    project: &str,
    params: &[(String, String)],
    key: &KeyModel,
    now_ms: i64,
) -> Result<Value, Failure> {
    let request = request_for(QueryKind::Extraction, params, key)?;
    let window = request.window(now_ms);
    let counters = counters(engine, project, &request.event_collection).await?;
    if request
        .latest
        .is_some_and(|latest| latest > engine.bounds.events)
    {
        return Err(QueryError::QueryTooLarge(format!(
            "latest may ask for at most {} events, the most one answer may hold.",
            engine.bounds.events
        ))
        .into());
    }
    let mut events = match request.latest {
        Some(latest) => {
            latest_events(engine, project, &request, window, &counters.days, latest).await?
        }
        None => {
            let plan = counters.plan(engine, window)?;
            let mut events = read_matching(engine, project, &request, window, plan, None)
                .await?
                .ok_or_else(|| too_many_events(engine.bounds))?;
            events.sort_by(|a, b| a.sort_key.cmp(&b.sort_key));
            events
        }
    };
    let result: Vec<Value> = events
        .drain(..)
        .map(|stored| match &request.property_names {
            Some(paths) => analysis::project(&stored.event, paths),
            None => stored.event,
        })
        .collect();
    Ok(json!({ "result": result }))
}

/// The newest `latest` matching events, oldest first: days are walked from the newest, all
/// shards of a day at once, and the walk stops once enough events were found (every event of a
/// later day is newer than every event of an earlier one).
async fn latest_events(
    engine: Engine<'_>,
    project: &str,
    request: &QueryRequest,
    window: Window,
    days: &[String],
    latest: usize,
) -> Result<Vec<EventRow>, Failure> {
    let plan = analysis::plan_reads(window, days, engine.shards, usize::MAX)?;
    let mut by_day: Vec<(String, Vec<(String, u16)>)> = Vec::new();
    for (day, shard) in plan {
        match by_day.last_mut() {
            Some((last, partitions)) if *last == day => partitions.push((day, shard)),
            _ => by_day.push((day.clone(), vec![(day, shard)])),
        }
    }
    let mut found: Vec<EventRow> = Vec::new();
    let mut partitions_read = 0usize;
    for (_, partitions) in by_day.into_iter().rev() {
        partitions_read += partitions.len();
        if partitions_read > engine.bounds.partitions {
            return Err(QueryError::QueryTooLarge(format!(
                "Finding the latest {latest} events would read more than {} partitions (days × \
                 shards): narrow the timeframe.",
                engine.bounds.partitions
            ))
            .into());
        }
        // Without filters a partition never needs more than `latest` of its newest events.
        let limit = request.filters.is_empty().then_some(latest);
        let mut day_events = read_matching(engine, project, request, window, partitions, limit)
            .await?
            .ok_or_else(|| too_many_events(engine.bounds))?;
        day_events.sort_by(|a, b| b.sort_key.cmp(&a.sort_key));
        found.extend(day_events);
        if found.len() >= latest {
            break;
        }
    }
    found.truncate(latest);
    found.reverse();
    Ok(found)
}

fn too_many_events(bounds: Bounds) -> Failure {
    QueryError::QueryTooLarge(format!(
        "The extraction matches more than the {} events one answer may hold: narrow the \
         timeframe, add filters, or use latest.",
        bounds.events
    ))
    .into()
}

/// Reads `plan`'s partitions in parallel and keeps the events matching the request's filters;
/// `None` once more than the bound's events matched (reading stops there, so an oversized
/// extraction never holds more than the bound in memory). `newest_limit` reads each partition
/// newest first, at most that many events (and lifts the bound, which `latest` applies itself).
async fn read_matching(
    engine: Engine<'_>,
    project: &str,
    request: &QueryRequest,
    window: Window,
    plan: Vec<(String, u16)>,
    newest_limit: Option<usize>,
) -> Result<Option<Vec<EventRow>>, Failure> {
    let range = sort_key_range(window.start_ms, window.end_ms);
    let order = ReadOrder {
        newest_first: newest_limit.is_some(),
        limit: newest_limit,
    };
    let cap = match newest_limit {
        Some(_) => usize::MAX,
        None => engine.bounds.events,
    };
    let mut partitions = partition_reads(
        engine,
        project,
        &request.event_collection,
        &range,
        plan,
        order,
    );
    let mut matched = Vec::new();
    while let Some(events) = partitions.next().await {
        matched.extend(
            events?
                .into_iter()
                .filter(|stored| request.filters.matches(&stored.event)),
        );
        if matched.len() > cap {
            return Ok(None);
        }
    }
    Ok(Some(matched))
}

/// The events of each partition of `plan` within `range`, read `PARALLEL_READS` at a time, in
/// whatever order the reads finish.
fn partition_reads<'a>(
    engine: Engine<'a>,
    project: &'a str,
    collection: &'a str,
    range: &'a (String, String),
    plan: Vec<(String, u16)>,
    order: ReadOrder,
) -> impl futures_util::Stream<Item = Result<Vec<EventRow>, StoreError>> + 'a {
    keyed_partition_reads(engine, project, collection, range, plan, order)
        .map(|read| read.map(|(_, rows)| rows))
}

/// As [`partition_reads`], each partition's events with its partition key (deletions write
/// back to it).
fn keyed_partition_reads<'a>(
    engine: Engine<'a>,
    project: &'a str,
    collection: &'a str,
    range: &'a (String, String),
    plan: Vec<(String, u16)>,
    order: ReadOrder,
) -> impl futures_util::Stream<Item = Result<(String, Vec<EventRow>), StoreError>> + 'a {
    stream::iter(plan)
        .map(move |(day, shard)| {
            let pk = storage::day_partition_key(project, collection, &day, shard);
            async move {
                let rows = keen_aws::events::read_events(
                    engine.dynamodb,
                    engine.events_table,
                    &pk,
                    range,
                    order,
                )
                .await?;
                Ok((pk, rows))
            }
        })
        .buffer_unordered(PARALLEL_READS)
}

/// The parameters of `GET /dead_letters`.
pub struct DeadLetterParams {
    pub collection: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub limit: usize,
}

/// Dead letters returned by default, and at most.
const DEAD_LETTERS_DEFAULT: usize = 100;
const DEAD_LETTERS_MAX: usize = 1_000;

impl DeadLetterParams {
    /// `event_collection` (optional), `timeframe` and `timezone` (against `failed_at`), `limit`.
    pub fn parse(params: &[(String, String)], now_ms: i64) -> Result<Self, QueryError> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let collection = get("event_collection").map(str::to_owned);
        let window = analysis::window_param(get("timeframe"), get("timezone"), now_ms)?;
        let limit = match get("limit") {
            None => DEAD_LETTERS_DEFAULT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=DEAD_LETTERS_MAX).contains(&n) => n,
                _ => {
                    return Err(QueryError::InvalidParameter(format!(
                        "limit must be a whole number from 1 to {DEAD_LETTERS_MAX}, not {text:?}."
                    )));
                }
            },
        };
        Ok(DeadLetterParams {
            collection,
            from_ms: window.map(|w| w.start_ms),
            to_ms: window.map(|w| w.end_ms),
            limit,
        })
    }
}
