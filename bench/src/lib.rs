//! Shared helpers for the comparison benchmarks: the clocks and the
//! statistics of their interleaved A/B modes (`HYPER_AB`, `BREAKER_AB`).

use std::time::Duration;

/// On-CPU time of the calling thread so far (Linux), if readable: time
/// the thread spent descheduled for other tenants does not count.
#[must_use]
pub fn thread_cpu_time() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u32::try_from(t.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

/// On-CPU time of every thread of this process so far (Linux, from
/// `/proc/self/task/*/schedstat`), if readable.
#[must_use]
pub fn process_cpu_time() -> Option<Duration> {
    let mut total = 0_u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// First quartile, median and third quartile of `v` (sorted in place).
///
/// # Panics
///
/// If `v` is empty.
#[must_use]
pub fn quartiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}
