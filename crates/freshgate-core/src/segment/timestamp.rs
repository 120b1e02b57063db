//! Segment timestamps: the lenient parser for what clients really send (spec §2.1), the one
//! output format we write, and the clock-skew correction
//! `timestamp = receivedAt - (sentAt - originalTimestamp)`.

use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Parses an ISO-8601 / RFC 3339 timestamp leniently, returning it in UTC.
///
/// Accepted: `YYYY-M-D` with 1–2 digit month/day (`2015-2-02T00:30:08.276Z` appears in Segment's
/// own docs), a bare date (midnight UTC), `T`/`t`/space as separator, optional seconds, 1–9
/// fractional digits (more are truncated), `Z`, `+hh:mm`, `+hhmm`, `+hh`, or no offset (taken as
/// UTC). Leap second `60` is clamped to `59`. Years 1–9998 only, so every later conversion and
/// [`format_timestamp`] stay in range.
pub fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    let mut c = Cursor {
        b: s.trim().as_bytes(),
        i: 0,
    };
    let year = c.digits(4, 4)?;
    if !(1..=9998).contains(&year) {
        return None;
    }
    c.expect(b'-')?;
    let month = Month::try_from(u8::try_from(c.digits(1, 2)?).ok()?).ok()?;
    c.expect(b'-')?;
    let day = u8::try_from(c.digits(1, 2)?).ok()?;
    let year = i32::try_from(year).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let Some(sep) = c.next() else {
        return Some(date.midnight().assume_utc());
    };
    if !matches!(sep, b'T' | b't' | b' ') {
        return None;
    }
    let hour = u8::try_from(c.digits(1, 2)?).ok()?;
    c.expect(b':')?;
    let minute = u8::try_from(c.digits(2, 2)?).ok()?;
    let mut second = 0u8;
    let mut nanos = 0u32;
    if c.peek() == Some(b':') {
        c.i += 1;
        second = u8::try_from(c.digits(2, 2)?).ok()?.min(59);
        if matches!(c.peek(), Some(b'.' | b',')) {
            c.i += 1;
            nanos = c.fraction()?;
        }
    }
    let offset = match c.next() {
        None | Some(b'Z' | b'z') => UtcOffset::UTC,
        Some(sign @ (b'+' | b'-')) => {
            let h = c.two_digits()?;
            let m = match c.peek() {
                None => 0,
                Some(b':') => {
                    c.i += 1;
                    c.two_digits()?
                }
                Some(_) => c.two_digits()?,
            };
            let (h, m) = if sign == b'-' { (-h, -m) } else { (h, m) };
            UtcOffset::from_hms(h, m, 0).ok()?
        }
        Some(_) => return None,
    };
    if !c.at_end() {
        return None;
    }
    let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    // The range holds in UTC too: `9998-12-31T23:01-01:00` is in year 9999 there, which
    // `format_timestamp` would write and this parser refuse (found by the `timestamp` fuzzer).
    PrimitiveDateTime::new(date, time)
        .assume_offset(offset)
        .checked_to_offset(UtcOffset::UTC)
        .filter(|t| (1..=9998).contains(&t.year()))
}

