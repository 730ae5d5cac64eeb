//! The request body as hyper holds it, and what it tells the request's
//! future: when a connection takes the request, how the upload is going,
//! and whether the request certainly never left.
//!
//! hyper must decide how to frame a request (`Content-Length`, chunked, or
//! no body) before it writes the first byte of its head, and it can only
//! learn that from the body: `is_end_stream`, `size_hint` or `poll_frame`.
//! So the first call to any of them is the moment the request leaves the
//! pool's hands for a connection's — on HTTP/1 and HTTP/2 alike. That
//! moment ends the request's wait for a connection and starts the read
//! timeout. A body dropped before anything looked at it was never sent:
//! that, and only that, makes a failure certainly harmless to repeat.
//!
//! While the body streams, each frame hyper takes moves the start of the
//! read timeout forward: the timeout measures the server's silence, and a
//! server still taking the upload is not silent. While the caller's own
//! body has no frame ready, the read timeout waits for it too: that time
//! is the caller's. Noticing all this costs a clock read per body frame on
//! the connection's task, and no allocation beyond the one [`InFlight`].
//!
//! With a pool observer, the same moment tells which connection took the
//! request, so the pool events are exact without asking hyper-util to
//! capture the connection (a watch channel per request). An HTTP/1
//! connection takes a request and writes it in one poll of its own task:
//! the body, looked at first, leaves the request in a per-thread slot
//! ([`taken`]), and the connection's next write in that same task claims
//! it ([`bind_taken`]). A request nobody claimed (its connection
//! speaks HTTP/2, whose socket another task drives) is bound by the
//! connection hyper-util names on its response, or for hosts known to
//! speak HTTP/2, by hyper-util's capture (see [`crate::future`]). However
//! the connection is learnt, [`InFlight::bind`] reports the acquisition
//! once, and [`InFlight::settle`] ends a wait that found no connection.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use steadfast_core::BoxError;
use steadfast_core::pool::Acquired;
use tokio::time::Instant;

use crate::body::Held;
use crate::conn::{ConnShared, HostState};

/// Not polled yet: not counted as waiting.
const IDLE: u8 = 0;
/// Polled, and waiting for a connection to take it.
const WAITING: u8 = 1;
/// A connection took it.
const SENT: u8 = 2;
/// Finished or dropped before any connection took it.
const GONE: u8 = 3;

/// In [`InFlight::progress`]: the caller's body has no frame ready.
const CALLER_PENDING: u64 = 1 << 63;

// Where the request stands with the pool observer, in `InFlight::acquire`.
/// No observer, or not polled yet: nothing to report.
const ACQ_NONE: u8 = 0;
/// `acquire_started` was reported; no connection yet.
const ACQ_WAITING: u8 = 1;
/// A connection was reported acquired; nobody holds it yet.
const ACQ_BOUND: u8 = 2;
/// The request side took the hold: it reports the release.
const ACQ_HELD: u8 = 3;
/// The wait ended without a connection, and was reported so.
const ACQ_ENDED: u8 = 4;

/// Where the request stands, as far as the read timeout cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// No connection took the request yet.
    Unsent,
    /// The caller's body has no next frame ready: the wait is the caller's.
    CallerPending,
    /// The request last made progress then: a connection took it, or took
    /// a frame of its body.
    At(Instant),
}

