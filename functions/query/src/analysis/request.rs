//! A count or extraction request (product.md §9), parsed from its decoded query string.
//!
//! Decisions where the contract is silent:
//! - `timeframe` is optional and absent means all time: the counters know which days hold data,
//!   so all time costs a count one counter read, and an extraction is still bounded by
//!   [`super::plan_reads`].
//! - An empty value (`timezone=`) counts as absent; a parameter given twice is refused.
//! - `latest` and `property_names` are extraction-only and refused on a count.
//! - Analytics parameters this service does not implement but that would change the answer
//!   (`group_by`, `interval`, …) are refused rather than silently ignored; any other unknown
//!   parameter (a cache buster, `api_key`) is ignored.

use super::{Filters, QueryError, Timeframe, Timezone, Window, parse_property_names};
use keen_shared::collection;
use keen_shared::key::{KeyModel, QueriesOptions};

/// The largest `latest` accepted.
pub const MAX_LATEST: usize = 100_000;

/// Parameters of the analytics API that change a query's answer and that this service does not
/// implement.
const UNSUPPORTED: [&str; 9] = [
    "group_by",
    "interval",
    "order_by",
    "limit",
    "target_property",
    "percentile",
    "analyses",
    "steps",
    "email",
];

/// The query kinds served: `/queries/count` and `/queries/extraction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    Count,
    Extraction,
}

impl QueryKind {
    /// The path segment (`count`, `extraction`).
    pub const fn as_str(self) -> &'static str {
        match self {
            QueryKind::Count => "count",
            QueryKind::Extraction => "extraction",
        }
    }

    /// Parses the path segment.
    pub fn parse(segment: &str) -> Option<QueryKind> {
        match segment {
            "count" => Some(QueryKind::Count),
            "extraction" => Some(QueryKind::Extraction),
            _ => None,
        }
    }
}

/// A validated count or extraction request.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRequest {
    pub kind: QueryKind,
    /// Valid per product.md §2.
    pub event_collection: String,
    /// `None`: all time.
    pub timeframe: Option<Timeframe>,
    /// Aligns relative timeframes; UTC by default.
    pub timezone: Timezone,
    /// The request's filters, and the key's once [`QueryRequest::and_key_filters`] ran.
    pub filters: Filters,
    /// Extraction only: the newest N events. `None`: every event in the window (still bounded
    /// by the read plan).
    pub latest: Option<usize>,
    /// Extraction only: the dotted paths to keep of each event. `None`: whole events.
    pub property_names: Option<Vec<String>>,
}

impl QueryRequest {
    /// Parses the decoded query string of a count or extraction (decisions in the module docs).
    pub fn from_params(
        kind: QueryKind,
        params: &[(String, String)],
    ) -> Result<QueryRequest, QueryError> {
        let mut event_collection = None;
        let mut timeframe = None;
        let mut timezone = None;
        let mut filters = None;
        let mut latest = None;
        let mut property_names = None;
        for (name, value) in params {
            let slot = match name.as_str() {
                "event_collection" => &mut event_collection,
                "timeframe" => &mut timeframe,
                "timezone" => &mut timezone,
                "filters" => &mut filters,
                "latest" => &mut latest,
                "property_names" => &mut property_names,
                other if UNSUPPORTED.contains(&other) => {
                    return Err(QueryError::InvalidParameter(format!(
                        "{other} is not supported by this service; only event_collection, \
                         timeframe, timezone, filters, and for extractions latest and \
                         property_names are"
                    )));
                }
                _ => continue,
            };
            if slot.is_some() {
                return Err(QueryError::InvalidParameter(format!(
                    "{name} is given more than once; give it once"
                )));
            }
            *slot = Some(value.as_str());
        }

        if kind == QueryKind::Count {
            for (name, value) in [("latest", latest), ("property_names", property_names)] {
                if given(value).is_some() {
                    return Err(QueryError::InvalidParameter(format!(
                        "{name} applies to extractions only; remove it from the count query"
                    )));
                }
            }
        }

        let Some(name) = given(event_collection) else {
            return Err(QueryError::MissingRequiredProperty(
                "event_collection is required: name the collection to query, e.g. \
                 event_collection=purchases"
                    .into(),
            ));
        };
        collection::check_name(name).map_err(|e| {
            QueryError::InvalidCollectionName(format!("event_collection {name:?}: {e}"))
        })?;
        Ok(QueryRequest {
            kind,
            event_collection: name.to_owned(),
            timeframe: given(timeframe).map(Timeframe::parse).transpose()?,
            timezone: given(timezone)
                .map(Timezone::parse)
                .transpose()?
                .unwrap_or_default(),
            filters: given(filters)
                .map(Filters::parse)
                .transpose()?
                .unwrap_or_default(),
            latest: given(latest).map(parse_latest).transpose()?,
            property_names: given(property_names)
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
        let Some(options) = options else {
            return Ok(());
        };
        let key_filters =
            Filters::from_values(&options.filters, "the key's options.queries.filters")?;
        self.filters = std::mem::take(&mut self.filters).and(key_filters);
        Ok(())
    }

    /// Whether the answer can come from the hourly counters ([`super::split_for_counters`]):
    /// a count with no filters, the key's included.
    pub fn counts_from_counters(&self) -> bool {
        self.kind == QueryKind::Count && self.filters.is_empty()
    }
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
    value.filter(|v| !v.trim().is_empty())
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
            QueryKind::Count,
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
            QueryKind::Count,
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
                QueryKind::Count,
                &[],
                "MissingRequiredPropertyError",
                "event_collection is required",
            ),
            (
                QueryKind::Count,
                &[("event_collection", "")],
                "MissingRequiredPropertyError",
                "event_collection",
            ),
            (
                QueryKind::Count,
                &[("event_collection", "_internal")],
                "InvalidCollectionNameError",
                "\"_internal\"",
            ),
            (
                QueryKind::Count,
                &[("event_collection", "a b")],
                "InvalidCollectionNameError",
                "' '",
            ),
            (
                QueryKind::Count,
                &[("event_collection", "a"), ("event_collection", "b")],
                "InvalidParameterError",
                "more than once",
            ),
            (
                QueryKind::Count,
                &[("event_collection", "a"), ("timeframe", "last_week")],
                "TimeframeDefinitionError",
                "last_week",
            ),
            (
                QueryKind::Count,
                &[("event_collection", "a"), ("timezone", "Mars/Base")],
                "InvalidParameterError",
                "timezone",
            ),
            (
                QueryKind::Count,
                &[("event_collection", "a"), ("filters", "[1]")],
                "FilterError",
                "filters[0]",
            ),
            (
                QueryKind::Count,
                &[("event_collection", "a"), ("latest", "5")],
                "InvalidParameterError",
                "latest applies to extractions only",
            ),
            (
                QueryKind::Count,
                &[("event_collection", "a"), ("property_names", "[\"a\"]")],
                "InvalidParameterError",
                "property_names applies to extractions only",
            ),
            (
                QueryKind::Count,
                &[("event_collection", "a"), ("group_by", "city")],
                "InvalidParameterError",
                "group_by is not supported",
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
                &[("event_collection", "a"), ("property_names", "a")],
                "InvalidParameterError",
                "property_names",
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
            QueryKind::Count,
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
