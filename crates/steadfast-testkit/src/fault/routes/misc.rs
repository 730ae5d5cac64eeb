//! Routes that answer with a status and a small JSON body: `/status`,
//! `/flaky`, `/limited`, `/slow`, `/headers`, `/echo`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{CONTENT_LENGTH, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::json;
use crate::fault::body::FaultBody;
use crate::fault::limited::ceil_duration;
use crate::fault::query::{ParamError, Query, parse_u64};
use crate::fault::server::Shared;

/// Longest `retry_after` accepted: one day, as clients clamp to that anyway.
const MAX_RETRY_AFTER: u64 = 24 * 60 * 60;
/// Longest `/slow` delay accepted: ten minutes.
const MAX_SLOW_MS: u64 = 10 * 60 * 1000;
/// Default `/slow` delay.
const DEFAULT_SLOW_MS: u64 = 1000;
/// Largest request body `/echo` reads.
const MAX_ECHO_BODY: usize = 16 * 1024 * 1024;

/// `/status/{code}`: that status, with an optional `Retry-After`.
pub(super) fn status(code: &str, q: &Query<'_>) -> Result<Response<FaultBody>, ParamError> {
    let status = parse_status("code", code)?;
    let mut res = status_response(status, &json!({ "status": status.as_u16() }));
    retry_after(q, res.headers_mut())?;
    Ok(res)
}

/// `/flaky`: per key, `fail` failures with `status`, then 200.
pub(super) fn flaky(shared: &Shared, q: &Query<'_>) -> Result<Response<FaultBody>, ParamError> {
    let fail = q.u64("fail", 1, 0..=u64::MAX)?;
    let status = match q.get("status") {
        Some(code) => parse_status("status", code)?,
        None => StatusCode::SERVICE_UNAVAILABLE,
    };
    let key = q.get("key").unwrap_or("default");
    let mut headers = HeaderMap::new();
    retry_after(q, &mut headers)?;
    let attempt = shared.flaky_attempt(key);
    if attempt > fail {
        return Ok(json(StatusCode::OK, &json!({ "attempt": attempt })));
    }
    let mut res = status_response(
        status,
        &json!({ "status": status.as_u16(), "attempt": attempt }),
    );
    res.headers_mut().extend(headers);
    Ok(res)
}

/// `/limited`: the server-side GCRA of the key.
pub(super) fn limited(shared: &Shared, q: &Query<'_>) -> Response<FaultBody> {
    let key = q.get("key").unwrap_or("default");
    let gcra = *shared.limiter.gcra();
    let d = shared.limiter.check(key);
    // Seconds until more quota is available (RateLimit `t`, draft -10 on):
    // on a 429 exactly the Retry-After, never the time to refill the burst.
    let reset = ceil_duration(d.next_quota).max(1);
    let mut res = if d.allowed {
        json(
            StatusCode::OK,
            &json!({ "key": key, "remaining": d.remaining }),
        )
    } else {
        let retry = ceil_duration(d.retry_after).max(1);
        let mut res = json(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({ "error": "rate limited", "key": key, "retry_after": retry }),
        );
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry));
        res
    };
    let h = res.headers_mut();
    let policy = format!("\"default\";q={};w={}", gcra.burst(), gcra.window_secs());
    let state = format!("\"default\";r={};t={reset}", d.remaining);
    h.insert("ratelimit-policy", ascii(policy));
    h.insert("ratelimit", ascii(state));
    h.insert("x-ratelimit-limit", HeaderValue::from(gcra.burst()));
    h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    res
}

/// `/slow`: the response head waits `ms` milliseconds.
pub(super) async fn slow(q: &Query<'_>) -> Result<Response<FaultBody>, ParamError> {
    let ms = q.u64("ms", DEFAULT_SLOW_MS, 0..=MAX_SLOW_MS)?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(json(StatusCode::OK, &json!({ "slept_ms": ms })))
}

