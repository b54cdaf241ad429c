//! The `cardinality-bomb` hostile test analyzer: a million distinct label values per instance.
//!
//! Input: batches; only the flow id of an instance's first packet is read. Output:
//! `test_cardinality_bomb_total{value}`, [`PER_CALL`] new `value`s per `process` call until the
//! instance has emitted [`VALUES`] distinct ones, then nothing — the shape of a label keyed on
//! something unbounded (a port, a sequence number). The values are `seed << 20 | i` with
//! `i < VALUES < 2^20` and `seed` the low 32 bits of the first flow id the instance sees, so
//! instances on different workers (which see different flows) never repeat each other's values.
//!
//! The calls themselves succeed. The host's tests expect the family to stop at the series cap
//! (`--series-cap`, 10,000 by default), every further new series refused and counted in
//! `wasmtap_host_series_refused{family}` — exactly `workers × VALUES − cap` once every instance
//! is done — and the analyzer to stay `running`. Not a default analyzer.

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Label, Updates};

/// Distinct label values each instance emits over its life.
pub const VALUES: u64 = 1_000_000;

/// New values per call: the million takes 50 calls, and each call stays well under the host's
/// 65,536 updates per call (a different hostile analyzer tests that limit).
pub const PER_CALL: u64 = 20_000;

/// Bits of a value below the seed; `VALUES` must fit in them.
const SEED_SHIFT: u32 = 20;

const _: () = assert!(VALUES <= 1 << SEED_SHIFT);

/// Emits ever new label values.
pub struct CardinalityBomb {
    series: Counter,
    seed: Option<i64>,
    emitted: u64,
}

impl CardinalityBomb {
    /// Distinct values emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }
}

impl Analyzer for CardinalityBomb {
    fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let mut info = AnalyzerInfo::new("cardinality-bomb", env!("CARGO_PKG_VERSION"));
        let series = info.counter(
            "test_cardinality_bomb_total",
            "One series per distinct value of an unbounded label (test analyzer).",
            &["value"],
        );
        Ok((Self { series, seed: None, emitted: 0 }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        let Some(seed) = self.seed.or_else(|| batch.get(0).map(|p| i64::from(p.flow_id() as u32)))
        else {
            return Ok(());
        };
        self.seed = Some(seed);
        let end = (self.emitted + PER_CALL).min(VALUES);
        for i in self.emitted..end {
            out.inc(self.series, &[Label::Number(seed << SEED_SHIFT | i as i64)]);
        }
        self.emitted = end;
        Ok(())
    }
}

wasmtap_sdk::export_analyzer!(CardinalityBomb);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use wasmtap_sdk::wit::LabelValue;
    use wasmtap_sdk::{BatchBuilder, PacketFields, Runner};

    #[test]
    fn a_million_distinct_values_then_silence() {
        let mut r = Runner::<CardinalityBomb>::new();
        r.init(Config::default()).expect("init");
        let first = PacketFields { flow_id: 0x1_0000_0007, ..PacketFields::default() };
        let batch = BatchBuilder::new().push(&first).build();
        let mut seen = HashSet::new();
        for _ in 0..VALUES / PER_CALL {
            let out = r.process(&batch).expect("process");
            assert_eq!(out.len() as u64, PER_CALL);
            for u in out {
                let [LabelValue::Number(v)] = u.labels[..] else { panic!("{:?}", u.labels) };
                assert_eq!(v >> SEED_SHIFT, 7, "seed from the low 32 bits of the flow id");
                assert!(seen.insert(v), "value {v} repeated");
            }
        }
        assert_eq!(seen.len() as u64, VALUES);
        assert_eq!(r.analyzer().expect("initialised").emitted(), VALUES);
        assert!(r.process(&batch).expect("process").is_empty());
    }
}
