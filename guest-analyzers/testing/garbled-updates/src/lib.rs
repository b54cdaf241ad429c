//! The `garbled-updates` hostile test analyzer: returns bytes that do not parse as the packed
//! update encoding.
//!
//! Input: batches (ignored). Output, per `process` call: a valid header counting two updates,
//! one valid counter update of `test_garbled_updates_total{device}`, then a second one whose
//! label carries the unknown tag 9 ([`garbled`]). The host must refuse every call whole
//! (reason `bad_update`, `returned updates that do not parse: label tag 9 at byte 31`), apply
//! not even the valid first update, and quarantine after five failures. Not a default
//! analyzer.
//!
//! It writes the bytes itself: the SDK only writes valid ones.

use wasmtap_record::updates::{Label, Value, Writer};
use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind};
use wasmtap_testing_raw as raw;

/// The byte offset of the unknown tag: the 8-byte header, the first update (6 bytes, a device
/// label of 3, an f64 of 8), then the second update's family, kind and label count.
pub const BAD_TAG_AT: usize = 8 + (6 + 3 + 8) + 6;

/// The analyzer's declaration: one counter per device.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "garbled-updates",
        vec![MetricFamily {
            name: "test_garbled_updates_total".to_owned(),
            help: "Never exported: every call's updates are garbled (test analyzer).".to_owned(),
            kind: MetricKind::Counter,
            label_names: vec!["device".to_owned()],
            buckets: Vec::new(),
        }],
    )
}

/// What every call returns: two counter updates, the second with its label's tag set to 9.
pub fn garbled() -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut w = Writer::new(&mut bytes);
    for device in [1, 2] {
        w.update(0, [Label::Device(device)].into_iter(), Value::CounterAdd(1.0));
    }
    w.finish();
    if let Some(tag) = bytes.get_mut(BAD_TAG_AT) {
        *tag = 9;
    }
    bytes
}

wasmtap_testing_raw::export!(info = info, packed = |_batch| Ok(garbled()));

#[cfg(test)]
mod tests {
    use wasmtap_record::updates::{DecodeError, Reader};

    use super::*;

    #[test]
    fn the_first_update_parses_and_the_second_does_not() {
        let bytes = garbled();
        let mut r = Reader::new(&bytes).expect("a valid header");
        assert_eq!(r.update_count(), 2);
        assert!(r.next().is_some_and(|u| u.is_ok()));
        assert_eq!(r.next(), Some(Err(DecodeError::Tag { at: BAD_TAG_AT, tag: 9 })));
        assert_eq!(BAD_TAG_AT, 31);
    }
}
