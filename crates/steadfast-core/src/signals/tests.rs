use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::*;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn parse(pairs: &[(&str, &str)]) -> ServerSignals {
    ServerSignals::from_headers(&headers(pairs), now())
}

#[test]
fn retry_after_all_date_forms() {
    // 1994-11-06 08:49:37 GMT, the RFC 9110 example, in its three forms.
    let at = UNIX_EPOCH + Duration::from_secs(784_111_777);
    let before = at - Duration::from_secs(90);
    for form in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        assert_eq!(
            parse_retry_after(form.as_bytes(), before),
            Ok(Duration::from_secs(90)),
            "{form}"
        );
        assert_eq!(
            parse_retry_after(form.as_bytes(), at + Duration::from_secs(5)),
            Ok(Duration::ZERO),
            "{form}"
        );
    }
}

#[test]
fn retry_after_hostile_values() {
    let n = now();
    assert_eq!(parse_retry_after(b"  3  ", n), Ok(Duration::from_secs(3)));
    assert_eq!(
        parse_retry_after(b"1.5", n),
        Ok(Duration::from_millis(1500))
    );
    assert_eq!(
        parse_retry_after(b"99999999999999999999999", n),
        Ok(MAX_SIGNAL_DELAY)
    );
    assert_eq!(
        parse_retry_after(b"Fri, 31 Dec 9999 23:59:59 GMT", n),
        Ok(MAX_SIGNAL_DELAY)
    );
    for bad in [
        &b""[..],
        b"-1",
        b"soon",
        b"1e9",
        b"\xff\xfe",
        b"3 s",
        b"0x10",
    ] {
        let err = parse_retry_after(bad, n).unwrap_err();
        assert_eq!(err.field(), "Retry-After");
    }
    let s = parse(&[("retry-after", "tomorrow")]);
    assert_eq!(s.retry_after(), None);
    assert_eq!(s.malformed().len(), 1);
    assert!(
        s.malformed()[0]
            .to_string()
            .contains("malformed Retry-After")
    );
}

