//! Stage: analyzers (the bounds every analyzer is held to).
//!
//! Inputs: what an analyzer hands the host: its component bytes, its `init` declaration (name,
//! version, families), the updates of each call, its log lines and error strings.
//! Outputs: the sandbox [`Limits`] (CPU per call, memory, updates per call, log rate) and the
//! size and time bounds of loading and of each call's updates (applied where they are read,
//! in `convert`); a verdict on the declaration before anything is kept ([`check_info`]); and
//! guest text made safe to print ([`guest_text`]): cut to a length and
//! with control characters escaped, so that it can neither flood nor forge the host's log
//! lines or reports.
//!
//! Series per family are bounded by the registry. Each limit is generous for real analyzers:
//! the built-in ones stay far below every one.

use std::time::Duration;

/// The largest component loaded: the built-in analyzers are about 100 KiB each, and
/// compiling takes time in proportion to size, so this bounds load time too.
pub const MAX_COMPONENT_BYTES: usize = 16 << 20;

/// The longest a component may take to compile: the built-in ones take about 50 ms each (a
/// few hundred on a loaded machine), so this is room for large analyzers, and keeps `host
/// check` and a reload from hanging on a component built to be slow to compile.
pub const COMPILE_BUDGET: Duration = Duration::from_secs(5);

/// How often the epoch advances. Deadlines are counted in these ticks, so this is the
/// resolution of the CPU budget; 10 ms costs nothing measurable and keeps overruns short.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Sandbox limits for every analyzer instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// CPU time one call (`init`, `process` or `tick`) may use, on its worker thread.
    pub call_budget: Duration,
    /// Cap on an instance's linear memory, in bytes.
    pub memory_bytes: usize,
    /// Cap on the number of updates one call may return.
    pub max_updates: usize,
    /// Log lines an instance may write per second; the rest are counted and dropped.
    pub log_lines_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A batch of 1024 packets takes ~0.1 ms; 200 ms is far beyond any honest analyzer
            // yet short enough that a runaway one stalls its worker only briefly.
            call_budget: Duration::from_millis(200),
            // Flow tables for 100k flows fit in well under 64 MiB.
            memory_bytes: 64 << 20,
            // One update per series per batch: far more than any batch of 1024 packets needs.
            max_updates: 65_536,
            // Enough to explain a failure, too few to flood the host's log.
            log_lines_per_second: 10,
        }
    }
}

/// Bytes of an analyzer name. Names follow `[a-z][a-z0-9_-]*`: they label metrics and logs.
pub const MAX_NAME: usize = 64;
/// Bytes of an analyzer version: room for any semantic version with build metadata.
pub const MAX_VERSION: usize = 64;
/// Bytes of one label value: a Kubernetes object name is at most 253; anything longer in a
/// label makes every line of the exposition long.
pub const MAX_LABEL_VALUE: usize = 1024;
/// Bytes of one call's packed updates: 65 536 updates with three address labels each take
/// about 2.5 MiB.
pub const MAX_CALL_BYTES: usize = 16 << 20;
/// Bytes of a log line or an error string kept; the rest is cut (and counted, for logs).
pub const MAX_GUEST_TEXT: usize = 1024;

/// A limit an analyzer went over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error("analyzer name \"{0}\" does not match [a-z][a-z0-9_-]* of at most {MAX_NAME} bytes")]
    Name(String),
    #[error(
        "version \"{0}\" is over {MAX_VERSION} bytes or has characters other than printable ASCII"
    )]
    Version(String),
    #[error("a label value of {got} bytes, over the limit of {MAX_LABEL_VALUE}")]
    LabelValue { got: usize },
    #[error("{got} bytes of updates in one call, over the limit of {MAX_CALL_BYTES}")]
    CallBytes { got: usize },
}

/// Checks the analyzer's name and version. (Families are checked by the registry.)
pub fn check_info(name: &str, version: &str) -> Result<(), Exceeded> {
    let mut chars = name.chars();
    let name_ok = name.len() <= MAX_NAME
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(Exceeded::Name(guest_text(name, MAX_NAME)));
    }
    let version_ok = !version.is_empty()
        && version.len() <= MAX_VERSION
        && version.bytes().all(|b| b.is_ascii_graphic());
    if !version_ok {
        return Err(Exceeded::Version(guest_text(version, MAX_VERSION)));
    }
    Ok(())
}

/// `text` cut to at most `max` bytes (at a character boundary, marked with `…`) with control
/// characters escaped (`\n`, `\u{1b}`), so that it prints as one harmless line.
pub fn guest_text(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 4);
    for c in text.chars() {
        let piece: String =
            if c.is_control() { c.escape_default().collect() } else { c.to_string() };
        if out.len() + piece.len() > max {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// Whether [`guest_text`] with `max` would cut `text`.
pub fn is_cut(text: &str, max: usize) -> bool {
    text.len() > max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_one_pattern() {
        for good in ["traffic", "tcp-analysis", "syn_no_answer2"] {
            assert_eq!(check_info(good, "0.1.0"), Ok(()), "{good}");
        }
        for bad in ["", "Traffic", "9lives", "a b", "a\nb", &"x".repeat(65)] {
            assert!(matches!(check_info(bad, "1"), Err(Exceeded::Name(_))), "{bad:?}");
        }
        for bad in ["", "1.0\n", "1 0", &"1".repeat(65)] {
            assert!(matches!(check_info("a", bad), Err(Exceeded::Version(_))), "{bad:?}");
        }
    }

    #[test]
    fn guest_text_is_one_short_line() {
        assert_eq!(guest_text("a\nb\x1b[31m", 100), "a\\nb\\u{1b}[31m");
        assert_eq!(guest_text("héllo", 3), "hé…");
        assert_eq!(guest_text(&"x".repeat(5000), 1024).len(), 1024 + '…'.len_utf8());
    }
}
