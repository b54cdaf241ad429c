//! The `too-many-labels` hostile test analyzer: declares a family with 17 labels.
//!
//! Input: batches (ignored). Output: none. Its `init` declares `test_too_many_labels_total`
//! with [`LABELS`] label names (`l00` … `l16`), one more than the host's limit of 16: every
//! label repeats on every line of the exposition. The host's tests expect it refused at load
//! with `the labels of "test_too_many_labels_total" is 17, over the limit of 16`. Not a default
//! analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};
use wasmtap_testing_raw as raw;

/// Labels declared: the host's limit plus one.
pub const LABELS: usize = 17;

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "too-many-labels",
        vec![MetricFamily {
            name: "test_too_many_labels_total".to_owned(),
            help: "A counter with one label too many (test analyzer).".to_owned(),
            kind: MetricKind::Counter,
            label_names: (0..LABELS).map(|n| format!("l{n:02}")).collect(),
            buckets: Vec::new(),
        }],
    )
}

wasmtap_testing_raw::export!(info = info);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declares_17_labels() {
        let labels = &info().families[0].label_names;
        assert_eq!(labels.len(), LABELS);
        assert_eq!(labels[16], "l16");
    }
}
