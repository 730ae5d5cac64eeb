//! Per-host state (connection cap, observer) and the IO wrapper that every
//! connection lives in: it owns the host's semaphore permit and reports
//! `connection_closed` when hyper drops it.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use steadfast_core::pool::{ConnectionId, HostObserver, PoolObserver};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{Config, DrainConfig};

/// Transport-wide counters behind [`crate::HyperTransport::snapshot`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    pub(crate) pool_timeouts: AtomicU64,
    pub(crate) drains_started: AtomicU64,
    pub(crate) drains_succeeded: AtomicU64,
    pub(crate) drains_abandoned: AtomicU64,
}

/// Connection ids are numbered for the whole process, not per transport:
/// transports that share one pool observer (one `PoolStats` for a
/// client's several transports) must not report two connections as one.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

fn next_connection_id() -> ConnectionId {
    ConnectionId(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed))
}

/// Everything kept per pool key: the scheme and the authority, as
/// hyper-util's pool keys its connections.
pub(crate) struct HostState {
    /// `scheme://host[:port]`, for messages, tracing and observers: the
    /// port only when it is not the scheme's default (the transport strips
    /// an explicit `:80` or `:443`, see [`crate::transport`]). Any userinfo
    /// of the URI is left out: it would put credentials in logs.
    pub(crate) key: Box<str>,
    /// The transport's name ([`crate::Builder::name`]), for tracing.
    name: Option<Arc<str>>,
    /// `host[:port]`, for `ConnectError`; no userinfo either.
    pub(crate) server: Box<str>,
    /// The authority as the pool keys it (lowercase, userinfo included, as
    /// hyper-util's pool does), so the cap and the pool agree on a host.
    authority: Box<str>,
    /// One permit per open connection.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) max: usize,
    pub(crate) open: AtomicUsize,
    /// Requests waiting for a connection now. A connect that got its slot
    /// after every waiter was served (hyper-util finishes such connects in
    /// the background) gives the slot back instead of opening a connection
    /// nobody asked for.
    pub(crate) waiting: AtomicUsize,
    /// `None` without a pool observer: then nothing is timed or reported.
    pub(crate) observer: Option<Arc<dyn HostObserver>>,
    pub(crate) stats: Arc<Stats>,
    /// The transport's read timeout and body limit, kept here so the
    /// request futures and bodies need not carry them.
    pub(crate) read_timeout: Duration,
    pub(crate) max_body: Option<u64>,
    /// What an abandoned HTTP/1 response may cost to save its connection;
    /// `None` when draining is off, or every connection speaks HTTP/2.
    pub(crate) drain: Option<DrainConfig>,
    /// A connection to this host spoke HTTP/2 (or all do: prior knowledge).
    /// Its socket is driven by another task than the one that takes
    /// requests, so the pool events need hyper-util's capture there (see
    /// [`crate::request`]).
    pub(crate) h2: AtomicBool,
    https: bool,
}

impl fmt::Debug for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostState")
            .field("key", &self.key)
            .field("open", &self.open.load(Ordering::Relaxed))
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl HostState {
    /// The transport's name, if it has one; as `policy.name` in tracing events.
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Permits taken: connections open or being opened.
    pub(crate) fn permits_in_use(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}

/// `authority` without its `userinfo@`, if any: what error messages and
/// logs may show.
pub(crate) fn without_userinfo(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, server)| server)
}

/// Passes a precomputed hash through: the map's keys are already FNV
/// hashes of the pool keys.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than panic.
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a of the scheme and the ASCII-lowercased authority, in one pass
/// and without allocating. The keys are the hosts this client itself talks
/// to, so SipHash's flooding resistance buys nothing here, and the hash
/// runs on every request.
fn pool_key_hash(https: bool, authority: &str) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = (0xcbf2_9ce4_8422_2325 ^ u64::from(https)).wrapping_mul(PRIME);
    for &b in authority.as_bytes() {
        h = (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(PRIME);
    }
    h
}

/// [`pool_key_hash`] → the hosts with that hash (one, barring collisions).
/// Authorities compare case-insensitively, as hyper-util's pool compares
/// its keys, so the cap and the pool agree on what a host is.
type HostMap = HashMap<u64, Vec<Arc<HostState>>, BuildHasherDefault<PassThrough>>;

