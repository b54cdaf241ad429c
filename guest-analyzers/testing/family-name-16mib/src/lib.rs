//! The `family-name-16mib` hostile test analyzer: declares a metric family whose name is
//! 16 MiB long.
//!
//! Input: batches (ignored). Output: none. Its `init` declares one counter named
//! `test_family_name_` padded with `x` to [`NAME_LEN`] (16 MiB) bytes. The name fits the
//! guest's 64 MiB memory, so `init` itself succeeds; the host bounds a family name to 128 bytes
//! and checks sizes before anything else, so its tests expect it refused at load with `the name
//! of family "…"… is 16777216, over the limit of 128` — the name shown only by its first 40
//! characters. Not a default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricKind};
use wasmtap_testing_raw as raw;

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
    raw::info(
        "family-name-16mib",
        vec![raw::family(
            family_name(),
            "A counter with a 16 MiB name (test analyzer).",
            MetricKind::Counter,
        )],
    )
}

wasmtap_testing_raw::export!(info = info);

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
