//! Breaker states and the events emitted when they change.

use std::fmt;
use std::time::Duration;

use crate::window::WindowCounts;

/// The state of a circuit breaker.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls flow; outcomes are recorded.
    Closed,
    /// Calls are rejected until the break elapses.
    Open,
    /// A few probes test the service; the rest are rejected.
    HalfOpen,
    /// Opened by hand ([`CircuitBreaker::isolate`](crate::CircuitBreaker::isolate)):
    /// every call is rejected until [`reset`](crate::CircuitBreaker::reset).
    Isolated,
}

impl State {
    pub(crate) const fn from_bits(bits: u64) -> Self {
        match bits & 3 {
            0 => Self::Closed,
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Isolated,
        }
    }

    pub(crate) const fn bits(self) -> u64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
            Self::Isolated => 3,
        }
    }

    /// The snake_case name used in telemetry: `closed`, `open`, `half_open`, `isolated`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::Isolated => "isolated",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reason {
    /// The failure rate of the window reached the threshold.
    FailureRate {
        /// The rate observed.
        rate: f64,
    },
    /// This many failures in a row.
    ConsecutiveFailures {
        /// The run length.
        failures: u32,
    },
    /// The slow-call rate of the window reached the threshold.
    SlowCallRate {
        /// The rate observed.
        rate: f64,
    },
    /// The break elapsed; probing starts.
    BreakElapsed,
    /// A half-open probe failed (or was slow).
    ProbeFailed,
    /// The failure or slow-call rate of a progressive stage crossed the threshold.
    StageFailed {
        /// The stage (0-based).
        stage: usize,
    },
    /// Enough probes succeeded (quick mode) or the last stage passed (progressive).
    Recovered,
    /// [`CircuitBreaker::isolate`](crate::CircuitBreaker::isolate) was called.
    Isolated,
    /// [`CircuitBreaker::reset`](crate::CircuitBreaker::reset) was called.
    Reset,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FailureRate { rate } => write!(f, "failure rate {:.1} %", rate * 100.0),
            Self::ConsecutiveFailures { failures } => write!(f, "{failures} consecutive failures"),
            Self::SlowCallRate { rate } => write!(f, "slow-call rate {:.1} %", rate * 100.0),
            Self::BreakElapsed => f.write_str("break elapsed"),
            Self::ProbeFailed => f.write_str("probe failed"),
            Self::StageFailed { stage } => write!(f, "half-open stage {stage} failed"),
            Self::Recovered => f.write_str("probes succeeded"),
            Self::Isolated => f.write_str("isolated by hand"),
            Self::Reset => f.write_str("reset by hand"),
        }
    }
}

/// One state change.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// For a transition to [`State::Open`]: how long the break lasts.
    pub break_duration: Option<Duration>,
    /// The window when the transition happened (before any reset).
    pub window: WindowCounts,
    /// The breaker's generation after this transition. It grows with every
    /// transition (and with [`reset`](crate::CircuitBreaker::reset) of a
    /// closed breaker, which is not one, so there may be gaps). Events are
    /// delivered after the breaker's lock is released, so two transitions
    /// made on different threads can reach a callback or a subscriber in
    /// the opposite order; order them by this.
    pub generation: u64,
}

/// What an [`on_transition`](crate::BreakerConfigBuilder::on_transition)
/// callback receives: the transition and which breaker made it.
///
/// Callbacks run on the thread that made the transition, after the lock is
/// released: racing transitions may arrive out of order. The latest
/// [`Transition::generation`] seen is the breaker's latest state.
#[derive(Clone, Copy, Debug)]
pub struct TransitionEvent<'a> {
    /// The breaker's configured name (empty when none was set).
    pub name: &'a str,
    /// The breaker's key (for a registry: `scheme://host:port`).
    pub key: &'a str,
    /// The transition.
    pub transition: Transition,
}

/// Emits the tracing event of a transition.
pub(crate) fn trace(event: &TransitionEvent<'_>) {
    let t = &event.transition;
    let event_name = match t.to {
        State::Closed => "circuit_closed",
        State::Open => "circuit_opened",
        State::HalfOpen => "circuit_half_opened",
        State::Isolated => "circuit_isolated",
    };
    let break_ms = t.break_duration.map(|d| d.as_millis() as u64);
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                resilience.strategy.name = event.name,
                resilience.circuit_breaker.id = event.key,
                resilience.event.name = event_name,
                resilience.circuit_breaker.state = t.to.as_str(),
                resilience.circuit_breaker.previous_state = t.from.as_str(),
                reason = %t.reason,
                break_duration_ms = break_ms,
                resilience.circuit_breaker.generation = t.generation,
                window.calls = t.window.calls,
                window.failures = t.window.failures,
                window.slow = t.window.slow,
                "circuit breaker {} → {} ({})",
                t.from,
                t.to,
                t.reason,
            )
        };
    }
    match t.to {
        State::Open | State::Isolated => emit!(warn),
        State::HalfOpen | State::Closed => emit!(info),
    }
}
