//! The analyses that reduce events to one value (product.md §9): `count`, `count_unique`, `sum`,
//! `average`, `minimum`, `maximum`, `median`, `percentile`, `select_unique`, each also a
//! sub-analysis of `multi_analysis`.
//!
//! Each is an [`Accumulator`] fed one event at a time as partitions stream in, so memory grows
//! with the answer, never with the events read:
//! - numeric analyses use the target property's JSON numbers only; other values (strings, even
//!   numeric-looking ones, booleans, lists) and events without the property are skipped, as
//!   Keen's reference says ("non-numeric values are ignored");
//! - over no numeric value `sum` is `0`, and `average`, `minimum`, `maximum`, `median` and
//!   `percentile` are `null`;
//! - `median` and `percentile` are exact: a count per distinct number is kept, and the answer is
//!   the nearest-rank value `sorted[ceil(p / 100 × n) - 1]` (no interpolation: Keen's live API
//!   answers 10 for the median of [10, 20], and 20 for its 100th percentile). `median` is the
//!   50th percentile. Memory is one entry per distinct number, charged to the [`Budget`];
//! - `count_unique` and `select_unique` hold each distinct value (a missing or `null` property
//!   is not a value), charged to the [`Budget`]; `select_unique` answers them in
//!   [`ValueKey`] order.

use super::QueryError;
use super::filter::lookup;
use super::value_key::{ValueKey, number};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The single-value analyses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Count,
    CountUnique,
    Sum,
    Average,
    Minimum,
    Maximum,
    Median,
    Percentile,
    SelectUnique,
}

impl MetricKind {
    /// Every kind, in the order the API documents them.
    pub const ALL: [MetricKind; 9] = [
        MetricKind::Count,
        MetricKind::CountUnique,
        MetricKind::Sum,
        MetricKind::Average,
        MetricKind::Minimum,
        MetricKind::Maximum,
        MetricKind::Median,
        MetricKind::Percentile,
        MetricKind::SelectUnique,
    ];

    /// The analysis name (`count_unique`).
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricKind::Count => "count",
            MetricKind::CountUnique => "count_unique",
            MetricKind::Sum => "sum",
            MetricKind::Average => "average",
            MetricKind::Minimum => "minimum",
            MetricKind::Maximum => "maximum",
            MetricKind::Median => "median",
            MetricKind::Percentile => "percentile",
            MetricKind::SelectUnique => "select_unique",
        }
    }

    /// Parses an analysis name.
    pub fn parse(name: &str) -> Option<MetricKind> {
        MetricKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// Whether the analysis reads a `target_property`.
    pub const fn needs_target(self) -> bool {
        !matches!(self, MetricKind::Count)
    }
}

/// One analysis with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub kind: MetricKind,
    /// The dotted path read; `None` for `count` only.
    pub target_property: Option<String>,
    /// `percentile` only: hundredths of a percent, 0 to 10,000 (`99.99` is 9,999).
    pub percentile_hundredths: Option<u32>,
}

impl Metric {
    /// A `count`.
    pub const COUNT: Metric = Metric {
        kind: MetricKind::Count,
        target_property: None,
        percentile_hundredths: None,
    };