/// Formats as RFC 3339 in UTC with milliseconds: `2025-11-07T17:00:00.000Z` (what analytics-node
/// sends and Segment stores).
pub fn format_timestamp(t: OffsetDateTime) -> String {
    let t = t.checked_to_offset(UtcOffset::UTC).unwrap_or(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Segment's rule (spec §2.1): with both a client `timestamp` and `sentAt`, shift the client time
/// by our clock minus the client's clock; with only a `timestamp`, trust it; with none, use
/// `received_at`. A correction that leaves the supported range falls back to the client time.
pub fn corrected_timestamp(
    received_at: OffsetDateTime,
    sent_at: Option<OffsetDateTime>,
    original: Option<OffsetDateTime>,
) -> OffsetDateTime {
    match (original, sent_at) {
        (Some(original), Some(sent_at)) => {
            let skew: Duration = sent_at - original;
            received_at
                .checked_sub(skew)
                .filter(|t| (1..=9998).contains(&t.year()))
                .unwrap_or(original)
        }
        (Some(original), None) => original,
        (None, _) => received_at,
    }
}

/// How far after `receivedAt` an event time may lie. A client clock set years ahead (or a
/// `timestamp` of `9000-01-01`) would otherwise make that event newer than every later one, and
/// the contact would keep its values forever ("older than last sent").
pub const MAX_AHEAD: Duration = Duration::hours(24);

/// The event time to use: `t`, or `received_at` when `t` is more than [`MAX_AHEAD`] after it
/// (the second value is `true` then; the caller keeps the client's value in
/// `originalTimestamp`).
pub fn bounded_timestamp(received_at: OffsetDateTime, t: OffsetDateTime) -> (OffsetDateTime, bool) {
    if t - received_at > MAX_AHEAD {
        (received_at, true)
    } else {
        (t, false)
    }
}

/// Drops sub-millisecond precision so in-memory values equal what [`format_timestamp`] writes.
pub(crate) fn truncate_to_millis(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t)
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// Between `min` and `max` ASCII digits; a further digit is an error.
    fn digits(&mut self, min: usize, max: usize) -> Option<u32> {
        let mut value = 0u32;
        let mut n = 0;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            if n == max {
                return None;
            }
            value = value * 10 + u32::from(d - b'0');
            n += 1;
            self.i += 1;
        }
        (n >= min).then_some(value)
    }

    /// Exactly two digits, whatever follows (`+hhmm` offsets run on without a separator).
    fn two_digits(&mut self) -> Option<i8> {
        let tens = self.next().filter(u8::is_ascii_digit)?;
        let ones = self.next().filter(u8::is_ascii_digit)?;
        i8::try_from((tens - b'0') * 10 + (ones - b'0')).ok()
    }

    /// At least one fractional digit, scaled to nanoseconds; digits past the ninth are dropped.
    fn fraction(&mut self) -> Option<u32> {
        let mut nanos = 0u32;
        let mut n = 0;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            if n < 9 {
                nanos = nanos * 10 + u32::from(d - b'0');
            }
            n += 1;
            self.i += 1;
        }
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
        Some(nanos)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    #[test]
    fn parses_what_clients_send() {
        let cases = [
            (
                "2025-11-07T17:00:00.000Z",
                datetime!(2025-11-07 17:00:00 UTC),
            ),
            // python 2.x
            (
                "2025-11-07T17:00:00.123+00:00",
                datetime!(2025-11-07 17:00:00.123 UTC),
            ),
            (
                "2025-11-07T17:00:00.123456+00:00",
                datetime!(2025-11-07 17:00:00.123456 UTC),
            ),
            // go: nanoseconds and a local offset
            (
                "2025-11-07T18:00:00.123456789+01:00",
                datetime!(2025-11-07 17:00:00.123456789 UTC),
            ),
            (
                "2025-11-07T12:30:00-0430",
                datetime!(2025-11-07 17:00:00 UTC),
            ),
            ("2025-11-07T19:00:00+02", datetime!(2025-11-07 17:00:00 UTC)),
            // Segment docs
            (
                "2015-2-02T00:30:08.276Z",
                datetime!(2015-02-02 00:30:08.276 UTC),
            ),
            (
                "2020-04-23T22:38:48.55Z",
                datetime!(2020-04-23 22:38:48.55 UTC),
            ),
            ("2015-2-2", datetime!(2015-02-02 00:00:00 UTC)),
            ("2025-11-07", datetime!(2025-11-07 00:00:00 UTC)),
            ("2025-11-07 17:00:00", datetime!(2025-11-07 17:00:00 UTC)),
            ("2025-11-07t17:00z", datetime!(2025-11-07 17:00:00 UTC)),
            ("2016-12-31T23:59:60Z", datetime!(2016-12-31 23:59:59 UTC)),
            (
                "2025-11-07T17:00:00.1234567891234Z",
                datetime!(2025-11-07 17:00:00.123456789 UTC),
            ),
            (" 2025-11-07T17:00:00Z ", datetime!(2025-11-07 17:00:00 UTC)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_timestamp(input), Some(want), "{input}");
        }
    }

    #[test]
    fn the_year_range_holds_in_utc() {
        assert_eq!(parse_timestamp("9998-12-31T23:01-01:00"), None);
        assert_eq!(parse_timestamp("0001-01-01T00:30+01:00"), None);
        let last = parse_timestamp("9998-12-31T23:59:59.999Z").unwrap();
        assert_eq!(parse_timestamp(&format_timestamp(last)), Some(last));
    }

    #[test]
    fn rejects_garbage() {
        for input in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-02-30",
            "25-11-07",
            "2025-11-07T",
            "2025-11-07T17",
            "2025-11-07T17:00:00.Z",
            "2025-11-07T17:00:00Zjunk",
            "2025-11-07T25:00:00Z",
            "2025-11-07T17:00:00+2",
            "2025-11-07T17:00:00+26:00",
            "0000-01-01",
            "9999-12-31T23:59:59Z",
            "2025-011-07",
            "1762534800000",
        ] {
            assert_eq!(parse_timestamp(input), None, "{input:?}");
        }
    }

    #[test]
    fn formats_with_millis_in_utc() {
        let t = datetime!(2025-11-07 18:00:00.123456789 +01:00);
        assert_eq!(format_timestamp(t), "2025-11-07T17:00:00.123Z");
        assert_eq!(
            format_timestamp(datetime!(0005-01-02 03:04:05 UTC)),
            "0005-01-02T03:04:05.000Z"
        );
    }

    #[test]
    fn correction_math() {
        let received = datetime!(2025-11-07 17:00:10 UTC);
        // client clock 1 h fast: sent at 18:00:05, event 18:00:00 -> happened 5 s before receipt
        let sent = datetime!(2025-11-07 18:00:05 UTC);
        let original = datetime!(2025-11-07 18:00:00 UTC);
        assert_eq!(
            corrected_timestamp(received, Some(sent), Some(original)),
            datetime!(2025-11-07 17:00:05 UTC)
        );
        assert_eq!(
            corrected_timestamp(received, None, Some(original)),
            original
        );
        assert_eq!(corrected_timestamp(received, Some(sent), None), received);
        assert_eq!(corrected_timestamp(received, None, None), received);
        // absurd skew: keep the client's time rather than leave the supported range
        let ancient = datetime!(0001-01-01 00:00:00 UTC);
        let far = datetime!(9998-01-01 00:00:00 UTC);
        assert_eq!(
            corrected_timestamp(received, Some(far), Some(ancient)),
            ancient
        );
    }

    #[test]
    fn a_time_more_than_a_day_ahead_of_receipt_is_replaced_by_receipt() {
        let received = datetime!(2025-11-07 17:00:00 UTC);
        let far = datetime!(9000-01-01 00:00:00 UTC);
        assert_eq!(bounded_timestamp(received, far), (received, true));
        let in_a_day = received + MAX_AHEAD;
        assert_eq!(bounded_timestamp(received, in_a_day), (in_a_day, false));
        let past = datetime!(2020-01-01 00:00:00 UTC);
        assert_eq!(bounded_timestamp(received, past), (past, false));
    }

    #[test]
    fn truncates_to_millis() {
        let t = datetime!(2025-11-07 17:00:00.123456789 UTC);
        assert_eq!(
            truncate_to_millis(t),
            datetime!(2025-11-07 17:00:00.123 UTC)
        );
    }
}
