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

/// The two observations.
pub const OBSERVED: [f64; 2] = [f64::MAX, f64::MAX];

/// The analyzer's declaration: one histogram with one bucket bound.
pub fn info() -> AnalyzerInfo {
    AnalyzerInfo {
        name: "histogram-sum-infinity".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: vec![MetricFamily {
            name: "test_histogram_sum_infinity".to_owned(),
            help: "Observations whose sum overflows (test analyzer).".to_owned(),
            kind: MetricKind::Histogram,
            label_names: Vec::new(),
            buckets: vec![1.0],
        }],
    }
}

/// What every call returns.
pub fn process() -> Vec<MetricUpdate> {
    let sum = OBSERVED.iter().sum();
    let delta = HistogramDelta { bucket_counts: vec![0, 2], sum, count: 2 };
    vec![MetricUpdate { family: 0, labels: Vec::new(), value: UpdateValue::Histogram(delta) }]
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use wasmtap_sdk::bindings::exports::wasmtap::analyzer::analyzer::Guest;
    use wasmtap_sdk::wit;

    struct HistogramSumInfinity;

    impl Guest for HistogramSumInfinity {
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

    wasmtap_sdk::bindings::__export_component!(HistogramSumInfinity with_types_in wasmtap_sdk::bindings);
}

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
