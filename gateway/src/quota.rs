//! Per-project produce quota, answered like Kafka's own quotas (KIP-219): the response carries
//! `throttle_time_ms` and the gateway reads nothing more from that connection until the time
//! has passed, so one tenant cannot starve the others.
//!
//! Two token buckets per project and gateway task: decompressed bytes per second and records
//! per second (a flood of tiny records costs the backing cluster and ingest per record, not per
//! byte). Each holds one second of burst; a deficit is carried over so that sustained excess is
//! held to the rate. Charges from concurrent connections of one project are serialised under
//! the project's shard lock, so none is lost.
//!
//! The pause is per project, not per connection: a project's Produce requests are read one at
//! a time ([`ProduceQuota::turn`]), each only once the one before it is charged in full and the
//! project's deficit is paid. A per-connection pause alone would let a tenant multiply its rate
//! by opening connections (each pausing at most [`MAX_THROTTLE`] per request, or all reading a
//! request at once when the deficit is paid). So what a project puts into the inbound topic is
//! its rate, plus one second of burst and one request, however many connections it opens; other
//! requests (metadata, re-authentication) are not held, so a throttled session still renews.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// The longest `throttle_time_ms` a client is told per request, as Kafka bounds it by its
/// quota window. A project many connections deep in deficit may wait longer before its next
/// request is read; that wait is its own and never another project's.
pub const MAX_THROTTLE: Duration = Duration::from_secs(5);

/// Default decompressed bytes per second per project and gateway task.
pub const DEFAULT_BYTES_PER_SEC: u64 = 16 * 1024 * 1024;
/// Default records per second per project and gateway task.
pub const DEFAULT_RECORDS_PER_SEC: u64 = 50_000;

const SHARDS: usize = 16;
/// Buckets kept per shard; past it, buckets that have refilled completely (equal to no bucket
/// at all) are forgotten first.
const BUCKETS_PER_SHARD: usize = 8_192;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    at: Instant,
    bytes: f64,
    records: f64,
}

/// A project's turn to have a Produce request read: held from before the request is read
/// until it is charged in full, so the next one sees its whole cost.
pub type Turn = tokio::sync::OwnedMutexGuard<()>;

/// One lock per project with a request waiting or being read; forgotten with its last holder.
type Turns = HashMap<String, Weak<tokio::sync::Mutex<()>>>;

/// The buckets of every project; a rate of 0 disables that bucket.
pub struct ProduceQuota {
    bytes_per_sec: u64,
    records_per_sec: u64,
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
    turns: Vec<Mutex<Turns>>,
    hasher: RandomState,
}

