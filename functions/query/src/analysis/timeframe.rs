//! Timeframes and timezones (product.md §9): which half-open window of `keen.timestamp` a query
//! covers.
//!
//! Relative timeframes follow the analytics API: `this_N_units` is the current unit and the N-1
//! before it, **including the whole current unit** (its end lies in the future, which is harmless
//! for stored data and makes `this_day` equal `today`); `previous_N_units` is the N complete
//! units before the current one. Units are aligned in the query's timezone; weeks start on
//! Sunday, as the analytics API's weekly interval buckets do, so `this_week` is the current
//! `weekly` bucket. Minutes and hours step in real elapsed time, days and longer units step on
//! the zone's calendar, so a day across a DST change lasts 23 or 25 hours.

use super::QueryError;
use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, Months, NaiveDate, NaiveDateTime, TimeDelta,
    TimeZone, Timelike,
};
use chrono_tz::Tz;
use keen_shared::timestamp;
use serde_json::Value;

/// The first instant the product can store: 0000-01-01T00:00:00.000Z.
pub const MIN_TIMESTAMP_MS: i64 = -62_167_219_200_000;
/// Just past the last instant the product can store: 10000-01-01T00:00:00.000Z.
pub const END_TIMESTAMP_MS: i64 = 253_402_300_800_000;
/// A relative timeframe may reach this far back: further is surely a typo, and the bound keeps
/// every computation inside chrono's range.
pub(super) const MAX_SPAN_YEARS: u64 = 10_000;
pub(super) const MINUTE_MS: i64 = 60_000;
pub(super) const HOUR_MS: i64 = 3_600_000;
/// Offsets in seconds beyond ±18 h are refused: no zone has ever used one.
const MAX_OFFSET_SECONDS: i32 = 18 * 3600;

/// A half-open window of instants `[start_ms, end_ms)`, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// First instant included.
    pub start_ms: i64,
    /// First instant excluded.
    pub end_ms: i64,
}

impl Window {
    /// Every instant a stored `keen.timestamp` can hold: a query without a timeframe.
    pub const ALL_TIME: Window = Window {
        start_ms: MIN_TIMESTAMP_MS,
        end_ms: END_TIMESTAMP_MS,
    };

    /// `[start_ms, end_ms)`.
    pub const fn new(start_ms: i64, end_ms: i64) -> Window {
        Window { start_ms, end_ms }
    }

    /// Whether no instant lies inside.
    pub const fn is_empty(&self) -> bool {
        self.start_ms >= self.end_ms
    }

    /// Whether `ms` lies inside.
    pub const fn contains(&self, ms: i64) -> bool {
        self.start_ms <= ms && ms < self.end_ms
    }

    /// Length in milliseconds (0 when empty).
    pub const fn duration_ms(&self) -> i64 {
        if self.is_empty() {
            0
        } else {
            self.end_ms - self.start_ms
        }
    }

    /// Inclusive bounds for a DynamoDB `sk BETWEEN :a AND :b` over the Events table's sort keys
    /// (`{keen.timestamp}#{keen.id}`): `None` when the window holds no storable instant. The
    /// upper bound is the last included millisecond followed by `#~`, which sorts after every
    /// `#{hex id}` (and its `#part#n` items, which readers skip anyway).
    pub fn sort_key_bounds(&self) -> Option<(String, String)> {
        let start = self.start_ms.max(MIN_TIMESTAMP_MS);
        let end = self.end_ms.min(END_TIMESTAMP_MS);
        if start >= end {
            return None;
        }
        Some((
            timestamp::format_millis(start),
            format!("{}#~", timestamp::format_millis(end - 1)),
        ))
    }
}

/// The timezone relative timeframes are aligned in: a fixed offset or an IANA zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timezone {
    /// A fixed offset east of UTC (the API's "offset in seconds").
    Offset(FixedOffset),
    /// An IANA zone, whose offset follows its DST rules and history.
    Named(Tz),
}

impl Default for Timezone {
    /// UTC, as product.md §9 says.
    fn default() -> Self {
        Timezone::Named(Tz::UTC)
    }
}

