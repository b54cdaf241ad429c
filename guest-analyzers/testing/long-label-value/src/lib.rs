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

/// The host's limit on the bytes of one label value.
const HOST_LIMIT: usize = 1024;

/// Bytes of the label value every call sends: the limit plus one.
pub const VALUE_LEN: usize = HOST_LIMIT + 1;

/// The analyzer's declaration: one counter with one label.
pub fn info() -> AnalyzerInfo {
    AnalyzerInfo {
        name: "long-label-value".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: vec![MetricFamily {
            name: "test_long_label_value_total".to_owned(),
            help: "Calls, by a label value one byte too long (test analyzer).".to_owned(),
            kind: MetricKind::Counter,
            label_names: vec!["value".to_owned()],
            buckets: Vec::new(),
        }],
    }
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

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use core::sync::atomic::{AtomicU64, Ordering};
    use wasmtap_sdk::bindings::exports::wasmtap::analyzer::analyzer::Guest;
    use wasmtap_sdk::wit;

    /// `process` calls of this instance (every instance has its own memory).
    static CALLS: AtomicU64 = AtomicU64::new(0);

    struct LongLabelValue;

    impl Guest for LongLabelValue {
        fn init(_config: wit::Config) -> Result<wit::AnalyzerInfo, String> {
            Ok(super::info())
        }

        fn process(_batch: Vec<u8>) -> Result<Vec<wit::MetricUpdate>, String> {
            Ok(super::process(CALLS.fetch_add(1, Ordering::Relaxed) + 1))
        }

        fn tick(_now_ns: u64, _end_of_capture: bool) -> Result<Vec<wit::MetricUpdate>, String> {
            Ok(Vec::new())
        }
    }

    wasmtap_sdk::bindings::__export_component!(LongLabelValue with_types_in wasmtap_sdk::bindings);
}

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
