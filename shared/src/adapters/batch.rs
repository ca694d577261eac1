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
//! moto never throttles and never returns `UnprocessedItems`: [`FaultInjecting`] wraps any
//! [`BatchWriteApi`], the real client included, to make it do both, deterministically.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use tokio::task::JoinSet;

/// DynamoDB's limit of requests in one BatchWriteItem call.
pub const MAX_REQUESTS_PER_CALL: usize = 25;
/// DynamoDB's limit on the size of one BatchWriteItem request.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// What a call's items may add up to, by [`request_bytes`]: a margin under [`MAX_REQUEST_BYTES`]
/// for the JSON envelope and for escapes the estimate does not count.
const REQUEST_BYTES_BUDGET: usize = 15 * 1024 * 1024;
/// Calls in flight by default.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// A boxed, sendable future: what the service seams return, so that they can sit behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How often and how patiently a transient failure is retried: exponential backoff with full
/// jitter (each wait is uniform between zero and `base_delay · 2^(retry−1)`, at most `max_delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls an item may take part in before a transient failure is final (the first included).
    pub max_attempts: u32,
    /// Upper bound of the first wait.
    pub base_delay: Duration,
    /// Upper bound of every wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(25),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the wait before retry number `retry` (1 for the first retry).
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    /// The wait before retry number `retry`: `random` (any 64 bits) scaled into
    /// `[0, backoff_cap(retry)]`.
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
        self.backoff_cap(retry).mul_f64(unit)
    }
}

/// Waits between retries; a seam so that tests neither wait nor guess what was waited.
pub trait Sleeper: Send + Sync {
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The production [`Sleeper`]: `tokio::time::sleep`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// The random source of the jitter (SplitMix64): lock-free, seedable for tests.
#[derive(Debug)]
pub(crate) struct Jitter(AtomicU64);

impl Jitter {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    pub(crate) fn seeded(seed: u64) -> Self {
        Jitter(AtomicU64::new(seed))
    }

    /// Seeded by the operating system, else by the clock: jitter needs spread, not secrecy.
    pub(crate) fn from_entropy() -> Self {
        let seed = getrandom::u64().unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x5eed, |elapsed| elapsed.as_nanos() as u64)
        });
        Jitter::seeded(seed)
    }

    pub(crate) fn next(&self) -> u64 {
        let state = self
            .0
            .fetch_add(Self::GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GAMMA);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Whether a failure may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteErrorKind {
    /// Throttling, a service error, a timeout, or the retry budget ran out: retry later.
    Transient,
    /// The service refused the request itself (validation, missing table…): retrying is useless.
    Permanent,
}

impl fmt::Display for WriteErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteErrorKind::Transient => "transient",
            WriteErrorKind::Permanent => "permanent",
        })
    }
}

/// A failed service call (or a refused entry), classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CallError {
    /// Retry or give up.
    pub kind: WriteErrorKind,
    /// The service's error code (`ThrottlingException`, `ValidationException`…) or, for failures
    /// without a response, `TimeoutError`, `DispatchFailure`, ….
    pub code: String,
    /// What the service or the client said.
    pub message: String,
}

/// Service error codes that mean "not now" rather than "never" (DynamoDB and SQS).
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ReplicatedWriteConflictException",
    "KmsThrottled",
];

/// Codes by which a service refuses the content of a request (an item too large, a character it
/// does not take, a malformed value): the same request can never succeed, so the record that
/// produced it must reach another terminal outcome instead of being retried. Other permanent
/// codes (a missing table or queue, denied access) are the deployment's fault, not the record's:
/// retrying until an operator fixes them is right.
pub const CONTENT_REFUSALS: &[&str] = &[
    "ValidationException",
    "ItemCollectionSizeLimitExceededException",
    "InvalidMessageContents",
    "MessageTooLong",
    "InvalidParameterValue",
    "InvalidAttributeName",
    "InvalidAttributeValue",
    "BatchRequestTooLong",
];

