//! `interval` (product.md §9): splitting a query's window into buckets aligned in its timezone.
//!
//! [`Interval::parse`] reads `minutely` … `yearly` or `every_N_units`; [`buckets`] splits a
//! window into consecutive half-open buckets that tile it exactly, and [`format_instant`] writes
//! a bucket edge for the result's `{"timeframe": {"start", "end"}}`.
//!
//! Edges sit on the unit's boundaries in the query's timezone, counted from the start of the unit
//! holding the window's start; the first and last buckets are clipped to the window, as the
//! analytics API does (`this_year` weekly in 2015 starts with Thursday 01-01 to Sunday 01-04).
//! Weeks start on Sunday. Days and longer units step on the zone's calendar, so a daily bucket
//! across a DST change lasts 23 or 25 hours. Minutes and hours step in elapsed time, so hourly
//! buckets stay one hour long across a DST change, the repeated hour giving two buckets; should
//! an offset change by a fraction of the unit (Lord Howe's half hour), the bucket holding the
//! change runs on to the next local boundary, so edges stay on the local clock's whole hours.

use super::QueryError;
use super::timeframe::{
    END_TIMESTAMP_MS, HOUR_MS, MAX_SPAN_YEARS, MIN_TIMESTAMP_MS, MINUTE_MS, Timezone, Unit, Window,
    shift, unit_start,
};
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use std::fmt;

/// The most buckets one query may split its timeframe into.
pub const MAX_BUCKETS: usize = 10_000;

/// Edges examined before giving up: a zone skips a unit only on rare calendar changes, so this
/// bound is never reached by a query that fits [`MAX_BUCKETS`]; it only rules out an endless loop.
const MAX_EDGES: usize = 2 * MAX_BUCKETS + 2;

const UNITS: [Unit; 6] = [
    Unit::Minutes,
    Unit::Hours,
    Unit::Days,
    Unit::Weeks,
    Unit::Months,
    Unit::Years,
];

/// The `interval` parameter: buckets `every` units long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// At least 1; a bucket spans at most 10,000 years.
    pub every: u32,
    pub unit: Unit,
}

impl Interval {
    /// Parses `minutely`, `hourly`, `daily`, `weekly`, `monthly`, `yearly` or `every_N_units`
    /// (`every_5_minutes`, `every_1_day`; singular and plural units alike). The value may also be
    /// a JSON string (`"daily"` in quotes), as some clients JSON-encode every parameter.
    pub fn parse(text: &str) -> Result<Interval, QueryError> {
        let text = text.trim();
        if text.starts_with('"') {
            return match serde_json::from_str::<String>(text) {
                Ok(inner) if !inner.trim_start().starts_with('"') => Interval::parse(&inner),
                _ => Err(not_an_interval(text)),
            };
        }
        if let Some(&unit) = UNITS.iter().find(|unit| named(**unit) == text) {
            return Ok(Interval { every: 1, unit });
        }
        let (digits, unit) = text
            .strip_prefix("every_")
            .and_then(|rest| rest.split_once('_'))
            .filter(|(digits, _)| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|(digits, unit)| Some((digits, Unit::parse(unit)?)))
            .ok_or_else(|| not_an_interval(text))?;
        // A bucket no longer than a relative timeframe may be keeps every edge inside chrono's
        // range.
        let most = unit.max_count().min(u64::from(u32::MAX));
        digits
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=most).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .map(|every| Interval { every, unit })
            .ok_or_else(|| {
                QueryError::InvalidParameter(format!(
                    "interval {text:?} has N = {digits}; in every_N_{unit} N must be at least 1 \
                     and a bucket span at most {MAX_SPAN_YEARS} years (at most {most} {unit})",
                    unit = unit.as_str()
                ))
            })
    }
}

impl fmt::Display for Interval {
    /// The parameter's spelling: `daily` for one day, `every_35_days` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.every == 1 {
            f.write_str(named(self.unit))
        } else {
            write!(f, "every_{}_{}", self.every, self.unit.as_str())
        }
    }
}

const fn named(unit: Unit) -> &'static str {
    match unit {
        Unit::Minutes => "minutely",
        Unit::Hours => "hourly",
        Unit::Days => "daily",
        Unit::Weeks => "weekly",
        Unit::Months => "monthly",
        Unit::Years => "yearly",
    }
}

fn not_an_interval(text: &str) -> QueryError {
    QueryError::InvalidParameter(format!(
        "interval {text:?} is not an interval; use minutely, hourly, daily, weekly, monthly, \
         yearly or every_N_units with units minutes, hours, days, weeks, months or years \
         (e.g. every_5_minutes, every_2_months)"
    ))
}

/// Splits `window` into `interval` buckets aligned in `tz` (see the module docs): consecutive,
/// non-empty, the first starting at `window.start_ms` and the last ending at `window.end_ms`.
/// An empty window has no bucket. A window reaching the limits of storable time (a query
/// without a timeframe) is refused, and so is one needing more than [`MAX_BUCKETS`] buckets.
pub fn buckets(
    window: Window,
    interval: Interval,
    tz: &Timezone,
) -> Result<Vec<Window>, QueryError> {
    if window.start_ms <= MIN_TIMESTAMP_MS || window.end_ms >= END_TIMESTAMP_MS {
        return Err(QueryError::MissingRequiredProperty(format!(
            "interval {interval} needs a timeframe to split: without one (or with one reaching \
             year 0000 or 10000) the query covers all time; add a timeframe, e.g. \
             timeframe=this_7_days or {{\"start\": \"2024-03-01T00:00:00Z\", \"end\": \
             \"2024-03-08T00:00:00Z\"}}"
        )));
    }
    if window.is_empty() {
        return Ok(Vec::new());
    }
    let mut buckets = Vec::new();
    let mut start = window.start_ms;
    for edge in Edges::after(window.start_ms, interval, tz).take(MAX_EDGES) {
        let end = edge.min(window.end_ms);
        if end <= start {
            // A unit the zone skipped (Samoa had no 2011-12-30).
            continue;
        }
        if buckets.len() == MAX_BUCKETS {
            break;
        }
        buckets.push(Window::new(start, end));
        if end == window.end_ms {
            return Ok(buckets);
        }
        start = end;
    }
    Err(too_many_buckets(window, interval, tz))
}

