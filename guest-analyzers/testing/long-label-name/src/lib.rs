//! The `long-label-name` hostile test analyzer: declares a label name of 65 bytes.
//!
//! Input: batches (ignored). Output: none. Its `init` declares `test_long_label_name_total`
//! with one label whose name is [`LABEL_NAME_LEN`] bytes (`label_` padded with `x`), one more
//! than the host's limit of 64. The host's tests expect it refused at load with `a label name
//! of "test_long_label_name_total" is 65, over the limit of 64`. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};
use wasmtap_testing_raw as raw;

/// Bytes of the label name: the host's limit plus one.
pub const LABEL_NAME_LEN: usize = 65;

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    let mut label = "label_".to_owned();
    label.extend(core::iter::repeat_n('x', LABEL_NAME_LEN - label.len()));
    raw::info(
        "long-label-name",
        vec![MetricFamily {
            name: "test_long_label_name_total".to_owned(),
            help: "A counter with a long label name (test analyzer).".to_owned(),
            kind: MetricKind::Counter,
            label_names: vec![label],
            buckets: Vec::new(),
        }],
    )
}

wasmtap_testing_raw::export!(info = info);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_name_is_65_bytes() {
        assert_eq!(info().families[0].label_names[0].len(), LABEL_NAME_LEN);
    }
}
