//! The retry engine shared by the services' batch senders (DynamoDB's BatchWriteItem in
//! [`crate::batch`], SQS's SendMessageBatch in [`crate::dlq`]): calls with a bounded number in
//! flight, transient failures resent with exponential backoff and full jitter until a budget
//! runs out, a call refused as a whole split in halves until the refused requests are isolated,
//! and every failure classified ([`CallError`]): transient (retry the Kafka batch), permanent
//! (the deployment's fault), or a refusal of the content (the record's fault: it must reach
//! another terminal outcome, never be retried).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tokio::task::JoinSet;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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
}