impl Timezone {
    /// Parses the `timezone` parameter: seconds east of UTC (`-28800`, `3600`, `+19800`; at most
    /// ±18 hours) or an IANA name, case as in the tz database (`Europe/Berlin`, `UTC`).
    pub fn parse(text: &str) -> Result<Timezone, QueryError> {
        let text = text.trim();
        if let Ok(seconds) = text.parse::<i64>() {
            return i32::try_from(seconds)
                .ok()
                .filter(|s| s.abs() <= MAX_OFFSET_SECONDS)
                .and_then(FixedOffset::east_opt)
                .map(Timezone::Offset)
                .ok_or_else(|| {
                    QueryError::InvalidParameter(format!(
                        "timezone {text} is an offset of more than 18 hours; give the offset in \
                         seconds east of UTC, between -64800 and 64800 (e.g. -28800 for UTC-8)"
                    ))
                });
        }
        text.parse::<Tz>().map(Timezone::Named).map_err(|_| {
            QueryError::InvalidParameter(format!(
                "timezone {text:?} is neither an offset in seconds (e.g. -28800) nor an IANA \
                 zone name (e.g. Europe/Berlin, America/New_York, UTC; names are case-sensitive)"
            ))
        })
    }

    /// The wall-clock time at an instant.
    pub fn local(&self, ms: i64) -> NaiveDateTime {
        match self {
            Timezone::Offset(offset) => local_in(offset, ms),
            Timezone::Named(zone) => local_in(zone, ms),
        }
    }

    /// The first instant whose wall-clock time is `local` or later: the earlier one when the
    /// time occurs twice (clocks set back), the moment of the jump when it never occurs (clocks
    /// set forward over it), so a unit that starts in a gap starts when the gap ends.
    pub fn first_instant_at_or_after(&self, local: NaiveDateTime) -> i64 {
        match self {
            Timezone::Offset(offset) => first_instant_in(offset, local),
            Timezone::Named(zone) => first_instant_in(zone, local),
        }
    }
}

fn utc_of(ms: i64) -> NaiveDateTime {
    // Clamped well inside chrono's range (±262,000 years): callers stay within ±20,000 years.
    const LIMIT: i64 = 3_000_000_000_000_000;
    DateTime::from_timestamp_millis(ms.clamp(-LIMIT, LIMIT))
        .unwrap_or_default()
        .naive_utc()
}

fn local_in<Z: TimeZone>(zone: &Z, ms: i64) -> NaiveDateTime {
    zone.from_utc_datetime(&utc_of(ms)).naive_local()
}

fn first_instant_in<Z: TimeZone>(zone: &Z, local: NaiveDateTime) -> i64 {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(instant) => instant.timestamp_millis(),
        LocalResult::Ambiguous(earliest, _) => earliest.timestamp_millis(),
        LocalResult::None => {
            // A gap: bisect for the jump. Offsets stay under 26 hours, so the wall clock reads
            // before `local` at `lo` and at or after it at `hi`.
            let guess = local.and_utc().timestamp_millis();
            let (mut lo, mut hi) = (guess - 26 * HOUR_MS, guess + 26 * HOUR_MS);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if local_in(zone, mid) >= local {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            hi
        }
    }
}

/// The units of a relative timeframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Minutes,
    Hours,
    Days,
    /// Sunday to Saturday.
    Weeks,
    Months,
    Years,
}

impl Unit {
    pub(super) fn parse(text: &str) -> Option<Unit> {
        Some(match text {
            "minute" | "minutes" => Unit::Minutes,
            "hour" | "hours" => Unit::Hours,
            "day" | "days" => Unit::Days,
            "week" | "weeks" => Unit::Weeks,
            "month" | "months" => Unit::Months,
            "year" | "years" => Unit::Years,
            _ => return None,
        })
    }

    /// The plural name, as in `this_7_days`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Minutes => "minutes",
            Unit::Hours => "hours",
            Unit::Days => "days",
            Unit::Weeks => "weeks",
            Unit::Months => "months",
            Unit::Years => "years",
        }
    }

    /// How many of this unit fit in [`MAX_SPAN_YEARS`] (rounded up: 366-day years).
    pub(super) const fn max_count(self) -> u64 {
        match self {
            Unit::Minutes => MAX_SPAN_YEARS * 366 * 24 * 60,
            Unit::Hours => MAX_SPAN_YEARS * 366 * 24,
            Unit::Days => MAX_SPAN_YEARS * 366,
            Unit::Weeks => MAX_SPAN_YEARS * 53,
            Unit::Months => MAX_SPAN_YEARS * 12,
            Unit::Years => MAX_SPAN_YEARS,
        }
    }
}

