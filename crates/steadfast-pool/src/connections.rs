//! Per-connection tracking: which connections are in use, since when, and
//! how many requests each served.
//!
//! A small sharded map keyed by [`ConnectionId`]. A request touches one
//! shard twice (acquire, release), each time for a few nanoseconds under an
//! uncontended lock; connections are spread over the shards by id, so
//! concurrent requests on different connections rarely meet.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use steadfast_core::pool::ConnectionId;
use tokio::time::Instant;

const SHARDS: usize = 8;

/// What is known about one live connection.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Slot {
    /// When the connection last went from idle to in use; `None` when idle.
    pub(crate) busy_since: Option<Instant>,
    /// Requests using it now (more than one only on multiplexed HTTP/2).
    pub(crate) in_flight: u32,
    /// Requests it has served.
    pub(crate) requests: u64,
    /// `connection_opened` was seen. A slot created by an acquire that raced
    /// the close of its connection is dropped at release instead of lingering.
    pub(crate) opened: bool,
    /// The leak detector already reported this busy period.
    pub(crate) reported: bool,
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
        if slot.in_flight == 0 {
            slot.busy_since = Some(now);
            slot.reported = false;
        }
        slot.in_flight = slot.in_flight.saturating_add(1);
        slot.requests += 1;
    }

    #[inline]
    pub(crate) fn released(&self, id: ConnectionId) {
        let mut shard = self.shard(id);
        if let Some(slot) = shard.get_mut(&id.0) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            if slot.in_flight == 0 {
                slot.busy_since = None;
                if !slot.opened {
                    shard.remove(&id.0);
                }
            }
        }
    }

    /// Forgets the connection; returns the requests it served.
    pub(crate) fn closed(&self, id: ConnectionId) -> Option<u64> {
        self.shard(id).remove(&id.0).map(|slot| slot.requests)
    }

    /// Calls `f` for every connection in use, one shard locked at a time.
    pub(crate) fn for_each_busy(&self, mut f: impl FnMut(ConnectionId, &mut Slot)) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (&id, slot) in shard.iter_mut() {
                if slot.in_flight > 0 {
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

    #[tokio::test(start_paused = true)]
    async fn tracks_busy_periods_and_requests() {
        let t = ConnectionTable::new();
        let id = ConnectionId(7);
        t.opened(id);
        let start = Instant::now();
        t.acquired(id, start);
        t.acquired(id, start + std::time::Duration::from_secs(1));
        let mut seen = Vec::new();
        t.for_each_busy(|id, slot| seen.push((id, slot.in_flight, slot.busy_since)));
        assert_eq!(seen, vec![(id, 2, Some(start))]);
        t.released(id);
        t.released(id);
        let mut busy = 0;
        t.for_each_busy(|_, _| busy += 1);
        assert_eq!(busy, 0);
        assert_eq!(t.closed(id), Some(2));
        assert_eq!(t.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_acquire_racing_the_close_does_not_leave_a_slot_behind() {
        let t = ConnectionTable::new();
        let id = ConnectionId(3);
        t.opened(id);
        assert_eq!(t.closed(id), Some(0));
        t.acquired(id, Instant::now());
        assert_eq!(t.len(), 1);
        t.released(id);
        assert_eq!(t.len(), 0);
        // A release for a connection never seen is ignored.
        t.released(ConnectionId(99));
        assert_eq!(t.len(), 0);
    }
}