/// Whether an error text (`{code}: {message}`, as [`CallError`] displays and the reports keep)
/// names a [`CONTENT_REFUSALS`] code.
pub fn refuses_content(text: &str) -> bool {
    let code = text.split(':').next().unwrap_or_default().trim();
    let bare = code.rsplit('.').next().unwrap_or(code);
    CONTENT_REFUSALS.contains(&bare)
}

impl CallError {
    /// Whether the service refused the request's content ([`CONTENT_REFUSALS`]).
    pub fn refuses_content(&self) -> bool {
        self.kind == WriteErrorKind::Permanent && refuses_content(&self.code)
    }

    /// A failure worth retrying.
    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        CallError {
            kind: WriteErrorKind::Transient,
            code: code.into(),
            message: message.into(),
        }
    }

    /// A failure not worth retrying.
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        CallError {
            kind: WriteErrorKind::Permanent,
            code: code.into(),
            message: message.into(),
        }
    }

    /// What DynamoDB answers when a table's throughput is exceeded.
    pub fn throttling() -> Self {
        CallError::transient(
            "ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
        )
    }

    /// Classifies an SDK error (DynamoDB or SQS: both SDKs share the error type): no response,
    /// throttling and 5xx are transient; any other answer of the service is permanent.
    pub fn from_sdk<E>(err: &SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let context = || DisplayErrorContext(err).to_string();
        match err {
            SdkError::ConstructionFailure(_) => {
                CallError::permanent("ConstructionFailure", context())
            }
            SdkError::TimeoutError(_) => CallError::transient("TimeoutError", context()),
            SdkError::DispatchFailure(_) => CallError::transient("DispatchFailure", context()),
            SdkError::ResponseError(_) => CallError::transient("ResponseError", context()),
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or("Unknown").to_owned();
                let message = service.err().message().map_or_else(context, str::to_owned);
                let status = service.raw().status().as_u16();
                // SQS's query-compatible codes come prefixed (`AWS.SimpleQueueService.…`).
                let bare = code.rsplit('.').next().unwrap_or(&code);
                let listed =
                    TRANSIENT_CODES.contains(&code.as_str()) || TRANSIENT_CODES.contains(&bare);
                if listed || status >= 500 || status == 429 {
                    CallError::transient(code, message)
                } else {
                    CallError::permanent(code, message)
                }
            }
            _ => CallError::transient("Unknown", context()),
        }
    }
}

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

/// What became of a batch of writes (or of dead letter announcements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Tags of the writes that did not land, ascending, each once: empty when all landed.
    pub failed_tags: Vec<usize>,
    /// Service calls made (retries and split halves included).
    pub calls: u32,
    /// Calls that resent writes after a transient failure.
    pub retries: u32,
    /// Why each failed write failed, by tag (a tag shared by several writes can appear several
    /// times).
    pub errors: Vec<(usize, WriteErrorKind, String)>,
}

impl WriteReport {
    /// Whether every write landed.
    pub fn is_success(&self) -> bool {
        self.failed_tags.is_empty()
    }

    /// The failed tags of one kind, ascending, each once.
    pub fn tags_of(&self, kind: WriteErrorKind) -> Vec<usize> {
        let mut tags: Vec<usize> = self
            .errors
            .iter()
            .filter(|(_, k, _)| *k == kind)
            .map(|(tag, _, _)| *tag)
            .collect();
        tags.sort_unstable();
        tags.dedup();
        tags
    }

    /// The tags whose content the service refused ([`CONTENT_REFUSALS`]), ascending, each once,
    /// with the first such reason: retrying them is useless.
    pub fn refused(&self) -> Vec<(usize, String)> {
        let mut refused: Vec<(usize, String)> = Vec::new();
        for (tag, kind, message) in &self.errors {
            if *kind == WriteErrorKind::Permanent
                && refuses_content(message)
                && refused.last().is_none_or(|(last, _)| last != tag)
            {
                refused.push((*tag, message.clone()));
            }
        }
        refused.sort_by_key(|(tag, _)| *tag);
        refused.dedup_by_key(|(tag, _)| *tag);
        refused
    }

    pub(crate) fn fail(&mut self, tag: usize, kind: WriteErrorKind, message: String) {
        self.failed_tags.push(tag);
        self.errors.push((tag, kind, message));
    }

