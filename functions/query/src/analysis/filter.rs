//! Query filters (product.md §9): `[{property_name, operator, property_value}, …]`, ANDed.
//!
//! The rules, for a property found at `property_name` (a dotted path through objects):
//! - numbers compare numerically (`1` equals `1.0`), strings lexicographically by code point;
//!   stored `keen.timestamp` and `keen.created_at` are normalised ISO strings, and a filter value
//!   on those two is normalised the same way (for every operator but `contains`, `not_contains`
//!   and `regex`, which search the stored text with the value as written), so they compare as
//!   instants;
//! - values of different JSON types never compare: `eq`, `lt`, `lte`, `gt`, `gte` are false;
//! - `ne` is exactly `not eq`, `not_contains` exactly `not contains`;
//! - `eq` against an array property is true when the array equals the value or holds it as an
//!   element, as in the analytics API; `in` is `eq` against any of the listed values;
//! - `contains` is a substring test on a string property and an element test (by `eq` rules)
//!   on an array property; false on other types;
//! - `regex` searches a string property for its pattern anywhere in it (unanchored, as Python's
//!   `re.search`: `^` and `$` anchor when written), and, as `contains` looks into arrays, is true
//!   on an array property when one of its string elements matches; false on other types. The
//!   syntax is the `regex` crate's (no look-around, no back-references); a pattern has at most
//!   [`MAX_PATTERN_BYTES`] bytes and is compiled once, when the filter is parsed, within a size
//!   bound; matching takes time linear in the property's length whatever the pattern;
//! - `within` (geo) is true when the event's `keen.location.coordinates` (`[longitude,
//!   latitude]`) lies at most `max_distance_miles` from the filter's `coordinates` along the
//!   Earth's surface (haversine, mean radius [`EARTH_RADIUS_MILES`]). It is accepted on
//!   `keen.location.coordinates` (or `keen.location`, meaning the same) only, else
//!   `InvalidPropertyNameForGeoFilter`; an event without valid coordinates fails it;
//! - a missing property fails every operator except `ne`, `not_contains` and `exists: false`.
//!   A property present with the value `null` exists.

use super::QueryError;
use keen_shared::timestamp;
use regex::{Regex, RegexBuilder};
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;

/// Filters on one query, at most this many: more is a mistake, and each costs per event read.
pub const MAX_FILTERS: usize = 100;

/// A `regex` pattern's length bound: longer ones are refused before compiling.
pub const MAX_PATTERN_BYTES: usize = 1_000;

/// Heap a compiled pattern may take, and its lazy DFA's cache: a short pattern can still expand
/// (Unicode `\w` is some 50 kB of automaton, so `\w{20}` passes and `\w{21}` does not), and up
/// to [`MAX_FILTERS`] of them are held per query.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;
const PATTERN_CACHE_LIMIT: usize = 1 << 20;

/// The Earth's mean radius, for `within` distances.
pub const EARTH_RADIUS_MILES: f64 = 3958.8;

/// Where a `within` filter looks, whichever of its two accepted names it was given.
const GEO_PROPERTY: &str = "keen.location.coordinates";

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Eq,
    Ne,
    Lt,
    Lte,
    Gt,
    Gte,
    Exists,
    In,
    Contains,
    NotContains,
    Within,
    Regex,
}

impl Operator {
    /// Every operator, for messages and tests.
    pub const ALL: [Operator; 12] = [
        Operator::Eq,
        Operator::Ne,
        Operator::Lt,
        Operator::Lte,
        Operator::Gt,
        Operator::Gte,
        Operator::Exists,
        Operator::In,
        Operator::Contains,
        Operator::NotContains,
        Operator::Within,
        Operator::Regex,
    ];

    /// The name as the API spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            Operator::Ne => "ne",
            Operator::Lt => "lt",
            Operator::Lte => "lte",
            Operator::Gt => "gt",
            Operator::Gte => "gte",
            Operator::Exists => "exists",
            Operator::In => "in",
            Operator::Contains => "contains",
            Operator::NotContains => "not_contains",
            Operator::Within => "within",
            Operator::Regex => "regex",
        }
    }

    /// Parses an operator name.
    pub fn parse(name: &str) -> Option<Operator> {
        Operator::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

/// One filter, validated: the value has the shape its operator needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Dotted path into the stored event, e.g. `user.address.city`.
    pub property_name: String,
    pub operator: Operator,
    /// `exists`: a boolean; `in`: an array; `lt`..`gte`: a number or a string; `regex`: a
    /// pattern string; `within`: `{"coordinates": [longitude, latitude], "max_distance_miles":
    /// miles}`; others: any.
    pub property_value: Value,
    /// What `regex` and `within` need, worked out from the value once.
    prepared: Prepared,
}

