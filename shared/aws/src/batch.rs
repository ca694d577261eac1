//! The DynamoDB write engine of ingest: BatchWriteItem calls of at most 25 requests, never two
//! for the same (table, key) in one call, several calls in flight, `UnprocessedItems` and
//! throttling retried with exponential backoff and full jitter.
//!
//! Contract of [`WriteBatcher::write_all`]: every write is attempted; writes to one (table, key)
//! land in the caller's order (the n-th write of a key is sent only once the (n−1)-th has settled);
//! the report names, by the caller's tag, each write that did not land and why:
//! [`WriteErrorKind::Transient`] when the retry budget ran out (the caller retries the Kafka batch;
//! keen.id makes that idempotent), [`WriteErrorKind::Permanent`] when DynamoDB refused the write
//! itself (the caller dead-letters it). A call refused as a whole (one item too large refuses its
//! 24 neighbours too) is split in halves until the refused writes are isolated, so a valid write is
//! never reported permanent because of a neighbour.
//!
//! The retries themselves are [`crate::retry`]'s. moto never throttles and never returns
//! `UnprocessedItems`: `crate::faults::FaultInjecting` (feature `test-util`) wraps any
//! [`BatchWriteApi`], the real client included, to make it do both, deterministically.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};

use crate::retry::{
    BoxFuture, CallError, CallOutcome, Retrier, RetryPolicy, Retrying, WriteErrorKind, WriteReport,
};

/// DynamoDB's limit of requests in one BatchWriteItem call.
pub const MAX_REQUESTS_PER_CALL: usize = 25;
/// DynamoDB's limit on the size of one BatchWriteItem request.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// What a call's items may add up to, by [`request_bytes`]: a margin under [`MAX_REQUEST_BYTES`]
/// for the JSON envelope and for escapes the estimate does not count.
const REQUEST_BYTES_BUDGET: usize = 15 * 1024 * 1024;
/// The one DynamoDB operation the batcher needs: a seam, so that faults can be injected around
/// the real client ([`FaultInjecting`]) and unit tests can run without a server.
pub trait BatchWriteApi: Send + Sync {
    /// One BatchWriteItem call; answers the requests DynamoDB left unprocessed, per table.
    fn batch_write(
        &self,
        request_items: HashMap<String, Vec<WriteRequest>>,
    ) -> BoxFuture<'_, Result<HashMap<String, Vec<WriteRequest>>, CallError>>;
}

impl BatchWriteApi for aws_sdk_dynamodb::Client {
    fn batch_write(
        &self,
        request_items: HashMap<String, Vec<WriteRequest>>,
    ) -> BoxFuture<'_, Result<HashMap<String, Vec<WriteRequest>>, CallError>> {
        Box::pin(async move {
            let output = self
                .batch_write_item()
                .set_request_items(Some(request_items))
                .send()
                .await
                .map_err(|err| CallError::from_sdk(&err))?;
            Ok(output.unprocessed_items.unwrap_or_default())
        })
    }
}

impl<T: BatchWriteApi + ?Sized> BatchWriteApi for Arc<T> {
    fn batch_write(
        &self,
        request_items: HashMap<String, Vec<WriteRequest>>,
    ) -> BoxFuture<'_, Result<HashMap<String, Vec<WriteRequest>>, CallError>> {
        (**self).batch_write(request_items)
    }
}

/// One write: put an item, or delete the item with this key.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// The whole item, `pk` (and `sk`) included.
    Put(HashMap<String, AttributeValue>),
    /// The key: `pk` (and `sk`).
    Delete(HashMap<String, AttributeValue>),
}

impl WriteOp {
    fn key_source(&self) -> &HashMap<String, AttributeValue> {
        match self {
            WriteOp::Put(item) => item,
            WriteOp::Delete(key) => key,
        }
    }

