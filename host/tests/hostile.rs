//! The hostile-analyzer suite (issue 4, acceptance points 1 and 3; issue 9, acceptance points 1
//! and 2): analyzers that loop, blow up memory, the stack, the update list or the cardinality,
//! hand the host oversized or absurd things, or are not valid analyzers at all, must never hurt
//! the host or the other analyzers, and each must meet its documented outcome.
//!
//! Inputs: the test analyzers the `wasmtap-test-analyzers` crate builds from
//! `guest-analyzers/testing/`, three made byte by byte here ([`generated`]), the default
//! analyzers' components (`WASMTAP_DEFAULT_ANALYZERS_DIR`), a synthetic capture generated here
//! ([`capture`]), a million-packet capture from `bench/synth_pcap.py` ([`million`]), the
//! committed sample capture, and tshark. Outputs: pass/fail, with the host's output on failure,
//! and the measured peak RSS and `wasmtap check` times on stderr.
//!
//! # Documented outcomes
//!
//! | analyzer (`.wasm`) | what it does | outcome | the message contains |
//! |---|---|---|---|
//! | `infinite-loop` | spins forever in `process` | every call stopped at the CPU budget (reason `timeout`, also a trap); restarted with backoff; quarantined after 5 failures | `exceeded its CPU budget of 200ms per call` |
//! | `memory-bomb` | keeps 16 MiB more per batch | the 4th call of every instance cannot grow memory (reason `memory`); quarantined after 5 | `tried to grow its memory past the cap of 64 MiB` |
//! | `stack-overflow` | recurses without bound | every call traps (reason `trap`); quarantined after 5 | `trapped`, `call stack exhausted` |
//! | `panic-nth-batch` | panics on its 3rd batch | 2 good batches per instance, then a trap (reason `trap`), the panic message in the log; quarantined after 5 | `trapped`, `unreachable`; log: `panicking on batch 3` |
//! | `huge-update-list` | returns 70,000 updates per call | every call refused whole (reason `too_many_updates`), no series; quarantined after 5 | `returned 70000 updates, over the limit of 65536` |
//! | `cardinality-bomb` | a million distinct label values per instance | calls succeed and it stays `running`; its family stops at `--series-cap` (10,000), every further new series refused and counted in `wasmtap_host_series_refused_total{family}`; `wasmtap check` fails | check: the family's name, `series` |
//! | `invalid-metric-name` | declares the metric `Bad-Name` | rejected at load | `Bad-Name`, `not a valid Prometheus name` |
//! | `metric-collision` | declares `packets_total` (the default `traffic` analyzer's) | rejected at load | `wasmtap_packets_total`, `already exported`, `traffic` |
//! | `wrong-wit-version` | built against `wasmtap:analyzer@0.1.0`, as with the 0.1.0 SDK | rejected at load | `built for wasmtap:analyzer@0.1.0`, `wasmtap:analyzer@0.2.0`, `rebuild the analyzer with the wasmtap SDK of this host` |
//! | `core-module` | a core module (`traffic`'s), not a component | rejected at load | `core WebAssembly module` |
//! | `random-bytes` | 4 KiB of pseudo-random bytes | rejected at load | `not a WebAssembly file` |
//! | `wasi-filesystem` | uses `std::fs`, built for `wasm32-wasip2` | rejected at load | `imports`, `wasi:filesystem` |
//! | `huge-label-value` | one update per call with a new 4 MiB text label value | every call refused whole (reason `too_large`), no series; quarantined after 5 | `returned a label value of 4194304 bytes, over the limit of 1024` |
//! | `long-label-value` | a label value of 1025 bytes | the same | `returned a label value of 1025 bytes, over the limit of 1024` |
//! | `huge-call-bytes` | 31,000 updates of four 128-byte labels: about 16.9 MB packed | the same, or the CPU budget first † | `returned 16926008 bytes of updates in one call, over the limit of 16777216` |
//! | `huge-error` | `process` returns `Err` of 32 MiB, a newline near its start | every call fails (reason `error`, or the CPU budget first †), the text cut to 1024 bytes and escaped in logs, reports and `/analyzers`; quarantined after 5 | `returned an error: huge-error: the first line\nERROR host: a forged line eee…` |
//! | `histogram-count-mismatch` | histogram updates whose count (3) is not the sum of their buckets (2) | every call refused (reason `bad_update`); quarantined after 5 | `histogram count 3 is not the sum of its buckets (2)` |
//! | `garbled-updates` | packed updates whose second has an unknown label tag, after a valid first | every call refused whole, the valid update too (reason `bad_update`); quarantined after 5 | `returned updates that do not parse: label tag 9 at byte 31` |
//! | `counter-infinity` | adds 1e308 twice per call: +Inf together | every call refused (reason `bad_update`), never a series, let alone `+Inf`; quarantined after 5 | `adds 1000…, which is negative, not finite or over 2^53` |
//! | `histogram-sum-infinity` | a histogram update whose sum is +Inf | every call refused (reason `bad_update`); quarantined after 5 | `histogram sum inf is not finite or beyond ±1e20` |
//! | `histogram-huge-count` | a histogram update of 2^41 observations | every call refused (reason `bad_update`); quarantined after 5 | `would overflow its series` |
//! | `exposition-bomb` | valid updates at every per-item limit: 128-byte name, 16 labels of 64-byte names, 64 buckets, 1000-byte values; 128 new series per instance | keeps `running`; the family stops at the 32 MiB exposition budget (29 series, far below the cap), further new series refused and counted, a warning logged; `wasmtap check` fails | check: the family's name, `refused` |
//! | `histogram-overflow` | valid updates (2^40 observations each, 65,535 per call) until one instance alone has sent 2^24 | keeps `running`; the series' count stops at `(2^24 − 1) × 2^40`, the largest it can hold, every update past it refused and counted, never wrapped or `+Inf`; `wasmtap check` passes on the sample (38 calls cannot get there) and fails on a capture of 257 calls or more | check: the family's name, `refused` |
//! | `log-flood` | logs two 4 MiB lines per call | keeps `running`; 10 lines per second logged, each cut to 1024 bytes and counted in `wasmtap_analyzer_log_lines_cut_total`, the rest dropped and counted; cut + dropped = 2 × calls; `wasmtap check` passes | log: `log-flood: call 0000000001 line 1 llll` |
//! | `log-newline` | logs a newline followed by a forged host log line and an escape sequence | keeps `running`; the message on one line, `\n` and `\u{1b}` spelled out, no line of the log starts with the forged text; `wasmtap check` passes | log: `an honest first line\n2024-01-01T00:00:00.000000Z ERROR host::app: forged by log-newline\u{1b}[2K` |
//! | `name-traffic` | calls itself `traffic` | rejected at load | `name "traffic" is already taken by builtin:traffic`; check: `analyzer name: "traffic" is the name of a built-in analyzer` |
//! | `name-newline` | an analyzer name with a newline | rejected at load, the name escaped on one line | `analyzer name "name-newline\nERROR host: forged" does not match [a-z][a-z0-9_-]* of at most 64 bytes` |
//! | `version-newline` | a version with a newline | rejected at load, likewise | `version "0.1.0\nERROR host: forged" is over 64 bytes or has characters other than printable ASCII` |
//! | `family-name-16mib` | a family name of 16 MiB | rejected at load, the name shown by its first 40 characters (or at the CPU budget †) | `the name of family "test_family_name_xxxxxxxxxxxxxxxxxxxxxxx"… is 16777216, over the limit of 128` |
//! | `many-families` | `init` declares 200,000 families | rejected at load, at once (or at the CPU budget †) | `the number of families is 200000, over the limit of 256` |
//! | `too-many-labels` | a family with 17 labels | rejected at load | `the labels of "test_too_many_labels_total" is 17, over the limit of 16` |
//! | `too-many-buckets` | a histogram with 65 buckets | rejected at load | `the buckets of "test_too_many_buckets" is 65, over the limit of 64` |
//! | `long-help` | a help text of 1025 bytes | rejected at load | `the help of "test_long_help_total" is 1025, over the limit of 1024` |
//! | `long-label-name` | a label name of 65 bytes | rejected at load | `a label name of "test_long_label_name_total" is 65, over the limit of 64` |
//! | `oversized-component` | a good component padded to 16 MiB + 1 byte | rejected at load | `is larger than 16777216 bytes, the limit for a component` |
//! | `slow-compile` | one function of 1,800 nested loops: 32 KB that take Cranelift about 12 s | rejected at load after 5 s | `took over 5s to compile` |
//!
//! † Heavy work (`or_budget` in [`cases::Expect`]): these build megabytes, or 10^5 items, that
//! the host then lifts out of their memory, all charged to the call's 200 ms CPU budget (30 to
//! 60 ms of it on the 2-core test machine, up to 140 ms with compilers running beside it). On
//! a loaded machine the thread's CPU time can reach the budget first, and that is containment
//! too: each failure may be the analyzer's own limit or the budget's (reason `timeout`, a trap,
//! `exceeded its CPU budget of 200ms per call`; at load `init failed: exceeded its CPU budget
//! of 200ms per call`). Every other part of the outcome — refused or quarantined as
//! documented, no series, the counts, the host's memory, the other analyzers' metrics — is
//! checked whichever limit stopped it. The other analyzers built to hit a size limit take 15 ms
//! or less of the budget per call (`huge-update-list`, `histogram-overflow`, `log-flood`,
//! `cardinality-bomb`, `huge-label-value`, `memory-bomb`): they are held to their own limit
//! alone.
//!
//! Where each outcome is checked:
//! - rejected at load: `wasmtap replay --analyzer X` exits non-zero at start with the message,
//!   writing no metrics, its peak RSS under [`RSS_LIMIT_KIB`]; and `wasmtap check X` exits
//!   non-zero with it on its `FAIL` line;
//! - at run time: one `wasmtap replay` with all of them beside the default analyzers, reading a
//!   synthetic capture through a FIFO paced over [`PACE`] (so that the backoffs run their course)
//!   with `--workers 2 --batch-size 8`: it exits 0; each quarantined analyzer's failures are
//!   exactly 5 per worker with its reason (or the budget's, †) and it ends `quarantined`; the
//!   cardinality bomb's family holds exactly the cap and refused `2 × 1,000,000 − 10,000`
//!   series; the other outcomes as in the table, with exact counts; and the default analyzers'
//!   metrics are those of a run without the hostile ones — the same series with the same
//!   values, exactly (the registry keeps histogram sums in exact billionths) — and their totals
//!   (packets, resets, DF, window-scale options) are exactly tshark's. `wasmtap check X` fails with
//!   the message (passes, for the log analyzers);
//! - a million packets (issue 9): one `wasmtap replay` of a 1,000,000-packet capture with every
//!   issue-9 analyzer that loads, all at once (`--workers 2`, the default series cap): it
//!   finishes, its peak RSS stays under [`RSS_LIMIT_KIB`], the outcomes hold, the default
//!   analyzers' metrics equal a replay without them (families at the series cap aside: which of
//!   the capture's 19,389 address pairs get in depends on the workers' order), and every count
//!   they export equals tshark's: packets in all, RSTs, DF and window-scale options per pair;
//! - every `wasmtap check` (on the sample, two at a time) finishes within [`CHECK_LIMIT`];
//! - in every log: no line longer than 4 KiB, none that guest text forged, no raw escape
//!   character; no sample in any output is `+Inf` or `NaN`;
//! - live (root): `wasmtap run -i lo --analyzer-dir DIR` under loopback traffic; every file is
//!   dropped into `DIR` in turn and must end up rejected (logged, not in `GET /analyzers`),
//!   quarantined (in `/analyzers` and `wasmtap_analyzer_state`), capped, budgeted, overflowed or
//!   logging as documented, while `/metrics` answers 200 within [`live::METRICS_WITHIN`] (a
//!   render of the whole exposition on a busy machine, not a wait for an analyzer) and
//!   `/healthz` within [`live::HEALTHZ_WITHIN`] throughout, and the process stays up. A
//!   rejected file is removed once its rejection is seen;
//! - `wasmtap check` passes (exit 0, `PASS`) on every default analyzer.

