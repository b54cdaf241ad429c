//! The `huge-call-bytes` hostile test analyzer: over 16 MiB of updates in one call, made of
//! many modest labels.
//!
//! Input: batches (ignored). Output: [`UPDATES`] counter updates per `process` call of
//! `test_huge_call_bytes_total{a,b,c,d}`, each label value [`VALUE_LEN`] bytes and distinct.
//! Every piece is within its own limit (31,000 updates of 65,536; 128-byte values of 1024), but
//! the host also bounds the bytes of one call's packed updates: [`packed_bytes`] is about
//! 16.9 MB, over the limit of 16 MiB. The host's tests expect every call to be refused whole
//! (reason `too_large`, `returned 16926008 bytes of updates in one call, over the limit of
//! 16777216`), no series, and quarantine after five failures. It writes the bytes straight
//! into one buffer of their exact size ([`packed`]), so the guest needs about 17 MiB, and the
//! host's copy of what it returns is the same size. Not a default analyzer.
//!
//! It implements the WIT export directly: the SDK's labels are `&'static str`.

use wasmtap_record::updates::{Label, Value, Writer};
use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};
use wasmtap_testing_raw as raw;

/// Updates per call: under the host's 65,536.
pub const UPDATES: usize = 31_000;
/// Labels per update.
pub const LABELS: usize = 4;
/// Bytes of each label value: modest.
pub const VALUE_LEN: usize = 128;
/// The host's limit on one call's update bytes.
pub const HOST_LIMIT: usize = 16 << 20;

/// Packed bytes of one of these updates (see the `process` comment in the WIT): family, kind
/// and label count, then per label a tag, a length and the text, then the counter's f64.
pub const fn update_bytes() -> usize {
    4 + 1 + 1 + LABELS * (1 + 4 + VALUE_LEN) + 8
}

/// Packed bytes of one call's updates, with the 8-byte header.
pub const fn packed_bytes() -> usize {
    8 + UPDATES * update_bytes()
}

const _: () = assert!(packed_bytes() > HOST_LIMIT && UPDATES < 65_536);

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

/// What every call returns: [`UPDATES`] counter adds of 1, packed.
pub fn packed() -> Vec<u8> {
    let mut bytes = Vec::with_capacity(packed_bytes());
    let mut w = Writer::new(&mut bytes);
    for u in 0..UPDATES {
        let values: [String; LABELS] = core::array::from_fn(|l| value(u, l));
        w.update(0, values.iter().map(|v| Label::Text(v)), Value::CounterAdd(1.0));
    }
    w.finish();
    bytes
}

wasmtap_testing_raw::export!(info = info, packed = |_batch| Ok(packed()));

#[cfg(test)]
mod tests {
    use super::*;

    use wasmtap_sdk::wit::LabelValue;

    #[test]
    fn modest_pieces_add_up_to_over_16_mib() {
        let bytes = packed();
        assert_eq!(bytes.len(), packed_bytes());
        let out = wasmtap_sdk::packed::decode(&bytes).expect("valid updates");
        assert_eq!(out.len(), UPDATES);
        let mut seen = std::collections::HashSet::new();
        for u in &out {
            for l in &u.labels {
                let LabelValue::Text(s) = l else { panic!("{l:?}") };
                assert_eq!(s.len(), VALUE_LEN);
                assert!(seen.insert(s.clone()), "{s} repeated");
            }
        }
        assert_eq!(packed_bytes(), 16_926_008);
        assert!(packed_bytes() > HOST_LIMIT);
    }
}