    fn into_request(self) -> Result<WriteRequest, String> {
        Ok(match self {
            WriteOp::Put(item) => WriteRequest::builder()
                .put_request(
                    PutRequest::builder()
                        .set_item(Some(item))
                        .build()
                        .map_err(|err| err.to_string())?,
                )
                .build(),
            WriteOp::Delete(key) => WriteRequest::builder()
                .delete_request(
                    DeleteRequest::builder()
                        .set_key(Some(key))
                        .build()
                        .map_err(|err| err.to_string())?,
                )
                .build(),
        })
    }
}

/// A write to one table; `tag` is the caller's, echoed back in the report.
#[derive(Debug, Clone, PartialEq)]
pub struct TableWrite {
    pub table: String,
    pub op: WriteOp,
    pub tag: usize,
}

/// A key value, hashable (AttributeValue is not).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyPart {
    S(String),
    N(String),
    B(Vec<u8>),
    /// Not a valid key type: DynamoDB will refuse the write; kept distinct by its debug form.
    Other(String),
    Missing,
}

fn key_part(value: Option<&AttributeValue>) -> KeyPart {
    match value {
        None => KeyPart::Missing,
        Some(AttributeValue::S(s)) => KeyPart::S(s.clone()),
        Some(AttributeValue::N(n)) => KeyPart::N(n.clone()),
        Some(AttributeValue::B(b)) => KeyPart::B(b.as_ref().to_vec()),
        Some(other) => KeyPart::Other(format!("{other:?}")),
    }
}

/// The identity of an item: table, `pk` and, when present, `sk`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ItemKey {
    table: String,
    pk: KeyPart,
    sk: Option<KeyPart>,
}

impl ItemKey {
    fn of(table: &str, attributes: &HashMap<String, AttributeValue>) -> Self {
        ItemKey {
            table: table.to_owned(),
            pk: key_part(attributes.get("pk")),
            sk: attributes.get("sk").map(|sk| key_part(Some(sk))),
        }
    }

    fn of_request(table: &str, request: &WriteRequest) -> Option<Self> {
        if let Some(put) = request.put_request() {
            Some(ItemKey::of(table, put.item()))
        } else {
            request
                .delete_request()
                .map(|delete| ItemKey::of(table, delete.key()))
        }
    }
}

/// An estimate of an item's share of the request (its JSON form), on the high side.
pub fn request_bytes(item: &HashMap<String, AttributeValue>) -> usize {
    2 + item
        .iter()
        .map(|(name, value)| name.len() + 4 + value_bytes(value))
        .sum::<usize>()
}

fn value_bytes(value: &AttributeValue) -> usize {
    const ENVELOPE: usize = 9; // {"S":""},
    let base64 = |len: usize| len.div_ceil(3) * 4;
    ENVELOPE
        + match value {
            AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
            AttributeValue::B(b) => base64(b.as_ref().len()),
            AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().map(|s| s.len() + 3).sum(),
            AttributeValue::Bs(v) => v.iter().map(|b| base64(b.as_ref().len()) + 3).sum(),
            AttributeValue::L(v) => v.iter().map(value_bytes).sum(),
            AttributeValue::M(m) => request_bytes(m),
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 5,
            _ => 0,
        }
}

/// A write ready to send.
struct Pending {
    table: String,
    request: WriteRequest,
    key: ItemKey,
    tag: usize,
    bytes: usize,
}

/// Writes items to DynamoDB with BatchWriteItem; see the module documentation for the contract.
#[derive(Clone)]
pub struct WriteBatcher {
    api: Arc<dyn BatchWriteApi>,
    retrier: Retrier,
}

impl Retrying for WriteBatcher {
    fn retrier_mut(&mut self) -> &mut Retrier {
        &mut self.retrier
    }
}

impl fmt::Debug for WriteBatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBatcher")
            .field("policy", &self.retrier.policy)
            .field("concurrency", &self.retrier.concurrency)
            .finish_non_exhaustive()
    }
}

impl WriteBatcher {
    /// A batcher on the real client, with the default policy and [`DEFAULT_CONCURRENCY`].
    pub fn new(client: aws_sdk_dynamodb::Client) -> Self {
        WriteBatcher::with_api(Arc::new(client))
    }

