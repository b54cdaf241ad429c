//! The `name-newline` hostile test analyzer: an analyzer name with a newline in it.
//!
//! Input: batches (ignored). Output: none. Its `init` declares the name [`NAME`], a newline in
//! it. Analyzer names label metrics and go into log lines, so the host takes only
//! `[a-z][a-z0-9_-]*` of at most 64 bytes: its tests expect it refused at load with `analyzer
//! name "…" does not match [a-z][a-z0-9_-]* of at most 64 bytes`, the name shown escaped (the
//! newline as `\n`) on one line. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};

/// The name it declares.
pub const NAME: &str = "name-newline\nERROR host: forged";

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    AnalyzerInfo {
        name: NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: vec![MetricFamily {
            name: "test_name_newline_packets_total".to_owned(),
            help: "Packets, under a name with a newline (test analyzer).".to_owned(),
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

    struct NameNewline;

    impl Guest for NameNewline {
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

    wasmtap_sdk::bindings::__export_component!(NameNewline with_types_in wasmtap_sdk::bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_has_a_newline() {
        assert_eq!(info().name.lines().count(), 2);
    }
}
