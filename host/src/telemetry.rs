//! Stage: registry (the host's own metrics).
//!
//! Inputs: counts and timings from capture, batch and the analyzer workers; the series counts
//! of the analyzer registry at scrape time.
//! Outputs: `wasmtap_host_*` and `wasmtap_analyzer_*` families, merged with the analyzers'
//! families into the one exposition the exporter serves and `host replay` prints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry as PromRegistry,
    TextEncoder,
};

use crate::health::Health;
use crate::registry::Registry;

/// Call latency buckets in seconds: from 10 µs (a small batch) to the 200 ms default budget.
const LATENCY_BUCKETS: [f64; 10] = [1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.2];

/// Analyzer states, from best to worst. An analyzer shows the worst state of its instances,
/// so the exposition does not depend on how many workers there are.
pub const STATES: [&str; 3] = ["running", "backoff", "quarantined"];

/// The host's self-metrics.
pub struct Telemetry {
    prom: PromRegistry,
    pub packets_received: IntCounterVec,
    pub packets_dropped: IntCounterVec,
    pub analyzer_traps: IntCounterVec,
    pub analyzer_failures: IntCounterVec,
    pub analyzer_restarts: IntCounterVec,
    pub analyzer_skipped: IntCounterVec,
    analyzer_state: IntGaugeVec,
    /// Instances per analyzer in each of [`STATES`], across all workers.
    instances: Mutex<BTreeMap<String, [i64; 3]>>,
    pub analyzer_log_dropped: IntCounterVec,
    analyzer_log_cut: IntCounterVec,
    pub analyzer_batch_seconds: HistogramVec,
    series: IntGaugeVec,
    series_refused: IntCounterVec,
    pub interface_up: IntGaugeVec,
    pub http_refused: IntCounterVec,
}