/// The edges after the start of the unit holding an instant, in order; endless.
enum Edges<'a> {
    /// Minutes and hours: `step_ms` of elapsed time after the last edge, then on to the next
    /// boundary of the local clock if an offset change left the edge between two.
    Elapsed {
        tz: &'a Timezone,
        unit: Unit,
        last_ms: i64,
        step_ms: i64,
    },
    /// Days and longer: the local midnights `every` units apart from `base`.
    Calendar {
        tz: &'a Timezone,
        unit: Unit,
        base: NaiveDate,
        every: i64,
        given: i64,
    },
}

impl<'a> Edges<'a> {
    fn after(start_ms: i64, interval: Interval, tz: &'a Timezone) -> Edges<'a> {
        let Interval { every, unit } = interval;
        let local = tz.local(start_ms);
        match unit {
            Unit::Minutes | Unit::Hours => Edges::Elapsed {
                tz,
                unit,
                last_ms: start_ms - into_unit(local, unit),
                step_ms: i64::from(every) * unit_ms(unit),
            },
            Unit::Days | Unit::Weeks | Unit::Months | Unit::Years => Edges::Calendar {
                tz,
                unit,
                base: unit_start(local.date(), unit),
                every: i64::from(every),
                given: 0,
            },
        }
    }
}

impl Iterator for Edges<'_> {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        match self {
            Edges::Elapsed {
                tz,
                unit,
                last_ms,
                step_ms,
            } => {
                let mut edge = *last_ms + *step_ms;
                // Offsets change by whole units but for a few zones and dates; two changes
                // within one unit never happened, so a few rounds always settle.
                for _ in 0..4 {
                    let into = into_unit(tz.local(edge), *unit);
                    if into == 0 {
                        break;
                    }
                    edge += unit_ms(*unit) - into;
                }
                *last_ms = edge;
                Some(edge)
            }
            Edges::Calendar {
                tz,
                unit,
                base,
                every,
                given,
            } => {
                *given += 1;
                // From the base each time, so that month ends never clamp a later edge.
                let date = shift(*base, *unit, *given * *every);
                Some(tz.first_instant_at_or_after(date.into()))
            }
        }
    }
}

const fn unit_ms(unit: Unit) -> i64 {
    match unit {
        Unit::Minutes => MINUTE_MS,
        _ => HOUR_MS,
    }
}

/// Milliseconds since the start of the local minute or hour.
fn into_unit(local: NaiveDateTime, unit: Unit) -> i64 {
    let into_minute = i64::from(local.second()) * 1000 + i64::from(local.nanosecond() / 1_000_000);
    match unit {
        Unit::Minutes => into_minute,
        _ => i64::from(local.minute()) * MINUTE_MS + into_minute,
    }
}

fn too_many_buckets(window: Window, interval: Interval, tz: &Timezone) -> QueryError {
    let count = bucket_count(window, interval, tz).max(MAX_BUCKETS as u64 + 1);
    QueryError::QueryTooLarge(format!(
        "interval {interval} splits this timeframe into {count} buckets, more than the \
         {MAX_BUCKETS} a query may have; use a coarser interval (e.g. {}) or a shorter timeframe",
        coarser(interval, count)
    ))
}

/// How many buckets `window` splits into, by arithmetic on the local calendar rather than by
/// listing them (minutely over a decade would be millions).
fn bucket_count(window: Window, interval: Interval, tz: &Timezone) -> u64 {
    let (first, last) = (tz.local(window.start_ms), tz.local(window.end_ms - 1));
    let units = match interval.unit {
        unit @ (Unit::Minutes | Unit::Hours) => {
            let aligned = window.start_ms - into_unit(first, unit);
            (window.end_ms - 1 - aligned) / unit_ms(unit)
        }
        unit => {
            let (from, to) = (unit_start(first.date(), unit), last.date());
            let months = || {
                (i64::from(to.year()) - i64::from(from.year())) * 12 + i64::from(to.month())
                    - i64::from(from.month())
            };
            match unit {
                Unit::Weeks => (to - from).num_days() / 7,
                Unit::Months => months(),
                Unit::Years => i64::from(to.year()) - i64::from(from.year()),
                _ => (to - from).num_days(),
            }
        }
    };
    u64::try_from(units).unwrap_or(0) / u64::from(interval.every) + 1
}

