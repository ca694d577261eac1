//! Which storage a query reads (architecture.md, Events table and Counters): the (day, shard)
//! partitions of events a window touches, and how a count without filters splits into whole
//! hours (summed from the hourly counters) and partial-hour edges (counted from events).

use super::{QueryError, Window};
use keen_shared::storage;

const HOUR_MS: i64 = 3_600_000;

/// Every (day, shard) partition of the Events table that `window` touches, for the days in
/// `days_with_data` only (`yyyy-mm-dd`, as the counters record them; any order, duplicates
/// ignored), oldest day first and shards in order. Days are UTC days, as
/// [`storage::day_of`] files events. `shards` of 0 counts as 1, as in
/// [`storage::EventLayout::new`].
///
/// More than `bound` partitions is a `QueryTooLargeError` naming the count and how to narrow the
/// query, so a huge query fails fast instead of timing out (product.md §9).
pub fn plan_reads(
    window: Window,
    days_with_data: &[String],
    shards: u16,
    bound: usize,
) -> Result<Vec<(String, u16)>, QueryError> {
    if window.is_empty() {
        return Ok(Vec::new());
    }
    let shards = shards.max(1);
    let first = storage::day_of(window.start_ms);
    let last = storage::day_of(window.end_ms - 1);
    let mut days: Vec<&String> = days_with_data
        .iter()
        .filter(|day| first.as_str() <= day.as_str() && day.as_str() <= last.as_str())
        .collect();
    days.sort();
    days.dedup();
    let partitions = days.len().saturating_mul(usize::from(shards));
    if partitions > bound {
        let max_days = bound / usize::from(shards);
        return Err(QueryError::QueryTooLarge(format!(
            "this query would read {partitions} partitions ({} days holding data × {shards} \
             shards), more than the limit of {bound}; use a shorter timeframe, covering at most \
             {max_days} days with data",
            days.len()
        )));
    }
    Ok(days
        .into_iter()
        .flat_map(|day| (0..shards).map(move |shard| (day.clone(), shard)))
        .collect())
}

/// A count without filters, split: the whole UTC hours inside the window come from the hourly
/// counters, the rest (at most one partial hour at each end) from reading events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSplit {
    /// The whole hours, aligned on UTC hours; `None` when the window holds no whole hour.
    pub full_hours: Option<Window>,
    /// The parts of the window outside `full_hours`, in time order: none, one or two windows,
    /// each shorter than an hour (or the whole window when it holds no whole hour).
    pub edges: Vec<Window>,
}

impl CounterSplit {
    /// The first and last counter hour keys (`yyyy-mm-ddThh`, as [`storage::hour_of`] writes
    /// them), inclusive: a `BETWEEN` over the counters partition. All time is one range, not
    /// 87,600 keys a decade.
    pub fn hour_key_range(&self) -> Option<(String, String)> {
        self.full_hours.map(|hours| {
            (
                storage::hour_of(hours.start_ms),
                storage::hour_of(hours.end_ms - HOUR_MS),
            )
        })
    }

    /// Whether a counter hour key (`yyyy-mm-ddThh`) lies in `full_hours`: the fixed-width keys
    /// sort as the hours do.
    pub fn covers_hour(&self, hour: &str) -> bool {
        self.hour_key_range()
            .is_some_and(|(first, last)| first.as_str() <= hour && hour <= last.as_str())
    }

    /// Every counter hour key in `full_hours`, oldest first (lazily: there may be many).
    pub fn hour_keys(&self) -> impl Iterator<Item = String> + '_ {
        let (start, end) = self
            .full_hours
            .map_or((0, 0), |hours| (hours.start_ms, hours.end_ms));
        (0..(end - start) / HOUR_MS).map(move |i| storage::hour_of(start + i * HOUR_MS))
    }
}

