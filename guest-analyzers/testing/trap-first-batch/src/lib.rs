//! The `trap-first-batch` test analyzer: traps (panics, which is `unreachable` in a
//! `panic = "abort"` wasm build) on the first `process` call of every instance.
//!
//! Input: batches. Output: nothing on the first call (it traps); on later calls of the same
//! instance, `test_trap_packets_total{device}`. The host's tests use it to check trap handling:
//! drop the Store, re-instantiate (which traps again on its first batch), back off, quarantine.
//! Not a default analyzer.

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Updates};

/// Traps on its first batch; counts packets per device afterwards.
pub struct TrapFirstBatch {
    packets: Counter,
    trapped: bool,
}

impl Analyzer for TrapFirstBatch {
    fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let mut info = AnalyzerInfo::new("trap-first-batch", env!("CARGO_PKG_VERSION"));
        let packets = info.counter(
            "test_trap_packets_total",
            "Packets seen after the deliberate trap (test analyzer).",
            &["device"],
        );
        Ok((Self { packets, trapped: false }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        if !self.trapped {
            self.trapped = true;
            panic!("trap-first-batch: trapping on the first batch, as designed");
        }
        for p in batch {
            out.inc(self.packets, &[p.device_label()]);
        }
        Ok(())
    }
}

wasmtap_sdk::export_analyzer!(TrapFirstBatch);

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use wasmtap_sdk::wit::{LabelValue, UpdateValue};
    use wasmtap_sdk::{BatchBuilder, PacketFields, Runner};

    #[test]
    fn panics_on_the_first_batch_only() {
        let mut r = Runner::<TrapFirstBatch>::new();
        let info = r.init(Config::default()).expect("init");
        assert_eq!(info.name, "trap-first-batch");
        assert_eq!(info.families[0].name, "test_trap_packets_total");
        let batch = BatchBuilder::new().push(&PacketFields::default().with_device(4)).build();
        let first = catch_unwind(AssertUnwindSafe(|| r.process(&batch)));
        assert!(first.is_err(), "the first batch must panic");
        let second = r.process(&batch).expect("second batch");
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].labels, vec![LabelValue::Device(4)]);
        assert_eq!(second[0].value, UpdateValue::CounterAdd(1.0));
    }
}
