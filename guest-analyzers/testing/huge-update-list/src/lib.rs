//! The `huge-update-list` hostile test analyzer: returns [`UPDATES`] updates from every call.
//!
//! Input: batches (ignored). Output: [`UPDATES`] counter updates of
//! `test_huge_updates_total{value}`, one per distinct `value`, from every `process` call — more
//! than the host's limit of 65,536 updates per call. The host's tests expect every call to fail
//! with reason `too_many_updates` (no update applied: the family never gets a series),
//! re-instantiation with backoff and quarantine after five failures. Not a default analyzer.
//!
//! It implements the WIT export directly, without the SDK's per-series aggregation, so that
//! building the list costs a few MiB of guest memory and the memory cap cannot trip first.

use wasmtap_sdk::AnalyzerInfo;
use wasmtap_sdk::wit::{LabelValue, MetricUpdate, UpdateValue};

/// The host's limit on updates per call (its `Limits::max_updates` default).
const HOST_LIMIT: usize = 65_536;

/// Updates per call: over the host's limit, with margin.
pub const UPDATES: usize = 70_000;

const _: () = assert!(UPDATES > HOST_LIMIT);

/// The analyzer's declaration.
pub fn info() -> AnalyzerInfo {
    let mut info = AnalyzerInfo::new("huge-update-list", env!("CARGO_PKG_VERSION"));
    info.counter(
        "test_huge_updates_total",
        "One series per update of an oversized update list (test analyzer).",
        &["value"],
    );
    info
}

/// The oversized update list every call returns.
pub fn updates() -> Vec<MetricUpdate> {
    (0..UPDATES as i64)
        .map(|n| MetricUpdate {
            family: 0,
            labels: vec![LabelValue::Number(n)],
            value: UpdateValue::CounterAdd(1.0),
        })
        .collect()
}

wasmtap_testing_raw::export!(info = || info().to_wit(), process = |_batch| Ok(updates()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_returns_more_than_the_host_accepts() {
        assert_eq!(info().validate(), Ok(()));
        assert_eq!(info().to_wit().families[0].name, "test_huge_updates_total");
        let out = updates();
        assert_eq!(out.len(), UPDATES);
        assert_eq!(out[UPDATES - 1].labels, vec![LabelValue::Number(69_999)]);
        assert_eq!(out[0].value, UpdateValue::CounterAdd(1.0));
    }
}
