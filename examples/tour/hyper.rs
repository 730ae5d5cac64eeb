//! Chapter: the hyper transport. Pool events as they fire, each timeout
//! phase reported as itself, and a TLS + HTTP/2 request to a local server
//! with a certificate made for this run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use steadfast_core::pool::{Acquired, ConnectionId, HostObserver, PoolObserver};
use steadfast_core::{Deadline, Transport};
use steadfast_hyper::{ConnectionInfo, HyperError, HyperTransport};
use steadfast_testkit::FaultServer;

use crate::BoxError;
use crate::say::{detail, line};

pub(crate) async fn run(server: &FaultServer) -> Result<(), BoxError> {
    pool_events(server).await?;
    timeouts(server).await?;
    tls_http2().await?;
    Ok(())
}

fn get(url: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(url)
        .body(Empty::new())
        .expect("a valid URL")
}

/// Prints every pool event as the transport reports it.
struct Printer;

impl PoolObserver for Printer {
    fn host(&self, key: &str) -> Arc<dyn HostObserver> {
        detail("observer asked for", key);
        Arc::new(Printer)
    }
}

impl HostObserver for Printer {
    fn acquire_started(&self) {
        detail("acquire_started", "waiting for a connection");
    }
    fn acquire_finished(&self, wait: Duration, result: Acquired) {
        let what = match result {
            Acquired::New(id) => format!("new {id}"),
            Acquired::Reused(id) => format!("reused {id}"),
            other => format!("{other:?}"),
        };
        detail("acquire_finished", format!("{what} after {wait:.1?}"));
    }
    fn connection_released(&self, id: ConnectionId, held: Duration) {
        detail("connection_released", format!("{id} held {held:.1?}"));
    }
    fn connection_opened(&self, id: ConnectionId) {
        detail("connection_opened", id);
    }
    fn connection_closed(&self, id: ConnectionId, lifetime: Duration) {
        detail(
            "connection_closed",
            format!("{id}, open for {lifetime:.1?} in all"),
        );
    }
}

async fn pool_events(server: &FaultServer) -> Result<(), BoxError> {
    line("Pool hooks: every event of two requests and one idle expiry, as they fire.");
    let t = HyperTransport::builder()
        .pool_observer(Arc::new(Printer))
        .pool_idle_timeout(Some(Duration::from_millis(300)))
        .build()?;
    for (i, round) in [
        "first request: a new connection",
        "second request: the same one, reused",
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            // A pause between calls, as real clients have: hyper-util puts a
            // finished HTTP/1 connection back into its pool from another task,
            // and a request sent in that instant would open a second one.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        line(round);
        let res = t.send(get(&server.url("/bytes/2048"))).await?;
        let conn = res.extensions().get::<ConnectionInfo>().cloned();
        let body = res.into_body().collect().await?.to_bytes();
        if let Some(conn) = conn {
            detail(
                "response",
                format!(
                    "{} bytes over {} (request #{} on it)",
                    body.len(),
                    conn.id(),
                    conn.requests()
                ),
            );
        }
    }
    line("idle for longer than pool_idle_timeout (300 ms):");
    tokio::time::sleep(Duration::from_millis(800)).await;
    detail("slots in use now", t.pool_permits_in_use());
    Ok(())
}

async fn timeouts(server: &FaultServer) -> Result<(), BoxError> {
    line("");
    line(
        "Timeouts: each phase fires and says which it was, and whether the server may have seen the request.",
    );
    let short = Duration::from_millis(200);
    line("Short limits so the tour need not wait: connect and read timeouts 200 ms here");
    line("(defaults 5 s and 30 s), then one connection slot with a 100 ms pool wait.");
    let t = HyperTransport::builder()
        .connect_timeout(short)
        .read_timeout(short)
        .build()?;
    // One connection slot, a short pool wait, the default 30 s read timeout.
    let one = HyperTransport::builder()
        .max_connections_per_host(1)
        .pool_acquire_timeout(Duration::from_millis(100))
        .build()?;
    let show = |what: &str, err: &HyperError| {
        detail(
            what,
            format!(
                "{:?}, may have reached server: {}",
                err.kind(),
                err.may_have_reached_server()
            ),
        );
        detail("", err);
    };

    let hole = Blackhole::new().await?;
    let err = t
        .send(get(&format!("http://{}/", hole.addr)))
        .await
        .expect_err("never accepted");
    show("connect", &err);

    let err = t
        .send(get(&server.url("/slow?ms=2000")))
        .await
        .expect_err("head is late");
    show("read (head 2 s late)", &err);

    let res = t
        .send(get(
            &server.url("/drip?chunks=3&interval_ms=1000&chunk_size=8")
        ))
        .await?;
    let err = res
        .into_body()
        .collect()
        .await
        .expect_err("frames are late");
    show("read (body frames 1 s)", &err);

    // The only slot is busy with a slow request: a request whose deadline is
    // shorter than the pool wait gives up first.
    let busy = occupy(&one, server, 400).await;
    let mut req = get(&server.url("/status/200"));
    Deadline::after(Duration::from_millis(50)).apply(&mut req);
    let err = one.send(req).await.expect_err("no slot in 50 ms");
    show("deadline 50 ms", &err);
    let _ = busy.await?;

    let busy = occupy(&one, server, 400).await;
    let err = one
        .send(get(&server.url("/status/200")))
        .await
        .expect_err("no slot in 100 ms");
    show("pool acquire (cap 1)", &err);
    let _ = busy.await?;
    Ok(())
}