#[test]
fn ietf_structured_fields_with_policies() {
    let s = parse(&[
        (
            "ratelimit-policy",
            r#""burst";q=100;w=60, "daily";q=1000;w=86400"#,
        ),
        ("ratelimit", r#""burst";r=50;t=30, "daily";r=10;t=3600"#),
    ]);
    let rl = s.rate_limit().unwrap();
    // burst paces at 30s/50 = 0.6s, daily at 3600s/10 = 360s: daily constrains.
    assert_eq!(rl.source(), RateLimitSource::Ietf);
    assert_eq!(
        (rl.limit(), rl.remaining(), rl.reset()),
        (Some(1000), 10, Duration::from_secs(3600))
    );
    assert_eq!(rl.window(), Some(Duration::from_secs(86_400)));
    assert_eq!(rl.pace(), Duration::from_secs(360));
    assert_eq!(s.retry_delay(), None);
}

#[test]
fn ietf_field_split_over_lines_and_token_names() {
    let s = parse(&[("ratelimit", "a;r=5;t=10"), ("ratelimit", "b;r=0;t=4")]);
    let rl = s.rate_limit().unwrap();
    assert_eq!((rl.remaining(), rl.reset()), (0, Duration::from_secs(4)));
    assert_eq!(s.retry_delay(), Some(Duration::from_secs(4)));
}

#[test]
fn ietf_draft_07_dictionary() {
    let s = parse(&[
        ("ratelimit", "limit=100, remaining=0, reset=7"),
        ("ratelimit-policy", "100;w=60"),
    ]);
    let rl = s.rate_limit().unwrap();
    assert_eq!(rl.source(), RateLimitSource::IetfDictionary);
    assert_eq!(
        (rl.limit(), rl.remaining(), rl.reset(), rl.window()),
        (
            Some(100),
            0,
            Duration::from_secs(7),
            Some(Duration::from_secs(60))
        )
    );
    assert_eq!(s.retry_delay(), Some(Duration::from_secs(7)));
}

#[test]
fn ietf_separate_fields() {
    let s = parse(&[
        ("ratelimit-limit", "100, 100;w=60"),
        ("ratelimit-remaining", "40"),
        ("ratelimit-reset", "20"),
    ]);
    let rl = s.rate_limit().unwrap();
    assert_eq!(rl.source(), RateLimitSource::IetfSeparate);
    assert_eq!(
        (rl.limit(), rl.remaining(), rl.reset()),
        (Some(100), 40, Duration::from_secs(20))
    );
}

#[test]
fn vendor_reset_forms() {
    let cases = [
        ("17", Duration::from_secs(17)),
        ("1700000042", Duration::from_secs(42)),
        ("1700000042500", Duration::from_millis(42_500)),
        ("1699999999", Duration::ZERO),
        ("0.5", Duration::from_millis(500)),
        ("6m0s", Duration::from_secs(360)),
        ("250ms", Duration::from_millis(250)),
    ];
    for (reset, want) in cases {
        let s = parse(&[
            ("x-ratelimit-limit", "60"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", reset),
        ]);
        let rl = s.rate_limit().unwrap();
        assert_eq!(rl.source(), RateLimitSource::Vendor);
        assert_eq!(
            (rl.limit(), rl.remaining(), rl.reset()),
            (Some(60), 0, want),
            "{reset}"
        );
    }
}

#[test]
fn epoch_resets_past_the_platforms_clock_are_as_far_as_a_signal_goes() {
    // Epoch milliseconds with 16 to 20 digits: 317 years to 585 million
    // years out, past Windows' `SystemTime` for the longest of them.
    for reset in [
        "9999999999999999",
        "18446744073709551615",
        "99999999999999999999",
    ] {
        let got = parse_reset(reset.as_bytes(), now());
        assert_eq!(got, Ok(MAX_SIGNAL_DELAY), "{reset}");
    }
}

#[test]
fn vendor_suffix_families_pick_the_tightest() {
    let s = parse(&[
        ("x-ratelimit-remaining-requests", "499"),
        ("x-ratelimit-reset-requests", "120ms"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]);
    assert_eq!(s.retry_delay(), Some(Duration::from_secs(360)));
}

#[test]
fn malformed_fields_are_reported_not_trusted() {
    let s = parse(&[
        ("ratelimit", r#""x";r=5;t=10,"#),
        ("x-ratelimit-remaining", "-3"),
        ("x-ratelimit-reset", "10"),
    ]);
    assert!(s.is_empty());
    let fields: Vec<_> = s.malformed().iter().map(SignalError::field).collect();
    assert_eq!(fields, ["RateLimit", "X-RateLimit-Remaining"]);
}

#[test]
fn a_malformed_field_says_what_is_wrong_with_it() {
    let reasons = |pairs: &[(&str, &str)]| -> Vec<String> {
        parse(pairs)
            .malformed()
            .iter()
            .map(|e| format!("{}: {}", e.field(), e.reason()))
            .collect()
    };
    // A negative remaining quota in the current form: named, not skipped.
    let r = reasons(&[("ratelimit", r#""a";r=-5;t=10"#)]);
    assert_eq!(r.len(), 1);
    assert!(r[0].contains("`r`"), "{r:?}");
    // An integer too long for a structured field: the list's own error,
    // not the -07 dictionary's "expected a key".
    let r = reasons(&[("ratelimit", r#""a";r=99999999999999999;t=1"#)]);
    assert_eq!(r.len(), 1);
    assert!(!r[0].contains("expected a key"), "{r:?}");
    // The -07 dictionary form still gets the dictionary's error.
    let r = reasons(&[("ratelimit", "limit=100, remaining=")]);
    assert_eq!(r.len(), 1, "{r:?}");
}

#[test]
fn a_malformed_reset_after_falls_back_to_the_reset() {
    let s = parse(&[
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset-after", "junk"),
        ("x-ratelimit-reset", "30"),
    ]);
    assert_eq!(s.retry_delay(), Some(Duration::from_secs(30)));
    let fields: Vec<_> = s.malformed().iter().map(SignalError::field).collect();
    assert_eq!(fields, ["X-RateLimit-Reset-After"]);
}

#[test]
fn discord_style_resets() {
    // Epoch seconds with a fraction, and the relative Reset-After preferred over it.
    let s = parse(&[
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1700000001.250"),
    ]);
    assert_eq!(s.retry_delay(), Some(Duration::from_millis(1250)));
    let s = parse(&[
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1700000090.000"),
        ("x-ratelimit-reset-after", "1.5"),
    ]);
    assert_eq!(s.retry_delay(), Some(Duration::from_millis(1500)));
}

#[test]
fn an_exhausted_quota_is_never_hidden_by_a_slower_one() {
    let s = parse(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1s"),
        ("x-ratelimit-remaining-tokens", "100"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]);
    assert_eq!(s.retry_delay(), Some(Duration::from_secs(1)));
    let s = parse(&[("ratelimit", r#""burst";r=0;t=10, "day";r=5;t=86400"#)]);
    assert_eq!(s.retry_delay(), Some(Duration::from_secs(10)));
    // Two exhausted quotas: both must be restored, so the later reset wins.
    let s = parse(&[("ratelimit", r#""a";r=0;t=10, "b";r=0;t=30"#)]);
    assert_eq!(s.retry_delay(), Some(Duration::from_secs(30)));
}

#[test]
fn ietf_reset_is_optional_when_the_policy_has_a_window() {
    let s = parse(&[
        ("ratelimit-policy", r#""default";q=100;w=60"#),
        ("ratelimit", r#""default";r=0;pk=:cHJvamVjdDEyMw==:"#),
    ]);
    let rl = s.rate_limit().unwrap();
    assert_eq!(
        (rl.remaining(), rl.reset(), rl.limit()),
        (0, Duration::from_secs(60), Some(100))
    );
    assert!(s.malformed().is_empty(), "{:?}", s.malformed());
    // Neither `t` nor a window: nothing to pace on, and it says why.
    let s = parse(&[("ratelimit", r#""default";r=0"#)]);
    assert!(s.rate_limit().is_none());
    assert_eq!(s.malformed()[0].field(), "RateLimit");
}

#[test]
fn later_duplicates_win() {
    let s = parse(&[(
        "ratelimit",
        "limit=100, remaining=50, reset=30, remaining=0",
    )]);
    assert_eq!(s.rate_limit().unwrap().remaining(), 0);
    let s = parse(&[("ratelimit", r#""x";r=50;t=30;R=0"#)]);
    assert_eq!(s.rate_limit().unwrap().remaining(), 0);
}

#[test]
fn decimal_counts_and_ancient_dates() {
    let s = parse(&[
        ("x-ratelimit-remaining", "598.0"),
        ("x-ratelimit-reset", "60"),
    ]);
    assert_eq!(s.rate_limit().unwrap().remaining(), 598);
    assert_eq!(
        parse_retry_after(b"Fri, 01 Jan 1960 00:00:00 GMT", now()),
        Ok(Duration::ZERO)
    );
    assert_eq!(
        parse_retry_after(b"Fri Jan  1 00:00:00 1960", now()),
        Ok(Duration::ZERO)
    );
    assert!(parse_retry_after(b"Thursday 1960", now()).is_err());
    // The whole date is checked, its weekday too, as for later dates.
    assert!(parse_retry_after(b"Thu, 01 Jan 1960 00:00:00 GMT", now()).is_err());
    assert!(parse_retry_after(b"Monkey 1900 aa:bb:cc", now()).is_err());
}

#[test]
fn pace_never_panics() {
    let rl = RateLimit::new(1, Duration::MAX, RateLimitSource::Vendor);
    assert_eq!(rl.pace(), Duration::MAX);
    assert_eq!(
        RateLimit::new(3, Duration::from_secs(3), RateLimitSource::Vendor).pace(),
        Duration::from_secs(1)
    );
}

#[test]
fn empty_headers_say_nothing() {
    let s = parse(&[]);
    assert!(s.is_empty());
    assert!(s.malformed().is_empty());
    assert_eq!(s.retry_delay(), None);
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        "[ -~]{0,48}".prop_map(String::into_bytes),
        r#"("[a-z]{1,6}"|[a-z]{1,6})(;[rtqw]=-?[0-9]{1,18}(\.[0-9]{1,4})?){0,3}(, ?)?"#
            .prop_map(String::into_bytes),
        r"[0-9]{0,25}(\.[0-9]{0,12})?([hmsµnu]{1,2}[0-9]{0,3})*".prop_map(String::into_bytes),
    ]
}

proptest! {

    /// Whatever the bytes, nothing panics and every delay stays clamped.
    #[test]
    fn never_panics_and_always_clamps(
        fields in prop::collection::vec((0usize..12, header_value()), 0..6),
        now_secs in 0u64..4_000_000_000,
    ) {
        const NAMES: [&str; 12] = [
            "retry-after", "ratelimit", "ratelimit-policy", "ratelimit-limit", "ratelimit-remaining",
            "ratelimit-reset", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
            "x-rate-limit-remaining", "x-rate-limit-reset", "x-ratelimit-reset-tokens",
        ];
        let mut h = HeaderMap::new();
        for (i, v) in &fields {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                h.append(NAMES[*i], v);
            }
        }
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let s = ServerSignals::from_headers(&h, now);
        if let Some(d) = s.retry_after() { prop_assert!(d <= MAX_SIGNAL_DELAY); }
        if let Some(rl) = s.rate_limit() {
            prop_assert!(rl.reset() <= MAX_SIGNAL_DELAY);
            prop_assert!(rl.pace() <= MAX_SIGNAL_DELAY);
        }
        for (_, v) in &fields {
            let _ = parse_retry_after(v, now);
            let _ = parse_reset(v, now);
        }
    }

    /// Valid delta-seconds round-trip exactly.
    #[test]
    fn delta_seconds_round_trip(secs in 0u64..MAX_SIGNAL_DELAY.as_secs()) {
        prop_assert_eq!(parse_retry_after(secs.to_string().as_bytes(), now()), Ok(Duration::from_secs(secs)));
    }

    /// Valid HTTP-dates round-trip to the whole-second delay until them.
    #[test]
    fn http_dates_round_trip(now_secs in 0u64..4_000_000_000, ahead in 0u64..MAX_SIGNAL_DELAY.as_secs()) {
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(ahead));
        prop_assert_eq!(parse_retry_after(date.as_bytes(), now), Ok(Duration::from_secs(ahead)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(ahead.min(now_secs)));
        prop_assert_eq!(parse_retry_after(past.as_bytes(), now), Ok(Duration::ZERO));
    }

    /// Structured RateLimit fields written by a conforming server read back
    /// as the same numbers.
    #[test]
    fn ietf_fields_round_trip(
        name in "[a-z][a-z0-9]{0,7}",
        r in 0u64..1_000_000_000,
        t in 0u64..MAX_SIGNAL_DELAY.as_secs(),
        q in 1u64..1_000_000_000,
        w in 1u64..MAX_SIGNAL_DELAY.as_secs(),
    ) {
        let h = headers(&[
            ("ratelimit-policy", &format!("\"{name}\";q={q};w={w}")),
            ("ratelimit", &format!("\"{name}\";r={r};t={t}")),
        ]);
        let s = ServerSignals::from_headers(&h, now());
        let rl = s.rate_limit().unwrap();
        prop_assert_eq!((rl.limit(), rl.remaining(), rl.reset(), rl.window()),
            (Some(q), r, Duration::from_secs(t), Some(Duration::from_secs(w))));
        prop_assert!(s.malformed().is_empty());
    }

    /// Vendor resets written as delay seconds, epoch seconds or Go durations
    /// read back as the same delay.
    #[test]
    fn vendor_resets_round_trip(delay in 0u64..MAX_SIGNAL_DELAY.as_secs(), form in 0u8..3) {
        let n = now();
        let text = match form {
            0 => delay.to_string(),
            1 => (1_700_000_000 + delay).to_string(),
            _ => format!("{}h{}m{}s", delay / 3600, delay / 60 % 60, delay % 60),
        };
        let want = if form == 0 && delay >= 1_000_000_000 { Duration::ZERO } else { Duration::from_secs(delay) };
        prop_assert_eq!(parse_reset(text.as_bytes(), n), Ok(want));
    }
}
