//! Faults on demand (feature `test-util`): moto never throttles, never leaves a
//! BatchWriteItem's requests unprocessed and never fails part of a SendMessageBatch, so
//! [`FaultInjecting`] wraps a service seam (the real client included) and makes it do so,
//! deterministically for a given script and seed. Production builds do not compile it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, PoisonError};

use aws_sdk_dynamodb::types::WriteRequest;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::batch::BatchWriteApi;
use crate::dlq::{BatchSendResult, EntryFailure, SendMessageBatchApi};
use crate::retry::{BoxFuture, CallError, Jitter};

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

/// [`Fault::Unprocessed`] answers the withheld entries as failed, not the sender's fault.
impl<A: SendMessageBatchApi> SendMessageBatchApi for FaultInjecting<A> {
    fn send_batch<'a>(
        &'a self,
        queue_url: &'a str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> BoxFuture<'a, Result<BatchSendResult, CallError>> {
        let fraction = match self.next_fault() {
            Fault::Pass => return self.inner.send_batch(queue_url, entries),
            Fault::Fail(err) => return Box::pin(async move { Err(err) }),
            Fault::Unprocessed { fraction } => fraction,
        };
        let mask = self.withheld_mask(entries.len(), fraction);
        let (withheld, forwarded): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .zip(mask)
            .partition(|(_, withheld)| *withheld);
        Box::pin(async move {
            let forwarded: Vec<SendMessageBatchRequestEntry> =
                forwarded.into_iter().map(|(entry, _)| entry).collect();
            let mut result = if forwarded.is_empty() {
                BatchSendResult::default()
            } else {
                self.inner.send_batch(queue_url, forwarded).await?
            };
            result
                .failed
                .extend(withheld.into_iter().map(|(entry, _)| EntryFailure {
                    id: entry.id().to_owned(),
                    sender_fault: false,
                    code: "InternalError".into(),
                    message: "injected failure".into(),
                }));
            Ok(result)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
