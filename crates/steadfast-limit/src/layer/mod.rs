//! The [`Transport`](steadfast_core::Transport) wrappers and their layers.
//!
//! | Layer | Pipeline position | Unit |
//! |---|---|---|
//! | [`ConcurrencyLimitLayer`] | outermost, above retry | one permit per logical request |
//! | [`AdaptiveLayer`] | where the concurrency limit goes | one permit per logical request |
//! | [`PacingLayer`] | below retry, above the rate limit | one slot per attempt |
//! | [`RateLimitLayer`] | below retry and pacing | one token per attempt |

mod adaptive;
mod concurrency;
mod pacing;
mod rate;

pub use adaptive::{Adaptive, AdaptiveLayer, AdaptiveSnapshot, OverloadClassifier};
pub use concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};
pub use pacing::{Pacing, PacingLayer};
pub use rate::{Keyed, RateLimit, RateLimitLayer, TokenSource};
