//! The `log-flood` hostile test analyzer: two log lines of 4 MiB per call.
//!
//! Input: batches (ignored). Output: every `process` call logs [`LINES_PER_CALL`] lines of
//! [`LINE_LEN`] bytes (4 MiB) at `warn` through the host's `log` import, and adds 1 to
//! `test_log_flood_calls_total`. The host rate-limits each instance to 10 lines a second and
//! cuts every line to 1024 bytes, so its tests expect the analyzer to keep `running` with no
//! failure; every line it logs is cut and counted in `wasmtap_analyzer_log_lines_cut_total`,
//! the rest are dropped and counted in `wasmtap_analyzer_log_lines_dropped_total` (the two add
//! up to `LINES_PER_CALL ×` its calls), and no line of the host's log is long. Not a default
//! analyzer.

use wasmtap_sdk::LogLevel;
use wasmtap_sdk::wit::{AnalyzerInfo, MetricKind, MetricUpdate, UpdateValue};
use wasmtap_testing_raw as raw;

/// Bytes of each line.
pub const LINE_LEN: usize = 4 << 20;
/// Lines per call.
pub const LINES_PER_CALL: usize = 2;

/// The analyzer's declaration: the counter of its calls.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "log-flood",
        vec![raw::family(
            "test_log_flood_calls_total",
            "process calls, each logging two 4 MiB lines (test analyzer).",
            MetricKind::Counter,
        )],
    )
}

/// Bytes of the prefix that tells lines apart: `log-flood: call <10 digits> line <1 digit> `.
const PREFIX_LEN: usize = 34;

/// Makes `buf` line `line` of call `call`: `log-flood: call <call> line <line> ` padded with
/// `l` to [`LINE_LEN`]. The padding is written once per instance and kept, so a call costs
/// the guest only the prefix: the 4 MiB land on the host.
pub fn fill(buf: &mut String, call: u64, line: usize) {
    if buf.len() != LINE_LEN {
        buf.clear();
        buf.extend(core::iter::repeat_n('l', LINE_LEN));
    }
    let prefix = format!("log-flood: call {call:010} line {line} ");
    debug_assert_eq!(prefix.len(), PREFIX_LEN);
    buf.replace_range(..prefix.len(), &prefix);
}

/// Call `call` (1-based): logs its lines, built in `buf`, and returns its update.
pub fn process(buf: &mut String, call: u64) -> Vec<MetricUpdate> {
    for l in 1..=LINES_PER_CALL {
        fill(buf, call, l);
        wasmtap_sdk::log(LogLevel::Warn, buf);
    }
    vec![MetricUpdate { family: 0, labels: Vec::new(), value: UpdateValue::CounterAdd(1.0) }]
}

/// The calls and line buffer of this instance (every instance has its own memory).
#[cfg(target_arch = "wasm32")]
mod calls {
    use core::cell::RefCell;
    use core::sync::atomic::{AtomicU64, Ordering};

    use wasmtap_sdk::wit::MetricUpdate;

    /// `process` calls of this instance.
    static CALLS: AtomicU64 = AtomicU64::new(0);

    std::thread_local! {
        /// The line buffer, kept from call to call.
        static LINE: RefCell<String> = const { RefCell::new(String::new()) };
    }

    pub fn process(_batch: Vec<u8>) -> Result<Vec<MetricUpdate>, String> {
        let call = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(LINE.with_borrow_mut(|buf| super::process(buf, call)))
    }
}

wasmtap_testing_raw::export!(info = info, process = calls::process);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_4_mib_and_tell_calls_apart() {
        let mut buf = String::new();
        fill(&mut buf, 1, 1);
        let a = buf.clone();
        fill(&mut buf, 12, 2);
        assert_eq!((a.len(), buf.len()), (LINE_LEN, LINE_LEN));
        assert!(a.starts_with("log-flood: call 0000000001 line 1 l"));
        assert!(buf.starts_with("log-flood: call 0000000012 line 2 l"));
        assert!(!a.contains('\n'));
        // Natively the lines go to stderr; the call's update is the count of calls.
        assert_eq!(process(&mut buf, 3)[0].value, UpdateValue::CounterAdd(1.0));
    }
}
