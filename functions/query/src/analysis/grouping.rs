//! `group_by`, `order_by`, `limit` and `interval` (product.md §9): how matching events are split
//! into cells, and the shapes Keen answers them in.
//!
//! - No group_by, no interval: the metric's value (`{"result": 42}`), or for multi_analysis an
//!   object of label → value.
//! - group_by: `[{<prop>: value, …, "result": x}]`, one row per distinct combination of the
//!   properties' values (the dotted name is the row's key, as Keen writes it); an event missing a
//!   property is grouped under `null`. multi_analysis rows carry each label instead of `result`.
//!   Rows come in group-value order (the null group last, in either direction) unless `order_by`
//!   says otherwise; `limit` keeps
//!   the first N after ordering.
//! - interval: `[{"timeframe": {"start", "end"}, "value": …}]`, one per bucket in time order;
//!   with group_by each bucket's `value` is the rows above, every group seen anywhere in the
//!   timeframe appearing in every bucket (with its empty value where it had no event), and
//!   `order_by`/`limit` applying within each bucket.

use super::interval::format_instant;
use super::metric::{Accumulator, Budget, Metric};
use super::value_key::ValueKey;
use super::{QueryError, Timezone, Window, lookup};
use serde_json::{Map, Value, json};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// group_by properties at most.
pub const MAX_GROUP_BY: usize = 10;
/// order_by clauses at most.
pub const MAX_ORDER_BY: usize = 10;
/// Result rows (buckets × groups) one answer may hold: more does not fit a response.
pub const MAX_RESULT_ROWS: usize = 100_000;

/// What is computed per cell: one analysis, or multi_analysis's labelled ones.
#[derive(Debug, Clone, PartialEq)]
pub enum Metrics {
    Single(Metric),
    /// Labels in the order given.
    Multi(Vec<(String, Metric)>),
}

impl Metrics {
    fn each(&self) -> Vec<&Metric> {
        match self {
            Metrics::Single(metric) => vec![metric],
            Metrics::Multi(labelled) => labelled.iter().map(|(_, m)| m).collect(),
        }
    }

    /// The names a row's values go under (`result`, or the labels).
    fn names(&self) -> Vec<&str> {
        match self {
            Metrics::Single(_) => vec!["result"],
            Metrics::Multi(labelled) => labelled.iter().map(|(l, _)| l.as_str()).collect(),
        }
    }
}

/// One `order_by` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    /// `result`, a multi_analysis label, or one of the group_by properties.
    pub property_name: String,
    pub descending: bool,
}

/// Parses `group_by`: one property (`city`, or JSON `"city"`) or a JSON array of them.
pub fn parse_group_by(text: &str) -> Result<Vec<String>, QueryError> {
    let bad = |what: String| {
        QueryError::InvalidParameter(format!(
            "group_by {what}; give a property (group_by=user.city) or a JSON array of at most \
             {MAX_GROUP_BY} (group_by=[\"user.city\", \"plan\"])"
        ))
    };
    let trimmed = text.trim();
    let names: Vec<Value> = match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Array(items)) => items,
        Ok(Value::String(name)) => vec![Value::String(name)],
        Ok(Value::Object(_)) => {
            return Err(bad(
                "is an object (bucket and range grouping are not supported)".into(),
            ));
        }
        // A bare name is not JSON (or is a number-like name such as 2024): the name itself.
        _ => vec![Value::String(trimmed.to_owned())],
    };
    if names.is_empty() || names.len() > MAX_GROUP_BY {
        return Err(bad(format!("holds {} properties", names.len())));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for (index, name) in names.into_iter().enumerate() {
        let Value::String(name) = name else {
            return Err(bad(format!("[{index}] is not a string")));
        };
        if name.is_empty() || name.split('.').any(str::is_empty) {
            return Err(bad(format!("names {name:?}, which is not a dotted path")));
        }
        if out.contains(&name) {
            return Err(bad(format!("names {name:?} twice")));
        }
        out.push(name);
    }
    Ok(out)
}