impl Filter {
    /// Validates one filter object. `at` names it in errors, e.g. `filters[2]`.
    pub fn from_value(value: &Value, at: &str) -> Result<Filter, QueryError> {
        let bad = |what: String| QueryError::Filter(format!("{at} {what}"));
        let Value::Object(object) = value else {
            return Err(bad(
                "is not an object; each filter is {\"property_name\": ..., \"operator\": ..., \
                 \"property_value\": ...}"
                    .into(),
            ));
        };
        if let Some(unknown) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "property_name" | "operator" | "property_value"))
        {
            return Err(bad(format!(
                "has an unknown field {unknown:?}; a filter has property_name, operator and \
                 property_value"
            )));
        }
        let property_name = match object.get("property_name") {
            Some(Value::String(name)) => name,
            Some(_) => return Err(bad("has a property_name that is not a string".into())),
            None => return Err(bad("has no property_name".into())),
        };
        let operator_name = match object.get("operator") {
            Some(Value::String(name)) => name,
            Some(_) => return Err(bad("has an operator that is not a string".into())),
            None => return Err(bad("has no operator".into())),
        };
        let Some(operator) = Operator::parse(operator_name) else {
            let known: Vec<&str> = Operator::ALL.iter().map(|op| op.as_str()).collect();
            return Err(bad(format!(
                "has operator {operator_name:?}, which is not one of {}",
                known.join(", ")
            )));
        };
        if operator == Operator::Within
            && !matches!(property_name.as_str(), GEO_PROPERTY | "keen.location")
        {
            // The analytics API's own code and sentence, then which filter it was.
            return Err(QueryError::InvalidPropertyNameForGeoFilter(format!(
                "You specified a geo filter on a property other than {GEO_PROPERTY}, which is \
                 not allowed. You specified: '{property_name}'. ({at} must name {GEO_PROPERTY}.)"
            )));
        }
        if property_name.is_empty() || property_name.split('.').any(str::is_empty) {
            return Err(bad(format!(
                "has property_name {property_name:?}, which is not a dotted path such as \
                 user.address.city"
            )));
        }
        let Some(property_value) = object.get("property_value") else {
            return Err(bad(format!(
                "has no property_value (operator {operator_name} needs one)"
            )));
        };
        let property_value = match operator {
            Operator::Exists if !property_value.is_boolean() => {
                return Err(bad(
                    "uses exists with a property_value that is not true or false".into(),
                ));
            }
            Operator::In if !property_value.is_array() => {
                return Err(bad(
                    "uses in with a property_value that is not an array of values".into(),
                ));
            }
            Operator::Lt | Operator::Lte | Operator::Gt | Operator::Gte
                if !(property_value.is_number() || property_value.is_string()) =>
            {
                return Err(bad(format!(
                    "uses {operator_name} with a property_value that is neither a number nor a \
                     string"
                )));
            }
            // Substrings of a timestamp (`"2024-03"`) are legitimate: left as written.
            Operator::Contains
            | Operator::NotContains
            | Operator::Exists
            | Operator::Regex
            | Operator::Within => property_value.clone(),
            _ => normalise_timestamps(property_name, property_value)
                .map_err(|e| bad(format!("compares {property_name} with {e}")))?,
        };
        let prepared = match operator {
            Operator::Regex => Prepared::Pattern(Pattern::compile(&property_value).map_err(bad)?),
            Operator::Within => Prepared::Circle(Circle::from_value(&property_value).map_err(bad)?),
            _ => Prepared::Nothing,
        };
        Ok(Filter {
            property_name: property_name.clone(),
            operator,
            property_value,
            prepared,
        })
    }

    /// Whether the event passes this filter (rules in the module docs).
    pub fn matches(&self, event: &Value) -> bool {
        let found = lookup(event, &self.property_name);
        let value = &self.property_value;
        match self.operator {
            Operator::Eq => found.is_some_and(|p| equals(p, value)),
            Operator::Ne => !found.is_some_and(|p| equals(p, value)),
            Operator::Lt => compare(found, value).is_some_and(Ordering::is_lt),
            Operator::Lte => compare(found, value).is_some_and(Ordering::is_le),
            Operator::Gt => compare(found, value).is_some_and(Ordering::is_gt),
            Operator::Gte => compare(found, value).is_some_and(Ordering::is_ge),
            Operator::Exists => found.is_some() == (value == &Value::Bool(true)),
            Operator::In => found.is_some_and(|p| {
                value
                    .as_array()
                    .is_some_and(|list| list.iter().any(|v| equals(p, v)))
            }),
            Operator::Contains => found.is_some_and(|p| contains(p, value)),
            Operator::NotContains => !found.is_some_and(|p| contains(p, value)),
            Operator::Regex => match &self.prepared {
                Prepared::Pattern(pattern) => found.is_some_and(|p| pattern.finds_in(p)),
                _ => false,
            },
            // Both accepted names mean the coordinates pair.
            Operator::Within => match &self.prepared {
                Prepared::Circle(circle) => lookup(event, GEO_PROPERTY)
                    .and_then(Point::from_value)
                    .is_some_and(|point| circle.holds(point)),
                _ => false,
            },
        }
    }
}

/// A filter's value in the form its operator tests, when that is not the JSON value itself.
#[derive(Debug, Clone, PartialEq)]
enum Prepared {
    Nothing,
    Pattern(Pattern),
    Circle(Circle),
}

