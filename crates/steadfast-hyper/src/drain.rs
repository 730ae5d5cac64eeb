//! Draining abandoned HTTP/1 responses so their connections go back to the
//! pool; see [`crate::Builder::drain_on_cancel`].
//!
//! HTTP/1 carries one response at a time, so hyper can only pool a
//! connection again once its response was read to the end. A caller that
//! drops a response half-way (or stops waiting for it) would cost the
//! connection; instead, a short task reads the rest and discards it, within
//! the byte and time limits, and hyper then pools the connection as if the
//! caller had read it all. The connection's [`Held`] moves into the task,
//! so the connection stays in use for the pool observer until the drain
//! ends, and its slot is never free while the socket is busy.
//!
//! Only abandoned responses get here: a response read to its end, or a
//! request that fails or times out in the transport, never does, so the
//! path of a request that completes normally is unchanged.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::ResponseFuture;
use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::body::Held;
use crate::config::DrainConfig;
use crate::conn::{ConnectionInfo, HostState};

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The response ended within the limits: hyper pools the connection.
    Drained,
    /// More than `max_bytes` was left: the connection closes.
    TooLarge,
    /// `max_time` passed first: the connection closes.
    TimedOut,
    /// The exchange failed on its own (reset, malformed response): the
    /// connection was lost anyway.
    Failed,
    /// The task was dropped unfinished: its runtime is shutting down.
    Cancelled,
}

impl Outcome {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Drained => "drained",
            Self::TooLarge => "too_large",
            Self::TimedOut => "timed_out",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What is left of the abandoned exchange.
enum Rest {
    /// The response head had not come yet.
    Head(ResponseFuture),
    /// The head came; the body was dropped before its end.
    Body(Incoming),
}

/// The limits and the runtime to drain on, if the transport drains and a
/// tokio runtime is current.
fn drainer(host: &HostState) -> Option<(DrainConfig, Handle)> {
    let config = host.drain?;
    let runtime = Handle::try_current().ok()?;
    Some((config, runtime))
}

/// A response body dropped before its end: drains it, or drops it (and
/// with it, on HTTP/1, the connection) as without draining.
pub(crate) fn body(host: &Arc<HostState>, body: Incoming, held: Option<Held>) {
    // Without our connection tag the protocol is unknown: not worth a guess.
    let http1 = held.as_ref().is_some_and(|h| !h.conn.h2);
    if http1 && let Some((config, runtime)) = drainer(host) {
        let left = body.size_hint().lower();
        if left <= config.max_bytes {
            spawn(&runtime, host, config, Rest::Body(body), held);
            return;
        }
        tracing::debug!(
            policy.name = host.name(),
            network.connection.id = held.as_ref().map(|h| h.conn.id.0),
            server.pool = %host.key,
            http.response.body.left = left,
            max_bytes = config.max_bytes,
            "response not drained: more is left than drain_on_cancel allows"
        );
    }
    drop(body);
    drop(held);
}

/// A request dropped after a connection took all of it, before its
/// response head came: drains the response, or drops the exchange (and
/// with it, on HTTP/1, the connection) as without draining.
pub(crate) fn head(host: &Arc<HostState>, response: ResponseFuture, held: Option<Held>) {
    // HTTP/2 loses only the stream. Without a hold (no pool observer), a
    // host known to speak HTTP/2 says it; otherwise the protocol shows with
    // the head, and the drain stops there if it is 2.
    let h2 = held.as_ref().map_or_else(
        || host.h2.load(std::sync::atomic::Ordering::Relaxed),
        |h| h.conn.h2,
    );
    if !h2 && let Some((config, runtime)) = drainer(host) {
        spawn(&runtime, host, config, Rest::Head(response), held);
        return;
    }
    drop(response);
    drop(held);
}

fn spawn(
    runtime: &Handle,
    host: &Arc<HostState>,
    config: DrainConfig,
    rest: Rest,
    held: Option<Held>,
) {
    host.stats.drains_started.fetch_add(1, Ordering::Relaxed);
    // Bounded by `max_time`, and by the open connections: each drain holds one.
    let end = End {
        host: host.clone(),
        held,
        read: 0,
        outcome: Outcome::Cancelled,
    };
    drop(runtime.spawn(run(end, config, rest)));
}

/// `end` comes first: dropped last, after the response, if the task is
/// dropped mid-way; and dropped even if the task never ran.
async fn run(mut end: End, config: DrainConfig, rest: Rest) {
    let deadline = steadfast_core::Deadline::after_from(Instant::now(), config.max_time).instant();
    let drained = drain(rest, &mut end.held, config.max_bytes, &mut end.read);
    end.outcome = tokio::time::timeout_at(deadline, drained)
        .await
        .unwrap_or(Outcome::TimedOut);
}

/// Ends a drain when its task does, even one dropped unfinished (or never
/// run) by a runtime shutting down, so `drains_running` always comes back
/// to zero.
struct End {
    host: Arc<HostState>,
    held: Option<Held>,
    read: u64,
    outcome: Outcome,
}

impl Drop for End {
    fn drop(&mut self) {
        // The response is dropped by now: on success hyper has the
        // connection back; otherwise it is closing. The release is reported
        // after that, when `held` drops, as for a body read by its caller;
        // then the drain counts as ended, so a snapshot with every drain
        // ended has seen every release.
        tracing::debug!(
            policy.name = self.host.name(),
            network.connection.id = self.held.as_ref().map(|h| h.conn.id.0),
            server.pool = %self.host.key,
            http.response.drained_bytes = self.read,
            outcome = self.outcome.as_str(),
            "abandoned response drained"
        );
        drop(self.held.take());
        let stats = &self.host.stats;
        let ended = if self.outcome == Outcome::Drained {
            &stats.drains_succeeded
        } else {
            &stats.drains_abandoned
        };
        ended.fetch_add(1, Ordering::Release);
    }
}

/// Reads what is left of the response, counting the body bytes in `read`.
async fn drain(rest: Rest, held: &mut Option<Held>, max_bytes: u64, read: &mut u64) -> Outcome {
    let mut body = match rest {
        Rest::Body(body) => body,
        Rest::Head(response) => {
            let Ok(res) = response.await else {
                return Outcome::Failed;
            };
            if held.is_none()
                && let Some(info) = res.extensions().get::<ConnectionInfo>()
            {
                // As the request's future would have, had it waited.
                info.0.assign();
                *held = Some(Held::unobserved(info.0.clone()));
            }
            if res.version() == http::Version::HTTP_2 || held.as_ref().is_some_and(|h| h.conn.h2) {
                // Dropping an HTTP/2 response resets its stream, not the connection.
                return Outcome::Drained;
            }
            let body = res.into_body();
            if body.size_hint().lower() > max_bytes {
                return Outcome::TooLarge;
            }
            body
        }
    };
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Outcome::Failed;
        };
        if let Some(data) = frame.data_ref() {
            *read += data.len() as u64;
            if *read > max_bytes {
                return Outcome::TooLarge;
            }
        }
    }
    Outcome::Drained
}
