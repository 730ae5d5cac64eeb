//! The leak detector: finds connections that a request took and never gave
//! back (a response body held unread, a guard forgotten, a cancelled task
//! that stranded its connection).
//!
//! It looks for two things, on demand ([`LeakDetector::check`]) or from a
//! watchdog task the caller owns ([`LeakDetector::spawn_watchdog`]):
//!
//! - **held too long**: a request holding its connection for at least the
//!   threshold (needs per-connection tracking, on by default). Reported with
//!   its host, connection id and age. Ages are per request: an HTTP/2
//!   connection that stays busy because short requests keep coming is not
//!   a leak, one stream held past the threshold on it is.
//! - **stuck**: a host whose requests in flight stayed above zero for a
//!   whole quiescence period during which no request started or took a
//!   connection. Busy hosts are never stuck (a new request, or one that
//!   waited and got its connection, restarts the period), so this only
//!   fires when the client has gone quiet and requests are still out: the
//!   signature of a leak. Works without per-connection tracking.
//!
//! The two agree by default ([`DEFAULT_QUIESCENCE`] equals
//! [`DEFAULT_LEAK_THRESHOLD`]): a stuck host's requests all took their
//! connections before its quiet period, so a quiescence shorter than the threshold would call
//! a lone slow download "stuck" while the held check still deems its age
//! fine. Keep `quiescence >= threshold` unless you track no connections.
//!
//! [`DEFAULT_QUIESCENCE`]: crate::DEFAULT_QUIESCENCE
//! [`DEFAULT_LEAK_THRESHOLD`]: crate::DEFAULT_LEAK_THRESHOLD
//!
//! Each finding is logged once per episode with `tracing::warn!` and counted
//! in the host's `held_too_long_total` / `stuck_total`; every check's
//! [`LeakReport`] lists all current findings.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use steadfast_core::pool::ConnectionId;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{LeakConfig, LeakDetectorBuilder};
use crate::error::WatchdogError;
use crate::snapshot::Short;
use crate::stats::PoolStats;

/// Finds leaked connections in a [`PoolStats`]. Cheap to clone (a shared
/// handle).
///
/// ```
/// use std::time::Duration;
/// use steadfast_core::pool::{Acquired, ConnectionId, PoolObserver};
/// use steadfast_pool::{LeakDetector, PoolStats};
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), steadfast_pool::ConfigError> {
/// let stats = PoolStats::new();
/// let detector = LeakDetector::builder(stats.clone())
///     .threshold(Duration::from_secs(30))
///     .build()?;
///
/// let host = stats.host("http://127.0.0.1:8080");
/// host.connection_opened(ConnectionId(1));
/// host.acquire_started();
/// host.acquire_finished(Duration::ZERO, Acquired::New(ConnectionId(1)));
/// // ... and the response body is never read nor dropped.
///
/// tokio::time::advance(Duration::from_secs(31)).await;
/// let report = detector.check(Instant::now());
/// assert_eq!(report.held[0].connection, ConnectionId(1));
/// assert!(report.held[0].age >= Duration::from_secs(31));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LeakDetector {
    stats: Arc<PoolStats>,
    state: Arc<State>,
}

/// What a detector and its watchdog share. Not the stats: the watchdog
/// holds those weakly, so that it lives exactly as long as they do.
struct State {
    config: LeakConfig,
    quiet: Mutex<HashMap<Arc<str>, Quiet>>,
}

/// What the stuck check remembers of a host between checks.
#[derive(Clone, Copy)]
struct Quiet {
    last_started: u64,
    last_acquired: u64,
    since: Instant,
    reported: bool,
}

/// The longest interval [`LeakDetector::spawn_watchdog`] accepts: a year.
/// A tick further out could fall past the end of the clock's range.
pub const MAX_WATCHDOG_INTERVAL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

impl LeakDetector {
    /// A detector with the default threshold and quiescence period.
    pub fn new(stats: Arc<PoolStats>) -> Self {
        Self::from_config(stats, LeakConfig::default())
    }

    /// A detector with other settings.
    pub fn builder(stats: Arc<PoolStats>) -> LeakDetectorBuilder {
        LeakDetectorBuilder::new(stats)
    }

