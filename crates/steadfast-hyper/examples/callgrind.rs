//! A deterministic cost probe: `N` sequential GETs against an in-process
//! hyper HTTP/1.1 server, through either the bare hyper-util legacy client
//! or [`HyperTransport`], on one current-thread runtime.
//!
//! Meant to run under callgrind, twice per client (`N` and `2N`), so the
//! difference of the totals divided by `N` is the cost of one request with
//! the start-up cost cancelled out:
//!
//! ```text
//! cargo build --release -p steadfast-hyper --example callgrind
//! for c in bare transport; do for n in 5000 10000; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$c.$n \
//!     target/release/examples/callgrind $c $n
//! done; done
//! callgrind_annotate cg.transport.10000 | head -60
//! ```
//!
//! Clients: `bare` (hyper-util, `HttpConnector` with `TCP_NODELAY`),
//! `bare-timeout` (the same inside `tokio::time::timeout`), `transport`
//! (defaults, no-op pool observer), `observed` (with a pool observer that
//! counts events, so the exact acquire path runs), `pool-stats` (with
//! steadfast-pool's `PoolStats`; needs `--features pool-stats`), `deadline`
//! (each request carries a `steadfast_core::Deadline`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use steadfast_core::pool::{Acquired, ConnectionId, HostObserver, NoopPoolObserver, PoolObserver};
use steadfast_core::{Deadline, Transport};
use steadfast_hyper::HyperTransport;

/// Counts pool events with one relaxed add each.
#[derive(Debug, Default)]
struct Counting(AtomicU64);

impl HostObserver for Counting {
    fn acquire_started(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn acquire_finished(&self, _: Duration, _: Acquired) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn connection_released(&self, _: ConnectionId, _: Duration) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl PoolObserver for Counting {
    fn host(&self, _: &str) -> Arc<dyn HostObserver> {
        Arc::new(Self::default())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let client = args.next().unwrap_or_else(|| "transport".into());
    let n: u64 = args.next().map_or(10_000, |s| s.parse().expect("a count"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let uri: http::Uri = format!("http://{}/", listener.local_addr().expect("addr"))
            .parse()
            .expect("a URI");
        tokio::spawn(serve(listener));
        let get = || {
            http::Request::get(uri.clone())
                .body(Empty::<Bytes>::new())
                .expect("a request")
        };
        match client.as_str() {
            "bare" | "bare-timeout" => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                let bare: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_max_idle_per_host(100)
                    .build(connector);
                let timeout = client == "bare-timeout";
                for _ in 0..n {
                    let res = if timeout {
                        // What a caller adds to get any timeout at all.
                        tokio::time::timeout(Duration::from_secs(30), bare.request(get()))
                            .await
                            .expect("in time")
                    } else {
                        bare.request(get()).await
                    };
                    let body = res.expect("a response").into_body().collect().await;
                    assert_eq!(body.expect("a body").to_bytes().len(), 2);
                }
            }
            "transport" | "observed" | "pool-stats" | "deadline" => {
                let mut builder = HyperTransport::builder();
                match client.as_str() {
                    "observed" => builder = builder.pool_observer(Arc::new(Counting::default())),
                    #[cfg(feature = "pool-stats")]
                    "pool-stats" => builder = builder.pool_stats(steadfast_pool::PoolStats::new()),
                    #[cfg(not(feature = "pool-stats"))]
                    "pool-stats" => panic!("pool-stats needs the `pool-stats` feature"),
                    // With `pool-stats` on, the default is a PoolStats: opt out.
                    _ => builder = builder.pool_observer(Arc::new(NoopPoolObserver)),
                }
                let t = builder.build().expect("a transport");
                for _ in 0..n {
                    let mut req = get();
                    if client == "deadline" {
                        Deadline::after(Duration::from_secs(60)).apply(&mut req);
                    }
                    let res = t.send(req).await.expect("a response");
                    let body = res.into_body().collect().await.expect("a body");
                    assert_eq!(body.to_bytes().len(), 2);
                }
            }
            other => panic!(
                "unknown client {other:?}: bare, bare-timeout, transport, observed, pool-stats or deadline"
            ),
        }
    });
}

/// Answers `200 ok` on every connection.
async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let (tcp, _) = listener.accept().await.expect("accept");
        tcp.set_nodelay(true).expect("nodelay");
        tokio::spawn(async move {
            let svc = service_fn(|_req| async {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