/// `this` (includes the current unit) or `previous` (complete units before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relative {
    This,
    Previous,
}

/// The `timeframe` parameter, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeframe {
    /// `this_N_units` / `previous_N_units`, resolved against "now" in the query's timezone.
    Relative {
        relative: Relative,
        /// At least 1; `this_hour` is 1.
        count: u32,
        unit: Unit,
    },
    /// `{"start": ..., "end": ...}`: start inclusive, end exclusive, timezone ignored.
    Absolute(Window),
}

impl Timeframe {
    /// Parses `this_N_units`, `previous_N_units`, `this_<unit>`, `previous_<unit>`, `today`,
    /// `yesterday` (singular and plural units alike), or an absolute `{"start", "end"}` object
    /// of ISO-8601 date-times (the forms `keen.timestamp` accepts). The whole parameter may also
    /// be a JSON string (`"this_7_days"` in quotes), as some clients JSON-encode every value.
    /// Absolute instants are truncated to the millisecond, as stored timestamps are.
    pub fn parse(text: &str) -> Result<Timeframe, QueryError> {
        let text = text.trim();
        if text.starts_with('{') {
            return parse_absolute(text);
        }
        if text.starts_with('"') {
            return match serde_json::from_str::<String>(text) {
                Ok(inner) if !inner.trim_start().starts_with('"') => Timeframe::parse(&inner),
                _ => Err(not_a_timeframe(text)),
            };
        }
        parse_relative(text).ok_or_else(|| not_a_timeframe(text))?
    }

    /// The window this timeframe covers at `now_ms`. Relative timeframes align on unit
    /// boundaries in `tz` (see the module docs); absolute ones ignore `tz`.
    pub fn resolve(&self, now_ms: i64, tz: &Timezone) -> Window {
        let (relative, count, unit) = match *self {
            Timeframe::Absolute(window) => return window,
            Timeframe::Relative {
                relative,
                count,
                unit,
            } => (relative, i64::from(count), unit),
        };
        let now_ms = now_ms.clamp(MIN_TIMESTAMP_MS, END_TIMESTAMP_MS - 1);
        // Units to step back from the start of the current one, and forward to the end.
        let (back, forward) = match relative {
            Relative::This => (count - 1, 1),
            Relative::Previous => (count, 0),
        };
        let local = tz.local(now_ms);
        match unit {
            Unit::Minutes | Unit::Hours => {
                let sub_minute =
                    i64::from(local.second()) * 1000 + i64::from(local.nanosecond() / 1_000_000);
                let (into_unit, unit_ms) = if unit == Unit::Minutes {
                    (sub_minute, MINUTE_MS)
                } else {
                    (i64::from(local.minute()) * MINUTE_MS + sub_minute, HOUR_MS)
                };
                let current = now_ms - into_unit;
                Window::new(current - back * unit_ms, current + forward * unit_ms)
            }
            Unit::Days | Unit::Weeks | Unit::Months | Unit::Years => {
                let current = unit_start(local.date(), unit);
                let at = |date: NaiveDate| tz.first_instant_at_or_after(date.into());
                Window::new(
                    at(shift(current, unit, -back)),
                    at(shift(current, unit, forward)),
                )
            }
        }
    }
}

fn not_a_timeframe(text: &str) -> QueryError {
    QueryError::TimeframeDefinition(format!(
        "timeframe {text:?} is not a timeframe; use a relative one (this_N_units or \
         previous_N_units with units minutes, hours, days, weeks, months or years, e.g. \
         this_7_days, previous_hour, today, yesterday) or an absolute one \
         ({{\"start\": \"2024-03-01T00:00:00Z\", \"end\": \"2024-03-08T00:00:00Z\"}})"
    ))
}

