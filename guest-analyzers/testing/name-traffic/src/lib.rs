//! The `name-traffic` hostile test analyzer: calls itself `traffic`, the name of a built-in
//! analyzer.
//!
//! Input: batches (ignored). Output: none. Its `init` declares the analyzer name `traffic` and a
//! family of its own (`test_name_traffic_packets_total`, which collides with nothing). An
//! analyzer's name labels its metrics and logs, so two analyzers must never share one: the
//! host's tests expect it refused at load — `--analyzer`: `its name "traffic" is already taken
//! by builtin:traffic`; `--analyzer-dir`: `its analyzer name "traffic" is already taken by
//! builtin:traffic`; `wasmtap check`: `"traffic" is the name of a built-in analyzer`. Not a
//! default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricKind};
use wasmtap_testing_raw as raw;

/// The name it takes.
pub const NAME: &str = "traffic";

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    raw::info(
        NAME,
        vec![raw::family(
            "test_name_traffic_packets_total",
            "Packets, counted under a name that is taken (test analyzer).",
            MetricKind::Counter,
        )],
    )
}

wasmtap_testing_raw::export!(info = info);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_name_of_a_built_in() {
        let info = info();
        assert_eq!(info.name, "traffic");
        assert!(info.families[0].name.starts_with("test_"));
    }
}
