//! The `invalid-metric-name` hostile test analyzer: declares a gauge named `Bad-Name`.
//!
//! Input: batches. Output: `Bad-Name{device}` (packets per batch), if a host ever accepted it.
//! `Bad-Name` is not a Prometheus metric name (upper case, a hyphen), so the host must refuse
//! the analyzer at load, naming the metric. The SDK leaves naming to the host, so `init`
//! succeeds. Not a default analyzer.

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Gauge, Updates};

/// The metric name every host must refuse.
pub const BAD_NAME: &str = "Bad-Name";

/// Declares the invalid family; otherwise a plain packet gauge.
pub struct InvalidMetricName {
    bad: Gauge,
}

impl Analyzer for InvalidMetricName {
    fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let mut info = AnalyzerInfo::new("invalid-metric-name", env!("CARGO_PKG_VERSION"));
        let bad = info.gauge(
            BAD_NAME,
            "Packets in the latest batch, under an invalid name.",
            &["device"],
        );
        Ok((Self { bad }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        if let Some(p) = batch.get(0) {
            out.set(self.bad, &[p.device_label()], batch.len() as f64, p.time_ns());
        }
        Ok(())
    }
}

wasmtap_sdk::export_analyzer!(InvalidMetricName);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtap_sdk::Runner;

    #[test]
    fn init_declares_the_bad_name() {
        let info = Runner::<InvalidMetricName>::new().init(Config::default()).expect("init");
        assert_eq!(info.name, "invalid-metric-name");
        assert_eq!(info.families[0].name, "Bad-Name");
    }
}
