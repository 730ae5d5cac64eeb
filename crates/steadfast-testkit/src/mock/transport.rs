//! [`MockTransport`] and [`RouteHandle`]: routes, scripts, recording.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use steadfast_core::{BoxError, Transport};
use tokio::time::Instant;

use super::body::MockBody;
use super::error::{ClosestRoute, MockError};
use super::record::{RecordedCall, list_calls};
use super::reply::Reply;
use super::route::{RequestView, Route, Verdict};

/// A scriptable in-memory [`Transport`]: register [`Route`]s with scripts of
/// [`Reply`]s, send requests, then assert on the [`RecordedCall`]s.
///
/// `MockTransport` is a cheap handle (an `Arc` inside): clones share routes,
/// scripts and recordings, so keep one clone for assertions and hand another
/// to the code under test. See the [module docs](super) for a tour.
#[derive(Clone, Default)]
pub struct MockTransport {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    routes: Vec<Arc<RouteEntry>>,
    calls: Vec<RecordedCall>,
    fallback: Option<Reply>,
}

struct RouteEntry {
    index: usize,
    route: Route,
    script: Mutex<Script>,
}

#[derive(Default)]
struct Script {
    steps: VecDeque<Step>,
    calls: Vec<RecordedCall>,
}

struct Step {
    reply: Reply,
    /// `None`: once, or for ever while it is the last step.
    times: Option<usize>,
    used: usize,
}

impl Script {
    fn push(&mut self, reply: Reply, times: Option<usize>) {
        // A repeating last step that has served already has had its "once".
        if let Some(last) = self.steps.back()
            && last.times.is_none()
            && last.used > 0
        {
            self.steps.pop_back();
        }
        self.steps.push_back(Step {
            reply,
            times,
            used: 0,
        });
    }

