//! [`MockTransport`]: a scriptable in-memory [`Transport`](steadfast_core::Transport)
//! for testing HTTP clients and the policies stacked on them.
//!
//! Register [`Route`]s, give each a script of [`Reply`]s, hand a clone of
//! the mock to the code under test, then assert on what it received. The
//! ergonomics follow pytest-httpx: routes match on method, path, query,
//! headers and body; the last reply of a script repeats; an unmatched
//! request fails with a message that names the closest route and the
//! matcher that failed.
//!
//! # Quick Start
//!
//! ```
//! use std::time::Duration;
//! use serde_json::json;
//! use steadfast_core::Transport;
//! use steadfast_testkit::{MockTransport, Reply, Route};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mock = MockTransport::new();
//! let users = mock
//!     .on(Route::get("/users").query("page", "1"))
//!     .reply_times(2, Reply::status(503).header("retry-after", 1))
//!     .reply(Reply::json(200, json!({"users": []}))); // the last reply repeats
//!
//! let get = || http::Request::get("http://api.test/users?page=1").body(String::new()).unwrap();
//! assert_eq!(mock.send(get()).await.unwrap().status(), 503);
//! assert_eq!(mock.send(get()).await.unwrap().status(), 503);
//! let res = mock.send(get()).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["content-type"], "application/json");
//!
//! users.assert_called(3);
//! mock.assert_no_unmatched();
//!
//! // Nothing matches page 2; the error says which route came closest and why.
//! let req = http::Request::get("http://api.test/users?page=2").body(String::new()).unwrap();
//! let err = mock.send(req).await.unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "MockTransport has no route for `GET http://api.test/users?page=2`; \
//!      closest route #0 `GET /users?page=1`: query `page` was `2`, expected `1`"
//! );
//! # }
//! ```
//!
//! `MockTransport` implements `Transport<B>` for every
//! [`http_body::Body`] `B` (`String`, `Full<Bytes>`, `Empty<Bytes>`,
//! [`MockBody`], a [`ReplayBody`](steadfast_core::ReplayBody), ...); its
//! response body is [`MockBody`] and its error [`MockError`]. It is a cheap
//! handle: clones share routes, scripts and recordings, and it works behind
//! `Arc` and inside any stack of layers
//! (`mock.clone().with(RetryLayer::new(..))`).
//!
//! # How matching works
//!
//! Each request is read in full (body included), then checked against the
//! routes in registration order. A [`Route`] matches when all its matchers
//! pass:
//!
//! | Matcher | Passes when |
//! |---|---|
//! | `Route::get(path)`, `post`, `put`, `patch`, `delete`, `head`, `method(m, path)` | the method is equal and the path matches the pattern |
//! | `Route::any()` | always (narrow it with the matchers below) |
//! | `.path("/users/{id}")`, `.path("/files/*")` | `{id}` matches one segment, a final `*` the rest of the path |
//! | `.query(k, v)` | one of the values of `k` is `v` (percent-decoded; other parameters allowed) |
//! | `.header(k, v)` | one of the values of header `k` (case-insensitive name) is `v` |
//! | `.header_present(k)` | the header is there |
//! | `.json_body(value)` | the body is JSON equal to `value` (key order, `1` vs `1.0` ignored) |
//! | `.body(bytes)` | the body is exactly `bytes` |
//! | `.host(h)` | the URI's host (or the `Host` header) is `h`; a port in `h` must match too |
//! | `.matching(\|call\| ..)` | the predicate returns `true` |
//!
//! The first matching route that still has a reply serves the request. When
//! none matches, the request fails with [`MockError::Unmatched`], whose
//! message names the request, the closest route (most matchers passed; ties
//! go to the first registered) and every matcher of it that failed, with
//! the value seen and the value expected. Set [`MockTransport::fallback`] to
//! serve unmatched requests instead.
//!
//! # Scripting
//!
//! [`MockTransport::on`] returns a [`RouteHandle`]; its script is a queue:
//!
//! - [`reply(r)`](RouteHandle::reply): `r` once, or for ever while it is the last step;
//! - [`reply_times(n, r)`](RouteHandle::reply_times): `r` exactly `n` times;
//! - [`reply_once(r)`](RouteHandle::reply_once): `r` exactly once.
//!
//! A script of counted steps runs out; the next matching request then goes
//! to the next matching route with replies left, or fails with
//! [`MockError::Exhausted`]. [`Reply::with`] computes a reply from the
//! request (echo a header, count attempts, ...).
//!
//! Replies are responses ([`Reply::status`], [`Reply::json`],
//! [`Reply::text`], [`Reply::bytes`], with [`header`](Reply::header),
//! [`chunks`](Reply::chunks) and [`fail_body_after`](Reply::fail_body_after))
//! or failures that classify like the real thing with
//! [`ErrorClass::of`](steadfast_core::ErrorClass::of):
//!
//! | Reply | Error in the chain | `ErrorClass` |
//! |---|---|---|
//! | [`Reply::connect_error()`](Reply::connect_error) | `ConnectError` ← `io::Error(ConnectionRefused)` | `Connect` |
//! | [`Reply::timeout()`](Reply::timeout), [`Reply::timeout_in(phase)`](Reply::timeout_in) | `TimeoutError { phase }` | `Timeout(Some(phase))` |
//! | [`Reply::reset()`](Reply::reset) | `io::Error(ConnectionReset)` | `Reset` |
//! | [`Reply::io_error(kind)`](Reply::io_error) | `io::Error(kind)` | by kind |
//! | [`Reply::error_with(f)`](Reply::error_with) | whatever `f` returns | by its chain |
//! | `.fail_body_after(n)` (body error) | `MockBodyError` ← `io::Error(ConnectionReset)` | `Reset` |
//!
//! # Latency and paused time
//!
//! [`Reply::delay`] waits before the response head (or the failure);
//! [`Reply::chunks`] spaces body chunks out. Both use `tokio::time`, so
//! under `#[tokio::test(start_paused = true)]` they cost no real time and
//! land on exact virtual instants:
//!
//! ```
//! use std::time::Duration;
//! use steadfast_core::Transport;
//! use steadfast_testkit::{MockTransport, Reply, Route};
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mock = MockTransport::new();
//! mock.on(Route::any()).reply(Reply::status(200).delay(Duration::from_millis(250)));
//!
//! let start = Instant::now();
//! mock.send(http::Request::new(String::new())).await.unwrap();
//! assert_eq!(start.elapsed(), Duration::from_millis(250));
//! # }
//! ```
//!
//! Delays hold no lock, so concurrent requests wait in parallel.
//!
//! # Recording and assertions
//!
//! Every request is recorded as a [`RecordedCall`] (method, URI, headers,
//! extensions, whole body, arrival instant, serving route, path params):
//! [`MockTransport::calls`] for all of them, [`RouteHandle::calls`] for one
//! route. The assertion helpers ([`MockTransport::assert_called`],
//! [`MockTransport::assert_no_unmatched`],
//! [`MockTransport::assert_all_routes_called`],
//! [`RouteHandle::assert_called`]) are `#[track_caller]` and list the calls
//! received when they fail. [`MockTransport::clear_calls`] forgets the
//! recordings; [`MockTransport::reset`] forgets everything.
//!
//! # Errors
//!
//! [`MockError`] says why there was no response: `Unmatched` (no route, with
//! the closest one), `Exhausted` (script used up), `Scripted` (a failure
//! reply, with the real error as its source), `InvalidReply` (a reply that
//! cannot be built: bad status, header, JSON) and `BodyRead` (the request
//! body failed). Invalid routes and replies never panic.
//!
//! # Thread safety
//!
//! State sits behind `std::sync::Mutex`es held only for bookkeeping, never
//! across an `.await`; matchers, dynamic replies and delays run outside
//! them. Scripts are consumed atomically, so counts are exact however many
//! tasks send at once.

mod body;
mod error;
mod record;
mod reply;
mod route;
mod transport;

pub use body::{MockBody, MockBodyError};
pub use error::{ClosestRoute, MockError};
pub use record::RecordedCall;
pub use reply::Reply;
pub use route::Route;
pub use transport::{MockTransport, RouteHandle};