    /// Validates an analysis and its parameters; `at` names where it came from in errors
    /// (`analyses.total`, or empty for the query itself).
    pub fn new(
        kind: MetricKind,
        target_property: Option<&str>,
        percentile: Option<&str>,
        at: &str,
    ) -> Result<Metric, QueryError> {
        let name = kind.as_str();
        let target_property = match (kind.needs_target(), target_property) {
            (true, None) => {
                return Err(QueryError::MissingRequiredProperty(format!(
                    "{at}target_property is required by {name}: name the property to analyse, \
                     e.g. target_property=price"
                )));
            }
            (false, Some(_)) => {
                return Err(QueryError::InvalidParameter(format!(
                    "{at}target_property does not apply to {name}; remove it (count counts \
                     events; count_unique counts a property's distinct values)"
                )));
            }
            (_, Some(path)) if path.is_empty() || path.split('.').any(str::is_empty) => {
                return Err(QueryError::InvalidParameter(format!(
                    "{at}target_property {path:?} is not a dotted property path such as \
                     user.age"
                )));
            }
            (_, path) => path.map(str::to_owned),
        };
        let percentile_hundredths = match (kind, percentile) {
            (MetricKind::Percentile, None) => {
                return Err(QueryError::MissingRequiredProperty(format!(
                    "{at}percentile is required by the percentile analysis: give a number from \
                     0 to 100, e.g. percentile=99.9"
                )));
            }
            (MetricKind::Percentile, Some(text)) => Some(parse_percentile(text, at)?),
            (_, Some(_)) => {
                return Err(QueryError::InvalidParameter(format!(
                    "{at}percentile applies to the percentile analysis only; remove it from \
                     {name}"
                )));
            }
            (_, None) => None,
        };
        Ok(Metric {
            kind,
            target_property,
            percentile_hundredths,
        })
    }

    /// The quantile this metric answers, in hundredths of a percent.
    fn quantile(&self) -> Option<u32> {
        match self.kind {
            MetricKind::Median => Some(5_000),
            MetricKind::Percentile => self.percentile_hundredths,
            _ => None,
        }
    }
}

/// `percentile`: a number from 0 to 100, kept to two decimals (Keen's precision: 99.99).
fn parse_percentile(text: &str, at: &str) -> Result<u32, QueryError> {
    let bad = || {
        QueryError::InvalidParameter(format!(
            "{at}percentile {text:?} is not a number from 0 to 100; give e.g. 50 or 99.99"
        ))
    };
    let trimmed = text.trim().trim_matches('"');
    let value: f64 = trimmed.parse().map_err(|_| bad())?;
    if !(0.0..=100.0).contains(&value) {
        return Err(bad());
    }
    // In range, so the product fits; rounding to hundredths is the stated precision.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((value * 100.0).round() as u32)
}

