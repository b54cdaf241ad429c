//! The `long-label-name` hostile test analyzer: declares a label name of 65 bytes.
//!
//! Input: batches (ignored). Output: none. Its `init` declares `test_long_label_name_total`
//! with one label whose name is [`LABEL_NAME_LEN`] bytes (`label_` padded with `x`), one more
//! than the host's limit of 64. The host's tests expect it refused at load with `a label name
//! of "test_long_label_name_total" is 65, over the limit of 64`. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};

/// Bytes of the label name: the host's limit plus one.
pub const LABEL_NAME_LEN: usize = 65;

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    let mut label = "label_".to_owned();
    label.extend(core::iter::repeat_n('x', LABEL_NAME_LEN - label.len()));
    AnalyzerInfo {
        name: "long-label-name".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: vec![MetricFamily {
            name: "test_long_label_name_total".to_owned(),
            help: "A counter with a long label name (test analyzer).".to_owned(),
            kind: MetricKind::Counter,
            label_names: vec![label],
            buckets: Vec::new(),
        }],
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use wasmtap_sdk::bindings::exports::wasmtap::analyzer::analyzer::Guest;
    use wasmtap_sdk::wit;

    struct LongLabelName;

    impl Guest for LongLabelName {
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

    wasmtap_sdk::bindings::__export_component!(LongLabelName with_types_in wasmtap_sdk::bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_name_is_65_bytes() {
        assert_eq!(info().families[0].label_names[0].len(), LABEL_NAME_LEN);
    }
}
