//! The `stack-overflow` hostile test analyzer: unbounded recursion in `process`.
//!
//! Input: batches (ignored). Output: none — every `process` call recurses until the wasm call
//! stack is exhausted, which traps. `init` and `tick` behave, so the component loads and fails
//! only at run time. The host's tests expect reason `trap`, re-instantiation with backoff and
//! quarantine after five failures. Not a default analyzer.

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Updates};

/// Declares a family it never gets to update.
pub struct StackOverflow {
    packets: Counter,
}

impl Analyzer for StackOverflow {
    fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let mut info = AnalyzerInfo::new("stack-overflow", env!("CARGO_PKG_VERSION"));
        let packets = info.counter(
            "test_stack_overflow_packets_total",
            "Packets seen (never: process overflows the stack; test analyzer).",
            &["device"],
        );
        Ok((Self { packets }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        let depth = dive(u64::MAX);
        // Never reached; the comparison keeps the recursion's result alive.
        if depth == 0 {
            return Err("the recursion returned".to_owned());
        }
        if let Some(p) = batch.get(0) {
            out.inc(self.packets, &[p.device_label()]);
        }
        Ok(())
    }
}

/// Recurses `depth` times. `black_box` on the argument and on the result keeps every frame:
/// no tail call, and no rewrite into a loop with an accumulator.
#[inline(never)]
pub fn dive(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    let below = dive(core::hint::black_box(depth - 1));
    core::hint::black_box(below) + 1
}

wasmtap_sdk::export_analyzer!(StackOverflow);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtap_sdk::Runner;

    /// Natively, only a shallow dive: a deep one would abort the test process.
    #[test]
    fn dive_counts_its_frames() {
        assert_eq!(dive(1000), 1000);
        let info = Runner::<StackOverflow>::new().init(Config::default()).expect("init");
        assert_eq!(info.name, "stack-overflow");
    }
}
