//! Plain structs read out of [`PoolStats`](crate::PoolStats): log them,
//! print them (`Display`), serialize them (feature `serde`) or export them
//! (feature `metrics`).

use std::fmt;
use std::time::Duration;

use crate::histogram::HistogramSnapshot;
use crate::key;

/// Every host of a pool, and their sum.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PoolSnapshot {
    /// The pool's name, if it has one.
    pub name: Option<String>,
    /// Whether per-connection tracking was on (it fills
    /// `requests_per_connection` and lets the leak detector name connections).
    pub track_connections: bool,
    /// All hosts added up (host `*`). Histograms are merged bucket by
    /// bucket; `peak_open` is the sum of the per-host peaks, an upper bound.
    pub total: HostSnapshot,
    /// One entry per pool key, in key order.
    pub hosts: Vec<HostSnapshot>,
}

impl PoolSnapshot {
    /// The entry of pool key `key`.
    pub fn host(&self, key: &str) -> Option<&HostSnapshot> {
        self.hosts.iter().find(|h| h.host == key)
    }
}

/// The counters of one pool key at one instant.
///
/// Gauges (`open`, `in_flight`, `waiting`) are derived from the monotonic
/// totals, read end-counters first, so they are never negative and never
/// miss a start whose end they saw. With per-connection tracking, `in_use`
/// counts the connections the tracking table finds serving a request,
/// clamped to `open`; `idle` is the rest, so `open == idle + in_use` in
/// every snapshot, races included.
///
/// `in_use` and `idle` count connections, `in_flight` and `waiting`
/// requests. On HTTP/1 a busy connection serves one request, so
/// `in_use == in_flight` once events settle (a snapshot taken while a
/// request starts or ends may see one before the other); a multiplexed HTTP/2 connection serving five
/// streams is one connection `in_use` and five requests `in_flight`.
/// Without per-connection tracking `in_use` is estimated as `in_flight`
/// clamped to `open` (exact on HTTP/1).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HostSnapshot {
    /// The pool key (`scheme://host:port`), or `*` for the total.
    pub host: String,
    /// Connections open now.
    pub open: u64,
    /// Open connections not serving a request: `open − in_use`.
    pub idle: u64,
    /// Open connections serving at least one request.
    pub in_use: u64,
    /// Requests holding a connection now (HTTP/2 streams count one each).
    pub in_flight: u64,
    /// Requests waiting for a connection now.
    pub waiting: u64,
    /// Most connections open at once.
    pub peak_open: u64,
    /// Connections opened so far.
    pub opened_total: u64,
    /// Connections closed so far.
    pub closed_total: u64,
    /// Acquires served by an idle pooled connection.
    pub reused_total: u64,
    /// Acquires served by a connection opened for them.
    pub new_total: u64,
    /// Acquires that hit the pool timeout.
    pub timed_out_total: u64,
    /// Acquires whose connect failed.
    pub failed_total: u64,
    /// Acquires abandoned because the request was dropped while waiting.
    pub cancelled_total: u64,
    /// Requests that gave their connection back.
    pub released_total: u64,
    /// Requests the leak detector found holding their connection past its
    /// threshold (each held request counted once).
    pub held_too_long_total: u64,
    /// Times the leak detector found this host stuck: requests in use
    /// through a whole quiescence period with no new request.
    pub stuck_total: u64,
    /// Time from starting to wait for a connection to getting one (or
    /// giving up), every outcome included.
    pub acquire_wait: HistogramSnapshot<Duration>,
    /// The part of `acquire_wait` that ended with a new connection: connect
    /// (and TLS) time plus any queueing before it.
    pub new_connection_wait: HistogramSnapshot<Duration>,
    /// Time a request held its connection (until its body was finished or
    /// dropped).
    pub hold_time: HistogramSnapshot<Duration>,
    /// Lifetime of closed connections.
    pub connection_lifetime: HistogramSnapshot<Duration>,
    /// Requests served by each closed connection (needs per-connection
    /// tracking; empty without).
    pub requests_per_connection: HistogramSnapshot<u64>,
}

