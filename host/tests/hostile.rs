//! The hostile-analyzer suite (issue 4, acceptance points 1 and 3): analyzers that loop, blow
//! up memory, the stack, the update list or the cardinality, or are not valid analyzers at all,
//! must never hurt the host or the other analyzers, and each must meet its documented outcome.
//!
//! Inputs: the test analyzers `host/build.rs` builds from `guest-analyzers/testing/` (and writes
//! to `WASMTAP_TEST_ANALYZERS_DIR`), the default analyzers' components
//! (`WASMTAP_DEFAULT_ANALYZERS_DIR`), a synthetic capture generated here ([`capture`]), the
//! committed sample capture, and tshark. Outputs: pass/fail, with the host's output on failure.
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
//! | `cardinality-bomb` | a million distinct label values per instance | calls succeed and it stays `running`; its family stops at `--series-cap` (10,000), every further new series refused and counted in `wasmtap_host_series_refused_total{family}`; `host check` fails | check: the family's name, `series` |
//! | `invalid-metric-name` | declares the metric `Bad-Name` | rejected at load | `Bad-Name`, `not a valid Prometheus name` |
//! | `metric-collision` | declares `packets_total` (the default `traffic` analyzer's) | rejected at load | `wasmtap_packets_total`, `already exported`, `traffic` |
//! | `wrong-wit-version` | built against `wasmtap:analyzer@0.2.0` | rejected at load | `wasmtap:analyzer@0.2.0`, `wasmtap:analyzer@0.1.0` |
//! | `core-module` | a core module (`traffic`'s), not a component | rejected at load | `core WebAssembly module` |
//! | `random-bytes` | 4 KiB of pseudo-random bytes | rejected at load | `not a WebAssembly file` |
//! | `wasi-filesystem` | uses `std::fs`, built for `wasm32-wasip2` | rejected at load | `imports`, `wasi:filesystem` |
//!
//! Where each outcome is checked:
//! - rejected at load: `host replay --analyzer X` exits non-zero at start with the message, and
//!   `host check X` exits non-zero with it on its `FAIL` line;
//! - failing at run time: one `host replay` with all six beside the default analyzers, reading a
//!   synthetic capture through a FIFO paced over [`PACE`] (so that the backoffs run their course)
//!   with `--workers 2 --batch-size 8`: it exits 0; each analyzer's failures are exactly 5 per
//!   worker with its reason, it ends `quarantined`; the cardinality bomb's family holds exactly
//!   the cap and refused `2 × 1,000,000 − 10,000` series; and the default analyzers' metrics are
//!   those of a run without the hostile ones — the same series with the same values (histogram
//!   `_sum`s to 1e-12 relative: the registry adds the workers' f64 sums in arrival order) — and
//!   their totals (packets, resets, DF, window-scale options) are exactly tshark's. `host check
//!   X` exits non-zero with the message;
//! - live (root): `host run -i lo --analyzer-dir DIR` under loopback traffic; every file is
//!   dropped into `DIR` in turn and must end up rejected (logged, not in `GET /analyzers`),
//!   quarantined (in `/analyzers` and `wasmtap_analyzer_state`) or capped, while `/metrics` and
//!   `/healthz` answer 200 within a second throughout and the process stays up;
//! - `host check` passes (exit 0, `PASS`) on every default analyzer.

#[path = "hostile/capture.rs"]
mod capture;
mod common;
#[path = "hostile/live.rs"]
mod live;
#[path = "hostile/support.rs"]
mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::thread;
use std::time::Duration;

use capture::Synthetic;
use live::{LiveHost, Watchdog, wait_for};
use support::*;

