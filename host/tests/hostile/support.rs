//! Helpers of the hostile-analyzer suite alone: the default analyzers' components, checks of
//! a host's log and exposition (over-long lines, values that are not finite, a family's
//! bytes), and a FIFO for the paced replay. The helpers shared with the other integration
//! tests (running the host, HTTP, the exposition, tshark) are in `host/tests/common/`.
//!
//! Inputs: the folder `host/build.rs` writes the default analyzers to. Outputs: plain values
//! for the tests to assert on. Every wait is bounded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{Sample, family_of, run_with_timeout};

/// The default analyzers' components (`<name>.component.wasm`), written by `host/build.rs`.
pub fn default_components() -> BTreeMap<String, PathBuf> {
    let dir = Path::new(env!("WASMTAP_DEFAULT_ANALYZERS_DIR"));
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .map(|e| e.expect("reading the default analyzers' folder").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_suffix(".component.wasm")?.to_owned();
            Some((name, p))
        })
        .collect()
}

/// The longest line a host's log may have: guest text is cut to 1024 bytes wherever the host
/// prints it, and the rest of a line (time, level, target, the analyzer's name, version and
/// source path) is a few hundred bytes at most.
pub const MAX_LOG_LINE: usize = 4096;

/// The lines of `log` longer than [`MAX_LOG_LINE`], shortened for a message.
pub fn overlong_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.len() > MAX_LOG_LINE)
        .map(|l| format!("{} bytes: {}…", l.len(), l.chars().take(200).collect::<String>()))
        .collect()
}

/// The samples whose value is not finite (`+Inf`, `-Inf`, `NaN`).
pub fn not_finite(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter(|s| !s.value.is_finite())
        .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
        .collect()
}

/// Bytes of the exposition lines of `family` in `text` (`# HELP`, `# TYPE`, its samples and,
/// for a histogram, its `_bucket`, `_sum` and `_count` samples), newlines included.
pub fn family_bytes(text: &str, family: &str) -> usize {
    let known = [family.to_owned()];
    text.lines().filter(|l| family_of(l, &known) == family).map(|l| l.len() + 1).sum()
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let r = run_with_timeout(Command::new("mkfifo").arg(path), Duration::from_secs(10));
    assert!(r.success(), "mkfifo {}: {}", path.display(), r.describe());
}

/// Lets a writer blocked on (or writing to) `fifo` go, once its reader is gone.
pub fn release_fifo_writer(fifo: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    /// Linux's O_NONBLOCK: opening a FIFO's read end this way never blocks.
    const O_NONBLOCK: i32 = 0o4000;
    let _ = std::fs::OpenOptions::new().read(true).custom_flags(O_NONBLOCK).open(fifo);
}

/// The words of `words` that `text` lacks.
pub fn missing_words<'a>(text: &str, words: &[&'a str]) -> Vec<&'a str> {
    words.iter().copied().filter(|w| !text.contains(w)).collect()
}

/// The words of `words` that `text` lacks, or none if `text` says `instead`, the one other
/// message accepted (the CPU budget's, for an analyzer whose work may spend it first).
pub fn missing_words_or<'a>(text: &str, words: &[&'a str], instead: Option<&str>) -> Vec<&'a str> {
    if instead.is_some_and(|m| text.contains(m)) { Vec::new() } else { missing_words(text, words) }
}
