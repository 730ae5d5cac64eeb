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
/// - **Never forgets what matters**: a breaker that anything else holds is
///   never evicted. A call in flight holds its breaker (its permit owns a
///   share of the `Arc`), so its result is never recorded into a breaker the
///   registry has already replaced; so does anyone keeping the `Arc` from
///   [`get`](Self::get) or [`get_or_create`](Self::get_or_create). A closed
///   breaker may be evicted, idle or least recently used. A half-open one
///   with probes out is kept (it has probes to judge), an isolated one too
///   (opened by hand), and so is an open one while its break lasts or while
///   it is in use. An open breaker unused for the idle timeout whose break
///   has ended is forgotten by the idle sweep (not to make room as least
///   recently used), and so is a half-open one unused for the idle timeout
///   with no probe out (its probe was cancelled, or traffic stopped
///   mid-stage): its key was never asked for again, and forgetting it
///   costs at most one call that goes out unguarded (and starts a fresh
///   breaker), where keeping it would hold its slot for ever, since only a
///   call moves such a breaker on. If every slot holds a breaker that must be kept, the new key's
///   requests pass untracked (counted in [`RegistrySnapshot::untracked`]).
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
    map: HashMap<Box<[u8]>, Entry, KeyState>,
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
                map: HashMap::with_hasher(KeyState::default()),
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
            now.saturating_duration_since(e.last_seen) < idle || !e.breaker.is_evictable(Some(now))
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
            .filter(|(_, e)| e.breaker.is_evictable(None))
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

    #[inline]
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

    #[inline]
    fn push(&mut self, s: &[u8]) {
        match self.stack.get_mut(self.len..self.len + s.len()) {
            Some(dst) if self.heap.is_none() => {
                dst.copy_from_slice(s);
                self.len += s.len();
            }
            _ => self.spill().extend_from_slice(s),
        }
    }

    /// Pushes `s` lowercased (ASCII) in the same pass as the copy.
    #[inline]
    fn push_lower(&mut self, s: &[u8]) {
        match self.stack.get_mut(self.len..self.len + s.len()) {
            Some(dst) if self.heap.is_none() => {
                if s.len() < 8 {
                    for (d, b) in dst.iter_mut().zip(s) {
                        *d = b.to_ascii_lowercase();
                    }
                } else {
                    let mut dst8 = dst.chunks_exact_mut(8);
                    for (d, c) in (&mut dst8).zip(s.chunks_exact(8)) {
                        d.copy_from_slice(&lower8(word_at(c, 0)).to_le_bytes());
                    }
                    // The last eight bytes again, overlapping: lowercasing
                    // twice is lowercasing once.
                    if !dst8.into_remainder().is_empty() {
                        let last = s.len() - 8;
                        dst[last..].copy_from_slice(&lower8(word_at(s, last)).to_le_bytes());
                    }
                }
                self.len += s.len();
            }
            _ => self.spill().extend(s.iter().map(u8::to_ascii_lowercase)),
        }
    }

    /// The heap buffer, holding what the stack held: for keys over 128 bytes.
    #[cold]
    fn spill(&mut self) -> &mut Vec<u8> {
        let stack = &self.stack[..self.len];
        self.heap.get_or_insert_with(|| {
            let mut h = Vec::with_capacity(2 * stack.len());
            h.extend_from_slice(stack);
            h
        })
    }

    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match &self.heap {
            Some(h) => h,
            None => &self.stack[..self.len],
        }
    }
}

/// Eight bytes lowercased (ASCII) at once: 0x20 is added to each byte in
/// `A..=Z`, found by two additions that cannot carry across bytes (their
/// high bits are masked off first, and bytes over 0x7f are left alone).
#[inline]
const fn lower8(word: u64) -> u64 {
    const ONES: u64 = u64::MAX / 0xff;
    let ascii = !word & (0x80 * ONES);
    let low7 = word & (0x7f * ONES);
    let at_least_a = low7 + (0x80 - b'A' as u64) * ONES;
    let past_z = low7 + (0x80 - b'Z' as u64 - 1) * ONES;
    word | ((at_least_a & !past_z & ascii) >> 2)
}

