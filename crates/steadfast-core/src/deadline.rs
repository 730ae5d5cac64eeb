//! [`Deadline`]: one point in time by which a logical request must be done,
//! carried in the request's [`http::Extensions`] so every layer can read it.

use std::time::Duration;

use http::Request;
use tokio::time::Instant;

/// The instant by which a logical request (all attempts, all waits) must
/// complete.
///
/// Set it once, outermost; every layer below reads it from the request
/// extensions: retry does not sleep past it, a limiter does not queue past
/// it, an attempt timeout is cut to what remains. Time comes from
/// [`tokio::time::Instant`], so tests with paused time control it.
///
/// A tighter deadline always wins: [`Deadline::apply`] never extends one
/// that is already set.
///
/// ```
/// use std::time::Duration;
/// use steadfast_core::Deadline;
///
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
/// # rt.block_on(async {
/// let mut req = http::Request::new(());
/// Deadline::after(Duration::from_secs(60)).apply(&mut req);
/// Deadline::after(Duration::from_secs(90)).apply(&mut req); // looser: ignored
///
/// let d = Deadline::of(&req).unwrap();
/// assert!(d.remaining() <= Duration::from_secs(60));
/// assert!(!d.is_expired());
/// # });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline at `at`.
    pub const fn at(at: Instant) -> Self {
        Self { at }
    }

    /// A deadline `timeout` from now. Saturates far in the future instead of
    /// overflowing.
    pub fn after(timeout: Duration) -> Self {
        Self::after_from(Instant::now(), timeout)
    }

    /// A deadline `timeout` after `now` (pure form of [`Deadline::after`]).
    pub fn after_from(now: Instant, timeout: Duration) -> Self {
        // ~30 years: far enough to mean "never", small enough for every platform's Instant.
        const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
        let at = now
            .checked_add(timeout)
            .or_else(|| now.checked_add(FAR))
            .unwrap_or(now);
        Self { at }
    }

    /// The instant itself.
    pub const fn instant(self) -> Instant {
        self.at
    }

    /// Time left before the deadline, zero once it has passed.
    pub fn remaining(self) -> Duration {
        self.remaining_at(Instant::now())
    }

    /// Time left at `now` (pure form of [`Deadline::remaining`]).
    pub fn remaining_at(self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }

    /// `true` once the deadline has passed.
    pub fn is_expired(self) -> bool {
        self.is_expired_at(Instant::now())
    }

    /// `true` if the deadline has passed at `now`.
    pub fn is_expired_at(self, now: Instant) -> bool {
        now >= self.at
    }

    /// Whether waiting `wait` from `now` still leaves time before the deadline.
    pub fn allows_wait(self, now: Instant, wait: Duration) -> bool {
        wait < self.remaining_at(now)
    }

    /// The deadline carried by `req`, if any.
    pub fn of<B>(req: &Request<B>) -> Option<Self> {
        Self::from_extensions(req.extensions())
    }

    /// The deadline stored in `ext`, if any.
    pub fn from_extensions(ext: &http::Extensions) -> Option<Self> {
        ext.get::<Self>().copied()
    }

    /// Stores this deadline on `req` unless an earlier one is already there.
    /// Returns the deadline now in force.
    pub fn apply<B>(self, req: &mut Request<B>) -> Self {
        self.apply_to(req.extensions_mut())
    }

    /// Stores this deadline in `ext` unless an earlier one is already there.
    /// Returns the deadline now in force.
    pub fn apply_to(self, ext: &mut http::Extensions) -> Self {
        match ext.get::<Self>().copied() {
            Some(existing) if existing <= self => existing,
            _ => {
                ext.insert(self);
                self
            }
        }
    }

    /// `min(timeout, remaining)`: the time an operation bounded by `timeout`
    /// may take under this deadline. `None` deadline leaves `timeout` as is.
    pub fn clamp(deadline: Option<Self>, now: Instant, timeout: Duration) -> Duration {
        deadline.map_or(timeout, |d| timeout.min(d.remaining_at(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tighter_deadline_wins_and_expires_on_virtual_time() {
        let mut req = Request::new(());
        assert_eq!(Deadline::of(&req), None);
        let d = Deadline::after(Duration::from_secs(5)).apply(&mut req);
        let kept = Deadline::after(Duration::from_secs(10)).apply(&mut req);
        assert_eq!(kept, d);
        let tighter = Deadline::after(Duration::from_secs(1)).apply(&mut req);
        assert_eq!(Deadline::of(&req), Some(tighter));

        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(tighter.remaining(), Duration::from_millis(600));
        assert!(tighter.allows_wait(Instant::now(), Duration::from_millis(599)));
        assert!(!tighter.allows_wait(Instant::now(), Duration::from_millis(600)));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(tighter.is_expired());
        assert_eq!(tighter.remaining(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn huge_timeouts_saturate_instead_of_panicking() {
        let d = Deadline::after(Duration::MAX);
        assert!(d.remaining() > Duration::from_secs(86_400 * 365));
        let now = Instant::now();
        assert_eq!(
            Deadline::clamp(Some(d), now, Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(
            Deadline::clamp(None, now, Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }
}
