//! `/items`: one collection of `total` items behind five pagination
//! protocols. The contract is shared with steadfast-paginate's tests.
//!
//! Pages are written straight into one string sized by the page, never by
//! `total`, so a ten-million-item collection costs nothing to serve.

use std::fmt::Write as _;
use std::ops::Range;
use std::time::Duration;

use http::header::LINK;
use http::{HeaderValue, Response, StatusCode};

use super::body::FaultBody;
use super::query::{ParamError, Query};
use super::routes::{header_value, json_text};

/// Largest `total` accepted.
pub(crate) const MAX_TOTAL: u64 = 10_000_000;
/// Default `total`.
pub(crate) const DEFAULT_TOTAL: u64 = 100;
/// Default `per_page` (and default `limit`).
pub(crate) const DEFAULT_PER_PAGE: u64 = 10;
/// Largest `per_page` / `limit`.
pub(crate) const MAX_PER_PAGE: u64 = 1000;
/// Largest `latency_ms`.
const MAX_LATENCY_MS: u64 = 60_000;
/// The origin of `cross_origin=1` next links; `.invalid` never resolves.
const EVIL_ORIGIN: &str = "http://evil.invalid";
/// Query parameters a Link URL writes itself; every other one is kept.
const LINK_OWN_PARAMS: [&str; 4] = ["style", "page", "per_page", "total"];

/// The collection and the page size every style shares.
#[derive(Debug, Clone, Copy)]
struct Collection {
    total: u64,
    per_page: u64,
    looped: bool,
}

impl Collection {
    /// Ids `start..start + len`, clipped to the collection.
    fn ids(&self, start: u64, len: u64) -> Range<u64> {
        start.min(self.total)..start.saturating_add(len).min(self.total)
    }
}