/// `/headers`: 200 (or `status`) with every other query pair as a
/// response header. Values are percent-decoded to raw bytes; the JSON body
/// echoes them as text (invalid UTF-8 replaced).
pub(super) fn headers(q: &Query<'_>) -> Result<Response<FaultBody>, ParamError> {
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    let mut echoed = serde_json::Map::new();
    for pair in q.pairs() {
        if pair.name == "status" {
            status = parse_status("status", &pair.value)?;
            continue;
        }
        let name = HeaderName::try_from(pair.name.as_ref())
            .map_err(|_| ParamError::new(&pair.name, "is not a valid header name"))?;
        if name == CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            return Err(ParamError::new(
                &pair.name,
                "framing headers would corrupt the response; use /truncated or /drip",
            ));
        }
        // The escaped bytes themselves: `%FF` sends the byte 0xFF, so clients
        // can be tested against obs-text and invalid UTF-8 in header values.
        let value = HeaderValue::from_bytes(&pair.value_bytes())
            .map_err(|_| ParamError::new(&pair.name, "does not make a valid header value"))?;
        echoed.insert(pair.name.clone().into_owned(), pair.value.clone().into());
        headers.append(name, value);
    }
    let mut res = status_response(
        status,
        &json!({ "status": status.as_u16(), "headers": echoed }),
    );
    res.headers_mut().extend(headers);
    Ok(res)
}

/// `/echo`: what the server received, as JSON.
pub(super) async fn echo(req: Request<Incoming>) -> Response<FaultBody> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_ECHO_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let status = if e.is::<http_body_util::LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return json(
                status,
                &json!({ "error": format!("could not read the request body: {e}") }),
            );
        }
    };
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let joined = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_owned(), joined.into());
    }
    // `headers` is for reading (lines joined, bytes decoded lossily); these
    // are the lines one by one, each value as its bytes, so obs-text and
    // invalid UTF-8 survive. Lines of one name keep their order.
    let header_lines: Vec<_> = parts
        .headers
        .iter()
        .map(|(name, value)| json!([name.as_str(), value.as_bytes()]))
        .collect();
    json(
        StatusCode::OK,
        &json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "header_lines": header_lines,
            "body": String::from_utf8_lossy(&body),
            "body_len": body.len(),
        }),
    )
}

/// A final status code, 200..=599.
fn parse_status(param: &str, text: &str) -> Result<StatusCode, ParamError> {
    let code = parse_u64(text)
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(|| {
            ParamError::new(
                param,
                format!("`{text}` is not a status code; use 200..=599"),
            )
        })?;
    if code < 200 {
        return Err(ParamError::new(
            param,
            format!("{code} is an interim (1xx) status and cannot end an exchange; use 200..=599"),
        ));
    }
    StatusCode::from_u16(code as u16)
        .map_err(|_| ParamError::new(param, format!("{code} is not a status code")))
}

/// A JSON body, or none for the statuses that cannot carry one.
fn status_response(status: StatusCode, body: &serde_json::Value) -> Response<FaultBody> {
    if matches!(
        status,
        StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT | StatusCode::NOT_MODIFIED
    ) {
        let mut res = Response::new(FaultBody::empty());
        *res.status_mut() = status;
        res
    } else {
        json(status, body)
    }
}

/// `retry_after=S` adds `Retry-After: S`; with `retry_after_date=1` it is
/// an IMF-fixdate at least `S` seconds ahead (the date has whole seconds,
/// so the current second is rounded up).
fn retry_after(q: &Query<'_>, headers: &mut HeaderMap) -> Result<(), ParamError> {
    let as_date = q.flag("retry_after_date")?;
    let Some(secs) = q.opt_u64("retry_after", 0..=MAX_RETRY_AFTER)? else {
        return Ok(());
    };
    let value = if as_date {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let at = UNIX_EPOCH + Duration::from_secs(ceil_duration(now).saturating_add(secs));
        ascii(httpdate::fmt_http_date(at))
    } else {
        HeaderValue::from(secs)
    };
    headers.insert(RETRY_AFTER, value);
    Ok(())
}

/// A header value the server formatted from digits and ASCII punctuation.
fn ascii(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("server-formatted header values are visible ASCII")
}
