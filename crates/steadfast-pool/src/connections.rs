//! Per-connection tracking: which connections are in use, by which
//! requests since when, and how many requests each served.
//!
//! Ages are per request, not per connection: a multiplexed HTTP/2
//! connection can stay busy for hours with every request on it short, and
//! only a request that has held it past the threshold is a leak. The core
//! protocol does not name the request in a release, so a release retires
//! the in-flight request whose start best matches `now − held` (exact up to
//! the few nanoseconds between the transport's clock read and ours; a
//! near-tie can only swap two requests that started together).
//!
//! A small sharded map keyed by [`ConnectionId`]. A request touches one
//! shard twice (acquire, release), each time for a few nanoseconds under an
//! uncontended lock; connections are spread over the shards by id, so
//! concurrent requests on different connections rarely meet.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use steadfast_core::pool::ConnectionId;
use tokio::time::Instant;

const SHARDS: usize = 8;

/// What is known about one live connection.
#[derive(Debug, Default, Clone)]
pub(crate) struct Slot {
    /// When each request using it now acquired it (more than one only on
    /// multiplexed HTTP/2). The vector keeps its capacity across requests,
    /// so a connection allocates once, for its highest concurrency.
    started: Vec<Instant>,
    /// Requests it has served.
    pub(crate) requests: u64,
    /// `connection_opened` was seen. A slot created by an acquire that raced
    /// the close of its connection is dropped at release instead of lingering.
    pub(crate) opened: bool,
    /// The start of the request the leak detector last reported, so each
    /// held request is reported once.
    pub(crate) reported: Option<Instant>,
}

impl Slot {
    /// Requests using the connection now.
    pub(crate) fn in_flight(&self) -> u32 {
        u32::try_from(self.started.len()).unwrap_or(u32::MAX)
    }

    /// When the longest-running request using it started.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.started.iter().min().copied()
    }
}

#[derive(Debug)]
pub(crate) struct ConnectionTable {
    shards: [Mutex<HashMap<u64, Slot, BuildHasherDefault<IdHasher>>>; SHARDS],
}

impl ConnectionTable {
    pub(crate) fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
        }
    }

    #[inline]
    fn shard(
        &self,
        id: ConnectionId,
    ) -> MutexGuard<'_, HashMap<u64, Slot, BuildHasherDefault<IdHasher>>> {
        // Nothing in a critical section can panic half-way through an update,
        // so a poisoned shard is still consistent.
        self.shards[(id.0 % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn opened(&self, id: ConnectionId) {
        self.shard(id).entry(id.0).or_default().opened = true;
    }

    #[inline]
    pub(crate) fn acquired(&self, id: ConnectionId, now: Instant) {
        let mut shard = self.shard(id);
        let slot = shard.entry(id.0).or_default();
        slot.started.push(now);
        slot.requests += 1;
    }

    /// A request that held `id` for `held` gave it back at `now()`. The
    /// clock is read only when several requests share the connection
    /// (HTTP/2), to tell which one ended; with one, it is that one.
    #[inline]
    pub(crate) fn released(&self, id: ConnectionId, held: Duration, now: impl FnOnce() -> Instant) {
        let mut shard = self.shard(id);
        let Some(slot) = shard.get_mut(&id.0) else {
            // Closed while busy: `closed` already forgot it.
            return;
        };
        let closest = if slot.started.len() <= 1 {
            slot.started.first().map(|_| 0)
        } else {
            let now = now();
            let start = now.checked_sub(held).unwrap_or(now);
            let distance = |t: &Instant| {
                if *t > start { *t - start } else { start - *t }
            };
            slot.started
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| distance(t))
                .map(|(i, _)| i)
        };
        let Some(i) = closest else {
            return;
        };
        slot.started.swap_remove(i);
        if slot.started.is_empty() && !slot.opened {
            shard.remove(&id.0);
        }
    }

    /// Forgets the connection; returns the requests it served.
    pub(crate) fn closed(&self, id: ConnectionId) -> Option<u64> {
        self.shard(id).remove(&id.0).map(|slot| slot.requests)
    }

    /// Connections serving at least one request now, one shard locked at
    /// a time.
    pub(crate) fn busy(&self) -> u64 {
        let mut busy = 0;
        self.for_each_busy(|_, _| busy += 1);
        busy
    }

    /// Calls `f` for every connection in use, one shard locked at a time.
    pub(crate) fn for_each_busy(&self, mut f: impl FnMut(ConnectionId, &mut Slot)) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (&id, slot) in shard.iter_mut() {
                if !slot.started.is_empty() {
                    f(ConnectionId(id), slot);
                }
            }
        }
    }

    /// Live connections tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// Connection ids are small sequential integers: a Fibonacci multiply
