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

/// The count sent, one more than the bucket counts add up to.
pub const COUNT: u64 = 3;

/// The analyzer's declaration: one histogram with one bucket bound.
pub fn info() -> AnalyzerInfo {
    AnalyzerInfo {
        name: "histogram-count-mismatch".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: vec![MetricFamily {
            name: "test_histogram_count_mismatch_bytes".to_owned(),
            help: "Sizes, with a count that does not add up (test analyzer).".to_owned(),
            kind: MetricKind::Histogram,
            label_names: Vec::new(),
            buckets: vec![100.0],
        }],
    }
}

/// What every call returns.
pub fn process() -> Vec<MetricUpdate> {
    let delta = HistogramDelta { bucket_counts: vec![1, 1], sum: 150.0, count: COUNT };
    vec![MetricUpdate { family: 0, labels: Vec::new(), value: UpdateValue::Histogram(delta) }]
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use wasmtap_sdk::bindings::exports::wasmtap::analyzer::analyzer::Guest;
    use wasmtap_sdk::wit;

    struct HistogramCountMismatch;

    impl Guest for HistogramCountMismatch {
        fn init(_config: wit::Config) -> Result<wit::AnalyzerInfo, String> {
            Ok(super::info())
        }

        fn process(_batch: Vec<u8>) -> Result<Vec<wit::MetricUpdate>, String> {
            Ok(super::process())
        }

        fn tick(_now_ns: u64, _end_of_capture: bool) -> Result<Vec<wit::MetricUpdate>, String> {
            Ok(Vec::new())
        }
    }

    wasmtap_sdk::bindings::__export_component!(HistogramCountMismatch with_types_in wasmtap_sdk::bindings);
}

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