#[path = "hostile/capture.rs"]
mod capture;
#[path = "hostile/cases.rs"]
mod cases;
mod common;
#[path = "hostile/generated.rs"]
mod generated;
#[path = "hostile/live.rs"]
mod live;
#[path = "hostile/million.rs"]
mod million;
#[path = "hostile/support.rs"]
mod support;
#[path = "hostile/verdicts.rs"]
mod verdicts;

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::thread;
use std::time::Duration;

use capture::Synthetic;
use cases::*;
use common::live::LiveHost;
use common::*;
use live::{Watchdog, start_watching};
use support::*;
use verdicts::{Span, budget_note, check_problems, log_problems, replay_problems};

/// Workers in the paced and the million replays: two, so that the policy is seen to work per
/// worker.
const WORKERS: u64 = 2;
/// Wall-clock time the paced replay's capture trickles in over. The slowest way to quarantine
/// (the infinite loop) takes 5 × 200 ms of budget plus 1.5 s of backoff; 8 s leaves room for a
/// loaded CI machine.
const PACE: Duration = Duration::from_secs(8);
/// Parts the paced capture is written in: one every 100 ms.
const PACE_CHUNKS: usize = 80;
/// Seed of the synthetic capture (any fixed value).
const CAPTURE_SEED: u64 = 0x7a9_5eed;
/// Generous bound on one host run that should take seconds.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Issue 9: the host's peak RSS, whatever the analyzers hand it.
const RSS_LIMIT_KIB: u64 = 256 * 1024;
/// Issue 9: how long `wasmtap check` may take on any analyzer. What it guards: no analyzer holds
/// a check past the host's budgets. `slow-compile` is refused at the 5 s compile budget, which
/// runs by the clock whatever the load (its check takes 5.1 s), where Cranelift would take
/// about 12 s: the limit must stay below that. The slowest other check, `histogram-overflow`'s
/// 38 calls of 65,536 updates, took 3 s on the 2-core test machine and 5.4 s with four
/// `sha256sum /dev/zero` beside the suite.
const CHECK_LIMIT: Duration = Duration::from_secs(10);

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `host` runs at once in the concurrent checks: two, like the cores of the test machine, so
/// that the time a `wasmtap check` takes is its own and not the queue's.
const PARALLEL: usize = 2;

