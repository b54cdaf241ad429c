//! Stage: analyzers (their self-metrics and states).
//!
//! Input: what the workers decide about each analyzer instance: its calls and their wall time,
//! failures by [`Reason`], restarts, packets skipped while it cannot run, log lines dropped or
//! cut, and its [`State`].
//! Output: the `wasmtap_analyzer_*` families, every series of a loaded analyzer exported from
//! the moment it loads (at 0 until something happens); and the state table that `/analyzers`
//! and `/readyz` read, whose `wasmtap_analyzer_state` gauge is computed at every render.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts};

use super::instance::{LogCounters, Reason};
use crate::telemetry::{CpuClocks, SelfMetrics};

/// Call latency buckets in seconds: from 10 µs (a small batch) to the 200 ms default budget.
const LATENCY_BUCKETS: [f64; 10] = [1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.2];

/// The state of one analyzer instance under the failure policy, from best to worst. An
/// analyzer shows the worst state of its instances, so the exposition does not depend on how
/// many workers there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Running,
    Backoff,
    Quarantined,
}

impl State {
    /// Every state, from best to worst.
    pub const ALL: [State; 3] = [State::Running, State::Backoff, State::Quarantined];

    /// The `state` label value, and the state `/analyzers` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Backoff => "backoff",
            State::Quarantined => "quarantined",
        }
    }
}

/// Instances per analyzer in each state, across all workers (indexed by `State as usize`).
#[derive(Default)]
struct States(Mutex<BTreeMap<String, [i64; State::ALL.len()]>>);

impl States {
    /// The worst state that has an instance, of one analyzer's counts.
    fn worst(counts: &[i64; State::ALL.len()]) -> Option<State> {
        State::ALL.iter().rev().copied().find(|s| counts[*s as usize] > 0)
    }
}

/// `wasmtap_analyzer_state`, computed from the state table at every render.
struct StateGauge {
    states: Arc<States>,
    gauge: IntGaugeVec,
}

impl Collector for StateGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.reset();
        for (analyzer, counts) in self.states.0.lock().iter() {
            let worst = States::worst(counts);
            for state in State::ALL {
                let v = i64::from(worst == Some(state));
                self.gauge.with_label_values(&[analyzer.as_str(), state.as_str()]).set(v);
            }
        }
        self.gauge.collect()
    }
}

/// The analyzers' self-metrics and state table.
pub struct AnalyzerMetrics {
    traps: IntCounterVec,
    failures: IntCounterVec,
    restarts: IntCounterVec,
    skipped: IntCounterVec,
    log_dropped: IntCounterVec,
    log_cut: IntCounterVec,
    batch_seconds: HistogramVec,
    states: Arc<States>,
    /// The workers' CPU times.
    pub cpu: CpuClocks,
}

/// One analyzer's handles, for one worker's instance of it.
#[derive(Clone)]
pub struct SlotMetrics {
    pub traps: IntCounter,
    pub restarts: IntCounter,
    pub skipped: IntCounter,
    pub batch_seconds: Histogram,
    pub log: LogCounters,
    failures: IntCounterVec,
}

impl SlotMetrics {
    /// Counts a failed call.
    pub fn failed(&self, analyzer: &str, reason: Reason) {
        self.failures.with_label_values(&[analyzer, reason.as_str()]).inc();
    }
}

impl AnalyzerMetrics {
    pub fn new(m: &SelfMetrics) -> prometheus::Result<Self> {
        let states = Arc::new(States::default());
        let gauge = IntGaugeVec::new(
            Opts::new(
                "wasmtap_analyzer_state",
                "1 for the analyzer's state, the worst among its instances (running, backoff, \
                 quarantined), else 0.",
            ),
            &["analyzer", "state"],
        )?;
        m.collector(Box::new(StateGauge { states: states.clone(), gauge }))?;
        Ok(Self {
            traps: m.counter(
                "wasmtap_analyzer_traps_total",
                "Calls into an analyzer that trapped or ran out of CPU budget.",
                &["analyzer"],
            )?,
            failures: m.counter(
                "wasmtap_analyzer_failures_total",
                "Failed calls into an analyzer, by reason.",
                &["analyzer", "reason"],
            )?,
            restarts: m.counter(
                "wasmtap_analyzer_restarts_total",
                "Times an analyzer instance was re-instantiated after a failure.",
                &["analyzer"],
            )?,
            skipped: m.counter(
                "wasmtap_analyzer_skipped_packets_total",
                "Packets an analyzer did not see because it was backing off or quarantined.",
                &["analyzer"],
            )?,
            log_dropped: m.counter(
                "wasmtap_analyzer_log_lines_dropped_total",
                "Log lines dropped by the per-analyzer rate limit.",
                &["analyzer"],
            )?,
            log_cut: m.counter(
                "wasmtap_analyzer_log_lines_cut_total",
                "Log lines cut to the length limit before they were logged.",
                &["analyzer"],
            )?,
            batch_seconds: m.timing(
                "wasmtap_analyzer_batch_duration_seconds",
                "Time one analyzer call took, per analyzer (wall clock).",
                &["analyzer"],
                &LATENCY_BUCKETS,
            )?,
            states,
            cpu: m.cpu_clocks(),
        })
    }