    pub(crate) fn finish(&mut self) {
        self.failed_tags.sort_unstable();
        self.failed_tags.dedup();
        self.errors.sort_by_key(|(tag, _, _)| *tag);
    }
}

/// What one call did to its members (indices into the caller's list of pending requests).
pub(crate) enum CallOutcome {
    /// The call was answered: `retry` must be sent again (for `retry_reason`), `refused` were
    /// refused for good; the rest landed.
    Answered {
        retry: Vec<usize>,
        retry_reason: CallError,
        refused: Vec<(usize, String)>,
    },
    /// The call as a whole failed.
    Failed(CallError),
}

/// Members sent together, and what they went through so far.
struct Job {
    members: Vec<usize>,
    /// Calls these members already took part in that failed transiently.
    attempts: u32,
    /// Wait before sending: the retry number, when this job is a retry.
    backoff: Option<u32>,
}

/// Tuning shared by the services' batch senders ([`WriteBatcher`] and the dead letter queue):
/// both drive their calls through one [`Retrier`], so the knobs live here once.
pub trait Retrying: Sized {
    /// The retrier to tune.
    #[doc(hidden)]
    fn retrier_mut(&mut self) -> &mut Retrier;

    /// Replaces the retry policy.
    fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.retrier_mut().policy = policy;
        self
    }

    /// Sets how many calls may be in flight at once (at least one).
    fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.retrier_mut().concurrency = concurrency.max(1);
        self
    }

    /// Replaces the sleeper that waits between retries (tests).
    fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.retrier_mut().sleeper = sleeper;
        self
    }

    /// Makes the jitter reproducible (tests).
    fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.retrier_mut().jitter = Arc::new(Jitter::seeded(seed));
        self
    }
}

/// The retry loop shared by [`WriteBatcher`] and the dead letter queue: runs jobs with a bounded
/// number of calls in flight, backs off and resends transient failures until the budget runs out,
/// and splits a call refused as a whole until the refused members are isolated.
#[derive(Clone)]
pub struct Retrier {
    pub(crate) policy: RetryPolicy,
    pub(crate) concurrency: usize,
    pub(crate) sleeper: Arc<dyn Sleeper>,
    pub(crate) jitter: Arc<Jitter>,
}

impl Retrier {
    pub(crate) fn new() -> Self {
        Retrier {
            policy: RetryPolicy::default(),
            concurrency: DEFAULT_CONCURRENCY,
            sleeper: Arc::new(TokioSleeper),
            jitter: Arc::new(Jitter::from_entropy()),
        }
    }

    /// Runs `chunks` (lists of member indices) through `call`, which builds one request from its
    /// members and returns the future that sends it and interprets the answer. `tag_of` maps a
    /// member to the caller's tag for the report.
    pub(crate) async fn run<C, T>(
        &self,
        chunks: Vec<Vec<usize>>,
        mut call: C,
        tag_of: T,
        report: &mut WriteReport,
    ) where
        C: FnMut(&[usize]) -> BoxFuture<'static, CallOutcome>,
        T: Fn(usize) -> usize,
    {
        let mut queue: VecDeque<Job> = chunks
            .into_iter()
            .filter(|members| !members.is_empty())
            .map(|members| Job {
                members,
                attempts: 0,
                backoff: None,
            })
            .collect();
        let mut in_flight: JoinSet<CallOutcome> = JoinSet::new();
        let mut jobs: HashMap<tokio::task::Id, Job> = HashMap::new();
        loop {
            while in_flight.len() < self.concurrency.max(1)
                && let Some(job) = queue.pop_front()
            {
                let delay = job
                    .backoff
                    .map(|retry| self.policy.delay(retry, self.jitter.next()));
                report.calls += 1;
                if delay.is_some() {
                    report.retries += 1;
                }
                let request = call(&job.members);
                let sleeper = Arc::clone(&self.sleeper);
                let handle = in_flight.spawn(async move {
                    if let Some(delay) = delay {
                        sleeper.sleep(delay).await;
                    }
                    request.await
                });
                jobs.insert(handle.id(), job);
            }
            let Some(joined) = in_flight.join_next_with_id().await else {
                break;
            };
            let (job, outcome) = match joined {
                Ok((id, outcome)) => (jobs.remove(&id), outcome),
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(err) => (
                    jobs.remove(&err.id()),
                    CallOutcome::Failed(CallError::transient("Cancelled", err.to_string())),
                ),
            };
            let Some(job) = job else { continue };
            self.settle(job, outcome, &mut queue, &tag_of, report);
        }
    }

