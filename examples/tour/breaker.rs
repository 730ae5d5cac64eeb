//! Chapter: the circuit breaker opens on a failing route, fails fast while
//! open, probes, and closes when the route heals.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use steadfast_breaker::{BreakerConfig, BreakerLayer, HalfOpen};
use steadfast_core::{Transport, TransportExt, transport_fn};
use steadfast_testkit::FaultServer;

use crate::BoxError;
use crate::say::{detail, line};

pub(crate) async fn run(server: &FaultServer) -> Result<(), BoxError> {
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let started = Instant::now();
    // The callback runs while the request that caused the transition is
    // still in flight: its lines wait until that request's own is printed.
    let transitions = Transitions::default();
    let record = transitions.clone();
    let config = BreakerConfig::builder()
        .name("tour")
        .consecutive_failures(3)
        .break_duration(Duration::from_millis(250))
        .break_growth(2.0)
        .half_open(HalfOpen::quick())
        .on_transition(move |e| {
            let t = e.transition;
            let pause = t
                .break_duration
                .map(|d| format!(", break {} ms", d.as_millis()))
                .unwrap_or_default();
            record.push(
                format!("  ⇢ at {:>4} ms", started.elapsed().as_millis()),
                format!("{} → {} ({}{pause})", t.from, t.to, t.reason),
            );
        })
        .build()?;
    let layer = BreakerLayer::per_origin(config);
    let registry = layer.registry().expect("a per-origin layer").clone();
    let client = transport_fn(move |req: Request<Empty<Bytes>>| hyper.request(req)).with(layer);

    // /flaky fails 4 times for this key, then answers 200: an outage that heals.
    let url = server.url("/flaky?fail=4&key=tour-breaker");
    // Other chapters use /flaky too: count this chapter's hits only.
    let hits_at_start = server.hits("/flaky");
    let hits = || server.hits("/flaky") - hits_at_start;
    line("One breaker per origin (scheme://host:port); it opens after 3 failures in a row.");
    line("⇢ marks a state change, timed from the start of this chapter.");
    line("GET /flaky, which fails four times and then heals:");

    for i in 1..=3 {
        show(&transitions, &format!("#{i}"), get(&client, &url).await);
    }

    line("");
    line("Open: calls fail at once, without touching the network.");
    let before = hits();
    let t = Instant::now();
    for i in 4..=8 {
        show(&transitions, &format!("#{i}"), get(&client, &url).await);
    }
    detail(
        "server hits",
        format!(
            "{} before, {} after ({} µs for five rejections)",
            before,
            hits(),
            t.elapsed().as_micros()
        ),
    );

    line("");
    line("After the break one probe goes out; it still fails, so the break doubles.");
    tokio::time::sleep(Duration::from_millis(260)).await;
    show(&transitions, "probe", get(&client, &url).await);
    show(&transitions, "next", get(&client, &url).await);

    line("");
    line("After the longer break the probe finds the route healed: closed again.");
    tokio::time::sleep(Duration::from_millis(510)).await;
    for label in ["probe", "next", "next"] {
        show(&transitions, label, get(&client, &url).await);
    }

    let key = format!("http://{}", server.addr());
    let snap = registry.get(&key).expect("the origin's breaker").snapshot();
    line("");
    line(format!("Snapshot of the breaker for {key}:"));
    detail("state", snap.state);
    detail(
        "window",
        format!(
            "{} calls, {} failed (reset on close)",
            snap.window.calls, snap.window.failures
        ),
    );
    detail("rejections", snap.rejections);
    detail(
        "transitions",
        format!("{} ({} openings)", snap.transitions, snap.opened),
    );
    detail(
        "server saw",
        format!(
            "{} requests; the other {} never left the client",
            hits(),
            snap.rejections
        ),
    );
    line("A rejection is BreakerOpen { key, retry_after }. A retry layer outside the");
    line("breaker stops on it by default; give it a classifier that calls");
    line("open.outcome() (Outcome::Retryable { after: Some(retry_after) }) to wait");
    line("out the break instead.");
    Ok(())
}

/// Transitions reported while a request was in flight, printed after it.
#[derive(Clone, Default)]
struct Transitions(Arc<Mutex<Vec<(String, String)>>>);

impl Transitions {
    fn push(&self, key: String, value: String) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((key, value));
    }

    fn print(&self) {
        let lines = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (key, value) in lines {
            detail(&key, value);
        }
    }
}

/// Sends one GET; a rejection or a transport error becomes its message.
async fn get<T: Transport<Empty<Bytes>>>(client: &T, url: &str) -> Result<u16, String> {
    let req = Request::get(url)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    // The body is dropped unread: these responses are a few bytes.
    client
        .send(req)
        .await
        .map(|res| res.status().as_u16())
        .map_err(|e| steadfast_core::Report::new(&e).to_string())
}

/// Prints a request's result, then the transitions it caused.
fn show(transitions: &Transitions, label: &str, result: Result<u16, String>) {
    match result {
        Ok(status) => detail(label, format!("{status} from the server")),
        Err(e) => detail(label, e),
    }
    transitions.print();
}
