//! The `version-newline` hostile test analyzer: a version with a newline in it.
//!
//! Input: batches (ignored). Output: none. Its `init` declares the version [`VERSION`], a
//! newline in it. Versions go into log lines and `/analyzers`, so the host takes only printable
//! ASCII of at most 64 bytes: its tests expect it refused at load with `version "…" is over 64
//! bytes or has characters other than printable ASCII`, the version shown escaped (the newline
//! as `\n`) on one line. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricKind};
use wasmtap_testing_raw as raw;

/// The version it declares.
pub const VERSION: &str = "0.1.0\nERROR host: forged";

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    AnalyzerInfo {
        name: "version-newline".to_owned(),
        version: VERSION.to_owned(),
        families: vec![raw::family(
            "test_version_newline_packets_total",
            "Packets, under a version with a newline (test analyzer).",
            MetricKind::Counter,
        )],
    }
}

wasmtap_testing_raw::export!(info = info);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_has_a_newline() {
        assert_eq!(info().version.lines().count(), 2);
        assert_eq!(info().name, "version-newline");
    }
}
