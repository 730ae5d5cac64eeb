//! `/bytes/{n}` and `/file`: large deterministic bodies, streamed, with
//! RFC 9110 range requests on `/file`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{ACCEPT_RANGES, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::body::{Barrier, CutKind, FaultBody, PatternBody};
use super::conn::ConnShared;
use super::query::{ParamError, Query, parse_u64};
use super::routes::{header_value, json, octets};

/// Largest body `/bytes/{n}` and `/file` serve: 16 GiB.
pub(crate) const MAX_LEN: u64 = 16 << 30;
/// Default chunk size of the streamed pattern: 64 KiB.
pub(crate) const DEFAULT_CHUNK: u64 = 64 << 10;
/// Largest chunk size: 16 MiB.
const MAX_CHUNK: u64 = 16 << 20;
/// Default `/file` size: 1 MiB.
pub(crate) const DEFAULT_FILE_SIZE: u64 = 1 << 20;
/// `Last-Modified` of `/file`: Wed, 01 Jan 2025 00:00:00 GMT.
const LAST_MODIFIED_SECS: u64 = 1_735_689_600;

/// `/bytes/{n}`: `n` pattern bytes in chunks of `chunk`.
pub(crate) fn bytes(n: &str, q: &Query<'_>) -> Result<Response<FaultBody>, ParamError> {
    let len = parse_u64(n)
        .filter(|&n| n <= MAX_LEN)
        .ok_or_else(|| ParamError::new("n", format!("`{n}` is not a length in 0..={MAX_LEN}")))?;
    let chunk = q.u64("chunk", DEFAULT_CHUNK, 1..=MAX_CHUNK)?;
    Ok(octets(PatternBody::new(0, len, chunk), len))
}

/// `/file`: a `size`-byte representation with validators and ranges.
pub(crate) fn file(
    parts: &Parts,
    q: &Query<'_>,
    conn: &Arc<ConnShared>,
) -> Result<Response<FaultBody>, ParamError> {
    let size = q.u64("size", DEFAULT_FILE_SIZE, 0..=MAX_LEN)?;
    let chunk = q.u64("chunk", DEFAULT_CHUNK, 1..=MAX_CHUNK)?;
    let fail_at = q.opt_u64("fail_at", 0..=u64::MAX)?;
    let etag = etag(size);
    let modified = UNIX_EPOCH + Duration::from_secs(LAST_MODIFIED_SECS);

    // Range applies to GET only (RFC 9110 §14.2), and If-Range without a
    // Range means nothing.
    let outcome = if parts.method == Method::GET
        && if_range_allows(parts.headers.get(IF_RANGE), &etag, modified)
    {
        range_outcome(&parts.headers, size)
    } else {
        RangeOutcome::Ignore
    };

    let mut res = match outcome {
        RangeOutcome::Unsatisfiable => {
            let mut res = json(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &serde_json::json!({ "error": format!("range not satisfiable; the file has {size} bytes") }),
            );
            res.headers_mut().insert(
                CONTENT_RANGE,
                header_value(format!("bytes */{size}"), "size")?,
            );
            res
        }
        RangeOutcome::Single { first, last } => {
            let len = last - first + 1;
            let body = cut(PatternBody::new(first, len, chunk), fail_at, parts, conn);
            let mut res = octets(body, len);
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            res.headers_mut().insert(
                CONTENT_RANGE,
                header_value(format!("bytes {first}-{last}/{size}"), "size")?,
            );
            res
        }
        RangeOutcome::Ignore | RangeOutcome::Multiple | RangeOutcome::Whole => {
            let body = cut(PatternBody::new(0, size, chunk), fail_at, parts, conn);
            octets(body, size)
        }
    };
    let h = res.headers_mut();
    h.insert(ETAG, header_value(etag, "size")?);
    h.insert(
        LAST_MODIFIED,
        header_value(httpdate::fmt_http_date(modified), "size")?,
    );
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(res)
}

/// The strong entity tag of a `/file` of `size` bytes. The content is a
/// function of the size alone, so the size is a sufficient validator.
fn etag(size: u64) -> String {
    format!("\"sf-{size:x}\"")
}