/// What a request's future and its body (inside hyper) share.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) host: Arc<HostState>,
    /// When the request was handed to hyper-util; `progress` counts from here.
    pub(crate) created: Instant,
    state: AtomicU8,
    /// Nanoseconds from `created` to the request's last progress, plus
    /// one, with [`CALLER_PENDING`] set while the caller's body has no
    /// frame ready; zero until a connection takes the request.
    progress: AtomicU64,
    /// The body was dropped before any connection looked at it.
    never_sent: AtomicBool,
    /// A connection took the whole request: its body said it had ended.
    handed_over: AtomicBool,
    /// The caller's body returned an error to hyper.
    body_failed: AtomicBool,
    /// The stamp (as in `progress`) of the moment a connection took the
    /// request; zero before.
    taken: AtomicU64,
    /// With a pool observer: `ACQ_*`.
    acquire: AtomicU8,
    /// The connection that took the request, set by the one binder that
    /// found `acquire` at `ACQ_WAITING` (before it moves it to `ACQ_BOUND`,
    /// which fails if the request stopped waiting first); the hold takes it.
    conn: Mutex<Option<Arc<ConnShared>>>,
    /// The stamp of the acquisition, set before `ACQ_BOUND`.
    bound_at: AtomicU64,
    /// With a pool observer, on a host not known to speak HTTP/2: the
    /// connection that takes the request claims it (see [`taken`]).
    claim_on_take: bool,
    /// The caller's body, boxed; `None` for a body that had ended before it
    /// was sent (most GETs): hyper only asks whether it has ended. Behind a
    /// lock only so that `InFlight` is `Sync`; the connection's task is
    /// the only one to take it.
    body: Option<Mutex<Option<CallerBody>>>,
}

/// The caller's request body, as the transport holds it.
pub(crate) type CallerBody = UnsyncBoxBody<Bytes, BoxError>;

impl InFlight {
    /// `claim_on_take`: see the field; only with a pool observer. `body`:
    /// the caller's body, `None` if empty.
    pub(crate) fn new(
        host: Arc<HostState>,
        created: Instant,
        claim_on_take: bool,
        body: Option<CallerBody>,
    ) -> Arc<Self> {
        Arc::new(Self {
            host,
            created,
            state: AtomicU8::new(IDLE),
            progress: AtomicU64::new(0),
            never_sent: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            body_failed: AtomicBool::new(false),
            taken: AtomicU64::new(0),
            acquire: AtomicU8::new(ACQ_NONE),
            conn: Mutex::new(None),
            bound_at: AtomicU64::new(0),
            claim_on_take,
            body: body.map(|b| Mutex::new(Some(b))),
        })
    }

    /// The future's first poll: the request now waits for a connection.
    pub(crate) fn start_waiting(&self) {
        self.host.waiting.fetch_add(1, Ordering::Relaxed);
        self.state.store(WAITING, Ordering::Release);
    }

    /// The future finished or was dropped: if no connection took the
    /// request, it waits no more.
    pub(crate) fn stop_waiting(&self) {
        if self
            .state
            .compare_exchange(WAITING, GONE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.host.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Where the request stands for the read timeout.
    pub(crate) fn progress(&self) -> Progress {
        match self.progress.load(Ordering::Acquire) {
            0 => Progress::Unsent,
            n if n & CALLER_PENDING != 0 => Progress::CallerPending,
            n => Progress::At(self.instant_of(n)),
        }
    }

    /// `false` only if the request certainly never reached the server: its
    /// body was dropped before any connection looked at it. Read it after
    /// dropping hyper-util's response future, which drops the request if
    /// no connection has it: a request still alive might yet be sent.
    pub(crate) fn may_have_reached_server(&self) -> bool {
        !self.never_sent.load(Ordering::Acquire)
    }

    /// `true` once a connection took the request and the last of its body:
    /// from then on, letting the exchange finish sends nothing more on the
    /// caller's behalf.
    pub(crate) fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::Acquire)
    }

    /// `true` if the caller's request body returned an error: only then is
    /// a failure of the exchange the body's fault. Read it after hyper-util
    /// finished with the request.
    pub(crate) fn body_failed(&self) -> bool {
        self.body_failed.load(Ordering::Acquire)
    }

    /// The future's first poll, with a pool observer: the wait for a
    /// connection starts (it is counted from `send`, when `created` was read).
    pub(crate) fn start_acquire(&self) {
        if let Some(observer) = &self.host.observer {
            self.acquire.store(ACQ_WAITING, Ordering::Release);
            observer.acquire_started();
        }
    }

    /// `true` while the request waits for a connection to be reported.
    pub(crate) fn acquiring(&self) -> bool {
        self.acquire.load(Ordering::Acquire) == ACQ_WAITING
    }

