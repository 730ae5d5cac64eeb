//! RFC 9113 §8.7: an HTTP/2 stream the server resets with `REFUSED_STREAM`
//! was not processed, so any request, a POST too, is safe to send again.
//! Against a minimal h2c server written with the `h2` crate directly.
#![cfg(feature = "http2")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::{Recorder, get, read_all};
use h2::Reason;
use http_body_util::Full;
use steadfast_core::pool::NoopPoolObserver;
use steadfast_core::{ErrorClass, Transport};
use steadfast_hyper::{Builder, ErrorKind, HyperError, HyperTransport};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// When the server resets each stream.
#[derive(Clone)]
enum ResetAt {
    /// Before any response: the request is answered with a bare reset.
    Head,
    /// In the middle of the body, once the test has seen the response head
    /// and notifies (h2 drops a head that arrives together with a reset).
    Body(Arc<Notify>),
}

/// An h2c server that resets every stream with `reason`, at `at`.
async fn resetting_server(reason: Reason, at: ResetAt) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let at = at.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                // Accepting also drives the connection, flushing the resets.
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    match &at {
                        ResetAt::Head => respond.send_reset(reason),
                        ResetAt::Body(head_seen) => {
                            let head = http::Response::new(());
                            let mut body = respond.send_response(head, false).unwrap();
                            body.send_data(Bytes::from_static(b"partial"), false)
                                .unwrap();
                            let head_seen = head_seen.clone();
                            tokio::spawn(async move {
                                head_seen.notified().await;
                                body.send_reset(reason);
                            });
                        }
                    }
                }
            });
        }
    });
    addr
}

/// h2c transports: without a pool observer, and with one (which binds the
/// request to its connection through hyper-util's capture).
fn transports() -> Vec<(&'static str, HyperTransport)> {
    let h2c = || HyperTransport::builder().http2_prior_knowledge();
    let build = |b: Builder| b.build().unwrap();
    vec![
        (
            "unobserved",
            build(h2c().pool_observer(Arc::new(NoopPoolObserver))),
        ),
        (
            "observed",
            build(h2c().pool_observer(common::observer(&Recorder::new()))),
        ),
    ]
}

fn post(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(url)
        .body(Full::new(Bytes::from_static(b"{\"sku\":1}")))
        .unwrap()
}

fn h2_reason(err: &HyperError) -> Option<Reason> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason();
        }
        cur = e.source();
    }
    None
}

fn assert_never_processed(err: &HyperError, what: &str) {
    assert_eq!(err.kind(), ErrorKind::Refused, "{what}: {err:?}");
    assert!(!err.may_have_reached_server(), "{what}: {err:?}");
    let class = ErrorClass::of(err);
    assert!(class.is_transient(), "{what}: {class:?}");
    assert!(class.request_not_sent(), "{what}: {class:?}");
    assert_eq!(
        h2_reason(err),
        Some(Reason::REFUSED_STREAM),
        "{what}: the h2 error stays in the chain: {err:?}"
    );
    assert!(err.to_string().contains("REFUSED_STREAM"), "{what}: {err}");
}

#[tokio::test]
async fn a_refused_stream_was_never_processed_so_even_a_post_may_be_sent_again() {
    let addr = resetting_server(Reason::REFUSED_STREAM, ResetAt::Head).await;
    let url = format!("http://{addr}/orders");
    for (name, t) in transports() {
        let err = t.send(post(&url)).await.unwrap_err();
        assert_never_processed(&err, &format!("{name} POST"));
        let err = t.send(get(&url)).await.unwrap_err();
        assert_never_processed(&err, &format!("{name} GET"));
    }
}

#[tokio::test]
async fn an_ordinary_reset_may_have_reached_the_server() {
    let addr = resetting_server(Reason::INTERNAL_ERROR, ResetAt::Head).await;
    let url = format!("http://{addr}/orders");
    for (name, t) in transports() {
        let err = t.send(post(&url)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Read, "{name}: {err:?}");
        assert!(err.may_have_reached_server(), "{name}: {err:?}");
        assert_eq!(ErrorClass::of(&err), ErrorClass::Reset, "{name}");
        assert!(!ErrorClass::of(&err).request_not_sent(), "{name}");
        assert_eq!(h2_reason(&err), Some(Reason::INTERNAL_ERROR), "{name}");
    }
}

/// A response head proves the server processed the request, whatever
/// reason the reset that follows gives.
#[tokio::test]
async fn refused_stream_after_the_response_head_may_have_reached_the_server() {
    let head_seen = Arc::new(Notify::new());
    let addr = resetting_server(Reason::REFUSED_STREAM, ResetAt::Body(head_seen.clone())).await;
    let url = format!("http://{addr}/orders");
    for (name, t) in transports() {
        let res = t.send(post(&url)).await.expect("the head arrives");
        assert_eq!(res.status(), 200, "{name}");
        head_seen.notify_one();
        let err = read_all(res.into_body()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Read, "{name}: {err:?}");
        assert!(err.may_have_reached_server(), "{name}: {err:?}");
        assert!(!ErrorClass::of(&err).request_not_sent(), "{name}");
    }
}
