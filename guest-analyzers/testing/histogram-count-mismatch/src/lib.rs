//! The `histogram-count-mismatch` hostile test analyzer: histogram updates whose count is not
//! the sum of their bucket counts.
//!
//! Input: batches (ignored). Output: one update of `test_histogram_count_mismatch_bytes` per
//! `process` call: bucket counts `[1, 1]` (one observation at or under 100, one over), sum 150
//! and count 3. A histogram whose `_count` is not its `+Inf` bucket is not a histogram, so the
//! host's tests expect every call to be refused whole (reason `bad_update`, `histogram count 3
//! is not the sum of its buckets (2)`), no series, and quarantine after five failures. Not a
//! default analyzer.
//!
//! It implements the WIT export directly: the SDK cannot send an inconsistent histogram.

use wasmtap_sdk::wit::{
    AnalyzerInfo, HistogramDelta, MetricFamily, MetricKind, MetricUpdate, UpdateValue,
};
use wasmtap_testing_raw as raw;

/// The count sent, one more than the bucket counts add up to.
pub const COUNT: u64 = 3;

/// The analyzer's declaration: one histogram with one bucket bound.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "histogram-count-mismatch",
        vec![MetricFamily {
            name: "test_histogram_count_mismatch_bytes".to_owned(),
            help: "Sizes, with a count that does not add up (test analyzer).".to_owned(),
            kind: MetricKind::Histogram,
            label_names: Vec::new(),
            buckets: vec![100.0],
        }],
    )
}

/// What every call returns.
pub fn process() -> Vec<MetricUpdate> {
    let delta = HistogramDelta { bucket_counts: vec![1, 1], sum: 150.0, count: COUNT };
    vec![MetricUpdate { family: 0, labels: Vec::new(), value: UpdateValue::Histogram(delta) }]
}

wasmtap_testing_raw::export!(info = info, process = |_batch| Ok(process()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_not_the_sum_of_the_buckets() {
        let out = process();
        let UpdateValue::Histogram(h) = &out[0].value else { panic!("{:?}", out[0].value) };
        assert_eq!(h.bucket_counts.len(), info().families[0].buckets.len() + 1);
        assert_ne!(h.bucket_counts.iter().sum::<u64>(), h.count);
        assert_eq!(h.count, COUNT);
    }
}