    /// `true` while pool events are left to report: the wait for a
    /// connection, or the hold nobody took yet.
    pub(crate) fn unsettled(&self) -> bool {
        matches!(
            self.acquire.load(Ordering::Acquire),
            ACQ_WAITING | ACQ_BOUND
        )
    }

    /// The connection that took the request, if one was learnt (its
    /// acquisition may have been reported as failed, if the request stopped
    /// waiting first), until the hold takes it.
    pub(crate) fn bound_conn(&self) -> Option<Arc<ConnShared>> {
        self.conn_slot().clone()
    }

    fn conn_slot(&self) -> MutexGuard<'_, Option<Arc<ConnShared>>> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `conn` took the request (when its body was first looked at, or now
    /// if that has not happened): reports the acquisition, once, unless the
    /// request stopped waiting first (then it was reported as that).
    pub(crate) fn bind(&self, conn: &Arc<ConnShared>) {
        let Some(observer) = &self.host.observer else {
            return;
        };
        // Only one binder gets past this: the one that fills the slot
        // while the request still waits. The slot stays locked until the
        // acquisition is reported: `take_hold` locks it after taking the
        // hold, so a cancellation racing this bind on another thread
        // cannot report the release before the acquisition.
        let mut slot = self.conn_slot();
        if slot.is_some() || self.acquire.load(Ordering::Acquire) != ACQ_WAITING {
            return;
        }
        *slot = Some(conn.clone());
        let stamp = match self.taken.load(Ordering::Acquire) {
            0 => self.stamp_of(Instant::now()),
            taken => taken,
        };
        self.bound_at.store(stamp, Ordering::Relaxed);
        if self
            .acquire
            .compare_exchange(ACQ_WAITING, ACQ_BOUND, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let result = if conn.assign() {
                Acquired::New(conn.id)
            } else {
                Acquired::Reused(conn.id)
            };
            // The stamp is the wait: no clock arithmetic beyond the instant.
            debug_assert!(stamp != 0 && stamp & CALLER_PENDING == 0);
            let wait = Duration::from_nanos(stamp - 1);
            observer.acquire_finished_at(self.instant_of(stamp), wait, result);
        }
        drop(slot);
    }

    /// The hold on the connection reported acquired, once: its drop
    /// reports the release. Waits for a bind still reporting the
    /// acquisition (see [`InFlight::bind`]).
    pub(crate) fn take_hold(&self) -> Option<Held> {
        self.acquire
            .compare_exchange(ACQ_BOUND, ACQ_HELD, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let conn = self.conn_slot().take()?;
        let since = self.instant_of(self.bound_at.load(Ordering::Relaxed));
        Some(Held::observed(conn, since))
    }

    /// The request stops waiting, by failure, timeout or cancellation: if
    /// no connection was reported, reports `result` now; if one was, hands
    /// back its hold (to drop, which reports the release, or to drain).
    pub(crate) fn settle(&self, result: Acquired) -> Option<Held> {
        match self.acquire.compare_exchange(
            ACQ_WAITING,
            ACQ_ENDED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                if let Some(observer) = &self.host.observer {
                    let now = Instant::now();
                    let wait = now.saturating_duration_since(self.created);
                    observer.acquire_finished_at(now, wait, result);
                }
                None
            }
            Err(ACQ_BOUND) => self.take_hold(),
            Err(_) => None,
        }
    }

    /// Stamps the request's progress now; returns the stamp.
    fn stamp(&self, caller_pending: bool) -> u64 {
        let stamp = self.stamp_of(Instant::now());
        let stored = if caller_pending {
            stamp | CALLER_PENDING
        } else {
            stamp
        };
        self.progress.store(stored, Ordering::Release);
        stamp
    }