/// Starts a `/slow` request that holds the transport's only connection slot,
/// and returns once the server has it.
async fn occupy(
    t: &HyperTransport,
    server: &FaultServer,
    ms: u64,
) -> tokio::task::JoinHandle<Result<http::StatusCode, HyperError>> {
    let before = server.hits("/slow");
    let busy = tokio::spawn({
        let t = t.clone();
        let url = server.url(&format!("/slow?ms={ms}"));
        async move { t.send(get(&url)).await.map(|r| r.status()) }
    });
    while server.hits("/slow") == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    busy
}

async fn tls_http2() -> Result<(), BoxError> {
    line("");
    line(
        "TLS + HTTP/2: a certificate authority made for this run, a local HTTPS server, ALPN picks h2.",
    );
    let pki = tls::Pki::generate()?;
    let addr = tls::serve(&pki).await?;
    let t = HyperTransport::builder()
        .add_root_certificate(pki.ca.clone())
        .build()?;
    let url = format!("https://localhost:{}/", addr.port());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (t, url) = (t.clone(), url.clone());
            tokio::spawn(async move {
                let res = t.send(get(&url)).await?;
                let version = res.version();
                let id = res
                    .extensions()
                    .get::<ConnectionInfo>()
                    .map(ConnectionInfo::id);
                res.into_body().collect().await?;
                Ok::<_, HyperError>((version, id))
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut version = http::Version::default();
    for task in tasks {
        let (v, id) = task.await??;
        version = v;
        ids.extend(id);
    }
    ids.sort_unstable();
    ids.dedup();
    detail("url", &url);
    detail("protocol", format!("{version:?}, negotiated by ALPN"));
    detail(
        "8 concurrent requests",
        format!("multiplexed over {} connection(s)", ids.len()),
    );
    let other = tls::Pki::generate()?;
    let strict = HyperTransport::builder()
        .add_root_certificate(other.ca)
        .build()?;
    let err = strict.send(get(&url)).await.expect_err("untrusted");
    detail("with the wrong CA", format!("{:?}: {err}", err.kind()));
    Ok(())
}

/// A loopback listener whose accept queue is full: connects to it hang
/// (Linux drops the SYN), which makes the connect timeout deterministic.
struct Blackhole {
    addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<tokio::net::TcpStream>,
}

impl Blackhole {
    async fn new() -> Result<Self, BoxError> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse()?)?;
        let listener = socket.listen(0)?;
        let addr = listener.local_addr()?;
        let mut fillers = Vec::new();
        for _ in 0..16 {
            let connect = tokio::net::TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_millis(100), connect).await {
                Ok(stream) => fillers.push(stream?),
                Err(_) => {
                    return Ok(Self {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    });
                }
            }
        }
        Err("the accept queue never filled up".into())
    }
}

mod tls {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use ::hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::{Bytes, Full};
    use crate::BoxError;

    pub(super) struct Pki {
        pub(super) ca: CertificateDer<'static>,
        leaf: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    }

    impl Pki {
        pub(super) fn generate() -> Result<Self, BoxError> {
            let mut ca = CertificateParams::new(Vec::<String>::new())?;
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name
                .push(DnType::CommonName, "steadfast tour CA");
            let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
            let key = KeyPair::generate()?;
            let leaf =
                CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &ca)?;
            Ok(Self {
                ca: ca.der().clone(),
                leaf: leaf.der().clone(),
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            })
        }
    }

    /// An HTTPS server (h2 and http/1.1) answering with the protocol it spoke.
    pub(super) async fn serve(pki: &Pki) -> Result<SocketAddr, BoxError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![pki.leaf.clone()], pki.key.clone_key())?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc =
                        service_fn(|req: http::Request<::hyper::body::Incoming>| async move {
                            let body = Full::new(Bytes::from(format!("{:?}", req.version())));
                            Ok::<_, std::convert::Infallible>(http::Response::new(body))
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(addr)
    }
}
