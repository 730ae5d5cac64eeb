//! Delays and instants as servers write them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{MAX_SIGNAL_DELAY, SignalError, clamp_secs};

/// Parses a `Retry-After` value (RFC 9110 §10.2.3).
///
/// Accepts delta-seconds and the three HTTP-date forms (IMF-fixdate,
/// obsolete RFC 850, asctime); a date at or before `now` gives zero.
/// Tolerates surrounding whitespace and a decimal fraction (`"1.5"`), which
/// some servers send though the RFC does not allow it. Values past
/// [`MAX_SIGNAL_DELAY`] are clamped, including numbers too large for any
/// integer type.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use steadfast_core::signals::parse_retry_after;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
/// assert_eq!(parse_retry_after(b"120", now), Ok(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after(b"Wed, 21 Oct 2015 07:28:30 GMT", now), Ok(Duration::from_secs(30)));
/// assert_eq!(parse_retry_after(b"Tue, 20 Oct 2015 07:28:00 GMT", now), Ok(Duration::ZERO));
/// assert!(parse_retry_after(b"soon", now).is_err());
/// ```
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Result<Duration, SignalError> {
    const FIELD: &str = "Retry-After";
    let text = trimmed_ascii(value).ok_or(SignalError::new(FIELD, "not ASCII"))?;
    if text.is_empty() {
        return Err(SignalError::new(FIELD, "empty"));
    }
    if text.as_bytes()[0].is_ascii_digit() {
        return parse_seconds(text).ok_or(SignalError::new(FIELD, "not delta-seconds"));
    }
    parse_date(text, now).ok_or(SignalError::new(
        FIELD,
        "neither delta-seconds nor an HTTP-date",
    ))
}

/// Parses a rate-limit reset value as vendors send it: delay seconds
/// (integer or fractional), Unix epoch seconds (with or without a
/// fraction) or milliseconds, a Go-style duration (`"1m30s"`, `"250ms"`,
/// `"6m0s"`), or an HTTP-date.
///
/// A number of at least 10^9 cannot be a sane delay (31 years), so it is
/// read as epoch seconds, and from 10^12 as epoch milliseconds; a reset in
/// the past gives zero. The result is clamped to [`MAX_SIGNAL_DELAY`].
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use steadfast_core::signals::parse_reset;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(parse_reset(b"30", now), Ok(Duration::from_secs(30)));
/// assert_eq!(parse_reset(b"1700000060", now), Ok(Duration::from_secs(60)));
/// assert_eq!(parse_reset(b"6m0s", now), Ok(Duration::from_secs(360)));
/// assert_eq!(parse_reset(b"0.25", now), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_reset(b"1700000001.5", now), Ok(Duration::from_millis(1500)));
/// ```
pub fn parse_reset(value: &[u8], now: SystemTime) -> Result<Duration, SignalError> {
    parse_reset_field("X-RateLimit-Reset", value, now)
}

pub(crate) fn parse_reset_field(
    field: &'static str,
    value: &[u8],
    now: SystemTime,
) -> Result<Duration, SignalError> {
    const EPOCH_SECS: u64 = 1_000_000_000;
    const EPOCH_MILLIS: u64 = 1_000_000_000_000;
    let text = trimmed_ascii(value).ok_or(SignalError::new(field, "not ASCII"))?;
    if text.is_empty() {
        return Err(SignalError::new(field, "empty"));
    }
    if let Some(number) = parse_unclamped_seconds(text) {
        // Discord sends epoch seconds with a fraction (`1470173023.123`).
        let whole = number.as_secs();
        let at = if whole >= EPOCH_MILLIS {
            UNIX_EPOCH.checked_add(Duration::from_millis(whole))
        } else if whole >= EPOCH_SECS {
            UNIX_EPOCH.checked_add(number)
        } else {
            return Ok(number.min(MAX_SIGNAL_DELAY));
        };
        // Past what this platform's clock can represent (Windows' ends
        // about 58,000 years after 1970): as far off as a signal may say.
        return Ok(at.map_or(MAX_SIGNAL_DELAY, |at| until(at, now)));
    }
    if let Some(d) = parse_go_duration(text) {
        return Ok(d);
    }
    parse_date(text, now).ok_or(SignalError::new(
        field,
        "not seconds, an epoch time, a duration or an HTTP-date",
    ))
}

/// An HTTP-date, as the delay from `now` (zero when past). Dates before
/// 1970, which `httpdate` refuses, are in the past too, once the whole
/// date is checked.
fn parse_date(text: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(at) = httpdate::parse_http_date(text) {
        return Some(until(at, now));
    }
    before_1970(text).then_some(Duration::ZERO)
}