    fn settle<T: Fn(usize) -> usize>(
        &self,
        job: Job,
        outcome: CallOutcome,
        queue: &mut VecDeque<Job>,
        tag_of: &T,
        report: &mut WriteReport,
    ) {
        match outcome {
            CallOutcome::Answered {
                retry,
                retry_reason,
                refused,
            } => {
                for (member, message) in refused {
                    report.fail(tag_of(member), WriteErrorKind::Permanent, message);
                }
                if !retry.is_empty() {
                    self.retry_or_give_up(
                        retry,
                        job.attempts + 1,
                        &retry_reason,
                        queue,
                        tag_of,
                        report,
                    );
                }
            }
            CallOutcome::Failed(err) if err.kind == WriteErrorKind::Transient => {
                tracing::debug!(code = %err.code, writes = job.members.len(), "call failed, will retry");
                self.retry_or_give_up(job.members, job.attempts + 1, &err, queue, tag_of, report);
            }
            CallOutcome::Failed(err) if job.members.len() > 1 => {
                // One bad request refuses the whole call: halve until it is alone.
                let mut first = job.members;
                let second = first.split_off(first.len() / 2);
                for members in [second, first] {
                    queue.push_front(Job {
                        members,
                        attempts: job.attempts,
                        backoff: None,
                    });
                }
                tracing::debug!(code = %err.code, "call refused as a whole, splitting it");
            }
            CallOutcome::Failed(err) => {
                for member in job.members {
                    tracing::warn!(code = %err.code, tag = tag_of(member), "refused for good");
                    report.fail(tag_of(member), WriteErrorKind::Permanent, err.to_string());
                }
            }
        }
    }

    fn retry_or_give_up<T: Fn(usize) -> usize>(
        &self,
        members: Vec<usize>,
        attempts: u32,
        reason: &CallError,
        queue: &mut VecDeque<Job>,
        tag_of: &T,
        report: &mut WriteReport,
    ) {
        if attempts >= self.policy.max_attempts {
            tracing::warn!(code = %reason.code, attempts, count = members.len(), "retry budget spent");
            for member in members {
                report.fail(
                    tag_of(member),
                    WriteErrorKind::Transient,
                    format!("{reason} (still failing after {attempts} attempts)"),
                );
            }
        } else {
            queue.push_back(Job {
                members,
                attempts,
                backoff: Some(attempts),
            });
        }
    }
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

/// One scripted behaviour of [`FaultInjecting`] for one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Forward the call untouched.
    Pass,
    /// Withhold `floor(fraction · n)` of the call's n requests (chosen by the seeded RNG), forward
    /// the rest, and answer the withheld ones as unprocessed (for SQS: failed, not sender's fault).
    Unprocessed { fraction: f64 },
    /// Fail the whole call with this error, forwarding nothing.
    Fail(CallError),
}

impl Fault {
    /// A whole call throttled.
    pub fn throttle() -> Self {
        Fault::Fail(CallError::throttling())
    }
}

/// What a [`FaultInjecting`] wrapper did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InjectedFaults {
    /// Calls seen.
    pub calls: u32,
    /// Calls failed whole.
    pub failed_calls: u32,
    /// Requests withheld and answered as unprocessed.
    pub withheld: u32,
}

/// Wraps a service seam (the real client included) and plays a script of faults, one per call;
/// once the script is spent, every call passes. Deterministic for a given script, seed and call
/// order.
pub struct FaultInjecting<A> {
    inner: A,
    script: Mutex<VecDeque<Fault>>,
    rng: Jitter,
    injected: Mutex<InjectedFaults>,
}

impl<A> fmt::Debug for FaultInjecting<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjecting")
            .field("injected", &self.injected())
            .finish_non_exhaustive()
    }
}

