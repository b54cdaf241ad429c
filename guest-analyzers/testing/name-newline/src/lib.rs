//! The `name-newline` hostile test analyzer: an analyzer name with a newline in it.
//!
//! Input: batches (ignored). Output: none. Its `init` declares the name [`NAME`], a newline in
//! it. Analyzer names label metrics and go into log lines, so the host takes only
//! `[a-z][a-z0-9_-]*` of at most 64 bytes: its tests expect it refused at load with `analyzer
//! name "…" does not match [a-z][a-z0-9_-]* of at most 64 bytes`, the name shown escaped (the
//! newline as `\n`) on one line. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricKind};
use wasmtap_testing_raw as raw;

/// The name it declares.
pub const NAME: &str = "name-newline\nERROR host: forged";

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    raw::info(
        NAME,
        vec![raw::family(
            "test_name_newline_packets_total",
            "Packets, under a name with a newline (test analyzer).",
            MetricKind::Counter,
        )],
    )
}

wasmtap_testing_raw::export!(info = info);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_has_a_newline() {
        assert_eq!(info().name.lines().count(), 2);
    }
}
