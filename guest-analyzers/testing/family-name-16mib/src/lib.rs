//! The `family-name-16mib` hostile test analyzer: declares a metric family whose name is
//! 16 MiB long.
//!
//! Input: batches (ignored). Output: none. Its `init` declares one counter named
//! `test_family_name_` padded with `x` to [`NAME_LEN`] (16 MiB) bytes. The name fits the
//! guest's 64 MiB memory, so `init` itself succeeds; the host bounds a family name to 128 bytes
//! and checks sizes before anything else, so its tests expect it refused at load with `the name
//! of family "…"… is 16777216, over the limit of 128` — the name shown only by its first 40
//! characters. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};

/// Bytes of the family name.
pub const NAME_LEN: usize = 16 << 20;
/// How the name starts.
pub const PREFIX: &str = "test_family_name_";

/// The family name: [`PREFIX`] padded with `x` to [`NAME_LEN`] bytes.
pub fn family_name() -> String {
    let mut s = String::with_capacity(NAME_LEN);
    s.push_str(PREFIX);
    s.extend(core::iter::repeat_n('x', NAME_LEN - PREFIX.len()));
    s
}

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    AnalyzerInfo {
        name: "family-name-16mib".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: vec![MetricFamily {
            name: family_name(),
            help: "A counter with a 16 MiB name (test analyzer).".to_owned(),
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

    struct FamilyName16Mib;

    impl Guest for FamilyName16Mib {
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

    wasmtap_sdk::bindings::__export_component!(FamilyName16Mib with_types_in wasmtap_sdk::bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_16_mib() {
        let name = &info().families[0].name;
        assert_eq!(name.len(), NAME_LEN);
        assert!(name.starts_with("test_family_name_xxx"));
    }
}