    /// `at` as a stamp: nanoseconds since `created`, plus one (never zero).
    fn stamp_of(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.created).as_nanos();
        u64::try_from(nanos)
            .unwrap_or(u64::MAX)
            .min(CALLER_PENDING - 2)
            + 1
    }

    /// The instant a stamp stands for.
    fn instant_of(&self, stamp: u64) -> Instant {
        self.created + Duration::from_nanos((stamp & !CALLER_PENDING).saturating_sub(1))
    }

    /// Called through the body by hyper's connection task, first thing
    /// before it writes the request.
    fn mark_sent(&self) {
        // The time first, so that whoever sees `SENT` finds it.
        let stamp = self.stamp(false);
        self.taken.store(stamp, Ordering::Release);
        if self
            .state
            .compare_exchange(WAITING, SENT, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.host.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The request body handed to hyper-util: a handle on the [`InFlight`] it
/// reports to, which holds the caller's body.
///
/// One pointer, no more: hyper-util moves the request through its request
/// future a dozen times, and a body wider than a word makes each of those
/// moves a `memcpy` call (measured: about 0.3 k instructions a request).
pub(crate) struct RequestBody {
    in_flight: Arc<InFlight>,
}

impl RequestBody {
    pub(crate) fn new(in_flight: Arc<InFlight>) -> Self {
        Self { in_flight }
    }

    #[inline]
    fn look(&self) {
        // Only the connection's task looks (and, at the end, drops).
        if self.in_flight.taken.load(Ordering::Relaxed) == 0 {
            self.in_flight.mark_sent();
            if self.in_flight.claim_on_take {
                taken(&self.in_flight);
            }
        }
    }

    /// hyper learned that the body has ended: the request is all its now.
    #[inline]
    fn ended(&self) {
        self.in_flight.handed_over.store(true, Ordering::Release);
    }

    /// Runs `f` on the caller's body; `None` if it is empty (or gone).
    fn with_body<R>(&self, f: impl FnOnce(&mut CallerBody) -> R) -> Option<R> {
        let body = self.in_flight.body.as_ref()?;
        // Uncontended: only the connection's task touches it.
        let mut guard = body.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_mut().map(f)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.look();
        let polled = self
            .with_body(|b| Pin::new(b).poll_frame(cx))
            .unwrap_or(Poll::Ready(None));
        self.in_flight.stamp(polled.is_pending());
        match &polled {
            Poll::Ready(None) => self.ended(),
            Poll::Ready(Some(Err(_))) => self.in_flight.body_failed.store(true, Ordering::Release),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.look();
        let end = self.with_body(|b| b.is_end_stream()).unwrap_or(true);
        if end {
            self.ended();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.look();
        self.with_body(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if self.in_flight.taken.load(Ordering::Relaxed) == 0 {
            self.in_flight.never_sent.store(true, Ordering::Release);
        }
        // The caller's body goes with hyper's handle on it, as it would
        // unwrapped, not with the request's future.
        if let Some(body) = &self.in_flight.body {
            let taken = body.lock().unwrap_or_else(PoisonError::into_inner).take();
            drop(taken);
        }
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("seen", &(self.in_flight.taken.load(Ordering::Relaxed) != 0))
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// The request a connection's task took during its current poll, with
    /// that task, waiting for the connection's next write. One slot is
    /// enough: an HTTP/1 connection takes a request and writes it before
    /// it takes another, and the entry names its task, so whatever another
    /// task left here is stale and is dropped unclaimed (that request is
    /// bound by its response). Tasks interleaved on one thread (a
    /// `LocalSet`, `block_in_place`) can only make a claim miss, never
    /// bind the wrong connection.
    static TAKEN: Cell<Option<(tokio::task::Id, Arc<InFlight>)>> = const { Cell::new(None) };
}

/// A connection's task took `in_flight`: leaves it for that connection to
/// claim in the same poll.
fn taken(in_flight: &Arc<InFlight>) {
    let Some(task) = tokio::task::try_id() else {
        return;
    };
    drop(TAKEN.replace(Some((task, in_flight.clone()))));
}

/// Called by a connection's IO on every write: binds to `conn` the
/// request its own task just took. One thread-local read otherwise.
#[inline]
pub(crate) fn bind_taken(conn: &Arc<ConnShared>) {
    if let Some((task, in_flight)) = TAKEN.take() {
        claim(conn, task, &in_flight);
    }
}

#[cold]
fn claim(conn: &Arc<ConnShared>, task: tokio::task::Id, in_flight: &InFlight) {
    if tokio::task::try_id() == Some(task) {
        in_flight.bind(conn);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body::Body;
    use http_body_util::{BodyExt, Empty};
    use tokio::time::Instant;

    use super::{InFlight, Progress, RequestBody};
    use crate::config::Config;
    use crate::conn::{HostState, Hosts};

    fn host() -> Arc<HostState> {
        let hosts = Hosts::new(None, &Config::default());
        hosts.get(false, &"example.test".parse().unwrap())
    }

    /// A request with an (empty, but boxed) caller body.
    fn with_caller_body(host: Arc<HostState>, created: Instant) -> Arc<InFlight> {
        let inner = Empty::<Bytes>::new().map_err(Into::into).boxed_unsync();
        InFlight::new(host, created, false, Some(inner))
    }

    fn body(in_flight: &Arc<InFlight>) -> RequestBody {
        RequestBody::new(in_flight.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_look_at_the_body_marks_the_request_sent_once() {
        let host = host();
        let created = Instant::now();
        let in_flight = with_caller_body(host.clone(), created);
        let body = body(&in_flight);
        in_flight.start_waiting();
        assert_eq!(host.waiting.load(Ordering::Relaxed), 1);
        assert_eq!(in_flight.progress(), Progress::Unsent);

        tokio::time::advance(Duration::from_millis(40)).await;
        assert!(body.is_end_stream(), "the caller's body answers as before");
        tokio::time::advance(Duration::from_millis(10)).await;
        let _ = body.size_hint();
        assert_eq!(
            in_flight.progress(),
            Progress::At(created + Duration::from_millis(40)),
            "the first look counts, not the later ones"
        );
        assert_eq!(host.waiting.load(Ordering::Relaxed), 0);
        in_flight.stop_waiting();
        assert_eq!(host.waiting.load(Ordering::Relaxed), 0, "not counted twice");
        assert!(
            in_flight.handed_over(),
            "an empty body is over as soon as hyper asks"
        );
        drop(body);
        assert!(in_flight.may_have_reached_server(), "it was looked at");
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_body_needs_no_box_and_reports_like_one() {
        let in_flight = InFlight::new(host(), Instant::now(), false, None);
        in_flight.start_waiting();
        let mut body = RequestBody::new(in_flight.clone());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert_eq!(in_flight.progress(), Progress::At(in_flight.created));
        assert!(body.is_end_stream());
        assert!(in_flight.handed_over());
        assert!(body.frame().await.is_none());
        drop(body);
        assert!(in_flight.may_have_reached_server());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_dropped_unseen_was_never_sent() {
        let host = host();
        let in_flight = with_caller_body(host.clone(), Instant::now());
        let unseen = body(&in_flight);
        // Never polled: nothing counted, nothing to undo.
        in_flight.stop_waiting();
        assert_eq!(host.waiting.load(Ordering::Relaxed), 0);
        assert!(
            in_flight.may_have_reached_server(),
            "alive: it might yet be sent"
        );
        drop(unseen);
        assert!(!in_flight.may_have_reached_server());

        // Given up while waiting, then looked at by a connection that had
        // already taken it: it may have been sent, and counts once.
        let in_flight = with_caller_body(host.clone(), Instant::now());
        let late = body(&in_flight);
        in_flight.start_waiting();
        in_flight.stop_waiting();
        assert_eq!(host.waiting.load(Ordering::Relaxed), 0);
        let _ = late.is_end_stream();
        assert_eq!(host.waiting.load(Ordering::Relaxed), 0);
        drop(late);
        assert!(in_flight.may_have_reached_server());
    }

    #[tokio::test(start_paused = true)]
    async fn each_frame_moves_the_progress_and_a_pending_caller_body_pauses_it() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let created = Instant::now();
        let chan = Chan(rx).map_err(Into::into).boxed_unsync();
        let in_flight = InFlight::new(host(), created, false, Some(chan));
        in_flight.start_waiting();
        let mut body = RequestBody::new(in_flight.clone());
        assert!(!body.is_end_stream());
        assert!(!in_flight.handed_over(), "the body is still streaming");
        tokio::time::advance(Duration::from_millis(5)).await;
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        assert!(body.frame().await.is_some());
        assert_eq!(
            in_flight.progress(),
            Progress::At(created + Duration::from_millis(5))
        );
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(
            std::pin::Pin::new(&mut body)
                .poll_frame(&mut cx)
                .is_pending()
        );
        assert_eq!(in_flight.progress(), Progress::CallerPending);
        tokio::time::advance(Duration::from_millis(5)).await;
        drop(tx);
        assert!(!in_flight.handed_over());
        assert!(body.frame().await.is_none());
        assert!(in_flight.handed_over(), "the end of the body was taken");
        assert_eq!(
            in_flight.progress(),
            Progress::At(created + Duration::from_millis(10))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_callers_body_goes_with_hypers_handle_not_with_the_request() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let chan = Chan(rx).map_err(Into::into).boxed_unsync();
        let in_flight = InFlight::new(host(), Instant::now(), false, Some(chan));
        let body = RequestBody::new(in_flight.clone());
        assert!(!body.is_end_stream());
        assert!(!tx.is_closed());
        drop(body);
        assert!(
            tx.is_closed(),
            "a streaming upload learns at once that hyper gave up on it"
        );
        assert!(in_flight.may_have_reached_server());
    }

    /// Records pool events in order; `acquire_finished_at` dawdles after
    /// saying it started, to widen a race.
    #[derive(Debug)]
    struct Dawdling {
        events: std::sync::Mutex<Vec<&'static str>>,
        entered: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    }

    impl steadfast_core::pool::HostObserver for Dawdling {
        fn acquire_started(&self) {}
        fn acquire_finished(&self, _: Duration, _: steadfast_core::pool::Acquired) {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                entered.send(()).unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
            self.events.lock().unwrap().push("acquired");
        }
        fn connection_released(&self, _: steadfast_core::pool::ConnectionId, _: Duration) {
            self.events.lock().unwrap().push("released");
        }
    }

    /// Hands out the one `Dawdling` for every host.
    #[derive(Debug)]
    struct Pool(Arc<Dawdling>);

    impl steadfast_core::pool::PoolObserver for Pool {
        fn host(&self, _: &str) -> Arc<dyn steadfast_core::pool::HostObserver> {
            self.0.clone()
        }
    }

    #[test]
    fn a_cancellation_racing_the_bind_reports_the_release_after_the_acquisition() {
        let (tx, rx) = std::sync::mpsc::channel();
        let observer = Arc::new(Dawdling {
            events: std::sync::Mutex::new(Vec::new()),
            entered: std::sync::Mutex::new(Some(tx)),
        });
        let hosts = Hosts::new(Some(Arc::new(Pool(observer.clone()))), &Config::default());
        let host = hosts.get(false, &"example.test".parse().unwrap());
        let conn = crate::conn::ConnShared::for_test(host.clone(), 1);
        let in_flight = InFlight::new(host, Instant::now(), true, None);
        in_flight.start_waiting();
        in_flight.start_acquire();

        // The connection's task binds on one thread; the caller cancels on
        // another while the acquisition is being reported.
        let binder = {
            let in_flight = in_flight.clone();
            std::thread::spawn(move || in_flight.bind(&conn))
        };
        rx.recv().unwrap();
        drop(in_flight.settle(steadfast_core::pool::Acquired::Cancelled));
        binder.join().unwrap();
        assert_eq!(
            *observer.events.lock().unwrap(),
            ["acquired", "released"],
            "a release reported before its acquisition leaves the pool's books wrong"
        );
    }

    /// A body fed through a channel, one data frame per message.
    struct Chan(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Chan {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
        }
    }
}
