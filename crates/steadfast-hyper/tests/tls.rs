//! TLS (rustls) and HTTP/2 over loopback, against a local server with a
//! certificate generated for the test run. Never the internet.
#![cfg(feature = "rustls")]

mod common;

use std::time::Duration;

use common::tls::{Mode, pki, server};
use common::{get, read_all};
use steadfast_core::{ErrorClass, TimeoutPhase, Transport};
#[cfg(feature = "http2")]
use steadfast_hyper::ConnectionInfo;
use steadfast_hyper::{ErrorKind, HyperTransport};

/// The test server's URL, by the name its certificate holds.
fn localhost(addr: std::net::SocketAddr) -> String {
    format!("https://localhost:{}/", addr.port())
}

#[tokio::test]
async fn https_with_a_custom_root_over_http1() {
    let pki = pki();
    let addr = server(&pki, &[b"http/1.1"], Mode::Serve).await;
    let t = HyperTransport::builder()
        .add_root_certificate(pki.ca.clone())
        .build()
        .unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let res = t
            .send(get(&format!("https://{host}:{}/", addr.port())))
            .await
            .unwrap();
        assert_eq!(res.version(), http::Version::HTTP_11);
        assert_eq!(read_all(res.into_body()).await.unwrap(), "HTTP/1.1");
    }
}

#[cfg(feature = "http2")]
#[tokio::test]
async fn alpn_negotiates_http2_and_multiplexes_one_connection() {
    let pki = pki();
    let addr = server(&pki, &[b"h2", b"http/1.1"], Mode::Serve).await;
    let t = HyperTransport::builder()
        .add_root_certificate(pki.ca.clone())
        .build()
        .unwrap();
    let url = localhost(addr);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let t = t.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let res = t.send(get(&url)).await.unwrap();
                let id = res.extensions().get::<ConnectionInfo>().unwrap().id();
                assert_eq!(res.version(), http::Version::HTTP_2);
                assert_eq!(read_all(res.into_body()).await.unwrap(), "HTTP/2.0");
                id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        1,
        "HTTP/2 requests share one connection: {ids:?}"
    );
    // A burst of first requests races to connect before ALPN has said h2
    // (hyper-util's design); the extra connections close once their
    // connection tasks notice they were dropped.
    for _ in 0..500 {
        if t.snapshot().connections_open == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(t.snapshot().connections_open, 1, "{:?}", t.snapshot());
    assert_eq!(t.pool_permits_in_use(), 1);
}

#[cfg(feature = "http2")]
#[tokio::test]
async fn http1_only_keeps_http1_even_when_the_server_offers_h2() {
    let pki = pki();
    let addr = server(&pki, &[b"h2", b"http/1.1"], Mode::Serve).await;
    let t = HyperTransport::builder()
        .add_root_certificate(pki.ca.clone())
        .http1_only()
        .build()
        .unwrap();
    let res = t.send(get(&localhost(addr))).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_11);
}

/// A custom TLS config that offers `h2` itself does not override
/// `http1_only` (without the `http2` feature, an h2 connection would panic
/// inside hyper-util).
#[cfg(feature = "http2")]
#[tokio::test]
async fn http1_only_takes_h2_out_of_a_custom_configs_alpn() {
    let pki = pki();
    let addr = server(&pki, &[b"h2", b"http/1.1"], Mode::Serve).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut custom = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    custom.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let t = HyperTransport::builder()
        .tls_config(custom)
        .http1_only()
        .build()
        .unwrap();
    let res = t.send(get(&localhost(addr))).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_11);
}

#[cfg(feature = "http2")]
#[tokio::test]
async fn h2c_prior_knowledge_against_the_fault_server() {
    let fault = steadfast_testkit::FaultServer::start().await;
    let t = HyperTransport::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = t.send(get(&fault.url("/bytes/1000"))).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(read_all(res.into_body()).await.unwrap().len(), 1000);

    // Timeouts keep their phases over HTTP/2 streams.
    let t = HyperTransport::builder()
        .http2_prior_knowledge()
        .read_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let err = t.send(get(&fault.url("/slow?ms=5000"))).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Read),
        "{err:?}"
    );
    let res = t
        .send(get(
            &fault.url("/drip?chunks=3&interval_ms=2000&chunk_size=8")
        ))
        .await
        .unwrap();
    let err = read_all(res.into_body()).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Read),
        "{err:?}"
    );
    // A reset stream is a read error.
    let res = t.send(get(&fault.url("/reset?after=10"))).await.unwrap();
    let err = read_all(res.into_body()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Read, "{err:?}");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error() {
    let pki = pki();
    let addr = server(&pki, &[b"http/1.1"], Mode::Serve).await;
    let other = common::tls::pki();
    let t = HyperTransport::builder()
        .add_root_certificate(other.ca)
        .build()
        .unwrap();
    let err = t.send(get(&localhost(addr))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert!(!err.may_have_reached_server());
    assert_eq!(ErrorClass::of(&err), ErrorClass::Connect);
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    assert_eq!(t.pool_permits_in_use(), 0);
}

#[tokio::test]
async fn a_stalled_handshake_is_a_connect_timeout() {
    let pki = pki();
    let addr = server(&pki, &[b"http/1.1"], Mode::Stall).await;
    let t = HyperTransport::builder()
        .add_root_certificate(pki.ca.clone())
        .connect_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = t.send(get(&localhost(addr))).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Connect),
        "{err:?}"
    );
    assert!(!err.may_have_reached_server());
}