fn cut(
    body: PatternBody,
    fail_at: Option<u64>,
    parts: &Parts,
    conn: &Arc<ConnShared>,
) -> PatternBody {
    match fail_at {
        Some(k) => body.cut_after(k, CutKind::Abort, Barrier::for_request(parts.version, conn)),
        None => body,
    }
}

/// `If-Range` (RFC 9110 §13.1.5): the Range is honoured only if the
/// validator is the current strong ETag or exactly the `Last-Modified`
/// date. A weak tag never matches.
fn if_range_allows(value: Option<&HeaderValue>, etag: &str, modified: SystemTime) -> bool {
    let Some(value) = value else {
        return true;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let text = text.trim_matches([' ', '\t']);
    if text.starts_with('"') || text.starts_with("W/") {
        return text == etag;
    }
    httpdate::parse_http_date(text).is_ok_and(|date| date == modified)
}

/// The `Range` of a request against a representation of `size` bytes.
/// `Range` is a singleton field: more than one field line is invalid, and
/// an invalid `Range` is ignored (RFC 9110 §14.2), not merged.
fn range_outcome(headers: &HeaderMap, size: u64) -> RangeOutcome {
    let mut lines = headers.get_all(RANGE).iter();
    match (lines.next(), lines.next()) {
        (Some(value), None) => parse_range(value.as_bytes(), size),
        _ => RangeOutcome::Ignore,
    }
}

/// What a `Range` header asks of a representation of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeOutcome {
    /// Absent, another unit, or invalid syntax: serve the whole thing.
    Ignore,
    /// Several ranges: this server answers them with the whole thing, which
    /// RFC 9110 §14.2 allows (a server may ignore Range).
    Multiple,
    /// Satisfiable, but no `206` can express it: a non-zero suffix range of
    /// an empty representation (RFC 9110 §14.1.1 counts it satisfiable, and
    /// `Content-Range` has no form for zero bytes). Serve the whole, empty,
    /// representation with `200`.
    Whole,
    /// One range, none of which exists.
    Unsatisfiable,
    /// One satisfiable range, both ends inclusive.
    Single { first: u64, last: u64 },
}

/// Parses a `Range` value (RFC 9110 §14.1.2) against a representation of
/// `size` bytes.
pub(crate) fn parse_range(value: &[u8], size: u64) -> RangeOutcome {
    let Ok(text) = std::str::from_utf8(value) else {
        return RangeOutcome::Ignore;
    };
    let Some((unit, set)) = text.split_once('=') else {
        return RangeOutcome::Ignore;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return RangeOutcome::Ignore;
    }
    let mut first = None;
    let mut count = 0usize;
    // A list (`1#range-spec`) may carry empty elements and OWS.
    for spec in set
        .split(',')
        .map(|s| s.trim_matches([' ', '\t']))
        .filter(|s| !s.is_empty())
    {
        let Some(spec) = Spec::parse(spec) else {
            return RangeOutcome::Ignore;
        };
        first.get_or_insert(spec);
        count += 1;
    }
    match (count, first) {
        (1, Some(spec)) => spec.resolve(size),
        (0, _) | (_, None) => RangeOutcome::Ignore,
        _ => RangeOutcome::Multiple,
    }
}

#[derive(Debug, Clone, Copy)]
enum Spec {
    /// `first-[last]`
    From(u64, Option<u64>),
    /// `-suffix_length`
    Suffix(u64),
}

impl Spec {
    fn parse(spec: &str) -> Option<Self> {
        let (first, last) = spec.split_once('-')?;
        if first.is_empty() {
            return parse_u64(last).map(Self::Suffix);
        }
        let first = parse_u64(first)?;
        if last.is_empty() {
            return Some(Self::From(first, None));
        }
        let last = parse_u64(last)?;
        // first > last makes the whole field invalid, hence ignored.
        (first <= last).then_some(Self::From(first, Some(last)))
    }

