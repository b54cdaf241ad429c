//! Every capture of the shared tcpdump test corpus (`../shared/corpus/tcpdump/`, 830 files,
//! many malformed on purpose) goes through `host replay`: no panic, no hang, no signal, and
//! a clear message whenever a file is rejected. Also: missing and non-capture files.
//!
//! The corpus is read in place, never copied. Without it the corpus test is skipped with a
//! message, unless WASMTAP_REQUIRE_CORPUS=1 (set by scripts/test) makes that a failure.

mod common;

use common::*;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Per-file limit: a replay of the largest corpus file takes well under a second.
const PER_FILE_TIMEOUT: Duration = Duration::from_secs(30);
/// Both cores: one replay per core.
const PARALLEL: usize = 2;
/// Stop starting new files after this many misbehaved: a host that hangs on every file
/// would otherwise take hours (830 × the timeout) to fail.
const MAX_BAD: usize = 5;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/tcpdump")
}

#[derive(Debug)]
enum Outcome {
    Ok,
    Rejected(i32, String),
    Bad(String),
}

fn replay_one(file: &Path) -> Outcome {
    let r = host_replay(
        &[file.as_os_str(), OsStr::new("--output"), OsStr::new("/dev/null")],
        PER_FILE_TIMEOUT,
    );
    let stderr = r.stderr_text();
    if r.timed_out() {
        return Outcome::Bad(format!("hung (killed after {PER_FILE_TIMEOUT:?})"));
    }
    let Some(code) = r.code() else {
        return Outcome::Bad(format!("killed by a signal: {:?}\n{stderr}", r.status));
    };
    if stderr.contains("panicked") || code == 101 {
        return Outcome::Bad(format!("panicked (exit {code}):\n{stderr}"));
    }
    match code {
        0 => Outcome::Ok,
        1 | 2 => {
            if stderr.trim().is_empty() {
                Outcome::Bad(format!("exit {code} with an empty stderr"))
            } else {
                Outcome::Rejected(code, stderr.lines().last().unwrap_or("").to_string())
            }
        }
        other => Outcome::Bad(format!("unexpected exit code {other}:\n{stderr}")),
    }
}

#[test]
fn every_corpus_capture_replays_without_panic_or_hang() {
    let dir = corpus_dir();
    if !dir.is_dir() {
        let msg = format!("capture corpus not found at {}", dir.display());
        if matches!(std::env::var("WASMTAP_REQUIRE_CORPUS").as_deref(), Ok("1")) {
            panic!("{msg} (WASMTAP_REQUIRE_CORPUS=1)");
        }
        eprintln!("\n!!! SKIPPED every_corpus_capture_replays_without_panic_or_hang: {msg}\n");
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
            name.ends_with(".pcap") || name.ends_with(".pcapng")
        })
        .collect();
    files.sort();
    assert!(files.len() > 100, "only {} captures in {}", files.len(), dir.display());

    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let bad_so_far = AtomicUsize::new(0);
    let results: Mutex<Vec<(PathBuf, Outcome, Duration)>> = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    if bad_so_far.load(Ordering::Relaxed) >= MAX_BAD {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(i) else { return };
                    let t = Instant::now();
                    let outcome = replay_one(file);
                    if matches!(outcome, Outcome::Bad(_)) {
                        bad_so_far.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(mut r) = results.lock() {
                        r.push((file.clone(), outcome, t.elapsed()));
                    }
                }
            });
        }
    });
    let results = results.into_inner().expect("results");

    let ok = results.iter().filter(|r| matches!(r.1, Outcome::Ok)).count();
    let rejected: Vec<_> = results
        .iter()
        .filter_map(|(f, o, _)| match o {
            Outcome::Rejected(code, msg) => Some((f, code, msg)),
            _ => None,
        })
        .collect();
    let bad: Vec<_> = results
        .iter()
        .filter_map(|(f, o, _)| match o {
            Outcome::Bad(why) => Some((f, why)),
            _ => None,
        })
        .collect();
    let slowest = results.iter().max_by_key(|r| r.2).map(|r| (&r.0, r.2));

    println!(
        "corpus: {} of {} files in {:.1?}: {ok} ok, {} rejected with a message, {} bad",
        results.len(),
        files.len(),
        start.elapsed(),
        rejected.len(),
        bad.len()
    );
    if let Some((f, d)) = slowest {
        println!("slowest: {} ({d:.2?})", f.display());
    }
    for (f, code, msg) in rejected.iter().take(20) {
        println!("  rejected (exit {code}) {}: {msg}", name(f));
    }
    if rejected.len() > 20 {
        println!("  ... and {} more rejected", rejected.len() - 20);
    }
    let report: Vec<String> =
        bad.iter().map(|(f, why)| format!("{}: {why}", f.display())).collect();
    let early = if bad.len() >= MAX_BAD { " (stopped early)" } else { "" };
    assert!(
        bad.is_empty(),
        "{} corpus files misbehaved{early}:\n{}",
        bad.len(),
        report.join("\n\n")
    );
    assert_eq!(results.len(), files.len(), "not every corpus file was replayed");
}

fn name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A bad input must exit non-zero (not 101, not a signal) and name the file on stderr.
fn assert_rejected(file: &Path, what: &str) {
    let r = host_replay(
        &[file.as_os_str(), OsStr::new("--output"), OsStr::new("/dev/null")],
        PER_FILE_TIMEOUT,
    );
    assert_no_panic(&r, what);
    assert!(!r.success(), "{what}: exit 0 for {}: {}", file.display(), r.describe());
    let stderr = r.stderr_text();
    assert!(
        stderr.contains(&name(file)),
        "{what}: stderr does not name {}: {}",
        file.display(),
        r.describe()
    );
}

#[test]
fn missing_empty_and_non_capture_files_are_rejected_with_a_message() {
    let dir = TempDir::new("bad-inputs");
    assert_rejected(&dir.join("no-such-capture.pcap"), "missing file");

    let text = dir.join("notes-not-a-capture.txt");
    std::fs::write(&text, "this is a text file, not a pcap\n".repeat(20)).expect("write");
    assert_rejected(&text, "text file");

    let empty = dir.join("empty-file.pcap");
    std::fs::write(&empty, b"").expect("write");
    assert_rejected(&empty, "empty file");

    // A pcap magic number followed by a truncated global header.
    let truncated = dir.join("truncated-header.pcap");
    std::fs::write(&truncated, [0xd4, 0xc3, 0xb2, 0xa1, 0x02, 0x00]).expect("write");
    assert_rejected(&truncated, "truncated header");

    let directory = dir.join("a-directory.pcap");
    std::fs::create_dir(&directory).expect("mkdir");
    assert_rejected(&directory, "directory");
}

#[test]
fn one_bad_file_among_good_ones_fails_the_run() {
    let sample = sample_capture();
    assert!(sample.is_file(), "{} missing", sample.display());
    let dir = TempDir::new("mixed-inputs");
    let missing = dir.join("missing-in-the-middle.pcap");
    let r = host_replay(
        &[
            sample.as_os_str(),
            missing.as_os_str(),
            OsStr::new("--output"),
            dir.join("out.prom").as_os_str(),
        ],
        PER_FILE_TIMEOUT,
    );
    assert_no_panic(&r, "good + missing file");
    assert!(!r.success(), "exit 0 although one file is missing: {}", r.describe());
    assert!(
        r.stderr_text().contains("missing-in-the-middle.pcap"),
        "stderr does not name the missing file: {}",
        r.describe()
    );
}