/// Parses `order_by`: `{"property_name": p, "direction": "ASC"|"DESC"}`, a JSON array of them,
/// or a bare property name (ascending). The direction's case is not significant.
pub fn parse_order_by(text: &str) -> Result<Vec<OrderBy>, QueryError> {
    let bad = |what: String| {
        QueryError::InvalidParameter(format!(
            "order_by {what}; give {{\"property_name\": \"result\", \"direction\": \"DESC\"}} \
             or a JSON array of such objects"
        ))
    };
    let trimmed = text.trim();
    let clauses = match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Array(items)) => items,
        Ok(value @ (Value::Object(_) | Value::String(_))) => vec![value],
        Ok(_) => return Err(bad("is neither an object nor an array".into())),
        Err(_) => vec![Value::String(trimmed.to_owned())],
    };
    if clauses.is_empty() || clauses.len() > MAX_ORDER_BY {
        return Err(bad(format!(
            "holds {} clauses (1 to {MAX_ORDER_BY})",
            clauses.len()
        )));
    }
    clauses
        .iter()
        .enumerate()
        .map(|(index, clause)| match clause {
            Value::String(name) if !name.is_empty() => Ok(OrderBy {
                property_name: name.clone(),
                descending: false,
            }),
            Value::Object(fields) => {
                if let Some(unknown) = fields
                    .keys()
                    .find(|k| !matches!(k.as_str(), "property_name" | "direction"))
                {
                    return Err(bad(format!("[{index}] has an unknown field {unknown:?}")));
                }
                let Some(Value::String(name)) = fields.get("property_name") else {
                    return Err(bad(format!("[{index}] has no property_name string")));
                };
                let descending = match fields.get("direction") {
                    None | Some(Value::Null) => false,
                    Some(Value::String(d)) if d.eq_ignore_ascii_case("asc") => false,
                    Some(Value::String(d)) if d.eq_ignore_ascii_case("desc") => true,
                    Some(other) => {
                        return Err(bad(format!(
                            "[{index}] has direction {other}, which is neither ASC nor DESC"
                        )));
                    }
                };
                Ok(OrderBy {
                    property_name: name.clone(),
                    descending,
                })
            }
            _ => Err(bad(format!("[{index}] is not an object"))),
        })
        .collect()
}

/// Checks that `order_by` and `limit` come with a group_by and name what a row holds.
pub fn check_ordering(
    order_by: &[OrderBy],
    limit: Option<usize>,
    group_by: &[String],
    metrics: &Metrics,
) -> Result<(), QueryError> {
    if !order_by.is_empty() && group_by.is_empty() {
        return Err(QueryError::InvalidParameter(
            "order_by orders group_by rows: add a group_by, or remove order_by".into(),
        ));
    }
    if limit.is_some() && order_by.is_empty() {
        return Err(QueryError::InvalidParameter(
            "limit keeps the first rows of an order_by: add an order_by (and a group_by), or \
             remove limit"
                .into(),
        ));
    }
    let names = metrics.names();
    for clause in order_by {
        let name = clause.property_name.as_str();
        if !names.contains(&name) && !group_by.iter().any(|g| g == name) {
            return Err(QueryError::InvalidParameter(format!(
                "order_by names {name:?}, which is neither {} nor a group_by property ({})",
                names.join(" nor "),
                group_by.join(", ")
            )));
        }
    }
    Ok(())
}

/// Parses `limit`: a whole number from 1 to [`MAX_RESULT_ROWS`].
pub fn parse_limit(text: &str) -> Result<usize, QueryError> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_RESULT_ROWS).contains(n))
        .ok_or_else(|| {
            QueryError::InvalidParameter(format!(
                "limit {text:?} is not a whole number from 1 to {MAX_RESULT_ROWS}"
            ))
        })
}

/// A group's key: the values of the group_by properties, in order.
type GroupKey = Vec<ValueKey>;

/// Matching events aggregated into cells of (bucket, group).
#[derive(Debug)]
pub struct Aggregation {
    metrics: Metrics,
    /// The metrics in cell order, kept apart so that feeding an event allocates nothing.
    flat: Vec<Metric>,
    group_by: Vec<String>,
    /// Start of each bucket, ascending; the last ends at `end_ms`.
    buckets: Vec<Window>,
    interval: bool,
    cells: Vec<BTreeMap<GroupKey, Vec<Accumulator>>>,
    groups: BTreeSet<GroupKey>,
    budget: Budget,
}

