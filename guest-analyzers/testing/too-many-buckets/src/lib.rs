//! The `too-many-buckets` hostile test analyzer: declares a histogram with 65 buckets.
//!
//! Input: batches (ignored). Output: none. Its `init` declares the histogram
//! `test_too_many_buckets` with [`BUCKETS`] bounds (1 … 65), one more than the host's limit of
//! 64: each bucket is a line per series. The host's tests expect it refused at load with `the
//! buckets of "test_too_many_buckets" is 65, over the limit of 64`. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};

/// Bucket bounds declared: the host's limit plus one.
pub const BUCKETS: usize = 65;

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    AnalyzerInfo {
        name: "too-many-buckets".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: vec![MetricFamily {
            name: "test_too_many_buckets".to_owned(),
            help: "A histogram with one bucket too many (test analyzer).".to_owned(),
            kind: MetricKind::Histogram,
            label_names: Vec::new(),
            buckets: (1..=BUCKETS).map(|b| b as f64).collect(),
        }],
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use wasmtap_sdk::bindings::exports::wasmtap::analyzer::analyzer::Guest;
    use wasmtap_sdk::wit;

    struct TooManyBuckets;

    impl Guest for TooManyBuckets {
        fn init(_config: wit::Config) -> Result<wit::AnalyzerInfo, String> {
            Ok(super::info())
        }

        fn process(_batch: Vec<u8>) -> Result<Vec<wit::MetricUpdate>, String> {
            Ok(Vec::new())
        }

        fn tick(_now_ns: u64, _end_of_capture: bool) -> Result<Vec<wit::MetricUpdate>, String> {
            Ok(Vec::new())
        }
    }

    wasmtap_sdk::bindings::__export_component!(TooManyBuckets with_types_in wasmtap_sdk::bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declares_65_increasing_buckets() {
        let buckets = &info().families[0].buckets;
        assert_eq!(buckets.len(), BUCKETS);
        assert!(buckets.windows(2).all(|w| w[0] < w[1]));
    }
}