impl HostSnapshot {
    /// Successful acquires: `reused_total + new_total`.
    pub fn acquired_total(&self) -> u64 {
        self.reused_total + self.new_total
    }

    /// Share of successful acquires served by a reused connection
    /// (`0.0..=1.0`; `0.0` before any acquire).
    pub fn reuse_ratio(&self) -> f64 {
        ratio(self.reused_total, self.acquired_total())
    }

    /// Mean requests per connection opened, live connections included.
    pub fn mean_requests_per_connection(&self) -> f64 {
        ratio(self.acquired_total(), self.opened_total)
    }

    /// The host part of the pool key (OpenTelemetry `server.address`).
    pub fn server_address(&self) -> &str {
        key::split(&self.host).address
    }

    /// The port of the pool key, or the scheme's default (`server.port`).
    pub fn server_port(&self) -> Option<u16> {
        key::split(&self.host).port
    }

    /// The scheme of the pool key (`url.scheme`).
    pub fn url_scheme(&self) -> Option<&str> {
        key::split(&self.host).scheme
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl fmt::Display for HostSnapshot {
    /// Two lines: gauges and totals, then the histograms.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: open {} (idle {}, in use {}), waiting {}, peak open {}; \
             opened {}, closed {}; acquired {} ({:.1}% reused), timed out {}, failed {}, cancelled {}",
            self.host,
            self.open,
            self.idle,
            self.in_use,
            self.waiting,
            self.peak_open,
            self.opened_total,
            self.closed_total,
            self.acquired_total(),
            self.reuse_ratio() * 100.0,
            self.timed_out_total,
            self.failed_total,
            self.cancelled_total,
        )?;
        if self.in_flight != self.in_use {
            // Multiplexed (or racing) only; HTTP/1 lines stay as they were.
            writeln!(f, "  {} requests in flight", self.in_flight)?;
        }
        write!(
            f,
            "  wait p50 {} p99 {}; hold p50 {} p99 {}; lifetime p50 {}; {:.1} requests/connection",
            Short(self.acquire_wait.p50),
            Short(self.acquire_wait.p99),
            Short(self.hold_time.p50),
            Short(self.hold_time.p99),
            Short(self.connection_lifetime.p50),
            self.mean_requests_per_connection(),
        )?;
        if self.held_too_long_total + self.stuck_total > 0 {
            write!(
                f,
                "; leaks: {} held too long, {} stuck",
                self.held_too_long_total, self.stuck_total
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for PoolSnapshot {
    /// The total, then one entry per host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.name {
            writeln!(f, "pool {name:?}")?;
        }
        write!(f, "{}", self.total)?;
        for host in &self.hosts {
            write!(f, "\n{host}")?;
        }
        Ok(())
    }
}

/// A duration with three significant digits: `1.23ms`, `45.6µs`, `2.00s`.
pub(crate) struct Short(pub(crate) Duration);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos() as f64;
        if nanos == 0.0 {
            return f.write_str("0s");
        }
        let (value, unit) = if nanos < 1e3 {
            (nanos, "ns")
        } else if nanos < 1e6 {
            (nanos / 1e3, "µs")
        } else if nanos < 1e9 {
            (nanos / 1e6, "ms")
        } else {
            (nanos / 1e9, "s")
        };
        let decimals = match value {
            v if v < 10.0 => 2,
            v if v < 100.0 => 1,
            _ => 0,
        };
        write!(f, "{value:.decimals$}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations_read_well() {
        let s = |d| Short(d).to_string();
        assert_eq!(s(Duration::ZERO), "0s");
        assert_eq!(s(Duration::from_nanos(7)), "7.00ns");
        assert_eq!(s(Duration::from_nanos(1_234)), "1.23µs");
        assert_eq!(s(Duration::from_micros(45_600)), "45.6ms");
        assert_eq!(s(Duration::from_secs(200)), "200s");
    }
}
