//! Helpers shared by the integration tests: a recording pool observer, a
//! listener whose connects never complete, and (with `rustls`) a loopback
//! TLS server with a freshly generated certificate.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use steadfast_core::pool::{Acquired, ConnectionId, HostObserver, PoolObserver};
use tokio::net::{TcpSocket, TcpStream};

/// One pool event, as the observer received it.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Started,
    Finished(Acquired),
    Released(ConnectionId),
    Opened(ConnectionId),
    Closed(ConnectionId),
}

/// Records every event of every host, in order.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<(String, Event)>>,
    hosts_asked: Mutex<HashMap<String, usize>>,
}

struct HostRec {
    key: String,
    rec: Arc<Recorder>,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub fn clear(&self) {
        self.events.lock().unwrap().clear();
    }

    /// How often `host()` was called per key.
    pub fn hosts_asked(&self) -> HashMap<String, usize> {
        self.hosts_asked.lock().unwrap().clone()
    }

    /// Checks the protocol of pool.rs over everything recorded: one
    /// `acquire_finished` per `acquire_started`, one release per acquired
    /// connection, one close per open. Returns the counts.
    pub fn check_protocol(&self) -> Counts {
        let mut c = Counts::default();
        for e in self.events() {
            match e {
                Event::Started => c.started += 1,
                Event::Finished(a) => {
                    c.finished += 1;
                    match a {
                        Acquired::New(_) => c.new += 1,
                        Acquired::Reused(_) => c.reused += 1,
                        Acquired::Cancelled => c.cancelled += 1,
                        Acquired::TimedOut => c.timed_out += 1,
                        _ => c.failed += 1,
                    }
                }
                Event::Released(_) => c.released += 1,
                Event::Opened(_) => c.opened += 1,
                Event::Closed(_) => c.closed += 1,
            }
        }
        assert_eq!(
            c.started, c.finished,
            "one acquire_finished per acquire_started: {c:?}"
        );
        assert_eq!(
            c.new + c.reused,
            c.released,
            "one release per acquired connection: {c:?}"
        );
        c
    }
}

/// Event counts; see [`Recorder::check_protocol`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub started: usize,
    pub finished: usize,
    pub new: usize,
    pub reused: usize,
    pub cancelled: usize,
    pub timed_out: usize,
    pub failed: usize,
    pub released: usize,
    pub opened: usize,
    pub closed: usize,
}

/// The observer to give the builder.
pub fn observer(rec: &Arc<Recorder>) -> Arc<dyn PoolObserver> {
    Arc::new(Handle(rec.clone()))
}

struct Handle(Arc<Recorder>);

impl PoolObserver for Handle {
    fn host(&self, key: &str) -> Arc<dyn HostObserver> {
        *self
            .0
            .hosts_asked
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
        Arc::new(HostRec {
            key: key.to_owned(),
            rec: self.0.clone(),
        })
    }
}

impl HostRec {
    fn push(&self, e: Event) {
        self.rec.events.lock().unwrap().push((self.key.clone(), e));
    }
}

impl HostObserver for HostRec {
    fn acquire_started(&self) {
        self.push(Event::Started);
    }
    fn acquire_finished(&self, _wait: Duration, result: Acquired) {
        self.push(Event::Finished(result));
    }
    fn connection_released(&self, id: ConnectionId, _held: Duration) {
        self.push(Event::Released(id));
    }
    fn connection_opened(&self, id: ConnectionId) {
        self.push(Event::Opened(id));
    }
    fn connection_closed(&self, id: ConnectionId, _lifetime: Duration) {
        self.push(Event::Closed(id));
    }
}

/// A GET with an empty body.
pub fn get(url: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(url).body(Empty::new()).unwrap()
}

/// Reads a body to the end.
pub async fn read_all<B>(body: B) -> Result<Bytes, B::Error>
where
    B: http_body::Body<Data = Bytes>,
{
    Ok(body.collect().await?.to_bytes())
}

/// A loopback listener whose accept queue is full, so a new connect to it
/// hangs: Linux drops the SYN when the queue is full, and the client keeps
/// retrying until its own timeout. Keep the returned value alive.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<TcpStream>,
}

pub async fn blackhole() -> Blackhole {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    // Fill the queue until a connect no longer completes.
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filling the accept queue failed: {e}"),
            Err(_) => {
                return Blackhole {
                    addr,
                    _listener: listener,
                    _fillers: fillers,
                };
            }
        }
    }
    panic!("the accept queue never filled up");
}

#[cfg(feature = "rustls")]
pub mod tls {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::net::TcpListener;

    /// A CA and a `localhost`/`127.0.0.1` certificate it signed.
    pub struct Pki {
        pub ca: CertificateDer<'static>,
        pub leaf: CertificateDer<'static>,
        pub key: PrivateKeyDer<'static>,
    }

    pub fn pki() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "steadfast test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        Pki {
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        }
    }

    /// What the TLS server does with a connection.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Mode {
        /// Serve HTTP/1.1 and HTTP/2 (ALPN `alpn`) with a 200 naming the version.
        Serve,
        /// Accept TCP and never answer the handshake.
        Stall,
    }

    /// A loopback HTTPS server; returns its address. Runs until the test ends.
    pub async fn server(pki: &Pki, alpn: &[&[u8]], mode: Mode) -> SocketAddr {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.leaf.clone(), pki.ca.clone()], pki.key.clone_key())
            .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut stalled = Vec::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                if mode == Mode::Stall {
                    stalled.push(tcp);
                    continue;
                }
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?}", req.version());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            bytes::Bytes::from(body),
                        )))
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        addr
    }
}