/// An interval coarse enough for `count` buckets of `interval` to fit in [`MAX_BUCKETS`]: the
/// finest named one that is, or every so many years.
fn coarser(interval: Interval, count: u64) -> Interval {
    // Nominal lengths in minutes: a month of 30.44 days, a year of 365.25.
    const fn minutes(unit: Unit) -> u64 {
        match unit {
            Unit::Minutes => 1,
            Unit::Hours => 60,
            Unit::Days => 1_440,
            Unit::Weeks => 10_080,
            Unit::Months => 43_830,
            Unit::Years => 525_960,
        }
    }
    let current = minutes(interval.unit) * u64::from(interval.every);
    let needed = current.saturating_mul(count.div_ceil(MAX_BUCKETS as u64));
    UNITS
        .into_iter()
        .find(|&unit| minutes(unit) > current && minutes(unit) >= needed)
        .map_or_else(
            || Interval {
                every: u32::try_from(needed.div_ceil(minutes(Unit::Years))).unwrap_or(u32::MAX),
                unit: Unit::Years,
            },
            |unit| Interval { every: 1, unit },
        )
}

/// An instant as ISO-8601 with milliseconds, in `tz`'s wall-clock time with the offset in
/// force then: `2024-03-10T00:00:00.000-05:00`, or `…Z` when the offset is zero. Offsets that
/// are not whole minutes (local mean time before the 20th century) are written in UTC instead,
/// since `±hh:mm` cannot carry them and most clients reject `±hh:mm:ss`.
pub fn format_instant(ms: i64, tz: &Timezone) -> String {
    let local = tz.local(ms);
    let offset_ms = local.and_utc().timestamp_millis() - ms;
    let (local, offset_ms) = if offset_ms % MINUTE_MS == 0 {
        (local, offset_ms)
    } else {
        (Timezone::default().local(ms), 0)
    };
    let year = local.year();
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+05}")
    };
    let zone = if offset_ms == 0 {
        "Z".to_owned()
    } else {
        let minutes = offset_ms.abs() / MINUTE_MS;
        let sign = if offset_ms < 0 { '-' } else { '+' };
        format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
    };
    format!(
        "{year}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{zone}",
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
        local.nanosecond() / 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Timeframe;
    use crate::analysis::testing::{ms, window};
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    fn interval(text: &str) -> Interval {
        Interval::parse(text).expect("valid interval")
    }

    fn zone(text: &str) -> Timezone {
        Timezone::parse(text).expect("valid timezone")
    }

    /// The buckets of `[start, end)` as (start, end) ISO strings in UTC, for readable failures.
    fn split(start: &str, end: &str, every: &str, tz: &str) -> Vec<(String, String)> {
        buckets(window(start, end), interval(every), &zone(tz))
            .expect("buckets")
            .iter()
            .map(|b| (utc(b.start_ms), utc(b.end_ms)))
            .collect()
    }

    fn utc(ms: i64) -> String {
        format_instant(ms, &Timezone::default())
    }

    /// Expected buckets from consecutive edges written in UTC.
    fn tiles(edges: &[&str]) -> Vec<(String, String)> {
        edges
            .windows(2)
            .map(|pair| (utc(ms(pair[0])), utc(ms(pair[1]))))
            .collect()
    }

    #[test]
    fn intervals_parse() {
        let every = |every, unit| Interval { every, unit };
        let cases = [
            ("minutely", every(1, Unit::Minutes)),
            ("hourly", every(1, Unit::Hours)),
            ("daily", every(1, Unit::Days)),
            ("weekly", every(1, Unit::Weeks)),
            ("monthly", every(1, Unit::Months)),
            ("yearly", every(1, Unit::Years)),
            ("every_5_minutes", every(5, Unit::Minutes)),
            ("every_35_days", every(35, Unit::Days)),
            ("every_2_months", every(2, Unit::Months)),
            ("every_1_day", every(1, Unit::Days)),
            ("every_3_hour", every(3, Unit::Hours)),
            ("every_2_weeks", every(2, Unit::Weeks)),
            ("every_10_years", every(10, Unit::Years)),
            ("every_007_minutes", every(7, Unit::Minutes)),
            ("every_10000_years", every(10_000, Unit::Years)),
            ("every_120000_months", every(120_000, Unit::Months)),
            ("  daily ", every(1, Unit::Days)),
            ("\"daily\"", every(1, Unit::Days)),
            (" \" every_2_months \" ", every(2, Unit::Months)),
        ];
        for (text, expected) in cases {
            assert_eq!(Interval::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_intervals_are_refused_naming_the_value() {
        let cases = [
            "",
            "Daily",
            "DAILY",
            "day",
            "days",
            "fortnightly",
            "daily_",
            "every",
            "every_",
            "every_5",
            "every_days",
            "every__days",
            "every_days_5",
            "every_0_days",
            "every_-1_days",
            "every_+1_days",
            "every_1.5_days",
            "every_ 5_days",
            "every_5_fortnights",
            "every_5_Days",
            "every_10001_years",
            "every_120001_months",
            "every_99999999999999999999_minutes",
            "\"daily",
            "\"\\\"daily\\\"\"",
            "this_7_days",
        ];
        for text in cases {
            match Interval::parse(text) {
                Err(QueryError::InvalidParameter(message)) => {
                    assert!(message.starts_with("interval "), "{text:?}: {message}");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        let Err(error) = Interval::parse("every_0_days") else {
            panic!("accepted")
        };
        assert!(error.message().contains("at least 1"), "{error}");
        let Err(error) = Interval::parse("every_10001_years") else {
            panic!("accepted")
        };
        assert!(error.message().contains("at most 10000 years"), "{error}");
        let Err(error) = Interval::parse("every_6000000000_minutes") else {
            panic!("accepted")
        };
        assert!(error.message().contains("at most 4294967295"), "{error}");
    }

    #[test]
    fn intervals_display_as_spelled() {
        for text in [
            "minutely",
            "hourly",
            "daily",
            "weekly",
            "monthly",
            "yearly",
            "every_5_minutes",
            "every_35_days",
            "every_2_months",
        ] {
            assert_eq!(interval(text).to_string(), text);
        }
        assert_eq!(interval("every_1_day").to_string(), "daily");
        assert_eq!(interval("every_3_hour").to_string(), "every_3_hours");
    }

    /// Each named interval in UTC, clipped at both ends.
    #[test]
    fn named_intervals_in_utc() {
        let cases: [(&str, &[&str]); 6] = [
            (
                "minutely",
                &[
                    "2024-03-09T10:00:30Z",
                    "2024-03-09T10:01:00Z",
                    "2024-03-09T10:02:00Z",
                    "2024-03-09T10:02:15.500Z",
                ],
            ),
            (
                "hourly",
                &[
                    "2024-03-09T22:00:00Z",
                    "2024-03-09T23:00:00Z",
                    "2024-03-10T00:00:00Z",
                    "2024-03-10T01:00:00Z",
                    "2024-03-10T01:30:00Z",
                ],
            ),
            (
                "daily",
                &[
                    "2024-02-28T06:00:00Z",
                    "2024-02-29T00:00:00Z",
                    "2024-03-01T00:00:00Z",
                    "2024-03-02T00:00:00Z",
                    "2024-03-02T18:00:00Z",
                ],
            ),
            (
                // Saturday the 9th to Wednesday the 20th: weeks from Sunday.
                "weekly",
                &[
                    "2024-03-09T12:00:00Z",
                    "2024-03-10T00:00:00Z",
                    "2024-03-17T00:00:00Z",
                    "2024-03-20T00:00:00Z",
                ],
            ),
            (
                "monthly",
                &[
                    "2024-01-15T00:00:00Z",
                    "2024-02-01T00:00:00Z",
                    "2024-03-01T00:00:00Z",
                    "2024-04-01T00:00:00Z",
                    "2024-04-10T00:00:00Z",
                ],
            ),
            (
                "yearly",
                &[
                    "2023-06-01T00:00:00Z",
                    "2024-01-01T00:00:00Z",
                    "2025-01-01T00:00:00Z",
                    "2025-02-01T00:00:00Z",
                ],
            ),
        ];
        for (every, edges) in cases {
            let (start, end) = (edges[0], edges[edges.len() - 1]);
            assert_eq!(split(start, end, every, "UTC"), tiles(edges), "{every}");
            assert_eq!(split(start, end, every, "0"), tiles(edges), "{every} at +0");
        }
    }

    #[test]
    fn aligned_windows_give_whole_buckets() {
        assert_eq!(
            split(
                "2024-03-01T00:00:00Z",
                "2024-03-04T00:00:00Z",
                "daily",
                "UTC"
            ),
            tiles(&[
                "2024-03-01T00:00:00Z",
                "2024-03-02T00:00:00Z",
                "2024-03-03T00:00:00Z",
                "2024-03-04T00:00:00Z",
            ])
        );
        // A window inside one unit is one bucket, the window itself.
        assert_eq!(
            split(
                "2024-03-01T10:00:00Z",
                "2024-03-01T11:00:00Z",
                "monthly",
                "UTC"
            ),
            tiles(&["2024-03-01T10:00:00Z", "2024-03-01T11:00:00Z"])
        );
    }

    #[test]
    fn every_n_units_count_from_the_unit_holding_the_start() {
        let cases: [(&str, &[&str]); 4] = [
            (
                "every_5_minutes",
                &[
                    "2024-03-09T10:02:30Z",
                    "2024-03-09T10:07:00Z",
                    "2024-03-09T10:12:00Z",
                    "2024-03-09T10:17:00Z",
                    "2024-03-09T10:20:00Z",
                ],
            ),
            (
                // 2024 is a leap year: 02-05 + 35 days is 03-11.
                "every_35_days",
                &[
                    "2024-01-01T00:00:00Z",
                    "2024-02-05T00:00:00Z",
                    "2024-03-11T00:00:00Z",
                    "2024-04-15T00:00:00Z",
                ],
            ),
            (
                // From the 31st, the unit is January: edges on the 1st of odd months.
                "every_2_months",
                &[
                    "2024-01-31T12:00:00Z",
                    "2024-03-01T00:00:00Z",
                    "2024-05-01T00:00:00Z",
                    "2024-07-01T00:00:00Z",
                    "2024-08-01T00:00:00Z",
                ],
            ),
            (
                "every_3_hours",
                &[
                    "2024-03-09T22:15:00Z",
                    "2024-03-10T01:00:00Z",
                    "2024-03-10T04:00:00Z",
                    "2024-03-10T05:00:00Z",
                ],
            ),
        ];
        for (every, edges) in cases {
            let (start, end) = (edges[0], edges[edges.len() - 1]);
            assert_eq!(split(start, end, every, "UTC"), tiles(edges), "{every}");
        }
    }

    /// The analytics API's own fixtures (product research, docs/keen-query-api.md §4).
    #[test]
    fn weekly_buckets_start_on_sunday_as_keen_fixtures_show() {
        // this_year weekly in 2015: Thursday 01-01 to Sunday 01-04, then Sunday to Sunday.
        let year = buckets(
            window("2015-01-01T00:00:00Z", "2016-01-01T00:00:00Z"),
            interval("weekly"),
            &Timezone::default(),
        )
        .expect("buckets");
        assert_eq!(year.len(), 53);
        assert_eq!(
            year[0],
            window("2015-01-01T00:00:00Z", "2015-01-04T00:00:00Z")
        );
        assert_eq!(
            year[1],
            window("2015-01-04T00:00:00Z", "2015-01-11T00:00:00Z")
        );
        assert_eq!(
            year[52],
            window("2015-12-27T00:00:00Z", "2016-01-01T00:00:00Z")
        );
        assert_eq!(
            format_instant(year[1].start_ms, &Timezone::default()),
            "2015-01-04T00:00:00.000Z"
        );
        // this_month weekly in June 2015.
        assert_eq!(
            split(
                "2015-06-01T00:00:00Z",
                "2015-07-01T00:00:00Z",
                "weekly",
                "UTC"
            ),
            tiles(&[
                "2015-06-01T00:00:00Z",
                "2015-06-07T00:00:00Z",
                "2015-06-14T00:00:00Z",
                "2015-06-21T00:00:00Z",
                "2015-06-28T00:00:00Z",
                "2015-07-01T00:00:00Z",
            ])
        );
    }

    #[test]
    fn this_week_is_the_current_weekly_bucket() {
        for (now, tz) in [
            ("2024-03-09T23:59:59.999Z", "UTC"),
            ("2024-03-10T00:00:00Z", "UTC"),
            ("2024-03-13T12:00:00Z", "America/New_York"),
            ("2024-03-31T12:00:00Z", "Europe/Berlin"),
        ] {
            let tz = zone(tz);
            let this_week = Timeframe::parse("this_week")
                .expect("valid")
                .resolve(ms(now), &tz);
            let around = Window::new(
                this_week.start_ms - 10 * 86_400_000,
                this_week.end_ms + 10 * 86_400_000,
            );
            let weeks = buckets(around, interval("weekly"), &tz).expect("buckets");
            assert!(
                weeks.contains(&this_week),
                "{now}: {this_week:?} in {weeks:?}"
            );
        }
    }

    #[test]
    fn days_and_months_follow_the_calendar_across_dst() {
        let cases: [(&str, &str, &[&str]); 6] = [
            // New York springs forward on 2024-03-10: a 23-hour day.
            (
                "daily",
                "America/New_York",
                &[
                    "2024-03-09T05:00:00Z",
                    "2024-03-10T05:00:00Z",
                    "2024-03-11T04:00:00Z",
                    "2024-03-12T04:00:00Z",
                ],
            ),
            // And falls back on 2024-11-03: a 25-hour day.
            (
                "daily",
                "America/New_York",
                &[
                    "2024-11-02T04:00:00Z",
                    "2024-11-03T04:00:00Z",
                    "2024-11-04T05:00:00Z",
                    "2024-11-05T05:00:00Z",
                ],
            ),
            (
                "monthly",
                "America/New_York",
                &[
                    "2024-02-01T05:00:00Z",
                    "2024-03-01T05:00:00Z",
                    "2024-04-01T04:00:00Z",
                    "2024-05-01T04:00:00Z",
                    "2024-06-01T04:00:00Z",
                    "2024-07-01T04:00:00Z",
                    "2024-08-01T04:00:00Z",
                    "2024-09-01T04:00:00Z",
                    "2024-10-01T04:00:00Z",
                    "2024-11-01T04:00:00Z",
                    "2024-12-01T05:00:00Z",
                ],
            ),
            // Berlin: 2024-03-31 has 23 hours, 2024-10-27 has 25.
            (
                "daily",
                "Europe/Berlin",
                &[
                    "2024-03-30T12:00:00Z",
                    "2024-03-30T23:00:00Z",
                    "2024-03-31T22:00:00Z",
                    "2024-04-01T22:00:00Z",
                ],
            ),
            (
                "daily",
                "Europe/Berlin",
                &[
                    "2024-10-26T22:00:00Z",
                    "2024-10-27T23:00:00Z",
                    "2024-10-28T23:00:00Z",
                ],
            ),
            (
                "monthly",
                "Europe/Berlin",
                &[
                    "2024-02-29T23:00:00Z",
                    "2024-03-31T22:00:00Z",
                    "2024-04-30T22:00:00Z",
                    "2024-05-31T22:00:00Z",
                    "2024-06-30T22:00:00Z",
                    "2024-07-31T22:00:00Z",
                    "2024-08-31T22:00:00Z",
                    "2024-09-30T22:00:00Z",
                    "2024-10-31T23:00:00Z",
                    "2024-11-15T00:00:00Z",
                ],
            ),
        ];
        for (every, tz, edges) in cases {
            let (start, end) = (edges[0], edges[edges.len() - 1]);
            assert_eq!(
                split(start, end, every, tz),
                tiles(edges),
                "{every} in {tz}"
            );
        }
        let new_york = zone("America/New_York");
        assert_eq!(
            format_instant(ms("2024-03-10T05:00:00Z"), &new_york),
            "2024-03-10T00:00:00.000-05:00"
        );
        assert_eq!(
            format_instant(ms("2024-03-11T04:00:00Z"), &new_york),
            "2024-03-11T00:00:00.000-04:00"
        );
    }

    #[test]
    fn a_day_the_zone_skipped_gives_no_bucket() {
        // Samoa went from 2011-12-29 24:00 (-10) straight to 2011-12-31 00:00 (+14).
        assert_eq!(
            split(
                "2011-12-29T10:00:00Z",
                "2011-12-31T10:00:00Z",
                "daily",
                "Pacific/Apia"
            ),
            tiles(&[
                "2011-12-29T10:00:00Z",
                "2011-12-30T10:00:00Z",
                "2011-12-31T10:00:00Z",
            ])
        );
    }

    /// Every bucket of a local day in `tz`, hourly, and the local hour each starts at.
    fn hours_of(start: &str, end: &str, tz: &str) -> (Vec<Window>, Vec<u32>) {
        let tz = zone(tz);
        let hours = buckets(window(start, end), interval("hourly"), &tz).expect("buckets");
        let local = hours.iter().map(|b| tz.local(b.start_ms).hour()).collect();
        (hours, local)
    }

    #[test]
    fn hours_stay_an_hour_long_across_dst() {
        // New York's spring-forward day: 23 hours, 02:00 never happens.
        let (hours, local) = hours_of(
            "2024-03-10T05:00:00Z",
            "2024-03-11T04:00:00Z",
            "America/New_York",
        );
        assert_eq!(hours.len(), 23);
        assert!(hours.iter().all(|b| b.duration_ms() == HOUR_MS));
        assert_eq!(local[..4], [0, 1, 3, 4]);
        // Its fall-back day: 25 hours, 01:00 twice.
        let (hours, local) = hours_of(
            "2024-11-03T04:00:00Z",
            "2024-11-04T05:00:00Z",
            "America/New_York",
        );
        assert_eq!(hours.len(), 25);
        assert!(hours.iter().all(|b| b.duration_ms() == HOUR_MS));
        assert_eq!(local[..4], [0, 1, 1, 2]);
        assert!(hours.windows(2).all(|p| p[0].end_ms == p[1].start_ms));
        // Berlin's fall-back, clipped at both ends: 02:00 CEST and 02:00 CET both start hours.
        let (hours, local) = hours_of(
            "2024-10-26T23:30:00Z",
            "2024-10-27T02:45:00Z",
            "Europe/Berlin",
        );
        assert_eq!(
            hours,
            vec![
                window("2024-10-26T23:30:00Z", "2024-10-27T00:00:00Z"),
                window("2024-10-27T00:00:00Z", "2024-10-27T01:00:00Z"),
                window("2024-10-27T01:00:00Z", "2024-10-27T02:00:00Z"),
                window("2024-10-27T02:00:00Z", "2024-10-27T02:45:00Z"),
            ]
        );
        assert_eq!(local, [1, 2, 2, 3]);
        // Spring-forward, starting within the last hour before the jump.
        assert_eq!(
            split(
                "2024-03-10T06:30:00Z",
                "2024-03-10T09:15:00Z",
                "hourly",
                "America/New_York"
            ),
            tiles(&[
                "2024-03-10T06:30:00Z",
                "2024-03-10T07:00:00Z",
                "2024-03-10T08:00:00Z",
                "2024-03-10T09:00:00Z",
                "2024-03-10T09:15:00Z",
            ])
        );
    }

    #[test]
    fn half_hour_dst_keeps_hour_edges_on_the_local_clock() {
        // Lord Howe falls back half an hour at 2024-04-07 02:00 (+11 to +10:30, 15:00Z) and
        // springs forward at 2024-10-06 02:00 (+10:30 to +11, 15:30Z): the hour holding the
        // change runs to the next whole local hour.
        assert_eq!(
            split(
                "2024-04-06T13:00:00Z",
                "2024-04-06T17:30:00Z",
                "hourly",
                "Australia/Lord_Howe"
            ),
            tiles(&[
                "2024-04-06T13:00:00Z",
                "2024-04-06T14:00:00Z",
                "2024-04-06T15:30:00Z",
                "2024-04-06T16:30:00Z",
                "2024-04-06T17:30:00Z",
            ])
        );
        assert_eq!(
            split(
                "2024-10-05T13:30:00Z",
                "2024-10-05T17:00:00Z",
                "hourly",
                "Australia/Lord_Howe"
            ),
            tiles(&[
                "2024-10-05T13:30:00Z",
                "2024-10-05T14:30:00Z",
                "2024-10-05T16:00:00Z",
                "2024-10-05T17:00:00Z",
            ])
        );
    }

    #[test]
    fn fixed_offsets_shift_hour_and_day_edges() {
        // +05:30: local 01:30 to 04:30 on the 10th; hours start at :30 UTC.
        assert_eq!(
            split(
                "2024-03-09T20:00:00Z",
                "2024-03-09T23:00:00Z",
                "hourly",
                "19800"
            ),
            tiles(&[
                "2024-03-09T20:00:00Z",
                "2024-03-09T20:30:00Z",
                "2024-03-09T21:30:00Z",
                "2024-03-09T22:30:00Z",
                "2024-03-09T23:00:00Z",
            ])
        );
        // Days start at 18:30 UTC.
        assert_eq!(
            split(
                "2024-03-09T00:00:00Z",
                "2024-03-11T00:00:00Z",
                "daily",
                "19800"
            ),
            tiles(&[
                "2024-03-09T00:00:00Z",
                "2024-03-09T18:30:00Z",
                "2024-03-10T18:30:00Z",
                "2024-03-11T00:00:00Z",
            ])
        );
        // +05:45: hours at :15 UTC, minutes still on whole UTC minutes.
        assert_eq!(
            split(
                "2024-03-09T20:00:00Z",
                "2024-03-09T21:30:00Z",
                "hourly",
                "Asia/Kathmandu"
            ),
            tiles(&[
                "2024-03-09T20:00:00Z",
                "2024-03-09T20:15:00Z",
                "2024-03-09T21:15:00Z",
                "2024-03-09T21:30:00Z",
            ])
        );
        assert_eq!(
            format_instant(ms("2024-03-09T18:30:00Z"), &zone("19800")),
            "2024-03-10T00:00:00.000+05:30"
        );
    }

    #[test]
    fn instants_format_with_the_offset_then_in_force() {
        let cases = [
            ("2015-01-01T00:00:00Z", "UTC", "2015-01-01T00:00:00.000Z"),
            ("2015-01-01T00:00:00Z", "0", "2015-01-01T00:00:00.000Z"),
            (
                "2024-03-09T10:00:00.123Z",
                "UTC",
                "2024-03-09T10:00:00.123Z",
            ),
            (
                "2024-03-10T05:00:00Z",
                "America/New_York",
                "2024-03-10T00:00:00.000-05:00",
            ),
            (
                "2024-07-01T04:00:00.999Z",
                "America/New_York",
                "2024-07-01T00:00:00.999-04:00",
            ),
            (
                "2024-03-09T18:15:00Z",
                "Asia/Kathmandu",
                "2024-03-10T00:00:00.000+05:45",
            ),
            (
                "2024-03-09T08:00:00Z",
                "-28800",
                "2024-03-09T00:00:00.000-08:00",
            ),
            (
                "2024-10-27T01:30:00Z",
                "Europe/Berlin",
                "2024-10-27T02:30:00.000+01:00",
            ),
            (
                "2024-10-27T00:30:00Z",
                "Europe/Berlin",
                "2024-10-27T02:30:00.000+02:00",
            ),
            // New York kept local mean time (-04:56:02) until 1883: written in UTC.
            (
                "1850-01-01T04:56:02Z",
                "America/New_York",
                "1850-01-01T04:56:02.000Z",
            ),
            ("0000-01-01T00:00:00Z", "UTC", "0000-01-01T00:00:00.000Z"),
            (
                "0000-01-01T00:00:00Z",
                "-3600",
                "-0001-12-31T23:00:00.000-01:00",
            ),
            (
                "9999-12-31T23:30:00Z",
                "3600",
                "+10000-01-01T00:30:00.000+01:00",
            ),
        ];
        for (instant, tz, expected) in cases {
            assert_eq!(
                format_instant(ms(instant), &zone(tz)),
                expected,
                "{instant} in {tz}"
            );
        }
    }

    #[test]
    fn an_interval_needs_a_timeframe() {
        let recent = ms("2024-03-01T00:00:00Z");
        for open in [
            Window::ALL_TIME,
            Window::new(MIN_TIMESTAMP_MS, recent),
            Window::new(recent, END_TIMESTAMP_MS),
            Window::new(MIN_TIMESTAMP_MS - 1, recent),
        ] {
            match buckets(open, interval("daily"), &Timezone::default()) {
                Err(QueryError::MissingRequiredProperty(message)) => {
                    assert!(
                        message.contains("interval daily needs a timeframe"),
                        "{message}"
                    );
                    assert!(message.contains("this_7_days"), "{message}");
                }
                other => panic!("{open:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn an_empty_window_has_no_bucket() {
        let at = ms("2024-03-01T00:00:00Z");
        for empty in [Window::new(at, at), Window::new(at, at - 1)] {
            assert_eq!(
                buckets(empty, interval("hourly"), &Timezone::default()),
                Ok(vec![])
            );
        }
    }

    #[test]
    fn too_many_buckets_are_refused_without_listing_them() {
        let utc = Timezone::default();
        // Exactly the bound is fine, one more is not.
        let minutes = |n: i64| {
            Window::new(
                ms("2024-01-01T00:00:00Z"),
                ms("2024-01-01T00:00:00Z") + n * MINUTE_MS,
            )
        };
        let most = buckets(minutes(10_000), interval("minutely"), &utc).expect("at the bound");
        assert_eq!(most.len(), MAX_BUCKETS);
        match buckets(minutes(10_001), interval("minutely"), &utc) {
            Err(QueryError::QueryTooLarge(message)) => {
                assert!(message.contains("into 10001 buckets"), "{message}");
            }
            other => panic!("gave {other:?}"),
        }
        // Minutely over 2023 is 525,600 buckets; the message names the count and a way out.
        match buckets(
            window("2023-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
            interval("minutely"),
            &utc,
        ) {
            Err(QueryError::QueryTooLarge(message)) => {
                assert_eq!(
                    message,
                    "interval minutely splits this timeframe into 525600 buckets, more than the \
                     10000 a query may have; use a coarser interval (e.g. hourly) or a shorter \
                     timeframe"
                );
            }
            other => panic!("gave {other:?}"),
        }
        // Billions of minutes, and thousands of years of days in a named zone: the answer comes
        // at once, since listing stops at the bound.
        let started = Instant::now();
        let cases = [
            ("minutely", "UTC", 4_733_540_640u64, "yearly"),
            ("every_2_days", "Europe/Berlin", 1_643_591, "yearly"),
            ("weekly", "America/New_York", 469_598, "yearly"),
            ("yearly", "UTC", 8_000, ""),
        ];
        for (every, tz, count, suggestion) in cases {
            let result = buckets(
                window("1000-01-01T00:00:00Z", "9999-12-31T00:00:00Z"),
                interval(every),
                &zone(tz),
            );
            if suggestion.is_empty() {
                assert_eq!(
                    result.map(|b| b.len()).map_err(|e| e.to_string()),
                    Ok(9_000)
                );
                continue;
            }
            let Err(QueryError::QueryTooLarge(message)) = result else {
                panic!("{every} gave {result:?}")
            };
            assert!(
                message.contains(&format!("into {count} buckets")),
                "{message}"
            );
            assert!(
                message.contains(&format!("(e.g. {suggestion})")),
                "{message}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        // All storable years fit yearly in UTC; an hour west of it they reach into year -1.
        let storable = Window::new(MIN_TIMESTAMP_MS + 1, END_TIMESTAMP_MS - 1);
        let years = buckets(storable, interval("yearly"), &utc).expect("fits");
        assert_eq!(years.len(), MAX_BUCKETS);
        match buckets(storable, interval("yearly"), &zone("-3600")) {
            Err(QueryError::QueryTooLarge(message)) => {
                assert!(message.contains("into 10001 buckets"), "{message}");
                assert!(message.contains("(e.g. every_2_years)"), "{message}");
            }
            other => panic!("gave {other:?}"),
        }
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
            "Pacific/Apia",
        ]
        .iter()
        .map(|z| zone(z))
        .collect()
    }

    const DAY_MS: i64 = 86_400_000;

    /// A rough length of one unit, to size random windows.
    const fn nominal_ms(unit: Unit) -> i64 {
        match unit {
            Unit::Minutes => MINUTE_MS,
            Unit::Hours => HOUR_MS,
            Unit::Days => 86_400_000,
            Unit::Weeks => 7 * 86_400_000,
            Unit::Months => 2_629_746_000,
            Unit::Years => 31_556_952_000,
        }
    }

    proptest! {
        /// Buckets tile the window: non-empty, contiguous, from its start to its end; inner
        /// edges lie on a local boundary of the unit; in zones whose offsets change by whole
        /// hours, inner minute and hour buckets are exactly `every` units long.
        #[test]
        fn buckets_tile_the_window(
            // 1990 to 2100: after Kathmandu's last change by a quarter hour.
            start in 631_152_000_000i64..4_102_444_800_000,
            permille in 0i64..=1000,
            zone in 0usize..9,
            unit in 0usize..6,
            every in prop_oneof![Just(1u32), 1u32..=12, Just(35)],
        ) {
            let tz = zones()[zone];
            let unit = UNITS[unit];
            let interval = Interval { every, unit };
            let most = 60 * i64::from(every) * nominal_ms(unit);
            let end = start + most * permille / 1000;
            let window = Window::new(start, end);
            let buckets = buckets(window, interval, &tz).expect("fits the bound");
            if window.is_empty() {
                prop_assert!(buckets.is_empty());
                return Ok(());
            }
            prop_assert_eq!(buckets[0].start_ms, start);
            prop_assert_eq!(buckets[buckets.len() - 1].end_ms, end);
            prop_assert!(buckets.iter().all(|b| !b.is_empty()), "{:?}", buckets);
            prop_assert!(buckets.windows(2).all(|p| p[0].end_ms == p[1].start_ms));
            prop_assert!(buckets.len() <= 62, "{} buckets", buckets.len());
            for (i, inner) in buckets.windows(2).enumerate() {
                let edge = inner[1].start_ms;
                let local = tz.local(edge);
                match unit {
                    Unit::Minutes | Unit::Hours => {
                        prop_assert_eq!(into_unit(local, unit), 0, "edge {}", edge);
                        let whole_hour_zone = zone != 6;
                        if i > 0 && whole_hour_zone {
                            prop_assert_eq!(
                                inner[0].duration_ms(),
                                i64::from(every) * unit_ms(unit)
                            );
                        }
                    }
                    _ => {
                        // A new local date begins at the edge (at midnight, or when a gap
                        // over midnight ends).
                        prop_assert!(tz.local(edge - 1).date() < local.date(), "edge {}", edge);
                    }
                }
            }
            let formatted = format_instant(start, &tz);
            let parsed = keen_shared::timestamp::parse(&formatted).expect("parses");
            prop_assert_eq!(parsed.unix_millis(), start);
        }

        /// Anywhere in storable time, local mean time included, buckets still tile the window
        /// and their edges read back from their formatted form.
        #[test]
        fn buckets_tile_any_storable_window(
            // A day inside the limits, where local years still have four digits.
            start in MIN_TIMESTAMP_MS + DAY_MS..END_TIMESTAMP_MS - DAY_MS,
            length in 0i64..40 * 31_556_952_000,
            zone in 0usize..9,
            unit in 3usize..6,
            every in 1u32..=3,
        ) {
            let tz = zones()[zone];
            let end = start.saturating_add(length).min(END_TIMESTAMP_MS - DAY_MS);
            let window = Window::new(start, end);
            let buckets = buckets(window, Interval { every, unit: UNITS[unit] }, &tz)
                .expect("fits the bound");
            prop_assert_eq!(buckets.is_empty(), window.is_empty());
            if let (Some(first), Some(last)) = (buckets.first(), buckets.last()) {
                prop_assert_eq!(first.start_ms, start);
                prop_assert_eq!(last.end_ms, end);
            }
            prop_assert!(buckets.iter().all(|b| !b.is_empty()));
            prop_assert!(buckets.windows(2).all(|p| p[0].end_ms == p[1].start_ms));
            for bucket in &buckets {
                let formatted = format_instant(bucket.start_ms, &tz);
                let parsed = keen_shared::timestamp::parse(&formatted);
                prop_assert_eq!(parsed.map(|p| p.unix_millis()).ok(), Some(bucket.start_ms), "{}", formatted);
            }
        }
    }
}