    /// A batcher on any [`BatchWriteApi`]: a [`FaultInjecting`] client, an in-memory table.
    pub fn with_api(api: Arc<dyn BatchWriteApi>) -> Self {
        WriteBatcher {
            api,
            retrier: Retrier::new(),
        }
    }

    /// The retry policy in force.
    pub fn policy(&self) -> RetryPolicy {
        self.retrier.policy
    }

    /// Writes every item; reports the tags of the writes that still failed (transient: after the
    /// retry budget; permanent: refused by DynamoDB), empty when all landed.
    pub async fn write_all(&self, writes: Vec<TableWrite>) -> WriteReport {
        let mut report = WriteReport::default();
        let mut pending = Vec::with_capacity(writes.len());
        // The n-th write of a key goes in generation n; a generation starts when the previous one
        // has settled, which keeps same-key writes apart and in order.
        let mut generations: Vec<Vec<usize>> = Vec::new();
        let mut seen: HashMap<ItemKey, usize> = HashMap::new();
        for TableWrite { table, op, tag } in writes {
            let key = ItemKey::of(&table, op.key_source());
            let bytes = request_bytes(op.key_source()) + table.len() + 16;
            if bytes > REQUEST_BYTES_BUDGET {
                report.fail(
                    tag,
                    WriteErrorKind::Permanent,
                    format!(
                        "ValidationException: the item is about {bytes} bytes, which does not fit in a \
                         BatchWriteItem request ({MAX_REQUEST_BYTES} bytes); items are limited to 400 KB: \
                         split it"
                    ),
                );
                continue;
            }
            let request = match op.into_request() {
                Ok(request) => request,
                Err(err) => {
                    report.fail(tag, WriteErrorKind::Permanent, err);
                    continue;
                }
            };
            let generation = seen.entry(key.clone()).or_insert(0);
            if generations.len() <= *generation {
                generations.push(Vec::new());
            }
            generations[*generation].push(pending.len());
            *generation += 1;
            pending.push(Pending {
                table,
                request,
                key,
                tag,
                bytes,
            });
        }
        for generation in generations {
            let chunks = chunk(&pending, generation);
            let pending = &pending;
            let api = &self.api;
            self.retrier
                .run(
                    chunks,
                    |members| call(api, pending, members),
                    |member| pending[member].tag,
                    &mut report,
                )
                .await;
        }
        report.finish();
        report
    }
}