/// `scheme://host:port`, lowercased, default port filled in.
///
/// One pass over the authority, from its end (`http::uri::Authority::host`
/// and `port` would each search it again): the port's colon comes first,
/// unless an IPv6 literal's `]` does, then the userinfo's `@`, if any.
#[inline]
fn origin_key(uri: &Uri, out: &mut KeyBuf) {
    let Some(authority) = uri.authority() else {
        out.push(FALLBACK_KEY.as_bytes());
        return;
    };
    let a = authority.as_str().as_bytes();
    let (mut start, mut end) = (0, a.len());
    // Most authorities are a bare host: one word-at-a-time look for `:`
    // and `@` tells, and spares the byte loop.
    if contains_colon_or_at(a) {
        let mut port_seen = false;
        for (i, &b) in a.iter().enumerate().rev() {
            match b {
                b'@' => {
                    start = i + 1;
                    break;
                }
                b':' if !port_seen => (end, port_seen) = (i, true),
                b']' => port_seen = true,
                _ => {}
            }
        }
    }
    let host = &a[start..end];
    let port = a.get(end + 1..).filter(|p| !p.is_empty());

    // http and https, the schemes nearly every request has (`http` stores
    // them as an enum and prints them lowercase), skip the case-insensitive
    // compares and are pushed with their `://` at once.
    let default_port = match uri.scheme_str() {
        Some("https") => {
            out.push(b"https://");
            Some(443)
        }
        Some("http") => {
            out.push(b"http://");
            Some(80)
        }
        Some(s) => {
            out.push_lower(s.as_bytes());
            out.push(b"://");
            if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("ws") {
                Some(80)
            } else if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("wss") {
                Some(443)
            } else {
                None
            }
        }
        None => None,
    };
    out.push_lower(host);
    // Parsed and reprinted, so `:080` and `:80` are one key; a port out of
    // range reads as none, as `Uri::port_u16` has it.
    let port = match port.and_then(parse_port) {
        Some(port) => port,
        None => match default_port {
            Some(443) => return out.push(b":443"),
            Some(80) => return out.push(b":80"),
            Some(port) => port,
            None => return,
        },
    };
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

/// The eight bytes of `s` from `at`, little-endian.
#[inline]
fn word_at(s: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"))
}

/// Whether `a` holds a `:` or an `@`, eight bytes at a time.
#[inline]
fn contains_colon_or_at(a: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 0xff;
    // High bit set in each byte of `word` equal to `byte`, maybe in some
    // bytes above one that is: exact as to whether there is one.
    let has = |word: u64, byte: u8| {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & (0x80 * ONES)
    };
    let hit = |word: u64| has(word, b':') | has(word, b'@') != 0;
    if a.len() < 8 {
        return a.iter().any(|&b| b == b':' || b == b'@');
    }
    let mut chunks = a.chunks_exact(8);
    if chunks.any(|c| hit(word_at(c, 0))) {
        return true;
    }
    !chunks.remainder().is_empty() && hit(word_at(a, a.len() - 8))
}

/// A port's digits as a `u16`, or `None` (not all digits, or out of range).
fn parse_port(p: &[u8]) -> Option<u16> {
    let mut n: u32 = 0;
    for &b in p {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u32::from(d);
        if n > u32::from(u16::MAX) {
            return None;
        }
    }
    u16::try_from(n).ok()
}

/// The registry's hasher: keys are short (an origin is 15 to 40 bytes), so
/// SipHash's setup and finalisation dominated a lookup. foldhash takes eight
/// bytes per step and is seeded per registry, so nobody can pick origins
/// that collide on purpose (and a registry holds at most `max_keys` keys
/// anyway).
type KeyState = foldhash::fast::RandomState;

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
        #[test]
        fn contains_colon_or_at_finds_them(a in "[a-z.:@\\[\\]]{0,40}") {
            let a = a.as_bytes();
            proptest::prop_assert_eq!(
                contains_colon_or_at(a),
                a.iter().any(|&b| b == b':' || b == b'@')
            );
        }

        #[test]
        fn lower8_lowercases_every_byte(word in proptest::prelude::any::<u64>()) {
            let want = word.to_le_bytes().map(|b| b.to_ascii_lowercase());
            proptest::prop_assert_eq!(lower8(word).to_le_bytes(), want);
        }

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
