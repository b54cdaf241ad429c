//! The `memory-bomb` hostile test analyzer: keeps 16 MiB more memory after every batch.
//!
//! Input: batches (only counted). Output: `test_memory_bomb_batches_total` (no labels) for the
//! calls that succeed. Each `process` call allocates a [`CHUNK`] filled with a non-zero byte and
//! keeps it, so an instance's linear memory grows without bound; under the host's default cap
//! (`--memory-mib 64`) the fourth call of every instance fails to grow memory. The host's tests
//! expect reason `memory` ("tried to grow its memory past the cap"), re-instantiation with a
//! fresh memory, and quarantine after five failures. Not a default analyzer.

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Updates};

/// Memory kept per call: three calls fit under the host's 64 MiB default, the fourth does not.
pub const CHUNK: usize = 16 << 20;

/// Hoards memory, one chunk per batch.
pub struct MemoryBomb {
    batches: Counter,
    hoard: Vec<Vec<u8>>,
}

impl MemoryBomb {
    /// Bytes hoarded so far.
    pub fn hoarded(&self) -> usize {
        self.hoard.iter().map(Vec::len).sum()
    }
}

impl Analyzer for MemoryBomb {
    fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let mut info = AnalyzerInfo::new("memory-bomb", env!("CARGO_PKG_VERSION"));
        let batches = info.counter(
            "test_memory_bomb_batches_total",
            "Batches processed before memory ran out (test analyzer).",
            &[],
        );
        Ok((Self { batches, hoard: Vec::new() }, info))
    }

    fn process(&mut self, _batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        // Non-zero, so that no allocator shortcut for zeroed memory applies.
        self.hoard.push(core::hint::black_box(vec![0xa5; CHUNK]));
        out.inc(self.batches, &[]);
        Ok(())
    }
}

wasmtap_sdk::export_analyzer!(MemoryBomb);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtap_sdk::wit::UpdateValue;
    use wasmtap_sdk::{BatchBuilder, PacketFields, Runner};

    #[test]
    fn every_batch_keeps_another_chunk() {
        let mut r = Runner::<MemoryBomb>::new();
        r.init(Config::default()).expect("init");
        let batch = BatchBuilder::new().push(&PacketFields::default()).build();
        for calls in 1..=2 {
            let out = r.process(&batch).expect("process");
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].value, UpdateValue::CounterAdd(1.0));
            assert_eq!(r.analyzer().expect("initialised").hoarded(), calls * CHUNK);
        }
    }
}