/// `None` when the text is not shaped like a relative timeframe; `Some(Err)` when it is but the
/// count is out of range.
fn parse_relative(text: &str) -> Option<Result<Timeframe, QueryError>> {
    let text = match text {
        "today" => "this_day",
        "yesterday" => "previous_day",
        other => other,
    };
    let (relative, rest) = if let Some(rest) = text.strip_prefix("this_") {
        (Relative::This, rest)
    } else {
        (Relative::Previous, text.strip_prefix("previous_")?)
    };
    let (count, unit) = match rest.split_once('_') {
        Some((digits, unit)) => {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (Some(digits), Unit::parse(unit)?)
        }
        None => (None, Unit::parse(rest)?),
    };
    let Some(digits) = count else {
        return Some(Ok(Timeframe::Relative {
            relative,
            count: 1,
            unit,
        }));
    };
    let count = digits
        .parse::<u64>()
        .ok()
        .filter(|&n| (1..=unit.max_count()).contains(&n))
        .and_then(|n| u32::try_from(n).ok());
    Some(match count {
        Some(count) => Ok(Timeframe::Relative {
            relative,
            count,
            unit,
        }),
        None => Err(QueryError::TimeframeDefinition(format!(
            "timeframe {text:?} has a count of {digits} {unit}; the count must be at least 1 and \
             span at most {MAX_SPAN_YEARS} years (at most {} {unit})",
            unit.max_count().min(u64::from(u32::MAX)),
            unit = unit.as_str()
        ))),
    })
}

fn parse_absolute(text: &str) -> Result<Timeframe, QueryError> {
    let bad = |what: String| {
        QueryError::TimeframeDefinition(format!(
            "absolute timeframe {text}: {what}; give {{\"start\": ..., \"end\": ...}} as ISO-8601 \
             date-times, start inclusive and end exclusive"
        ))
    };
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return Err(bad("is not a JSON object".into()));
    };
    if let Some(unknown) = object.keys().find(|k| *k != "start" && *k != "end") {
        return Err(bad(format!("has an unknown field {unknown:?}")));
    }
    let instant = |name: &str| -> Result<i64, QueryError> {
        match object.get(name) {
            None | Some(Value::Null) => Err(bad(format!("{name} is missing"))),
            Some(Value::String(value)) => timestamp::parse(value)
                .map(|parsed| parsed.unix_millis())
                .map_err(|e| {
                    bad(format!(
                        "{name} {value:?} is not an ISO-8601 date-time: {e}"
                    ))
                }),
            Some(_) => Err(bad(format!("{name} is not a string"))),
        }
    };
    let (start, end) = (instant("start")?, instant("end")?);
    if start >= end {
        return Err(bad("start is not before end".into()));
    }
    Ok(Timeframe::Absolute(Window::new(start, end)))
}

/// The first day of the unit holding `date`.
pub(super) fn unit_start(date: NaiveDate, unit: Unit) -> NaiveDate {
    let start = match unit {
        Unit::Weeks => date.checked_sub_signed(TimeDelta::days(i64::from(
            date.weekday().num_days_from_sunday(),
        ))),
        Unit::Months => date.with_day(1),
        Unit::Years => NaiveDate::from_ymd_opt(date.year(), 1, 1),
        Unit::Minutes | Unit::Hours | Unit::Days => Some(date),
    };
    start.unwrap_or(date)
}