/// What a query may hold in memory while it aggregates: distinct values (count_unique,
/// select_unique, median and percentile) and groups, counted and sized. Past either bound the
/// query stops with a 400 saying how to narrow it, rather than exhausting the function's memory.
#[derive(Debug, Clone)]
pub struct Budget {
    entries: usize,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

/// Distinct values and groups one query may hold.
pub const MAX_DISTINCT_VALUES: usize = 1_000_000;
/// Bytes those values may take (the query function has 1 GB).
pub const MAX_DISTINCT_BYTES: usize = 128 << 20;

impl Default for Budget {
    fn default() -> Self {
        Budget::new(MAX_DISTINCT_VALUES, MAX_DISTINCT_BYTES)
    }
}

impl Budget {
    /// A budget of `max_entries` values taking at most `max_bytes`.
    pub const fn new(max_entries: usize, max_bytes: usize) -> Budget {
        Budget {
            entries: 0,
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Charges one more value of `bytes`.
    pub fn charge(&mut self, bytes: usize) -> Result<(), QueryError> {
        self.entries += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.entries > self.max_entries || self.bytes > self.max_bytes {
            return Err(QueryError::QueryTooLarge(format!(
                "this query holds more than {} distinct values or groups ({} MB) in memory \
                 (count_unique, select_unique, median, percentile, group_by and funnel actors \
                 keep each distinct value): use a shorter timeframe, add filters, or group by a \
                 property with fewer values",
                self.max_entries,
                self.max_bytes >> 20
            )));
        }
        Ok(())
    }
}

/// A total order on finite numbers, for the median's counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finite(f64);

impl Eq for Finite {}

impl PartialOrd for Finite {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Finite {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The running state of one metric.
#[derive(Debug, Clone)]
pub enum Accumulator {
    Count(u64),
    Unique(BTreeSet<ValueKey>),
    /// Whole numbers summed exactly; fractions apart.
    Sum {
        whole: i128,
        fraction: f64,
        n: u64,
    },
    Extreme(Option<f64>),
    /// Count per distinct number.
    Quantile(BTreeMap<Finite, u64>),
}

impl Accumulator {
    /// The empty state of `metric`.
    pub fn new(metric: &Metric) -> Accumulator {
        match metric.kind {
            MetricKind::Count => Accumulator::Count(0),
            MetricKind::CountUnique | MetricKind::SelectUnique => {
                Accumulator::Unique(BTreeSet::new())
            }
            MetricKind::Sum | MetricKind::Average => Accumulator::Sum {
                whole: 0,
                fraction: 0.0,
                n: 0,
            },
            MetricKind::Minimum | MetricKind::Maximum => Accumulator::Extreme(None),
            MetricKind::Median | MetricKind::Percentile => Accumulator::Quantile(BTreeMap::new()),
        }
    }

    /// Feeds one matching event.
    pub fn add(
        &mut self,
        metric: &Metric,
        event: &Value,
        budget: &mut Budget,
    ) -> Result<(), QueryError> {
        let target = metric
            .target_property
            .as_deref()
            .and_then(|path| lookup(event, path));
        match self {
            Accumulator::Count(n) => *n += 1,
            Accumulator::Unique(values) => {
                if let Some(value) = target.filter(|v| !v.is_null()) {
                    let key = ValueKey::of(Some(value));
                    if !values.contains(&key) {
                        budget.charge(key.size_bytes())?;
                        values.insert(key);
                    }
                }
            }
            Accumulator::Sum { whole, fraction, n } => {
                if let Some(Value::Number(number)) = target {
                    *n += 1;
                    match number.as_i64() {
                        Some(i) => *whole += i128::from(i),
                        None => *fraction += number.as_f64().unwrap_or(0.0),
                    }
                }
            }
            Accumulator::Extreme(best) => {
                if let Some(x) = target.and_then(Value::as_f64) {
                    let better = match (metric.kind, *best) {
                        (_, None) => true,
                        (MetricKind::Minimum, Some(b)) => x < b,
                        (_, Some(b)) => x > b,
                    };
                    if better {
                        *best = Some(x);
                    }
                }
            }
            Accumulator::Quantile(counts) => {
                if let Some(x) = target.and_then(Value::as_f64) {
                    let slot = counts.entry(Finite(x)).or_insert(0);
                    if *slot == 0 {
                        budget.charge(std::mem::size_of::<(Finite, u64)>() * 2)?;
                    }
                    *slot += 1;
                }
            }
        }
        Ok(())
    }

    /// Adds `n` events to a count (from the hourly counters).
    pub fn add_count(&mut self, n: u64) {
        if let Accumulator::Count(count) = self {
            *count += n;
        }
    }

    /// The answer.
    pub fn result(&self, metric: &Metric) -> Value {
        match self {
            Accumulator::Count(n) => Value::from(*n),
            Accumulator::Unique(values) => match metric.kind {
                MetricKind::SelectUnique => values.iter().map(ValueKey::to_json).collect(),
                _ => Value::from(values.len()),
            },
            Accumulator::Sum { whole, fraction, n } => {
                #[allow(clippy::cast_precision_loss)]
                let total = *whole as f64 + fraction;
                match metric.kind {
                    MetricKind::Average if *n == 0 => Value::Null,
                    #[allow(clippy::cast_precision_loss)]
                    MetricKind::Average => number(total / *n as f64),
                    _ => number(total),
                }
            }
            Accumulator::Extreme(best) => best.map_or(Value::Null, number),
            Accumulator::Quantile(counts) => {
                let n: u64 = counts.values().sum();
                match metric.quantile() {
                    Some(hundredths) if n > 0 => {
                        let rank = nearest_rank(hundredths, n);
                        let mut seen = 0;
                        counts
                            .iter()
                            .find(|(_, count)| {
                                seen += **count;
                                seen >= rank
                            })
                            .map_or(Value::Null, |(x, _)| number(x.0))
                    }
                    _ => Value::Null,
                }
            }
        }
    }
}

/// `ceil(p / 100 × n)`, at least 1, in exact integer arithmetic (`p` in hundredths).
fn nearest_rank(hundredths: u32, n: u64) -> u64 {
    let product = u128::from(hundredths) * u128::from(n);
    let rank = product.div_ceil(10_000);
    u64::try_from(rank).unwrap_or(n).clamp(1, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metric(kind: MetricKind, percentile: Option<&str>) -> Metric {
        let target = kind.needs_target().then_some("price");
        Metric::new(kind, target, percentile, "").expect("valid metric")
    }

    fn run(metric: &Metric, events: &[Value]) -> Value {
        let mut budget = Budget::default();
        let mut accumulator = Accumulator::new(metric);
        for event in events {
            accumulator
                .add(metric, event, &mut budget)
                .expect("within budget");
        }
        accumulator.result(metric)
    }

    fn prices(values: &[Value]) -> Vec<Value> {
        values.iter().map(|v| json!({"price": v})).collect()
    }

    #[test]
    fn keen_live_answers_for_ten_and_twenty() {
        // The Ruby SDK's live integration test: prices 10 and 20.
        let events = prices(&[json!(10), json!(20)]);
        let cases = [
            (MetricKind::Count, None, json!(2)),
            (MetricKind::CountUnique, None, json!(2)),
            (MetricKind::Sum, None, json!(30)),
            (MetricKind::Average, None, json!(15)),
            (MetricKind::Minimum, None, json!(10)),
            (MetricKind::Maximum, None, json!(20)),
            (MetricKind::Median, None, json!(10)),
            (MetricKind::Percentile, Some("50"), json!(10)),
            (MetricKind::Percentile, Some("100"), json!(20)),
            (MetricKind::SelectUnique, None, json!([10, 20])),
        ];
        for (kind, percentile, expected) in cases {
            assert_eq!(
                run(&metric(kind, percentile), &events),
                expected,
                "{kind:?} {percentile:?}"
            );
        }
    }

    #[test]
    fn non_numbers_and_missing_properties_are_skipped() {
        let mut events = prices(&[json!(3), json!("7"), json!(true), json!([1]), json!(1.5)]);
        events.push(json!({"other": 1}));
        events.push(json!({"price": null}));
        assert_eq!(run(&metric(MetricKind::Sum, None), &events), json!(4.5));
        assert_eq!(
            run(&metric(MetricKind::Average, None), &events),
            json!(2.25)
        );
        assert_eq!(run(&metric(MetricKind::Minimum, None), &events), json!(1.5));
        assert_eq!(run(&metric(MetricKind::Maximum, None), &events), json!(3));
        assert_eq!(run(&metric(MetricKind::Count, None), &events), json!(7));
        // Distinct values of any type count; absent and null do not.
        assert_eq!(
            run(&metric(MetricKind::CountUnique, None), &events),
            json!(5)
        );
        assert_eq!(
            run(&metric(MetricKind::SelectUnique, None), &events),
            json!([true, 1.5, 3, "7", [1]])
        );
    }

    #[test]
    fn no_values_is_zero_or_null() {
        let events = [json!({"other": 1})];
        let expected = [
            (MetricKind::Count, json!(1)),
            (MetricKind::CountUnique, json!(0)),
            (MetricKind::Sum, json!(0)),
            (MetricKind::Average, json!(null)),
            (MetricKind::Minimum, json!(null)),
            (MetricKind::Maximum, json!(null)),
            (MetricKind::Median, json!(null)),
            (MetricKind::SelectUnique, json!([])),
        ];
        for (kind, answer) in expected {
            assert_eq!(run(&metric(kind, None), &events), answer, "{kind:?}");
        }
    }

    #[test]
    fn quantiles_are_nearest_rank_without_interpolation() {
        let events = prices(&(1..=10).rev().map(|i| json!(i * 10)).collect::<Vec<_>>());
        for (p, expected) in [
            ("0", 10),
            ("10", 10),
            ("10.01", 20),
            ("25", 30),
            ("50", 50),
            ("90", 90),
            ("99.99", 100),
            ("100", 100),
        ] {
            assert_eq!(
                run(&metric(MetricKind::Percentile, Some(p)), &events),
                json!(expected),
                "p{p}"
            );
        }
        let odd = prices(&[json!(5), json!(1), json!(3)]);
        assert_eq!(run(&metric(MetricKind::Median, None), &odd), json!(3));
        // Repeated values count once each in the rank.
        let repeated = prices(&[json!(1), json!(1), json!(1), json!(9)]);
        assert_eq!(run(&metric(MetricKind::Median, None), &repeated), json!(1));
        assert_eq!(
            run(&metric(MetricKind::Percentile, Some("76")), &repeated),
            json!(9)
        );
        // The rank is exact at 99.99 of 10,000 values: the 9,999th.
        assert_eq!(nearest_rank(9_999, 10_000), 9_999);
        assert_eq!(nearest_rank(0, 7), 1);
        assert_eq!(nearest_rank(10_000, u64::MAX), u64::MAX);
    }

    #[test]
    fn sums_of_whole_numbers_are_exact() {
        let big = 9_007_199_254_740_993_i64; // 2^53 + 1: not a float.
        let events = prices(&[json!(big), json!(-big), json!(1)]);
        assert_eq!(run(&metric(MetricKind::Sum, None), &events), json!(1));
        let fractions = prices(&[json!(0.1), json!(0.2)]);
        assert_eq!(
            run(&metric(MetricKind::Sum, None), &fractions),
            json!(0.1 + 0.2)
        );
    }

    #[test]
    fn distinct_values_are_bounded() {
        let metric = metric(MetricKind::CountUnique, None);
        let mut budget = Budget::new(3, usize::MAX);
        let mut accumulator = Accumulator::new(&metric);
        for i in [1, 2, 2, 3, 1] {
            accumulator
                .add(&metric, &json!({"price": i}), &mut budget)
                .expect("three distinct");
        }
        let error = accumulator
            .add(&metric, &json!({"price": 4}), &mut budget)
            .expect_err("a fourth");
        assert_eq!(error.error_code(), "QueryTooLargeError");
        assert!(error.message().contains("shorter timeframe"), "{error}");
        let mut small = Budget::new(usize::MAX, 100);
        let mut accumulator = Accumulator::new(&metric);
        let error = accumulator
            .add(&metric, &json!({"price": "x".repeat(200)}), &mut small)
            .expect_err("too many bytes");
        assert_eq!(error.error_code(), "QueryTooLargeError");
    }

    #[test]
    fn parameters_are_checked() {
        let error = Metric::new(MetricKind::Sum, None, None, "").expect_err("no target");
        assert_eq!(error.error_code(), "MissingRequiredPropertyError");
        assert!(
            error
                .message()
                .contains("target_property is required by sum")
        );
        let error =
            Metric::new(MetricKind::Count, Some("a"), None, "analyses.n: ").expect_err("target");
        assert!(error.message().starts_with("analyses.n: target_property"));
        let error = Metric::new(MetricKind::Sum, Some("a..b"), None, "").expect_err("path");
        assert_eq!(error.error_code(), "InvalidParameterError");
        let error = Metric::new(MetricKind::Percentile, Some("a"), None, "").expect_err("no p");
        assert_eq!(error.error_code(), "MissingRequiredPropertyError");
        for bad in ["-1", "100.5", "abc", "", "NaN"] {
            let error = Metric::new(MetricKind::Percentile, Some("a"), Some(bad), "")
                .expect_err("bad percentile");
            assert!(error.message().contains("percentile"), "{bad}: {error}");
        }
        let error =
            Metric::new(MetricKind::Median, Some("a"), Some("5"), "").expect_err("percentile");
        assert!(
            error
                .message()
                .contains("percentile applies to the percentile analysis")
        );
        let p =
            Metric::new(MetricKind::Percentile, Some("a"), Some("\"99.99\""), "").expect("quoted");
        assert_eq!(p.percentile_hundredths, Some(9_999));
        assert_eq!(
            MetricKind::parse("count_unique"),
            Some(MetricKind::CountUnique)
        );
        assert_eq!(MetricKind::parse("funnel"), None);
    }
}
