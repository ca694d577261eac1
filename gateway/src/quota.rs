//! Per-project produce quota, answered like Kafka's own quotas (KIP-219): the response carries
//! `throttle_time_ms` and the gateway reads nothing more from that connection until the time
//! has passed, so one tenant cannot starve the others.
//!
//! Two token buckets per project and gateway task: decompressed bytes per second and records
//! per second (a flood of tiny records costs the backing cluster and ingest per record, not per
//! byte). Each holds one second of burst; a deficit is carried over so that sustained excess is
//! held to the rate, up to [`MAX_DEFICIT`], and one request waits at most [`MAX_THROTTLE`]. Charges
//! from concurrent connections of one project are serialised under the project's shard lock, so
//! none is lost.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The longest a client is told to wait per request: Kafka bounds a throttle by its quota
/// window too.
pub const MAX_THROTTLE: Duration = Duration::from_secs(5);
/// The most a project's deficit may reach, in seconds of its rate: requests a client pipelined
/// before its pause began are still charged (not forgiven), yet a flood stops costing its
/// project more than this much waiting once it ends.
pub const MAX_DEFICIT: Duration = Duration::from_secs(30);

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

/// The buckets of every project; a rate of 0 disables that bucket.
pub struct ProduceQuota {
    bytes_per_sec: u64,
    records_per_sec: u64,
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
    hasher: RandomState,
}

impl ProduceQuota {
    pub fn new(bytes_per_sec: u64, records_per_sec: u64) -> Self {
        ProduceQuota {
            bytes_per_sec,
            records_per_sec,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
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
}

/// Refills `tokens` for `elapsed` seconds at `rate` (up to one second's worth), takes `cost`,
/// and returns the wait the deficit costs (at most [`MAX_THROTTLE`]) and the tokens left
/// (never below [`MAX_DEFICIT`]'s worth of deficit).
fn take(tokens: f64, elapsed: f64, rate: f64, cost: f64) -> (Duration, f64) {
    if rate <= 0.0 {
        return (Duration::ZERO, tokens);
    }
    let floor = -rate * MAX_DEFICIT.as_secs_f64();
    let left = ((tokens + elapsed * rate).min(rate) - cost).max(floor);
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
    fn the_deficit_and_the_wait_are_bounded() {
        let quota = ProduceQuota::new(1000, 0);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(quota.charge_at("a", 1_000_000, 1, t0) <= MAX_THROTTLE);
        }
        // The excess is not forgiven at the first wait: still throttled after it...
        assert_eq!(quota.charge_at("a", 1, 1, t0 + MAX_THROTTLE), MAX_THROTTLE);
        // ...but out of deficit once the largest deficit has been paid, however much was sent.
        assert!(
            quota.charge_at("a", 1, 1, t0 + MAX_DEFICIT + Duration::from_millis(1))
                < Duration::from_millis(2)
        );
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
