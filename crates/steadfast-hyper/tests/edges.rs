//! The edges of the request's life, over loopback: slow uploads against the
//! read timeout, what `may_have_reached_server` says at each stage,
//! cancellation while connecting, and hostile input.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use common::{get, read_all};
use http_body::{Body, Frame, SizeHint};
use steadfast_core::{Deadline, ErrorClass, TimeoutPhase, Transport};
use steadfast_hyper::{ErrorKind, HyperTransport};
use steadfast_testkit::FaultServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request body that yields one 1 KiB chunk after each of `delays`.
struct Paced {
    delays: std::vec::IntoIter<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Paced {
    fn new(delays: &[u64]) -> Self {
        Self {
            delays: delays
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect::<Vec<_>>()
                .into_iter(),
            sleep: None,
        }
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sleep.is_none() {
            let Some(d) = self.delays.next() else {
                return Poll::Ready(None);
            };
            self.sleep = Some(Box::pin(tokio::time::sleep(d)));
        }
        ready!(self.sleep.as_mut().unwrap().as_mut().poll(cx));
        self.sleep = None;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 1024])))))
    }

    fn is_end_stream(&self) -> bool {
        self.sleep.is_none() && self.delays.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

async fn echoed_len(res: http::Response<steadfast_hyper::HyperBody>) -> u64 {
    let body = read_all(res.into_body()).await.unwrap();
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["body_len"]
        .as_u64()
        .unwrap()
}

/// An upload that keeps making progress takes as long as it takes: the
/// read timeout measures the server's silence, not the upload.
#[tokio::test]
async fn a_slow_upload_that_keeps_going_does_not_trip_the_read_timeout() {
    let server = FaultServer::start().await;
    let t = HyperTransport::builder()
        .read_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    // Eight chunks 100 ms apart: 0.8 s of upload under a 0.3 s read timeout.
    let req = http::Request::post(server.url("/echo"))
        .body(Paced::new(&[100; 8]))
        .unwrap();
    let res = t.send(req).await.expect("the upload kept going");
    assert_eq!(echoed_len(res).await, 8 * 1024);
}

/// A request body the caller is slow to produce is the caller's time, not
/// the server's: the read timeout waits for it.
#[tokio::test]
async fn a_caller_body_that_pauses_does_not_trip_the_read_timeout() {
    let server = FaultServer::start().await;
    let t = HyperTransport::builder()
        .read_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let req = http::Request::post(server.url("/echo"))
        .body(Paced::new(&[0, 700, 0]))
        .unwrap();
    let res = t.send(req).await.expect("the pause was the caller's");
    assert_eq!(echoed_len(res).await, 3 * 1024);
}

#[cfg(feature = "http2")]
#[tokio::test]
async fn a_slow_upload_over_h2c_does_not_trip_the_read_timeout() {
    let server = FaultServer::start().await;
    let t = HyperTransport::builder()
        .http2_prior_knowledge()
        .read_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let req = http::Request::post(server.url("/echo"))
        .body(Paced::new(&[100; 8]))
        .unwrap();
    let res = t.send(req).await.expect("the upload kept going");
    assert_eq!(echoed_len(res).await, 8 * 1024);
}

/// A server that never answers still trips the read timeout once the
/// upload is done.
#[tokio::test]
async fn the_read_timeout_runs_once_the_upload_is_done() {
    let server = FaultServer::start().await;
    let t = HyperTransport::builder()
        .read_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let req = http::Request::post(server.url("/slow?ms=10000"))
        .body(Paced::new(&[50, 50]))
        .unwrap();
    let err = t.send(req).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Read),
        "{err:?}"
    );
    assert!(err.may_have_reached_server());
}

/// A deadline that expires while the request waits for a slot: nothing
/// left this process, and the error says so.
#[tokio::test]
async fn a_deadline_spent_waiting_for_a_slot_never_reached_the_server() {
    let server = FaultServer::start().await;
    let t = HyperTransport::builder()
        .max_connections_per_host(1)
        .pool_acquire_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let hog = tokio::spawn({
        let (t, url) = (t.clone(), server.url("/slow?ms=1500"));
        async move { t.send(get(&url)).await.map(|_| ()) }
    });
    while t.snapshot().connections_open == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut req = http::Request::post(server.url("/echo"))
        .body(http_body_util::Full::new(Bytes::from_static(b"charge")))
        .unwrap();
    Deadline::after(Duration::from_millis(200)).apply(&mut req);
    let err = t.send(req).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Total),
        "{err:?}"
    );
    assert!(!err.may_have_reached_server(), "{err:?}");
    hog.await.unwrap().unwrap();
    assert_eq!(server.hits("/echo"), 0);

    // Expiring after the request left: it may have reached the server.
    let mut req = get(&server.url("/slow?ms=5000"));
    Deadline::after(Duration::from_millis(200)).apply(&mut req);
    let err = t.send(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Total));
    assert!(err.may_have_reached_server(), "{err:?}");
}