    fn resolve(self, size: u64) -> RangeOutcome {
        match self {
            Self::From(first, _) if first >= size => RangeOutcome::Unsatisfiable,
            Self::From(first, last) => RangeOutcome::Single {
                first,
                last: last.map_or(size - 1, |l| l.min(size - 1)),
            },
            Self::Suffix(0) => RangeOutcome::Unsatisfiable,
            Self::Suffix(_) if size == 0 => RangeOutcome::Whole,
            Self::Suffix(n) => RangeOutcome::Single {
                first: size - n.min(size),
                last: size - 1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use RangeOutcome::{Ignore, Multiple, Single, Unsatisfiable, Whole};

    #[test]
    fn the_three_forms() {
        assert_eq!(
            parse_range(b"bytes=0-99", 1000),
            Single { first: 0, last: 99 }
        );
        assert_eq!(
            parse_range(b"bytes=900-", 1000),
            Single {
                first: 900,
                last: 999
            }
        );
        assert_eq!(
            parse_range(b"bytes=-100", 1000),
            Single {
                first: 900,
                last: 999
            }
        );
        assert_eq!(
            parse_range(b"bytes=990-2000", 1000),
            Single {
                first: 990,
                last: 999
            }
        );
        assert_eq!(
            parse_range(b"bytes=-5000", 1000),
            Single {
                first: 0,
                last: 999
            }
        );
        assert_eq!(
            parse_range(b"Bytes= 5-5 ,", 1000),
            Single { first: 5, last: 5 }
        );
    }

    #[test]
    fn unsatisfiable_multiple_and_invalid() {
        assert_eq!(parse_range(b"bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 0), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-", 0), Unsatisfiable);
        // RFC 9110 §14.1.1: a non-zero suffix is satisfiable even for an
        // empty representation (this asserted 416 before).
        assert_eq!(parse_range(b"bytes=-1", 0), Whole);
        assert_eq!(parse_range(b"bytes=0-1,5-6", 1000), Multiple);
        for bad in [
            &b"bytes=5-4"[..],
            b"bytes=-",
            b"bytes=a-b",
            b"bytes=1-2-3",
            b"items=0-1",
            b"bytes 0-1",
            b"bytes=",
            b"bytes=0-1,x",
            b"bytes=99999999999999999999-",
            b"\xff",
        ] {
            assert_eq!(
                parse_range(bad, 1000),
                Ignore,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_second_range_line_makes_the_field_invalid() {
        let mut headers = HeaderMap::new();
        assert_eq!(range_outcome(&headers, 100), Ignore);
        headers.append(RANGE, HeaderValue::from_static("bytes=0-9"));
        assert_eq!(range_outcome(&headers, 100), Single { first: 0, last: 9 });
        headers.append(RANGE, HeaderValue::from_static("bytes=20-29"));
        assert_eq!(range_outcome(&headers, 100), Ignore);
    }

    #[test]
    fn if_range_compares_strongly() {
        let modified = UNIX_EPOCH + Duration::from_secs(LAST_MODIFIED_SECS);
        let tag = etag(10);
        let hv = |s: &'static str| HeaderValue::from_static(s);
        assert!(if_range_allows(None, &tag, modified));
        assert!(if_range_allows(Some(&hv("\"sf-a\"")), &tag, modified));
        assert!(!if_range_allows(Some(&hv("W/\"sf-a\"")), &tag, modified));
        assert!(!if_range_allows(Some(&hv("\"sf-b\"")), &tag, modified));
        assert!(if_range_allows(
            Some(&hv("Wed, 01 Jan 2025 00:00:00 GMT")),
            &tag,
            modified
        ));
        assert!(!if_range_allows(
            Some(&hv("Thu, 02 Jan 2025 00:00:00 GMT")),
            &tag,
            modified
        ));
        assert!(!if_range_allows(Some(&hv("yesterday")), &tag, modified));
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(value in proptest::collection::vec(any::<u8>(), 0..40), size: u64) {
            if let Single { first, last } = parse_range(&value, size) {
                prop_assert!(first <= last && last < size);
            }
        }

        #[test]
        fn well_formed_single_ranges(first in 0u64..2000, len in 0u64..2000, size in 0u64..3000) {
            let last = first + len;
            let got = parse_range(format!("bytes={first}-{last}").as_bytes(), size);
            if first >= size {
                prop_assert_eq!(got, Unsatisfiable);
            } else {
                prop_assert_eq!(got, Single { first, last: last.min(size - 1) });
            }
            let suffix = parse_range(format!("bytes=-{len}").as_bytes(), size);
            if len == 0 {
                prop_assert_eq!(suffix, Unsatisfiable);
            } else if size == 0 {
                prop_assert_eq!(suffix, Whole);
            } else {
                prop_assert_eq!(suffix, Single { first: size - len.min(size), last: size - 1 });
            }
        }
    }
}

/// `Range` and `If-Range` of `/file` against a reference model written from
/// RFC 9110 §13.1.5 and §14.
#[cfg(test)]
mod range_model {
    use proptest::prelude::*;

    use super::*;
    use RangeOutcome::{Ignore, Multiple, Single, Unsatisfiable, Whole};

    /// One element of a generated `range-set`.
    #[derive(Debug, Clone)]
    enum Elem {
        /// `first-last`, possibly with `first > last` (invalid).
        FromTo(u64, u64),
        /// `first-`
        From(u64),
        /// `-suffix`
        Suffix(u64),
        /// Not a `range-spec` at all.
        Junk(&'static str),
        /// An empty list element (`a,,b`), which a `#rule` list allows.
        Empty,
    }

    fn elem() -> impl Strategy<Value = Elem> {
        let n = || prop_oneof![0u64..40, any::<u64>()];
        prop_oneof![
            4 => (n(), n()).prop_map(|(a, b)| Elem::FromTo(a, b)),
            2 => n().prop_map(Elem::From),
            2 => n().prop_map(Elem::Suffix),
            1 => prop::sample::select(vec!["-", "x", "1-2-3", "+1-2", "1 -2", "0x1-", "--1"])
                .prop_map(Elem::Junk),
            1 => Just(Elem::Empty),
        ]
    }

    fn render(unit: &str, elems: &[Elem], ows: &[&str]) -> String {
        let parts: Vec<String> = elems
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let text = match e {
                    Elem::FromTo(a, b) => format!("{a}-{b}"),
                    Elem::From(a) => format!("{a}-"),
                    Elem::Suffix(n) => format!("-{n}"),
                    Elem::Junk(s) => (*s).to_owned(),
                    Elem::Empty => String::new(),
                };
                format!(
                    "{}{text}{}",
                    ows[2 * i % ows.len()],
                    ows[(2 * i + 1) % ows.len()]
                )
            })
            .collect();
        format!("{unit}={}", parts.join(","))
    }

    /// The satisfiable byte interval of one valid spec, `Err(true)` when
    /// the spec is satisfiable but empty (a suffix of an empty
    /// representation), `Err(false)` when unsatisfiable; `None` if invalid.
    fn interval(e: &Elem, size: u64) -> Option<Result<(u64, u64), bool>> {
        Some(match *e {
            Elem::FromTo(a, b) if a > b => return None,
            Elem::FromTo(a, _) | Elem::From(a) if a >= size => Err(false),
            Elem::FromTo(a, b) => Ok((a, b.min(size - 1))),
            Elem::From(a) => Ok((a, size - 1)),
            Elem::Suffix(0) => Err(false),
            Elem::Suffix(_) if size == 0 => Err(true),
            Elem::Suffix(n) => Ok((size.saturating_sub(n), size - 1)),
            Elem::Junk(_) | Elem::Empty => return None,
        })
    }

    fn model(unit: &str, elems: &[Elem], size: u64) -> RangeOutcome {
        if !unit.eq_ignore_ascii_case("bytes") {
            return Ignore;
        }
        let specs: Vec<&Elem> = elems.iter().filter(|e| !matches!(e, Elem::Empty)).collect();
        let Some(resolved) = specs
            .iter()
            .map(|e| interval(e, size))
            .collect::<Option<Vec<_>>>()
        else {
            return Ignore;
        };
        match resolved[..] {
            [] => Ignore,
            [Ok((first, last))] => Single { first, last },
            [Err(true)] => Whole,
            [Err(false)] => Unsatisfiable,
            _ => Multiple,
        }
    }

    fn unit() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[bB][yY][tT][eE][sS]",
            1 => prop::sample::select(vec!["items", "byte", "bytes ", ""]).prop_map(str::to_owned),
        ]
    }

    fn file_response(
        method: &Method,
        headers: &[(HeaderName, String)],
        size: u64,
    ) -> Response<FaultBody> {
        let mut req = http::Request::builder().method(method.clone()).uri("/file");
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let (parts, ()) = req.body(()).unwrap().into_parts();
        let query = format!("size={size}");
        let q = Query::parse(Some(&query));
        file(&parts, &q, &Arc::new(ConnShared::new(0))).unwrap()
    }

    fn header<'r>(res: &'r Response<FaultBody>, name: &HeaderName) -> Option<&'r str> {
        res.headers().get(name).map(|v| v.to_str().unwrap())
    }

    use http::HeaderName;
    use http::header::CONTENT_LENGTH;

    proptest! {
        #[test]
        fn parse_range_agrees_with_the_model(
            unit in unit(),
            elems in prop::collection::vec(elem(), 0..4),
            ows in prop::collection::vec(prop::sample::select(vec!["", "", " ", "\t", " \t"]), 1..8),
            size in prop_oneof![0u64..50, any::<u64>()],
        ) {
            let value = render(&unit, &elems, &ows);
            prop_assert_eq!(parse_range(value.as_bytes(), size), model(&unit, &elems, size), "{:?}", value);
        }

        /// The whole `/file` response: status, `Content-Range`,
        /// `Content-Length`, with `If-Range` and the method taken into account.
        #[test]
        fn file_responses_follow_the_model(
            elems in prop::collection::vec(elem(), 1..3),
            size in 0u64..64,
            validator in prop::option::of(prop_oneof![
                Just(0u8), // the current ETag
                Just(1),   // the ETag, weak
                Just(2),   // another size's ETag
                Just(3),   // the Last-Modified date
                Just(4),   // a day later
            ]),
            head: bool,
        ) {
            let range = render("bytes", &elems, &[""]);
            let mut headers = vec![(RANGE, range.clone())];
            let tag = etag(size);
            let honoured = match validator {
                None => true,
                Some(kind) => {
                    let v = match kind {
                        0 => tag.clone(),
                        1 => format!("W/{tag}"),
                        2 => etag(size + 1),
                        3 => "Wed, 01 Jan 2025 00:00:00 GMT".to_owned(),
                        _ => "Thu, 02 Jan 2025 00:00:00 GMT".to_owned(),
                    };
                    headers.push((IF_RANGE, v));
                    kind == 0 || kind == 3
                }
            };
            let method = if head { Method::HEAD } else { Method::GET };
            let res = file_response(&method, &headers, size);
            let want = if honoured && !head { model("bytes", &elems, size) } else { Ignore };
            let context = format!("{method} Range: {range:?}, If-Range {validator:?}, size {size}");
            prop_assert_eq!(header(&res, &ETAG), Some(tag.as_str()));
            prop_assert_eq!(header(&res, &ACCEPT_RANGES), Some("bytes"));
            match want {
                Single { first, last } => {
                    prop_assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{}", context);
                    let cr = format!("bytes {first}-{last}/{size}");
                    prop_assert_eq!(header(&res, &CONTENT_RANGE), Some(cr.as_str()), "{}", context);
                    let len = (last - first + 1).to_string();
                    prop_assert_eq!(header(&res, &CONTENT_LENGTH), Some(len.as_str()), "{}", context);
                }
                Unsatisfiable => {
                    prop_assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{}", context);
                    let cr = format!("bytes */{size}");
                    prop_assert_eq!(header(&res, &CONTENT_RANGE), Some(cr.as_str()), "{}", context);
                }
                Ignore | Multiple | Whole => {
                    prop_assert_eq!(res.status(), StatusCode::OK, "{}", context);
                    prop_assert_eq!(header(&res, &CONTENT_RANGE), None, "{}", context);
                    let len = size.to_string();
                    prop_assert_eq!(header(&res, &CONTENT_LENGTH), Some(len.as_str()), "{}", context);
                }
            }
        }

        #[test]
        fn if_range_never_panics(value in prop::collection::vec(any::<u8>(), 0..40)) {
            let modified = UNIX_EPOCH + Duration::from_secs(LAST_MODIFIED_SECS);
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                let allowed = if_range_allows(Some(&v), &etag(7), modified);
                // Only the exact strong tag, or a date, can allow a range.
                let text = String::from_utf8_lossy(&value);
                let text = text.trim_matches([' ', '\t']);
                prop_assert!(!allowed || text == "\"sf-7\"" || httpdate::parse_http_date(text).is_ok());
            }
        }
    }
}