impl Aggregation {
    /// Empty cells over `buckets` (the interval's, or the one window without an interval).
    pub fn new(
        metrics: Metrics,
        group_by: Vec<String>,
        buckets: Vec<Window>,
        interval: bool,
        budget: Budget,
    ) -> Aggregation {
        let mut cells = vec![BTreeMap::new(); buckets.len()];
        if group_by.is_empty() {
            let empty: Vec<Accumulator> =
                metrics.each().into_iter().map(Accumulator::new).collect();
            for cell in &mut cells {
                cell.insert(Vec::new(), empty.clone());
            }
        }
        Aggregation {
            flat: metrics.each().into_iter().cloned().collect(),
            metrics,
            group_by,
            buckets,
            interval,
            cells,
            groups: BTreeSet::new(),
            budget,
        }
    }

    /// The buckets.
    pub fn buckets(&self) -> &[Window] {
        &self.buckets
    }

    /// The bucket holding `ms`, if any.
    pub fn bucket_of(&self, ms: i64) -> Option<usize> {
        let after = self.buckets.partition_point(|b| b.start_ms <= ms);
        after
            .checked_sub(1)
            .filter(|&i| self.buckets[i].contains(ms))
    }

    /// Feeds one matching event stored at `timestamp_ms`; outside every bucket it is ignored.
    pub fn add(&mut self, timestamp_ms: i64, event: &Value) -> Result<(), QueryError> {
        let Some(bucket) = self.bucket_of(timestamp_ms) else {
            return Ok(());
        };
        let key: GroupKey = self
            .group_by
            .iter()
            .map(|path| ValueKey::of(lookup(event, path)))
            .collect();
        if !self.group_by.is_empty() && !self.groups.contains(&key) {
            let rows = (self.groups.len() + 1).saturating_mul(self.buckets.len());
            if rows > MAX_RESULT_ROWS {
                return Err(QueryError::QueryTooLarge(format!(
                    "this group_by makes more than {MAX_RESULT_ROWS} result rows (groups × \
                     interval buckets): group by a property with fewer values, add filters, \
                     or use a coarser interval or a shorter timeframe"
                )));
            }
            self.budget
                .charge(key.iter().map(ValueKey::size_bytes).sum())?;
            self.groups.insert(key.clone());
        }
        let metrics = &self.flat;
        let cell = self.cells[bucket]
            .entry(key)
            .or_insert_with(|| metrics.iter().map(Accumulator::new).collect());
        for (accumulator, metric) in cell.iter_mut().zip(metrics) {
            accumulator.add(metric, event, &mut self.budget)?;
        }
        Ok(())
    }

    /// Adds `n` events to a bucket's count (from the hourly counters: no group_by).
    pub fn add_count(&mut self, bucket: usize, n: u64) {
        if let Some(cell) = self
            .cells
            .get_mut(bucket)
            .and_then(|c| c.get_mut(&Vec::new()))
        {
            for accumulator in cell {
                accumulator.add_count(n);
            }
        }
    }

    /// The `result` of the answer (shapes in the module docs).
    pub fn render(self, order_by: &[OrderBy], limit: Option<usize>, tz: &Timezone) -> Value {
        let Aggregation {
            metrics,
            group_by,
            buckets,
            interval,
            cells,
            groups,
            ..
        } = self;
        let each = metrics.each();
        let names = metrics.names();
        let values = |accumulators: &[Accumulator]| -> Vec<Value> {
            accumulators
                .iter()
                .zip(&each)
                .map(|(a, m)| a.result(m))
                .collect()
        };
        let empty: Vec<Accumulator> = each.iter().map(|m| Accumulator::new(m)).collect();
        let bucket_value = |cell: &BTreeMap<GroupKey, Vec<Accumulator>>| -> Value {
            if group_by.is_empty() {
                let answers = values(cell.get(&Vec::new()).unwrap_or(&empty));
                return shape(&metrics, &names, answers);
            }
            let mut rows: Vec<(&GroupKey, Vec<Value>)> = groups
                .iter()
                .map(|key| (key, values(cell.get(key).unwrap_or(&empty))))
                .collect();
            sort_rows(&mut rows, order_by, &group_by, &names);
            if let Some(limit) = limit {
                rows.truncate(limit);
            }
            Value::Array(
                rows.into_iter()
                    .map(|(key, answers)| {
                        let mut row = Map::new();
                        for (path, value) in group_by.iter().zip(key) {
                            row.insert(path.clone(), value.to_json());
                        }
                        for (name, answer) in names.iter().zip(answers) {
                            row.insert((*name).to_owned(), answer);
                        }
                        Value::Object(row)
                    })
                    .collect(),
            )
        };
        if !interval {
            return cells.first().map_or(Value::Null, bucket_value);
        }
        Value::Array(
            buckets
                .iter()
                .zip(&cells)
                .map(|(bucket, cell)| {
                    json!({
                        "value": bucket_value(cell),
                        "timeframe": {
                            "start": format_instant(bucket.start_ms, tz),
                            "end": format_instant(bucket.end_ms, tz),
                        },
                    })
                })
                .collect(),
        )
    }
}