/// What the host must do with a test analyzer.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Refused at load; every message about it contains `words`.
    Rejected { words: &'static [&'static str] },
    /// Loads, then every instance fails with `reason` (the error's text containing `words`);
    /// quarantined after [`QUARANTINE_FAILURES`] failures.
    Quarantined { reason: &'static str, trap: bool, words: &'static [&'static str] },
    /// Loads and runs; `family` stops at the series cap. `host check` fails with `words`.
    Capped { family: &'static str, words: &'static [&'static str] },
}

/// A hostile test analyzer: its file (and analyzer) name and its documented outcome.
#[derive(Debug, Clone, Copy)]
struct Hostile {
    name: &'static str,
    expect: Expect,
}

/// Every hostile test analyzer, as in the table above.
const HOSTILE: &[Hostile] = &[
    Hostile {
        name: "infinite-loop",
        expect: Expect::Quarantined {
            reason: "timeout",
            trap: true,
            words: &["exceeded its CPU budget of 200ms per call"],
        },
    },
    Hostile {
        name: "memory-bomb",
        expect: Expect::Quarantined {
            reason: "memory",
            trap: false,
            words: &["tried to grow its memory past the cap of 64 MiB"],
        },
    },
    Hostile {
        name: "stack-overflow",
        expect: Expect::Quarantined {
            reason: "trap",
            trap: true,
            words: &["trapped", "call stack exhausted"],
        },
    },
    Hostile {
        name: "panic-nth-batch",
        expect: Expect::Quarantined {
            reason: "trap",
            trap: true,
            words: &["trapped", "unreachable"],
        },
    },
    Hostile {
        name: "huge-update-list",
        expect: Expect::Quarantined {
            reason: "too_many_updates",
            trap: false,
            words: &["returned 70000 updates, over the limit of 65536"],
        },
    },
    Hostile {
        name: "cardinality-bomb",
        expect: Expect::Capped {
            family: CARDINALITY_FAMILY,
            words: &[CARDINALITY_FAMILY, "series"],
        },
    },
    Hostile {
        name: "invalid-metric-name",
        expect: Expect::Rejected { words: &["Bad-Name", "not a valid Prometheus name"] },
    },
    Hostile {
        name: "metric-collision",
        expect: Expect::Rejected {
            words: &["wasmtap_packets_total", "already exported", "traffic"],
        },
    },
    Hostile {
        name: "wrong-wit-version",
        expect: Expect::Rejected { words: &["wasmtap:analyzer@0.2.0", "wasmtap:analyzer@0.1.0"] },
    },
    Hostile {
        name: "core-module",
        expect: Expect::Rejected { words: &["core WebAssembly module"] },
    },
    Hostile {
        name: "random-bytes",
        expect: Expect::Rejected { words: &["not a WebAssembly file"] },
    },
    Hostile {
        name: "wasi-filesystem",
        expect: Expect::Rejected { words: &["imports", "wasi:filesystem"] },
    },
];

/// The cardinality bomb's family.
const CARDINALITY_FAMILY: &str = "wasmtap_test_cardinality_bomb_total";
/// Distinct label values every cardinality-bomb instance emits (its crate's `VALUES`).
const CARDINALITY_VALUES: u64 = 1_000_000;
/// The host's default `--series-cap`.
const SERIES_CAP: u64 = 10_000;
/// Failures within the window that quarantine an instance (the host's failure policy).
const QUARANTINE_FAILURES: u64 = 5;
/// The call on which `panic-nth-batch` panics (its crate's `PANIC_ON_CALL`).
const PANIC_ON_CALL: u64 = 3;
/// Calls a `memory-bomb` instance survives under the 64 MiB default cap (16 MiB each).
const MEMORY_BOMB_GOOD_CALLS: u64 = 3;
/// Workers in the paced replay: two, so that the policy is seen to work per worker.
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

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The line of `host check`'s report that says what failed.
fn fail_line(out: &str) -> Option<&str> {
    out.lines().find(|l| l.starts_with("FAIL"))
}

/// Checks one `host check` run that must fail with `words` on its `FAIL` line.
fn check_fails(name: &str, words: &[&str]) -> Result<(), String> {
    let r = host(&[os("check"), test_analyzer(name).as_os_str()], RUN_TIMEOUT);
    r.assert_no_host_panic(&format!("host check {name}"));
    let Some(line) = fail_line(&r.stdout).filter(|_| r.status.is_some_and(|s| !s.success())) else {
        return Err(format!("host check {name} did not fail: {}", r.describe()));
    };
    let missing = missing_words(line, words);
    if !missing.is_empty() {
        return Err(format!("host check {name}: {missing:?} missing from {line:?}"));
    }
    if name == "panic-nth-batch" && !r.stderr.contains("panicking on batch 3") {
        return Err(format!(
            "host check {name}: the panic message is not in the log: {}",
            r.describe()
        ));
    }
    Ok(())
}

/// Runs `f` for every hostile analyzer matching `pick` concurrently; fails with every error.
fn for_each_concurrently(
    pick: impl Fn(&Expect) -> bool,
    f: impl Fn(&Hostile) -> Result<(), String> + Sync,
) {
    let errors: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> =
            HOSTILE.iter().filter(|h| pick(&h.expect)).map(|h| s.spawn(|| f(h))).collect();
        handles.into_iter().filter_map(|h| h.join().expect("a checker thread").err()).collect()
    });
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}

#[test]
fn load_time_rejections_fail_fast_with_a_clear_message() {
    let dir = TempDir::new("rejected");
    for_each_concurrently(
        |e| matches!(e, Expect::Rejected { .. }),
        |h| {
            let Expect::Rejected { words } = h.expect else { unreachable!() };
            let out = dir.join(&format!("{}.prom", h.name));
            let wasm = test_analyzer(h.name);
            let sample = sample_capture();
            let args = [os("replay"), sample.as_os_str(), os("--no-cache")];
            let more = [os("--analyzer"), wasm.as_os_str(), os("--output"), out.as_os_str()];
            let r = host(&[&args[..], &more[..]].concat(), RUN_TIMEOUT);
            r.assert_no_host_panic(&format!("host replay --analyzer {}", h.name));
            if r.success() || r.status.is_none() {
                return Err(format!("replay with {} did not fail fast: {}", h.name, r.describe()));
            }
            let error = r.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
            let missing = missing_words(error, words);
            if !missing.is_empty() {
                return Err(format!("replay with {}: {missing:?} missing from {error:?}", h.name));
            }
            if out.exists() {
                return Err(format!("replay with {} still wrote metrics", h.name));
            }
            check_fails(h.name, words)
        },
    );
}

#[test]
fn host_check_fails_on_every_run_time_hostile() {
    for_each_concurrently(
        |e| !matches!(e, Expect::Rejected { .. }),
        |h| match h.expect {
            Expect::Quarantined { words, .. } | Expect::Capped { words, .. } => {
                check_fails(h.name, words)
            }
            Expect::Rejected { .. } => unreachable!(),
        },
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
    let r = host(&[&args[..], &[out.as_os_str()]].concat(), RUN_TIMEOUT);
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
        let r = host(&[os("check"), path.as_os_str()], RUN_TIMEOUT);
        assert!(r.success(), "host check {name}: {}", r.describe());
        assert_eq!(r.stdout.lines().last(), Some("PASS"), "host check {name}: {}", r.describe());
        assert!(fail_line(&r.stdout).is_none(), "host check {name}: {}", r.describe());
    }
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
    let r = host(&args.concat(), RUN_TIMEOUT);
    assert!(r.success(), "baseline replay: {}", r.describe());
    let baseline = std::fs::read_to_string(&base_out).expect("baseline output");

    let run_time: Vec<&Hostile> =
        HOSTILE.iter().filter(|h| !matches!(h.expect, Expect::Rejected { .. })).collect();
    let paths: Vec<_> = run_time.iter().map(|h| test_analyzer(h.name)).collect();
    let out = dir.join("hostile.prom");
    let mut args = vec![os("replay"), fifo.as_os_str()];
    args.extend(common);
    args.extend([os("--output"), out.as_os_str()]);
    for p in &paths {
        args.extend([os("--analyzer"), p.as_os_str()]);
    }
    let args: Vec<std::ffi::OsString> = args.into_iter().map(OsStr::to_owned).collect();
    let replay = thread::spawn(move || {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        host(&args, RUN_TIMEOUT + PACE)
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
    r.assert_no_host_panic("paced replay with the hostile analyzers");
    assert!(r.success(), "replay with the hostile analyzers: {}", r.describe());
    assert!(r.elapsed >= PACE, "the replay did not wait for the paced capture ({:?})", r.elapsed);
    let text = std::fs::read_to_string(&out).expect("hostile replay output");
    let samples = parse_exposition(&text);

    // The default analyzers: unharmed, exact, and right.
    let families = default_families(&baseline);
    let diffs = family_differences(&text, &baseline, &families);
    assert!(
        diffs.is_empty(),
        "the default analyzers' metrics changed beside the hostile analyzers:\n{}",
        diffs.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    let expected = Totals {
        frames: synthetic.frames,
        resets: synthetic.resets,
        dont_fragment: synthetic.dont_fragment,
        wscale_options: synthetic.wscale_options,
    };
    assert_eq!(tshark.join().expect("tshark thread"), expected, "tshark vs the generator");
    assert_eq!(Totals::from_exposition(&samples), expected, "default analyzers vs tshark");
    eprintln!("paced replay: {expected:?} in {:.1?}", r.elapsed);
    for name in ["traffic", "header-flags"] {
        let state =
            value(&samples, "wasmtap_analyzer_state", &[("analyzer", name), ("state", "running")]);
        assert_eq!(state, Some(1.0), "{name} is not running");
        assert_eq!(value(&samples, "wasmtap_analyzer_failures_total", &[("analyzer", name)]), None);
    }

    for h in run_time {
        let a = ("analyzer", h.name);
        let state = |s: &str| value(&samples, "wasmtap_analyzer_state", &[a, ("state", s)]);
        let failures = |reason: Option<&str>| {
            let mut labels = vec![a];
            labels.extend(reason.map(|r| ("reason", r)));
            value(&samples, "wasmtap_analyzer_failures_total", &labels)
        };
        match h.expect {
            Expect::Quarantined { reason, trap, words } => {
                let all = QUARANTINE_FAILURES * WORKERS;
                assert_eq!(state("quarantined"), Some(1.0), "{} not quarantined:\n{text}", h.name);
                assert_eq!(failures(Some(reason)), Some(all as f64), "{} failures", h.name);
                assert_eq!(failures(None), Some(all as f64), "{}: other failure reasons", h.name);
                let traps = value(&samples, "wasmtap_analyzer_traps_total", &[a]).unwrap_or(0.0);
                assert_eq!(traps, if trap { all as f64 } else { 0.0 }, "{} traps", h.name);
                let restarts = value(&samples, "wasmtap_analyzer_restarts_total", &[a]);
                let expected = (QUARANTINE_FAILURES - 1) * WORKERS;
                assert_eq!(restarts, Some(expected as f64), "{} restarts", h.name);
                let skipped = value(&samples, "wasmtap_analyzer_skipped_packets_total", &[a]);
                assert!(skipped.is_some_and(|s| s > 0.0), "{}: no packets skipped", h.name);
                let warned = r.stderr.lines().filter(|l| l.contains(h.name));
                let quarantined = warned.filter(|l| l.contains("quarantined")).collect::<Vec<_>>();
                assert_eq!(quarantined.len() as u64, WORKERS, "{}: quarantine log lines", h.name);
                for line in quarantined {
                    let missing = missing_words(line, words);
                    assert!(missing.is_empty(), "{}: {missing:?} missing from {line:?}", h.name);
                }
            }
            Expect::Capped { family, .. } => {
                assert_eq!(state("running"), Some(1.0), "{} not running:\n{text}", h.name);
                assert_eq!(failures(None), None, "{} failed", h.name);
                let f = ("family", family);
                let series = value(&samples, "wasmtap_host_series", &[f]);
                assert_eq!(series, Some(SERIES_CAP as f64), "{family}: series");
                let live = samples.iter().filter(|s| s.name == family).count() as u64;
                assert_eq!(live, SERIES_CAP, "{family}: series in the exposition");
                let refused = value(&samples, "wasmtap_host_series_refused_total", &[f]);
                let expected = WORKERS * CARDINALITY_VALUES - SERIES_CAP;
                assert_eq!(refused, Some(expected as f64), "{family}: refused series");
            }
            Expect::Rejected { .. } => unreachable!(),
        }
    }
    // What the failing analyzers managed before each failure, exactly.
    let count = |name: &str| value(&samples, name, &[]);
    let instances = QUARANTINE_FAILURES * WORKERS;
    let good = (PANIC_ON_CALL - 1) * instances;
    assert_eq!(count("wasmtap_test_panic_good_batches_total"), Some(good as f64));
    let survived = MEMORY_BOMB_GOOD_CALLS * instances;
    assert_eq!(count("wasmtap_test_memory_bomb_batches_total"), Some(survived as f64));
    for never in [
        "wasmtap_test_huge_updates_total",
        "wasmtap_test_infinite_loop_packets_total",
        "wasmtap_test_stack_overflow_packets_total",
    ] {
        assert_eq!(count(never), None, "{never} has series");
    }
    assert!(r.stderr.contains("panicking on batch 3"), "no guest panic message in the log");
}

/// Drops `h` into the watched `dir` and waits for its documented outcome.
fn live_outcome(host: &LiveHost, dir: &Path, h: &Hostile) -> Result<(), String> {
    // Written under a hidden name, then renamed: the watcher sees a whole file at once.
    let file = dir.join(format!("{}.wasm", h.name));
    let hidden = dir.join(format!(".{}.wasm.part", h.name));
    std::fs::copy(test_analyzer(h.name), &hidden).expect("copying the analyzer");
    std::fs::rename(&hidden, &file).expect("renaming the analyzer into place");
    let source = file.display().to_string();
    match h.expect {
        Expect::Rejected { words } => {
            let logged = wait_for(Duration::from_secs(10), || {
                let log = host.log();
                let line = log.lines().find(|l| l.contains("not loaded") && l.contains(&source));
                line.map(str::to_owned)
            });
            let Some(line) = logged else {
                return Err(format!("no `not loaded` log line:\n{}", host.log_tail()));
            };
            let missing = missing_words(&line, words);
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
            let missing = missing_words(error, words);
            if !missing.is_empty() {
                return Err(format!("{missing:?} missing from the last error {error:?}"));
            }
            // /metrics may serve a render up to a second old (scrapes share one render).
            let labels = [("analyzer", h.name), ("state", "quarantined")];
            let state = || value(&host.metrics(), "wasmtap_analyzer_state", &labels);
            match wait_for(Duration::from_secs(5), || state().filter(|v| *v == 1.0)) {
                Some(_) => Ok(()),
                None => Err(format!("wasmtap_analyzer_state{{state=quarantined}} = {:?}", state())),
            }
        }
        Expect::Capped { family, .. } => {
            let f = [("family", family)];
            let capped = wait_for(Duration::from_secs(30), || {
                let m = host.metrics();
                let series = value(&m, "wasmtap_host_series", &f)?;
                let refused = value(&m, "wasmtap_host_series_refused_total", &f)?;
                (refused > 0.0).then_some(series)
            });
            if capped != Some(SERIES_CAP as f64) {
                return Err(format!("{family}: {capped:?} series once some were refused"));
            }
            match host.analyzer(h.name) {
                Some(entry) if entry["state"] == "running" => Ok(()),
                other => Err(format!("not running: {other:?}")),
            }
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
    let mut host = LiveHost::start(&dir, tmp.join("host.log"));
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
            None | Some(Expect::Capped { .. }) => "running",
            Some(Expect::Quarantined { .. }) => "quarantined",
            Some(Expect::Rejected { .. }) => "absent",
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

    let (failures, checks, requests) = watchdog.finish();
    assert!(host.alive(), "the host died:\n{}", host.log_tail());
    if !failures.is_empty() {
        let n = failures.len();
        problems.push(format!("/metrics or /healthz failed {n} of {checks} times:"));
        problems.extend(failures);
    }
    if requests <= 100 {
        problems.push(format!("only {requests} traffic requests succeeded"));
    }
    // After the traffic stopped, so `lo` is idle: the capture thread must still notice.
    let stopped = host.stop(Duration::from_secs(15));
    if stopped != Some(true) {
        let tail = host.log_tail();
        problems
            .push(format!("SIGTERM: exit {stopped:?} within 15 s (None: still running):\n{tail}"));
    }
    eprintln!("live: {checks} endpoint checks, {requests} requests, {:.1?}", started.elapsed());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
