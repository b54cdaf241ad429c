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
use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind, MetricUpdate, UpdateValue};

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
    AnalyzerInfo {
        name: "log-newline".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        families: vec![MetricFamily {
            name: "test_log_newline_calls_total".to_owned(),
            help: "process calls, each logging a line with a newline (test analyzer).".to_owned(),
            kind: MetricKind::Counter,
            label_names: Vec::new(),
            buckets: Vec::new(),
        }],
    }
}

/// One call: logs [`MESSAGE`] and returns its update.
pub fn process() -> Vec<MetricUpdate> {
    wasmtap_sdk::log(LogLevel::Warn, MESSAGE);
    vec![MetricUpdate { family: 0, labels: Vec::new(), value: UpdateValue::CounterAdd(1.0) }]
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use wasmtap_sdk::bindings::exports::wasmtap::analyzer::analyzer::Guest;
    use wasmtap_sdk::wit;

    struct LogNewline;

    impl Guest for LogNewline {
        fn init(_config: wit::Config) -> Result<wit::AnalyzerInfo, String> {
            Ok(super::info())
        }

        fn process(_batch: Vec<u8>) -> Result<Vec<wit::MetricUpdate>, String> {
            Ok(super::process())
        }

        fn tick(_now_ns: u64, _end_of_capture: bool) -> Result<Vec<wit::MetricUpdate>, String> {
            Ok(Vec::new())
        }
    }

    wasmtap_sdk::bindings::__export_component!(LogNewline with_types_in wasmtap_sdk::bindings);
}

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
