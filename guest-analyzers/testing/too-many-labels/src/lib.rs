//! The `too-many-labels` hostile test analyzer: declares a family with 17 labels.
//!
//! Input: batches (ignored). Output: none. Its `init` declares `test_too_many_labels_total`
//! with [`LABELS`] label names (`l00` … `l16`), one more than the host's limit of 16: every
//! label repeats on every line of the exposition. The host's tests expect it refused at load
//! with `the labels of "test_too_many_labels_total" is 17, over the limit of 16`. Not a default
//! analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};

/// Labels declared: the host's limit plus one.
pub const LABELS: usize = 17;

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    AnalyzerInfo {
        name: "too-many-labels".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: vec![MetricFamily {
            name: "test_too_many_labels_total".to_owned(),
            help: "A counter with one label too many (test analyzer).".to_owned(),
            kind: MetricKind::Counter,
            label_names: (0..LABELS).map(|n| format!("l{n:02}")).collect(),
            buckets: Vec::new(),
        }],
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use wasmtap_sdk::bindings::exports::wasmtap::analyzer::analyzer::Guest;
    use wasmtap_sdk::wit;

    struct TooManyLabels;

    impl Guest for TooManyLabels {
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

    wasmtap_sdk::bindings::__export_component!(TooManyLabels with_types_in wasmtap_sdk::bindings);
}

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