/// A `regex` filter's pattern, compiled. Two are equal when written the same.
#[derive(Debug, Clone)]
struct Pattern(Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Pattern {
    /// Compiles a filter value; the error completes "filters[i] …".
    fn compile(value: &Value) -> Result<Pattern, String> {
        let Value::String(text) = value else {
            return Err(
                "uses regex with a property_value that is not a string; give a pattern such \
                 as \"^gold\""
                    .into(),
            );
        };
        if text.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "uses regex with a pattern of {} bytes; at most {MAX_PATTERN_BYTES} are accepted",
                text.len()
            ));
        }
        RegexBuilder::new(text)
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_CACHE_LIMIT)
            .build()
            .map(Pattern)
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => format!(
                    "uses regex with a pattern that compiles to more than {limit} bytes; repeat \
                     large classes fewer times (Unicode \\w and \\d are large: [A-Za-z0-9_] or \
                     (?-u:\\w) match ASCII only and are small)"
                ),
                other => format!("uses regex with a pattern that does not compile: {other}"),
            })
    }

    /// Found anywhere in a string property, or in one of an array property's strings.
    fn finds_in(&self, property: &Value) -> bool {
        match property {
            Value::String(text) => self.0.is_match(text),
            Value::Array(items) => items
                .iter()
                .any(|item| item.as_str().is_some_and(|text| self.0.is_match(text))),
            _ => false,
        }
    }
}

/// A point on the Earth, in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    longitude: f64,
    latitude: f64,
}

impl Point {
    /// `[longitude, latitude]`, two numbers in range; anything else is no point.
    fn from_value(value: &Value) -> Option<Point> {
        let [longitude, latitude] = value.as_array()?.as_slice() else {
            return None;
        };
        let point = Point {
            longitude: longitude.as_f64()?,
            latitude: latitude.as_f64()?,
        };
        ((-180.0..=180.0).contains(&point.longitude) && (-90.0..=90.0).contains(&point.latitude))
            .then_some(point)
    }

    /// Great-circle distance by the haversine formula, which stays accurate for near points,
    /// across the antimeridian and at the poles.
    fn miles_to(self, other: Point) -> f64 {
        let (from, to) = (self.latitude.to_radians(), other.latitude.to_radians());
        let half_north = (to - from) / 2.0;
        let half_east = (other.longitude - self.longitude).to_radians() / 2.0;
        let h = half_north.sin().powi(2) + from.cos() * to.cos() * half_east.sin().powi(2);
        // Rounding can put h a hair above 1 for antipodes.
        2.0 * EARTH_RADIUS_MILES * h.sqrt().min(1.0).asin()
    }
}

/// A `within` filter's area: points at most `miles` from `centre`, the edge included.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Circle {
    centre: Point,
    miles: f64,
}

impl Circle {
    const SHAPE: &str =
        "{\"coordinates\": [longitude, latitude], \"max_distance_miles\": a number above 0}";

    /// Validates a filter value; the error completes "filters[i] …".
    fn from_value(value: &Value) -> Result<Circle, String> {
        let shape = Circle::SHAPE;
        let Value::Object(object) = value else {
            return Err(format!(
                "uses within with a property_value that is not an object; give {shape}"
            ));
        };
        if let Some(unknown) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "coordinates" | "max_distance_miles"))
        {
            return Err(format!(
                "uses within with an unknown field {unknown:?} in its property_value; give {shape}"
            ));
        }
        let centre = match object.get("coordinates") {
            None => {
                return Err(format!(
                    "uses within with no coordinates in its property_value; give {shape}"
                ));
            }
            Some(coordinates) => Point::from_value(coordinates).ok_or_else(|| {
                "uses within with coordinates that are not [longitude, latitude]: two numbers, \
                 longitude in [-180, 180] and latitude in [-90, 90]"
                    .to_string()
            })?,
        };
        let miles = match object.get("max_distance_miles") {
            None => {
                return Err(format!(
                    "uses within with no max_distance_miles in its property_value; give {shape}"
                ));
            }
            Some(miles) => miles
                .as_f64()
                .filter(|m| m.is_finite() && *m > 0.0)
                .ok_or_else(|| {
                    "uses within with a max_distance_miles that is not a number above 0".to_string()
                })?,
        };
        Ok(Circle { centre, miles })
    }

    fn holds(self, point: Point) -> bool {
        self.centre.miles_to(point) <= self.miles
    }
}

/// Filters ANDed together; no filters matches every event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters(Vec<Filter>);

