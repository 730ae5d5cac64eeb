//! The atomics and locks the breaker's shared state is built from: std's,
//! or loom's under `--cfg loom`, so that `tests/loom.rs` can explore every
//! interleaving of the hand-rolled lock-free window and the transitions that
//! clear it (see the README's Thread safety section for the command).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks `m`. Nothing panics while the breaker's locks are held; tolerate
/// poison anyway.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits a moment in a spin loop: a hint to the CPU for the first rounds,
/// then the rest of the time slice to whichever thread we are waiting for
/// (it may have been preempted). Under loom, every round yields, which is
/// how loom learns that this thread waits for another.
pub(crate) fn spin(round: &mut u32) {
    #[cfg(loom)]
    {
        let _ = round;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if *round < 64 {
            *round += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
