//! The `long-help` hostile test analyzer: declares a family whose help is 1025 bytes.
//!
//! Input: batches (ignored). Output: none. Its `init` declares `test_long_help_total` with a
//! help text of [`HELP_LEN`] bytes, one more than the host's limit of 1024. The host's tests
//! expect it refused at load with `the help of "test_long_help_total" is 1025, over the limit
//! of 1024`. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};
use wasmtap_testing_raw as raw;

/// Bytes of the help text: the host's limit plus one.
pub const HELP_LEN: usize = 1025;

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    let mut help = "A counter whose help goes on (test analyzer)".to_owned();
    help.extend(core::iter::repeat_n('.', HELP_LEN - help.len()));
    raw::info(
        "long-help",
        vec![MetricFamily {
            name: "test_long_help_total".to_owned(),
            help,
            kind: MetricKind::Counter,
            label_names: Vec::new(),
            buckets: Vec::new(),
        }],
    )
}

wasmtap_testing_raw::export!(info = info);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_is_1025_bytes() {
        assert_eq!(info().families[0].help.len(), HELP_LEN);
    }
}
