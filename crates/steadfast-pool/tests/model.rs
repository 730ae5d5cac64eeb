//! `PoolStats` against a reference model: any interleaving of valid pool
//! events (several requests waiting, holding and releasing, connections
//! opening and closing, time passing) keeps every gauge, total, histogram
//! count and leak finding equal to what the model says.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use steadfast_pool::{
    Acquired, ConnectionId, HostObserver, HostSnapshot, LeakDetector, PoolObserver, PoolStats,
};
use tokio::time::Instant;

const KEY: &str = "http://model.test:80";
const THRESHOLD: Duration = Duration::from_secs(10);

/// An intent; the model turns it into a valid event or skips it.
#[derive(Debug, Clone)]
enum Op {
    Open,
    Close(usize),
    Start,
    Finish {
        request: usize,
        outcome: u8,
        connection: usize,
        wait_ms: u64,
    },
    /// A request gives its connection back, reporting (as transports do)
    /// how long it held it.
    Release(usize),
    Advance(u64),
    Check,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Open),
        1 => any::<usize>().prop_map(Op::Close),
        4 => Just(Op::Start),
        4 => (any::<usize>(), 0u8..8, any::<usize>(), 0u64..5_000).prop_map(
            |(request, outcome, connection, wait_ms)| Op::Finish { request, outcome, connection, wait_ms }
        ),
        4 => any::<usize>().prop_map(Op::Release),
        2 => (0u64..8_000).prop_map(Op::Advance),
        1 => Just(Op::Check),
    ]
}

#[derive(Debug, Default)]
struct Conn {
    opened_at: Option<Instant>,
    /// When each request using it now acquired it.
    started: Vec<Instant>,
    requests: u64,
    /// The start of the request last reported as held too long.
    reported: Option<Instant>,
}

impl Conn {
    fn in_flight(&self) -> u32 {
        self.started.len() as u32
    }
}

#[derive(Debug, Default)]
struct Model {
    next_id: u64,
    conns: BTreeMap<u64, Conn>,
    waiting: Vec<Instant>,
    holding: Vec<(u64, Instant)>,
    opened: u64,
    closed: u64,
    reused: u64,
    new: u64,
    timed_out: u64,
    failed: u64,
    cancelled: u64,
    released: u64,
    held_too_long: u64,
    requests_of_closed: Vec<u64>,
}

impl Model {
    fn idle_conns(&self) -> Vec<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| c.started.is_empty())
            .map(|(&id, _)| id)
            .collect()
    }
}

/// Applies `op` to both; `http1` keeps every connection to one request at a
/// time and closes only idle connections, so `idle` can be checked exactly.
fn apply(op: &Op, http1: bool, model: &mut Model, host: &dyn HostObserver, now: Instant) {
    match *op {
        Op::Open => {
            let id = model.next_id;
            model.next_id += 1;
            model.conns.insert(
                id,
                Conn {
                    opened_at: Some(now),
                    ..Conn::default()
                },
            );
            model.opened += 1;
            host.connection_opened(ConnectionId(id));
        }
        Op::Close(pick) => {
            let candidates: Vec<u64> = if http1 {
                model.idle_conns()
            } else {
                model.conns.keys().copied().collect()
            };
            if candidates.is_empty() {
                return;
            }
            let id = candidates[pick % candidates.len()];
            let conn = model.conns.remove(&id).unwrap();
            model.closed += 1;
            model.requests_of_closed.push(conn.requests);
            host.connection_closed(ConnectionId(id), now - conn.opened_at.unwrap());
        }
        Op::Start => {
            model.waiting.push(now);
            host.acquire_started();
        }
        Op::Finish {
            request,
            outcome,
            connection,
            wait_ms,
        } => {
            if model.waiting.is_empty() {
                return;
            }
            model.waiting.swap_remove(request % model.waiting.len());
            let wait = Duration::from_millis(wait_ms);
            let usable: Vec<u64> = if http1 {
                model.idle_conns()
            } else {
                model.conns.keys().copied().collect()
            };
            let result = match outcome {
                0..=4 if !usable.is_empty() => {
                    let id = usable[connection % usable.len()];
                    let conn = model.conns.get_mut(&id).unwrap();
                    conn.started.push(now);
                    conn.requests += 1;
                    model.holding.push((id, now));
                    if outcome < 3 {
                        model.reused += 1;
                        Acquired::Reused(ConnectionId(id))
                    } else {
                        model.new += 1;
                        Acquired::New(ConnectionId(id))
                    }
                }
                5 => {
                    model.timed_out += 1;
                    Acquired::TimedOut
                }
                6 => {
                    model.cancelled += 1;
                    Acquired::Cancelled
                }
                _ => {
                    model.failed += 1;
                    Acquired::Failed
                }
            };
            host.acquire_finished(wait, result);
        }
        Op::Release(request) => {
            if model.holding.is_empty() {
                return;
            }
            let (id, at) = model.holding.swap_remove(request % model.holding.len());
            if let Some(conn) = model.conns.get_mut(&id) {
                let i = conn.started.iter().position(|&t| t == at).unwrap();
                conn.started.swap_remove(i);
            }
            model.released += 1;
            host.connection_released(ConnectionId(id), now - at);
        }
        Op::Advance(_) | Op::Check => {}
    }
}

