//! Routes whose bodies misbehave: `/drip`, `/reset`, `/truncated`.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{Method, Response, Version};

use super::octets;
use crate::fault::body::{Barrier, CutKind, FaultBody, PatternBody};
use crate::fault::conn::ConnShared;
use crate::fault::query::{ParamError, Query};

/// `/reset` declares this many bytes.
const RESET_DECLARED: u64 = 1000;
/// `/reset` sends this many before the reset, unless `after` says.
const RESET_SENT: u64 = 100;
/// `/truncated` declares this many bytes.
const TRUNCATED_DECLARED: u64 = 100;
/// `/truncated` sends this many before closing.
const TRUNCATED_SENT: u64 = 50;

/// `/drip`: the head at once, then `chunks` chunks of `chunk_size` bytes,
/// each after `interval_ms`.
pub(super) fn drip(q: &Query<'_>) -> Result<Response<FaultBody>, ParamError> {
    let chunks = q.u64("chunks", 10, 0..=100_000)?;
    let interval = q.u64("interval_ms", 100, 0..=60_000)?;
    let size = q.u64("chunk_size", 16, 1..=1024 * 1024)?;
    // At most 100 000 MiB by the ranges above; saturating all the same.
    let len = chunks.saturating_mul(size);
    let body = PatternBody::new(0, len, size).interval(Duration::from_millis(interval));
    Ok(octets(body, len))
}

/// `/reset`: `Content-Length: 1000`, `after` bytes (default 100), then a
/// TCP reset (HTTP/1) or a stream reset (HTTP/2).
pub(super) fn reset(
    parts: &Parts,
    q: &Query<'_>,
    conn: &Arc<ConnShared>,
) -> Result<Response<FaultBody>, ParamError> {
    let after = q.u64("after", RESET_SENT, 0..=RESET_DECLARED - 1)?;
    // HTTP/2 resets just the stream; a HEAD response has no body to cut.
    if parts.version != Version::HTTP_2 && parts.method != Method::HEAD {
        conn.reset_on_close();
    }
    let body = PatternBody::new(0, RESET_DECLARED, RESET_DECLARED).cut_after(
        after,
        CutKind::Abort,
        Barrier::for_request(parts.version, conn),
    );
    Ok(octets(body, RESET_DECLARED))
}

/// `/truncated`: `Content-Length: 100`, 50 bytes, then the connection
/// closes (HTTP/1) or the stream ends early (HTTP/2).
pub(super) fn truncated(parts: &Parts, conn: &Arc<ConnShared>) -> Response<FaultBody> {
    let body = PatternBody::new(0, TRUNCATED_DECLARED, TRUNCATED_DECLARED).cut_after(
        TRUNCATED_SENT,
        CutKind::Close,
        Barrier::for_request(parts.version, conn),
    );
    octets(body, TRUNCATED_DECLARED)
}
