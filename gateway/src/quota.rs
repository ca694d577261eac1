//! Per-project produce quota: a token bucket of bytes per second, answered like Kafka's own
//! quotas (KIP-219): the response carries `throttle_time_ms` and the gateway reads nothing more
//! from that connection until the time has passed, so one tenant cannot starve the others.

use quick_cache::sync::Cache;
use std::time::{Duration, Instant};

/// Byte buckets per project; a rate of 0 disables the quota.
pub struct ProduceQuota {
    bytes_per_sec: u64,
    buckets: Cache<String, (Instant, f64)>,
}

impl ProduceQuota {
    pub fn new(bytes_per_sec: u64) -> Self {
        ProduceQuota {
            bytes_per_sec,
            buckets: Cache::new(100_000),
        }
    }

    /// Charges `bytes` to `project_id` and returns how long the client must wait.
    pub fn charge(&self, project_id: &str, bytes: usize) -> Duration {
        self.charge_at(project_id, bytes, Instant::now())
    }

    fn charge_at(&self, project_id: &str, bytes: usize, now: Instant) -> Duration {
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        let rate = self.bytes_per_sec as f64;
        // One second of burst; a deficit is carried over, so sustained excess is throttled to the rate.
        let (last, tokens) = self.buckets.get(project_id).unwrap_or((now, rate));
        let refilled =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * rate).min(rate);
        let left = refilled - bytes as f64;
        self.buckets.insert(project_id.to_owned(), (now, left));
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((-left / rate).min(30.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_the_rate_nothing_waits_and_beyond_it_the_deficit_does() {
        let quota = ProduceQuota::new(1000);
        let t0 = Instant::now();
        assert_eq!(quota.charge_at("a", 1000, t0), Duration::ZERO);
        // 500 bytes over with nothing refilled: half a second.
        assert_eq!(quota.charge_at("a", 500, t0), Duration::from_millis(500));
        // Another project is not affected.
        assert_eq!(quota.charge_at("b", 1000, t0), Duration::ZERO);
        // After 1.5 s the deficit is paid and the bucket full again.
        assert_eq!(
            quota.charge_at("a", 1000, t0 + Duration::from_millis(1500)),
            Duration::ZERO
        );
        assert_eq!(ProduceQuota::new(0).charge("a", usize::MAX), Duration::ZERO);
    }
}