fn assert_matches(model: &Model, snap: &HostSnapshot, http1: bool) -> Result<(), TestCaseError> {
    let open = model.conns.len() as u64;
    let busy = open - model.idle_conns().len() as u64;
    prop_assert_eq!(snap.open, open);
    prop_assert_eq!(snap.in_use, busy);
    // Requests on a connection closed under them still count until released.
    prop_assert_eq!(snap.in_flight, model.holding.len() as u64);
    prop_assert_eq!(snap.waiting, model.waiting.len() as u64);
    prop_assert_eq!(snap.idle + snap.in_use, snap.open);
    if http1 {
        prop_assert_eq!(snap.idle, model.idle_conns().len() as u64);
    }
    prop_assert_eq!(snap.opened_total, model.opened);
    prop_assert_eq!(snap.closed_total, model.closed);
    prop_assert_eq!(snap.reused_total, model.reused);
    prop_assert_eq!(snap.new_total, model.new);
    prop_assert_eq!(snap.timed_out_total, model.timed_out);
    prop_assert_eq!(snap.failed_total, model.failed);
    prop_assert_eq!(snap.cancelled_total, model.cancelled);
    prop_assert_eq!(snap.released_total, model.released);
    prop_assert_eq!(snap.held_too_long_total, model.held_too_long);
    let finished = model.reused + model.new + model.timed_out + model.failed + model.cancelled;
    prop_assert_eq!(snap.acquire_wait.count, finished);
    prop_assert_eq!(snap.new_connection_wait.count, model.new);
    prop_assert_eq!(snap.hold_time.count, model.released);
    prop_assert_eq!(snap.connection_lifetime.count, model.closed);
    // Each closed connection's request count sits in a bucket that holds it.
    prop_assert_eq!(snap.requests_per_connection.count, model.closed);
    for bucket in &snap.requests_per_connection.buckets {
        let expected = model
            .requests_of_closed
            .iter()
            .filter(|&&r| bucket.lower <= r && r <= bucket.upper)
            .count() as u64;
        prop_assert_eq!(bucket.count, expected, "bucket {:?}", bucket);
    }
    Ok(())
}

fn run(ops: &[Op], http1: bool) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let stats = PoolStats::new();
        let detector = LeakDetector::builder(stats.clone())
            .threshold(THRESHOLD)
            .build()
            .unwrap();
        let host = stats.host(KEY);
        let mut model = Model::default();
        for op in ops {
            let now = Instant::now();
            apply(op, http1, &mut model, &*host, now);
            match *op {
                Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                Op::Check => {
                    let report = detector.check(now);
                    let mut expected: Vec<(u64, Duration, u32, bool)> = Vec::new();
                    for (&id, conn) in &mut model.conns {
                        // Per request: the connection's oldest one.
                        let Some(since) = conn.started.iter().min().copied() else {
                            continue;
                        };
                        let age = now - since;
                        if age >= THRESHOLD {
                            let newly = conn.reported != Some(since);
                            expected.push((id, age, conn.in_flight(), newly));
                            if newly {
                                conn.reported = Some(since);
                                model.held_too_long += 1;
                            }
                        }
                    }
                    let mut got: Vec<_> = report
                        .held
                        .iter()
                        .map(|h| (h.connection.0, h.age, h.in_flight, h.newly_detected))
                        .collect();
                    got.sort_unstable();
                    prop_assert_eq!(got, expected);
                }
                _ => {}
            }
            assert_matches(&model, &stats.host_snapshot(KEY).unwrap(), http1)?;
        }
        // The total of a one-host pool is that host.
        let snap = stats.snapshot();
        prop_assert_eq!(snap.total.open, snap.hosts[0].open);
        prop_assert_eq!(
            snap.total.acquire_wait.count,
            snap.hosts[0].acquire_wait.count
        );
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn http1_interleavings_match_the_model(ops in proptest::collection::vec(op(), 0..120)) {
        run(&ops, true)?;
    }

    #[test]
    fn multiplexed_and_closing_under_load_match_the_model(ops in proptest::collection::vec(op(), 0..120)) {
        run(&ops, false)?;
    }
}
