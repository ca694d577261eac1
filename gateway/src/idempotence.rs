//! Duplicate detection for idempotent producers: the last five batches per producer and
//! partition, as Kafka brokers keep them. A resend this instance has seen is answered with the
//! original offset and not written again; a resend that reaches another instance is written
//! again but carries the same `keen-producer` header, which ingest turns into the same keen.id.

use quick_cache::sync::Cache;
use std::collections::VecDeque;

/// Batches remembered per producer and partition (Kafka's `max.in.flight` bound for idempotence).
pub const WINDOWS: usize = 5;

/// A producer's partition, within one project and collection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProducerPartition {
    pub project_id: String,
    pub collection: String,
    pub partition: i32,
    pub producer_id: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    epoch: i16,
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

/// The remembered windows of every recent producer partition (bounded).
pub struct SequenceWindows {
    windows: Cache<ProducerPartition, VecDeque<Window>>,
}

impl Default for SequenceWindows {
    fn default() -> Self {
        SequenceWindows {
            windows: Cache::new(200_000),
        }
    }
}

impl SequenceWindows {
    /// The base offset of an identical batch already written, if this is a resend of one.
    pub fn duplicate_of(
        &self,
        key: &ProducerPartition,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
    ) -> Option<i64> {
        self.windows.get(key)?.iter().find_map(|w| {
            (w.epoch == epoch
                && w.first_sequence == first_sequence
                && w.last_sequence == last_sequence)
                .then_some(w.base_offset)
        })
    }

    /// Remembers a written batch.
    pub fn written(
        &self,
        key: ProducerPartition,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
        base_offset: i64,
    ) {
        let mut windows = self.windows.get(&key).unwrap_or_default();
        if windows.len() == WINDOWS {
            windows.pop_front();
        }
        windows.push_back(Window {
            epoch,
            first_sequence,
            last_sequence,
            base_offset,
        });
        self.windows.insert(key, windows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(partition: i32) -> ProducerPartition {
        ProducerPartition {
            project_id: "p".into(),
            collection: "c".into(),
            partition,
            producer_id: 7,
        }
    }

    #[test]
    fn the_last_five_batches_are_recognised_and_older_ones_forgotten() {
        let windows = SequenceWindows::default();
        for n in 0..6 {
            windows.written(key(0), 0, n * 10, n * 10 + 9, 1000 + i64::from(n));
        }
        assert_eq!(
            windows.duplicate_of(&key(0), 0, 0, 9),
            None,
            "sixth batch pushed out the first"
        );
        assert_eq!(windows.duplicate_of(&key(0), 0, 10, 19), Some(1001));
        assert_eq!(windows.duplicate_of(&key(0), 0, 50, 59), Some(1005));
        assert_eq!(
            windows.duplicate_of(&key(0), 1, 50, 59),
            None,
            "another epoch"
        );
        assert_eq!(
            windows.duplicate_of(&key(0), 0, 50, 58),
            None,
            "another batch shape"
        );
        assert_eq!(
            windows.duplicate_of(&key(1), 0, 50, 59),
            None,
            "another partition"
        );
    }
}
