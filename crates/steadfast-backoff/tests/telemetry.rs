//! Tracing: each attempt runs in an `http.client.attempt` span (so the
//! transport's own events nest under it), and events carry OpenTelemetry
//! field names and values. A small hand-written subscriber records them.
#![cfg(not(loom))] // the test tools need tokio's `net`, which loom builds leave out

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use steadfast_backoff::{Backoff, Hedging, Retry, RetryConfig};
use steadfast_core::{Transport, transport_fn};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

type Fields = HashMap<String, String>;

#[derive(Clone, Debug)]
struct Recorded {
    message: String,
    fields: Fields,
    /// The name and fields of the span the event was emitted in.
    span: Option<(String, Fields)>,
}

#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, (String, Fields)>>,
    stack: Mutex<Vec<u64>>,
    events: Mutex<Vec<Recorded>>,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// The subscriber: a handle on the recorder the test reads afterwards.
struct Handle(Arc<Recorder>);

impl Subscriber for Handle {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::new();
        span.record(&mut Collect(&mut fields));
        self.0
            .spans
            .lock()
            .unwrap()
            .insert(id, (span.metadata().name().to_owned(), fields));
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        let span = self
            .0
            .stack
            .lock()
            .unwrap()
            .last()
            .and_then(|id| self.0.spans.lock().unwrap().get(id).cloned());
        self.0.events.lock().unwrap().push(Recorded {
            message,
            fields,
            span,
        });
    }

    fn enter(&self, span: &Id) {
        self.0.stack.lock().unwrap().push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut stack = self.0.stack.lock().unwrap();
        if let Some(i) = stack.iter().rposition(|id| *id == span.into_u64()) {
            stack.remove(i);
        }
    }
}

/// A transport that logs "inner transport sends" from within each attempt
/// and answers call `i` (from 0) after `answer(i).0` ms with status
/// `answer(i).1`.
fn scripted(
    answer: fn(usize) -> (u64, u16),
) -> impl Transport<Full<Bytes>, Body = (), Error = std::io::Error> {
    let calls = Arc::new(AtomicUsize::new(0));
    transport_fn(move |_req: Request<Full<Bytes>>| {
        let (delay, status) = answer(calls.fetch_add(1, Ordering::SeqCst));
        async move {
            tracing::info!("inner transport sends");
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            Ok::<_, std::io::Error>(Response::builder().status(status).body(()).unwrap())
        }
    })
}

fn get_x() -> Request<Full<Bytes>> {
    Request::get("http://api.test/x")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn attempts_have_spans_and_events_carry_otel_values() {
    let recorder = Arc::new(Recorder::default());
    let _guard = tracing::subscriber::set_default(Handle(Arc::clone(&recorder)));
    let t = scripted(|i| (0, if i == 0 { 503 } else { 200 }));
    let config = RetryConfig::builder()
        .name("api")
        .backoff(Backoff::default().seed(1))
        .build()
        .unwrap();
    let retry = Retry::new(t, config);

    let res = retry.send(get_x()).await.unwrap();
    assert_eq!(res.status(), 200);

    let events = recorder.events.lock().unwrap().clone();
    let inner: Vec<_> = events
        .iter()
        .filter(|e| e.message == "inner transport sends")
        .collect();
    assert_eq!(inner.len(), 2, "{events:#?}");
    for (n, e) in inner.iter().enumerate() {
        let (name, fields) = e.span.as_ref().expect("the transport's event is in a span");
        assert_eq!(name, "http.client.attempt");
        assert_eq!(fields["http.request.resend_count"], n.to_string());
        assert_eq!(fields["retry.name"], "api");
        assert_eq!(fields["retry.hedge"], "false");
    }
    let retrying = events
        .iter()
        .find(|e| e.message == "retrying request")
        .expect("a retry event");
    assert_eq!(
        retrying.fields["error.type"], "503",
        "the status code, as OTel says"
    );
    assert_eq!(retrying.fields["http.response.status_code"], "503");
    assert_eq!(retrying.fields["http.request.resend_count"], "1");
    assert!(
        retrying.span.is_none(),
        "announced between attempts, not in one"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hedge_has_its_own_span_and_giving_up_names_the_error_type() {
    let recorder = Arc::new(Recorder::default());
    let _guard = tracing::subscriber::set_default(Handle(Arc::clone(&recorder)));
    // The first copy answers 503 after 300 ms, its hedge (at 50 ms) after 10.
    let t = scripted(|i| (if i == 0 { 300 } else { 10 }, 503));
    let config = RetryConfig::builder()
        .name("api")
        .max_retries(0)
        .hedging(Hedging::after(std::time::Duration::from_millis(50)))
        .build()
        .unwrap();
    let retry = Retry::new(t, config);

    let res = retry.send(get_x()).await.unwrap();
    assert_eq!(res.status(), 503);

    let events = recorder.events.lock().unwrap().clone();
    let spans: Vec<_> = events
        .iter()
        .filter(|e| e.message == "inner transport sends")
        .map(|e| {
            let (name, fields) = e.span.clone().expect("in a span");
            assert_eq!(name, "http.client.attempt");
            (
                fields["http.request.resend_count"].clone(),
                fields["retry.hedge"].clone(),
            )
        })
        .collect();
    assert_eq!(
        spans,
        [("0".into(), "false".into()), ("1".into(), "true".into())],
        "{events:#?}"
    );
    let gave_up = events
        .iter()
        .find(|e| e.message == "not retrying")
        .expect("a give-up event");
    assert_eq!(gave_up.fields["error.type"], "503");
    assert_eq!(gave_up.fields["http.request.resend_count"], "1");
}
