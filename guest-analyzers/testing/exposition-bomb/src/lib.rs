//! The `exposition-bomb` hostile test analyzer: valid updates whose exposition is huge.
//!
//! Input: batches; only the flow id of an instance's first packet is read. Output, per
//! `process` call until the instance has made [`PER_INSTANCE`] (128) series: [`PER_CALL`] (16)
//! new series of one histogram family, and an add of [`PER_CALL`] to
//! `test_exposition_bomb_series_total` (first, so that its one series exists before anything
//! fills up). Then nothing.
//!
//! Everything is within the host's per-item limits, and each at its largest: a family name of
//! 128 bytes, 16 labels whose names are 64 bytes, 64 buckets, label values of [`VALUE_LEN`]
//! (1000) bytes. Every line of a histogram series repeats the name and all the labels, and a
//! series has 67 lines (64 buckets, `+Inf`, `_sum`, `_count`): about 1.1 MB of exposition per
//! series ([`series_exposition_bytes`]). The host caps the exposition one analyzer's series may
//! take at 32 MiB, so its tests expect the family to stop at about 29 series — far below the
//! series cap of 10,000 — every further new series refused and counted in
//! `wasmtap_host_series_refused_total{family}` (the series sent minus those kept), the
//! analyzer to keep `running` with no failure, and the family's exposition to stay within the
//! budget. Values are `seed-n-label-` padded with `b`, `seed` the low 32 bits of the first flow
//! id an instance sees, so instances on different workers never repeat each other's series.
//! Not a default analyzer.
//!
//! It implements the WIT export directly: the SDK's labels are `&'static str`, at most 6.

use wasmtap_sdk::wit::{
    AnalyzerInfo, HistogramDelta, LabelValue, MetricFamily, MetricKind, MetricUpdate, UpdateValue,
};
use wasmtap_testing_raw as raw;

/// Bytes of the family name (without the host's `wasmtap_` prefix): the host's limit.
pub const NAME_LEN: usize = 128;
/// Labels: the host's limit.
pub const LABELS: usize = 16;
/// Bytes of each label name: the host's limit.
pub const LABEL_NAME_LEN: usize = 64;
/// Bucket bounds: the host's limit.
pub const BUCKETS: usize = 64;
/// Bytes of each label value: under the host's limit of 1024.
pub const VALUE_LEN: usize = 1000;
/// New series per call.
pub const PER_CALL: usize = 16;
/// Series one instance makes in all.
pub const PER_INSTANCE: usize = 128;

/// The histogram's name: `test_exposition_bomb_` padded with `x` to [`NAME_LEN`].
pub fn family_name() -> String {
    pad("test_exposition_bomb_".to_owned(), 'x', NAME_LEN)
}

fn pad(mut s: String, with: char, len: usize) -> String {
    s.extend(core::iter::repeat_n(with, len - s.len()));
    s
}

/// The label names: `label_NN_` padded with `x` to [`LABEL_NAME_LEN`].
pub fn label_names() -> Vec<String> {
    (0..LABELS).map(|j| pad(format!("label_{j:02}_"), 'x', LABEL_NAME_LEN)).collect()
}

/// The analyzer's declaration: the histogram, and the counter of series sent.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "exposition-bomb",
        vec![
            MetricFamily {
                name: family_name(),
                help: "Series as long as an exposition line can be (test analyzer).".to_owned(),
                kind: MetricKind::Histogram,
                label_names: label_names(),
                buckets: (1..=BUCKETS).map(|b| b as f64).collect(),
            },
            raw::family(
                "test_exposition_bomb_series_total",
                "New histogram series sent (test analyzer).",
                MetricKind::Counter,
            ),
        ],
    )
}

/// About the bytes of one histogram series in the exposition: its lines (buckets, `+Inf`,
/// `_sum`, `_count`) times the name and every `label="value"` pair.
pub fn series_exposition_bytes() -> usize {
    let labels = LABELS * (LABEL_NAME_LEN + VALUE_LEN + 4);
    (BUCKETS + 3) * ("wasmtap_".len() + NAME_LEN + labels)
}

