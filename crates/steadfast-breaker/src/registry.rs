//! [`BreakerRegistry`]: one breaker per key (by default per origin,
//! `scheme://host:port`), in bounded memory.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::{HeaderMap, Request, Uri};
use tokio::time::Instant;

use crate::config::BreakerConfig;
use crate::state::{BreakerSnapshot, CircuitBreaker};

/// Default bound on the number of keys a registry tracks: 1024.
pub const DEFAULT_MAX_KEYS: usize = 1024;
/// Default time after which an unused key may be forgotten: 5 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The key of requests whose URI has no host.
pub const FALLBACK_KEY: &str = "default";

type KeyFn = Arc<dyn Fn(&Uri, &HeaderMap) -> String + Send + Sync>;

/// One circuit breaker per key, created on first use from a shared
/// configuration.
///
/// - **Key**: by default the request's origin, `scheme://host:port` with the
///   host lowercased and the scheme's default port filled in
///   (`https://api.example.com:443`); requests without a host share
///   [`FALLBACK_KEY`]. Replace it with [`key_fn`](Self::key_fn). The default
///   key is built on the stack: looking up a known origin allocates nothing.
/// - **Bounded**: at most [`max_keys`](Self::max_keys) breakers. Keys unused
///   for [`idle_timeout`](Self::idle_timeout) are forgotten by a sweep that
///   runs when a new key arrives (at most every half idle timeout, or when
///   the registry is full) and by [`evict_idle`](Self::evict_idle). When
///   full, the least recently used evictable breaker makes room.
/// - **Never forgets what matters**: only a closed breaker that nothing else
///   holds may be evicted. A call in flight holds its breaker (its permit
///   owns a share of the `Arc`), so its result is never recorded into a
///   breaker the registry has already replaced; so does anyone keeping the
///   `Arc` from [`get`](Self::get) or [`get_or_create`](Self::get_or_create).
///   An open, half-open or isolated breaker is kept until it closes: it
///   remembers its trips (the grown break) and its probes. If every slot
///   holds a breaker that must be kept, the new key's requests pass
///   untracked (counted in [`RegistrySnapshot::untracked`]).
/// - **Cost**: a known key costs a read lock, one hash lookup and an `Arc`
///   clone per call; only new keys take the write lock.
pub struct BreakerRegistry {
    config: Arc<BreakerConfig>,
    key_fn: Option<KeyFn>,
    max_keys: usize,
    idle_timeout: Duration,
    inner: RwLock<Inner>,
    evictions: AtomicU64,
    untracked: AtomicU64,
}

struct Inner {
    map: HashMap<Box<[u8]>, Entry>,
    last_sweep: Option<Instant>,
}

struct Entry {
    breaker: Arc<CircuitBreaker>,
    last_seen: Instant,
}

/// Counters of a registry.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrySnapshot {
    /// Keys tracked now.
    pub keys: usize,
    /// Breakers forgotten (idle, or to make room) since the registry was made.
    pub evictions: u64,
    /// Calls that passed without a breaker because the registry was full of
    /// breakers it may not evict.
    pub untracked: u64,
}

