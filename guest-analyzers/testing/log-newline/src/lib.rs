//! The `log-newline` hostile test analyzer: logs a line that tries to forge a host log line.
//!
//! Input: batches (ignored). Output: every `process` call logs [`MESSAGE`] at `warn` and adds
//! 1 to `test_log_newline_calls_total`. The message holds a newline followed by text laid out
//! like a line of the host's own log ([`FORGED`]), and an ANSI escape sequence that would clear
//! a terminal line. The host escapes control characters in guest text, so its tests expect the
//! message on one line of the host's log with `\n` and `\u{1b}` spelled out, no line of the log
//! that starts with the forged text, and the analyzer to keep `running` with no failure. Not a
//! default analyzer.

use wasmtap_sdk::LogLevel;
use wasmtap_sdk::wit::{AnalyzerInfo, MetricKind, MetricUpdate, UpdateValue};
use wasmtap_testing_raw as raw;

/// What a forged line says: the start of a plausible line of the host's log.
pub const FORGED: &str = "2024-01-01T00:00:00.000000Z ERROR host::app: forged by log-newline";

/// The message every call logs: a first line, a newline, the forged line, an escape sequence.
pub const MESSAGE: &str = concat!(
    "log-newline: an honest first line\n",
    "2024-01-01T00:00:00.000000Z ERROR host::app: forged by log-newline",
    "\x1b[2K"
);

/// The analyzer's declaration: the counter of its calls.
pub fn info() -> AnalyzerInfo {
    raw::info(
        "log-newline",
        vec![raw::family(
            "test_log_newline_calls_total",
            "process calls, each logging a line with a newline (test analyzer).",
            MetricKind::Counter,
        )],
    )
}

/// One call: logs [`MESSAGE`] and returns its update.
pub fn process() -> Vec<MetricUpdate> {
    wasmtap_sdk::log(LogLevel::Warn, MESSAGE);
    vec![MetricUpdate { family: 0, labels: Vec::new(), value: UpdateValue::CounterAdd(1.0) }]
}

wasmtap_testing_raw::export!(info = info, process = |_batch| Ok(process()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_line_looks_like_the_hosts() {
        let lines: Vec<&str> = MESSAGE.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with(FORGED));
        assert!(MESSAGE.contains('\x1b'));
        assert_eq!(process()[0].value, UpdateValue::CounterAdd(1.0));
    }
}
