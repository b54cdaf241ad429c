//! The `counter-infinity` hostile test analyzer: counter adds that together reach +Inf.
//!
//! Input: batches (ignored). Output: two updates of `test_counter_infinity_total` per `process`
//! call, each adding [`ADD`] (1e308): finite each, +Inf together, and a counter at +Inf is a
//! counter that can never be read again. The host bounds one add to 2^53 (exact in an f64, more
//! than any batch counts), so its tests expect every call to be refused whole (reason
//! `bad_update`, `adds …, which is negative, not finite or over 2^53`), the family never to have
//! a series (let alone a `+Inf` one), and quarantine after five failures. Not a default
//! analyzer.
//!
//! It implements the WIT export directly: the SDK would sum the two adds itself.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricKind, MetricUpdate, UpdateValue};
use wasmtap_testing_raw as raw;

/// Each add: close to `f64::MAX`, so that two of them overflow.
pub const ADD: f64 = 1e308;

/// The analyzer's declaration: one counter without labels.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "counter-infinity",
        vec![raw::family(
            "test_counter_infinity_total",
            "A counter pushed to infinity (test analyzer).",
            MetricKind::Counter,
        )],
    )
}

/// What every call returns: two adds of [`ADD`] to the one series.
pub fn process() -> Vec<MetricUpdate> {
    let add = MetricUpdate { family: 0, labels: Vec::new(), value: UpdateValue::CounterAdd(ADD) };
    vec![add.clone(), add]
}

wasmtap_testing_raw::export!(info = info, process = |_batch| Ok(process()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_finite_adds_make_infinity() {
        let out = process();
        let total: f64 = out
            .iter()
            .map(|u| match u.value {
                UpdateValue::CounterAdd(v) => {
                    assert!(v.is_finite());
                    v
                }
                ref other => panic!("{other:?}"),
            })
            .sum();
        assert_eq!(total, f64::INFINITY);
    }
}