    /// The next reply, or `None` when the script is used up.
    fn next(&mut self) -> Option<Reply> {
        let last = self.steps.len() == 1;
        let step = self.steps.front_mut()?;
        step.used += 1;
        let reply = step.reply.clone();
        let done = match step.times {
            Some(n) => step.used >= n,
            None => !last,
        };
        if done {
            self.steps.pop_front();
        }
        Some(reply)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a test thread must not turn every later assertion into a
    // poison error; the data is still consistent (no invariant spans a panic).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MockTransport {
    /// A mock with no routes: every request is unmatched until routes are
    /// registered with [`MockTransport::on`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `route` and returns the handle that scripts its replies.
    ///
    /// Routes are tried in registration order; the first that matches and
    /// still has a reply serves the request. A route whose script is used up
    /// lets later matching routes serve, so
    /// `on(r).reply_once(a); on(r).reply(b)` answers `a`, then `b` for ever.
    pub fn on(&self, route: Route) -> RouteHandle {
        let mut state = lock(&self.shared.state);
        let entry = Arc::new(RouteEntry {
            index: state.routes.len(),
            route,
            script: Mutex::default(),
        });
        state.routes.push(Arc::clone(&entry));
        RouteHandle {
            entry,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves requests that no route matches with `reply` instead of failing
    /// with [`MockError::Unmatched`]. They are still recorded with
    /// `route: None`, so [`MockTransport::assert_no_unmatched`] reports them.
    pub fn fallback(&self, reply: Reply) {
        lock(&self.shared.state).fallback = Some(reply);
    }

    /// Every request received so far, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.shared.state).calls.clone()
    }

    /// How many requests were received.
    pub fn call_count(&self) -> usize {
        lock(&self.shared.state).calls.len()
    }

    /// The most recent request.
    pub fn last_call(&self) -> Option<RecordedCall> {
        lock(&self.shared.state).calls.last().cloned()
    }

    /// Requests no route served (unmatched, served by the fallback, or
    /// matched only exhausted routes).
    pub fn unmatched_calls(&self) -> Vec<RecordedCall> {
        let state = lock(&self.shared.state);
        state
            .calls
            .iter()
            .filter(|c| c.route.is_none())
            .cloned()
            .collect()
    }

    /// Panics unless exactly `n` requests were received; the message lists them.
    #[track_caller]
    pub fn assert_called(&self, n: usize) {
        let state = lock(&self.shared.state);
        let got = state.calls.len();
        if got != n {
            let calls = list_calls(&state.calls, None);
            drop(state);
            panic!("MockTransport: expected {n} call(s), got {got}:\n{calls}");
        }
    }

    /// Panics if any request was not served by a route (unmatched, served by
    /// the fallback, or matched only exhausted routes); the message lists
    /// every call.
    #[track_caller]
    pub fn assert_no_unmatched(&self) {
        let state = lock(&self.shared.state);
        let unmatched = state.calls.iter().filter(|c| c.route.is_none()).count();
        if unmatched > 0 {
            let calls = list_calls(&state.calls, None);
            drop(state);
            panic!("MockTransport: {unmatched} call(s) were not served by any route:\n{calls}");
        }
    }

    /// Panics if a registered route was never called (pytest-httpx's
    /// "all responses were requested"); the message names the routes.
    #[track_caller]
    pub fn assert_all_routes_called(&self) {
        let state = lock(&self.shared.state);
        let idle: Vec<String> = state
            .routes
            .iter()
            .filter(|e| lock(&e.script).calls.is_empty())
            .map(|e| format!("  #{} `{}`", e.index, e.route))
            .collect();
        if !idle.is_empty() {
            let calls = list_calls(&state.calls, None);
            drop(state);
            panic!(
                "MockTransport: {} route(s) were never called:\n{}\ncalls received:\n{calls}",
                idle.len(),
                idle.join("\n")
            );
        }
    }

    /// Forgets the recorded calls; routes, scripts and the fallback stay.
    pub fn clear_calls(&self) {
        let state = {
            let mut state = lock(&self.shared.state);
            state.calls.clear();
            state.routes.clone()
        };
        for entry in state {
            lock(&entry.script).calls.clear();
        }
    }

    /// Back to a fresh mock: removes every route, the fallback and the
    /// recorded calls. Existing [`RouteHandle`]s detach: scripting them has
    /// no effect any more.
    pub fn reset(&self) {
        let mut state = lock(&self.shared.state);
        *state = State::default();
    }

    /// Matches `call`, consumes a script step, records the call, then plays
    /// the reply. Matchers and replies run outside every lock.
    async fn serve(&self, mut call: RecordedCall) -> Result<Response<MockBody>, MockError> {
        let routes = lock(&self.shared.state).routes.clone();
        let mut verdicts: Vec<Verdict> = {
            let view = RequestView::new(&call);
            routes.iter().map(|e| e.route.evaluate(&view)).collect()
        };

        // One critical section for consuming and recording, so the k-th
        // recorded call is the one that got the k-th reply of a script.
        let decision = {
            let mut state = lock(&self.shared.state);
            let mut decision = Decision::Unmatched(state.fallback.clone());
            for (entry, verdict) in routes.iter().zip(&mut verdicts) {
                if !verdict.is_match() {
                    continue;
                }
                let mut script = lock(&entry.script);
                if let Some(reply) = script.next() {
                    call.route = Some(entry.index);
                    call.params = std::mem::take(&mut verdict.params);
                    script.calls.push(call.clone());
                    decision = Decision::Serve(reply, entry.origin());
                    break;
                }
                if !matches!(decision, Decision::Exhausted { .. }) {
                    decision = Decision::Exhausted {
                        entry: Arc::clone(entry),
                        calls: script.calls.len(),
                    };
                }
            }
            state.calls.push(call.clone());
            decision
        };

        tracing::debug!(
            http.request.method = %call.method,
            url.full = %call.uri,
            route = call.route,
            "MockTransport received a request",
        );
        let (reply, origin) = match decision {
            Decision::Serve(reply, origin) => (reply, origin),
            Decision::Unmatched(Some(fallback)) => (fallback, "the fallback reply".to_owned()),
            Decision::Exhausted { entry, calls } => {
                return Err(MockError::Exhausted {
                    index: entry.index,
                    route: entry.route.to_string(),
                    calls,
                });
            }
            Decision::Unmatched(None) => {
                return Err(MockError::Unmatched {
                    request: format!("{} {}", call.method, call.uri),
                    closest: closest(&routes, verdicts),
                });
            }
        };
        let res = reply.play(&call, &origin).await?;
        tracing::debug!(
            http.response.status_code = res.status().as_u16(),
            "MockTransport replied",
        );
        Ok(res)
    }
}

enum Decision {
    Serve(Reply, String),
    Exhausted {
        entry: Arc<RouteEntry>,
        calls: usize,
    },
    Unmatched(Option<Reply>),
}

/// The route with the most passing matchers (then the fewest failing, then
/// the first registered).
fn closest(routes: &[Arc<RouteEntry>], verdicts: Vec<Verdict>) -> Option<ClosestRoute> {
    let mut best: Option<(&Arc<RouteEntry>, Verdict)> = None;
    for (entry, verdict) in routes.iter().zip(verdicts) {
        let better = best.as_ref().is_none_or(|(_, b)| {
            (verdict.passed, std::cmp::Reverse(verdict.mismatches.len()))
                > (b.passed, std::cmp::Reverse(b.mismatches.len()))
        });
        if better {
            best = Some((entry, verdict));
        }
    }
    best.map(|(entry, verdict)| ClosestRoute {
        index: entry.index,
        route: entry.route.to_string(),
        mismatches: verdict.mismatches,
    })
}

impl RouteEntry {
    fn origin(&self) -> String {
        format!("route #{} `{}`", self.index, self.route)
    }
}

impl<B> Transport<B> for MockTransport
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Body = MockBody;
    type Error = MockError;

    async fn send(&self, req: Request<B>) -> Result<Response<MockBody>, MockError> {
        let at = Instant::now();
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| MockError::BodyRead(e.into()))?
            .to_bytes();
        let call = RecordedCall {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            extensions: parts.extensions,
            body,
            at,
            route: None,
            params: Vec::new(),
        };
        self.serve(call).await
    }
}