pub(crate) async fn items(q: &Query<'_>) -> Result<Response<FaultBody>, ParamError> {
    let c = Collection {
        total: q.u64("total", DEFAULT_TOTAL, 0..=MAX_TOTAL)?,
        per_page: q.u64("per_page", DEFAULT_PER_PAGE, 1..=MAX_PER_PAGE)?,
        looped: q.flag("loop")?,
    };
    let latency = q.u64("latency_ms", 0, 0..=MAX_LATENCY_MS)?;
    // Validate everything before waiting, so a bad request fails fast.
    let res = match q.get("style").unwrap_or("link") {
        "link" => link(q, c)?,
        "cursor" => cursor(q, c)?,
        "page" => page(q, c)?,
        "offset" => offset(q, c)?,
        "has_more" => has_more(q, c)?,
        other => {
            return Err(ParamError::new(
                "style",
                format!("`{other}` is not a style; use link, cursor, page, offset or has_more"),
            ));
        }
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    Ok(res)
}

/// `style=link`: a JSON array, RFC 8288 `Link` headers, `X-Total-Count`.
fn link(q: &Query<'_>, c: Collection) -> Result<Response<FaultBody>, ParamError> {
    let page = q.u64("page", 1, 1..=u64::MAX)?;
    let cross_origin = q.flag("cross_origin")?;
    let last = c.total.div_ceil(c.per_page).max(1);
    let mut body = String::new();
    write_items(
        &mut body,
        c.ids((page - 1).saturating_mul(c.per_page), c.per_page),
    );

    // Lazily: `page + 1` overflows on the last possible page number.
    let next = if c.looped && page == 2 {
        Some(1)
    } else {
        (page < last).then(|| page + 1)
    };
    let prev = (page > 1).then(|| page - 1);
    let url = |p: u64| link_url(q, c, p);
    let mut nav = Vec::with_capacity(2);
    if let Some(n) = next {
        let origin = if cross_origin { EVIL_ORIGIN } else { "" };
        nav.push(format!("<{origin}{}>; rel=\"next\"", url(n)));
    }
    if let Some(p) = prev {
        nav.push(format!("<{}>; rel=\"prev\"", url(p)));
    }

    let mut res = json_text(StatusCode::OK, body);
    let h = res.headers_mut();
    if !nav.is_empty() {
        h.append(LINK, header_value(nav.join(", "), "page")?);
    }
    let bounds = format!("<{}>; rel=\"first\", <{}>; rel=\"last\"", url(1), url(last));
    h.append(LINK, header_value(bounds, "page")?);
    h.insert("x-total-count", HeaderValue::from(c.total));
    Ok(res)
}

/// A relative reference to page `page` that keeps the request's other
/// query parameters, raw, in their order.
fn link_url(q: &Query<'_>, c: Collection, page: u64) -> String {
    let mut url = format!(
        "/items?style=link&page={page}&per_page={}&total={}",
        c.per_page, c.total
    );
    for pair in q.pairs() {
        if !LINK_OWN_PARAMS.contains(&pair.name.as_ref()) {
            url.push('&');
            url.push_str(pair.raw);
        }
    }
    url
}

/// `style=cursor`: `{"data": [..], "next_cursor": ".." | null}` and
/// `X-Next-Cursor`.
fn cursor(q: &Query<'_>, c: Collection) -> Result<Response<FaultBody>, ParamError> {
    let empty_pages = q.flag("empty_pages")?;
    let (kind, offset) = match q.get("cursor") {
        None => (CursorKind::Page, 0),
        Some(text) => parse_cursor(text).ok_or_else(|| {
            ParamError::new(
                "cursor",
                format!("`{text}` is not a cursor this server issued"),
            )
        })?,
    };
    let mut body = String::from("{\"data\":");
    let next = match kind {
        // The empty page between two real ones points at the next real one.
        CursorKind::Gap => {
            write_items(&mut body, 0..0);
            (offset < c.total).then_some((CursorKind::Page, offset))
        }
        CursorKind::Page => {
            let ids = c.ids(offset, c.per_page);
            let end = ids.end;
            write_items(&mut body, ids);
            if c.looped && offset == c.per_page && offset < c.total {
                // The second page hands out its own cursor again: a cycle.
                Some((CursorKind::Page, offset))
            } else if end < c.total {
                let kind = if empty_pages {
                    CursorKind::Gap
                } else {
                    CursorKind::Page
                };
                Some((kind, end))
            } else {
                None
            }
        }
    };
    let next = next.map(|(kind, offset)| cursor_token(kind, offset));
    body.push_str(",\"next_cursor\":");
    match &next {
        Some(token) => {
            let _ = write!(body, "\"{token}\"");
        }
        None => body.push_str("null"),
    }
    body.push('}');
    let mut res = json_text(StatusCode::OK, body);
    if let Some(token) = next {
        res.headers_mut()
            .insert("x-next-cursor", header_value(token, "cursor")?);
    }
    Ok(res)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CursorKind {
    /// A real page starting at the offset.
    Page,
    /// The data-empty page of `empty_pages=1` before the real page at the offset.
    Gap,
}

/// A cursor: a kind letter and the hex offset. Opaque to clients, who must
/// only echo it.
fn cursor_token(kind: CursorKind, offset: u64) -> String {
    let letter = match kind {
        CursorKind::Page => 'c',
        CursorKind::Gap => 'e',
    };
    format!("{letter}{offset:x}")
}

fn parse_cursor(text: &str) -> Option<(CursorKind, u64)> {
    let kind = match text.as_bytes().first()? {
        b'c' => CursorKind::Page,
        b'e' => CursorKind::Gap,
        _ => return None,
    };
    let hex = &text[1..];
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(|o| (kind, o))
}

/// `style=page`: `{"data", "page", "per_page", "total", "total_pages"}`.
fn page(q: &Query<'_>, c: Collection) -> Result<Response<FaultBody>, ParamError> {
    let page = q.u64("page", 1, 1..=u64::MAX)?;
    let mut body = String::from("{\"data\":");
    write_items(
        &mut body,
        c.ids((page - 1).saturating_mul(c.per_page), c.per_page),
    );
    let _ = write!(
        body,
        ",\"page\":{page},\"per_page\":{},\"total\":{},\"total_pages\":{}}}",
        c.per_page,
        c.total,
        c.total.div_ceil(c.per_page)
    );
    Ok(json_text(StatusCode::OK, body))
}

/// `style=offset`: `{"data", "offset", "limit", "total"}`.
fn offset(q: &Query<'_>, c: Collection) -> Result<Response<FaultBody>, ParamError> {
    let offset = q.u64("offset", 0, 0..=u64::MAX)?;
    let limit = q.u64("limit", c.per_page, 1..=MAX_PER_PAGE)?;
    let mut body = String::from("{\"data\":");
    write_items(&mut body, c.ids(offset, limit));
    let _ = write!(
        body,
        ",\"offset\":{offset},\"limit\":{limit},\"total\":{}}}",
        c.total
    );
    Ok(json_text(StatusCode::OK, body))
}

/// `style=has_more`: `{"data", "has_more"}`, keyed by `starting_after`.
fn has_more(q: &Query<'_>, c: Collection) -> Result<Response<FaultBody>, ParamError> {
    let after = q.opt_u64("starting_after", 0..=u64::MAX)?;
    let limit = q.u64("limit", c.per_page, 1..=MAX_PER_PAGE)?;
    let ids = c.ids(after.map_or(0, |id| id.saturating_add(1)), limit);
    let more = ids.end < c.total;
    let mut body = String::from("{\"data\":");
    write_items(&mut body, ids);
    let _ = write!(body, ",\"has_more\":{more}}}");
    Ok(json_text(StatusCode::OK, body))
}

/// `[{"id":i,"name":"item-i"},..]`
fn write_items(out: &mut String, ids: Range<u64>) {
    // Each item is about 30 bytes; reserve once. Callers clip `ids` to a
    // page (at most `MAX_PER_PAGE` items), so this cannot overflow.
    let len = usize::try_from(ids.end.saturating_sub(ids.start)).unwrap_or(usize::MAX);
    out.reserve(len.saturating_mul(32).saturating_add(2));
    out.push('[');
    for id in ids.clone() {
        if id != ids.start {
            out.push(',');
        }
        let _ = write!(out, "{{\"id\":{id},\"name\":\"item-{id}\"}}");
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn items_are_valid_json() {
        let mut s = String::new();
        write_items(&mut s, 3..5);
        assert_eq!(s, r#"[{"id":3,"name":"item-3"},{"id":4,"name":"item-4"}]"#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v[1]["name"], "item-4");
    }

    #[test]
    fn cursors_reject_what_was_not_issued() {
        for bad in [
            "",
            "c",
            "x10",
            "10",
            "c+1",
            "c-1",
            "c12345678901234567",
            "cg",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn cursors_round_trip(offset: u64, gap: bool) {
            let kind = if gap { CursorKind::Gap } else { CursorKind::Page };
            prop_assert_eq!(parse_cursor(&cursor_token(kind, offset)), Some((kind, offset)));
        }

        #[test]
        fn cursor_parsing_never_panics(s in "\\PC{0,24}") {
            let _ = parse_cursor(&s);
        }
    }
}