/// `date` moved by `by` units (days and longer). Counts are bounded at parse time, so the
/// saturation never happens in practice.
pub(super) fn shift(date: NaiveDate, unit: Unit, by: i64) -> NaiveDate {
    let months = |n: i64| {
        let magnitude = Months::new(u32::try_from(n.unsigned_abs()).unwrap_or(u32::MAX));
        if n >= 0 {
            date.checked_add_months(magnitude)
        } else {
            date.checked_sub_months(magnitude)
        }
    };
    let shifted = match unit {
        Unit::Days => TimeDelta::try_days(by).and_then(|d| date.checked_add_signed(d)),
        Unit::Weeks => by
            .checked_mul(7)
            .and_then(TimeDelta::try_days)
            .and_then(|d| date.checked_add_signed(d)),
        Unit::Months => months(by),
        Unit::Years => by.checked_mul(12).and_then(months),
        Unit::Minutes | Unit::Hours => Some(date),
    };
    shifted.unwrap_or(if by < 0 {
        NaiveDate::MIN
    } else {
        NaiveDate::MAX
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::testing::{ms, window};
    use proptest::prelude::*;

    fn resolve(timeframe: &str, now: &str, tz: &str) -> Window {
        Timeframe::parse(timeframe)
            .expect("valid timeframe")
            .resolve(ms(now), &Timezone::parse(tz).expect("valid timezone"))
    }

    fn relative(relative: Relative, count: u32, unit: Unit) -> Timeframe {
        Timeframe::Relative {
            relative,
            count,
            unit,
        }
    }

    #[test]
    fn relative_forms_parse() {
        use Relative::{Previous, This};
        let cases = [
            ("this_7_days", relative(This, 7, Unit::Days)),
            ("previous_1_hours", relative(Previous, 1, Unit::Hours)),
            ("this_hour", relative(This, 1, Unit::Hours)),
            ("this_hours", relative(This, 1, Unit::Hours)),
            ("previous_day", relative(Previous, 1, Unit::Days)),
            ("this_1_days", relative(This, 1, Unit::Days)),
            ("this_2_day", relative(This, 2, Unit::Days)),
            ("today", relative(This, 1, Unit::Days)),
            ("yesterday", relative(Previous, 1, Unit::Days)),
            ("this_minute", relative(This, 1, Unit::Minutes)),
            ("previous_30_minutes", relative(Previous, 30, Unit::Minutes)),
            ("previous_3_weeks", relative(Previous, 3, Unit::Weeks)),
            ("this_week", relative(This, 1, Unit::Weeks)),
            ("this_month", relative(This, 1, Unit::Months)),
            ("previous_2_years", relative(Previous, 2, Unit::Years)),
            ("this_10000_years", relative(This, 10_000, Unit::Years)),
            ("this_007_days", relative(This, 7, Unit::Days)),
            ("  this_7_days ", relative(This, 7, Unit::Days)),
            ("\"this_7_days\"", relative(This, 7, Unit::Days)),
        ];
        for (text, expected) in cases {
            assert_eq!(Timeframe::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_timeframes_are_refused_with_the_timeframe_code() {
        let cases = [
            "",
            "this",
            "this_",
            "this_7",
            "this_0_days",
            "this_days_7",
            "this__days",
            "last_7_days",
            "this_7_fortnights",
            "this_-1_days",
            "this_+1_days",
            "this_1.5_days",
            "This_7_days",
            "this_10001_years",
            "this_99999999999999999999_days",
            "\"\\\"this_day\\\"\"",
            "{}",
            "{\"start\": \"2024-03-01T00:00:00Z\"}",
            "{\"end\": \"2024-03-01T00:00:00Z\"}",
            "{\"start\": \"2024-03-02T00:00:00Z\", \"end\": \"2024-03-01T00:00:00Z\"}",
            "{\"start\": \"2024-03-01T00:00:00Z\", \"end\": \"2024-03-01T00:00:00Z\"}",
            "{\"start\": \"2024-03-01\", \"end\": \"2024-03-02T00:00:00Z\"}",
            "{\"start\": 1, \"end\": \"2024-03-02T00:00:00Z\"}",
            "{\"start\": \"2024-03-01T00:00:00Z\", \"end\": \"2024-03-02T00:00:00Z\", \"stat\": 1}",
            "{\"start\": \"2024-03-01T00:00:00Z\",",
        ];
        for text in cases {
            match Timeframe::parse(text) {
                Err(QueryError::TimeframeDefinition(message)) => {
                    assert!(!message.is_empty());
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        let Err(error) = Timeframe::parse("this_0_days") else {
            panic!("accepted")
        };
        assert!(error.message().contains("at least 1"), "{error}");
        let Err(error) = Timeframe::parse(
            "{\"start\": \"2024-03-02T00:00:00Z\", \"end\": \"2024-03-01T00:00:00Z\"}",
        ) else {
            panic!("accepted")
        };
        assert!(
            error.message().contains("start is not before end"),
            "{error}"
        );
    }

    #[test]
    fn absolute_timeframes_are_half_open_and_ignore_the_timezone() {
        let text = "{\"start\": \"2024-03-01T10:00:00+02:00\", \"end\": \"2024-03-01T10:30:00.5\"}";
        let expected = window("2024-03-01T08:00:00Z", "2024-03-01T10:30:00.500Z");
        assert_eq!(Timeframe::parse(text), Ok(Timeframe::Absolute(expected)));
        assert_eq!(
            resolve(text, "2030-01-01T00:00:00Z", "Europe/Berlin"),
            expected
        );
        assert_eq!(resolve(text, "2030-01-01T00:00:00Z", "-28800"), expected);
    }

    #[test]
    fn every_unit_in_utc() {
        // A Saturday afternoon.
        let now = "2024-03-09T16:20:30.123Z";
        let cases = [
            (
                "this_minute",
                "2024-03-09T16:20:00Z",
                "2024-03-09T16:21:00Z",
            ),
            (
                "previous_minute",
                "2024-03-09T16:19:00Z",
                "2024-03-09T16:20:00Z",
            ),
            (
                "this_3_minutes",
                "2024-03-09T16:18:00Z",
                "2024-03-09T16:21:00Z",
            ),
            ("this_hour", "2024-03-09T16:00:00Z", "2024-03-09T17:00:00Z"),
            (
                "previous_2_hours",
                "2024-03-09T14:00:00Z",
                "2024-03-09T16:00:00Z",
            ),
            (
                "this_24_hours",
                "2024-03-08T17:00:00Z",
                "2024-03-09T17:00:00Z",
            ),
            ("today", "2024-03-09T00:00:00Z", "2024-03-10T00:00:00Z"),
            ("this_day", "2024-03-09T00:00:00Z", "2024-03-10T00:00:00Z"),
            ("yesterday", "2024-03-08T00:00:00Z", "2024-03-09T00:00:00Z"),
            (
                "this_2_days",
                "2024-03-08T00:00:00Z",
                "2024-03-10T00:00:00Z",
            ),
            (
                "previous_7_days",
                "2024-03-02T00:00:00Z",
                "2024-03-09T00:00:00Z",
            ),
            // Weeks start on Sunday: Saturday the 9th is in the week of Sunday the 3rd.
            ("this_week", "2024-03-03T00:00:00Z", "2024-03-10T00:00:00Z"),
            (
                "previous_week",
                "2024-02-25T00:00:00Z",
                "2024-03-03T00:00:00Z",
            ),
            (
                "this_2_weeks",
                "2024-02-25T00:00:00Z",
                "2024-03-10T00:00:00Z",
            ),
            ("this_month", "2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z"),
            (
                "previous_month",
                "2024-02-01T00:00:00Z",
                "2024-03-01T00:00:00Z",
            ),
            (
                "previous_2_months",
                "2024-01-01T00:00:00Z",
                "2024-03-01T00:00:00Z",
            ),
            ("this_year", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
            (
                "previous_year",
                "2023-01-01T00:00:00Z",
                "2024-01-01T00:00:00Z",
            ),
            (
                "this_2_years",
                "2023-01-01T00:00:00Z",
                "2025-01-01T00:00:00Z",
            ),
        ];
        for (timeframe, start, end) in cases {
            assert_eq!(
                resolve(timeframe, now, "UTC"),
                window(start, end),
                "{timeframe}"
            );
            assert_eq!(
                resolve(timeframe, now, "0"),
                window(start, end),
                "{timeframe}"
            );
        }
    }

    #[test]
    fn month_year_and_week_boundaries() {
        let cases = [
            // previous_month across a year boundary.
            (
                "previous_month",
                "2024-01-15T00:00:00Z",
                "2023-12-01T00:00:00Z",
                "2024-01-01T00:00:00Z",
            ),
            // From the 31st, months still start on the 1st (no day clamping surprises).
            (
                "this_2_months",
                "2024-03-31T23:59:59.999Z",
                "2024-02-01T00:00:00Z",
                "2024-04-01T00:00:00Z",
            ),
            (
                "previous_12_months",
                "2024-03-31T12:00:00Z",
                "2023-03-01T00:00:00Z",
                "2024-03-01T00:00:00Z",
            ),
            (
                "this_day",
                "2024-02-29T12:00:00Z",
                "2024-02-29T00:00:00Z",
                "2024-03-01T00:00:00Z",
            ),
            (
                "this_year",
                "2024-12-31T23:59:59.999Z",
                "2024-01-01T00:00:00Z",
                "2025-01-01T00:00:00Z",
            ),
            (
                "this_year",
                "2025-01-01T00:00:00Z",
                "2025-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
            ),
            // A week across the new year: Sunday 2024-12-29 to Sunday 2025-01-05.
            (
                "this_week",
                "2025-01-01T08:00:00Z",
                "2024-12-29T00:00:00Z",
                "2025-01-05T00:00:00Z",
            ),
            // Sunday 00:00 belongs to the new week, Saturday 23:59 to the old one.
            (
                "this_week",
                "2024-03-10T00:00:00Z",
                "2024-03-10T00:00:00Z",
                "2024-03-17T00:00:00Z",
            ),
            (
                "this_week",
                "2024-03-09T23:59:59.999Z",
                "2024-03-03T00:00:00Z",
                "2024-03-10T00:00:00Z",
            ),
        ];
        for (timeframe, now, start, end) in cases {
            assert_eq!(
                resolve(timeframe, now, "UTC"),
                window(start, end),
                "{timeframe} at {now}"
            );
        }
    }

    #[test]
    fn fixed_offsets() {
        // 21:00 on the 8th in UTC-8.
        assert_eq!(
            resolve("today", "2024-03-09T05:00:00Z", "-28800"),
            window("2024-03-08T08:00:00Z", "2024-03-09T08:00:00Z")
        );
        // 01:30 on the 10th in UTC+05:30: days and hours start at :30 UTC.
        let now = "2024-03-09T20:00:00Z";
        assert_eq!(
            resolve("today", now, "19800"),
            window("2024-03-09T18:30:00Z", "2024-03-10T18:30:00Z")
        );
        assert_eq!(
            resolve("this_hour", now, "+19800"),
            window("2024-03-09T19:30:00Z", "2024-03-09T20:30:00Z")
        );
        assert_eq!(
            resolve("this_hour", now, "Asia/Kolkata"),
            window("2024-03-09T19:30:00Z", "2024-03-09T20:30:00Z")
        );
        // +05:45: minutes still align on whole minutes.
        assert_eq!(
            resolve("this_minute", "2024-03-09T20:00:30Z", "Asia/Kathmandu"),
            window("2024-03-09T20:00:00Z", "2024-03-09T20:01:00Z")
        );
    }

    /// (timeframe, now, zone, start, end): around DST changes and calendar gaps.
    #[test]
    fn zone_calendars_across_dst_and_gaps() {
        let cases = [
            // Berlin springs forward on 2024-03-31 (02:00 CET becomes 03:00 CEST): a 23-hour day.
            (
                "today",
                "2024-03-31T12:00:00Z",
                "Europe/Berlin",
                "2024-03-30T23:00:00Z",
                "2024-03-31T22:00:00Z",
            ),
            (
                "yesterday",
                "2024-04-01T10:00:00Z",
                "Europe/Berlin",
                "2024-03-30T23:00:00Z",
                "2024-03-31T22:00:00Z",
            ),
            // And falls back on 2024-10-27 (03:00 CEST becomes 02:00 CET): a 25-hour day.
            (
                "today",
                "2024-10-27T12:00:00Z",
                "Europe/Berlin",
                "2024-10-26T22:00:00Z",
                "2024-10-27T23:00:00Z",
            ),
            // A week holding the spring change (Sunday 03-31, 02:00): Sunday 03-31 CET to
            // Sunday 04-07 CEST, an hour short of 7 days.
            (
                "this_week",
                "2024-03-31T12:00:00Z",
                "Europe/Berlin",
                "2024-03-30T23:00:00Z",
                "2024-04-06T22:00:00Z",
            ),
            // The Saturday before is in the week of Sunday 03-24, all in CET.
            (
                "this_week",
                "2024-03-30T12:00:00Z",
                "Europe/Berlin",
                "2024-03-23T23:00:00Z",
                "2024-03-30T23:00:00Z",
            ),
            // Months and years start at local midnight in the offset of that day.
            (
                "previous_month",
                "2024-04-15T12:00:00Z",
                "Europe/Berlin",
                "2024-02-29T23:00:00Z",
                "2024-03-31T22:00:00Z",
            ),
            (
                "this_year",
                "2024-07-01T00:00:00Z",
                "Europe/Berlin",
                "2023-12-31T23:00:00Z",
                "2024-12-31T23:00:00Z",
            ),
            // Just after local midnight on the 1st, UTC is still on the previous day.
            (
                "this_month",
                "2024-04-30T22:30:00Z",
                "Europe/Berlin",
                "2024-04-30T22:00:00Z",
                "2024-05-31T22:00:00Z",
            ),
            // Hours are real hours: 03:30 CEST, half an hour after the jump.
            (
                "this_2_hours",
                "2024-03-31T01:30:00Z",
                "Europe/Berlin",
                "2024-03-31T00:00:00Z",
                "2024-03-31T02:00:00Z",
            ),
            // And during the repeated hour (02:30 CET, the second time).
            (
                "previous_hour",
                "2024-10-27T01:30:00Z",
                "Europe/Berlin",
                "2024-10-27T00:00:00Z",
                "2024-10-27T01:00:00Z",
            ),
            // São Paulo sprang forward at midnight on 2018-11-04 (00:00 -03 became 01:00 -02):
            // the day starts when the gap ends.
            (
                "today",
                "2018-11-04T12:00:00Z",
                "America/Sao_Paulo",
                "2018-11-04T03:00:00Z",
                "2018-11-05T02:00:00Z",
            ),
            // Samoa skipped 2011-12-30 entirely: that day is an empty window.
            (
                "yesterday",
                "2011-12-30T22:00:00Z",
                "Pacific/Apia",
                "2011-12-30T10:00:00Z",
                "2011-12-30T10:00:00Z",
            ),
        ];
        for (timeframe, now, zone, start, end) in cases {
            assert_eq!(
                resolve(timeframe, now, zone),
                window(start, end),
                "{timeframe} at {now} in {zone}"
            );
        }
        let hours = |now| resolve("today", now, "Europe/Berlin").duration_ms() / HOUR_MS;
        assert_eq!(
            (hours("2024-03-31T12:00:00Z"), hours("2024-10-27T12:00:00Z")),
            (23, 25)
        );
    }

    #[test]
    fn timezones_parse() {
        assert_eq!(Timezone::default(), Timezone::parse("UTC").expect("UTC"));
        assert_eq!(
            Timezone::parse("-28800"),
            Ok(Timezone::Offset(
                FixedOffset::west_opt(28800).expect("valid")
            ))
        );
        assert!(matches!(
            Timezone::parse("Europe/Berlin"),
            Ok(Timezone::Named(Tz::Europe__Berlin))
        ));
        for bad in [
            "",
            "Mars/Olympus",
            "europe/berlin",
            "90000",
            "-64801",
            "99999999999999",
            "+01:00",
        ] {
            match Timezone::parse(bad) {
                Err(QueryError::InvalidParameter(message)) => {
                    assert!(message.contains("timezone"), "{message}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(Timezone::parse("64800").is_ok());
    }

    #[test]
    fn windows_and_sort_keys() {
        let w = window("2024-03-09T10:00:00Z", "2024-03-09T11:00:00Z");
        assert!(w.contains(w.start_ms) && !w.contains(w.end_ms));
        assert_eq!(
            w.sort_key_bounds(),
            Some((
                "2024-03-09T10:00:00.000Z".to_owned(),
                "2024-03-09T10:59:59.999Z#~".to_owned()
            ))
        );
        assert!(
            "2024-03-09T10:59:59.999Z#ffffffffffffffffffffffff#part#2"
                < "2024-03-09T10:59:59.999Z#~"
        );
        assert_eq!(Window::new(5, 5).sort_key_bounds(), None);
        assert_eq!(
            Window::ALL_TIME.sort_key_bounds(),
            Some((
                "0000-01-01T00:00:00.000Z".to_owned(),
                "9999-12-31T23:59:59.999Z#~".to_owned()
            ))
        );
    }

    fn zones() -> Vec<Timezone> {
        [
            "UTC",
            "-28800",
            "19800",
            "Europe/Berlin",
            "America/New_York",
            "America/Sao_Paulo",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
        ]
        .iter()
        .map(|z| Timezone::parse(z).expect("valid zone"))
        .collect()
    }

    fn units() -> [Unit; 6] {
        [
            Unit::Minutes,
            Unit::Hours,
            Unit::Days,
            Unit::Weeks,
            Unit::Months,
            Unit::Years,
        ]
    }

    proptest! {
        /// this_1 holds now; previous_N ends where this_1 starts; this_N starts where
        /// previous_(N-1) does and ends with this_1.
        #[test]
        fn relative_windows_fit_together(
            now in 0i64..4_000_000_000_000,
            zone in 0usize..8,
            unit in 0usize..6,
            count in 2u32..40,
        ) {
            let tz = zones()[zone];
            let unit = units()[unit];
            let at = |relative, count| Timeframe::Relative { relative, count, unit }.resolve(now, &tz);
            let this_one = at(Relative::This, 1);
            prop_assert!(this_one.contains(now), "{this_one:?} misses {now}");
            let this_n = at(Relative::This, count);
            let previous_n = at(Relative::Previous, count);
            let previous_n_minus_1 = at(Relative::Previous, count - 1);
            prop_assert_eq!(previous_n.end_ms, this_one.start_ms);
            prop_assert_eq!(this_n.end_ms, this_one.end_ms);
            prop_assert_eq!(this_n.start_ms, previous_n_minus_1.start_ms);
            prop_assert!(previous_n.start_ms < previous_n.end_ms);
            prop_assert!(previous_n.start_ms < previous_n_minus_1.start_ms);
        }
    }
}