/// Scripts the replies of one route and reads what it received; returned
/// by [`MockTransport::on`].
///
/// Cheap to clone; scripting methods take `&self` and return a handle, so
/// they chain:
///
/// ```
/// use steadfast_testkit::{MockTransport, Reply, Route};
///
/// let mock = MockTransport::new();
/// let users = mock
///     .on(Route::get("/users"))
///     .reply_times(2, Reply::status(503).header("retry-after", 1))
///     .reply(Reply::json(200, serde_json::json!([])));
/// users.assert_not_called();
/// ```
///
/// A script is a queue of steps: [`reply_times(n, r)`](RouteHandle::reply_times)
/// serves `r` `n` times; [`reply(r)`](RouteHandle::reply) serves `r` once,
/// or for ever while it is the last step. A script with only counted steps
/// runs out: the next matching request fails with [`MockError::Exhausted`]
/// (unless a later matching route still has replies).
#[derive(Clone)]
pub struct RouteHandle {
    entry: Arc<RouteEntry>,
    shared: Arc<Shared>,
}

impl RouteHandle {
    /// Appends `reply`: served once, or for every later request while it is
    /// the last step of the script.
    pub fn reply(&self, reply: Reply) -> Self {
        lock(&self.entry.script).push(reply, None);
        self.clone()
    }

    /// Appends `reply`, served exactly once.
    pub fn reply_once(&self, reply: Reply) -> Self {
        self.reply_times(1, reply)
    }

    /// Appends `reply`, served exactly `n` times (`n == 0` appends nothing).
    pub fn reply_times(&self, n: usize, reply: Reply) -> Self {
        if n > 0 {
            lock(&self.entry.script).push(reply, Some(n));
        }
        self.clone()
    }

    /// Registration index of the route (0 for the first `mock.on(..)`).
    pub fn index(&self) -> usize {
        self.entry.index
    }

    /// The route.
    pub fn route(&self) -> &Route {
        &self.entry.route
    }

    /// The requests this route served, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.entry.script).calls.clone()
    }

    /// How many requests this route served.
    pub fn call_count(&self) -> usize {
        lock(&self.entry.script).calls.len()
    }

    /// `true` when the script has no reply left.
    pub fn is_exhausted(&self) -> bool {
        lock(&self.entry.script).steps.is_empty()
    }

    /// Panics unless this route served exactly `n` requests; the message
    /// lists every call the mock received, this route's marked with `*`.
    #[track_caller]
    pub fn assert_called(&self, n: usize) {
        let got = self.call_count();
        if got != n {
            let calls = list_calls(&lock(&self.shared.state).calls, Some(self.entry.index));
            panic!(
                "{}: expected {n} call(s), got {got}; calls received by the mock:\n{calls}",
                self.entry.origin()
            );
        }
    }

    /// Panics unless this route served exactly one request.
    #[track_caller]
    pub fn assert_called_once(&self) {
        self.assert_called(1);
    }

    /// Panics if this route served any request.
    #[track_caller]
    pub fn assert_not_called(&self) {
        self.assert_called(0);
    }
}

impl fmt::Debug for RouteHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteHandle")
            .field("index", &self.entry.index)
            .field("route", &self.entry.route)
            .field("calls", &self.call_count())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for MockTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("MockTransport")
            .field("routes", &state.routes)
            .field("calls", &state.calls.len())
            .field("fallback", &state.fallback)
            .finish()
    }
}

impl fmt::Debug for RouteEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} `{}`", self.index, self.route)
    }
}
