//! The `metric-collision` hostile test analyzer: declares `packets_total`, which the default
//! `traffic` analyzer already exports as `wasmtap_packets_total`.
//!
//! Input: batches. Output: `packets_total{device}`, if a host ever registered it. On its own it
//! is a valid analyzer; beside the default analyzers the host must refuse it at load (two
//! owners of one family would corrupt each other's counts), naming the metric and its owner.
//! Not a default analyzer.

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Updates};

/// A family name the default `traffic` analyzer exports.
pub const TAKEN_NAME: &str = "packets_total";

/// Counts packets under a name that is already taken.
pub struct MetricCollision {
    packets: Counter,
}

impl Analyzer for MetricCollision {
    fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let mut info = AnalyzerInfo::new("metric-collision", env!("CARGO_PKG_VERSION"));
        let packets = info.counter(
            TAKEN_NAME,
            "Captured frames, declared a second time (test analyzer).",
            &["device"],
        );
        Ok((Self { packets }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        for p in batch {
            out.inc(self.packets, &[p.device_label()]);
        }
        Ok(())
    }
}

wasmtap_sdk::export_analyzer!(MetricCollision);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtap_sdk::Runner;

    #[test]
    fn init_declares_the_taken_name() {
        let info = Runner::<MetricCollision>::new().init(Config::default()).expect("init");
        assert_eq!(info.name, "metric-collision");
        assert_eq!(info.families[0].name, "packets_total");
    }
}
