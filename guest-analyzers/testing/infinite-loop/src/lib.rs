//! The `infinite-loop` hostile test analyzer: `process` never returns.
//!
//! Input: batches (ignored). Output: none — every `process` call spins until the host's epoch
//! deadline interrupts it (`--call-budget-ms`, 200 ms by default). `init` and `tick` behave, so
//! the component loads and fails only at run time. The host's tests expect each call to fail
//! with reason `timeout`, the instance to be re-instantiated with backoff and, after five
//! failures, quarantined. Not a default analyzer.

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Updates};

/// Declares a family it never gets to update.
pub struct InfiniteLoop {
    packets: Counter,
}

impl Analyzer for InfiniteLoop {
    fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let mut info = AnalyzerInfo::new("infinite-loop", env!("CARGO_PKG_VERSION"));
        let packets = info.counter(
            "test_infinite_loop_packets_total",
            "Packets seen (never: process does not return; test analyzer).",
            &["device"],
        );
        Ok((Self { packets }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        if let Some(p) = batch.get(0) {
            out.inc(self.packets, &[p.device_label()]);
        }
        spin()
    }
}

/// Loops forever. `black_box` keeps the loop from being proven side-effect free.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = core::hint::black_box(n.wrapping_add(1));
    }
}

wasmtap_sdk::export_analyzer!(InfiniteLoop);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtap_sdk::Runner;

    /// Only `init` can run natively: `process` would hang the test.
    #[test]
    fn init_declares_one_counter() {
        let info = Runner::<InfiniteLoop>::new().init(Config::default()).expect("init");
        assert_eq!(info.name, "infinite-loop");
        assert_eq!(info.families.len(), 1);
        assert_eq!(info.families[0].name, "test_infinite_loop_packets_total");
    }
}
