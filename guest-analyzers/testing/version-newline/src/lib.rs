//! The `version-newline` hostile test analyzer: a version with a newline in it.
//!
//! Input: batches (ignored). Output: none. Its `init` declares the version [`VERSION`], a
//! newline in it. Versions go into log lines and `/analyzers`, so the host takes only printable
//! ASCII of at most 64 bytes: its tests expect it refused at load with `version "…" is over 64
//! bytes or has characters other than printable ASCII`, the version shown escaped (the newline
//! as `\n`) on one line. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};

/// The version it declares.
pub const VERSION: &str = "0.1.0\nERROR host: forged";

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    AnalyzerInfo {
        name: "version-newline".to_owned(),
        version: VERSION.to_owned(),
        families: vec![MetricFamily {
            name: "test_version_newline_packets_total".to_owned(),
            help: "Packets, under a version with a newline (test analyzer).".to_owned(),
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

    struct VersionNewline;

    impl Guest for VersionNewline {
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

    wasmtap_sdk::bindings::__export_component!(VersionNewline with_types_in wasmtap_sdk::bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_has_a_newline() {
        assert_eq!(info().version.lines().count(), 2);
        assert_eq!(info().name, "version-newline");
    }
}