    /// The handles of `analyzer`'s series, every one of them exported from now on.
    pub fn slot(&self, analyzer: &str) -> SlotMetrics {
        for reason in Reason::ALL {
            self.failures.with_label_values(&[analyzer, reason.as_str()]);
        }
        SlotMetrics {
            traps: self.traps.with_label_values(&[analyzer]),
            restarts: self.restarts.with_label_values(&[analyzer]),
            skipped: self.skipped.with_label_values(&[analyzer]),
            batch_seconds: self.batch_seconds.with_label_values(&[analyzer]),
            log: LogCounters {
                dropped: self.log_dropped.with_label_values(&[analyzer]),
                cut: self.log_cut.with_label_values(&[analyzer]),
            },
            failures: self.failures.clone(),
        }
    }

    /// Moves one instance of `analyzer` from state `from` to `to` (`None`: no state, for an
    /// instance being created or retired).
    pub fn transition(&self, analyzer: &str, from: Option<State>, to: Option<State>) {
        let mut all = self.states.0.lock();
        let counts = all.entry(analyzer.to_owned()).or_default();
        if let Some(f) = from {
            counts[f as usize] -= 1;
        }
        if let Some(t) = to {
            counts[t as usize] += 1;
        }
    }

    /// The state of `analyzer`: the worst among its instances, if it has any.
    pub fn state(&self, analyzer: &str) -> Option<State> {
        self.states.0.lock().get(analyzer).and_then(States::worst)
    }

    /// Analyzers with at least one instance running.
    pub fn running(&self) -> usize {
        self.states.0.lock().values().filter(|c| c[State::Running as usize] > 0).count()
    }

    /// Drops an unloaded analyzer's series.
    pub fn forget(&self, analyzer: &str) {
        self.states.0.lock().remove(analyzer);
        for reason in Reason::ALL {
            let _ = self.failures.remove_label_values(&[analyzer, reason.as_str()]);
        }
        let counters =
            [&self.traps, &self.restarts, &self.skipped, &self.log_dropped, &self.log_cut];
        for c in counters {
            let _ = c.remove_label_values(&[analyzer]);
        }
        let _ = self.batch_seconds.remove_label_values(&[analyzer]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_analyzer_shows_the_worst_state_of_its_instances() {
        let m = AnalyzerMetrics::new(&SelfMetrics::default()).expect("valid families");
        assert_eq!(m.state("a"), None);
        m.transition("a", None, Some(State::Backoff));
        m.transition("a", None, Some(State::Backoff));
        m.transition("a", Some(State::Backoff), Some(State::Running));
        assert_eq!(m.state("a"), Some(State::Backoff));
        assert_eq!(m.running(), 1);
        m.transition("a", Some(State::Backoff), Some(State::Quarantined));
        assert_eq!(m.state("a"), Some(State::Quarantined));
        m.transition("a", Some(State::Quarantined), None);
        m.transition("a", Some(State::Running), None);
        assert_eq!(m.state("a"), None, "no instance, no state");
        assert_eq!(m.running(), 0);
    }

    #[test]
    fn every_series_of_a_loaded_analyzer_is_exported_at_zero() {
        let own = SelfMetrics::default();
        let m = AnalyzerMetrics::new(&own).expect("valid families");
        let _slot = m.slot("a");
        let text: String = own.encode(false).into_iter().map(|p| p.1).collect();
        for reason in Reason::ALL {
            let line = format!(
                "wasmtap_analyzer_failures_total{{analyzer=\"a\",reason=\"{}\"}} 0",
                reason.as_str()
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        for name in ["traps", "restarts", "skipped_packets", "log_lines_dropped", "log_lines_cut"] {
            let line = format!("wasmtap_analyzer_{name}_total{{analyzer=\"a\"}} 0");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        m.forget("a");
        let text: String = own.encode(false).into_iter().map(|p| p.1).collect();
        assert!(!text.contains("analyzer=\"a\""), "forgotten:\n{text}");
    }
}
