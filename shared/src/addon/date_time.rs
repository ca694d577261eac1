//! `keen:date_time_parser`: an ISO-8601 date-time to its calendar parts
//! `{millisecond, second, minute, hour, day_of_month, day_of_week, day_of_week_string, week,
//! month, year, timezone_offset}`.
//!
//! The accepted forms are those of `keen.timestamp` ([`crate::timestamp::parse`]). Every part
//! is of the wall-clock time as written, not converted to UTC: `2024-03-09T23:30:00-05:00` is a
//! Saturday at hour 23 with `timezone_offset` -300 (minutes east of UTC). `day_of_week` counts
//! from Monday = 0 to Sunday = 6, `week` is the ISO week number. A string that is not an
//! accepted date-time gives `null` in every field.

use crate::timestamp;
use chrono::{Datelike, Timelike, Weekday};
use serde_json::{Value, json};

/// The add-on's output for `text`.
pub(super) fn parse(text: &str) -> Value {
    let Ok(parsed) = timestamp::parse(text.trim()) else {
        return json!({
            "millisecond": null,
            "second": null,
            "minute": null,
            "hour": null,
            "day_of_month": null,
            "day_of_week": null,
            "day_of_week_string": null,
            "week": null,
            "month": null,
            "year": null,
            "timezone_offset": null,
        });
    };
    let local = parsed.local;
    let weekday = local.weekday();
    json!({
        "millisecond": local.nanosecond() / 1_000_000,
        "second": local.second(),
        "minute": local.minute(),
        "hour": local.hour(),
        "day_of_month": local.day(),
        "day_of_week": weekday.num_days_from_monday(),
        "day_of_week_string": weekday_name(weekday),
        "week": local.iso_week().week(),
        "month": local.month(),
        "year": local.year(),
        "timezone_offset": parsed.offset_seconds / 60,
    })
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_of_the_local_time_as_written() {
        assert_eq!(
            parse("2024-03-09T23:30:15.250-05:00"),
            json!({
                "millisecond": 250, "second": 15, "minute": 30, "hour": 23,
                "day_of_month": 9, "day_of_week": 5, "day_of_week_string": "Saturday",
                "week": 10, "month": 3, "year": 2024, "timezone_offset": -300,
            })
        );
    }

    #[test]
    fn iso_weeks_cross_year_boundaries() {
        // 2021-01-03 is a Sunday in ISO week 53 of 2020; `year` stays the calendar year.
        let sunday = parse("2021-01-03T12:00:00Z");
        assert_eq!(sunday["week"], json!(53));
        assert_eq!(sunday["year"], json!(2021));
        assert_eq!(sunday["day_of_week"], json!(6));
        assert_eq!(sunday["day_of_week_string"], json!("Sunday"));
    }

    #[test]
    fn half_hour_zones_and_unparseable_text() {
        assert_eq!(
            parse("2024-01-01T05:30:00+05:30")["timezone_offset"],
            json!(330)
        );
        let junk = parse("yesterday");
        assert!(
            junk.as_object()
                .is_some_and(|o| o.len() == 11 && o.values().all(Value::is_null))
        );
    }
}