#[cfg(not(any(feature = "webpki-roots", feature = "native-roots")))]
#[tokio::test]
async fn without_any_root_https_fails_with_a_clear_tls_error() {
    let pki = pki();
    let addr = server(&pki, &[b"http/1.1"], Mode::Serve).await;
    let t = HyperTransport::builder().build().unwrap();
    let err = t.send(get(&localhost(addr))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls);
    let mut chain = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = cur {
        chain.push(e.to_string());
        cur = e.source();
    }
    assert!(
        chain.iter().any(|m| m.contains("no trusted TLS root")),
        "{chain:?}"
    );
}

#[cfg(feature = "webpki-roots")]
#[tokio::test]
async fn webpki_roots_alone_do_not_trust_a_private_ca() {
    let pki = pki();
    let addr = server(&pki, &[b"http/1.1"], Mode::Serve).await;
    let t = HyperTransport::builder().build().unwrap();
    let err = t.send(get(&localhost(addr))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
}

/// Cancelling a request mid-handshake drops the handshake and frees its slot.
#[tokio::test]
async fn cancelling_during_the_tls_handshake_frees_the_slot() {
    let pki = pki();
    let stalled = server(&pki, &[b"http/1.1"], Mode::Stall).await;
    let serving = server(&pki, &[b"http/1.1"], Mode::Serve).await;
    let t = HyperTransport::builder()
        .add_root_certificate(pki.ca.clone())
        .max_connections_per_host(1)
        .connect_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/", stalled.port());
    for _ in 0..3 {
        let cancelled = tokio::time::timeout(Duration::from_millis(150), t.send(get(&url))).await;
        assert!(cancelled.is_err(), "the handshake hangs: {cancelled:?}");
        assert_eq!(t.pool_permits_in_use(), 0, "{:?}", t.snapshot());
    }
    assert_eq!(t.snapshot().connections_opened, 0);
    let res = t
        .send(get(&format!("https://localhost:{}/", serving.port())))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// With the per-host cap reached by one HTTP/2 connection, every request
/// shares it: none deadlocks, none times out in the pool, and the connects
/// that lost the race to ALPN give up quietly instead of counting as pool
/// timeouts.
#[cfg(feature = "http2")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_http2_host_serves_every_request_over_one_connection() {
    let pki = pki();
    let addr = server(&pki, &[b"h2", b"http/1.1"], Mode::Serve).await;
    let t = HyperTransport::builder()
        .add_root_certificate(pki.ca.clone())
        .max_connections_per_host(1)
        .pool_acquire_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = localhost(addr);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (t, url) = (t.clone(), url.clone());
            tokio::spawn(async move {
                let res = t.send(get(&url)).await?;
                read_all(res.into_body()).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "HTTP/2.0");
    }
    // Let every connect that lost the race reach its pool timeout.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = t.snapshot();
    assert_eq!(s.connections_opened, 1, "{s:?}");
    assert_eq!(s.pool_timeouts, 0, "nobody waited in vain: {s:?}");
    assert_eq!(t.pool_permits_in_use(), 1);
    // Later requests reuse it at once.
    let res = t.send(get(&url)).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
}

/// h2c with the cap at one: requests multiplex on the single connection.
#[cfg(feature = "http2")]
#[tokio::test]
async fn h2c_at_a_cap_of_one_multiplexes_instead_of_waiting() {
    let fault = steadfast_testkit::FaultServer::start().await;
    let t = HyperTransport::builder()
        .http2_prior_knowledge()
        .max_connections_per_host(1)
        .pool_acquire_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (t, url) = (t.clone(), fault.url("/slow?ms=500"));
            tokio::spawn(async move { t.send(get(&url)).await.map(|r| r.status()) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 200);
    }
    assert_eq!(fault.stats().connections_accepted, 1);
    assert_eq!(t.snapshot().pool_timeouts, 0);
}
