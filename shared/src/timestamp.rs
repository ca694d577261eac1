//! ISO-8601 date-times as product.md §4.1 accepts them, and the one form they are stored in.
//!
//! Accepted: a calendar date (`YYYY-MM-DD` or `YYYYMMDD`), a separator (`T`, `t` or a space),
//! a time (`hh:mm`, `hh:mm:ss`, `hhmm` or `hhmmss`) with 0 to 9 fraction digits (`.` or `,`),
//! and an optional zone (`Z`, `±hh`, `±hh:mm`, `±hhmm`; none means UTC). A leap second
//! (`:60`) rolls over to the next second. Stored form: `YYYY-MM-DDTHH:MM:SS.sssZ`, in UTC, the
//! fraction truncated to milliseconds.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike, Utc};
use std::fmt::Write as _;

/// A parsed date-time: the instant, and the zone offset it was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedTimestamp {
    /// The instant, in UTC, to the nanosecond given.
    pub utc: DateTime<Utc>,
    /// Seconds east of UTC of the zone the input was written in (0 with no zone).
    pub offset_seconds: i32,
    /// The wall-clock time as written (before converting to UTC).
    pub local: NaiveDateTime,
}

impl ParsedTimestamp {
    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        self.utc.timestamp_millis()
    }
}

/// Why a string is not an accepted date-time; the text completes "… is not an ISO-8601
/// date-time: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimestampError(&'static str);

