//! The atomics the retry budget's shared state is built from: std's, or
//! loom's under `--cfg loom`, so that `tests/loom.rs` can explore every
//! interleaving of its hand-rolled compare-and-swap loops (see the README's
//! Thread safety section for the command).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU64;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicU64;
