//! The `many-families` hostile test analyzer: declares 200,000 metric families.
//!
//! Input: batches (ignored). Output: none. Its `init` declares [`FAMILIES`] gauges named
//! `test_many_families_<n>`, without help or labels: small each (about 7 MB of guest memory in
//! all), and quick to build, so `init` stays well inside its CPU budget. The host bounds an
//! analyzer to 256 families and checks the count before looking at any family, so its tests
//! expect it refused at load, quickly, with `the number of families is 200000, over the limit
//! of 256`. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};

/// Families declared.
pub const FAMILIES: usize = 200_000;

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    AnalyzerInfo {
        name: "many-families".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: (0..FAMILIES)
            .map(|n| MetricFamily {
                name: format!("test_many_families_{n}"),
                help: String::new(),
                kind: MetricKind::Gauge,
                label_names: Vec::new(),
                buckets: Vec::new(),
            })
            .collect(),
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use wasmtap_sdk::bindings::exports::wasmtap::analyzer::analyzer::Guest;
    use wasmtap_sdk::wit;

    struct ManyFamilies;

    impl Guest for ManyFamilies {
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

    wasmtap_sdk::bindings::__export_component!(ManyFamilies with_types_in wasmtap_sdk::bindings);
}

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
