//! Every capture of a corpus directory goes through `wasmtap replay`: no panic, no hang, no
//! signal; every file that Wireshark's reader takes replays with exit 0; every file the host
//! refuses is named in its message. Also: missing and non-capture files, and a check that the
//! corpus test fails a host that fails at start-up.
//!
//! The corpus is an input: `WASMTAP_CORPUS=DIR`, a folder of pcap/pcapng files such as
//! tcpdump's own `tests/` folder (the-tcpdump-group/tcpdump on GitHub, 830 captures, many
//! malformed on purpose); `.ci/run` points it at `../shared/corpus/tcpdump`. It is read in
//! place, never copied. Without it the corpus test says on stderr that it is skipped and why,
//! unless WASMTAP_REQUIRE_CORPUS=1 makes that a failure.
//!
//! Which files "Wireshark reads without error" is decided by `capinfos`, Wireshark's own
//! capture-file tool: it reads every record through the same library (wiretap) as tshark,
//! without tshark's second of dissector start-up per file.

mod common;

use common::*;
use std::ffi::OsStr;
use std::io::Write;
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

/// The corpus directory, if one was given.
fn corpus_dir() -> Option<PathBuf> {
    std::env::var_os("WASMTAP_CORPUS").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Whether Wireshark's reader takes the whole file without an error.
fn wireshark_reads(file: &Path) -> bool {
    let r = run_with_timeout(
        std::process::Command::new("capinfos").arg("-c").arg(file),
        PER_FILE_TIMEOUT,
    );
    r.success()
}

#[derive(Debug)]
enum Outcome {
    Ok,
    Rejected(i32, String),
    Bad(String),
}

fn replay_one(host: &OsStr, file: &Path) -> Outcome {
    let args =
        [OsStr::new("replay"), file.as_os_str(), OsStr::new("--output"), OsStr::new("/dev/null")];
    let r = run_with_timeout(std::process::Command::new(host).args(args), PER_FILE_TIMEOUT);
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
                Outcome::Rejected(code, stderr.trim().to_string())
            }
        }
        other => Outcome::Bad(format!("unexpected exit code {other}:\n{stderr}")),
    }
}

/// What the corpus run found: files by outcome, and what must hold of them.
struct Report {
    ok: usize,
    rejected: Vec<(PathBuf, i32, String)>,
    bad: Vec<(PathBuf, String)>,
    problems: Vec<String>,
}

/// Replays every capture in `dir` with the `wasmtap` binary and checks every outcome.
fn run_corpus(host: &OsStr, dir: &Path) -> Report {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
            name.ends_with(".pcap") || name.ends_with(".pcapng")
        })
        .collect();
    files.sort();
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let bad_so_far = AtomicUsize::new(0);
    let results: Mutex<Vec<(PathBuf, Outcome, bool)>> = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    if bad_so_far.load(Ordering::Relaxed) >= MAX_BAD {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(i) else { return };
                    let outcome = replay_one(host, file);
                    if matches!(outcome, Outcome::Bad(_)) {
                        bad_so_far.fetch_add(1, Ordering::Relaxed);
                    }
                    let readable = wireshark_reads(file);
                    if let Ok(mut r) = results.lock() {
                        r.push((file.clone(), outcome, readable));
                    }
                }
            });
        }
    });
    let results = results.into_inner().expect("results");
    let mut report = Report { ok: 0, rejected: Vec::new(), bad: Vec::new(), problems: Vec::new() };
    let mut readable = 0;
    for (file, outcome, wireshark_ok) in results.iter() {
        readable += usize::from(*wireshark_ok);
        match outcome {
            Outcome::Ok => report.ok += 1,
            Outcome::Rejected(code, msg) => {
                if *wireshark_ok {
                    report.problems.push(format!(
                        "{}: Wireshark reads it, but the host exited {code}: {}",
                        file.display(),
                        msg.lines().last().unwrap_or_default()
                    ));
                }
                // The last line is the summary; the file is named in the line about it.
                let last = msg.lines().last().unwrap_or_default().to_string();
                if !msg.contains(&name(file)) {
                    report
                        .problems
                        .push(format!("{}: refused without naming it: {last}", file.display()));
                }
                let about = msg.lines().find(|l| l.contains(&name(file))).unwrap_or(&last);
                report.rejected.push((file.clone(), *code, about.to_string()));
            }
            Outcome::Bad(why) => report.bad.push((file.clone(), why.clone())),
        }
    }
    println!(
        "corpus: {} of {} files in {:.1?}: {} ok, {} refused with a message naming the file, \
         {} misbehaved; Wireshark reads {readable} of them",
        results.len(),
        files.len(),
        start.elapsed(),
        report.ok,
        report.rejected.len(),
        report.bad.len()
    );
    if results.len() != files.len() {
        report.problems.push(format!("only {} of {} files replayed", results.len(), files.len()));
    }
    report
}