impl Filters {
    /// Parses the `filters` parameter: a JSON array of filter objects.
    pub fn parse(text: &str) -> Result<Filters, QueryError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => Filters::from_values(&items, "filters"),
            Ok(_) => Err(QueryError::Filter(
                "filters is not a JSON array; give [{\"property_name\": ..., \"operator\": ..., \
                 \"property_value\": ...}, ...]"
                    .into(),
            )),
            Err(e) => Err(QueryError::Filter(format!(
                "filters is not valid JSON ({e}); give a JSON array of filter objects"
            ))),
        }
    }

    /// Validates filter objects already decoded (a key's `options.queries.filters`); `origin`
    /// names the list in errors (`filters[3] …`).
    pub fn from_values(items: &[Value], origin: &str) -> Result<Filters, QueryError> {
        if items.len() > MAX_FILTERS {
            return Err(QueryError::Filter(format!(
                "{origin} holds {} filters; at most {MAX_FILTERS} are accepted",
                items.len()
            )));
        }
        items
            .iter()
            .enumerate()
            .map(|(index, item)| Filter::from_value(item, &format!("{origin}[{index}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Filters)
    }

    /// Both sets of filters, ANDed.
    pub fn and(mut self, other: Filters) -> Filters {
        self.0.extend(other.0);
        self
    }

    /// Whether the event passes every filter.
    pub fn matches(&self, event: &Value) -> bool {
        self.0.iter().all(|filter| filter.matches(event))
    }

    /// Whether there are no filters (a count can then use the hourly counters).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many filters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The filters in order.
    pub fn iter(&self) -> impl Iterator<Item = &Filter> {
        self.0.iter()
    }
}

impl From<Vec<Filter>> for Filters {
    fn from(filters: Vec<Filter>) -> Self {
        Filters(filters)
    }
}

/// The value at a dotted path through nested objects.
pub fn lookup<'a>(event: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(event, |value, segment| value.as_object()?.get(segment))
}

/// Filter values on the two stored timestamps are brought to the stored form, so that
/// `"2024-03-09T10:00:00+02:00"` compares as the instant it names. Arrays (`in`) are
/// normalised element by element; non-string values are left alone (they match nothing).
fn normalise_timestamps(property_name: &str, value: &Value) -> Result<Value, String> {
    if !matches!(property_name, "keen.timestamp" | "keen.created_at") {
        return Ok(value.clone());
    }
    match value {
        Value::String(text) => timestamp::normalise(text)
            .map(Value::String)
            .map_err(|e| format!("{text:?}, which is not an ISO-8601 date-time: {e}")),
        Value::Array(items) => items
            .iter()
            .map(|item| normalise_timestamps(property_name, item))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// `eq`: same type and equal, or an array property holding the value.
fn equals(property: &Value, value: &Value) -> bool {
    same(property, value)
        || property
            .as_array()
            .is_some_and(|items| items.iter().any(|item| same(item, value)))
}

/// Structural equality with numbers compared numerically.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => same_objects(x, y),
        _ => a == b,
    }
}

fn same_objects(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len()
        && x.iter()
            .all(|(key, a)| y.get(key).is_some_and(|b| same(a, b)))
}

/// The order of a property against a filter value; `None` when either is missing or their
/// types differ.
fn compare(property: Option<&Value>, value: &Value) -> Option<Ordering> {
    match (property?, value) {
        (Value::Number(a), Value::Number(b)) => compare_numbers(a, b),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// Integers compare exactly (as i128), anything else as f64.
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    let integer = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// `contains`: substring of a string property, element of an array property.
fn contains(property: &Value, value: &Value) -> bool {
    match (property, value) {
        (Value::String(haystack), Value::String(needle)) => haystack.contains(needle.as_str()),
        (Value::Array(items), _) => items.iter().any(|item| same(item, value)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn filter(property_name: &str, operator: &str, property_value: Value) -> Filter {
        Filter::from_value(
            &json!({"property_name": property_name, "operator": operator, "property_value": property_value}),
            "filters[0]",
        )
        .expect("valid filter")
    }

    fn event() -> Value {
        json!({
            "price": 20,
            "ratio": 0.5,
            "big": 18446744073709551615u64,
            "name": "golden widget",
            "paid": true,
            "note": null,
            "tags": ["a", "b", 3],
            "matrix": [[1, 2]],
            "user": {"address": {"city": "Berlin"}, "age": 41},
            "keen": {"timestamp": "2024-03-09T10:00:00.000Z", "id": "1bb51b6fbfd8d21897271fce"}
        })
    }

    /// (path, operator, value, expected) against [`event`].
    #[test]
    fn every_operator() {
        let cases: &[(&str, &str, Value, bool)] = &[
            // eq / ne, numbers numerically.
            ("price", "eq", json!(20), true),
            ("price", "eq", json!(20.0), true),
            ("price", "eq", json!(21), false),
            ("price", "ne", json!(21), true),
            ("price", "ne", json!(20.0), false),
            ("big", "eq", json!(18446744073709551615u64), true),
            ("big", "gt", json!(9223372036854775807i64), true),
            ("name", "eq", json!("golden widget"), true),
            ("name", "eq", json!("Golden widget"), false),
            ("paid", "eq", json!(true), true),
            ("note", "eq", json!(null), true),
            ("user.address.city", "eq", json!("Berlin"), true),
            ("user.address", "eq", json!({"city": "Berlin"}), true),
            // eq against an array property: equal, or holding the value.
            ("tags", "eq", json!("a"), true),
            ("tags", "eq", json!(3.0), true),
            ("tags", "eq", json!("c"), false),
            ("tags", "eq", json!(["a", "b", 3]), true),
            ("tags", "ne", json!("a"), false),
            ("tags", "ne", json!("c"), true),
            ("matrix", "eq", json!([1, 2]), true),
            // Type mismatches: false, and ne true.
            ("price", "eq", json!("20"), false),
            ("price", "ne", json!("20"), true),
            ("price", "lt", json!("30"), false),
            ("name", "gt", json!(1), false),
            ("paid", "eq", json!(1), false),
            ("note", "eq", json!(false), false),
            ("user", "eq", json!("Berlin"), false),
            // Ordering.
            ("price", "lt", json!(21), true),
            ("price", "lt", json!(20), false),
            ("price", "lte", json!(20), true),
            ("price", "gt", json!(19.5), true),
            ("price", "gte", json!(20), true),
            ("price", "gte", json!(20.01), false),
            ("ratio", "lt", json!(1), true),
            ("name", "gt", json!("gold"), true),
            ("name", "lt", json!("h"), true),
            ("name", "lte", json!("golden widget"), true),
            ("tags", "gt", json!("a"), false),
            // Timestamps compare as instants, whatever zone the filter value is written in.
            (
                "keen.timestamp",
                "gte",
                json!("2024-03-09T11:00:00+01:00"),
                true,
            ),
            (
                "keen.timestamp",
                "gt",
                json!("2024-03-09T11:00:00+01:00"),
                false,
            ),
            (
                "keen.timestamp",
                "lt",
                json!("2024-03-09T10:00:00.001Z"),
                true,
            ),
            ("keen.timestamp", "eq", json!("2024-03-09T10:00:00Z"), true),
            (
                "keen.timestamp",
                "in",
                json!(["2024-03-09T12:00:00+02:00"]),
                true,
            ),
            // exists.
            ("price", "exists", json!(true), true),
            ("price", "exists", json!(false), false),
            ("note", "exists", json!(true), true),
            ("user.address", "exists", json!(true), true),
            // in.
            ("price", "in", json!([1, 20]), true),
            ("price", "in", json!([1, "20"]), false),
            ("name", "in", json!(["golden widget", "x"]), true),
            ("tags", "in", json!(["z", "b"]), true),
            ("tags", "in", json!(["z"]), false),
            ("price", "in", json!([]), false),
            // contains / not_contains.
            ("name", "contains", json!("widget"), true),
            ("name", "contains", json!("Widget"), false),
            ("name", "contains", json!(""), true),
            ("name", "not_contains", json!("widget"), false),
            ("name", "not_contains", json!("gadget"), true),
            ("tags", "contains", json!("b"), true),
            ("tags", "contains", json!(3), true),
            ("tags", "contains", json!("ab"), false),
            ("tags", "not_contains", json!("z"), true),
            ("price", "contains", json!(2), false),
            ("price", "not_contains", json!(2), true),
            ("name", "contains", json!(1), false),
            // regex: searched anywhere unless anchored; arrays by their string elements.
            ("name", "regex", json!("widget"), true),
            ("name", "regex", json!("^gold"), true),
            ("name", "regex", json!("^widget"), false),
            ("name", "regex", json!("widget$"), true),
            ("name", "regex", json!("^golden widget$"), true),
            ("name", "regex", json!("^golden$"), false),
            ("name", "regex", json!("Widget"), false),
            ("name", "regex", json!("(?i)WIDGET"), true),
            ("name", "regex", json!(r"^\w+\s\w+$"), true),
            ("name", "regex", json!(r"\d"), false),
            ("name", "regex", json!(""), true),
            ("keen.id", "regex", json!(r"^[0-9a-f]{24}$"), true),
            ("keen.timestamp", "regex", json!(r"^2024-03-\d\dT"), true),
            ("user.address.city", "regex", json!("^B.rl"), true),
            ("tags", "regex", json!("^b$"), true),
            ("tags", "regex", json!("^3$"), false),
            ("tags", "regex", json!("c"), false),
            ("price", "regex", json!("20"), false),
            ("ratio", "regex", json!(r"\d"), false),
            ("paid", "regex", json!("true"), false),
            ("note", "regex", json!(""), false),
            ("user", "regex", json!("Berlin"), false),
            ("matrix", "regex", json!(""), false),
        ];
        for (path, operator, value, expected) in cases {
            let filter = filter(path, operator, value.clone());
            assert_eq!(
                filter.matches(&event()),
                *expected,
                "{path} {operator} {value}"
            );
        }
    }

    #[test]
    fn a_missing_property_fails_all_but_ne_not_contains_and_exists_false() {
        let cases: &[(&str, Value, bool)] = &[
            ("eq", json!(1), false),
            ("eq", json!(null), false),
            ("ne", json!(1), true),
            ("lt", json!(1), false),
            ("lte", json!(1), false),
            ("gt", json!(1), false),
            ("gte", json!("a"), false),
            ("exists", json!(true), false),
            ("exists", json!(false), true),
            ("in", json!([1, null]), false),
            ("contains", json!("a"), false),
            ("not_contains", json!("a"), true),
            ("regex", json!(""), false),
        ];
        for path in [
            "absent",
            "user.absent",
            "user.address.city.deeper",
            "price.cents",
        ] {
            for (operator, value, expected) in cases {
                let filter = filter(path, operator, value.clone());
                assert_eq!(
                    filter.matches(&event()),
                    *expected,
                    "{path} {operator} {value}"
                );
            }
        }
        // Not an object at all.
        assert!(!filter("a", "eq", json!(1)).matches(&json!([1])));
    }

    #[test]
    fn filters_are_anded() {
        let filters = Filters::parse(
            r#"[{"property_name": "price", "operator": "gte", "property_value": 10},
                {"property_name": "user.address.city", "operator": "eq", "property_value": "Berlin"}]"#,
        )
        .expect("valid");
        assert_eq!(filters.len(), 2);
        assert!(filters.matches(&event()));
        let stricter = filters.clone().and(
            Filters::from_values(
                &[json!({"property_name": "paid", "operator": "eq", "property_value": false})],
                "the key's options.queries.filters",
            )
            .expect("valid"),
        );
        assert_eq!(stricter.len(), 3);
        assert!(!stricter.matches(&event()));
        assert!(Filters::parse("[]").expect("empty").matches(&json!({})));
        assert!(Filters::default().is_empty());
    }

    #[test]
    fn malformed_filters_are_named_by_index_and_fault() {
        let cases = [
            ("{}", "not a JSON array"),
            ("[", "not valid JSON"),
            ("[1]", "filters[0] is not an object"),
            (
                r#"[{"property_name": "a", "operator": "eq", "property_value": 1}, {"operator": "eq", "property_value": 1}]"#,
                "filters[1] has no property_name",
            ),
            (
                r#"[{"property_name": 1, "operator": "eq", "property_value": 1}]"#,
                "property_name that is not a string",
            ),
            (
                r#"[{"property_name": "", "operator": "eq", "property_value": 1}]"#,
                "not a dotted path",
            ),
            (
                r#"[{"property_name": "a..b", "operator": "eq", "property_value": 1}]"#,
                "not a dotted path",
            ),
            (
                r#"[{"property_name": "a", "property_value": 1}]"#,
                "filters[0] has no operator",
            ),
            (
                r#"[{"property_name": "a", "operator": "between", "property_value": 1}]"#,
                "operator \"between\", which is not one of eq, ne",
            ),
            (
                r#"[{"property_name": "a", "operator": "eq"}]"#,
                "has no property_value",
            ),
            (
                r#"[{"property_name": "a", "operator": "exists", "property_value": "yes"}]"#,
                "not true or false",
            ),
            (
                r#"[{"property_name": "a", "operator": "in", "property_value": 1}]"#,
                "not an array",
            ),
            (
                r#"[{"property_name": "a", "operator": "lt", "property_value": [1]}]"#,
                "neither a number nor a string",
            ),
            (
                r#"[{"property_name": "a", "operator": "gte", "property_value": null}]"#,
                "neither a number nor a string",
            ),
            (
                r#"[{"property_name": "a", "operator": "eq", "property_value": 1, "x": 2}]"#,
                "unknown field \"x\"",
            ),
            (
                r#"[{"property_name": "keen.timestamp", "operator": "gt", "property_value": "yesterday"}]"#,
                "not an ISO-8601 date-time",
            ),
            (
                r#"[{"property_name": "a", "operator": "regex", "property_value": 1}]"#,
                "filters[0] uses regex with a property_value that is not a string",
            ),
            (
                r#"[{"property_name": "a", "operator": "regex", "property_value": ["a"]}]"#,
                "not a string",
            ),
            (
                r#"[{"property_name": "a", "operator": "eq", "property_value": 1}, {"property_name": "a", "operator": "regex", "property_value": "(a"}]"#,
                "filters[1] uses regex with a pattern that does not compile",
            ),
            (
                r#"[{"property_name": "a", "operator": "regex", "property_value": "(a"}]"#,
                "unclosed group",
            ),
            (
                r#"[{"property_name": "a", "operator": "regex", "property_value": "(?=a)"}]"#,
                "look-around",
            ),
            (
                r#"[{"property_name": "a", "operator": "regex", "property_value": "(a)\\1"}]"#,
                "backreferences",
            ),
        ];
        for (text, expected) in cases {
            match Filters::parse(text) {
                Err(QueryError::Filter(message)) => {
                    assert!(message.contains(expected), "{text}: {message}");
                }
                other => panic!("{text} gave {other:?}"),
            }
        }
        let too_many = vec![
            json!({"property_name": "a", "operator": "eq", "property_value": 1});
            MAX_FILTERS + 1
        ];
        assert!(Filters::from_values(&too_many, "filters").is_err());
        let Err(error) = Filters::from_values(&[json!(1)], "the key's options.queries.filters")
        else {
            panic!("accepted")
        };
        assert!(
            error
                .message()
                .starts_with("the key's options.queries.filters[0]")
        );
    }

    fn filter_error(property_name: &str, operator: &str, property_value: Value) -> QueryError {
        Filter::from_value(
            &json!({"property_name": property_name, "operator": operator, "property_value": property_value}),
            "filters[2]",
        )
        .expect_err("refused")
    }

    #[test]
    fn regex_patterns_are_bounded() {
        let longest = "a".repeat(MAX_PATTERN_BYTES);
        assert!(filter("name", "regex", json!(longest)).matches(&json!({"name": longest})));
        let QueryError::Filter(message) =
            filter_error("name", "regex", json!("a".repeat(MAX_PATTERN_BYTES + 1)))
        else {
            panic!("not a FilterError")
        };
        assert!(
            message.starts_with("filters[2] uses regex with a pattern of 1001 bytes"),
            "{message}"
        );
        // Short, but enormous once compiled: refused at parse time, not when events are read.
        let QueryError::Filter(message) = filter_error("name", "regex", json!(r"\w{1000}\w{1000}"))
        else {
            panic!("not a FilterError")
        };
        assert!(
            message.starts_with("filters[2] uses regex with a pattern that compiles to more than"),
            "{message}"
        );
        // Usual patterns, and the ASCII form the message suggests, are well inside the bound.
        for pattern in [
            r"\w{20}",
            r"(?-u:\w){500}",
            r"[A-Za-z0-9_]{500}",
            r"^\d{3}-\d{4}$",
            r"(?i)^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$",
            r".{500}",
        ] {
            assert!(
                Pattern::compile(&json!(pattern)).is_ok(),
                "{pattern} was refused"
            );
        }
    }

    /// A pattern that backtracking engines take exponential time over: linear here, so this
    /// finishes at once instead of hanging the test.
    #[test]
    fn regex_matching_is_linear_in_the_input() {
        let mut text = "a".repeat(100_000);
        text.push('!');
        let event = json!({"name": text});
        assert!(!filter("name", "regex", json!("(a+)+$")).matches(&event));
        assert!(!filter("name", "regex", json!("^(a|aa)*$")).matches(&event));
        assert!(filter("name", "regex", json!("(a+)+!$")).matches(&event));
    }

    #[test]
    fn regex_filters_compare_by_pattern() {
        assert_eq!(
            filter("name", "regex", json!("^a")),
            filter("name", "regex", json!("^a"))
        );
        assert_ne!(
            filter("name", "regex", json!("^a")),
            filter("name", "regex", json!("^b"))
        );
        let parsed = filter("name", "regex", json!("^g"));
        assert!(parsed.clone().matches(&event()));
        assert_eq!(parsed.property_value, json!("^g"));
    }

    const PARIS: [f64; 2] = [2.3522, 48.8566];
    const LONDON: [f64; 2] = [-0.1276, 51.5072];

    fn at(coordinates: [f64; 2]) -> Value {
        json!({"keen": {"location": {"coordinates": coordinates}}})
    }

    fn within(centre: [f64; 2], miles: f64) -> Filter {
        filter(
            "keen.location.coordinates",
            "within",
            json!({"coordinates": centre, "max_distance_miles": miles}),
        )
    }

    #[test]
    fn haversine_distances() {
        let miles = |a: [f64; 2], b: [f64; 2]| {
            let point = |[longitude, latitude]: [f64; 2]| Point {
                longitude,
                latitude,
            };
            point(a).miles_to(point(b))
        };
        let cases: &[([f64; 2], [f64; 2], f64)] = &[
            (PARIS, LONDON, 213.46),
            (PARIS, PARIS, 0.0),
            // Across the antimeridian: 0.2 degrees of longitude on the equator.
            ([179.9, 0.0], [-179.9, 0.0], 13.82),
            ([-180.0, 10.0], [180.0, 10.0], 0.0),
            // At a pole every longitude is the same point.
            ([0.0, 90.0], [123.0, 90.0], 0.0),
            ([10.0, 89.99], [-170.0, 89.99], 1.38),
            ([0.0, 90.0], [0.0, -90.0], 12_436.94),
            ([0.0, 0.0], [180.0, 0.0], 12_436.94),
        ];
        for (a, b, expected) in cases {
            let got = miles(*a, *b);
            assert!((got - expected).abs() < 0.01, "{a:?} to {b:?}: {got}");
            assert!((miles(*b, *a) - got).abs() < 1e-9, "symmetric");
        }
    }

    #[test]
    fn within_matches_events_inside_the_circle() {
        let cases: &[(Filter, Value, bool)] = &[
            (within(PARIS, 220.0), at(LONDON), true),
            (within(PARIS, 200.0), at(LONDON), false),
            (within(LONDON, 213.5), at(PARIS), true),
            (within(LONDON, 213.4), at(PARIS), false),
            (within(PARIS, 0.001), at(PARIS), true),
            (within([179.9, -16.0], 15.0), at([-179.9, -16.0]), true),
            (within([-179.9, -16.0], 5.0), at([179.9, -16.0]), false),
            (within([0.0, 90.0], 1.0), at([-75.0, 90.0]), true),
            (within([0.0, 89.99], 2.0), at([180.0, 89.99]), true),
            (within([0.0, -90.0], 100.0), at([0.0, 90.0]), false),
            (within([0.0, 0.0], 12_500.0), at([180.0, 0.0]), true),
            // The alias names the same coordinates.
            (
                filter(
                    "keen.location",
                    "within",
                    json!({"coordinates": PARIS, "max_distance_miles": 220}),
                ),
                at(LONDON),
                true,
            ),
            // No location, or not a valid one: no match.
            (within(PARIS, 1e6), json!({}), false),
            (within(PARIS, 1e6), json!({"keen": {}}), false),
            (
                within(PARIS, 1e6),
                json!({"keen": {"location": null}}),
                false,
            ),
            (
                within(PARIS, 1e6),
                json!({"keen": {"location": {"coordinates": null}}}),
                false,
            ),
            (
                within(PARIS, 1e6),
                json!({"keen": {"location": {"coordinates": [2.35]}}}),
                false,
            ),
            (
                within(PARIS, 1e6),
                json!({"keen": {"location": {"coordinates": [2.35, 48.85, 0]}}}),
                false,
            ),
            (
                within(PARIS, 1e6),
                json!({"keen": {"location": {"coordinates": ["2.35", 48.85]}}}),
                false,
            ),
            (within(PARIS, 1e6), at([2.35, 91.0]), false),
            (within(PARIS, 1e6), at([181.0, 48.85]), false),
            (
                within(PARIS, 1e6),
                json!({"keen": {"location": [2.35, 48.85]}}),
                false,
            ),
            // Coordinates elsewhere in the event are not the event's location.
            (within(PARIS, 1e6), json!({"coordinates": PARIS}), false),
        ];
        for (filter, event, expected) in cases {
            assert_eq!(
                filter.matches(event),
                *expected,
                "{} within {} of {event}",
                filter.property_name,
                filter.property_value
            );
        }
    }

    #[test]
    fn within_is_only_for_keen_location() {
        let value = json!({"coordinates": PARIS, "max_distance_miles": 10});
        for name in [
            "location.coordinates",
            "keen.location.coordinates.0",
            "user.location",
            "keen",
            "",
        ] {
            let error = filter_error(name, "within", value.clone());
            assert_eq!(
                error.error_code(),
                "InvalidPropertyNameForGeoFilter",
                "{name}"
            );
            assert_eq!(error.status(), 400);
            assert!(
                error.message().starts_with(&format!(
                    "You specified a geo filter on a property other than \
                     keen.location.coordinates, which is not allowed. You specified: '{name}'."
                )),
                "{}",
                error.message()
            );
            assert!(
                error.message().contains("filters[2]"),
                "{}",
                error.message()
            );
        }
        // Before the value is looked at.
        assert_eq!(
            filter_error("user.location", "within", json!(1)).error_code(),
            "InvalidPropertyNameForGeoFilter"
        );
    }

    #[test]
    fn malformed_within_values_are_filter_errors() {
        let cases: &[(Value, &str)] = &[
            (json!([2.35, 48.85]), "not an object"),
            (json!("Paris"), "not an object"),
            (json!({"max_distance_miles": 10}), "no coordinates"),
            (json!({"coordinates": PARIS}), "no max_distance_miles"),
            (
                json!({"coordinates": PARIS, "max_distance_miles": 10, "units": "km"}),
                "unknown field \"units\"",
            ),
            (
                json!({"coordinates": PARIS, "maxDistanceMiles": 10}),
                "unknown field \"maxDistanceMiles\"",
            ),
            (
                json!({"coordinates": [2.35], "max_distance_miles": 10}),
                "not [longitude, latitude]",
            ),
            (
                json!({"coordinates": [2.35, 48.85, 0], "max_distance_miles": 10}),
                "not [longitude, latitude]",
            ),
            (
                json!({"coordinates": ["2.35", 48.85], "max_distance_miles": 10}),
                "not [longitude, latitude]",
            ),
            (
                json!({"coordinates": {"lon": 2.35, "lat": 48.85}, "max_distance_miles": 10}),
                "not [longitude, latitude]",
            ),
            (
                json!({"coordinates": [180.5, 0], "max_distance_miles": 10}),
                "longitude in [-180, 180]",
            ),
            (
                json!({"coordinates": [0, -90.5], "max_distance_miles": 10}),
                "latitude in [-90, 90]",
            ),
            (
                json!({"coordinates": PARIS, "max_distance_miles": 0}),
                "not a number above 0",
            ),
            (
                json!({"coordinates": PARIS, "max_distance_miles": -5}),
                "not a number above 0",
            ),
            (
                json!({"coordinates": PARIS, "max_distance_miles": "10"}),
                "not a number above 0",
            ),
            (
                json!({"coordinates": PARIS, "max_distance_miles": null}),
                "not a number above 0",
            ),
        ];
        for (value, expected) in cases {
            match filter_error("keen.location.coordinates", "within", value.clone()) {
                QueryError::Filter(message) => {
                    assert!(message.starts_with("filters[2] uses within"), "{message}");
                    assert!(message.contains(expected), "{value}: {message}");
                }
                other => panic!("{value} gave {other:?}"),
            }
        }
        // The edges of the ranges are valid.
        assert!(
            within([-180.0, -90.0], 1.0).matches(&at([180.0, -90.0])),
            "the south pole is one point"
        );
        let QueryError::Filter(message) =
            filter_error("keen.location", "within", json!({"coordinates": PARIS}))
        else {
            panic!("not a FilterError")
        };
        assert!(message.contains("no max_distance_miles"), "{message}");
    }

    #[test]
    fn every_operator_parses_by_its_name() {
        for operator in Operator::ALL {
            assert_eq!(Operator::parse(operator.as_str()), Some(operator));
        }
        assert_eq!(Operator::parse("within"), Some(Operator::Within));
        assert_eq!(Operator::parse("regex"), Some(Operator::Regex));
        assert_eq!(Operator::parse("Regex"), None);
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|n| json!(n)),
            "[a-c]{0,3}".prop_map(Value::String),
        ]
    }

    fn property() -> impl Strategy<Value = Value> {
        prop_oneof![
            scalar(),
            prop::collection::vec(scalar(), 0..4).prop_map(Value::Array)
        ]
    }

    proptest! {
        /// ne and not_contains are the exact negations of eq and contains, present or not;
        /// lt/gte and gt/lte split every comparable pair.
        #[test]
        fn negations_are_exact(stored in proptest::option::of(property()), value in scalar()) {
            let event = match &stored {
                Some(v) => json!({"p": v}),
                None => json!({}),
            };
            let check = |op: &str| {
                Filter::from_value(&json!({"property_name": "p", "operator": op, "property_value": value}), "f")
                    .map(|f| f.matches(&event))
            };
            prop_assert_eq!(check("eq").ok().map(|b| !b), check("ne").ok());
            prop_assert_eq!(check("contains").ok().map(|b| !b), check("not_contains").ok());
            if let (Ok(lt), Ok(gte)) = (check("lt"), check("gte")) {
                let comparable = compare(lookup(&event, "p"), &value).is_some();
                prop_assert_eq!(lt || gte, comparable);
                prop_assert!(!(lt && gte));
            }
        }
    }
}
