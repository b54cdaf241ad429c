//! The `too-many-buckets` hostile test analyzer: declares a histogram with 65 buckets.
//!
//! Input: batches (ignored). Output: none. Its `init` declares the histogram
//! `test_too_many_buckets` with [`BUCKETS`] bounds (1 … 65), one more than the host's limit of
//! 64: each bucket is a line per series. The host's tests expect it refused at load with `the
//! buckets of "test_too_many_buckets" is 65, over the limit of 64`. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};
use wasmtap_testing_raw as raw;

/// Bucket bounds declared: the host's limit plus one.
pub const BUCKETS: usize = 65;

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "too-many-buckets",
        vec![MetricFamily {
            name: "test_too_many_buckets".to_owned(),
            help: "A histogram with one bucket too many (test analyzer).".to_owned(),
            kind: MetricKind::Histogram,
            label_names: Vec::new(),
            buckets: (1..=BUCKETS).map(|b| b as f64).collect(),
        }],
    )
}

wasmtap_testing_raw::export!(info = info);

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
