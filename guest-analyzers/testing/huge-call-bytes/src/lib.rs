//! The `huge-call-bytes` hostile test analyzer: over 16 MiB of updates in one call, made of
//! many modest labels.
//!
//! Input: batches (ignored). Output: [`UPDATES`] counter updates per `process` call of
//! `test_huge_call_bytes_total{a,b,c,d}`, each label value [`VALUE_LEN`] bytes and distinct.
//! Every piece is within its own limit (30,000 updates of 65,536; 128-byte values of 1024), but
//! the host also bounds the bytes of one call's updates, counted as 32 bytes per update, 16 per
//! label and the label text: [`host_bytes`] is about 18 MB, over the limit of 16 MiB. The host's
//! tests expect every call to be refused whole (reason `too_large`, `returned N bytes of updates
//! in one call, over the limit of 16777216`, N being the count where it crossed the limit, see
//! [`refused_at`]), no series, and quarantine after five failures. The guest needs about 20 MiB
//! to build the list, well inside its 64 MiB. Not a default analyzer.
//!
//! It implements the WIT export directly: the SDK's labels are `&'static str`.

use wasmtap_sdk::wit::{
    AnalyzerInfo, LabelValue, MetricFamily, MetricKind, MetricUpdate, UpdateValue,
};
use wasmtap_testing_raw as raw;

/// Updates per call: under the host's 65,536.
pub const UPDATES: usize = 30_000;
/// Labels per update.
pub const LABELS: usize = 4;
/// Bytes of each label value: modest.
pub const VALUE_LEN: usize = 128;
/// The host's limit on one call's update bytes.
pub const HOST_LIMIT: usize = 16 << 20;
/// What the host counts per update and per label beyond the label text.
const PER_UPDATE: usize = 32;
const PER_LABEL: usize = 16;

/// Bytes the host counts for one of these updates.
pub const fn update_bytes() -> usize {
    PER_UPDATE + LABELS * (PER_LABEL + VALUE_LEN)
}

/// Bytes the host counts for one call's updates.
pub const fn host_bytes() -> usize {
    UPDATES * update_bytes()
}

/// The running total at which the host, adding update after update, first exceeds its limit.
pub const fn refused_at() -> usize {
    (HOST_LIMIT / update_bytes() + 1) * update_bytes()
}

const _: () = assert!(host_bytes() > HOST_LIMIT && UPDATES < 65_536);

/// The analyzer's declaration: one counter with four labels.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "huge-call-bytes",
        vec![MetricFamily {
            name: "test_huge_call_bytes_total".to_owned(),
            help: "One series per update of an oversized call (test analyzer).".to_owned(),
            kind: MetricKind::Counter,
            label_names: ["a", "b", "c", "d"].map(str::to_owned).to_vec(),
            buckets: Vec::new(),
        }],
    )
}

/// Label `label` of update `update`: distinct, padded with `m` to [`VALUE_LEN`] bytes.
fn value(update: usize, label: usize) -> String {
    let mut s = format!("{update}-{label}-");
    s.extend(core::iter::repeat_n('m', VALUE_LEN - s.len()));
    s
}

/// What every call returns.
pub fn process() -> Vec<MetricUpdate> {
    (0..UPDATES)
        .map(|u| MetricUpdate {
            family: 0,
            labels: (0..LABELS).map(|l| LabelValue::Text(value(u, l))).collect(),
            value: UpdateValue::CounterAdd(1.0),
        })
        .collect()
}

wasmtap_testing_raw::export!(info = info, process = |_batch| Ok(process()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modest_pieces_add_up_to_over_16_mib() {
        let out = process();
        assert_eq!(out.len(), UPDATES);
        let mut total = 0;
        let mut seen = std::collections::HashSet::new();
        for u in &out {
            total += PER_UPDATE + u.labels.len() * PER_LABEL;
            for l in &u.labels {
                let LabelValue::Text(s) = l else { panic!("{l:?}") };
                assert_eq!(s.len(), VALUE_LEN);
                assert!(seen.insert(s.clone()), "{s} repeated");
                total += s.len();
            }
        }
        assert_eq!(total, host_bytes());
        assert!(total > HOST_LIMIT);
        assert_eq!(refused_at(), 16_777_760);
        assert!(refused_at() > HOST_LIMIT && refused_at() - update_bytes() <= HOST_LIMIT);
    }
}
