//! The `long-help` hostile test analyzer: declares a family whose help is 1025 bytes.
//!
//! Input: batches (ignored). Output: none. Its `init` declares `test_long_help_total` with a
//! help text of [`HELP_LEN`] bytes, one more than the host's limit of 1024. The host's tests
//! expect it refused at load with `the help of "test_long_help_total" is 1025, over the limit
//! of 1024`. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};

/// Bytes of the help text: the host's limit plus one.
pub const HELP_LEN: usize = 1025;

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    let mut help = "A counter whose help goes on (test analyzer)".to_owned();
    help.extend(core::iter::repeat_n('.', HELP_LEN - help.len()));
    AnalyzerInfo {
        name: "long-help".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: vec![MetricFamily {
            name: "test_long_help_total".to_owned(),
            help,
            kind: MetricKind::Counter,
            label_names: Vec::new(),
            buckets: Vec::new(),
        }],
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use wasmtap_sdk::bindings::exports::wasmtap::analyzer::analyzer::Guest;
    use wasmtap_sdk::wit;

    struct LongHelp;

    impl Guest for LongHelp {
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

    wasmtap_sdk::bindings::__export_component!(LongHelp with_types_in wasmtap_sdk::bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_is_1025_bytes() {
        assert_eq!(info().families[0].help.len(), HELP_LEN);
    }
}