/// Runs `f` for every hostile analyzer matching `pick`, [`PARALLEL`] at a time; fails with
/// every error.
fn for_each_concurrently(
    pick: impl Fn(&Hostile) -> bool,
    f: impl Fn(&Hostile) -> Result<(), String> + Sync,
) {
    let picked: Vec<&Hostile> = HOSTILE.iter().filter(|h| pick(h)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let errors = std::sync::Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                while let Some(h) =
                    picked.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    if let Err(e) = f(h) {
                        errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}

/// `wasmtap check` of `h` on the sample: its documented report, within [`CHECK_LIMIT`]. An
/// analyzer whose series overflows only after 257 calls (`histogram-overflow`) passes there,
/// and is also checked on `long`, where it must fail as documented.
fn check(h: &Hostile, long: Option<&Path>) -> Result<(), String> {
    let wasm = cases::path(h.name);
    let run = |pcap: Option<&Path>| {
        let mut args = vec![os("check"), wasm.as_os_str()];
        if let Some(p) = pcap {
            args.extend([os("--pcap"), p.as_os_str()]);
        }
        let r = run_host(&args, RUN_TIMEOUT);
        assert_no_host_panic(&r, &format!("wasmtap check {}", h.name));
        r
    };
    let r = run(None);
    eprintln!("wasmtap check {}: {:.2?}", h.name, r.elapsed);
    let mut problems = Vec::new();
    if r.elapsed > CHECK_LIMIT {
        problems.push(format!("wasmtap check {} took {:.1?}", h.name, r.elapsed));
    }
    match (h.expect, long) {
        (Expect::Overflowed { .. }, Some(long)) => {
            let pass = Hostile { expect: Expect::Logs { cut: false, shows: &[] }, ..*h };
            problems.extend(check_problems(&pass, &r));
            let r = run(Some(long));
            eprintln!("wasmtap check {} --pcap {}: {:.2?}", h.name, long.display(), r.elapsed);
            problems.extend(check_problems(h, &r));
        }
        _ => problems.extend(check_problems(h, &r)),
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

#[test]
fn load_time_rejections_fail_fast_with_a_clear_message() {
    let dir = TempDir::new("rejected");
    for_each_concurrently(
        |h: &Hostile| matches!(h.expect, Expect::Rejected { .. }),
        |h| {
            let Expect::Rejected { words, .. } = h.expect else { unreachable!() };
            let out = dir.join(&format!("{}.prom", h.name));
            let wasm = cases::path(h.name);
            let sample = sample_capture();
            let args = [os("replay"), sample.as_os_str(), os("--no-cache")];
            let more = [os("--analyzer"), wasm.as_os_str(), os("--output"), out.as_os_str()];
            let (r, rss) = host_measured(&[&args[..], &more[..]].concat(), RUN_TIMEOUT);
            assert_no_host_panic(&r, &format!("wasmtap replay --analyzer {}", h.name));
            if r.success() || r.status.is_none() {
                return Err(format!("replay with {} did not fail fast: {}", h.name, r.describe()));
            }
            let error = r.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
            let budget = h.expect.budget_message();
            let missing = missing_words_or(error, words, budget);
            if !missing.is_empty() {
                return Err(format!("replay with {}: {missing:?} missing from {error:?}", h.name));
            }
            if out.exists() {
                return Err(format!("replay with {} still wrote metrics", h.name));
            }
            let problems = log_problems(&format!("replay with {}", h.name), &r.stderr);
            if !problems.is_empty() {
                return Err(problems.join("\n"));
            }
            let at_budget =
                if budget.is_some_and(|m| error.contains(m)) { " at the CPU budget" } else { "" };
            eprintln!(
                "replay --analyzer {}: refused{at_budget} in {:.2?}, peak RSS {rss:?} KiB",
                h.name, r.elapsed
            );
            match rss {
                Some(kib) if kib < RSS_LIMIT_KIB => check(h, None),
                _ => Err(format!("replay with {}: peak RSS {rss:?} KiB", h.name)),
            }
        },
    );
}

#[test]
fn host_check_reports_every_run_time_hostile() {
    // A capture long enough (about 875 calls of 8 packets) for `histogram-overflow`'s series to
    // reach its top; the sample (38 calls) is not.
    let dir = TempDir::new("check");
    let long = dir.join("synthetic.pcap");
    std::fs::write(&long, Synthetic::generate(CAPTURE_SEED).bytes).expect("writing the capture");
    for_each_concurrently(
        |h: &Hostile| !matches!(h.expect, Expect::Rejected { .. }),
        |h| check(h, Some(&long)),
    );
}

#[test]
fn host_check_passes_every_default_analyzer() {
    let components = default_components();
    // Every analyzer the host runs by default has its component checked, and nothing else.
    let dir = TempDir::new("defaults");
    let out = dir.join("defaults.prom");
    let sample = sample_capture();
    let args = [os("replay"), sample.as_os_str(), os("--no-cache"), os("--output")];
    let r = run_host(&[&args[..], &[out.as_os_str()]].concat(), RUN_TIMEOUT);
    assert!(r.success(), "replay of the sample: {}", r.describe());
    let text = std::fs::read_to_string(&out).expect("the replay's output");
    let mut running: Vec<String> = parse_exposition(&text)
        .into_iter()
        .filter(|s| s.name == "wasmtap_analyzer_state" && s.labels["state"] == "running")
        .map(|s| s.labels["analyzer"].clone())
        .collect();
    running.sort();
    let names: Vec<String> = components.keys().cloned().collect();
    assert_eq!(names, running, "default components vs the analyzers a replay runs");
    for (name, path) in &components {
        let r = run_host(&[os("check"), path.as_os_str()], RUN_TIMEOUT);
        assert!(r.success(), "wasmtap check {name}: {}", r.describe());
        assert_eq!(r.stdout.lines().last(), Some("PASS"), "wasmtap check {name}: {}", r.describe());
        assert!(verdicts::fail_line(&r.stdout).is_none(), "wasmtap check {name}: {}", r.describe());
    }
}

/// What every replay of the hostile analyzers must show of the default analyzers and the whole
/// output: the defaults running without a failure, no sample that is not finite, no series of a
/// family whose every call failed, a clean log.
fn defaults_running_and_clean(samples: &[Sample], log: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for name in ["traffic", "header-flags", "tcp-analysis"] {
        let labels = [("analyzer", name), ("state", "running")];
        if value_of(samples, "wasmtap_analyzer_state", &labels) != Some(1.0) {
            problems.push(format!("{name} is not running"));
        }
        // Exported at 0 from the start, and still 0.
        let failures = value_of(samples, "wasmtap_analyzer_failures_total", &[("analyzer", name)]);
        if failures != Some(0.0) {
            problems.push(format!("{name} failures: {failures:?}, not 0"));
        }
    }
    problems.extend(not_finite(samples).into_iter().map(|s| format!("not finite: {s}")));
    for never in NEVER_UPDATED {
        // A label-less counter is exported at 0 from the start (README, "Metrics"); any other
        // series, or another value, would be an update that applied.
        let at_zero =
            |s: &Sample| s.name.ends_with("_total") && s.labels.is_empty() && s.value == 0.0;
        if let Some(s) = samples.iter().find(|s| s.name.starts_with(never) && !at_zero(s)) {
            problems.push(format!("{never} has a series: {s:?}"));
        }
    }
    problems.extend(log_problems("the replay", log));
    problems
}

/// The differences between the default analyzers' samples in `text` and in `baseline` (a
/// replay of the same capture without the hostile analyzers), for the families `keep` picks.
fn baseline_differences(text: &str, baseline: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let families: Vec<String> =
        default_families(baseline).into_iter().filter(|f| keep(f)).collect();
    family_differences(text, baseline, &families)
        .into_iter()
        .take(20)
        .map(|d| format!("a default analyzer's metrics changed: {d}"))
        .collect()
}

#[test]
fn run_time_hostiles_are_contained_and_the_defaults_stay_exact() {
    let dir = TempDir::new("paced");
    let synthetic = std::sync::Arc::new(Synthetic::generate(CAPTURE_SEED));
    // The same file name in both places: the capture's name is the `device` label.
    std::fs::create_dir_all(dir.join("file")).expect("mkdir");
    std::fs::create_dir_all(dir.join("fifo")).expect("mkdir");
    let file = dir.join("file/synthetic.pcap");
    let fifo = dir.join("fifo/synthetic.pcap");
    std::fs::write(&file, &synthetic.bytes).expect("writing the capture");
    mkfifo(&fifo);
    let tshark = {
        let file = file.clone();
        thread::spawn(move || Totals::from_tshark(&file))
    };
    let common = ["--no-cache", "--workers", "2", "--batch-size", "8"].map(os);

    let base_out = dir.join("baseline.prom");
    let args =
        [&[os("replay"), file.as_os_str()], &common[..], &[os("--output"), base_out.as_os_str()]];
    let r = run_host(&args.concat(), RUN_TIMEOUT);
    assert!(r.success(), "baseline replay: {}", r.describe());
    let baseline = std::fs::read_to_string(&base_out).expect("baseline output");

    let run_time: Vec<&Hostile> =
        HOSTILE.iter().filter(|h| !matches!(h.expect, Expect::Rejected { .. })).collect();
    let paths: Vec<_> = run_time.iter().map(|h| cases::path(h.name)).collect();
    let out = dir.join("hostile.prom");
    let mut args = vec![os("replay"), fifo.as_os_str()];
    args.extend(common);
    args.extend([os("--output"), out.as_os_str()]);
    for p in &paths {
        args.extend([os("--analyzer"), p.as_os_str()]);
    }
    let args: Vec<OsString> = args.into_iter().map(OsStr::to_owned).collect();
    let replay = thread::spawn(move || {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run_host(&args, RUN_TIMEOUT + PACE)
    });
    let writer = {
        let (synthetic, fifo) = (synthetic.clone(), fifo.clone());
        thread::spawn(move || synthetic.pace_into(&fifo, PACE, PACE_CHUNKS))
    };
    let r = replay.join().expect("the replay thread");
    if !writer.is_finished() {
        release_fifo_writer(&fifo);
    }
    writer.join().expect("the pacing thread");
    assert_no_host_panic(&r, "paced replay with the hostile analyzers");
    assert!(r.success(), "replay with the hostile analyzers: {}", r.describe());
    assert!(r.elapsed >= PACE, "the replay did not wait for the paced capture ({:?})", r.elapsed);
    let text = std::fs::read_to_string(&out).expect("hostile replay output");
    let samples = parse_exposition(&text);

    // The default analyzers: unharmed, exact, and right.
    let expected = Totals {
        frames: synthetic.frames,
        resets: synthetic.resets,
        dont_fragment: synthetic.dont_fragment,
        wscale_options: synthetic.wscale_options,
    };
    assert_eq!(tshark.join().expect("tshark thread"), expected, "tshark vs the generator");
    let mut problems = baseline_differences(&text, &baseline, |_| true);
    let got = Totals::from_exposition(&samples);
    if got != expected {
        problems.push(format!("default analyzers {got:?}, tshark {expected:?}"));
    }
    problems.extend(defaults_running_and_clean(&samples, &r.stderr));
    eprintln!("paced replay: {expected:?} in {:.1?}", r.elapsed);

    for h in run_time {
        problems.extend(replay_problems(h, &text, &samples, &r.stderr, WORKERS, Span::Paced));
        if let Some(note) = budget_note(h, &samples) {
            eprintln!("paced replay: {note}");
        }
    }
    // What the failing analyzers managed before each failure, exactly.
    let count = |name: &str| value_of(&samples, name, &[]);
    let instances = QUARANTINE_FAILURES * WORKERS;
    let good = (PANIC_ON_CALL - 1) * instances;
    if count("wasmtap_test_panic_good_batches_total") != Some(good as f64) {
        problems.push(format!("panic-nth-batch: not {good} good batches"));
    }
    let survived = MEMORY_BOMB_GOOD_CALLS * instances;
    if count("wasmtap_test_memory_bomb_batches_total") != Some(survived as f64) {
        problems.push(format!("memory-bomb: not {survived} good batches"));
    }
    if !r.stderr.contains("panicking on batch 3") {
        problems.push("no guest panic message in the log".into());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The problems with the per-pair families of the default analyzers against tshark's counts:
/// every series exported holds tshark's count for its pair, and as many are exported as the
/// series cap lets in.
fn per_pair_problems(samples: &[Sample], counts: &million::Counts) -> Vec<String> {
    let mut problems = Vec::new();
    let frames = samples.iter().filter(|s| s.name == "wasmtap_packets_total").map(|s| s.value);
    let frames: f64 = frames.sum();
    if frames != counts.frames as f64 {
        problems.push(format!("wasmtap_packets_total {frames}, tshark {}", counts.frames));
    }
    for (family, tshark) in [
        ("wasmtap_tcp_resets_total", &counts.resets),
        ("wasmtap_ip_dont_fragment_total", &counts.dont_fragment),
        ("wasmtap_tcp_window_scale_options_total", &counts.wscale_options),
    ] {
        let mut exported = 0;
        for s in samples.iter().filter(|s| s.name == family) {
            exported += 1;
            let addr = |l: &str| s.labels.get(l).and_then(|a| a.parse::<std::net::IpAddr>().ok());
            let (Some(src), Some(dst)) = (addr("src_ip"), addr("dst_ip")) else {
                problems.push(format!("{family}: a series without addresses: {s:?}"));
                continue;
            };
            let want = tshark.get(&(src, dst)).copied().unwrap_or(0);
            if s.value != want as f64 {
                problems.push(format!("{family}{{{src} → {dst}}} = {}, tshark {want}", s.value));
            }
        }
        let expected = tshark.len().min(SERIES_CAP as usize);
        if exported != expected {
            problems.push(format!("{family}: {exported} series, expected {expected}"));
        }
    }
    problems.truncate(20);
    problems
}

#[test]
fn a_million_packets_with_every_issue_9_analyzer_stay_under_256_mib() {
    let dir = TempDir::new("million");
    let capture = million::capture();
    let common = [os("--no-cache"), os("--workers"), os("2")];
    let base_out = dir.join("baseline.prom");
    let args = [os("replay"), capture.path.as_os_str()];
    let more = [os("--output"), base_out.as_os_str()];
    let (r, base_rss) = host_measured(&[&args[..], &common[..], &more[..]].concat(), RUN_TIMEOUT);
    assert!(r.success(), "baseline replay: {}", r.describe());
    let baseline = std::fs::read_to_string(&base_out).expect("baseline output");
    eprintln!("million: defaults alone in {:.1?}, peak RSS {base_rss:?} KiB", r.elapsed);

    let loaded: Vec<&Hostile> = HOSTILE
        .iter()
        .filter(|h| h.issue == 9 && !matches!(h.expect, Expect::Rejected { .. }))
        .collect();
    let paths: Vec<_> = loaded.iter().map(|h| cases::path(h.name)).collect();
    let out = dir.join("hostile.prom");
    let mut args = vec![os("replay"), capture.path.as_os_str()];
    args.extend(common);
    args.extend([os("--output"), out.as_os_str()]);
    for p in &paths {
        args.extend([os("--analyzer"), p.as_os_str()]);
    }
    let (r, rss) = host_measured(&args, RUN_TIMEOUT);
    assert_no_host_panic(&r, "the million-packet replay with the issue-9 analyzers");
    assert!(r.success(), "the million-packet replay: {}", r.describe());
    let names: Vec<&str> = loaded.iter().map(|h| h.name).collect();
    eprintln!(
        "million: {} packets with {names:?} in {:.1?}, peak RSS {rss:?} KiB (limit {RSS_LIMIT_KIB})",
        million::PACKETS,
        r.elapsed
    );
    let text = std::fs::read_to_string(&out).expect("the replay's output");
    let samples = parse_exposition(&text);
    // Families that refused series (at the series cap, or past their analyzer's exposition
    // budget, which the per-pair round-trip histograms reach first) hold whichever pairs came
    // first, and with two workers that order is not fixed: those are checked against tshark
    // pair by pair instead.
    let base_samples = parse_exposition(&baseline);
    let capped = |f: &str| {
        value_of(&base_samples, "wasmtap_host_series", &[("family", f)]) == Some(SERIES_CAP as f64)
            || value_of(&base_samples, "wasmtap_host_series_refused_total", &[("family", f)])
                .is_some_and(|refused| refused > 0.0)
    };
    let mut problems = baseline_differences(&text, &baseline, |f| !capped(f));
    problems.extend(per_pair_problems(&samples, &capture.counts));
    problems.extend(per_pair_problems(&base_samples, &capture.counts));
    problems.extend(defaults_running_and_clean(&samples, &r.stderr));
    if rss.is_none_or(|kib| kib >= RSS_LIMIT_KIB) {
        problems.push(format!("peak RSS {rss:?} KiB, over {RSS_LIMIT_KIB}"));
    }
    for h in loaded {
        problems.extend(replay_problems(h, &text, &samples, &r.stderr, WORKERS, Span::Quick));
        if let Some(note) = budget_note(h, &samples) {
            eprintln!("million: {note}");
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Drops `h` into the watched `dir` and waits for its documented outcome.
fn live_outcome(host: &LiveHost, dir: &Path, h: &Hostile) -> Result<(), String> {
    // Written under a hidden name, then renamed: the watcher sees a whole file at once.
    let file = dir.join(format!("{}.wasm", h.name));
    let hidden = dir.join(format!(".{}.wasm.part", h.name));
    std::fs::copy(cases::path(h.name), &hidden).expect("copying the analyzer");
    std::fs::rename(&hidden, &file).expect("renaming the analyzer into place");
    let source = file.display().to_string();
    let running = |host: &LiveHost| match host.analyzer(h.name) {
        Some(entry) if entry["state"] == "running" => Ok(()),
        other => Err(format!("not running: {other:?}")),
    };
    let metric = |name: &str, labels: &[(&str, &str)]| value_of(&host.metrics(), name, labels);
    match h.expect {
        Expect::Rejected { words, .. } => {
            // Compiling `slow-compile` takes the 5 s budget before it is refused.
            let logged = wait_for(Duration::from_secs(30), || {
                let log = host.log();
                let line = log.lines().find(|l| l.contains("not loaded") && l.contains(&source));
                line.map(str::to_owned)
            });
            // Once refused, out it goes: nothing is left to load, and a slow file is not
            // compiled again while the others are tried.
            let _ = std::fs::remove_file(&file);
            let Some(line) = logged else {
                return Err(format!("no `not loaded` log line:\n{}", host.log_tail()));
            };
            let missing = missing_words_or(&line, words, h.expect.budget_message());
            if !missing.is_empty() {
                return Err(format!("{missing:?} missing from {line:?}"));
            }
            let listed = host.analyzers().into_iter().find(|a| a["source"] == source.as_str());
            match listed.or_else(|| host.analyzer(h.name)) {
                Some(entry) => Err(format!("in /analyzers: {entry}")),
                None => Ok(()),
            }
        }
        Expect::Quarantined { words, .. } => {
            let entry = wait_for(Duration::from_secs(30), || {
                host.analyzer(h.name).filter(|a| a["state"] == "quarantined")
            });
            let Some(entry) = entry else {
                let now = host.analyzer(h.name);
                return Err(format!("not quarantined in 30 s: {now:?}\n{}", host.log_tail()));
            };
            let error = entry["last_error"].as_str().unwrap_or_default();
            let missing = missing_words_or(error, words, h.expect.budget_message());
            if !missing.is_empty() {
                return Err(format!("{missing:?} missing from the last error {error:?}"));
            }
            if error.len() > GUEST_TEXT + 200 {
                return Err(format!("a last error of {} bytes", error.len()));
            }
            // /metrics may serve a render up to a second old (scrapes share one render).
            let labels = [("analyzer", h.name), ("state", "quarantined")];
            let state = || metric("wasmtap_analyzer_state", &labels);
            match wait_for(Duration::from_secs(5), || state().filter(|v| *v == 1.0)) {
                Some(_) => Ok(()),
                None => Err(format!("wasmtap_analyzer_state{{state=quarantined}} = {:?}", state())),
            }
        }
        Expect::Capped { family, .. } => {
            let f = [("family", family)];
            let capped = wait_for(Duration::from_secs(30), || {
                let m = host.metrics();
                let series = value_of(&m, "wasmtap_host_series", &f)?;
                let refused = value_of(&m, "wasmtap_host_series_refused_total", &f)?;
                (refused > 0.0).then_some(series)
            });
            if capped != Some(SERIES_CAP as f64) {
                return Err(format!("{family}: {capped:?} series once some were refused"));
            }
            running(host)
        }
        Expect::Budgeted { family, .. } => {
            let f = [("family", family)];
            let kept = wait_for(Duration::from_secs(60), || {
                let m = host.metrics();
                let series = value_of(&m, "wasmtap_host_series", &f)?;
                let refused = value_of(&m, "wasmtap_host_series_refused_total", &f)?;
                (refused > 0.0).then_some(series)
            });
            if !kept.is_some_and(|k| k >= 1.0 && k < SERIES_CAP as f64) {
                return Err(format!("{kept:?} series once some were refused"));
            }
            if !host.log().lines().any(|l| l.contains("exposition budget reached")) {
                return Err("no warning that the exposition budget was reached".into());
            }
            running(host)
        }
        Expect::Overflowed { family, .. } => {
            let count = format!("{family}_count");
            let top = wait_for(Duration::from_secs(120), || {
                let refused = metric("wasmtap_host_series_refused_total", &[("family", family)]);
                refused.filter(|r| *r > 0.0)?;
                metric(&count, &[])
            });
            if top != Some(OVERFLOW_MAX_COUNT as f64) {
                return Err(format!("{count} = {top:?} once updates were refused"));
            }
            running(host)
        }
        Expect::Logs { cut, shows } => {
            let ours = format!("analyzer=\"{}\"", h.name);
            let shown = wait_for(Duration::from_secs(30), || {
                let log = host.log();
                let lines: Vec<&str> = log.lines().filter(|l| l.contains(&ours)).collect();
                shows.iter().all(|w| lines.iter().any(|l| l.contains(w))).then_some(())
            });
            if shown.is_none() {
                return Err(format!("the log never showed {shows:?}:\n{}", host.log_tail()));
            }
            if cut {
                let a = [("analyzer", h.name)];
                let counted = wait_for(Duration::from_secs(5), || {
                    metric("wasmtap_analyzer_log_lines_cut_total", &a).filter(|c| *c > 0.0)
                });
                if counted.is_none() {
                    return Err("no line counted in wasmtap_analyzer_log_lines_cut_total".into());
                }
            }
            running(host)
        }
    }
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn live_analyzer_directory_survives_every_hostile() {
    if !require_root("live_analyzer_directory_survives_every_hostile") {
        return;
    }
    let started = std::time::Instant::now();
    let tmp = TempDir::new("live");
    let dir = tmp.join("analyzers");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut host = start_watching(&dir);
    let defaults: Vec<String> =
        host.analyzers().iter().filter_map(|a| a["name"].as_str().map(str::to_owned)).collect();
    assert!(defaults.len() >= 2, "default analyzers: {defaults:?}");
    let watchdog = Watchdog::start(host.addr);

    // Every analyzer gets its turn even if an earlier one misbehaved; all problems at the end.
    let mut problems = Vec::new();
    for h in HOSTILE {
        if let Err(e) = live_outcome(&host, &dir, h) {
            problems.push(format!("{}: {e}", h.name));
        }
        assert!(host.alive(), "the host died after {}:\n{}", h.name, host.log_tail());
        eprintln!("live: {} handled after {:.1?}", h.name, started.elapsed());
    }

    // The final picture: defaults running, the run-time hostiles there, the rejected absent.
    let listed = host.analyzers();
    for a in &listed {
        let name = a["name"].as_str().unwrap_or_default();
        let expected = match HOSTILE.iter().find(|h| h.name == name).map(|h| h.expect) {
            Some(Expect::Quarantined { .. }) => "quarantined",
            Some(Expect::Rejected { .. }) => "absent",
            _ => "running",
        };
        if a["state"] != expected {
            problems.push(format!("finally: {name} should be {expected}: {a}"));
        }
    }
    let expected = defaults.len()
        + HOSTILE.iter().filter(|h| !matches!(h.expect, Expect::Rejected { .. })).count();
    if listed.len() != expected {
        problems.push(format!("finally: {} analyzers listed, expected {expected}", listed.len()));
    }

    let report = watchdog.finish();
    let (checks, requests) = (report.checks, report.requests);
    assert!(host.alive(), "the host died:\n{}", host.log_tail());
    for (path, answers, median, worst) in &report.latencies {
        eprintln!("live: {path}: {answers} answers, median {median:.2?}, worst {worst:.2?}");
    }
    if !report.failures.is_empty() {
        let n = report.failures.len();
        problems.push(format!("/metrics or /healthz failed {n} of {checks} times:"));
        problems.extend(report.failures);
    }
    if requests <= 100 {
        problems.push(format!("only {requests} traffic requests succeeded"));
    }
    problems.extend(log_problems("wasmtap run", &host.log()));
    // After the traffic stopped, so `lo` is idle: the capture thread must still notice.
    let stopped = host.stop("TERM", Duration::from_secs(15));
    if stopped != Some(true) {
        let tail = host.log_tail();
        problems
            .push(format!("SIGTERM: exit {stopped:?} within 15 s (None: still running):\n{tail}"));
    }
    eprintln!("live: {checks} endpoint checks, {requests} requests, {:.1?}", started.elapsed());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
