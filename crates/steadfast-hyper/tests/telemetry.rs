//! The transport's tracing events, caught by a minimal subscriber: the
//! builder's `name` shows on them, and the protocol is the one spoken.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, Once};
use std::time::Duration;

use common::{get, read_all};
use steadfast_core::Transport;
use steadfast_hyper::HyperTransport;
use steadfast_testkit::FaultServer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};

type Fields = BTreeMap<&'static str, String>;

/// Every event of this crate, from every test of this binary.
static EVENTS: Mutex<Vec<Fields>> = Mutex::new(Vec::new());

struct Catch;

struct Visitor(Fields);

impl Visit for Visitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

impl tracing::Subscriber for Catch {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        if !event.metadata().target().starts_with("steadfast_hyper") {
            return;
        }
        let mut fields = Visitor(Fields::new());
        event.record(&mut fields);
        EVENTS.lock().unwrap().push(fields.0);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn catch_events() {
    static INIT: Once = Once::new();
    INIT.call_once(|| tracing::subscriber::set_global_default(Catch).unwrap());
}

/// The events of the transport named `name`, by message.
fn events_of(name: &str) -> Vec<Fields> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.get("policy.name").map(String::as_str) == Some(name))
        .cloned()
        .collect()
}

fn has(events: &[Fields], message: &str) -> bool {
    events.iter().any(|e| e["message"] == message)
}

async fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn events_carry_the_transports_name() {
    catch_events();
    let server = FaultServer::start().await;
    let t = HyperTransport::builder()
        .name("billing-api")
        .max_connections_per_host(1)
        .pool_acquire_timeout(Duration::from_millis(50))
        .pool_idle_timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    let slow = tokio::spawn({
        let t = t.clone();
        let url = server.url("/slow?ms=400");
        async move { t.send(get(&url)).await }
    });
    assert!(wait_until(|| t.snapshot().connections_open == 1).await);
    let err = t.send(get(&server.url("/status/200"))).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    read_all(slow.await.unwrap().unwrap().into_body())
        .await
        .unwrap();
    // An abandoned body is drained on the connection.
    drop(t.send(get(&server.url("/bytes/100"))).await.unwrap());
    assert!(wait_until(|| t.snapshot().drains_running() == 0).await);
    assert!(wait_until(|| t.snapshot().connections_open == 0).await);

    let events = events_of("billing-api");
    for message in [
        "connection opened",
        "connection cap reached, waiting for a slot",
        "pool exhausted: no connection slot became free in time",
        "abandoned response drained",
        "connection closed",
    ] {
        assert!(
            has(&events, message),
            "{message:?} without the name: {events:#?}"
        );
    }
}

/// h2c connections speak HTTP/2 from the first byte, whatever a handshake
/// said (there is none).
#[cfg(feature = "http2")]
#[tokio::test]
async fn prior_knowledge_connections_are_logged_as_http2() {
    catch_events();
    let server = FaultServer::start().await;
    let t = HyperTransport::builder()
        .name("h2c-api")
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = t.send(get(&server.url("/status/200"))).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let events = events_of("h2c-api");
    let opened: Vec<_> = events
        .iter()
        .filter(|e| e["message"] == "connection opened")
        .collect();
    assert_eq!(opened.len(), 1, "{events:#?}");
    assert_eq!(opened[0]["network.protocol.version"], "2", "{events:#?}");
}