impl<A> FaultInjecting<A> {
    /// Plays `script`, one fault per call, then passes.
    pub fn scripted(inner: A, script: impl IntoIterator<Item = Fault>, seed: u64) -> Self {
        FaultInjecting {
            inner,
            script: Mutex::new(script.into_iter().collect()),
            rng: Jitter::seeded(seed),
            injected: Mutex::new(InjectedFaults::default()),
        }
    }

    /// A script of `unprocessed_calls` calls answering `fraction` of their requests as unprocessed
    /// and `throttled_calls` calls throttled whole, in an order shuffled by `seed`.
    pub fn shuffled(
        inner: A,
        seed: u64,
        unprocessed_calls: usize,
        fraction: f64,
        throttled_calls: usize,
    ) -> Self {
        let rng = Jitter::seeded(seed);
        let mut script: Vec<Fault> =
            std::iter::repeat_n(Fault::Unprocessed { fraction }, unprocessed_calls)
                .chain(std::iter::repeat_n(Fault::throttle(), throttled_calls))
                .collect();
        for i in (1..script.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            script.swap(i, j);
        }
        FaultInjecting {
            inner,
            script: Mutex::new(script.into()),
            rng,
            injected: Mutex::new(InjectedFaults::default()),
        }
    }

    /// The wrapped seam.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// What was injected so far.
    pub fn injected(&self) -> InjectedFaults {
        *self.injected.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Faults left in the script.
    pub fn remaining(&self) -> usize {
        self.script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The fault for the next call, counted.
    pub(crate) fn next_fault(&self) -> Fault {
        let fault = self
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .unwrap_or(Fault::Pass);
        let mut injected = self.injected.lock().unwrap_or_else(PoisonError::into_inner);
        injected.calls += 1;
        if matches!(fault, Fault::Fail(_)) {
            injected.failed_calls += 1;
        }
        fault
    }

    /// Which of `n` requests to withhold: `floor(fraction · n)` of them, chosen at random.
    pub(crate) fn withheld_mask(&self, n: usize, fraction: f64) -> Vec<bool> {
        let count = ((fraction.clamp(0.0, 1.0) * n as f64).floor() as usize).min(n);
        let mut order: Vec<usize> = (0..n).collect();
        for i in 0..count {
            let j = i + (self.rng.next() % (n - i) as u64) as usize;
            order.swap(i, j);
        }
        let mut mask = vec![false; n];
        for &i in &order[..count] {
            mask[i] = true;
        }
        self.injected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .withheld += count as u32;
        mask
    }
}

impl<A: BatchWriteApi> BatchWriteApi for FaultInjecting<A> {
    fn batch_write(
        &self,
        request_items: HashMap<String, Vec<WriteRequest>>,
    ) -> BoxFuture<'_, Result<HashMap<String, Vec<WriteRequest>>, CallError>> {
        let fraction = match self.next_fault() {
            Fault::Pass => return self.inner.batch_write(request_items),
            Fault::Fail(err) => return Box::pin(async move { Err(err) }),
            Fault::Unprocessed { fraction } => fraction,
        };
        // Tables in name order, so that a seed picks the same requests whatever the map's order.
        let mut tables: Vec<(String, Vec<WriteRequest>)> = request_items.into_iter().collect();
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        let total = tables.iter().map(|(_, requests)| requests.len()).sum();
        let mut mask = self.withheld_mask(total, fraction).into_iter();
        let mut forwarded: HashMap<String, Vec<WriteRequest>> = HashMap::new();
        let mut withheld: HashMap<String, Vec<WriteRequest>> = HashMap::new();
        for (table, requests) in tables {
            for request in requests {
                let target = if mask.next().unwrap_or(false) {
                    &mut withheld
                } else {
                    &mut forwarded
                };
                target.entry(table.clone()).or_default().push(request);
            }
        }
        Box::pin(async move {
            let mut unprocessed = if forwarded.is_empty() {
                HashMap::new()
            } else {
                self.inner.batch_write(forwarded).await?
            };
            for (table, requests) in withheld {
                unprocessed.entry(table).or_default().extend(requests);
            }
            Ok(unprocessed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicUsize;

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
    fn backoff_caps_double_up_to_the_maximum() {
        let policy = RetryPolicy::default();
        let caps: Vec<u64> = (1..=9)
            .map(|retry| policy.backoff_cap(retry).as_millis() as u64)
            .collect();
        assert_eq!(caps, [25, 50, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(policy.backoff_cap(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn delay_is_spread_over_zero_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(3, 0), Duration::ZERO);
        assert_eq!(policy.delay(3, 1 << 63), Duration::from_millis(50));
        assert!(policy.delay(3, u64::MAX) <= Duration::from_millis(100));
        let jitter = Jitter::seeded(1);
        let delays: HashSet<Duration> = (0..100).map(|_| policy.delay(4, jitter.next())).collect();
        assert!(delays.len() > 90, "full jitter spreads the waits");
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(200)));
    }

    #[test]
    fn sdk_errors_are_classified() {
        use aws_sdk_dynamodb::config::http::HttpResponse;
        use aws_sdk_dynamodb::error::{ConnectorError, ErrorMetadata};
        use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemError;
        type Error = SdkError<BatchWriteItemError>;
        let service = |code: &str, status: u16| {
            let raw = HttpResponse::new(status.try_into().expect("a valid status"), "".into());
            let err = BatchWriteItemError::generic(
                ErrorMetadata::builder().code(code).message("m").build(),
            );
            CallError::from_sdk(&Error::service_error(err, raw))
        };
        use WriteErrorKind::{Permanent, Transient};
        for (code, status, kind) in [
            ("ProvisionedThroughputExceededException", 400, Transient),
            ("ThrottlingException", 400, Transient),
            ("RequestLimitExceeded", 400, Transient),
            ("InternalServerError", 500, Transient),
            ("Anything", 503, Transient),
            ("Anything", 429, Transient),
            ("AWS.SimpleQueueService.RequestThrottled", 400, Transient),
            ("KMS.ThrottlingException", 400, Transient),
            ("ValidationException", 400, Permanent),
            ("ResourceNotFoundException", 400, Permanent),
            ("AWS.SimpleQueueService.NonExistentQueue", 400, Permanent),
        ] {
            let classified = service(code, status);
            assert_eq!((classified.kind, classified.code.as_str()), (kind, code));
            assert_eq!(classified.message, "m");
        }
        assert_eq!(
            CallError::from_sdk(&Error::timeout_error("slow")).kind,
            Transient
        );
        let io = ConnectorError::io("connection reset".into());
        assert_eq!(
            CallError::from_sdk(&Error::dispatch_failure(io)).kind,
            Transient
        );
        assert_eq!(
            CallError::from_sdk(&Error::construction_failure("bad")).kind,
            Permanent
        );
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

    #[test]
    fn withheld_mask_takes_the_floor_of_the_fraction() {
        let faulty = FaultInjecting::scripted((), [], 1);
        for (n, fraction, expected) in [
            (25, 0.3, 7),
            (7, 0.3, 2),
            (2, 0.3, 0),
            (10, 1.0, 10),
            (4, 2.0, 4),
        ] {
            let mask = faulty.withheld_mask(n, fraction);
            assert_eq!(mask.len(), n);
            assert_eq!(mask.iter().filter(|m| **m).count(), expected);
        }
    }

    #[test]
    fn shuffled_script_holds_the_requested_faults() {
        let faulty = FaultInjecting::shuffled((), 42, 10, 0.3, 4);
        assert_eq!(faulty.remaining(), 14);
        let faults: Vec<Fault> = (0..16).map(|_| faulty.next_fault()).collect();
        assert_eq!(
            faults
                .iter()
                .filter(|f| matches!(f, Fault::Fail(_)))
                .count(),
            4
        );
        assert_eq!(
            faults
                .iter()
                .filter(|f| matches!(f, Fault::Unprocessed { .. }))
                .count(),
            10
        );
        assert_eq!(faults[14..], [Fault::Pass, Fault::Pass]);
        assert_eq!(faulty.injected().calls, 16);
    }
}
