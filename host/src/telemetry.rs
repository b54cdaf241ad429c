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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The self-metric families of one pipeline.
#[derive(Default)]
pub struct SelfMetrics {
    /// Families whose values depend on the input alone (and on the running host).
    families: Registry,
    /// Wall-clock timings: left out of a replay's output, which must depend on the capture
    /// alone.
    timings: Registry,
}

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

    /// Families computed from a stage's state at every render (gauges of what is, not of
    /// what happened).
    pub fn collector(&self, c: Box<dyn Collector>) -> prometheus::Result<()> {
        self.families.register(c)
    }

    /// Every family as `(name, text)`; with `timing`, the wall-clock histograms too.
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
