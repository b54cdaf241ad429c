//! The `histogram-huge-count` hostile test analyzer: a histogram update with a count of 2^41.
//!
//! Input: batches (ignored). Output: one update of `test_histogram_huge_count` per `process`
//! call with [`COUNT`] (2^41) observations of 0.5, consistent in itself (the bucket counts add
//! up to the count, the sum is finite). No batch observes that many things; the host bounds one
//! update's count to 2^40 so that series totals cannot reach u64's range in any lifetime, and
//! its tests expect every call to be refused whole (reason `bad_update`, `would overflow its
//! series`), no series, and quarantine after five failures. Not a default analyzer.
//!
//! It implements the WIT export directly: the SDK counts real observations only.

use wasmtap_sdk::wit::{
    AnalyzerInfo, HistogramDelta, MetricFamily, MetricKind, MetricUpdate, UpdateValue,
};
use wasmtap_testing_raw as raw;

/// Observations in one update: twice the host's limit of 2^40.
pub const COUNT: u64 = 1 << 41;
/// The value of each observation.
pub const OBSERVATION: f64 = 0.5;

/// The analyzer's declaration: one histogram with one bucket bound.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "histogram-huge-count",
        vec![MetricFamily {
            name: "test_histogram_huge_count".to_owned(),
            help: "More observations in one update than any batch has (test analyzer).".to_owned(),
            kind: MetricKind::Histogram,
            label_names: Vec::new(),
            buckets: vec![1.0],
        }],
    )
}

/// What every call returns.
pub fn process() -> Vec<MetricUpdate> {
    let sum = COUNT as f64 * OBSERVATION;
    let delta = HistogramDelta { bucket_counts: vec![COUNT, 0], sum, count: COUNT };
    vec![MetricUpdate { family: 0, labels: Vec::new(), value: UpdateValue::Histogram(delta) }]
}

wasmtap_testing_raw::export!(info = info, process = |_batch| Ok(process()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_but_over_2_to_the_40() {
        let out = process();
        let UpdateValue::Histogram(h) = &out[0].value else { panic!("{:?}", out[0].value) };
        assert_eq!(h.bucket_counts.iter().sum::<u64>(), h.count);
        assert!(h.count > 1 << 40);
        assert!(h.sum.is_finite() && h.sum < 1e20);
    }
}
