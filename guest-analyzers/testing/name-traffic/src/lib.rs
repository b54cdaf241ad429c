//! The `name-traffic` hostile test analyzer: calls itself `traffic`, the name of a built-in
//! analyzer.
//!
//! Input: batches (ignored). Output: none. Its `init` declares the analyzer name `traffic` and a
//! family of its own (`test_name_traffic_packets_total`, which collides with nothing). An
//! analyzer's name labels its metrics and logs, so two analyzers must never share one: the
//! host's tests expect it refused at load — `--analyzer`: `its name "traffic" is already taken
//! by builtin:traffic`; `--analyzer-dir`: `its analyzer name "traffic" is already taken by
//! builtin:traffic`; `host check`: `"traffic" is the name of a built-in analyzer`. Not a
//! default analyzer.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};

/// The name it takes.
pub const NAME: &str = "traffic";

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    AnalyzerInfo {
        name: NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: vec![MetricFamily {
            name: "test_name_traffic_packets_total".to_owned(),
            help: "Packets, counted under a name that is taken (test analyzer).".to_owned(),
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

    struct NameTraffic;

    impl Guest for NameTraffic {
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

    wasmtap_sdk::bindings::__export_component!(NameTraffic with_types_in wasmtap_sdk::bindings);
}

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