/// Splits a window for counting (see [`CounterSplit`]). Counter hours are UTC hours, so a
/// relative timeframe in a zone whose offset is not a whole number of hours (+05:30) or an
/// absolute one with minutes leaves partial-hour edges.
pub fn split_for_counters(window: Window) -> CounterSplit {
    if window.is_empty() {
        return CounterSplit {
            full_hours: None,
            edges: Vec::new(),
        };
    }
    let first_whole = window
        .start_ms
        .div_euclid(HOUR_MS)
        .saturating_add(i64::from(window.start_ms.rem_euclid(HOUR_MS) != 0))
        .saturating_mul(HOUR_MS);
    let end_whole = window.end_ms.div_euclid(HOUR_MS).saturating_mul(HOUR_MS);
    if first_whole >= end_whole {
        return CounterSplit {
            full_hours: None,
            edges: vec![window],
        };
    }
    let edges = [
        Window::new(window.start_ms, first_whole),
        Window::new(end_whole, window.end_ms),
    ]
    .into_iter()
    .filter(|edge| !edge.is_empty())
    .collect();
    CounterSplit {
        full_hours: Some(Window::new(first_whole, end_whole)),
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::testing::window;
    use proptest::prelude::*;

    fn days(list: &[&str]) -> Vec<String> {
        list.iter().map(|d| (*d).to_owned()).collect()
    }

    #[test]
    fn reads_cover_only_touched_days_with_data() {
        let data = days(&[
            "2024-03-10",
            "2024-03-07",
            "2024-03-08",
            "2024-03-08",
            "2024-03-01",
        ]);
        let plan = plan_reads(
            window("2024-03-07T12:00:00Z", "2024-03-09T00:00:00Z"),
            &data,
            2,
            100,
        )
        .expect("within bound");
        assert_eq!(
            plan,
            vec![
                ("2024-03-07".to_owned(), 0),
                ("2024-03-07".to_owned(), 1),
                ("2024-03-08".to_owned(), 0),
                ("2024-03-08".to_owned(), 1),
            ]
        );
        // The end is exclusive: a window ending one millisecond into the 9th touches it.
        let plan = plan_reads(
            window("2024-03-08T23:00:00Z", "2024-03-10T00:00:00.001Z"),
            &data,
            1,
            100,
        )
        .expect("within bound");
        assert_eq!(
            plan,
            vec![("2024-03-08".to_owned(), 0), ("2024-03-10".to_owned(), 0)]
        );
        assert_eq!(plan_reads(Window::new(5, 5), &data, 16, 0), Ok(vec![]));
        assert_eq!(plan_reads(Window::ALL_TIME, &[], 16, 0), Ok(vec![]));
        assert_eq!(
            plan_reads(Window::ALL_TIME, &days(&["2024-03-01"]), 0, 1),
            Ok(vec![("2024-03-01".to_owned(), 0)])
        );
    }

    #[test]
    fn too_many_partitions_is_a_400_saying_how_to_narrow() {
        let data: Vec<String> = (1..=31).map(|d| format!("2024-01-{d:02}")).collect();
        assert_eq!(
            plan_reads(Window::ALL_TIME, &data, 16, 31 * 16).map(|p| p.len()),
            Ok(31 * 16)
        );
        let error = plan_reads(Window::ALL_TIME, &data, 16, 31 * 16 - 1).expect_err("too large");
        assert_eq!(error.error_code(), "QueryTooLargeError");
        assert_eq!(error.status(), 400);
        assert!(error.message().contains("496 partitions"), "{error}");
        assert!(error.message().contains("shorter timeframe"), "{error}");
        assert!(error.message().contains("at most 30 days"), "{error}");
    }

    #[test]
    fn aligned_windows_are_all_counters() {
        let w = window("2024-03-09T10:00:00Z", "2024-03-09T13:00:00Z");
        let split = split_for_counters(w);
        assert_eq!(split.full_hours, Some(w));
        assert!(split.edges.is_empty());
        assert_eq!(
            split.hour_keys().collect::<Vec<_>>(),
            ["2024-03-09T10", "2024-03-09T11", "2024-03-09T12"]
        );
        assert_eq!(
            split.hour_key_range(),
            Some(("2024-03-09T10".to_owned(), "2024-03-09T12".to_owned()))
        );
        for (hour, covered) in [
            ("2024-03-09T09", false),
            ("2024-03-09T10", true),
            ("2024-03-09T12", true),
            ("2024-03-09T13", false),
        ] {
            assert_eq!(split.covers_hour(hour), covered, "{hour}");
        }
        let all = split_for_counters(Window::ALL_TIME);
        assert_eq!(all.full_hours, Some(Window::ALL_TIME));
        assert_eq!(
            all.hour_key_range(),
            Some(("0000-01-01T00".to_owned(), "9999-12-31T23".to_owned()))
        );
    }

    #[test]
    fn unaligned_windows_have_edges() {
        // today in +05:30.
        let split = split_for_counters(window("2024-03-09T18:30:00Z", "2024-03-10T18:30:00Z"));
        assert_eq!(
            split.full_hours,
            Some(window("2024-03-09T19:00:00Z", "2024-03-10T18:00:00Z"))
        );
        assert_eq!(
            split.edges,
            [
                window("2024-03-09T18:30:00Z", "2024-03-09T19:00:00Z"),
                window("2024-03-10T18:00:00Z", "2024-03-10T18:30:00Z"),
            ]
        );
        assert_eq!(split.hour_keys().count(), 23);
        // Only the end unaligned.
        let split = split_for_counters(window("2024-03-09T10:00:00Z", "2024-03-09T12:00:00.001Z"));
        assert_eq!(
            split.full_hours,
            Some(window("2024-03-09T10:00:00Z", "2024-03-09T12:00:00Z"))
        );
        assert_eq!(
            split.edges,
            [window("2024-03-09T12:00:00Z", "2024-03-09T12:00:00.001Z")]
        );
        // No whole hour inside: one edge, the whole window.
        for w in [
            window("2024-03-09T10:15:00Z", "2024-03-09T10:45:00Z"),
            window("2024-03-09T10:15:00Z", "2024-03-09T11:14:00Z"),
        ] {
            let split = split_for_counters(w);
            assert_eq!(split.full_hours, None);
            assert_eq!(split.edges, [w]);
            assert_eq!(split.hour_key_range(), None);
            assert_eq!(split.hour_keys().count(), 0);
            assert!(!split.covers_hour("2024-03-09T10"));
        }
        // Before 1970 the hours still align.
        let split = split_for_counters(window("1969-12-31T22:30:00Z", "1970-01-01T00:30:00Z"));
        assert_eq!(
            split.full_hours,
            Some(window("1969-12-31T23:00:00Z", "1970-01-01T00:00:00Z"))
        );
        assert_eq!(split.edges.len(), 2);
        assert_eq!(
            split_for_counters(Window::new(7, 7)),
            CounterSplit {
                full_hours: None,
                edges: vec![]
            }
        );
    }

    proptest! {
        /// Whole hours and edges tile the window exactly, in order, with aligned hours and
        /// edges shorter than an hour whenever there are whole hours.
        #[test]
        fn counter_split_tiles_the_window(
            start in -100_000_000_000i64..4_000_000_000_000,
            length in 1i64..400_000_000,
        ) {
            let w = Window::new(start, start + length);
            let split = split_for_counters(w);
            let mut pieces: Vec<Window> = split.edges.clone();
            if let Some(hours) = split.full_hours {
                prop_assert_eq!(hours.start_ms.rem_euclid(HOUR_MS), 0);
                prop_assert_eq!(hours.end_ms.rem_euclid(HOUR_MS), 0);
                prop_assert!(!hours.is_empty());
                prop_assert!(split.edges.iter().all(|e| e.duration_ms() < HOUR_MS));
                prop_assert_eq!(split.hour_keys().count() as i64, hours.duration_ms() / HOUR_MS);
                pieces.push(hours);
            }
            pieces.sort_by_key(|p| p.start_ms);
            prop_assert!(pieces.iter().all(|p| !p.is_empty()));
            prop_assert_eq!(pieces.first().map(|p| p.start_ms), Some(w.start_ms));
            prop_assert_eq!(pieces.last().map(|p| p.end_ms), Some(w.end_ms));
            prop_assert!(pieces.windows(2).all(|pair| pair[0].end_ms == pair[1].start_ms));
            let covered: i64 = pieces.iter().map(Window::duration_ms).sum();
            prop_assert_eq!(covered, w.duration_ms());
        }
    }
}
