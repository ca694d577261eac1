//! A query request (product.md §9), parsed from its decoded parameters: the query string of a
//! `GET`, or the members of a `POST`'s JSON body (strings as they are, other values as their JSON
//! text, so both transports meet the same parsers).
//!
//! Decisions where the contract is silent:
//! - `timeframe` is optional and absent means all time: the counters know which days hold data,
//!   so all time costs a count one counter read, and other analyses are still bounded by
//!   [`super::plan_reads`].
//! - An empty or `null` value counts as absent; a parameter given twice is refused.
//! - A parameter that does not apply to the analysis (`latest` on a count, `group_by` on an
//!   extraction, `target_property` on a count) is refused, naming it, rather than ignored: it
//!   would not change the answer the customer expects it to change. Parameters that change
//!   nothing here (`include_metadata` aside, `max_age`, a cache buster, `api_key`) are ignored.
//! - `analysis_type` (keen-analysis sends it in every body) must match the path when given.

use super::grouping::{self, Metrics, OrderBy};
use super::interval::Interval;
use super::metric::{Metric, MetricKind};
use super::{Filters, QueryError, Timeframe, Timezone, Window, parse_property_names};
use keen_shared::collection;
use keen_shared::key::{KeyModel, QueriesOptions};
use serde_json::Value;

/// The largest `latest` accepted.
pub const MAX_LATEST: usize = 100_000;
/// Sub-analyses of one multi_analysis at most.
pub const MAX_ANALYSES: usize = 20;

/// The analyses served, by path segment (`/queries/{analysis}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// count, count_unique, sum, average, minimum, maximum, median, percentile, select_unique.
    Metric(MetricKind),
    Extraction,
    MultiAnalysis,
    Funnel,
}

impl QueryKind {
    /// `count`.
    pub const COUNT: QueryKind = QueryKind::Metric(MetricKind::Count);

    /// The path segment (`count_unique`, `extraction`).
    pub const fn as_str(self) -> &'static str {
        match self {
            QueryKind::Metric(kind) => kind.as_str(),
            QueryKind::Extraction => "extraction",
            QueryKind::MultiAnalysis => "multi_analysis",
            QueryKind::Funnel => "funnel",
        }
    }

    /// Parses the path segment.
    pub fn parse(segment: &str) -> Option<QueryKind> {
        match segment {
            "extraction" => Some(QueryKind::Extraction),
            "multi_analysis" => Some(QueryKind::MultiAnalysis),
            "funnel" => Some(QueryKind::Funnel),
            other => MetricKind::parse(other).map(QueryKind::Metric),
        }
    }

    /// Every analysis, for messages.
    pub fn names() -> String {
        let mut names: Vec<&str> = MetricKind::ALL.iter().map(|k| k.as_str()).collect();
        names.extend(["extraction", "multi_analysis", "funnel"]);
        names.join(", ")
    }
}

/// A validated request for any analysis but a funnel.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRequest {
    pub kind: QueryKind,
    /// Valid per product.md §2.
    pub event_collection: String,
    /// `None`: all time.
    pub timeframe: Option<Timeframe>,
    /// Aligns relative timeframes and intervals; UTC by default.
    pub timezone: Timezone,
    /// The request's filters, and the key's once [`QueryRequest::and_key_filters`] ran.
    pub filters: Filters,
    /// What each cell computes; `None` for an extraction.
    pub metrics: Option<Metrics>,
    /// Properties grouped by, in order; empty: no grouping.
    pub group_by: Vec<String>,
    pub order_by: Vec<OrderBy>,
    pub limit: Option<usize>,
    pub interval: Option<Interval>,
    /// Extraction only: the newest N events. `None`: every event in the window (still bounded
    /// by the read plan).
    pub latest: Option<usize>,
    /// Extraction only: the dotted paths to keep of each event. `None`: whole events.
    pub property_names: Option<Vec<String>>,
}

/// The parameters a request reads, by name.
const KNOWN: [&str; 15] = [
    "event_collection",
    "timeframe",
    "timezone",
    "filters",
    "latest",
    "property_names",
    "target_property",
    "percentile",
    "group_by",
    "order_by",
    "limit",
    "interval",
    "analyses",
    "steps",
    "email",
];

