//! The host's own observability, below every stage: where self-metrics register and how
//! warnings are rate-limited.
//!
//! Inputs: the `wasmtap_host_*` and `wasmtap_analyzer_*` families, each defined by the stage
//! that decides its values (capture: packets and drops; interfaces: interface state; runtime:
//! analyzer calls, failures and states; registry: series counts; exporter: refused requests),
//! and collectors that compute gauges while rendering.
//! Output: their text exposition, one `(name, text)` part per family, which the registry
//! merges with the analyzers' families into the one exposition.
//!
//! This module imports nothing from the rest of the host, so that every stage can use it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The self-metric families of one pipeline.
#[derive(Default)]
pub struct SelfMetrics {
    /// Families whose values depend on the input alone (and on the running host).
    families: Registry,
    /// Wall-clock timings and CPU times: left out of a replay's output (unless asked for),
    /// which must depend on the capture alone.
    timings: Registry,
    /// `wasmtap_host_thread_cpu_seconds_total`, registered by the first thread that counts.
    thread_cpu: OnceLock<Option<CounterVec>>,
}

/// The CPU time of the host's busy threads, each counted by the thread itself.
pub const THREAD_CPU: &str = "wasmtap_host_thread_cpu_seconds_total";

impl SelfMetrics {
    /// A counter family with `labels`.
    pub fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        register(&self.families, IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    /// A gauge family with `labels`.
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        register(&self.families, IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    /// A histogram of wall-clock durations, with `buckets` in seconds.
    pub fn timing(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> prometheus::Result<HistogramVec> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        register(&self.timings, HistogramVec::new(opts, labels)?)
    }

    /// The clocks of the host's packet threads: [`THREAD_CPU`], registered once, for every
    /// stage that runs such a thread.
    pub fn cpu_clocks(&self) -> CpuClocks {
        let family = self.thread_cpu.get_or_init(|| {
            let help = "CPU time the host's packet threads used (user and system, from the \
                        kernel's per-thread clock), per thread: the workers and the captures.";
            CounterVec::new(Opts::new(THREAD_CPU, help), &["thread"])
                .and_then(|f| register(&self.timings, f))
                .inspect_err(|e| tracing::error!("registering {THREAD_CPU}: {e}"))
                .ok()
        });
        CpuClocks(family.clone())
    }

    /// Families computed from a stage's state at every render (gauges of what is, not of
    /// what happened).
    pub fn collector(&self, c: Box<dyn Collector>) -> prometheus::Result<()> {
        self.families.register(c)
    }

    /// Every family as `(name, text)`; with `timing`, the wall-clock histograms and CPU times
    /// too.
    pub fn encode(&self, timing: bool) -> Vec<(String, String)> {
        let mut families = self.families.gather();
        if timing {
            families.extend(self.timings.gather());
        }
        let mut parts = Vec::with_capacity(families.len());
        for family in &families {
            let mut text = String::new();
            match TextEncoder::new().encode_utf8(std::slice::from_ref(family), &mut text) {
                Ok(()) => parts.push((family.name().to_owned(), text)),
                Err(e) => tracing::error!("encoding metrics failed: {e}"),
            }
        }
        parts
    }
}

/// Registers `family` in `registry` and hands it back to its stage.
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    family: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(family.clone()))?;
    Ok(family)
}

/// The calling thread's CPU time (user and system), in ns.
pub fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// Makes [`CpuClock`]s: a handle to [`THREAD_CPU`] that a stage keeps.
#[derive(Clone)]
pub struct CpuClocks(Option<CounterVec>);

impl CpuClocks {
    /// A clock of the calling thread's CPU time, counted as `thread` from now on: the workers
    /// (`worker-N`) and the capture threads (`cap-IFACE`, and `cap-replay` for a replay's
    /// reading).
    pub fn clock(&self, thread: &str) -> CpuClock {
        CpuClock {
            counter: self.0.as_ref().map(|f| f.with_label_values(&[thread])),
            counted_ns: thread_cpu_ns(),
        }
    }
}

/// One thread's CPU time as a counter of [`THREAD_CPU`]. The thread it counts calls
/// [`CpuClock::update`] now and then (a clock read is a system call: never per packet), and
/// last before it ends.
pub struct CpuClock {
    counter: Option<Counter>,
    counted_ns: u64,
}

impl CpuClock {
    /// Adds the calling thread's CPU time since the last update (or since the clock was made).
    pub fn update(&mut self) {
        let now = thread_cpu_ns();
        let spent = now.saturating_sub(self.counted_ns);
        self.counted_ns = now;
        if let Some(c) = &self.counter {
            c.inc_by(spent as f64 / 1e9);
        }
    }
}

/// Lets a repeated warning through at most once per period, from any number of threads, with
/// no lock: a storm of the same event must not flood the log.
#[derive(Debug)]
pub struct Throttle {
    every_ms: u64,
    /// Milliseconds after `start` before which nothing more is let through.
    next_ms: AtomicU64,
    start: Instant,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        Self { every_ms, next_ms: AtomicU64::new(0), start: Instant::now() }
    }

    /// True for the first call of each period: log then, stay quiet otherwise.
    pub fn ready(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_clock_counts_its_threads_cpu_time_as_a_timing() {
        let m = SelfMetrics::default();
        let mut clock = m.cpu_clocks().clock("worker-0");
        let start = Instant::now();
        let mut spin = 0u64;
        while start.elapsed() < Duration::from_millis(30) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        clock.update();
        let value = |timing| {
            m.encode(timing).into_iter().find(|(name, _)| name == THREAD_CPU).and_then(
                |(_, text)| {
                    let line = text.lines().find(|l| l.starts_with(THREAD_CPU))?.to_owned();
                    line.rsplit(' ').next()?.parse::<f64>().ok()
                },
            )
        };
        assert_eq!(value(false), None, "left out of a replay's output");
        let cpu = value(true).expect("counted");
        assert!((0.02..1.0).contains(&cpu), "30 ms of spinning counted as {cpu} s");
        // A second clock of another thread registers nothing twice.
        let _ = m.cpu_clocks().clock("cap-eth0");
        assert_eq!(m.encode(true).iter().filter(|(n, _)| n == THREAD_CPU).count(), 1);
    }

    #[test]
    fn a_throttle_lets_one_through_per_period() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert!(t.ready(), "the first warning is let through");
        assert!(!t.ready(), "the next one within the period is not");
        let t = Throttle::new(Duration::ZERO);
        assert!(t.ready() && t.ready(), "a zero period lets every one through");
    }

    #[test]
    fn timings_are_left_out_unless_asked_for() {
        let m = SelfMetrics::default();
        let c = m.counter("a_total", "A.", &["x"]).expect("a valid counter");
        c.with_label_values(&["1"]).inc();
        let h = m.timing("b_seconds", "B.", &[], &[0.1]).expect("a valid histogram");
        h.with_label_values::<&str>(&[]).observe(0.05);
        let names = |timing| m.encode(timing).into_iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(names(false), ["a_total"]);
        assert_eq!(names(true), ["a_total", "b_seconds"]);
        assert!(m.counter("a_total", "again", &["x"]).is_err(), "a name registers once");
    }
}