/// spreads them over the hash's high bits, which hashbrown uses for its
/// control bytes, for a fraction of SipHash's cost.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn busy(t: &ConnectionTable) -> Vec<(ConnectionId, u32, Option<Instant>)> {
        let mut seen = Vec::new();
        t.for_each_busy(|id, slot| seen.push((id, slot.in_flight(), slot.oldest())));
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn tracks_busy_periods_and_requests() {
        let t = ConnectionTable::new();
        let id = ConnectionId(7);
        t.opened(id);
        let start = Instant::now();
        t.acquired(id, start);
        assert_eq!(t.busy(), 1);
        t.acquired(id, start + SEC);
        assert_eq!(busy(&t), vec![(id, 2, Some(start))]);
        assert_eq!(t.busy(), 1, "one connection, however many requests");
        t.released(id, SEC, || start + 2 * SEC);
        assert_eq!(t.busy(), 1);
        t.released(id, 2 * SEC, || start + 2 * SEC);
        assert_eq!(busy(&t), vec![]);
        assert_eq!(t.busy(), 0);
        assert_eq!(t.closed(id), Some(2));
        assert_eq!(t.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_retires_the_request_it_belongs_to() {
        // HTTP/2: one stream held since t0, short ones come and go around
        // it. The connection never goes idle, yet its oldest request stays
        // the held one, and the short ones do not age.
        let t = ConnectionTable::new();
        let id = ConnectionId(1);
        t.opened(id);
        let t0 = Instant::now();
        t.acquired(id, t0);
        for i in 1..=100 {
            let start = t0 + i * SEC;
            t.acquired(id, start);
            assert_eq!(busy(&t), vec![(id, 2, Some(t0))]);
            t.released(id, SEC / 2, || start + SEC / 2);
        }
        assert_eq!(busy(&t), vec![(id, 1, Some(t0))]);
        // Overlapping short requests, released out of order.
        let a = t0 + 200 * SEC;
        t.acquired(id, a);
        t.acquired(id, a + SEC);
        t.released(id, SEC, || a + 2 * SEC); // the second one
        assert_eq!(busy(&t), vec![(id, 2, Some(t0))]);
        t.released(id, 300 * SEC, || t0 + 300 * SEC); // the held one
        assert_eq!(busy(&t), vec![(id, 1, Some(a))]);
        assert_eq!(t.closed(id), Some(103));
        assert_eq!(
            t.busy(),
            0,
            "a connection closed while busy is busy no more"
        );
        // A release after the close brings nothing back.
        t.released(id, SEC, || a + SEC);
        assert_eq!(t.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_acquire_racing_the_close_does_not_leave_a_slot_behind() {
        let t = ConnectionTable::new();
        let id = ConnectionId(3);
        t.opened(id);
        assert_eq!(t.closed(id), Some(0));
        let now = Instant::now();
        t.acquired(id, now);
        assert_eq!(t.len(), 1);
        t.released(id, Duration::ZERO, || now);
        assert_eq!(t.len(), 0);
        // A release for a connection never seen is ignored.
        t.released(ConnectionId(99), SEC, || now);
        assert_eq!(t.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_request_is_retired_without_reading_the_clock() {
        let t = ConnectionTable::new();
        let id = ConnectionId(4);
        t.opened(id);
        t.acquired(id, Instant::now());
        let unread = || -> Instant { panic!("the clock was read for a lone request") };
        t.released(id, SEC, unread);
        assert_eq!(t.busy(), 0);
        // Two on one connection (HTTP/2): the clock tells them apart.
        let t0 = Instant::now();
        t.acquired(id, t0);
        t.acquired(id, t0 + SEC);
        let mut read = false;
        let now = || {
            read = true;
            t0 + 3 * SEC
        };
        t.released(id, 2 * SEC, now);
        assert!(read);
        assert_eq!(
            busy(&t),
            vec![(id, 1, Some(t0))],
            "the one that started at t0 + 1 s retired"
        );
    }
}