/// A request an HTTP/1 connection cannot carry (`HTTP/2` version) fails
/// as an invalid request that never left, not as a broken read.
#[tokio::test]
async fn a_version_the_connection_cannot_speak_is_an_unsent_invalid_request() {
    let server = FaultServer::start().await;
    let t = HyperTransport::builder().build().unwrap();
    let req = http::Request::get(server.url("/status/200"))
        .version(http::Version::HTTP_2)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let err = t.send(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err:?}");
    assert!(!err.may_have_reached_server(), "{err:?}");
    assert_eq!(ErrorClass::of(&err), ErrorClass::Other);

    let req = http::Request::get(server.url("/status/200"))
        .version(http::Version::HTTP_09)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let err = t.send(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err:?}");
    assert!(!err.may_have_reached_server(), "{err:?}");
}

/// Cancelling a request while its connect hangs frees the slot at once.
#[tokio::test]
async fn cancelling_during_connect_frees_the_slot() {
    let hole = common::blackhole().await;
    let t = HyperTransport::builder()
        .max_connections_per_host(1)
        .connect_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = format!("http://{}/", hole.addr);
    let cancelled = tokio::time::timeout(Duration::from_millis(200), t.send(get(&url))).await;
    assert!(cancelled.is_err(), "the connect hangs: {cancelled:?}");
    assert_eq!(t.pool_permits_in_use(), 0, "{:?}", t.snapshot());
    // And the only slot is free for the next request.
    let server = FaultServer::start().await;
    let t2 = t.clone();
    let res = t2.send(get(&server.url("/status/200"))).await.unwrap();
    assert_eq!(res.status(), 200);
    // The cap is per host: the hole's slot stays free all along.
    let cancelled = tokio::time::timeout(Duration::from_millis(100), t.send(get(&url))).await;
    assert!(cancelled.is_err());
    assert_eq!(t.snapshot().pool_timeouts, 0);
    assert_eq!(t.snapshot().connections_opened, 1);
}

/// Hostile or odd URIs and responses get typed errors, never a panic.
#[tokio::test]
async fn hostile_input_gets_typed_errors() {
    let t = HyperTransport::builder().max_body(10).build().unwrap();
    for uri in ["http://:80/", "http://:/", "http://@/", "http://[::1]:0/"] {
        let Ok(uri) = uri.parse::<http::Uri>() else {
            continue;
        };
        let req = http::Request::get(uri.clone())
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let err = t.send(req).await.expect_err("no server there");
        assert!(!err.may_have_reached_server(), "{uri}: {err:?}");
    }

    // An absurd Content-Length hyper cannot even parse: a protocol error.
    let absurd =
        raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551616\r\n\r\nabc").await;
    let err = t.send(get(&format!("http://{absurd}/"))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");

    // A petabyte Content-Length under max_body: refused, not allocated.
    let addr = raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000000000\r\n\r\nabc").await;
    let res = t.send(get(&format!("http://{addr}/"))).await.unwrap();
    let err = read_all(res.into_body()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyTooLarge { limit: 10 }, "{err:?}");
    assert!(err.may_have_reached_server());

    // Without a limit, the short body is a typed read error.
    let t = HyperTransport::builder().build().unwrap();
    let res = t.send(get(&format!("http://{addr}/"))).await.unwrap();
    let err = read_all(res.into_body()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Read, "{err:?}");
}

/// Answers every connection with `response`, then closes it.
async fn raw_server(response: &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        }
    });
    addr
}

/// Credentials in a URL never reach an error message.
#[tokio::test]
async fn userinfo_stays_out_of_error_messages() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t = HyperTransport::builder().build().unwrap();
    for url in [
        format!("http://user:s3cret@{addr}/"),
        format!("ftp://user:s3cret@{addr}/"),
    ] {
        let err = t.send(get(&url)).await.unwrap_err();
        let mut chain = Vec::new();
        let mut cur: Option<&dyn std::error::Error> = Some(&err);
        while let Some(e) = cur {
            chain.push(e.to_string());
            cur = e.source();
        }
        let all = format!("{chain:?} {}", err.host());
        assert!(!all.contains("s3cret"), "{all}");
        assert!(all.contains(&addr.to_string()), "{all}");
    }
}

/// A pooled connection the server closes gives its slot back.
#[tokio::test]
async fn a_connection_the_server_closes_gives_its_slot_back() {
    let addr = raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let t = HyperTransport::builder()
        .max_connections_per_host(1)
        .pool_idle_timeout(None)
        .build()
        .unwrap();
    let res = t.send(get(&format!("http://{addr}/"))).await.unwrap();
    assert_eq!(read_all(res.into_body()).await.unwrap(), "ok");
    // Idle in the pool until the server hangs up, 0.2 s later.
    let mut freed = false;
    for _ in 0..500 {
        if t.pool_permits_in_use() == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "{:?}", t.snapshot());
    assert_eq!(t.snapshot().connections_closed, 1);
    // The only slot serves the next request on a new connection.
    let res = t.send(get(&format!("http://{addr}/"))).await.unwrap();
    assert_eq!(read_all(res.into_body()).await.unwrap(), "ok");
    assert_eq!(t.snapshot().connections_opened, 2);
}

/// A server that accepts and hangs up at once fails the HTTP/2 handshake
/// (h2c prior knowledge): a connection failure, retryable, never the
/// caller's fault.
#[cfg(feature = "http2")]
#[tokio::test]
async fn a_failed_http2_handshake_is_a_connection_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let t = HyperTransport::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..3 {
        let err = t.send(get(&format!("http://{addr}/"))).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connect, "{err:?}");
        assert!(!err.may_have_reached_server(), "{err:?}");
    }
}