/// Parses an ISO-8601 date-time in any of the accepted forms.
pub fn parse(text: &str) -> Result<ParsedTimestamp, TimestampError> {
    let mut cursor = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };

    let year = cursor
        .digits(4)
        .ok_or(TimestampError("expected a 4-digit year"))?;
    let extended = cursor.eat(b'-');
    let month = cursor
        .digits(2)
        .ok_or(TimestampError("expected a 2-digit month"))?;
    if extended && !cursor.eat(b'-') {
        return Err(TimestampError("expected '-' between month and day"));
    }
    let day = cursor
        .digits(2)
        .ok_or(TimestampError("expected a 2-digit day"))?;
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)
        .ok_or(TimestampError("the date does not exist in the calendar"))?;

    match cursor.next() {
        Some(b'T' | b't' | b' ') => {}
        Some(_) => return Err(TimestampError("expected 'T' between date and time")),
        None => return Err(TimestampError("a time of day is required after the date")),
    }

    let hour = cursor
        .digits(2)
        .ok_or(TimestampError("expected a 2-digit hour"))?;
    let time_extended = cursor.eat(b':');
    let minute = cursor
        .digits(2)
        .ok_or(TimestampError("expected 2-digit minutes"))?;
    let mut second = 0;
    let mut nanos = 0;
    let has_seconds = if time_extended {
        cursor.eat(b':')
    } else {
        cursor.peek_digit()
    };
    if has_seconds {
        second = cursor
            .digits(2)
            .ok_or(TimestampError("expected 2-digit seconds"))?;
        if cursor.eat(b'.') || cursor.eat(b',') {
            let start = cursor.pos;
            while cursor.peek_digit() {
                if cursor.pos - start == 9 {
                    return Err(TimestampError("at most 9 fraction digits are accepted"));
                }
                let digit = u32::from(cursor.bytes[cursor.pos] - b'0');
                nanos = nanos * 10 + digit;
                cursor.pos += 1;
            }
            let count = cursor.pos - start;
            if count == 0 {
                return Err(TimestampError("expected digits after the decimal sign"));
            }
            nanos *= 10u32.pow(9 - count as u32);
        }
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(TimestampError("the time of day is out of range"));
    }
    let leap = second == 60;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second.min(59), nanos)
        .ok_or(TimestampError("the time of day is out of range"))?;

    let offset_seconds = match cursor.next() {
        None => 0,
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let hours = cursor
                .digits(2)
                .ok_or(TimestampError("expected a 2-digit zone hour"))?;
            // `+hh:mm` and `+hhmm` carry minutes, `+hh` does not.
            let minutes = if cursor.eat(b':') || cursor.peek_digit() {
                cursor
                    .digits(2)
                    .ok_or(TimestampError("expected 2-digit zone minutes"))?
            } else {
                0
            };
            if hours > 23 || minutes > 59 {
                return Err(TimestampError("the zone offset is out of range"));
            }
            let magnitude = (hours * 3600 + minutes * 60) as i32;
            if sign == b'-' { -magnitude } else { magnitude }
        }
        Some(_) => return Err(TimestampError("unexpected text after the time of day")),
    };
    if cursor.pos != cursor.bytes.len() {
        return Err(TimestampError("unexpected text after the zone"));
    }

    let mut local = NaiveDateTime::new(date, time);
    if leap {
        local += TimeDelta::seconds(1);
    }
    let utc_naive = local - TimeDelta::seconds(i64::from(offset_seconds));
    if !(0..=9999).contains(&utc_naive.year()) {
        return Err(TimestampError(
            "the instant is outside the years 0000 to 9999",
        ));
    }
    Ok(ParsedTimestamp {
        utc: utc_naive.and_utc(),
        offset_seconds,
        local,
    })
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.sssZ`.
///
/// Instants outside the years 0000–9999 are clamped to that range, so the output always has the
/// fixed width the storage sort keys rely on.
pub fn format_millis(unix_millis: i64) -> String {
    const MIN: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
    const MAX: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let clamped = unix_millis.clamp(MIN, MAX);
    let instant = DateTime::from_timestamp_millis(clamped).unwrap_or_default();
    let mut out = String::with_capacity(24);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        instant.year(),
        instant.month(),
        instant.day(),
        instant.hour(),
        instant.minute(),
        instant.second(),
        instant.timestamp_subsec_millis()
    );
    out
}

/// Parses and re-formats in the stored form.
pub fn normalise(text: &str) -> Result<String, TimestampError> {
    parse(text).map(|parsed| format_millis(parsed.unix_millis()))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, count: usize) -> Option<u32> {
        let slice = self.bytes.get(self.pos..self.pos + count)?;
        let mut value = 0u32;
        for &b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.pos += count;
        Some(value)
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn peek_digit(&self) -> bool {
        self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit)
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.bytes.get(self.pos).copied();
        if b.is_some() {
            self.pos += 1;
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_form_normalises() {
        let cases = [
            ("2024-03-09T10:11:12Z", "2024-03-09T10:11:12.000Z"),
            ("2024-03-09T10:11:12", "2024-03-09T10:11:12.000Z"),
            ("2024-03-09T10:11", "2024-03-09T10:11:00.000Z"),
            ("2024-03-09 10:11:12z", "2024-03-09T10:11:12.000Z"),
            ("2024-03-09t10:11:12Z", "2024-03-09T10:11:12.000Z"),
            ("2024-03-09T10:11:12.1Z", "2024-03-09T10:11:12.100Z"),
            ("2024-03-09T10:11:12.12Z", "2024-03-09T10:11:12.120Z"),
            ("2024-03-09T10:11:12.123Z", "2024-03-09T10:11:12.123Z"),
            ("2024-03-09T10:11:12.1239Z", "2024-03-09T10:11:12.123Z"),
            ("2024-03-09T10:11:12.123456Z", "2024-03-09T10:11:12.123Z"),
            ("2024-03-09T10:11:12.123456789Z", "2024-03-09T10:11:12.123Z"),
            ("2024-03-09T10:11:12,5Z", "2024-03-09T10:11:12.500Z"),
            ("2024-03-09T10:11:12+02:00", "2024-03-09T08:11:12.000Z"),
            ("2024-03-09T10:11:12+0200", "2024-03-09T08:11:12.000Z"),
            ("2024-03-09T10:11:12+02", "2024-03-09T08:11:12.000Z"),
            ("2024-03-09T01:11:12-05:30", "2024-03-09T06:41:12.000Z"),
            ("2024-03-09T23:30:00-0100", "2024-03-10T00:30:00.000Z"),
            ("2024-03-09T00:30:00+01:00", "2024-03-08T23:30:00.000Z"),
            ("20240309T101112Z", "2024-03-09T10:11:12.000Z"),
            ("20240309T1011Z", "2024-03-09T10:11:00.000Z"),
            ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000Z"),
            ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00.000Z"),
            ("0000-01-01T00:00:00Z", "0000-01-01T00:00:00.000Z"),
            ("9999-12-31T23:59:59.999999999Z", "9999-12-31T23:59:59.999Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalise(input).as_deref(), Ok(expected), "input {input}");
        }
    }

    #[test]
    fn malformed_inputs_are_refused_with_a_reason() {
        let cases = [
            "",
            "2024",
            "2024-03-09",
            "2024-03-09T",
            "2024-3-9T10:11:12Z",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-03-09T24:00:00Z",
            "2024-03-09T10:60:00Z",
            "2024-03-09T10:11:61Z",
            "2024-03-09T10:11:12.Z",
            "2024-03-09T10:11:12.1234567890Z",
            "2024-03-09T10:11:12+24:00",
            "2024-03-09T10:11:12+02:60",
            "2024-03-09T10:11:12 UTC",
            "2024-03-09T10:11:12ZZ",
            "2024-03-09X10:11:12Z",
            "0000-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "tomorrow",
            "２０２４-03-09T10:11:12Z",
        ];
        for input in cases {
            assert!(parse(input).is_err(), "accepted {input:?}");
        }
    }

    #[test]
    fn offset_and_local_time_are_kept() {
        let parsed = parse("2024-03-09T10:11:12.5-07:00").expect("valid");
        assert_eq!(parsed.offset_seconds, -7 * 3600);
        assert_eq!(parsed.local.hour(), 10);
        assert_eq!(parsed.utc.hour(), 17);
        assert_eq!(parsed.unix_millis(), 1_710_004_272_500);
    }

    #[test]
    fn formatting_is_fixed_width_and_clamped() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(1_710_000_000_123), "2024-03-09T16:00:00.123Z");
        assert_eq!(format_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_millis(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_millis(i64::MIN), "0000-01-01T00:00:00.000Z");
    }
}
