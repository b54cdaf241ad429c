//! The `panic-nth-batch` hostile test analyzer: every instance panics on its third batch.
//!
//! Input: batches. Output: `test_panic_good_batches_total` (no labels, one per successful
//! `process` call) and `test_panic_packets_total{device}`. Call [`PANIC_ON_CALL`] of an
//! instance panics, which is a trap in the `panic = "abort"` wasm build; the SDK's panic hook
//! logs the message through `host.log` first. Each fresh instance therefore contributes exactly
//! `PANIC_ON_CALL - 1` good batches before it traps, so the host's tests can check
//! `good batches == (PANIC_ON_CALL - 1) × failures` once the analyzer is quarantined.
//! Not a default analyzer.

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Updates};

/// The `process` call (1-based, per instance) that panics; the ones before it succeed.
pub const PANIC_ON_CALL: u64 = 3;

/// Counts its calls and panics on call [`PANIC_ON_CALL`].
pub struct PanicNthBatch {
    good_batches: Counter,
    packets: Counter,
    calls: u64,
}

impl Analyzer for PanicNthBatch {
    fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let mut info = AnalyzerInfo::new("panic-nth-batch", env!("CARGO_PKG_VERSION"));
        let good_batches = info.counter(
            "test_panic_good_batches_total",
            "Batches processed successfully before the deliberate panic (test analyzer).",
            &[],
        );
        let packets = info.counter(
            "test_panic_packets_total",
            "Packets in the batches processed successfully (test analyzer).",
            &["device"],
        );
        Ok((Self { good_batches, packets, calls: 0 }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        self.calls += 1;
        if self.calls == PANIC_ON_CALL {
            panic!("panic-nth-batch: panicking on batch {PANIC_ON_CALL}, as designed");
        }
        out.inc(self.good_batches, &[]);
        for p in batch {
            out.inc(self.packets, &[p.device_label()]);
        }
        Ok(())
    }
}

wasmtap_sdk::export_analyzer!(PanicNthBatch);

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use wasmtap_sdk::wit::{LabelValue, UpdateValue};
    use wasmtap_sdk::{BatchBuilder, PacketFields, Runner};

    #[test]
    fn panics_on_the_third_batch_only() {
        let mut r = Runner::<PanicNthBatch>::new();
        r.init(Config::default()).expect("init");
        let mut b = BatchBuilder::new();
        b.push(&PacketFields::default().with_device(2));
        b.push(&PacketFields::default().with_device(2));
        let batch = b.build();
        for _ in 1..PANIC_ON_CALL {
            let out = r.process(&batch).expect("a good batch");
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].value, UpdateValue::CounterAdd(1.0));
            assert_eq!(out[1].labels, vec![LabelValue::Device(2)]);
            assert_eq!(out[1].value, UpdateValue::CounterAdd(2.0));
        }
        let third = catch_unwind(AssertUnwindSafe(|| r.process(&batch)));
        assert!(third.is_err(), "call {PANIC_ON_CALL} must panic");
    }
}
