//! The `histogram-sum-infinity` hostile test analyzer: a histogram update whose sum is +Inf.
//!
//! Input: batches (ignored). Output: one update of `test_histogram_sum_infinity` per `process`
//! call: two observations of `f64::MAX`, both in the `+Inf` bucket, whose sum overflowed to
//! +Inf. The host bounds a histogram sum to ±1e20 and wants it finite, so its tests expect every
//! call to be refused whole (reason `bad_update`, `histogram sum inf is not finite or beyond
//! ±1e20`), no series, and quarantine after five failures. Not a default analyzer.
//!
//! It implements the WIT export directly: the SDK refuses such observations itself.

use wasmtap_sdk::wit::{
    AnalyzerInfo, HistogramDelta, MetricFamily, MetricKind, MetricUpdate, UpdateValue,
};
use wasmtap_testing_raw as raw;

/// The two observations.
pub const OBSERVED: [f64; 2] = [f64::MAX, f64::MAX];

/// The analyzer's declaration: one histogram with one bucket bound.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "histogram-sum-infinity",
        vec![MetricFamily {
            name: "test_histogram_sum_infinity".to_owned(),
            help: "Observations whose sum overflows (test analyzer).".to_owned(),
            kind: MetricKind::Histogram,
            label_names: Vec::new(),
            buckets: vec![1.0],
        }],
    )
}

/// What every call returns.
pub fn process() -> Vec<MetricUpdate> {
    let sum = OBSERVED.iter().sum();
    let delta = HistogramDelta { bucket_counts: vec![0, 2], sum, count: 2 };
    vec![MetricUpdate { family: 0, labels: Vec::new(), value: UpdateValue::Histogram(delta) }]
}

wasmtap_testing_raw::export!(info = info, process = |_batch| Ok(process()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consistent_histogram_whose_sum_is_infinite() {
        let out = process();
        let UpdateValue::Histogram(h) = &out[0].value else { panic!("{:?}", out[0].value) };
        assert_eq!(h.bucket_counts.iter().sum::<u64>(), h.count);
        assert_eq!(h.sum, f64::INFINITY);
    }
}