/// One value, or multi_analysis's labels → values.
fn shape(metrics: &Metrics, names: &[&str], answers: Vec<Value>) -> Value {
    match metrics {
        Metrics::Single(_) => answers.into_iter().next().unwrap_or(Value::Null),
        Metrics::Multi(_) => {
            Value::Object(names.iter().map(|n| (*n).to_owned()).zip(answers).collect())
        }
    }
}

/// Orders rows by `order_by`, then by group values (nulls last) so the order is total.
fn sort_rows(
    rows: &mut [(&GroupKey, Vec<Value>)],
    order_by: &[OrderBy],
    group_by: &[String],
    names: &[&str],
) {
    let group_order = |a: &GroupKey, b: &GroupKey| -> Ordering {
        a.iter()
            .zip(b)
            .map(|(x, y)| nulls_last(x, y))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    };
    rows.sort_by(|(key_a, values_a), (key_b, values_b)| {
        for clause in order_by {
            let name = clause.property_name.as_str();
            let ordering = if let Some(i) = group_by.iter().position(|g| g == name) {
                // The null group stays last whichever the direction.
                let (a, b) = (&key_a[i], &key_b[i]);
                if matches!(a, ValueKey::Null) || matches!(b, ValueKey::Null) {
                    let ordering = nulls_last(a, b);
                    if ordering.is_ne() {
                        return ordering;
                    }
                }
                a.cmp(b)
            } else if let Some(i) = names.iter().position(|n| *n == name) {
                ValueKey::of(Some(&values_a[i])).cmp(&ValueKey::of(Some(&values_b[i])))
            } else {
                Ordering::Equal
            };
            let ordering = if clause.descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering.is_ne() {
                return ordering;
            }
        }
        group_order(key_a, key_b)
    });
}