impl ProduceQuota {
    pub fn new(bytes_per_sec: u64, records_per_sec: u64) -> Self {
        ProduceQuota {
            bytes_per_sec,
            records_per_sec,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            turns: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Whether any rate is set.
    pub fn is_on(&self) -> bool {
        self.bytes_per_sec > 0 || self.records_per_sec > 0
    }

    /// Charges `bytes` (decompressed) and `records` to `project_id` and returns how long the
    /// client must wait.
    pub fn charge(&self, project_id: &str, bytes: usize, records: usize) -> Duration {
        self.charge_at(project_id, bytes, records, Instant::now())
    }

    fn charge_at(&self, project_id: &str, bytes: usize, records: usize, now: Instant) -> Duration {
        if self.bytes_per_sec == 0 && self.records_per_sec == 0 {
            return Duration::ZERO;
        }
        let (byte_rate, record_rate) = (self.bytes_per_sec as f64, self.records_per_sec as f64);
        let shard = &self.shards[self.hasher.hash_one(project_id) as usize % SHARDS];
        let mut buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= BUCKETS_PER_SHARD && !buckets.contains_key(project_id) {
            forget_full(&mut buckets, now, byte_rate, record_rate);
        }
        let bucket = buckets.entry(project_id.to_owned()).or_insert(Bucket {
            at: now,
            bytes: byte_rate,
            records: record_rate,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.at = now;
        let (bytes_wait, bytes_left) = take(bucket.bytes, elapsed, byte_rate, bytes as f64);
        let (records_wait, records_left) =
            take(bucket.records, elapsed, record_rate, records as f64);
        bucket.bytes = bytes_left;
        bucket.records = records_left;
        bytes_wait.max(records_wait)
    }

    /// Waits for `project_id`'s turn to have a Produce request read: after the project's
    /// request before it (on any connection) is charged in full and its deficit is paid. `None`
    /// when the quota is off.
    pub async fn turn(&self, project_id: &str) -> Option<Turn> {
        if !self.is_on() {
            return None;
        }
        let lock = {
            let shard = &self.turns[self.hasher.hash_one(project_id) as usize % SHARDS];
            let mut turns = shard.lock().unwrap_or_else(PoisonError::into_inner);
            match turns.get(project_id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    if turns.len() >= BUCKETS_PER_SHARD {
                        turns.retain(|_, lock| lock.strong_count() > 0);
                    }
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    turns.insert(project_id.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        let turn = lock.lock_owned().await;
        loop {
            let owed = self.wait_for(project_id);
            if owed.is_zero() {
                return Some(turn);
            }
            tokio::time::sleep(owed).await;
        }
    }

    /// How long until `project_id` is out of deficit.
    pub fn wait_for(&self, project_id: &str) -> Duration {
        self.wait_for_at(project_id, Instant::now())
    }

    fn wait_for_at(&self, project_id: &str, now: Instant) -> Duration {
        if !self.is_on() {
            return Duration::ZERO;
        }
        let shard = &self.shards[self.hasher.hash_one(project_id) as usize % SHARDS];
        let buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(bucket) = buckets.get(project_id) else {
            return Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        let owed = |tokens: f64, rate: f64| {
            if rate <= 0.0 || tokens + elapsed * rate >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-(tokens + elapsed * rate) / rate)
            }
        };
        owed(bucket.bytes, self.bytes_per_sec as f64)
            .max(owed(bucket.records, self.records_per_sec as f64))
    }
}

/// Refills `tokens` for `elapsed` seconds at `rate` (up to one second's worth), takes `cost`,
/// and returns the wait the deficit costs (at most [`MAX_THROTTLE`]) and the tokens left.
fn take(tokens: f64, elapsed: f64, rate: f64, cost: f64) -> (Duration, f64) {
    if rate <= 0.0 {
        return (Duration::ZERO, tokens);
    }
    let left = (tokens + elapsed * rate).min(rate) - cost;
    let wait = if left >= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(-left / rate).min(MAX_THROTTLE)
    };
    (wait, left)
}

/// Drops the buckets that would be full by now; if none would, the oldest half.
fn forget_full(
    buckets: &mut HashMap<String, Bucket>,
    now: Instant,
    byte_rate: f64,
    record_rate: f64,
) {
    let full = |b: &Bucket| {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (byte_rate <= 0.0 || b.bytes + elapsed * byte_rate >= byte_rate)
            && (record_rate <= 0.0 || b.records + elapsed * record_rate >= record_rate)
    };
    buckets.retain(|_, b| !full(b));
    if buckets.len() >= BUCKETS_PER_SHARD {
        let mut ages: Vec<Instant> = buckets.values().map(|b| b.at).collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 2];
        buckets.retain(|_, b| b.at > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn within_the_rate_nothing_waits_and_beyond_it_the_deficit_does() {
        let quota = ProduceQuota::new(1000, 0);
        let t0 = Instant::now();
        assert_eq!(quota.charge_at("a", 1000, 1, t0), Duration::ZERO);
        // 500 bytes over with nothing refilled: half a second.
        assert_eq!(quota.charge_at("a", 500, 1, t0), Duration::from_millis(500));
        // Another project is not affected.
        assert_eq!(quota.charge_at("b", 1000, 1, t0), Duration::ZERO);
        // After 1.5 s the deficit is paid and the bucket full again.
        assert_eq!(
            quota.charge_at("a", 1000, 1, t0 + Duration::from_millis(1500)),
            Duration::ZERO
        );
        assert_eq!(
            ProduceQuota::new(0, 0).charge("a", usize::MAX, usize::MAX),
            Duration::ZERO
        );
    }

    #[test]
    fn records_are_charged_on_their_own_rate() {
        let quota = ProduceQuota::new(1 << 30, 100);
        let t0 = Instant::now();
        // Tiny records: bytes are nothing, 300 records are two seconds over a rate of 100.
        assert_eq!(quota.charge_at("a", 300, 300, t0), Duration::from_secs(2));
    }

    #[test]
    fn the_told_wait_is_bounded_and_the_deficit_is_not_forgiven() {
        let quota = ProduceQuota::new(1000, 0);
        let t0 = Instant::now();
        // Eight connections each got one 10,000-byte request in before any paused.
        for _ in 0..8 {
            assert!(quota.charge_at("a", 10_000, 1, t0) <= MAX_THROTTLE);
        }
        // 79,000 bytes over a rate of 1,000/s: the project's next request is read 79 s on,
        // whichever connection sends it; the clients are told 5 s at most.
        assert_eq!(quota.wait_for_at("a", t0), Duration::from_secs(79));
        assert_eq!(
            quota.wait_for_at("a", t0 + Duration::from_secs(70)),
            Duration::from_secs(9)
        );
        assert_eq!(quota.wait_for_at("b", t0), Duration::ZERO);
        assert_eq!(
            quota.wait_for_at("a", t0 + Duration::from_secs(79)),
            Duration::ZERO
        );
        assert_eq!(
            quota.charge_at("a", 1, 1, t0 + Duration::from_secs(80)),
            Duration::ZERO
        );
        assert_eq!(ProduceQuota::new(0, 0).wait_for("a"), Duration::ZERO);
    }

    #[test]
    fn records_in_deficit_hold_the_project_too() {
        let quota = ProduceQuota::new(1 << 30, 100);
        let t0 = Instant::now();
        quota.charge_at("a", 10, 350, t0);
        assert_eq!(quota.wait_for_at("a", t0), Duration::from_millis(2500));
    }

    #[test]
    fn concurrent_charges_are_all_counted() {
        let quota = Arc::new(ProduceQuota::new(1_000_000, 0));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let quota = quota.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        quota.charge_at("a", 100, 1, t0);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        // 800,000 of the 1,000,000 burst used: exactly 200,000 left, so 300,000 more wait 0.1 s.
        assert_eq!(
            quota.charge_at("a", 300_000, 1, t0),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn many_projects_stay_bounded() {
        let quota = ProduceQuota::new(1000, 0);
        let t0 = Instant::now();
        for i in 0..(SHARDS * BUCKETS_PER_SHARD * 2) {
            quota.charge_at(
                &format!("p{i}"),
                10,
                1,
                t0 + Duration::from_millis(i as u64),
            );
        }
        let kept: usize = quota
            .shards
            .iter()
            .map(|s| s.lock().expect("lock").len())
            .sum();
        assert!(kept <= SHARDS * BUCKETS_PER_SHARD, "{kept}");
    }
}
