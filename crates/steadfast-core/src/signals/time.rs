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
    let at = httpdate::parse_http_date(text)
        .map_err(|_| SignalError::new(FIELD, "neither delta-seconds nor an HTTP-date"))?;
    Ok(until(at, now))
}

/// Parses a rate-limit reset value as vendors send it: delay seconds
/// (integer or fractional), Unix epoch seconds or milliseconds, a Go-style
/// duration (`"1m30s"`, `"250ms"`, `"6m0s"`), or an HTTP-date.
///
/// An integer of at least 10^9 cannot be a sane delay (31 years), so it is
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
    if text.bytes().all(|c| c.is_ascii_digit()) {
        let n = saturating_u64(text);
        return Ok(if n >= EPOCH_MILLIS {
            until(UNIX_EPOCH + Duration::from_millis(n), now)
        } else if n >= EPOCH_SECS {
            until(UNIX_EPOCH + Duration::from_secs(n), now)
        } else {
            clamp_secs(n as f64)
        });
    }
    if let Some(d) = parse_seconds(text) {
        return Ok(d);
    }
    if let Some(d) = parse_go_duration(text) {
        return Ok(d);
    }
    httpdate::parse_http_date(text)
        .map(|at| until(at, now))
        .map_err(|_| {
            SignalError::new(
                field,
                "not seconds, an epoch time, a duration or an HTTP-date",
            )
        })
}

/// Decimal seconds: `"12"`, `"0.5"`. Saturates at [`MAX_SIGNAL_DELAY`].
pub(crate) fn parse_seconds(text: &str) -> Option<Duration> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    if text.ends_with('.') {
        return None;
    }
    let whole = saturating_u64(int);
    if whole >= MAX_SIGNAL_DELAY.as_secs() {
        return Some(MAX_SIGNAL_DELAY);
    }
    // Nanosecond precision at most; further digits cannot matter.
    let digits = &frac[..frac.len().min(9)];
    let nanos = if digits.is_empty() {
        0
    } else {
        saturating_u64(digits) * 10u64.pow(9 - digits.len() as u32)
    };
    Some(Duration::new(whole, nanos as u32))
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