fn nulls_last(a: &ValueKey, b: &ValueKey) -> Ordering {
    match (a, b) {
        (ValueKey::Null, ValueKey::Null) => Ordering::Equal,
        (ValueKey::Null, _) => Ordering::Greater,
        (_, ValueKey::Null) => Ordering::Less,
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::metric::MetricKind;
    use crate::analysis::testing::{ms, window};

    fn sum(path: &str) -> Metric {
        Metric::new(MetricKind::Sum, Some(path), None, "").expect("metric")
    }

    fn day(start: &str) -> Window {
        let start = ms(start);
        Window::new(start, start + 86_400_000)
    }

    fn feed(aggregation: &mut Aggregation, events: &[(&str, Value)]) {
        for (at, event) in events {
            aggregation.add(ms(at), event).expect("within bounds");
        }
    }

    fn purchases() -> Vec<(&'static str, Value)> {
        vec![
            (
                "2024-03-01T10:00:00Z",
                json!({"city": "Oslo", "price": 10, "plan": "pro"}),
            ),
            (
                "2024-03-01T11:00:00Z",
                json!({"city": "Lima", "price": 5, "plan": "pro"}),
            ),
            (
                "2024-03-02T09:00:00Z",
                json!({"city": "Oslo", "price": 7, "plan": "free"}),
            ),
            ("2024-03-02T12:00:00Z", json!({"price": 100})),
            // Outside the window: ignored.
            (
                "2024-03-03T00:00:00Z",
                json!({"city": "Oslo", "price": 1000}),
            ),
        ]
    }

    #[test]
    fn a_scalar_without_group_or_interval() {
        let w = window("2024-03-01T00:00:00Z", "2024-03-03T00:00:00Z");
        let mut aggregation = Aggregation::new(
            Metrics::Single(sum("price")),
            vec![],
            vec![w],
            false,
            Budget::default(),
        );
        feed(&mut aggregation, &purchases());
        assert_eq!(
            aggregation.render(&[], None, &Timezone::default()),
            json!(122)
        );
        let empty = Aggregation::new(
            Metrics::Single(Metric::COUNT),
            vec![],
            vec![w],
            false,
            Budget::default(),
        );
        assert_eq!(empty.render(&[], None, &Timezone::default()), json!(0));
    }

    #[test]
    fn group_rows_have_flat_dotted_keys_and_null_groups_last() {
        let w = window("2024-03-01T00:00:00Z", "2024-03-03T00:00:00Z");
        let mut aggregation = Aggregation::new(
            Metrics::Single(sum("price")),
            vec!["city".into()],
            vec![w],
            false,
            Budget::default(),
        );
        feed(&mut aggregation, &purchases());
        assert_eq!(
            aggregation.render(&[], None, &Timezone::default()),
            json!([
                {"city": "Lima", "result": 5},
                {"city": "Oslo", "result": 17},
                {"city": null, "result": 100},
            ])
        );
        let mut nested = Aggregation::new(
            Metrics::Single(Metric::COUNT),
            vec!["user.plan".into(), "city".into()],
            vec![w],
            false,
            Budget::default(),
        );
        feed(
            &mut nested,
            &[
                (
                    "2024-03-01T10:00:00Z",
                    json!({"user": {"plan": "pro"}, "city": "Oslo"}),
                ),
                (
                    "2024-03-01T10:00:00Z",
                    json!({"user": {"plan": "pro"}, "city": "Oslo"}),
                ),
                ("2024-03-01T10:00:00Z", json!({"user": {"plan": "free"}})),
            ],
        );
        assert_eq!(
            nested.render(&[], None, &Timezone::default()),
            json!([
                {"user.plan": "free", "city": null, "result": 1},
                {"user.plan": "pro", "city": "Oslo", "result": 2},
            ])
        );
    }

    #[test]
    fn order_by_and_limit() {
        let w = window("2024-03-01T00:00:00Z", "2024-03-03T00:00:00Z");
        let run = |order_by: &str, limit: Option<usize>| {
            let mut aggregation = Aggregation::new(
                Metrics::Single(sum("price")),
                vec!["city".into()],
                vec![w],
                false,
                Budget::default(),
            );
            feed(&mut aggregation, &purchases());
            let order = parse_order_by(order_by).expect("order_by");
            let rows = aggregation.render(&order, limit, &Timezone::default());
            rows.as_array()
                .expect("rows")
                .iter()
                .map(|row| row["result"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            run(r#"{"property_name": "result", "direction": "DESC"}"#, None),
            [json!(100), json!(17), json!(5)]
        );
        assert_eq!(
            run(
                r#"[{"property_name": "result", "direction": "desc"}]"#,
                Some(2)
            ),
            [json!(100), json!(17)]
        );
        assert_eq!(run("result", Some(1)), [json!(5)]);
        assert_eq!(
            run(r#"{"property_name": "city", "direction": "DESC"}"#, None),
            [json!(17), json!(5), json!(100)],
            "the null group stays last"
        );
    }

    #[test]
    fn intervals_fill_every_group_and_order_within_buckets() {
        let buckets = vec![day("2024-03-01T00:00:00Z"), day("2024-03-02T00:00:00Z")];
        let mut aggregation = Aggregation::new(
            Metrics::Single(Metric::COUNT),
            vec!["city".into()],
            buckets.clone(),
            true,
            Budget::default(),
        );
        feed(&mut aggregation, &purchases());
        let order = parse_order_by(r#"{"property_name": "result", "direction": "DESC"}"#)
            .expect("order_by");
        assert_eq!(
            aggregation.render(&order, Some(2), &Timezone::default()),
            json!([
                {"timeframe": {"start": "2024-03-01T00:00:00.000Z", "end": "2024-03-02T00:00:00.000Z"},
                 "value": [{"city": "Lima", "result": 1}, {"city": "Oslo", "result": 1}]},
                {"timeframe": {"start": "2024-03-02T00:00:00.000Z", "end": "2024-03-03T00:00:00.000Z"},
                 "value": [{"city": "Oslo", "result": 1}, {"city": null, "result": 1}]},
            ])
        );
        let mut plain = Aggregation::new(
            Metrics::Single(Metric::COUNT),
            vec![],
            buckets,
            true,
            Budget::default(),
        );
        plain.add_count(1, 40);
        feed(&mut plain, &purchases());
        let values: Vec<Value> = plain
            .render(&[], None, &Timezone::default())
            .as_array()
            .expect("buckets")
            .iter()
            .map(|b| b["value"].clone())
            .collect();
        assert_eq!(values, [json!(2), json!(42)]);
    }

    #[test]
    fn multi_analysis_labels_replace_result() {
        let w = window("2024-03-01T00:00:00Z", "2024-03-03T00:00:00Z");
        let metrics = Metrics::Multi(vec![
            ("total".into(), sum("price")),
            ("n".into(), Metric::COUNT),
        ]);
        let mut scalar =
            Aggregation::new(metrics.clone(), vec![], vec![w], false, Budget::default());
        feed(&mut scalar, &purchases());
        assert_eq!(
            scalar.render(&[], None, &Timezone::default()),
            json!({"total": 122, "n": 4})
        );
        let mut grouped = Aggregation::new(
            metrics.clone(),
            vec!["plan".into()],
            vec![w],
            false,
            Budget::default(),
        );
        feed(&mut grouped, &purchases());
        let order =
            parse_order_by(r#"{"property_name": "total", "direction": "DESC"}"#).expect("order_by");
        check_ordering(&order, None, &["plan".into()], &metrics).expect("a label orders");
        assert_eq!(
            grouped.render(&order, None, &Timezone::default()),
            json!([
                {"plan": null, "total": 100, "n": 1},
                {"plan": "pro", "total": 15, "n": 2},
                {"plan": "free", "total": 7, "n": 1},
            ])
        );
    }

    #[test]
    fn too_many_groups_is_refused() {
        let w = window("2024-03-01T00:00:00Z", "2024-03-03T00:00:00Z");
        let mut aggregation = Aggregation::new(
            Metrics::Single(Metric::COUNT),
            vec!["id".into()],
            vec![w],
            false,
            Budget::new(10, usize::MAX),
        );
        for id in 0..10 {
            aggregation
                .add(ms("2024-03-01T00:00:00Z"), &json!({ "id": id }))
                .expect("ten groups");
        }
        let error = aggregation
            .add(ms("2024-03-01T00:00:00Z"), &json!({"id": 10}))
            .expect_err("eleven");
        assert_eq!(error.error_code(), "QueryTooLargeError");
        // Rows: buckets × groups.
        let buckets: Vec<Window> = (0..MAX_RESULT_ROWS as i64)
            .map(|i| Window::new(i, i + 1))
            .collect();
        let mut wide = Aggregation::new(
            Metrics::Single(Metric::COUNT),
            vec!["id".into()],
            buckets,
            true,
            Budget::default(),
        );
        wide.add(0, &json!({"id": 1})).expect("one group");
        let error = wide.add(1, &json!({"id": 2})).expect_err("two groups");
        assert!(error.message().contains("result rows"), "{error}");
    }

    #[test]
    fn parameters_parse() {
        assert_eq!(parse_group_by("city"), Ok(vec!["city".to_owned()]));
        assert_eq!(
            parse_group_by("\"user.city\""),
            Ok(vec!["user.city".to_owned()])
        );
        assert_eq!(
            parse_group_by(r#"["a", "b.c"]"#),
            Ok(vec!["a".to_owned(), "b.c".to_owned()])
        );
        assert_eq!(parse_group_by("2024"), Ok(vec!["2024".to_owned()]));
        for bad in [
            "[]",
            r#"["a", "a"]"#,
            "[1]",
            "a..b",
            r#"{"property_name": "x"}"#,
        ] {
            let error = parse_group_by(bad).expect_err(bad);
            assert!(error.message().starts_with("group_by"), "{bad}: {error}");
        }
        assert_eq!(
            parse_order_by("price"),
            Ok(vec![OrderBy {
                property_name: "price".into(),
                descending: false
            }])
        );
        for bad in [
            "[]",
            "5",
            r#"{"direction": "DESC"}"#,
            r#"{"property_name": "a", "direction": "UP"}"#,
            r#"{"property_name": "a", "x": 1}"#,
        ] {
            assert!(parse_order_by(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_limit("3"), Ok(3));
        assert!(parse_limit("0").is_err());
        let single = Metrics::Single(Metric::COUNT);
        let order = parse_order_by("result").expect("order_by");
        assert!(
            check_ordering(&order, None, &[], &single).is_err(),
            "order_by needs group_by"
        );
        assert!(
            check_ordering(&[], Some(3), &["a".into()], &single).is_err(),
            "limit needs order_by"
        );
        let by_other = parse_order_by("other").expect("order_by");
        let error = check_ordering(&by_other, None, &["a".into()], &single).expect_err("unknown");
        assert!(error.message().contains("\"other\""), "{error}");
        assert!(check_ordering(&order, Some(3), &["a".into()], &single).is_ok());
    }
}
