//! Shared helpers for the comparison benchmarks.