fn counter(
    prom: &PromRegistry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    prom.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(
    prom: &PromRegistry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    prom.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Telemetry {
    pub fn new() -> prometheus::Result<Self> {
        let prom = PromRegistry::new();
        let p = &prom;
        let batch_opts = HistogramOpts::new(
            "wasmtap_analyzer_batch_duration_seconds",
            "Time one analyzer call took, per analyzer (wall clock).",
        )
        .buckets(LATENCY_BUCKETS.to_vec());
        let analyzer_batch_seconds = HistogramVec::new(batch_opts, &["analyzer"])?;
        prom.register(Box::new(analyzer_batch_seconds.clone()))?;
        Ok(Self {
            packets_received: counter(
                p,
                "wasmtap_host_packets_received_total",
                "Packets read from the source (interface or capture file) and handed to the \
                 analyzers.",
                &["device"],
            )?,
            packets_dropped: counter(
                p,
                "wasmtap_host_packets_dropped_total",
                "Packets lost before analysis: by the kernel or the interface (libpcap's \
                 statistics) or because a worker's queue was full (read, not received).",
                &["device", "reason"],
            )?,
            analyzer_traps: counter(
                p,
                "wasmtap_analyzer_traps_total",
                "Calls into an analyzer that trapped or ran out of CPU budget.",
                &["analyzer"],
            )?,
            analyzer_failures: counter(
                p,
                "wasmtap_analyzer_failures_total",
                "Failed calls into an analyzer, by reason.",
                &["analyzer", "reason"],
            )?,
            analyzer_restarts: counter(
                p,
                "wasmtap_analyzer_restarts_total",
                "Times an analyzer instance was re-instantiated after a failure.",
                &["analyzer"],
            )?,
            analyzer_skipped: counter(
                p,
                "wasmtap_analyzer_skipped_packets_total",
                "Packets an analyzer did not see because it was backing off or quarantined.",
                &["analyzer"],
            )?,
            analyzer_state: gauge(
                p,
                "wasmtap_analyzer_state",
                "1 for the analyzer's state, the worst among its instances (running, backoff, \
                 quarantined), else 0.",
                &["analyzer", "state"],
            )?,
            instances: Mutex::default(),
            analyzer_log_dropped: counter(
                p,
                "wasmtap_analyzer_log_lines_dropped_total",
                "Log lines dropped by the per-analyzer rate limit.",
                &["analyzer"],
            )?,
            analyzer_log_cut: counter(
                p,
                "wasmtap_analyzer_log_lines_cut_total",
                "Log lines cut to the length limit before they were logged.",
                &["analyzer"],
            )?,
            analyzer_batch_seconds,
            series: gauge(p, "wasmtap_host_series", "Live series per metric family.", &["family"])?,
            series_refused: counter(
                p,
                "wasmtap_host_series_refused_total",
                "Updates refused: new series over the family's cap or the analyzer's exposition \
                 budget, or a total that would overflow.",
                &["family"],
            )?,
            interface_up: gauge(
                p,
                "wasmtap_host_interface_up",
                "1 while the interface is captured; 0 while an interface named with -i is not.",
                &["device"],
            )?,
            http_refused: counter(
                p,
                "wasmtap_host_http_refused_total",
                "HTTP requests and connections refused by the exporter's bounds: `busy` (503, \
                 too many scrapes in flight) or `connections` (too many open).",
                &["reason"],
            )?,
            prom,
        })
    }

    /// The log counters of one analyzer's instances.
    pub fn log_counters(&self, analyzer: &str) -> crate::runtime::instance::LogCounters {
        crate::runtime::instance::LogCounters {
            dropped: self.analyzer_log_dropped.with_label_values(&[analyzer]),
            cut: self.analyzer_log_cut.with_label_values(&[analyzer]),
        }
    }

    /// Drops the per-device series of an interface that is gone (its counters restart from
    /// 0 if it comes back).
    pub fn forget_device(&self, device: &str) {
        let _ = self.packets_received.remove_label_values(&[device]);
        for reason in ["kernel", "interface", "queue_full"] {
            let _ = self.packets_dropped.remove_label_values(&[device, reason]);
        }
    }

    /// Analyzers with at least one instance running.
    pub fn running_analyzers(&self) -> usize {
        let all = self.instances.lock().unwrap_or_else(PoisonError::into_inner);
        all.values().filter(|c| c[0] > 0).count()
    }

    /// Moves one instance of `analyzer` from state index `from` to `to` (`None`: no state, for
    /// an instance being created or retired).
    pub fn instance_state(&self, analyzer: &str, from: Option<usize>, to: Option<usize>) {
        let mut all = self.instances.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = all.entry(analyzer.to_owned()).or_default();
        if let Some(c) = from.and_then(|f| counts.get_mut(f)) {
            *c -= 1;
        }
        if let Some(c) = to.and_then(|t| counts.get_mut(t)) {
            *c += 1;
        }
    }

    /// The state of `analyzer`: the worst among its instances, if it has any.
    pub fn state(&self, analyzer: &str) -> Option<&'static str> {
        let all = self.instances.lock().unwrap_or_else(PoisonError::into_inner);
        let worst = all.get(analyzer)?.iter().rposition(|c| *c > 0)?;
        STATES.get(worst).copied()
    }

    /// Drops an unloaded analyzer's state series.
    pub fn forget(&self, analyzer: &str) {
        let mut all = self.instances.lock().unwrap_or_else(PoisonError::into_inner);
        all.remove(analyzer);
        for state in STATES {
            let _ = self.analyzer_state.remove_label_values(&[analyzer, state]);
        }
        for reason in crate::runtime::instance::CallError::REASONS {
            let _ = self.analyzer_failures.remove_label_values(&[analyzer, reason]);
        }
        let counters = [
            &self.analyzer_traps,
            &self.analyzer_restarts,
            &self.analyzer_skipped,
            &self.analyzer_log_dropped,
            &self.analyzer_log_cut,
        ];
        for c in counters {
            let _ = c.remove_label_values(&[analyzer]);
        }
        let _ = self.analyzer_batch_seconds.remove_label_values(&[analyzer]);
    }

    /// The whole exposition: analyzer families and self-metrics, sorted by name.
    /// `timing` includes wall-clock histograms; a replay leaves them out so that its output
    /// depends on the capture alone.
    pub fn exposition(&self, registry: &Registry, timing: bool) -> String {
        // Only the families registered now: an unloaded analyzer's go with it.
        self.series.reset();
        self.series_refused.reset();
        for (family, live, refused) in registry.series_counts() {
            self.series.with_label_values(&[&family]).set(i64::try_from(live).unwrap_or(i64::MAX));
            // The registry keeps the running total; the reset above dropped the old one.
            self.series_refused.with_label_values(&[&family]).inc_by(refused);
        }
        {
            let all = self.instances.lock().unwrap_or_else(PoisonError::into_inner);
            for (analyzer, counts) in all.iter() {
                let worst = counts.iter().rposition(|c| *c > 0);
                for (i, state) in STATES.iter().enumerate() {
                    let v = i64::from(worst == Some(i));
                    self.analyzer_state.with_label_values(&[analyzer.as_str(), state]).set(v);
                }
            }
        }
        let mut parts = registry.render();
        let own = self.prom.gather();
        let own =
            own.iter().filter(|f| timing || f.name() != "wasmtap_analyzer_batch_duration_seconds");
        for family in own {
            let mut text = String::new();
            match TextEncoder::new().encode_utf8(std::slice::from_ref(family), &mut text) {
                Ok(()) => parts.push((family.name().to_owned(), text)),
                Err(e) => tracing::error!("encoding metrics failed: {e}"),
            }
        }
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::with_capacity(parts.iter().map(|p| p.1.len()).sum());
        for (_, text) in &parts {
            out.push_str(text);
        }
        out
    }
}

/// Shared handles for the whole pipeline.
#[derive(Clone)]
pub struct Shared {
    pub registry: Arc<Registry>,
    pub telemetry: Arc<Telemetry>,
    pub health: Arc<Health>,
}