/// What a call returns once the instance has made `made` series, `seed` telling it apart from
/// the other instances.
pub fn process(seed: u32, made: usize) -> Vec<MetricUpdate> {
    if made >= PER_INSTANCE {
        return Vec::new();
    }
    let mut out = vec![MetricUpdate {
        family: 1,
        labels: Vec::new(),
        value: UpdateValue::CounterAdd(PER_CALL as f64),
    }];
    let mut bucket_counts = vec![0; BUCKETS + 1];
    bucket_counts[0] = 1;
    let delta = HistogramDelta { bucket_counts, sum: 0.5, count: 1 };
    for n in made..made + PER_CALL {
        let labels = (0..LABELS)
            .map(|j| LabelValue::Text(pad(format!("{seed:08x}-{n}-{j}-"), 'b', VALUE_LEN)))
            .collect();
        out.push(MetricUpdate { family: 0, labels, value: UpdateValue::Histogram(delta.clone()) });
    }
    out
}

/// What this instance has made (every instance has its own memory).
#[cfg(target_arch = "wasm32")]
mod made {
    use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use wasmtap_sdk::Batch;
    use wasmtap_sdk::wit::MetricUpdate;

    /// Series this instance has made.
    static MADE: AtomicUsize = AtomicUsize::new(0);
    /// The instance's seed; `u64::MAX` until the first packet.
    static SEED: AtomicU64 = AtomicU64::new(u64::MAX);

    pub fn process(batch: Vec<u8>) -> Result<Vec<MetricUpdate>, String> {
        if SEED.load(Ordering::Relaxed) == u64::MAX {
            let batch = Batch::parse(&batch).map_err(|e| e.to_string())?;
            let Some(first) = batch.get(0) else { return Ok(Vec::new()) };
            SEED.store(u64::from(first.flow_id() as u32), Ordering::Relaxed);
        }
        let seed = SEED.load(Ordering::Relaxed) as u32;
        let out = super::process(seed, MADE.load(Ordering::Relaxed));
        if !out.is_empty() {
            MADE.fetch_add(super::PER_CALL, Ordering::Relaxed);
        }
        Ok(out)
    }
}

wasmtap_testing_raw::export!(info = info, process = made::process);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The host's exposition budget per analyzer, and its series cap.
    const BUDGET: usize = 32 << 20;
    const SERIES_CAP: usize = 10_000;

    #[test]
    fn every_piece_at_its_limit_and_the_whole_over_the_budget() {
        let info = info();
        let f = &info.families[0];
        assert_eq!(f.name.len(), NAME_LEN);
        assert_eq!(f.label_names.len(), LABELS);
        assert!(f.label_names.iter().all(|l| l.len() == LABEL_NAME_LEN));
        assert_eq!(f.buckets.len(), BUCKETS);
        // Two instances' series take many times the budget, and stop long before the cap.
        let fit = BUDGET / series_exposition_bytes();
        assert!((20..40).contains(&fit), "{fit} series fit");
        assert!(2 * PER_INSTANCE > 4 * fit && fit < SERIES_CAP);
    }

    #[test]
    fn new_distinct_series_then_silence() {
        let mut seen = HashSet::new();
        for made in (0..PER_INSTANCE).step_by(PER_CALL) {
            for seed in [7, 8] {
                let out = process(seed, made);
                assert_eq!(out.len(), PER_CALL + 1);
                assert_eq!(out[0].value, UpdateValue::CounterAdd(PER_CALL as f64));
                for u in &out[1..] {
                    let UpdateValue::Histogram(h) = &u.value else { panic!("{:?}", u.value) };
                    assert_eq!(h.bucket_counts.len(), BUCKETS + 1);
                    assert_eq!(h.bucket_counts.iter().sum::<u64>(), h.count);
                    let mut key = Vec::new();
                    for l in &u.labels {
                        let LabelValue::Text(s) = l else { panic!("{l:?}") };
                        assert_eq!(s.len(), VALUE_LEN);
                        key.push(s.clone());
                    }
                    assert!(seen.insert(key), "a series repeated");
                }
            }
        }
        assert_eq!(seen.len(), 2 * PER_INSTANCE);
        assert!(process(7, PER_INSTANCE).is_empty());
    }
}
