//! `FaultServer`: a real loopback HTTP server whose routes fail on purpose.
//!
//! It listens on `127.0.0.1` on a free port, speaks HTTP/1.1 and HTTP/2
//! with prior knowledge (h2c) on the same port, and stops when dropped:
//! the listener closes and every connection is dropped. Integration tests
//! and the `tour` example run clients against it; nothing leaves the
//! machine.
//!
//! # Quick start
//!
//! ```
//! use steadfast_testkit::FaultServer;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let server = FaultServer::start().await;
//!
//! let mut tcp = tokio::net::TcpStream::connect(server.addr()).await?;
//! tcp.write_all(b"GET /status/503?retry_after=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
//!     .await?;
//! let mut response = String::new();
//! tcp.read_to_string(&mut response).await?;
//!
//! assert!(response.starts_with("HTTP/1.1 503"));
//! assert!(response.to_ascii_lowercase().contains("retry-after: 2\r\n"));
//! assert_eq!(server.hits("/status/503"), 1);
//! assert_eq!(server.stats().connections_accepted, 1);
//! # Ok(())
//! # }
//! ```
//!
//! With settings: `FaultServer::builder().limited(2.0, 3).start().await`
//! (or `try_start()`, which returns a [`StartError`] instead of panicking on
//! an invalid rate or burst).
//!
//! # Routes
//!
//! Every route accepts any method; `HEAD` gets the headers a `GET` would,
//! `Content-Length` included, and no body. Query switches take `1`/`true`
//! or `0`/`false`. A bad parameter gets `400` with
//! `{"error": "...", "param": "<name>"}`; an unknown path gets `404` with
//! the route list. Every response carries `X-Fault-Connection: <id>`, the
//! number of the connection (in accept order) that served it.
//!
//! | Route | Parameters (default) | Response |
//! |---|---|---|
//! | `/status/{code}` | `code` 200..=599; `retry_after` seconds (none); `retry_after_date` (0) | that status, `{"status": code}` (no body for 204, 205, 304). `Retry-After: S`, or with `retry_after_date=1` an IMF-fixdate at least `S` s ahead. 1xx codes are refused: they cannot end an exchange |
//! | `/flaky` | `fail` (1), `key` (`default`), `status` (503), `retry_after` (none) | per key, requests 1..=`fail` get `status` with `{"status", "attempt"}` (and `Retry-After`), later ones 200 `{"attempt": n}` |
//! | `/limited` | `key` (`default`) | server-side GCRA per key, rate and burst from [`FaultServerBuilder::limited`] (defaults [`DEFAULT_LIMITED_RATE`]/s, burst [`DEFAULT_LIMITED_BURST`]). 200, or 429 with `Retry-After`; both with the headers below |
//! | `/slow` | `ms` (1000, ≤ 600000) | waits, then 200 `{"slept_ms": ms}` |
//! | `/drip` | `chunks` (10), `interval_ms` (100), `chunk_size` (16) | head at once with `Content-Length: chunks*chunk_size`, then each chunk of pattern bytes after `interval_ms` |
//! | `/reset` | `after` (100) | `Content-Length: 1000`, `after` bytes, then a TCP reset (HTTP/1) or `RST_STREAM` (HTTP/2) |
//! | `/truncated` | | `Content-Length: 100`, 50 bytes, then the connection closes (HTTP/1) or the stream ends early (HTTP/2) |
//! | `/echo` | any | 200 `{"method", "path", "query", "version", "headers": {name: "v1, v2"}, "header_lines": [[name, [byte, ..]], ..], "body": "<utf-8 lossy>", "body_len"}`: `headers` joins the lines and decodes them as UTF-8 (lossily), `header_lines` keeps each line and its exact bytes; bodies over 16 MiB get 413 |
//! | `/headers` | `status` (200); any other `name=value` | that status with each pair as a response header (repeat a name for several lines), to test clients against arbitrary signals. Values are percent-decoded to raw bytes (`%FF` sends the byte 0xFF); control characters other than tab are refused |
//! | `/bytes/{n}` | `n` ≤ 16 GiB; `chunk` (65536) | `n` pattern bytes, streamed in chunks at constant memory |
//! | `/file` | `size` (1 MiB, ≤ 16 GiB); `chunk` (65536); `fail_at` (none) | pattern bytes with a strong `ETag` (from the size), a fixed `Last-Modified`, `Accept-Ranges: bytes`, and ranges (below). `fail_at=K` cuts the connection after K body bytes |
//! | `/items` | `style` (`link`), `total` (100, ≤ 10 000 000), `per_page` (10, 1..=1000), `latency_ms` (0) | a paginated collection (below) |
//!
//! Pattern bytes are [`pattern_byte`]`(offset)`, so clients can check any
//! slice with [`fill_pattern`] or [`pattern_mismatch`].
//!
//! ## `/limited` headers
//!
//! With burst `B`, rate `R`, `r` the requests still allowed now and `t` the
//! seconds until more quota is available, that is until `r` goes up by one
//! (rounded up, at least 1; on a `429` it equals `Retry-After`):
//!
//! ```text
//! RateLimit-Policy: "default";q=B;w=ceil(B/R)
//! RateLimit: "default";r=<r>;t=<t>
//! X-RateLimit-Limit: B
//! X-RateLimit-Remaining: <r>
//! X-RateLimit-Reset: <t>
//! Retry-After: <seconds until one request is allowed, rounded up>   (429 only)
//! ```
//!
//! The fields follow draft-ietf-httpapi-ratelimit-headers, whose values are
//! whole seconds. Since draft -10, `t` is the time until *additional* quota
//! is made available, not until the whole burst has refilled (which takes
//! up to `w`); `X-RateLimit-Reset` carries the same value, so no two fields
//! disagree.
//!
//! Whole seconds are coarse at rates above 1/s: `Retry-After: 1` may mean
//! 100 ms, and `t=1` may mean "a request's worth of quota every 50 ms".
//! Rounding is always up, so a client
//! that waits what it is told is allowed; a client that wants to pace
//! tighter than a second must use its own limiter. Refusals do not consume
//! credit. [`FaultServer::limited_stats`] counts allowed and refused
//! requests per key.
//!
//! ## `/file` ranges (RFC 9110 §14)
//!
//! For `GET` only: `Range: bytes=a-b`, `bytes=a-` and `bytes=-n` get `206`
//! with `Content-Range: bytes a-b/size`. A range starting past the end (or
//! `-0`) gets `416` with `Content-Range: bytes */size`. A suffix range of an
//! empty file (`size=0`, `bytes=-5`) is satisfiable but has no `206` form,
//! so it gets `200` with the empty body. Several ranges get the whole body
//! with `200`, which the RFC allows (a server may ignore `Range`), so no
//! `multipart/byteranges`. Invalid syntax, another unit, or more than one
//! `Range` field line (it is a singleton field) is ignored (`200`), as the
//! RFC requires. `If-Range` with the current
//! ETag or exactly the `Last-Modified` date keeps the range; any other
//! value (a weak tag included) gets `200` with the whole body.
//!
//! ## `/items` pagination
//!
//! Items are `{"id": i, "name": "item-i"}` for `i` in `0..total`. Pages out
//! of range are `200` with no items. Per `style`:
//!
//! | `style` | Request | Body and headers |
//! |---|---|---|
//! | `link` | `page` (1) | a JSON array. Two `Link` lines: `rel="next"` (not on the last page) and `rel="prev"` (not on page 1) on the first, omitted when both are; `rel="first"` and `rel="last"` on the second. URLs are relative, e.g. `</items?style=link&page=2&per_page=10&total=95>`, followed by every other query parameter of the request. `X-Total-Count: total`. `loop=1`: page 2's next is page 1. `cross_origin=1`: next links are absolute on `http://evil.invalid` |
//! | `cursor` | `cursor` (absent: start) | `{"data": [..], "next_cursor": "<opaque>" \| null}` and `X-Next-Cursor` when there is a next. `loop=1`: the second page returns the cursor that fetched it. `empty_pages=1`: a page with no data and a non-null cursor sits between every two real pages |
//! | `page` | `page` (1) | `{"data", "page", "per_page", "total", "total_pages": ceil(total/per_page)}` |
//! | `offset` | `offset` (0), `limit` (`per_page`, ≤ 1000) | `{"data", "offset", "limit", "total"}` |
//! | `has_more` | `starting_after` (an id; absent: start), `limit` (`per_page`) | `{"data", "has_more"}` |
//!
//! Bodies are generated per page; `total` costs nothing.
//!
//! # Shutdown
//!
//! Dropping the server (or awaiting [`FaultServer::shutdown`]) closes the
//! listener, drops every connection without a graceful drain, and ends
//! hyper's HTTP/2 stream tasks. The server runs on the runtime that
//! started it and never outlives it.

mod body;
mod conn;
mod file;
mod items;
mod limited;
mod pattern;
mod query;
mod routes;
mod server;

pub use limited::{DEFAULT_LIMITED_BURST, DEFAULT_LIMITED_RATE, LimitedStats};
pub use pattern::{fill_pattern, pattern_byte, pattern_mismatch};
pub use server::{FaultServer, FaultServerBuilder, ServerStats, StartError};
