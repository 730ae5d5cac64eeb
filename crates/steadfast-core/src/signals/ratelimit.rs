//! The rate-limit families: IETF structured fields (current and legacy) and
//! the vendor `X-RateLimit-*` headers.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::sf::{self, Bare};
use super::time::parse_reset_field;
use super::{SignalError, clamp_secs};

/// A quota the server announced: how many requests are left and when the
/// quota is restored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    limit: Option<u64>,
    remaining: u64,
    reset: Duration,
    window: Option<Duration>,
    source: RateLimitSource,
}

/// Which header family a [`RateLimit`] came from.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateLimitSource {
    /// `RateLimit` / `RateLimit-Policy` structured fields (draft -08 to -11).
    Ietf,
    /// The draft -07 dictionary: `RateLimit: limit=.., remaining=.., reset=..`.
    IetfDictionary,
    /// The separate `RateLimit-Limit`, `-Remaining`, `-Reset` fields (drafts -00 to -06).
    IetfSeparate,
    /// `X-RateLimit-*` or `X-Rate-Limit-*` vendor headers.
    Vendor,
}

impl RateLimit {
    /// A rate limit with `remaining` requests left until `reset`.
    /// Useful for tests and custom parsers.
    pub const fn new(remaining: u64, reset: Duration, source: RateLimitSource) -> Self {
        Self {
            limit: None,
            remaining,
            reset,
            window: None,
            source,
        }
    }

    /// Sets the total quota of the window.
    pub const fn with_limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sets the window length.
    pub const fn with_window(mut self, window: Duration) -> Self {
        self.window = Some(window);
        self
    }

    /// The quota of a whole window, when the server said.
    pub const fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Requests (or quota units) left in the current window.
    pub const fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Time until the quota is restored (the effective window of what remains).
    pub const fn reset(&self) -> Duration {
        self.reset
    }

    /// The window of the policy, when the server said (`w`).
    pub const fn window(&self) -> Option<Duration> {
        self.window
    }

    /// Where it came from.
    pub const fn source(&self) -> RateLimitSource {
        self.source
    }

    /// The even spacing that spends what remains by the reset: `reset /
    /// remaining`, or the whole `reset` when nothing remains.
    pub fn pace(&self) -> Duration {
        match self.remaining {
            0 => self.reset,
            n => {
                // Integer arithmetic: exact, and no float that could overflow.
                let nanos = self.reset.as_nanos() / u128::from(n);
                Duration::new(
                    (nanos / 1_000_000_000) as u64,
                    (nanos % 1_000_000_000) as u32,
                )
            }
        }
    }

    /// Orders quotas by how much they constrain: an exhausted quota first
    /// (the longer reset wins), then the slower pace.
    fn constrains_more_than(&self, other: &Self) -> bool {
        let key = |rl: &Self| (rl.remaining == 0, rl.pace());
        key(self) > key(other)
    }
}

/// The most constraining of all quotas present in `headers`.
pub(super) fn most_constraining(
    headers: &HeaderMap,
    now: SystemTime,
    malformed: &mut Vec<SignalError>,
) -> Option<RateLimit> {
    let mut best: Option<RateLimit> = None;
    let mut offer = |rl: RateLimit| {
        if best.as_ref().is_none_or(|b| rl.constrains_more_than(b)) {
            best = Some(rl);
        }
    };
    ietf(headers, malformed, &mut offer);
    ietf_separate(headers, now, malformed, &mut offer);
    vendor(headers, now, malformed, &mut offer);
    best
}

const RATELIMIT: &str = "RateLimit";
const POLICY: &str = "RateLimit-Policy";

