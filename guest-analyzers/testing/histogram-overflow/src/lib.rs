//! The `histogram-overflow` hostile test analyzer: valid histogram updates whose series total
//! would overflow.
//!
//! Input: batches (ignored). Output, per `process` call until the instance has sent at least
//! [`PER_INSTANCE`] (2^24) of them: [`PER_CALL`] (65,535) updates of the one series of
//! `test_histogram_overflow`, each [`COUNT`] (2^40, the most the host takes in an update)
//! observations of 0.5, all in the first bucket; and one add of [`PER_CALL`] to
//! `test_histogram_overflow_updates_total`, so that the host's tests know how many were sent —
//! 65,536 updates in all, the most the host takes in a call. Then nothing.
//!
//! Every update is valid on its own, but 2^24 of them would take the series' count to 2^64,
//! past u64. The host refuses each update that would overflow a series total, counting it in
//! `wasmtap_host_series_refused_total{family}`, and never wraps it: its tests expect the
//! analyzer to keep `running` with no failure, the series' `_count` to stop at exactly
//! `(2^24 - 1) × 2^40 = 2^64 - 2^40`, and the refusals to equal the updates sent minus the
//! `2^24 - 1` kept. One instance alone sends enough to overflow. Not a default analyzer.
//!
//! It implements the WIT export directly: the SDK sends at most one update per series.

use wasmtap_sdk::wit::{
    AnalyzerInfo, HistogramDelta, MetricFamily, MetricKind, MetricUpdate, UpdateValue,
};
use wasmtap_testing_raw as raw;

/// Observations per update: the host's limit, 2^40.
pub const COUNT: u64 = 1 << 40;
/// Histogram updates per call: the host's limit of 65,536 updates less the counter's.
pub const PER_CALL: u64 = 65_535;
/// Updates one instance sends at least: enough that `PER_INSTANCE × COUNT` is 2^64.
pub const PER_INSTANCE: u64 = 1 << 24;
/// The value of each observation.
pub const OBSERVATION: f64 = 0.5;

const _: () = assert!(PER_INSTANCE.checked_mul(COUNT).is_none());

/// The analyzer's declaration: the histogram, and the counter of updates sent.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "histogram-overflow",
        vec![
            MetricFamily {
                name: "test_histogram_overflow".to_owned(),
                help: "A histogram driven to the top of u64 (test analyzer).".to_owned(),
                kind: MetricKind::Histogram,
                label_names: Vec::new(),
                buckets: vec![1.0],
            },
            raw::family(
                "test_histogram_overflow_updates_total",
                "Histogram updates sent (test analyzer).",
                MetricKind::Counter,
            ),
        ],
    )
}

/// What a call returns after `sent` updates: the next [`PER_CALL`], or nothing once the
/// instance has sent [`PER_INSTANCE`] or more.
pub fn process(sent: u64) -> Vec<MetricUpdate> {
    if sent >= PER_INSTANCE {
        return Vec::new();
    }
    let sum = COUNT as f64 * OBSERVATION;
    let delta = HistogramDelta { bucket_counts: vec![COUNT, 0], sum, count: COUNT };
    let update =
        MetricUpdate { family: 0, labels: Vec::new(), value: UpdateValue::Histogram(delta) };
    let mut out = vec![update; PER_CALL as usize];
    out.push(MetricUpdate {
        family: 1,
        labels: Vec::new(),
        value: UpdateValue::CounterAdd(PER_CALL as f64),
    });
    out
}

/// What this instance has sent (every instance has its own memory).
#[cfg(target_arch = "wasm32")]
mod sent {
    use core::sync::atomic::{AtomicU64, Ordering};

    use wasmtap_sdk::wit::MetricUpdate;

    /// Histogram updates this instance has sent.
    static SENT: AtomicU64 = AtomicU64::new(0);

    pub fn process(_batch: Vec<u8>) -> Result<Vec<MetricUpdate>, String> {
        let out = super::process(SENT.load(Ordering::Relaxed));
        if !out.is_empty() {
            SENT.fetch_add(super::PER_CALL, Ordering::Relaxed);
        }
        Ok(out)
    }
}

wasmtap_testing_raw::export!(info = info, process = sent::process);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_updates_until_the_total_would_pass_u64() {
        let out = process(0);
        assert_eq!(out.len(), 65_536, "the host's limit per call");
        let UpdateValue::Histogram(h) = &out[0].value else { panic!("{:?}", out[0].value) };
        assert_eq!(h.bucket_counts.iter().sum::<u64>(), h.count);
        assert_eq!(h.count, COUNT);
        assert!(h.sum < 1e20);
        assert_eq!(out[PER_CALL as usize].value, UpdateValue::CounterAdd(PER_CALL as f64));
        // 257 calls: the last one takes the instance past 2^24.
        let calls = PER_INSTANCE.div_ceil(PER_CALL);
        assert_eq!(calls, 257);
        assert_eq!(process((calls - 1) * PER_CALL).len() as u64, PER_CALL + 1);
        assert!(process(calls * PER_CALL).is_empty());
        // The most a series can hold: one update fewer than PER_INSTANCE.
        assert_eq!((PER_INSTANCE - 1).checked_mul(COUNT), Some(u64::MAX - COUNT + 1));
    }
}
