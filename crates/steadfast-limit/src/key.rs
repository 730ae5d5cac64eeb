//! How keyed policies pick a request's key: [`KeyFn`], [`ByHost`], [`HostKey`].

use std::fmt;
use std::hash::Hash;

use http::Request;
use http::uri::{Scheme, Uri};

/// Picks the key a keyed policy files a request under (host, API key,
/// tenant, ...).
///
/// Implemented by [`ByHost`] and by any `Fn(&Request<B>) -> K`:
///
/// ```
/// use steadfast_limit::KeyFn;
///
/// let by_api_key = |req: &http::Request<()>| {
///     req.headers().get("x-api-key").map(|v| v.as_bytes().to_vec())
/// };
/// let req = http::Request::builder().header("x-api-key", "k1").body(()).unwrap();
/// assert_eq!(by_api_key.key(&req), Some(b"k1".to_vec()));
/// ```
pub trait KeyFn<B>: Send + Sync + 'static {
    /// The key.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The key of `req`.
    fn key(&self, req: &Request<B>) -> Self::Key;
}

impl<B, K, F> KeyFn<B> for F
where
    F: Fn(&Request<B>) -> K + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;

    fn key(&self, req: &Request<B>) -> K {
        self(req)
    }
}

/// Keys requests by origin: scheme, host (case-insensitive) and port
/// (explicit or the scheme's default), as [`HostKey`]. The default of
/// [`crate::Pacing`], since a server's quota is usually per origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ByHost;

impl<B> KeyFn<B> for ByHost {
    type Key = HostKey;

    fn key(&self, req: &Request<B>) -> HostKey {
        HostKey::of(req.uri())
    }
}

/// An origin: scheme, lower-case host, port.
///
/// `https://API.example.com/x` and `https://api.example.com:443/y` have the
/// same key. A relative URI (no authority) has an empty host.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HostKey {
    scheme: Option<Scheme>,
    host: Box<str>,
    port: u16,
}

impl HostKey {
    /// The origin of `uri`.
    pub fn of(uri: &Uri) -> Self {
        let scheme = uri.scheme().cloned();
        let default_port = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("wss") => 443,
            Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("ws") => 80,
            _ => 0,
        };
        Self {
            scheme,
            host: uri.host().unwrap_or_default().to_ascii_lowercase().into(),
            port: uri.port_u16().unwrap_or(default_port),
        }
    }

    /// The host, lower-case.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (0 when neither given nor implied by the scheme).
    pub const fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.scheme {
            write!(f, "{s}://")?;
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uri: &str) -> HostKey {
        HostKey::of(&uri.parse().unwrap())
    }

    #[test]
    fn origins_normalise() {
        assert_eq!(
            key("https://API.example.com/a"),
            key("https://api.example.com:443/b?c")
        );
        assert_eq!(key("http://h/"), key("HTTP://h:80"));
        assert_ne!(key("http://h/"), key("https://h/"));
        assert_ne!(key("http://h:8080/"), key("http://h/"));
        assert_eq!(key("https://h:8443/").to_string(), "https://h:8443");
        assert_eq!(key("/relative").to_string(), ":0");
        assert_eq!(format!("{:?}", key("http://h")), "HostKey(http://h:80)");
    }
}
