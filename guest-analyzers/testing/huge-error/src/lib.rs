//! The `huge-error` hostile test analyzer: `process` returns an `Err` of 32 MiB.
//!
//! Input: batches (ignored). Output: every `process` call fails with [`message`]: a first line,
//! a newline, a second line that looks like a line of the host's log, then filler up to
//! [`ERROR_LEN`] bytes (32 MiB, half the guest's 64 MiB memory, so building it cannot fail
//! first). The host's tests expect every call to fail with reason `error`, the text cut to 1024
//! bytes and its newline escaped wherever the host shows it (`returned an error: huge-error: the
//! first line\nERROR host: a forged line …`), and quarantine after five failures. Not a default
//! analyzer.
//!
//! It implements the WIT export directly, so that nothing copies the 32 MiB on its way out.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricKind};
use wasmtap_testing_raw as raw;

/// Bytes of the error string.
pub const ERROR_LEN: usize = 32 << 20;

/// How the error starts: a newline, then what a forged host log line would look like.
pub const START: &str = "huge-error: the first line\nERROR host: a forged line ";

/// The analyzer's declaration: one counter it never updates.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "huge-error",
        vec![raw::family(
            "test_huge_error_calls_total",
            "Calls that succeeded (never: every call fails; test analyzer).",
            MetricKind::Counter,
        )],
    )
}

/// The error every call returns: [`START`] padded with `e` to [`ERROR_LEN`] bytes.
pub fn message() -> String {
    // Filled in one pass (memset), not a char at a time: the message takes milliseconds to
    // build whatever the machine's load, so the call fails with its error, never a timeout.
    let mut bytes = Vec::with_capacity(ERROR_LEN);
    bytes.extend_from_slice(START.as_bytes());
    bytes.resize(ERROR_LEN, b'e');
    String::from_utf8(bytes).unwrap_or_default()
}

wasmtap_testing_raw::export!(info = info, process = |_batch| Err(message()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_is_32_mib_with_a_newline_near_the_start() {
        let m = message();
        assert_eq!(m.len(), ERROR_LEN);
        assert_eq!(m.lines().nth(1).map(|l| l.starts_with("ERROR host:")), Some(true));
        assert!(m.ends_with("eee"));
        assert_eq!(info().families.len(), 1);
    }
}