    pub(crate) fn from_config(stats: Arc<PoolStats>, config: LeakConfig) -> Self {
        Self {
            stats,
            state: Arc::new(State {
                config,
                quiet: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The settings this was built with.
    pub fn config(&self) -> LeakConfig {
        self.state.config
    }

    /// Scans every host once. Findings seen for the first time are logged
    /// (`tracing::warn!`) and counted; the report lists every current one.
    ///
    /// The stuck check compares with the previous call, so it needs calls
    /// spaced closer than the quiescence period.
    pub fn check(&self, now: Instant) -> LeakReport {
        self.state.check(&self.stats, now)
    }

    /// Runs [`check`](Self::check) every `interval` on the current Tokio
    /// runtime. The task is yours: abort the handle to stop it. It keeps
    /// running after this detector is dropped (so
    /// `LeakDetector::new(stats.clone()).spawn_watchdog(..)` works), and ends
    /// by itself at the first tick after the [`PoolStats`] is dropped: it
    /// holds them weakly, so it never keeps a dropped client's stats alive.
    /// It shares its findings' state with this detector and its clones, so a
    /// finding is logged and counted once whichever of them sees it first.
    ///
    /// A quarter of the threshold is a good interval: a leak is then
    /// reported at most 25 % late.
    pub fn spawn_watchdog(&self, interval: Duration) -> Result<JoinHandle<()>, WatchdogError> {
        if interval.is_zero() {
            return Err(WatchdogError::ZeroInterval);
        }
        if interval > MAX_WATCHDOG_INTERVAL {
            return Err(WatchdogError::IntervalTooLong);
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| WatchdogError::NoRuntime)?;
        let stats: Weak<PoolStats> = Arc::downgrade(&self.stats);
        let state = Arc::clone(&self.state);
        Ok(runtime.spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // Upgraded only for the scan: between ticks the stats are
                // free to go, and with them the watchdog.
                let Some(stats) = stats.upgrade() else {
                    return;
                };
                // The actual time, not the tick's: a late tick measures true ages.
                state.check(&stats, Instant::now());
            }
        }))
    }
}

impl State {
    fn check(&self, stats: &PoolStats, now: Instant) -> LeakReport {
        let mut report = LeakReport::default();
        let pool = stats.config().name.as_deref().unwrap_or("");
        let mut quiet = self.quiet.lock().unwrap_or_else(PoisonError::into_inner);
        for host in stats.hosts() {
            if let Some(table) = host.connections() {
                table.for_each_busy(|connection, slot| {
                    // Its longest-running request, not its busy period: an
                    // HTTP/2 connection busy for hours with short requests
                    // is healthy.
                    let Some(since) = slot.oldest() else { return };
                    let age = now.saturating_duration_since(since);
                    if age < self.config.threshold {
                        return;
                    }
                    let newly_detected = slot.reported != Some(since);
                    if newly_detected {
                        slot.reported = Some(since);
                        host.held_too_long
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(
                            pool.name = pool,
                            pool.host = host.key(),
                            connection.id = connection.0,
                            connection.age_ms = age.as_millis() as u64,
                            in_flight = slot.in_flight(),
                            "connection in use longer than the leak threshold: \
                             a response body held unread or never dropped?"
                        );
                    }
                    report.held.push(HeldConnection {
                        host: host.key().to_owned(),
                        connection,
                        age,
                        in_flight: slot.in_flight(),
                        newly_detected,
                    });
                });
            }

            // In use first, then the activity counter: an acquire in between
            // shows up as activity and restarts the quiet period.
            let (in_use, acquired) = host.holding();
            let started = host.acquires_started();
            let fresh = Quiet {
                last_started: started,
                last_acquired: acquired,
                since: now,
                reported: false,
            };
            let state = quiet.entry(host.key_arc().clone()).or_insert(fresh);
            // A request that waited for its connection since before the
            // period and took it during the period restarts it too: its
            // hold is younger than the period.
            if started != state.last_started || acquired != state.last_acquired || in_use == 0 {
                *state = fresh;
                continue;
            }
            let quiet_for = now.saturating_duration_since(state.since);
            if quiet_for < self.config.quiescence {
                continue;
            }
            let newly_detected = !state.reported;
            if newly_detected {
                state.reported = true;
                host.stuck
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    pool.name = pool,
                    pool.host = host.key(),
                    in_use,
                    quiet_for_ms = quiet_for.as_millis() as u64,
                    "connections still in use after a quiet period with no new request: leaked?"
                );
            }
            report.stuck.push(StuckHost {
                host: host.key().to_owned(),
                in_use,
                quiet_for,
                newly_detected,
            });
        }
        report
    }
}

impl fmt::Debug for LeakDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakDetector")
            .field("config", &self.state.config)
            .field("stats", &self.stats)
            .finish()
    }
}

/// The findings of one [`LeakDetector::check`].
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LeakReport {
    /// Connections in use past the threshold.
    pub held: Vec<HeldConnection>,
    /// Hosts whose in-use count stayed up through a quiet period.
    pub stuck: Vec<StuckHost>,
}

impl LeakReport {
    /// Nothing found.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.stuck.is_empty()
    }
}

/// A connection in use past the threshold.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HeldConnection {
    /// Its pool key.
    pub host: String,
    /// The connection.
    #[cfg_attr(feature = "serde", serde(with = "connection_id"))]
    pub connection: ConnectionId,
    /// How long its longest-running request has held it. Not how long the
    /// connection has been busy: a multiplexed HTTP/2 connection may never
    /// be idle while each of its requests is short.
    pub age: Duration,
    /// Requests using it (more than one only on HTTP/2).
    pub in_flight: u32,
    /// First report of this busy period (logged and counted now).
    pub newly_detected: bool,
}

/// A host with connections in use through a whole quiet period.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StuckHost {
    /// The pool key.
    pub host: String,
    /// Requests still holding a connection.
    pub in_use: u64,
    /// How long no request has started on this host while they were held
    /// (measured between checks, so at least this long).
    pub quiet_for: Duration,
    /// First report of this episode (logged and counted now).
    pub newly_detected: bool,
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no leaks");
        }
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let r = if first { Ok(()) } else { f.write_str("\n") };
            first = false;
            r
        };
        for h in &self.held {
            sep(f)?;
            write!(
                f,
                "{} {} in use for {} ({} request(s))",
                h.host,
                h.connection,
                Short(h.age),
                h.in_flight
            )?;
        }
        for s in &self.stuck {
            sep(f)?;
            write!(
                f,
                "{}: {} request(s) still in use after {} with no new request",
                s.host,
                s.in_use,
                Short(s.quiet_for)
            )?;
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
mod connection_id {
    use serde::{Deserialize, Deserializer, Serializer};
    use steadfast_core::pool::ConnectionId;

    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `with` signature
    pub(super) fn serialize<S: Serializer>(id: &ConnectionId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(id.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ConnectionId, D::Error> {
        u64::deserialize(d).map(ConnectionId)
    }
}