impl BreakerRegistry {
    /// A registry whose breakers all use `config`, keyed by origin.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config: Arc::new(config),
            key_fn: None,
            max_keys: DEFAULT_MAX_KEYS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            inner: RwLock::new(Inner {
                map: HashMap::new(),
                last_sweep: None,
            }),
            evictions: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        }
    }

    /// Tracks at most `max` keys (default [`DEFAULT_MAX_KEYS`]).
    #[must_use]
    pub fn max_keys(mut self, max: NonZeroUsize) -> Self {
        self.max_keys = max.get();
        self
    }

    /// Forgets keys unused for `idle` (default [`DEFAULT_IDLE_TIMEOUT`]).
    #[must_use]
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Keys requests with `f` instead of by origin, e.g. per host and first
    /// path segment. Called once per request; it allocates a `String`.
    #[must_use]
    pub fn key_fn(
        mut self,
        f: impl Fn(&Uri, &HeaderMap) -> String + Send + Sync + 'static,
    ) -> Self {
        self.key_fn = Some(Arc::new(f));
        self
    }

    /// The configuration every breaker of this registry uses.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The key of `req`.
    pub fn key_of<B>(&self, req: &Request<B>) -> String {
        if let Some(f) = &self.key_fn {
            return f(req.uri(), req.headers());
        }
        let mut buf = KeyBuf::new();
        origin_key(req.uri(), &mut buf);
        String::from_utf8_lossy(buf.as_bytes()).into_owned()
    }

    /// The breaker of `req`, created if new; `None` when the registry is
    /// full of breakers it may not evict. `clock` is read only for a new key.
    pub fn breaker_for<B>(
        &self,
        req: &Request<B>,
        clock: impl FnOnce() -> Instant,
    ) -> Option<Arc<CircuitBreaker>> {
        match &self.key_fn {
            None => {
                let mut buf = KeyBuf::new();
                origin_key(req.uri(), &mut buf);
                self.lookup(buf.as_bytes(), clock)
            }
            Some(f) => self.lookup(f(req.uri(), req.headers()).as_bytes(), clock),
        }
    }

    /// The breaker of `key`, if tracked.
    pub fn get(&self, key: &str) -> Option<Arc<CircuitBreaker>> {
        self.read()
            .map
            .get(key.as_bytes())
            .map(|e| e.breaker.clone())
    }

    /// The breaker of `key`, created if new (see [`breaker_for`](Self::breaker_for)).
    #[inline]
    pub fn get_or_create(
        &self,
        key: &str,
        clock: impl FnOnce() -> Instant,
    ) -> Option<Arc<CircuitBreaker>> {
        self.lookup(key.as_bytes(), clock)
    }

    #[inline]
    fn lookup(&self, key: &[u8], clock: impl FnOnce() -> Instant) -> Option<Arc<CircuitBreaker>> {
        if let Some(e) = self.read().map.get(key) {
            e.breaker.touch();
            return Some(e.breaker.clone());
        }
        self.insert(key, clock())
    }

    #[cold]
    fn insert(&self, key: &[u8], now: Instant) -> Option<Arc<CircuitBreaker>> {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = inner.map.get(key) {
            return Some(e.breaker.clone());
        }
        let sweep_due = inner
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= self.idle_timeout / 2);
        if sweep_due || inner.map.len() >= self.max_keys {
            self.sweep(&mut inner, now);
        }
        if inner.map.len() >= self.max_keys && !self.evict_lru(&mut inner) {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                resilience.circuit_breaker.id = %String::from_utf8_lossy(key),
                max_keys = self.max_keys,
                "circuit breaker registry is full of open breakers; request passes untracked"
            );
            return None;
        }
        let name: Arc<str> = String::from_utf8_lossy(key).into();
        let breaker = Arc::new(CircuitBreaker::shared(self.config.clone(), name));
        inner.map.insert(
            key.into(),
            Entry {
                breaker: breaker.clone(),
                last_seen: now,
            },
        );
        Some(breaker)
    }

    /// Forgets the breakers unused for the idle timeout (as of `now`) that
    /// may be evicted; returns how many.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        self.sweep(&mut inner, now)
    }

    fn sweep(&self, inner: &mut Inner, now: Instant) -> usize {
        inner.last_sweep = Some(now);
        let before = inner.map.len();
        let idle = self.idle_timeout;
        inner.map.retain(|_, e| {
            if e.breaker.take_touched() {
                e.last_seen = now;
                return true;
            }
            now.saturating_duration_since(e.last_seen) < idle || !e.breaker.is_evictable()
        });
        let evicted = before - inner.map.len();
        self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        inner.map.shrink_to(self.max_keys);
        evicted
    }

    fn evict_lru(&self, inner: &mut Inner) -> bool {
        let victim = inner
            .map
            .iter()
            .filter(|(_, e)| e.breaker.is_evictable())
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                inner.map.remove(&k);
                self.evictions.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The number of keys tracked.
    pub fn len(&self) -> usize {
        self.read().map.len()
    }

    /// `true` when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The registry's counters.
    pub fn snapshot(&self) -> RegistrySnapshot {
        RegistrySnapshot {
            keys: self.len(),
            evictions: self.evictions.load(Ordering::Relaxed),
            untracked: self.untracked.load(Ordering::Relaxed),
        }
    }

    /// Every tracked key with its breaker's snapshot, sorted by key.
    pub fn breakers(&self) -> Vec<(Arc<str>, BreakerSnapshot)> {
        let mut all: Vec<_> = self
            .read()
            .map
            .values()
            .map(|e| (e.breaker.shared_key(), e.breaker.snapshot()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("config", &self.config)
            .field("custom_key_fn", &self.key_fn.is_some())
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &self.idle_timeout)
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

/// A key built on the stack when it fits, on the heap when it does not.
/// Bytes, not `str`: every piece pushed is ASCII (a URI is), and the map is
/// keyed by bytes, so the hot path never re-validates UTF-8.
struct KeyBuf {
    stack: [u8; 128],
    len: usize,
    heap: Option<Vec<u8>>,
}

impl KeyBuf {
    const fn new() -> Self {
        Self {
            stack: [0; 128],
            len: 0,
            heap: None,
        }
    }

    fn push(&mut self, s: &[u8]) {
        if let Some(h) = &mut self.heap {
            h.extend_from_slice(s);
        } else if self.len + s.len() <= self.stack.len() {
            self.stack[self.len..self.len + s.len()].copy_from_slice(s);
            self.len += s.len();
        } else {
            let mut h = Vec::with_capacity(self.len + s.len() + 16);
            h.extend_from_slice(&self.stack[..self.len]);
            h.extend_from_slice(s);
            self.heap = Some(h);
        }
    }

    /// Pushes `s` lowercased (ASCII), without allocating for it.
    fn push_lower(&mut self, s: &[u8]) {
        if !s.iter().any(u8::is_ascii_uppercase) {
            return self.push(s);
        }
        for chunk in s.chunks(32) {
            let mut lower = [0u8; 32];
            for (l, b) in lower.iter_mut().zip(chunk) {
                *l = b.to_ascii_lowercase();
            }
            self.push(&lower[..chunk.len()]);
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match &self.heap {
            Some(h) => h,
            None => &self.stack[..self.len],
        }
    }
}

/// `scheme://host:port`, lowercased, default port filled in.
///
/// One pass over the authority (`http::uri::Authority::host` and `port`
/// would each search it again).
fn origin_key(uri: &Uri, out: &mut KeyBuf) {
    let Some(authority) = uri.authority() else {
        out.push(FALLBACK_KEY.as_bytes());
        return;
    };
    let a = authority.as_str().as_bytes();
    // Skip userinfo; find the port's colon (after an IPv6 literal's `]`).
    let (mut start, mut colon, mut bracket) = (0, None, None);
    for (i, &b) in a.iter().enumerate() {
        match b {
            b'@' => (start, colon, bracket) = (i + 1, None, None),
            b':' => colon = Some(i),
            b']' => bracket = Some(i),
            _ => {}
        }
    }
    let colon = colon.filter(|&c| bracket.is_none_or(|b| c > b));
    let host = &a[start..colon.unwrap_or(a.len())];
    let port = colon.map(|c| &a[c + 1..]).filter(|p| !p.is_empty());

    let scheme = uri.scheme_str();
    if let Some(s) = scheme {
        out.push_lower(s.as_bytes());
        out.push(b"://");
    }
    out.push_lower(host);
    let default_port = || {
        let s = scheme?;
        if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("ws") {
            Some(80)
        } else if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("wss") {
            Some(443)
        } else {
            None
        }
    };
    let port = match port {
        // Parsed and reprinted, so `:080` and `:80` are one key; a port out
        // of range reads as none, as `Uri::port_u16` has it.
        Some(p) => std::str::from_utf8(p)
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
            .or_else(default_port),
        None => default_port(),
    };
    if let Some(port) = port {
        let mut digits = [b':'; 6];
        let mut n = port;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.push(&digits[i - 1..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uri: &str) -> String {
        let reg = BreakerRegistry::new(BreakerConfig::default());
        reg.key_of(&Request::get(uri).body(()).unwrap())
    }

    #[test]
    fn default_key_is_the_origin() {
        assert_eq!(
            key("https://API.Example.com/v1/users?x=1"),
            "https://api.example.com:443"
        );
        assert_eq!(key("http://api.example.com/"), "http://api.example.com:80");
        assert_eq!(
            key("http://api.example.com:8080/a"),
            "http://api.example.com:8080"
        );
        assert_eq!(key("HTTPS://[::1]:9/a"), "https://[::1]:9");
        assert_eq!(key("/relative/path"), FALLBACK_KEY);
        let long = format!("https://{}.example.com/", "a".repeat(200));
        assert_eq!(
            key(&long),
            format!("https://{}.example.com:443", "a".repeat(200))
        );
    }

    #[test]
    fn odd_authorities() {
        assert_eq!(key("http://user:pw@Host.Test:081/"), "http://host.test:81");
        assert_eq!(key("http://[::1]/"), "http://[::1]:80");
        assert_eq!(key("wss://h/"), "wss://h:443");
        assert_eq!(key("foo://h/"), "foo://h");
        assert_eq!(key("foo://h:7/"), "foo://h:7");
    }

    proptest::proptest! {
        /// The one-pass parser agrees with `http`'s own host and port.
        #[test]
        fn origin_key_matches_http_parsing(
            scheme in "(http|https|HTTP|Https|ws|wss|foo)",
            user in proptest::option::of("[a-z]{1,5}(:[a-z]{1,5})?"),
            host in "([a-zA-Z0-9-]{1,12}(\\.[a-zA-Z]{1,8}){0,3}|[0-9]{1,3}(\\.[0-9]{1,3}){3}|\\[[0-9a-fA-F:]{2,15}\\])",
            port in proptest::option::of(0u32..70_000),
            path in "(/[a-z]{0,5}){0,3}",
        ) {
            let user = user.map(|u| format!("{u}@")).unwrap_or_default();
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let Ok(uri) = format!("{scheme}://{user}{host}{port}{path}").parse::<Uri>() else {
                return Ok(());
            };
            let mut buf = KeyBuf::new();
            origin_key(&uri, &mut buf);
            let got = String::from_utf8(buf.as_bytes().to_vec()).unwrap();
            let scheme = uri.scheme_str().unwrap().to_ascii_lowercase();
            let port = uri.port_u16().or(match scheme.as_str() {
                "http" | "ws" => Some(80),
                "https" | "wss" => Some(443),
                _ => None,
            });
            let want = format!(
                "{scheme}://{}{}",
                uri.host().unwrap().to_ascii_lowercase(),
                port.map(|p| format!(":{p}")).unwrap_or_default()
            );
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn custom_key_fn() {
        let reg = BreakerRegistry::new(BreakerConfig::default())
            .key_fn(|uri, _| uri.path().split('/').nth(1).unwrap_or("").to_owned());
        assert_eq!(
            reg.key_of(&Request::get("http://h/orders/7").body(()).unwrap()),
            "orders"
        );
    }

    #[test]
    fn memory_stays_flat_under_many_keys() {
        let reg =
            BreakerRegistry::new(BreakerConfig::default()).max_keys(NonZeroUsize::new(64).unwrap());
        let t0 = Instant::now();
        for i in 0..20_000u64 {
            let now = t0 + Duration::from_millis(i);
            let b = reg
                .get_or_create(&format!("http://host-{i}:80"), || now)
                .unwrap();
            b.try_acquire(now).unwrap().record(
                now,
                steadfast_core::Outcome::Success,
                Duration::ZERO,
            );
        }
        assert_eq!(reg.len(), 64);
        assert_eq!(reg.snapshot().evictions, 20_000 - 64);
        let cap = reg.read().map.capacity();
        assert!(
            cap <= 4 * 64,
            "map capacity {cap} grew with the number of keys seen"
        );
        // The most recent keys are the ones kept.
        assert!(reg.get("http://host-19999:80").is_some());
        assert!(reg.get("http://host-0:80").is_none());
    }
}
