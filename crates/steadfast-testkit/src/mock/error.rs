//! What a [`MockTransport`](super::MockTransport) returns instead of a response.

use std::fmt;

use steadfast_core::BoxError;

/// Why a [`MockTransport`](super::MockTransport) request produced no response.
///
/// Scripted failures ([`Reply::connect_error`](super::Reply::connect_error),
/// [`Reply::timeout`](super::Reply::timeout), [`Reply::reset`](super::Reply::reset),
/// ...) arrive as [`MockError::Scripted`] with the real error as their
/// [`source`](std::error::Error::source), so
/// [`ErrorClass::of`](steadfast_core::ErrorClass::of) classifies them exactly
/// as it would the errors of a real transport.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// No registered route matches the request and no
    /// [fallback](super::MockTransport::fallback) is set.
    #[error("MockTransport has no route for `{request}`{}", UnmatchedHint(closest.as_ref()))]
    Unmatched {
        /// The request, as `METHOD uri`.
        request: String,
        /// The route that came closest to matching, and why it did not;
        /// `None` when no route is registered at all.
        closest: Option<ClosestRoute>,
    },
    /// A route matched, but its script is used up, and no later matching route
    /// has a reply left.
    #[error(
        "route #{index} `{route}` matched, but its script is used up after {calls} call(s); \
         script more with `.reply_times(n, ..)`, or end the script with `.reply(..)`, whose last reply repeats"
    )]
    Exhausted {
        /// Registration index of the route (0 for the first `mock.on(..)`).
        index: usize,
        /// The route, as displayed by [`Route`](super::Route).
        route: String,
        /// How many calls the route served before it ran out.
        calls: usize,
    },
    /// The reply was a scripted failure; the failure itself is the
    /// [`source`](std::error::Error::source).
    #[error("failure scripted by {origin}")]
    Scripted {
        /// Which reply produced it: `route #N `...`` or `the fallback reply`.
        origin: String,
        /// The scripted error: an `io::Error`, a
        /// [`TimeoutError`](steadfast_core::TimeoutError), a
        /// [`ConnectError`](steadfast_core::ConnectError) or a user error.
        #[source]
        source: BoxError,
    },
    /// The scripted reply cannot be turned into a response (an invalid status
    /// code, header or JSON value).
    #[error("{origin} scripted an invalid reply: {reason}")]
    InvalidReply {
        /// Which reply: `route #N `...`` or `the fallback reply`.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the request body failed before the request could be matched.
    #[error("MockTransport could not read the request body")]
    BodyRead(#[source] BoxError),
}

/// The registered route that came closest to matching an unmatched request.
///
/// Routes are scored by how many of their matchers passed; on a tie the one
/// with fewer failed matchers wins, then the first registered.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosestRoute {
    /// Registration index of the route.
    pub index: usize,
    /// The route, as displayed by [`Route`](super::Route).
    pub route: String,
    /// One line per failed matcher, e.g. ``query `page` was `2`, expected `1` ``.
    pub mismatches: Vec<String>,
}

impl fmt::Display for ClosestRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "closest route #{} `{}`: ", self.index, self.route)?;
        for (i, m) in self.mismatches.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(m)?;
        }
        Ok(())
    }
}

struct UnmatchedHint<'a>(Option<&'a ClosestRoute>);

impl fmt::Display for UnmatchedHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(closest) => write!(f, "; {closest}"),
            None => f.write_str(
                ": no routes are registered; add one with `mock.on(Route::get(..)).reply(..)` \
                 or serve every request with `mock.fallback(..)`",
            ),
        }
    }
}