/// A request's parameters by name, each given at most once.
#[derive(Debug, Default)]
pub struct Given<'a> {
    values: Vec<(&'static str, &'a str)>,
    analysis_type: Option<&'a str>,
}

impl<'a> Given<'a> {
    /// Collects the known parameters of `params` (decisions in the module docs).
    pub fn collect(params: &'a [(String, String)]) -> Result<Given<'a>, QueryError> {
        let mut given = Given::default();
        for (name, value) in params {
            if !is_given(value) {
                continue;
            }
            let repeated = || {
                QueryError::InvalidParameter(format!(
                    "{name} is given more than once; give it once"
                ))
            };
            if name == "analysis_type" {
                if given.analysis_type.replace(value).is_some() {
                    return Err(repeated());
                }
                continue;
            }
            let Some(known) = KNOWN.iter().find(|k| **k == name) else {
                continue;
            };
            if given.get(known).is_some() {
                return Err(repeated());
            }
            given.values.push((known, value.as_str()));
        }
        Ok(given)
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// Refuses the parameters of `names` that were given, saying they do not apply to `kind`.
    fn refuse(&self, kind: QueryKind, names: &[&str], why: &str) -> Result<(), QueryError> {
        match names.iter().find(|n| self.get(n).is_some()) {
            Some(name) => Err(QueryError::InvalidParameter(format!(
                "{name} does not apply to {}{why}; remove it",
                kind.as_str()
            ))),
            None => Ok(()),
        }
    }

    /// Checks `analysis_type` against the path.
    fn check_analysis_type(&self, kind: QueryKind) -> Result<(), QueryError> {
        match self.analysis_type {
            Some(named) if named.trim().trim_matches('"') != kind.as_str() => {
                Err(QueryError::InvalidParameter(format!(
                    "analysis_type {named:?} differs from the path's analysis {}; send the \
                     query to /queries/{named} or drop analysis_type",
                    kind.as_str()
                )))
            }
            _ => Ok(()),
        }
    }

    /// `timezone`, UTC when absent.
    pub fn timezone(&self) -> Result<Timezone, QueryError> {
        Ok(self
            .get("timezone")
            .map(Timezone::parse)
            .transpose()?
            .unwrap_or_default())
    }

    /// `timeframe`, `None` when absent.
    pub fn timeframe(&self) -> Result<Option<Timeframe>, QueryError> {
        self.get("timeframe").map(Timeframe::parse).transpose()
    }

    /// `filters`, none when absent.
    pub fn filters(&self) -> Result<Filters, QueryError> {
        Ok(self
            .get("filters")
            .map(Filters::parse)
            .transpose()?
            .unwrap_or_default())
    }
}

impl QueryRequest {
    /// Parses the decoded parameters of any analysis but a funnel (decisions in the module
    /// docs).
    pub fn from_params(
        kind: QueryKind,
        params: &[(String, String)],
    ) -> Result<QueryRequest, QueryError> {
        let given = Given::collect(params)?;
        given.check_analysis_type(kind)?;
        let metrics = match kind {
            QueryKind::Funnel => {
                return Err(QueryError::InvalidParameter(
                    "a funnel is parsed from its steps".into(),
                ));
            }
            QueryKind::Extraction => {
                given.refuse(
                    kind,
                    &[
                        "target_property",
                        "percentile",
                        "group_by",
                        "order_by",
                        "limit",
                        "interval",
                        "analyses",
                    ],
                    " (an extraction returns events)",
                )?;
                given.refuse(
                    kind,
                    &["email"],
                    ": extractions by email are not offered; omit email to get the events as \
                     JSON",
                )?;
                None
            }
            QueryKind::MultiAnalysis => {
                given.refuse(
                    kind,
                    &["target_property", "percentile"],
                    " (each of its analyses names its own)",
                )?;
                Some(parse_analyses(given.get("analyses"))?)
            }
            QueryKind::Metric(metric) => {
                given.refuse(kind, &["analyses"], " (use multi_analysis)")?;
                Some(Metrics::Single(Metric::new(
                    metric,
                    given.get("target_property"),
                    given.get("percentile"),
                    "",
                )?))
            }
        };
        if kind != QueryKind::Extraction {
            given.refuse(
                kind,
                &["latest", "property_names", "email"],
                " (it applies to extractions only)",
            )?;
        }
        given.refuse(kind, &["steps"], " (steps belong to funnels)")?;

        let Some(name) = given.get("event_collection") else {
            return Err(QueryError::MissingRequiredProperty(
                "event_collection is required: name the collection to query, e.g. \
                 event_collection=purchases"
                    .into(),
            ));
        };
        let name = name.trim().trim_matches('"');
        collection::check_name(name).map_err(|e| {
            QueryError::InvalidCollectionName(format!("event_collection {name:?}: {e}"))
        })?;
        let group_by = given
            .get("group_by")
            .map(grouping::parse_group_by)
            .transpose()?
            .unwrap_or_default();
        let order_by = given
            .get("order_by")
            .map(grouping::parse_order_by)
            .transpose()?
            .unwrap_or_default();
        let limit = given.get("limit").map(grouping::parse_limit).transpose()?;
        if let Some(metrics) = &metrics {
            grouping::check_ordering(&order_by, limit, &group_by, metrics)?;
            if let Metrics::Multi(labelled) = metrics
                && let Some((label, _)) = labelled.iter().find(|(l, _)| group_by.contains(l))
            {
                return Err(QueryError::InvalidParameter(format!(
                    "analyses label {label:?} is also a group_by property: rename the label"
                )));
            }
        }
        Ok(QueryRequest {
            kind,
            event_collection: name.to_owned(),
            timeframe: given.timeframe()?,
            timezone: given.timezone()?,
            filters: given.filters()?,
            metrics,
            group_by,
            order_by,
            limit,
            interval: given.get("interval").map(Interval::parse).transpose()?,
            latest: given.get("latest").map(parse_latest).transpose()?,
            property_names: given
                .get("property_names")
                .map(parse_property_names)
                .transpose()?,
        })
    }

    /// The window the query covers at `now_ms`: all time without a timeframe.
    pub fn window(&self, now_ms: i64) -> Window {
        self.timeframe
            .map_or(Window::ALL_TIME, |t| t.resolve(now_ms, &self.timezone))
    }

    /// ANDs the key's `options.queries.filters` onto the request's (product.md §5), so a key
    /// scoped to one tenant never sees another's events.
    pub fn and_key_filters(&mut self, key: &KeyModel) -> Result<(), QueryError> {
        self.and_query_options(key.options.queries.as_ref())
    }

    /// As [`QueryRequest::and_key_filters`], from the options alone. A malformed key filter is a
    /// `FilterError` naming it as the key's, since the request itself is fine.
    pub fn and_query_options(
        &mut self,
        options: Option<&QueriesOptions>,
    ) -> Result<(), QueryError> {
        self.filters = std::mem::take(&mut self.filters).and(key_filters(options)?);
        Ok(())
    }

    /// Whether the answer can come from the hourly counters ([`super::split_for_counters`]):
    /// a count with no filters (the key's included) and no group_by; an interval's buckets are
    /// each split the same way.
    pub fn counts_from_counters(&self) -> bool {
        self.kind == QueryKind::COUNT && self.filters.is_empty() && self.group_by.is_empty()
    }
}

/// An access key's `options.queries.filters`, validated; none without options.
pub fn key_filters(options: Option<&QueriesOptions>) -> Result<Filters, QueryError> {
    match options {
        Some(options) => {
            Filters::from_values(&options.filters, "the key's options.queries.filters")
        }
        None => Ok(Filters::default()),
    }
}

/// Parses multi_analysis's `analyses`: a JSON object of label → `{"analysis_type": …,
/// "target_property": …, "percentile": …}`, labels kept in the order given.
fn parse_analyses(text: Option<&str>) -> Result<Metrics, QueryError> {
    let Some(text) = text else {
        return Err(QueryError::MissingRequiredProperty(
            "analyses is required by multi_analysis: give a JSON object of label → analysis, \
             e.g. {\"total\": {\"analysis_type\": \"sum\", \"target_property\": \"price\"}}"
                .into(),
        ));
    };
    let bad = |what: String| QueryError::InvalidParameter(format!("analyses {what}"));
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(bad("is not a JSON object of label → analysis".into())),
        Err(e) => return Err(bad(format!("is not valid JSON ({e})"))),
    };
    if object.is_empty() || object.len() > MAX_ANALYSES {
        return Err(bad(format!(
            "holds {} analyses; give 1 to {MAX_ANALYSES}",
            object.len()
        )));
    }
    // serde_json's map is ordered by label; Keen's answer is an object, so order is moot.
    let mut labelled = Vec::with_capacity(object.len());
    for (label, spec) in &object {
        let at = format!("analyses.{label}: ");
        if label.is_empty() || label == "result" {
            return Err(bad(format!("has the label {label:?}; choose another name")));
        }
        let Value::Object(fields) = spec else {
            return Err(bad(format!(
                "{label} is not an object with an analysis_type"
            )));
        };
        if let Some(unknown) = fields.keys().find(|k| {
            !matches!(
                k.as_str(),
                "analysis_type" | "target_property" | "percentile"
            )
        }) {
            return Err(bad(format!(
                "{label} has an unknown field {unknown:?}; an analysis has analysis_type, \
                 target_property and percentile"
            )));
        }
        let kind = match fields.get("analysis_type") {
            Some(Value::String(name)) => MetricKind::parse(name).ok_or_else(|| {
                bad(format!(
                    "{label} has analysis_type {name:?}; multi_analysis combines count, \
                     count_unique, sum, average, minimum, maximum, median, percentile and \
                     select_unique"
                ))
            })?,
            _ => return Err(bad(format!("{label} has no analysis_type string"))),
        };
        let target = match fields.get("target_property") {
            None | Some(Value::Null) => None,
            Some(Value::String(path)) => Some(path.as_str()),
            Some(_) => {
                return Err(bad(format!(
                    "{label} has a target_property that is not a string"
                )));
            }
        };
        let percentile = fields
            .get("percentile")
            .filter(|v| !v.is_null())
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        labelled.push((
            label.clone(),
            Metric::new(kind, target, percentile.as_deref(), &at)?,
        ));
    }
    Ok(Metrics::Multi(labelled))
}

/// The window of a `timeframe` and `timezone` pair given apart from a count or extraction (the
/// dead letters listing): `None` without a timeframe (all time). Blank values count as absent.
pub fn window_param(
    timeframe: Option<&str>,
    timezone: Option<&str>,
    now_ms: i64,
) -> Result<Option<Window>, QueryError> {
    let timezone = given(timezone)
        .map(Timezone::parse)
        .transpose()?
        .unwrap_or_default();
    given(timeframe)
        .map(|text| Timeframe::parse(text).map(|t| t.resolve(now_ms, &timezone)))
        .transpose()
}

/// The value of a parameter given with a non-blank value.
fn given(value: Option<&str>) -> Option<&str> {
    value.filter(|v| is_given(v))
}

/// Whether a value counts as given: not blank, not JSON `null`.
fn is_given(value: &str) -> bool {
    let trimmed = value.trim();
    !trimmed.is_empty() && trimmed != "null"
}

/// Parses `latest`: an integer from 1 to [`MAX_LATEST`].
pub fn parse_latest(text: &str) -> Result<usize, QueryError> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LATEST).contains(n))
        .ok_or_else(|| {
            QueryError::InvalidParameter(format!(
                "latest {text:?} is not a whole number from 1 to {MAX_LATEST}; ask for at most \
                 {MAX_LATEST} events, or narrow the timeframe"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::super::metric::MetricKind;
    use super::*;
    use crate::analysis::Relative;
    use crate::analysis::Unit;
    use serde_json::json;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn code(result: Result<QueryRequest, QueryError>) -> (&'static str, String) {
        let error = result.expect_err("refused");
        (error.error_code(), error.message().to_owned())
    }

    #[test]
    fn a_full_extraction_parses() {
        let request = QueryRequest::from_params(
            QueryKind::Extraction,
            &params(&[
                ("api_key", "secret"),
                ("event_collection", "purchases"),
                ("timeframe", "this_7_days"),
                ("timezone", "Europe/Berlin"),
                (
                    "filters",
                    r#"[{"property_name": "price", "operator": "gt", "property_value": 10}]"#,
                ),
                ("latest", "50"),
                ("property_names", r#"["price", "keen.timestamp"]"#),
                ("_", "1710000000"),
            ]),
        )
        .expect("valid");
        assert_eq!(request.event_collection, "purchases");
        assert_eq!(
            request.timeframe,
            Some(Timeframe::Relative {
                relative: Relative::This,
                count: 7,
                unit: Unit::Days
            })
        );
        assert_eq!(
            request.timezone,
            Timezone::parse("Europe/Berlin").expect("zone")
        );
        assert_eq!(request.filters.len(), 1);
        assert_eq!(request.latest, Some(50));
        assert_eq!(
            request.property_names,
            Some(vec!["price".to_owned(), "keen.timestamp".to_owned()])
        );
        assert!(!request.counts_from_counters());
    }

    #[test]
    fn a_bare_count_is_all_time_in_utc_from_the_counters() {
        let request = QueryRequest::from_params(
            QueryKind::COUNT,
            &params(&[
                ("event_collection", "purchases"),
                ("timezone", ""),
                ("filters", " "),
            ]),
        )
        .expect("valid");
        assert_eq!(request.timeframe, None);
        assert_eq!(request.timezone, Timezone::default());
        assert_eq!(request.window(1_710_000_000_000), Window::ALL_TIME);
        assert!(request.counts_from_counters());
        let today = QueryRequest::from_params(
            QueryKind::COUNT,
            &params(&[
                ("event_collection", "purchases"),
                ("timeframe", "today"),
                ("timezone", "3600"),
            ]),
        )
        .expect("valid");
        // 2024-03-09T16:00:00.123Z: today in UTC+1 starts at 23:00 UTC on the 8th.
        assert_eq!(
            today.window(1_710_000_000_123),
            Window::new(1_709_938_800_000, 1_710_025_200_000)
        );
    }

    /// Kind, parameters, expected error code, text the message holds.
    type Case = (
        QueryKind,
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    );

    #[test]
    fn bad_requests_name_the_parameter() {
        let cases: &[Case] = &[
            (
                QueryKind::COUNT,
                &[],
                "MissingRequiredPropertyError",
                "event_collection is required",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "")],
                "MissingRequiredPropertyError",
                "event_collection",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "_internal")],
                "InvalidCollectionNameError",
                "\"_internal\"",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "a b")],
                "InvalidCollectionNameError",
                "' '",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "a"), ("event_collection", "b")],
                "InvalidParameterError",
                "more than once",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "a"), ("timeframe", "last_week")],
                "TimeframeDefinitionError",
                "last_week",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "a"), ("timezone", "Mars/Base")],
                "InvalidParameterError",
                "timezone",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "a"), ("filters", "[1]")],
                "FilterError",
                "filters[0]",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "a"), ("latest", "5")],
                "InvalidParameterError",
                "latest does not apply to count (it applies to extractions only)",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "a"), ("property_names", "[\"a\"]")],
                "InvalidParameterError",
                "property_names does not apply to count",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "a"), ("group_by", "[]")],
                "InvalidParameterError",
                "group_by holds 0 properties",
            ),
            (
                QueryKind::Extraction,
                &[("event_collection", "a"), ("latest", "0")],
                "InvalidParameterError",
                "latest",
            ),
            (
                QueryKind::Extraction,
                &[("event_collection", "a"), ("latest", "100001")],
                "InvalidParameterError",
                "100000",
            ),
            (
                QueryKind::Extraction,
                &[("event_collection", "a"), ("property_names", "[1]")],
                "InvalidParameterError",
                "property_names",
            ),
            (
                QueryKind::Extraction,
                &[("event_collection", "a"), ("group_by", "city")],
                "InvalidParameterError",
                "group_by does not apply to extraction",
            ),
            (
                QueryKind::Metric(MetricKind::Sum),
                &[("event_collection", "a")],
                "MissingRequiredPropertyError",
                "target_property is required by sum",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "a"), ("analysis_type", "sum")],
                "InvalidParameterError",
                "analysis_type \"sum\" differs",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "a"), ("order_by", "result")],
                "InvalidParameterError",
                "order_by orders group_by rows",
            ),
            (
                QueryKind::MultiAnalysis,
                &[("event_collection", "a")],
                "MissingRequiredPropertyError",
                "analyses is required",
            ),
            (
                QueryKind::MultiAnalysis,
                &[
                    ("event_collection", "a"),
                    ("analyses", r#"{"x": {"analysis_type": "funnel"}}"#),
                ],
                "InvalidParameterError",
                "x has analysis_type \"funnel\"",
            ),
            (
                QueryKind::MultiAnalysis,
                &[
                    ("event_collection", "a"),
                    ("analyses", r#"{"x": {"analysis_type": "sum"}}"#),
                ],
                "MissingRequiredPropertyError",
                "analyses.x: target_property is required",
            ),
            (
                QueryKind::COUNT,
                &[("event_collection", "a"), ("steps", "[]")],
                "InvalidParameterError",
                "steps does not apply",
            ),
        ];
        for (kind, list, expected_code, expected_text) in cases {
            let (code, message) = code(QueryRequest::from_params(*kind, &params(list)));
            assert_eq!(code, *expected_code, "{list:?}: {message}");
            assert!(message.contains(expected_text), "{list:?}: {message}");
        }
    }

    #[test]
    fn latest_parses() {
        assert_eq!(parse_latest("1"), Ok(1));
        assert_eq!(parse_latest(" 100000 "), Ok(MAX_LATEST));
        for bad in ["0", "-1", "1.5", "abc", "", "100001", "99999999999"] {
            assert!(parse_latest(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_filters_are_anded_on() {
        let mut request = QueryRequest::from_params(
            QueryKind::COUNT,
            &params(&[("event_collection", "purchases")]),
        )
        .expect("valid");
        request.and_query_options(None).expect("no key filters");
        assert!(request.counts_from_counters());
        let key: KeyModel = serde_json::from_value(json!({
            "key_id": "0123456789abcdef", "project_id": "p", "kind": "access", "is_active": true,
            "permitted": ["queries"],
            "options": {"queries": {"filters": [
                {"property_name": "tenant.id", "operator": "eq", "property_value": 7}
            ]}}
        }))
        .expect("key");
        request.and_key_filters(&key).expect("valid key filters");
        assert_eq!(request.filters.len(), 1);
        assert!(!request.counts_from_counters());
        assert!(request.filters.matches(&json!({"tenant": {"id": 7}})));
        assert!(!request.filters.matches(&json!({"tenant": {"id": 8}})));

        let broken: QueriesOptions =
            serde_json::from_value(json!({"filters": [{"property_name": "a"}]})).expect("options");
        let error = request
            .and_query_options(Some(&broken))
            .expect_err("refused");
        assert_eq!(error.error_code(), "FilterError");
        assert!(
            error
                .message()
                .starts_with("the key's options.queries.filters[0] has no operator"),
            "{error}"
        );
    }

    #[test]
    fn a_window_from_parameters_alone() {
        let now = 1_710_000_000_123; // 2024-03-09T16:00:00.123Z
        assert_eq!(window_param(None, Some("Europe/Berlin"), now), Ok(None));
        assert_eq!(window_param(Some(" "), None, now), Ok(None));
        assert_eq!(
            window_param(Some("today"), Some("3600"), now),
            Ok(Some(Window::new(1_709_938_800_000, 1_710_025_200_000)))
        );
        assert_eq!(
            window_param(Some("today"), None, now),
            Ok(Some(Window::new(1_709_942_400_000, 1_710_028_800_000)))
        );
        assert_eq!(
            window_param(Some("soon"), None, now).map_err(|e| e.error_code()),
            Err("TimeframeDefinitionError")
        );
        assert_eq!(
            window_param(Some("today"), Some("Nowhere"), now).map_err(|e| e.error_code()),
            Err("InvalidParameterError")
        );
    }
}
