//! The atomics behind the hand-rolled lock-free accounting: the direct
//! limiter's theoretical arrival time and the bulkhead's limit, debt and
//! queue counts. std's, or loom's under `--cfg loom`, so that
//! `tests/loom.rs` can explore every interleaving of them (see the README's
//! Thread safety section for the command). Statistics counters stay std's:
//! they guard nothing.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize};