/// Cuts one generation, in order, into calls of at most 25 requests and the byte budget.
fn chunk(pending: &[Pending], members: Vec<usize>) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0;
    for member in members {
        let size = pending[member].bytes;
        if current.len() == MAX_REQUESTS_PER_CALL
            || (!current.is_empty() && bytes + size > REQUEST_BYTES_BUDGET)
        {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(member);
        bytes += size;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Builds one BatchWriteItem call and the interpretation of its answer.
fn call(
    api: &Arc<dyn BatchWriteApi>,
    pending: &[Pending],
    members: &[usize],
) -> BoxFuture<'static, CallOutcome> {
    let mut request_items: HashMap<String, Vec<WriteRequest>> = HashMap::new();
    let mut index: HashMap<ItemKey, usize> = HashMap::with_capacity(members.len());
    for &member in members {
        let write = &pending[member];
        request_items
            .entry(write.table.clone())
            .or_default()
            .push(write.request.clone());
        index.insert(write.key.clone(), member);
    }
    let api = Arc::clone(api);
    let members = members.to_vec();
    Box::pin(async move {
        let unprocessed = match api.batch_write(request_items).await {
            Ok(unprocessed) => unprocessed,
            Err(err) => return CallOutcome::Failed(err),
        };
        let mut retry = Vec::new();
        let mut unmatched = false;
        for (table, requests) in &unprocessed {
            for request in requests {
                match ItemKey::of_request(table, request).and_then(|key| index.get(&key)) {
                    Some(&member) => retry.push(member),
                    None => unmatched = true,
                }
            }
        }
        if unmatched {
            // Cannot tell which writes are left: resending all of them is safe (no duplicates).
            tracing::warn!(
                "UnprocessedItems holds a request that was not sent; resending the call"
            );
            retry = members;
        }
        retry.sort_unstable();
        retry.dedup();
        CallOutcome::Answered {
            retry,
            retry_reason: CallError::transient(
                "UnprocessedItems",
                "DynamoDB left the write unprocessed",
            ),
            refused: Vec::new(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{Fault, FaultInjecting};
    use crate::retry::Sleeper;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;
    use std::sync::{Mutex, PoisonError};
    use std::time::Duration;

    /// A DynamoDB stand-in that records every call. Items whose `pk` is listed in `stuck` are
    /// always left unprocessed; a call holding an item with attribute `poison` is refused whole.
    #[derive(Default)]
    struct MemoryTable {
        items: Mutex<HashMap<ItemKey, HashMap<String, AttributeValue>>>,
        calls: Mutex<Vec<Vec<(ItemKey, String)>>>,
        stuck: HashSet<String>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        call_time: Duration,
    }

    impl MemoryTable {
        fn calls(&self) -> Vec<Vec<(ItemKey, String)>> {
            self.calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
        fn item(&self, table: &str, pk: &str) -> Option<HashMap<String, AttributeValue>> {
            let key = ItemKey {
                table: table.into(),
                pk: KeyPart::S(pk.into()),
                sk: None,
            };
            self.items
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .cloned()
        }
        fn len(&self) -> usize {
            self.items
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        }
    }

    fn label(request: &WriteRequest) -> String {
        match (request.put_request(), request.delete_request()) {
            (Some(put), _) => match put.item().get("v") {
                Some(AttributeValue::S(v)) => format!("put {v}"),
                _ => "put".into(),
            },
            _ => "delete".into(),
        }
    }

    impl BatchWriteApi for MemoryTable {
        fn batch_write(
            &self,
            request_items: HashMap<String, Vec<WriteRequest>>,
        ) -> BoxFuture<'_, Result<HashMap<String, Vec<WriteRequest>>, CallError>> {
            Box::pin(async move {
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(self.call_time).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                let mut recorded = Vec::new();
                let mut poisoned = false;
                for (table, requests) in &request_items {
                    for request in requests {
                        let key = ItemKey::of_request(table, request).unwrap_or(ItemKey {
                            table: table.clone(),
                            pk: KeyPart::Missing,
                            sk: None,
                        });
                        poisoned |= request
                            .put_request()
                            .is_some_and(|put| put.item().contains_key("poison"));
                        recorded.push((key, label(request)));
                    }
                }
                self.calls
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(recorded);
                if poisoned {
                    return Err(CallError::permanent(
                        "ValidationException",
                        "Item size has exceeded the maximum allowed size",
                    ));
                }
                let mut unprocessed: HashMap<String, Vec<WriteRequest>> = HashMap::new();
                let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
                for (table, requests) in request_items {
                    for request in requests {
                        let Some(key) = ItemKey::of_request(&table, &request) else {
                            continue;
                        };
                        if matches!(&key.pk, KeyPart::S(pk) if self.stuck.contains(pk)) {
                            unprocessed.entry(table.clone()).or_default().push(request);
                        } else if let Some(put) = request.put_request() {
                            items.insert(key, put.item().clone());
                        } else {
                            items.remove(&key);
                        }
                    }
                }
                Ok(unprocessed)
            })
        }
    }

    /// Records the waits instead of waiting.
    #[derive(Default)]
    struct RecordingSleeper(Mutex<Vec<Duration>>);

    impl RecordingSleeper {
        fn waits(&self) -> Vec<Duration> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    impl Sleeper for RecordingSleeper {
        fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(duration);
            Box::pin(tokio::task::yield_now())
        }
    }

    fn s(value: &str) -> AttributeValue {
        AttributeValue::S(value.into())
    }

    fn put(table: &str, pk: &str, value: &str, tag: usize) -> TableWrite {
        TableWrite {
            table: table.into(),
            op: WriteOp::Put(HashMap::from([
                ("pk".into(), s(pk)),
                ("v".into(), s(value)),
            ])),
            tag,
        }
    }

    fn delete(table: &str, pk: &str, tag: usize) -> TableWrite {
        TableWrite {
            table: table.into(),
            op: WriteOp::Delete(HashMap::from([("pk".into(), s(pk))])),
            tag,
        }
    }

    fn batcher(api: Arc<dyn BatchWriteApi>, sleeper: Arc<RecordingSleeper>) -> WriteBatcher {
        WriteBatcher::with_api(api)
            .with_sleeper(sleeper)
            .with_jitter_seed(7)
    }

    #[test]
    fn key_of_put_and_delete_is_pk_and_sk() {
        let item = HashMap::from([
            ("pk".into(), s("a")),
            ("sk".into(), s("1")),
            ("v".into(), s("x")),
        ]);
        let key = HashMap::from([("pk".into(), s("a")), ("sk".into(), s("1"))]);
        assert_eq!(ItemKey::of("t", &item), ItemKey::of("t", &key));
        assert_ne!(ItemKey::of("t", &item), ItemKey::of("u", &key));
        let other = HashMap::from([("pk".into(), s("a")), ("sk".into(), s("2"))]);
        assert_ne!(ItemKey::of("t", &item), ItemKey::of("t", &other));
    }

    #[tokio::test]
    async fn calls_hold_at_most_25_requests_and_every_item_lands() {
        let table = Arc::new(MemoryTable::default());
        let sleeper = Arc::new(RecordingSleeper::default());
        let writes = (0..110)
            .map(|i| put(if i % 2 == 0 { "a" } else { "b" }, &format!("k{i}"), "v", i))
            .collect();
        let report = batcher(table.clone(), sleeper.clone())
            .write_all(writes)
            .await;
        assert!(report.is_success(), "{report:?}");
        assert_eq!(report.calls, 5);
        assert_eq!(report.retries, 0);
        let calls = table.calls();
        assert_eq!(
            calls
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>()
                .iter()
                .sum::<usize>(),
            110
        );
        assert!(calls.iter().all(|call| call.len() <= MAX_REQUESTS_PER_CALL));
        assert_eq!(table.len(), 110);
        assert!(sleeper.waits().is_empty());
    }

    #[tokio::test]
    async fn same_key_writes_go_in_later_calls_in_order() {
        let table = Arc::new(MemoryTable::default());
        let sleeper = Arc::new(RecordingSleeper::default());
        let writes = vec![
            put("t", "dup", "1", 0),
            put("t", "other", "x", 1),
            put("t", "dup", "2", 2),
            put("u", "dup", "elsewhere", 3),
            delete("t", "dup", 4),
            put("t", "dup", "3", 5),
        ];
        let report = batcher(table.clone(), sleeper).write_all(writes).await;
        assert!(report.is_success(), "{report:?}");
        let calls = table.calls();
        for call in &calls {
            let keys: HashSet<&ItemKey> = call.iter().map(|(key, _)| key).collect();
            assert_eq!(
                keys.len(),
                call.len(),
                "duplicate key in one call: {call:?}"
            );
        }
        let dup = ItemKey::of("t", &HashMap::from([("pk".into(), s("dup"))]));
        let history: Vec<&str> = calls
            .iter()
            .flatten()
            .filter(|(key, _)| *key == dup)
            .map(|(_, label)| label.as_str())
            .collect();
        assert_eq!(history, ["put 1", "put 2", "delete", "put 3"]);
        assert_eq!(
            table
                .item("t", "dup")
                .and_then(|item| item.get("v").cloned()),
            Some(s("3"))
        );
        assert_eq!(
            table
                .item("u", "dup")
                .and_then(|item| item.get("v").cloned()),
            Some(s("elsewhere"))
        );
    }

    #[tokio::test]
    async fn unprocessed_items_are_resent_until_done() {
        let table = Arc::new(MemoryTable::default());
        let faulty = Arc::new(FaultInjecting::scripted(
            table.clone(),
            [
                Fault::Unprocessed { fraction: 0.5 },
                Fault::Unprocessed { fraction: 0.5 },
                Fault::Unprocessed { fraction: 1.0 },
                Fault::Unprocessed { fraction: 0.5 },
            ],
            3,
        ));
        let sleeper = Arc::new(RecordingSleeper::default());
        let writes = (0..25)
            .map(|i| put("t", &format!("k{i}"), "v", i))
            .collect();
        let report = batcher(faulty.clone(), sleeper.clone())
            .with_concurrency(1)
            .write_all(writes)
            .await;
        assert!(report.is_success(), "{report:?}");
        assert_eq!(table.len(), 25);
        // 25 → 12 withheld → 6 → 6 (all) → 3 → done.
        assert_eq!(faulty.injected().withheld, 12 + 6 + 6 + 3);
        assert_eq!(report.calls, 5);
        assert_eq!(report.retries, 4);
        let sizes: Vec<usize> = table.calls().iter().map(Vec::len).collect();
        assert_eq!(sizes, [13, 6, 3, 3]); // what reached the table; the all-withheld call never did
        assert_eq!(sleeper.waits().len(), 4);
    }

    #[tokio::test]
    async fn throttled_calls_are_retried() {
        let table = Arc::new(MemoryTable::default());
        let faulty = Arc::new(FaultInjecting::scripted(
            table.clone(),
            [
                Fault::throttle(),
                Fault::Pass,
                Fault::throttle(),
                Fault::throttle(),
            ],
            3,
        ));
        let sleeper = Arc::new(RecordingSleeper::default());
        let writes = (0..60)
            .map(|i| put("t", &format!("k{i}"), "v", i))
            .collect();
        let report = batcher(faulty.clone(), sleeper)
            .with_concurrency(2)
            .write_all(writes)
            .await;
        assert!(report.is_success(), "{report:?}");
        assert_eq!(table.len(), 60);
        assert_eq!(report.calls, 6);
        assert_eq!(report.retries, 3);
        assert_eq!(faulty.injected().failed_calls, 3);
    }

    #[tokio::test]
    async fn a_spent_budget_reports_exactly_the_stuck_tags_as_transient() {
        let table = Arc::new(MemoryTable {
            stuck: HashSet::from(["k3".to_owned(), "k40".to_owned()]),
            ..MemoryTable::default()
        });
        let sleeper = Arc::new(RecordingSleeper::default());
        let policy = RetryPolicy {
            max_attempts: 4,
            ..RetryPolicy::default()
        };
        let writes = (0..50)
            .map(|i| put("t", &format!("k{i}"), "v", 100 + i))
            .collect();
        let report = batcher(table.clone(), sleeper.clone())
            .with_policy(policy)
            .write_all(writes)
            .await;
        assert_eq!(report.failed_tags, [103, 140]);
        assert_eq!(report.tags_of(WriteErrorKind::Transient), [103, 140]);
        assert!(report.tags_of(WriteErrorKind::Permanent).is_empty());
        assert_eq!(table.len(), 48);
        // Two chunks, each sent 4 times (the stuck item alone after the first).
        assert_eq!(report.calls, 8);
        assert_eq!(report.retries, 6);
        assert_eq!(sleeper.waits().len(), 6);
        assert!(
            report
                .errors
                .iter()
                .all(|(_, _, message)| message.contains("after 4 attempts"))
        );
    }

    #[tokio::test]
    async fn a_permanent_refusal_is_isolated_and_not_retried() {
        let table = Arc::new(MemoryTable::default());
        let sleeper = Arc::new(RecordingSleeper::default());
        let mut writes: Vec<TableWrite> = (0..25)
            .map(|i| put("t", &format!("k{i}"), "v", i))
            .collect();
        if let WriteOp::Put(item) = &mut writes[17].op {
            item.insert("poison".into(), AttributeValue::Bool(true));
        }
        let report = batcher(table.clone(), sleeper.clone())
            .write_all(writes)
            .await;
        assert_eq!(report.failed_tags, [17]);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].1, WriteErrorKind::Permanent);
        assert!(report.errors[0].2.starts_with("ValidationException"));
        assert_eq!(table.len(), 24);
        assert_eq!(report.retries, 0);
        assert!(
            sleeper.waits().is_empty(),
            "a permanent error is not backed off"
        );
        let alone: Vec<_> = table
            .calls()
            .into_iter()
            .filter(|call| call.len() == 1)
            .collect();
        let poisoned = ItemKey::of("t", &HashMap::from([("pk".into(), s("k17"))]));
        assert_eq!(
            alone.iter().filter(|call| call[0].0 == poisoned).count(),
            1,
            "sent alone once"
        );
        // Bisection: 25 → 12+13 → … at most 2·log2(25) calls beyond the first.
        assert!(report.calls <= 11, "{}", report.calls);
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        for concurrency in [1, 3] {
            let table = Arc::new(MemoryTable {
                call_time: Duration::from_millis(5),
                ..MemoryTable::default()
            });
            let writes = (0..250)
                .map(|i| put("t", &format!("k{i}"), "v", i))
                .collect();
            let report = batcher(table.clone(), Arc::new(RecordingSleeper::default()))
                .with_concurrency(concurrency)
                .write_all(writes)
                .await;
            assert!(report.is_success());
            assert_eq!(report.calls, 10);
            assert_eq!(table.max_in_flight.load(Ordering::SeqCst), concurrency);
        }
    }

    #[tokio::test]
    async fn waits_grow_and_are_jittered() {
        let policy = RetryPolicy {
            max_attempts: 7,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(80),
        };
        let mut runs = Vec::new();
        for seed in [1, 2, 3] {
            let table = Arc::new(MemoryTable {
                stuck: HashSet::from(["k0".to_owned()]),
                ..MemoryTable::default()
            });
            let sleeper = Arc::new(RecordingSleeper::default());
            let report = WriteBatcher::with_api(table)
                .with_policy(policy)
                .with_sleeper(sleeper.clone())
                .with_jitter_seed(seed)
                .write_all(vec![put("t", "k0", "v", 0)])
                .await;
            assert_eq!(report.failed_tags, [0]);
            let waits = sleeper.waits();
            assert_eq!(waits.len(), 6);
            for (retry, wait) in (1..).zip(&waits) {
                assert!(
                    *wait <= policy.backoff_cap(retry),
                    "retry {retry}: {wait:?}"
                );
            }
            runs.push(waits);
        }
        assert_ne!(runs[0], runs[1]);
        assert_ne!(runs[1], runs[2]);
        // Averaged over the runs, later waits are longer than the first ones.
        let mean = |retry: usize| runs.iter().map(|waits| waits[retry]).sum::<Duration>() / 3;
        assert!(mean(4) + mean(5) > mean(0) + mean(1), "{runs:?}");
    }

    #[tokio::test]
    async fn an_item_beyond_the_request_limit_is_refused_without_a_call() {
        let table = Arc::new(MemoryTable::default());
        let huge = "x".repeat(REQUEST_BYTES_BUDGET);
        let writes = vec![put("t", "huge", &huge, 9), put("t", "small", "v", 10)];
        let report = batcher(table.clone(), Arc::new(RecordingSleeper::default()))
            .write_all(writes)
            .await;
        assert_eq!(report.failed_tags, [9]);
        assert_eq!(report.tags_of(WriteErrorKind::Permanent), [9]);
        assert_eq!(report.calls, 1);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn chunks_respect_the_byte_budget() {
        let big = |tag: usize| Pending {
            table: "t".into(),
            request: WriteRequest::builder().build(),
            key: ItemKey {
                table: "t".into(),
                pk: KeyPart::N(tag.to_string()),
                sk: None,
            },
            tag,
            bytes: 6 * 1024 * 1024,
        };
        let pending: Vec<Pending> = (0..5).map(big).collect();
        assert_eq!(
            chunk(&pending, (0..5).collect()),
            [vec![0, 1], vec![2, 3], vec![4]]
        );
    }
}