/// The per-host states of one transport. Entries live as long as the
/// transport: a few hundred bytes per distinct host, and observers are
/// asked once per key as the pool-hook protocol requires.
pub(crate) struct Hosts {
    /// The first host used: most transports talk to one API host, and
    /// this finds it without hashing or locking.
    first: OnceLock<Arc<HostState>>,
    map: RwLock<HostMap>,
    observer: Option<Arc<dyn PoolObserver>>,
    /// The host observer of each key, asked once: URLs that differ only in
    /// their userinfo are pooled (and capped) apart, as hyper-util pools
    /// them, but share one key. Locked only when a host state is created.
    observers: Mutex<HashMap<Box<str>, Arc<dyn HostObserver>>>,
    name: Option<Arc<str>>,
    max: usize,
    read_timeout: Duration,
    max_body: Option<u64>,
    drain: Option<DrainConfig>,
    /// Every connection speaks HTTP/2 (prior knowledge).
    h2: bool,
    pub(crate) stats: Arc<Stats>,
}

impl fmt::Debug for Hosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hosts")
            .field("hosts", &self.read().values().map(Vec::len).sum::<usize>())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Hosts {
    /// `observer: None` means no pool observer: no pool event is timed or reported.
    pub(crate) fn new(observer: Option<Arc<dyn PoolObserver>>, config: &Config) -> Self {
        Self {
            first: OnceLock::new(),
            map: RwLock::new(HostMap::default()),
            observer,
            observers: Mutex::new(HashMap::new()),
            name: config.name.clone(),
            max: config.max_connections_per_host,
            read_timeout: config.read_timeout,
            max_body: config.max_body,
            // With prior knowledge every connection speaks HTTP/2, where an
            // abandoned response costs only its stream.
            drain: config
                .drain_on_cancel
                .filter(|_| !config.http2_prior_knowledge),
            stats: Arc::new(Stats::default()),
            h2: config.http2_prior_knowledge,
        }
    }

    /// The state of `http://authority` (or `https://` when `https`), created on
    /// first use. The hot path is one pass over the authority, one read
    /// lock and one probe, without allocating.
    pub(crate) fn get(&self, https: bool, authority: &Authority) -> Arc<HostState> {
        let given = authority.as_str();
        // Stored lowercase: the exact comparison settles the usual case.
        let matches = |h: &&Arc<HostState>| {
            h.https == https && (*h.authority == *given || h.authority.eq_ignore_ascii_case(given))
        };
        if let Some(h) = self.first.get().filter(matches) {
            return h.clone();
        }
        let hash = pool_key_hash(https, given);
        if let Some(h) = self.read().get(&hash).and_then(|v| v.iter().find(matches)) {
            return h.clone();
        }
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = map.entry(hash).or_default();
        if let Some(h) = entry.iter().find(matches) {
            return h.clone();
        }
        let auth = given.to_ascii_lowercase();
        let server = without_userinfo(&auth);
        let scheme = if https { "https" } else { "http" };
        let key = format!("{scheme}://{server}");
        let observer = self.observer.as_ref().map(|o| {
            let mut observers = self
                .observers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            observers
                .entry(key.as_str().into())
                .or_insert_with(|| o.host(&key))
                .clone()
        });
        let host = Arc::new(HostState {
            key: key.into(),
            name: self.name.clone(),
            server: server.into(),
            authority: auth.into(),
            slots: Arc::new(Semaphore::new(self.max)),
            max: self.max,
            open: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            observer,
            stats: self.stats.clone(),
            read_timeout: self.read_timeout,
            max_body: self.max_body,
            drain: self.drain,
            h2: AtomicBool::new(self.h2),
            https,
        });
        entry.push(host.clone());
        let _ = self.first.set(host.clone());
        host
    }

    /// Sums `f` over every host.
    pub(crate) fn sum(&self, f: impl Fn(&HostState) -> usize) -> usize {
        self.read().values().flatten().map(|h| f(h)).sum()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HostMap> {
        // Nothing panics while holding the lock; recover rather than propagate if it ever did.
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

const IO_OK: u8 = 0;
const IO_READ_FAILED: u8 = 1;
const IO_WRITE_FAILED: u8 = 2;

/// What requests learn about the connection they were given.
pub(crate) struct ConnShared {
    pub(crate) id: ConnectionId,
    pub(crate) host: Arc<HostState>,
    remote_addr: Option<SocketAddr>,
    opened_at: Instant,
    /// Speaks HTTP/2: an abandoned response costs only its stream.
    pub(crate) h2: bool,
    /// Requests carried so far (counted at assignment with a pool observer,
    /// at the response head without); the first one counts as `Acquired::New`.
    uses: AtomicU64,
    /// Which direction of the IO failed first, if any.
    io_failure: AtomicU8,
}

impl fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnShared")
            .field("id", &self.id)
            .field("host", &self.host.key)
            .field("h2", &self.h2)
            .finish_non_exhaustive()
    }
}

impl ConnShared {
    /// A connection to `host` with no socket behind it.
    #[cfg(test)]
    pub(crate) fn for_test(host: Arc<HostState>, id: u64) -> Arc<Self> {
        Arc::new(Self {
            id: ConnectionId(id),
            host,
            remote_addr: None,
            opened_at: Instant::now(),
            h2: false,
            uses: AtomicU64::new(0),
            io_failure: AtomicU8::new(IO_OK),
        })
    }

    /// Counts one more request on this connection; `true` for the first.
    pub(crate) fn assign(&self) -> bool {
        self.uses.fetch_add(1, Ordering::Relaxed) == 0
    }

    /// `true` if writing to the socket failed (as opposed to reading).
    pub(crate) fn write_failed(&self) -> bool {
        self.io_failure.load(Ordering::Acquire) == IO_WRITE_FAILED
    }

    fn record_failure(&self, direction: u8) {
        let _ = self.io_failure.compare_exchange(
            IO_OK,
            direction,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}

/// The connection a response came over; in every response's extensions.
///
/// ```no_run
/// # async fn demo(t: steadfast_hyper::HyperTransport) -> Result<(), steadfast_hyper::HyperError> {
/// use steadfast_core::Transport;
/// use steadfast_hyper::ConnectionInfo;
///
/// let req = http::Request::get("http://127.0.0.1:8080/").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
/// let res = t.send(req).await?;
/// let conn = res.extensions().get::<ConnectionInfo>().unwrap();
/// println!("served by {} to {}", conn.id(), conn.host());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConnectionInfo(pub(crate) Arc<ConnShared>);

impl ConnectionInfo {
    /// The connection's id, as the pool observer saw it opened.
    pub fn id(&self) -> ConnectionId {
        self.0.id
    }

    /// The pool key, `scheme://host[:port]`: the port only when it is not
    /// the scheme's default, never any `user:password@` of the URL. The
    /// same key names the host to the pool observer and in
    /// [`crate::HyperError::host`].
    pub fn host(&self) -> &str {
        &self.0.host.key
    }

    /// The server's address, as connected.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.0.remote_addr
    }

    /// Requests this connection has carried so far, this one included.
    pub fn requests(&self) -> u64 {
        self.0.uses.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("id", &self.0.id)
            .field("host", &self.0.host.key)
            .field("remote_addr", &self.0.remote_addr)
            .field("requests", &self.requests())
            .finish()
    }
}

/// A socket, plain or TLS.
pub(crate) enum Stream {
    Tcp(TcpStream),
    #[cfg(feature = "rustls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tcp(s) => s,
            #[cfg(feature = "rustls")]
            Self::Tls(s) => s.get_ref().0,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            #[cfg(feature = "rustls")]
            Stream::Tls($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            #[cfg(feature = "rustls")]
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// One pooled connection's IO. Holds the host's semaphore permit for
/// exactly as long as hyper keeps the connection, so the per-host cap is
/// released when the connection closes, whatever happened to the request
/// that opened it.
pub(crate) struct Conn {
    io: TokioIo<Stream>,
    shared: Arc<ConnShared>,
    /// HTTP/1 with a pool observer: see [`Conn::claim_taken`].
    claims: bool,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.shared.id)
            .field("host", &self.shared.host.key)
            .field("h2", &self.shared.h2)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Wraps an established stream; reports `connection_opened`.
    pub(crate) fn open(
        stream: Stream,
        host: Arc<HostState>,
        permit: OwnedSemaphorePermit,
        h2: bool,
    ) -> Self {
        let id = next_connection_id();
        host.open.fetch_add(1, Ordering::Relaxed);
        host.stats
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        if let Some(o) = &host.observer {
            o.connection_opened(id);
        }
        tracing::debug!(
            policy.name = host.name(),
            network.connection.id = id.0,
            server.pool = %host.key,
            network.protocol.version = if h2 { "2" } else { "1.1" },
            "connection opened"
        );
        if h2 {
            host.h2.store(true, Ordering::Relaxed);
        }
        let claims = !h2 && host.observer.is_some();
        let remote_addr = stream.tcp().peer_addr().ok();
        Self {
            io: TokioIo::new(stream),
            shared: Arc::new(ConnShared {
                id,
                host,
                remote_addr,
                opened_at: Instant::now(),
                h2,
                uses: AtomicU64::new(0),
                io_failure: AtomicU8::new(IO_OK),
            }),
            claims,
            _permit: permit,
        }
    }

    /// With a pool observer, an HTTP/1 connection claims the request its
    /// task just took (see [`crate::request`]); an HTTP/2 socket runs in a
    /// task of its own. Writes only: a connection writes the request it
    /// took before it reads anything for it.
    #[inline]
    fn claim_taken(&self) {
        if self.claims {
            crate::request::bind_taken(&self.shared);
        }
    }

    #[inline]
    fn note<T>(&self, direction: u8, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = &r {
            self.shared.record_failure(direction);
        }
        r
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let host = &self.shared.host;
        let lifetime = self.shared.opened_at.elapsed();
        host.open.fetch_sub(1, Ordering::Relaxed);
        host.stats
            .connections_closed
            .fetch_add(1, Ordering::Relaxed);
        if let Some(o) = &host.observer {
            o.connection_closed(self.shared.id, lifetime);
        }
        tracing::debug!(
            policy.name = host.name(),
            network.connection.id = self.shared.id.0,
            server.pool = %host.key,
            lifetime_ms = lifetime.as_millis() as u64,
            "connection closed"
        );
        // `_permit` drops after this body: the slot frees once the connection is gone.
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        // Only our tag: one extra is cheaper to copy into every response
        // than a chain, and `ConnectionInfo` carries the addresses too.
        let connected = Connected::new().extra(ConnectionInfo(self.shared.clone()));
        if self.shared.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl Read for Conn {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        this.note(IO_READ_FAILED, r)
    }
}

impl Write for Conn {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.claim_taken();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(IO_WRITE_FAILED, r)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.claim_taken();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(IO_WRITE_FAILED, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.claim_taken();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.note(IO_WRITE_FAILED, r)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_keyed_like_hyper_utils_pool() {
        let config = Config {
            max_connections_per_host: 4,
            ..Config::default()
        };
        let hosts = Hosts::new(None, &config);
        let get = |uri: &str| {
            let uri: http::Uri = uri.parse().unwrap();
            hosts.get(uri.scheme_str() == Some("https"), uri.authority().unwrap())
        };
        let a = get("http://API.example.test:8080/x");
        let b = get("http://api.example.test:8080/y");
        assert!(
            Arc::ptr_eq(&a, &b),
            "authorities compare case-insensitively"
        );
        assert_eq!(&*a.key, "http://api.example.test:8080");
        let tls = get("https://api.example.test:8080/");
        assert!(!Arc::ptr_eq(&a, &tls), "the scheme is part of the key");
        let other_port = get("http://api.example.test:8081/");
        assert!(!Arc::ptr_eq(&a, &other_port));
        assert_eq!(hosts.sum(|h| h.max), 12, "three hosts, four slots each");
        let secret = get("http://user:s3cret@api.example.test:8080/");
        assert!(
            !Arc::ptr_eq(&a, &secret),
            "userinfo is part of hyper-util's pool key, so of ours"
        );
        assert_eq!(
            &*secret.key, "http://api.example.test:8080",
            "no credentials in logs"
        );
        assert_eq!(&*secret.server, "api.example.test:8080");
        assert_eq!(hosts.sum(HostState::permits_in_use), 0);
        assert_eq!(without_userinfo("a:b@c@host:1"), "host:1");
        assert_eq!(without_userinfo("host"), "host");
    }

    /// Counts `host()` calls per key.
    #[derive(Debug, Default)]
    struct Asked(std::sync::Mutex<HashMap<String, usize>>);

    impl HostObserver for Asked {}

    #[derive(Debug)]
    struct AskedPool(Arc<Asked>);

    impl PoolObserver for AskedPool {
        fn host(&self, key: &str) -> Arc<dyn HostObserver> {
            *self.0.0.lock().unwrap().entry(key.to_owned()).or_default() += 1;
            self.0.clone()
        }
    }

    #[test]
    fn the_observer_is_asked_once_per_key_whatever_the_userinfo() {
        let asked = Arc::new(Asked::default());
        let hosts = Hosts::new(Some(Arc::new(AskedPool(asked.clone()))), &Config::default());
        let get = |authority: &str| hosts.get(false, &authority.parse().unwrap());
        let plain = get("api.example.test:8080");
        let alice = get("alice:pw@api.example.test:8080");
        let bob = get("bob@API.example.test:8080");
        assert!(!Arc::ptr_eq(&plain, &alice) && !Arc::ptr_eq(&alice, &bob));
        assert!(
            Arc::ptr_eq(
                plain.observer.as_ref().unwrap(),
                bob.observer.as_ref().unwrap()
            ),
            "one host observer per key"
        );
        get("api.example.test:8081");
        let asked = asked.0.lock().unwrap().clone();
        assert_eq!(
            asked,
            HashMap::from([
                ("http://api.example.test:8080".to_owned(), 1),
                ("http://api.example.test:8081".to_owned(), 1),
            ])
        );
    }
}