/// Whether `text` is a valid HTTP-date before 1970 (in the IMF-fixdate or
/// asctime form: the obsolete RFC 850 form has two-digit years, which
/// `httpdate` reads as 1970 or later). Its year is moved into `httpdate`'s
/// range by whole 400-year cycles of the Gregorian calendar, which keep
/// every date on its weekday, and `httpdate` checks the rest.
fn before_1970(text: &str) -> bool {
    let bytes = text.as_bytes();
    // The one run of exactly four digits is the year (days, hours,
    // minutes and seconds have two).
    let mut start = None;
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if run == 4 {
            start = Some(i);
            break;
        }
        i += run.max(1);
    }
    let Some(start) = start else { return false };
    let Ok(year) = text[start..start + 4].parse::<u32>() else {
        return false;
    };
    if year >= 1970 {
        return false;
    }
    let moved = year + 400 * (1970 - year).div_ceil(400);
    let text = format!("{}{moved}{}", &text[..start], &text[start + 4..]);
    httpdate::parse_http_date(&text).is_ok()
}

/// Decimal seconds with no upper clamp, saturating at `u64::MAX` seconds.
fn parse_unclamped_seconds(text: &str) -> Option<Duration> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || text.ends_with('.') {
        return None;
    }
    // Nanosecond precision at most; further digits cannot matter.
    let frac = &frac[..frac.len().min(9)];
    let nanos = if frac.is_empty() {
        0
    } else {
        saturating_u64(frac) * 10u64.pow(9 - frac.len() as u32)
    };
    Some(Duration::new(saturating_u64(int), nanos as u32))
}

/// Decimal seconds: `"12"`, `"0.5"`. Saturates at [`MAX_SIGNAL_DELAY`].
pub(crate) fn parse_seconds(text: &str) -> Option<Duration> {
    parse_unclamped_seconds(text).map(|d| d.min(MAX_SIGNAL_DELAY))
}

/// Go's `time.Duration` text: a sequence of decimal numbers with units
/// `h`, `m`, `s`, `ms`, `us`/`µs`, `ns` (`"1h2m3.5s"`).
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0.0_f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .bytes()
            .take_while(|c| !(c.is_ascii_digit() || *c == b'.'))
            .count();
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Some(clamp_secs(total))
}

fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now)
        .map_or(Duration::ZERO, |d| d.min(MAX_SIGNAL_DELAY))
}

fn saturating_u64(digits: &str) -> u64 {
    digits.bytes().fold(0u64, |acc, c| {
        acc.saturating_mul(10).saturating_add(u64::from(c - b'0'))
    })
}

/// The value as trimmed text, or `None` if it holds a non-ASCII byte.
/// (`µs` is the one non-ASCII token we accept, so allow valid UTF-8.)
fn trimmed_ascii(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value)
        .ok()
        .map(|s| s.trim_matches([' ', '\t']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let d = |s: &str| parse_go_duration(s);
        assert_eq!(d("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(d("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
        assert_eq!(d("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(d("7µs"), Some(Duration::from_secs_f64(7e-6)));
        assert_eq!(d("1x"), None);
        assert_eq!(d("s"), None);
        assert_eq!(d("99999999h"), Some(MAX_SIGNAL_DELAY));
    }

    #[test]
    fn dates_before_1970_are_past_only_when_they_are_dates() {
        let now = SystemTime::now();
        let d = |s: &str| parse_date(s, now);
        assert_eq!(d("Tue, 06 Nov 1900 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(d("Tue Nov  6 08:49:37 1900"), Some(Duration::ZERO));
        assert_eq!(d("Wed, 31 Dec 1969 23:59:59 GMT"), Some(Duration::ZERO));
        assert_eq!(d("Mon, 01 Jan 0001 00:00:00 GMT"), Some(Duration::ZERO));
        // Text that only looks like one: a weekday-ish word, an old year
        // and something shaped like a time.
        assert_eq!(d("Monkey 1900 aa:bb:cc"), None);
        assert_eq!(d("Sun, 06 Nov 1900 08:49:37 GMT"), None, "wrong weekday");
        assert_eq!(d("Tue, 06 Nov 1900 25:49:37 GMT"), None);
        assert_eq!(d("Tue, 06 Nov 1900"), None);
    }

    #[test]
    fn seconds_saturate_and_reject_garbage() {
        assert_eq!(
            parse_seconds("99999999999999999999999999"),
            Some(MAX_SIGNAL_DELAY)
        );
        assert_eq!(
            parse_seconds("1.000000000999"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(parse_seconds("1."), None);
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_seconds("1e3"), None);
    }
}