#[test]
fn every_corpus_capture_replays_without_panic_or_hang() {
    let Some(dir) = corpus_dir() else {
        let msg = "WASMTAP_CORPUS is not set: point it at a folder of captures, such as \
                   tcpdump's tests/ folder (the-tcpdump-group/tcpdump on GitHub)";
        if matches!(std::env::var("WASMTAP_REQUIRE_CORPUS").as_deref(), Ok("1")) {
            panic!("{msg} (WASMTAP_REQUIRE_CORPUS=1)");
        }
        // Straight to the process's stderr: libtest hides what a passing test prints.
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED every_corpus_capture_replays_without_panic_or_hang: {msg}\n"
        );
        return;
    };
    require_tools(&["capinfos"]);
    assert!(dir.is_dir(), "WASMTAP_CORPUS={} is not a directory", dir.display());
    let report = run_corpus(OsStr::new(HOST), &dir);
    for (f, code, msg) in report.rejected.iter().take(20) {
        println!("  refused (exit {code}) {}: {msg}", name(f));
    }
    let bad: Vec<String> =
        report.bad.iter().map(|(f, why)| format!("{}: {why}", f.display())).collect();
    let early = if bad.len() >= MAX_BAD { " (stopped early)" } else { "" };
    assert!(bad.is_empty(), "{} corpus files misbehaved{early}:\n{}", bad.len(), bad.join("\n\n"));
    assert!(report.problems.is_empty(), "{}", report.problems.join("\n"));
    assert!(report.ok > 100, "only {} captures replayed with exit 0", report.ok);
}

/// The corpus check itself must fail a broken host: here a stand-in that exits 1 at start-up
/// with a message, as a host that cannot start would.
#[test]
fn the_corpus_check_fails_a_host_that_fails_at_start_up() {
    require_tools(&["capinfos"]);
    let dir = TempDir::new("stub-corpus");
    std::fs::copy(sample_capture(), dir.join("good.pcap")).expect("copy the sample");
    std::fs::write(dir.join("text.pcap"), "not a capture\n").expect("write");
    let stub = dir.join("broken-host");
    std::fs::write(&stub, "#!/bin/sh\necho 'error: cannot start' >&2\nexit 1\n").expect("stub");
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let report = run_corpus(stub.as_os_str(), dir.path());
    assert_eq!(report.ok, 0);
    assert_eq!(report.rejected.len(), 2);
    let joined = report.problems.join("\n");
    assert!(
        joined.contains("good.pcap: Wireshark reads it, but the host exited 1"),
        "the readable capture the stub refused is not reported: {joined}"
    );
    assert!(joined.contains("refused without naming it"), "{joined}");
    // And the real host passes the same folder's readable file.
    let report = run_corpus(OsStr::new(HOST), dir.path());
    assert_eq!((report.ok, report.rejected.len()), (1, 1), "{:?}", report.problems);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
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
