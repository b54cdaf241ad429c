//! The `many-families` hostile test analyzer: declares 200,000 metric families.
//!
//! Input: batches (ignored). Output: none. Its `init` declares [`FAMILIES`] gauges named
//! `test_many_families_<n>`, without help or labels: small each (about 7 MB of guest memory in
//! all), and quick to build, so `init` stays well inside its CPU budget. The host bounds an
//! analyzer to 256 families and checks the count before looking at any family, so its tests
//! expect it refused at load, quickly, with `the number of families is 200000, over the limit
//! of 256`. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricKind};
use wasmtap_testing_raw as raw;

/// Families declared.
pub const FAMILIES: usize = 200_000;

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "many-families",
        (0..FAMILIES)
            .map(|n| {
                raw::family(format!("test_many_families_{n}"), String::new(), MetricKind::Gauge)
            })
            .collect(),
    )
}

wasmtap_testing_raw::export!(info = info);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declares_200000_distinct_families() {
        let info = info();
        assert_eq!(info.families.len(), FAMILIES);
        let names: std::collections::HashSet<_> = info.families.iter().map(|f| &f.name).collect();
        assert_eq!(names.len(), FAMILIES);
    }
}
