//! Running the host binary to the end: `wasmtap ARGS` with its log on ([`run_host`]), under GNU
//! time for its peak RSS ([`host_measured`]), `wasmtap replay` of a capture to exposition text
//! ([`replay_to_text`]), and the checks that a run did not hang, die or panic.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::process::{HOST, RunResult, TempDir, next_seq, run_with_timeout};

/// Limit for one replay of a test capture (≤ ~10k packets, well under a second normally);
/// generous for a loaded CI machine, short enough that a hung host fails the suite quickly.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);

/// GNU time, for a command's peak RSS.
const GNU_TIME: &str = "/usr/bin/time";

/// `wasmtap ARGS...` with its info-level log on stderr, run to the end (bounded by `timeout`).
pub fn run_host(args: &[&OsStr], timeout: Duration) -> RunResult {
    run_with_timeout(Command::new(HOST).args(args).env("WASMTAP_LOG", "info"), timeout)
}

/// `wasmtap replay ARGS...` with a timeout.
pub fn host_replay(args: &[&OsStr], timeout: Duration) -> RunResult {
    run_with_timeout(Command::new(HOST).arg("replay").args(args), timeout)
}

/// [`run_host`] under GNU time: the run, and the host's peak RSS ("Maximum resident set
/// size") in KiB, `None` if the host was killed.
pub fn host_measured(args: &[&OsStr], timeout: Duration) -> (RunResult, Option<u64>) {
    assert!(
        Path::new(GNU_TIME).is_file(),
        "{GNU_TIME} (GNU time) is not installed; Debian: apt-get install time"
    );
    let report = std::env::temp_dir().join(format!(
        "wasmtap-test-time-{}-{}",
        std::process::id(),
        next_seq()
    ));
    let mut cmd = Command::new(GNU_TIME);
    cmd.arg("-v").arg("-o").arg(&report).arg(HOST).args(args).env("WASMTAP_LOG", "info");
    let r = run_with_timeout(&mut cmd, timeout);
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    let rss = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok());
    let finished = r.status.is_some();
    (r, rss.filter(|_| finished))
}

/// Asserts that a run of the host did not hang, die by a signal or panic: no exit code 101
/// and no "panicked" anywhere on stderr (so a default analyzer's guest panic counts too).
pub fn assert_no_panic(r: &RunResult, what: &str) {
    assert_no_host_panic(r, what);
    assert!(!r.stderr.contains("panicked"), "{what}: something panicked: {}", r.describe());
}

/// Like [`assert_no_panic`], but allows a guest's panic message in the log (an analyzer
/// that traps on purpose): only a panic of the host itself (std's `thread '…' panicked at`
/// line, exit code 101) fails.
pub fn assert_no_host_panic(r: &RunResult, what: &str) {
    assert!(!r.timed_out(), "{what}: hung: {}", r.describe());
    assert!(r.code().is_some(), "{what}: killed by a signal: {}", r.describe());
    assert_ne!(r.code(), Some(101), "{what}: panicked: {}", r.describe());
    let host_panic =
        r.stderr.lines().any(|l| l.starts_with("thread '") && l.contains("panicked at"));
    assert!(!host_panic, "{what}: the host panicked: {}", r.describe());
}

/// Replays `capture` to a file with the default analyzers (plus `extra` arguments) and
/// returns the exposition text; panics unless the host exits 0.
pub fn replay_to_text(capture: &Path, extra: &[&str], dir: &TempDir) -> String {
    replay_to_text_checked(capture, extra, dir, assert_no_panic)
}

/// [`replay_to_text`] with the panic check of the caller's choice.
pub fn replay_to_text_checked(
    capture: &Path,
    extra: &[&str],
    dir: &TempDir,
    no_panic: fn(&RunResult, &str),
) -> String {
    let out = dir.join(&format!("replay-{}.prom", next_seq()));
    let mut args: Vec<&OsStr> = vec![capture.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    args.push("--output".as_ref());
    args.push(out.as_os_str());
    let r = host_replay(&args, REPLAY_TIMEOUT);
    no_panic(&r, "wasmtap replay");
    assert!(r.success(), "wasmtap replay {} {extra:?} failed: {}", capture.display(), r.describe());
    std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("reading {}: {e}", out.display()))
}