/// `RateLimit` / `RateLimit-Policy`, current structured form or the -07
/// dictionary. Several field lines combine as one list (RFC 9110 §5.3).
fn ietf(headers: &HeaderMap, malformed: &mut Vec<SignalError>, offer: &mut impl FnMut(RateLimit)) {
    let Some(value) = joined(headers, "ratelimit") else {
        return;
    };
    let policy_value = joined(headers, "ratelimit-policy");
    let policies = match policy_value.as_deref().map(sf::parse_list) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            malformed.push(SignalError::new(POLICY, e.0));
            Vec::new()
        }
        None => Vec::new(),
    };

    let list = sf::parse_list(&value);
    if let Ok(items) = list {
        let mut found = false;
        for item in &items {
            let Some(r) = non_negative(item.param("r")) else {
                if item.param("r").is_some() {
                    malformed.push(SignalError::new(
                        RATELIMIT,
                        "remaining quota (`r`) is not a non-negative integer",
                    ));
                }
                continue;
            };
            let policy = item
                .item
                .as_name()
                .and_then(|name| policies.iter().find(|p| p.item.as_name() == Some(name)));
            let window = policy.and_then(|p| non_negative(p.param("w")));
            // `t` is optional (draft -11 §4.1): without it the quota is
            // restored at the latest when the policy window ends.
            let Some(reset) = non_negative(item.param("t")).or(window) else {
                malformed.push(SignalError::new(
                    RATELIMIT,
                    "no reset time (`t`) and no policy window (`w`)",
                ));
                continue;
            };
            found = true;
            let mut rl = RateLimit::new(saturate(r), clamp_secs(reset), RateLimitSource::Ietf);
            if let Some(q) = policy.and_then(|p| non_negative(p.param("q"))) {
                rl = rl.with_limit(saturate(q));
            }
            if let Some(w) = window {
                rl = rl.with_window(clamp_secs(w));
            }
            offer(rl);
        }
        if !found && !items.iter().any(|i| i.param("r").is_some()) {
            malformed.push(SignalError::new(
                RATELIMIT,
                "no item with a remaining quota (`r`)",
            ));
        }
        return;
    }

    // Draft -07: `limit=100, remaining=50, reset=30`; policy `100;w=60`.
    match sf::parse_dictionary(&value) {
        Ok(dict) => {
            // Later duplicates override earlier ones (RFC 9651 §4.2.2).
            let get = |k: &str| {
                dict.iter()
                    .rev()
                    .find(|m| m.key.is_some_and(|key| key.eq_ignore_ascii_case(k)))
            };
            let remaining = get("remaining").and_then(|m| m.item.as_non_negative());
            let reset = get("reset").and_then(|m| m.item.as_non_negative());
            let (Some(remaining), Some(reset)) = (remaining, reset) else {
                malformed.push(SignalError::new(
                    RATELIMIT,
                    "no remaining quota and reset time",
                ));
                return;
            };
            let mut rl = RateLimit::new(
                saturate(remaining),
                clamp_secs(reset),
                RateLimitSource::IetfDictionary,
            );
            if let Some(limit) = get("limit").and_then(|m| m.item.as_non_negative()) {
                rl = rl.with_limit(saturate(limit));
            }
            if let Some(w) = policies.iter().find_map(|p| non_negative(p.param("w"))) {
                rl = rl.with_window(clamp_secs(w));
            }
            offer(rl);
        }
        Err(e) => {
            // Neither form parsed: name the error of the form the value
            // is in. The list starts with a policy name and its
            // parameters (`"day";r=5`), the dictionary with `key=`.
            let first = value
                .split(|&c| c == b',' || c == b';')
                .next()
                .unwrap_or_default();
            let reason = match list {
                Err(list) if !first.contains(&b'=') => list.0,
                _ => e.0,
            };
            malformed.push(SignalError::new(RATELIMIT, reason));
        }
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (drafts -00..-06).
fn ietf_separate(
    headers: &HeaderMap,
    now: SystemTime,
    malformed: &mut Vec<SignalError>,
    offer: &mut impl FnMut(RateLimit),
) {
    family(
        headers,
        now,
        malformed,
        offer,
        [
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
            "ratelimit-reset-after",
        ],
        [
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
            "RateLimit-Reset-After",
        ],
        RateLimitSource::IetfSeparate,
    );
}

/// `X-RateLimit-*` and `X-Rate-Limit-*`, plain or with `-Requests` /
/// `-Tokens` suffixes (as OpenAI-style APIs send them).
fn vendor(
    headers: &HeaderMap,
    now: SystemTime,
    malformed: &mut Vec<SignalError>,
    offer: &mut impl FnMut(RateLimit),
) {
    macro_rules! fam {
        ($($p:literal, $cap:literal, $sfx:literal);* $(;)?) => {$(
            family(
                headers, now, malformed, offer,
                [
                    concat!($p, "limit", $sfx), concat!($p, "remaining", $sfx),
                    concat!($p, "reset", $sfx), concat!($p, "reset-after", $sfx),
                ],
                [
                    concat!($cap, "Limit", $sfx), concat!($cap, "Remaining", $sfx),
                    concat!($cap, "Reset", $sfx), concat!($cap, "Reset-After", $sfx),
                ],
                RateLimitSource::Vendor,
            );
        )*};
    }
    fam! {
        "x-ratelimit-", "X-RateLimit-", "";
        "x-rate-limit-", "X-Rate-Limit-", "";
        "x-ratelimit-", "X-RateLimit-", "-requests";
        "x-ratelimit-", "X-RateLimit-", "-tokens";
    }
}

/// One `{limit, remaining, reset, reset-after}` family of separate headers.
/// `remaining` is required; without a reset the server did not say when
/// the quota comes back, pacing cannot be derived, and the family is skipped.
fn family(
    headers: &HeaderMap,
    now: SystemTime,
    malformed: &mut Vec<SignalError>,
    offer: &mut impl FnMut(RateLimit),
    names: [&'static str; 4],
    fields: [&'static str; 4],
    source: RateLimitSource,
) {
    let Some(remaining) = headers.get(names[1]) else {
        return;
    };
    let Some(remaining) = parse_count(remaining.as_bytes()) else {
        malformed.push(SignalError::new(fields[1], "not a non-negative integer"));
        return;
    };
    // A relative `Reset-After` (Discord) does not depend on clock skew:
    // prefer it, and fall back to `Reset` when it does not parse.
    let mut reset = None;
    for i in [3, 2] {
        let Some(value) = headers.get(names[i]) else {
            continue;
        };
        match parse_reset_field(fields[i], value.as_bytes(), now) {
            Ok(r) => {
                reset = Some(r);
                break;
            }
            Err(e) => malformed.push(e),
        }
    }
    let Some(reset) = reset else {
        return;
    };
    let mut rl = RateLimit::new(remaining, reset, source);
    if let Some(limit) = headers.get(names[0]) {
        // `RateLimit-Limit` of draft -03 may carry a policy after the number: `100, 100;w=60`.
        let first = limit
            .as_bytes()
            .split(|&c| c == b',' || c == b';')
            .next()
            .unwrap_or_default();
        match parse_count(first) {
            Some(l) => rl = rl.with_limit(l),
            None => malformed.push(SignalError::new(fields[0], "not a non-negative integer")),
        }
    }
    offer(rl);
}

/// A count of requests; decimals are floored (Reddit sends `598.0`).
fn parse_count(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    let (int, frac) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return None;
    }
    Some(int.bytes().fold(0u64, |acc, c| {
        acc.saturating_mul(10).saturating_add(u64::from(c - b'0'))
    }))
}

/// All lines of a field joined with `", "`, as a list field must be read.
fn joined(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    let mut out = first.as_bytes().to_vec();
    for line in lines {
        out.extend_from_slice(b", ");
        out.extend_from_slice(line.as_bytes());
    }
    Some(out)
}

fn non_negative(b: Option<&Bare<'_>>) -> Option<f64> {
    b.and_then(Bare::as_non_negative)
}

fn saturate(v: f64) -> u64 {
    // `as` saturates on overflow and NaN is impossible here.
    v as u64
}
