//! The `long-label-value` hostile test analyzer: one update per call whose text label value is
//! [`VALUE_LEN`] bytes, one byte over the host's limit of 1024.
//!
//! Input: batches (ignored). Output: one counter update of `test_long_label_value_total{value}`
//! per `process` call, `value` being `call-<n>-` padded to 1025 bytes. The host's tests expect
//! every call to be refused whole (reason `too_large`, `returned a label value of 1025 bytes,
//! over the limit of 1024`), no series, and quarantine after five failures: the limit is exact,
//! not approximate. Not a default analyzer.
//!
//! It implements the WIT export directly: the SDK's labels are `&'static str`.

use wasmtap_sdk::wit::{
    AnalyzerInfo, LabelValue, MetricFamily, MetricKind, MetricUpdate, UpdateValue,
};
use wasmtap_testing_raw as raw;

/// The host's limit on the bytes of one label value.
const HOST_LIMIT: usize = 1024;

/// Bytes of the label value every call sends: the limit plus one.
pub const VALUE_LEN: usize = HOST_LIMIT + 1;

/// The analyzer's declaration: one counter with one label.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "long-label-value",
        vec![MetricFamily {
            name: "test_long_label_value_total".to_owned(),
            help: "Calls, by a label value one byte too long (test analyzer).".to_owned(),
            kind: MetricKind::Counter,
            label_names: vec!["value".to_owned()],
            buckets: Vec::new(),
        }],
    )
}

/// The label value of call `call`: `call-<call>-` padded with `v` to [`VALUE_LEN`] bytes.
pub fn value(call: u64) -> String {
    let mut s = format!("call-{call}-");
    s.extend(core::iter::repeat_n('v', VALUE_LEN - s.len()));
    s
}

/// What call `call` (1-based) returns.
pub fn process(call: u64) -> Vec<MetricUpdate> {
    vec![MetricUpdate {
        family: 0,
        labels: vec![LabelValue::Text(value(call))],
        value: UpdateValue::CounterAdd(1.0),
    }]
}

/// The call count this instance has seen (every instance has its own memory).
#[cfg(target_arch = "wasm32")]
mod calls {
    use core::sync::atomic::{AtomicU64, Ordering};

    use wasmtap_sdk::wit::MetricUpdate;

    /// `process` calls of this instance.
    static CALLS: AtomicU64 = AtomicU64::new(0);

    pub fn process(_batch: Vec<u8>) -> Result<Vec<MetricUpdate>, String> {
        Ok(super::process(CALLS.fetch_add(1, Ordering::Relaxed) + 1))
    }
}

wasmtap_testing_raw::export!(info = info, process = calls::process);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_sends_a_value_one_byte_over_the_limit() {
        assert_eq!(info().families[0].label_names, vec!["value".to_owned()]);
        let (one, two) = (process(1), process(2));
        let [LabelValue::Text(a)] = &one[0].labels[..] else { panic!("{:?}", one[0].labels) };
        let [LabelValue::Text(b)] = &two[0].labels[..] else { panic!("{:?}", two[0].labels) };
        assert_eq!((a.len(), b.len()), (VALUE_LEN, VALUE_LEN));
        assert_ne!(a, b);
        assert!(a.starts_with("call-1-v"));
        assert_eq!(one[0].value, UpdateValue::CounterAdd(1.0));
    }
}
