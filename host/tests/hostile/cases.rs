//! The hostile analyzers and what the host must do with each (the table in `hostile.rs`).
//!
//! Input: nothing. Output: [`HOSTILE`], each analyzer's documented outcome ([`Expect`]), the
//! numbers their crates are built with (which the outcomes follow from), and [`path`], where
//! each analyzer's file is.

use std::path::PathBuf;

use super::generated;
use crate::common::test_analyzer;

/// What the host must do with a test analyzer.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Refused at load. Its `--analyzer` start-up error and its `--analyzer-dir` log line
    /// contain `words`; `wasmtap check`'s `FAIL` line contains `check`. `or_budget`: as for
    /// [`Expect::Quarantined`], `init` may spend its CPU budget first; then every one of those
    /// messages says [`INIT_OVER_BUDGET`] instead.
    Rejected { words: &'static [&'static str], check: &'static [&'static str], or_budget: bool },
    /// Loads, then every instance fails with `reason` (the error's text containing `words`);
    /// quarantined after [`QUARANTINE_FAILURES`] failures.
    ///
    /// `or_budget`: the analyzer reaches its limit by heavy work — it builds megabytes, or
    /// 10^5 items, and the host lifts them out of its memory and the guest frees them, all
    /// charged to the call's CPU budget: 30 to 60 ms of the 200 ms on the 2-core test machine
    /// (the smallest `--call-budget-ms` at which it still meets its own limit), and up to
    /// 140 ms with compilers running beside it. On a loaded machine the thread's CPU time can
    /// reach the budget first (on a virtual machine, time the hypervisor takes from a busy
    /// vCPU may be charged to the thread that was running). That is containment too, so each
    /// failure may be either: `reason` with `words`, or `timeout` (also a trap) with
    /// [`OVER_BUDGET`]. Everything else about the outcome holds whichever it is. An analyzer
    /// whose work takes 15 ms or less is not marked: only its own limit may stop it.
    Quarantined {
        reason: &'static str,
        trap: bool,
        or_budget: bool,
        words: &'static [&'static str],
    },
    /// Loads and runs; `family` stops at the series cap. `wasmtap check` fails with `words`.
    Capped { family: &'static str, words: &'static [&'static str] },
    /// Loads and runs; `family` stops at the exposition budget of one analyzer
    /// ([`EXPOSITION_BUDGET`]), far below the series cap, and every further new series is
    /// refused and counted. `wasmtap check` fails with `words`.
    Budgeted { family: &'static str, words: &'static [&'static str] },
    /// Loads and runs; the one series of histogram `family` stops at the largest total below
    /// u64's range ([`OVERFLOW_MAX_COUNT`]) and every update that would overflow it is refused
    /// and counted, never wrapped or exported as `+Inf`. `wasmtap check` passes on the sample,
    /// too short to get there, and fails with `words` on a capture long enough.
    Overflowed { family: &'static str, words: &'static [&'static str] },
    /// Loads and keeps running with no failure. Each line it logs is one line of the host's
    /// log, at most [`GUEST_TEXT`] bytes of its text, control characters escaped: the lines
    /// contain `shows`. `cut`: its lines are longer than that, so every one logged is cut and
    /// counted in `wasmtap_analyzer_log_lines_cut_total`. `wasmtap check` passes.
    Logs { cut: bool, shows: &'static [&'static str] },
}

/// A hostile test analyzer: its file name, the issue that added it, and its documented outcome.
#[derive(Debug, Clone, Copy)]
pub struct Hostile {
    pub name: &'static str,
    /// 4: the first suite (loops, memory, traps, counts); 9: sizes of everything an analyzer
    /// hands the host.
    pub issue: u32,
    pub expect: Expect,
}

impl Expect {
    /// The message an analyzer marked `or_budget` shows instead of its own words when the CPU
    /// budget stops it first: [`OVER_BUDGET`] for a call, [`INIT_OVER_BUDGET`] at load.
    pub fn budget_message(&self) -> Option<&'static str> {
        match *self {
            Expect::Quarantined { or_budget: true, .. } => Some(OVER_BUDGET),
            Expect::Rejected { or_budget: true, .. } => Some(INIT_OVER_BUDGET),
            _ => None,
        }
    }
}

/// The failure reason of a call stopped at the CPU budget.
pub const TIMEOUT: &str = "timeout";
/// What the host says of a call stopped at the CPU budget (its default, 200 ms).
pub const OVER_BUDGET: &str = "exceeded its CPU budget of 200ms per call";
/// What it says of an `init` stopped there, refusing the analyzer at load.
pub const INIT_OVER_BUDGET: &str = "init failed: exceeded its CPU budget of 200ms per call";

const fn rejected(words: &'static [&'static str]) -> Expect {
    Expect::Rejected { words, check: words, or_budget: false }
}

/// Refused at load with `words`, or, its `init` being heavy work, at the CPU budget.
const fn rejected_or_budget(words: &'static [&'static str]) -> Expect {
    Expect::Rejected { words, check: words, or_budget: true }
}

/// Every hostile test analyzer, as in the table of `hostile.rs`. The live test drops them
/// into the watched directory in this order; `slow-compile`, which leaves a compile running
/// after it is refused, comes last.
pub const HOSTILE: &[Hostile] = &[
    Hostile {
        name: "infinite-loop",
        issue: 4,
        expect: Expect::Quarantined {
            reason: TIMEOUT,
            trap: true,
            or_budget: false,
            words: &[OVER_BUDGET],
        },
    },
    Hostile {
        name: "memory-bomb",
        issue: 4,
        expect: Expect::Quarantined {
            reason: "memory",
            trap: false,
            or_budget: false,
            words: &["tried to grow its memory past the cap of 64 MiB"],
        },
    },
    Hostile {
        name: "stack-overflow",
        issue: 4,
        expect: Expect::Quarantined {
            reason: "trap",
            trap: true,
            or_budget: false,
            words: &["trapped", "call stack exhausted"],
        },
    },
    Hostile {
        name: "panic-nth-batch",
        issue: 4,
        expect: Expect::Quarantined {
            reason: "trap",
            trap: true,
            or_budget: false,
            words: &["trapped", "unreachable"],
        },
    },
    Hostile {
        name: "huge-update-list",
        issue: 4,
        expect: Expect::Quarantined {
            reason: "too_many_updates",
            trap: false,
            or_budget: false,
            words: &["returned 70000 updates, over the limit of 65536"],
        },
    },
    Hostile {
        name: "cardinality-bomb",
        issue: 4,
        expect: Expect::Capped {
            family: CARDINALITY_FAMILY,
            words: &[CARDINALITY_FAMILY, "series"],
        },
    },
    Hostile {
        name: "invalid-metric-name",
        issue: 4,
        expect: rejected(&["Bad-Name", "not a valid Prometheus name"]),
    },
    Hostile {
        name: "metric-collision",
        issue: 4,
        expect: rejected(&["wasmtap_packets_total", "already exported", "traffic"]),
    },
    Hostile {
        name: "wrong-wit-version",
        issue: 4,
        expect: rejected(&[
            "built for wasmtap:analyzer@0.1.0",
            "wasmtap:analyzer@0.2.0",
            "rebuild the analyzer with the wasmtap SDK of this host",
        ]),
    },
    Hostile { name: "core-module", issue: 4, expect: rejected(&["core WebAssembly module"]) },
    Hostile { name: "random-bytes", issue: 4, expect: rejected(&["not a WebAssembly file"]) },
    Hostile {
        name: "wasi-filesystem",
        issue: 4,
        expect: rejected(&["imports", "wasi:filesystem"]),
    },
    // Issue 9: sizes. Refused per call.
    Hostile {
        name: "huge-label-value",
        issue: 9,
        expect: Expect::Quarantined {
            reason: "too_large",
            trap: false,
            or_budget: false,
            words: &["returned a label value of 4194304 bytes, over the limit of 1024"],
        },
    },
    Hostile {
        name: "long-label-value",
        issue: 9,
        expect: Expect::Quarantined {
            reason: "too_large",
            trap: false,
            or_budget: false,
            words: &["returned a label value of 1025 bytes, over the limit of 1024"],
        },
    },
    Hostile {
        name: "huge-call-bytes",
        issue: 9,
        expect: Expect::Quarantined {
            reason: "too_large",
            trap: false,
            // 124,000 label values built a character at a time and packed: tens of ms of the
            // budget, more with compilers beside it.
            or_budget: true,
            // 31,000 updates of 546 packed bytes (6 + 4 × (5 + 128) + 8) and the 8-byte header.
            words: &["returned 16926008 bytes of updates in one call, over the limit of 16777216"],
        },
    },
    Hostile {
        name: "huge-error",
        issue: 9,
        expect: Expect::Quarantined {
            reason: "error",
            trap: false,
            // 32 MiB of fresh guest memory filled, then lifted into 32 MiB of fresh host
            // memory: 35–40 ms of the budget, and page faults grow costly under load.
            or_budget: true,
            // Cut to 1024 bytes (and marked), the newline escaped.
            words: &[
                r"returned an error: huge-error: the first line\nERROR host: a forged line eeee",
                "eee…",
            ],
        },
    },
    Hostile {
        name: "garbled-updates",
        issue: 9,
        expect: Expect::Quarantined {
            reason: "bad_update",
            trap: false,
            or_budget: false,
            words: &["returned updates that do not parse: label tag 9 at byte 31"],
        },
    },
    Hostile {
        name: "histogram-count-mismatch",
        issue: 9,
        expect: Expect::Quarantined {
            reason: "bad_update",
            trap: false,
            or_budget: false,
            words: &[
                "sent an invalid update: update to wasmtap_test_histogram_count_mismatch_bytes: \
                 histogram count 3 is not the sum of its buckets (2)",
            ],
        },
    },
    Hostile {
        name: "counter-infinity",
        issue: 9,
        expect: Expect::Quarantined {
            reason: "bad_update",
            trap: false,
            or_budget: false,
            words: &[
                "sent an invalid update: update to wasmtap_test_counter_infinity_total adds 1000",
                "which is negative, not finite or over 2^53",
            ],
        },
    },
    Hostile {
        name: "histogram-sum-infinity",
        issue: 9,
        expect: Expect::Quarantined {
            reason: "bad_update",
            trap: false,
            or_budget: false,
            words: &[
                "update to wasmtap_test_histogram_sum_infinity: histogram sum inf is not finite \
                 or beyond ±1e20",
            ],
        },
    },
    Hostile {
        name: "histogram-huge-count",
        issue: 9,
        expect: Expect::Quarantined {
            reason: "bad_update",
            trap: false,
            or_budget: false,
            words: &["update to wasmtap_test_histogram_huge_count would overflow its series"],
        },
    },
    // Issue 9: valid updates that add up to too much.
    Hostile {
        name: "exposition-bomb",
        issue: 9,
        expect: Expect::Budgeted {
            family: EXPOSITION_BOMB_FAMILY,
            words: &[EXPOSITION_BOMB_FAMILY, "refused"],
        },
    },
    Hostile {
        name: "histogram-overflow",
        issue: 9,
        expect: Expect::Overflowed {
            family: OVERFLOW_FAMILY,
            words: &[OVERFLOW_FAMILY, "refused"],
        },
    },
    // Issue 9: log lines.
    Hostile {
        name: "log-flood",
        issue: 9,
        expect: Expect::Logs { cut: true, shows: &["log-flood: call 0000000001 line 1 llll"] },
    },
    Hostile {
        name: "log-newline",
        issue: 9,
        expect: Expect::Logs {
            cut: false,
            shows: &[concat!(
                r"log-newline: an honest first line\n",
                "2024-01-01T00:00:00.000000Z ERROR host::app: forged by log-newline",
                r"\u{1b}[2K",
            )],
        },
    },
    // Issue 9: refused at load.
    Hostile {
        name: "name-traffic",
        issue: 9,
        expect: Expect::Rejected {
            // `--analyzer`: `its name "traffic" …`; `--analyzer-dir`: `its analyzer name …`.
            words: &[r#"name "traffic" is already taken by builtin:traffic"#],
            check: &[r#"analyzer name: "traffic" is the name of a built-in analyzer"#],
            or_budget: false,
        },
    },
    Hostile {
        name: "name-newline",
        issue: 9,
        expect: rejected(&[
            r#"analyzer name "name-newline\nERROR host: forged" does not match [a-z][a-z0-9_-]* of at most 64 bytes"#,
        ]),
    },
    Hostile {
        name: "version-newline",
        issue: 9,
        expect: rejected(&[
            r#"version "0.1.0\nERROR host: forged" is over 64 bytes or has characters other than printable ASCII"#,
        ]),
    },
    Hostile {
        name: "family-name-16mib",
        issue: 9,
        // A 16 MiB name built a character at a time, then lifted: 30–40 ms of the budget.
        expect: rejected_or_budget(&[
            // The first 40 characters of the name, then its length.
            r#"declares an invalid metric family: the name of family "test_family_name_xxxxxxxxxxxxxxxxxxxxxxx"… is 16777216, over the limit of 128"#,
        ]),
    },
    Hostile {
        name: "many-families",
        issue: 9,
        // 200,000 families formatted, lifted (the host can count them only once wasmtime has
        // lifted them all) and freed: 50–60 ms of the budget (140 ms with compilers beside it).
        expect: rejected_or_budget(&["the number of families is 200000, over the limit of 256"]),
    },
    Hostile {
        name: "too-many-labels",
        issue: 9,
        expect: rejected(&[
            r#"the labels of "test_too_many_labels_total" is 17, over the limit of 16"#,
        ]),
    },
    Hostile {
        name: "too-many-buckets",
        issue: 9,
        expect: rejected(&[
            r#"the buckets of "test_too_many_buckets" is 65, over the limit of 64"#,
        ]),
    },
    Hostile {
        name: "long-help",
        issue: 9,
        expect: rejected(&[
            r#"the help of "test_long_help_total" is 1025, over the limit of 1024"#,
        ]),
    },
    Hostile {
        name: "long-label-name",
        issue: 9,
        expect: rejected(&[
            r#"a label name of "test_long_label_name_total" is 65, over the limit of 64"#,
        ]),
    },
    Hostile {
        name: "oversized-component",
        issue: 9,
        expect: rejected(&["is larger than 16777216 bytes, the limit for a component"]),
    },
    Hostile { name: "slow-compile", issue: 9, expect: rejected(&["took over 5s to compile"]) },
];

/// The file of hostile analyzer `name`: built by the test analyzers' crate, or made by
/// [`generated`].
pub fn path(name: &str) -> PathBuf {
    if generated::NAMES.contains(&name) { generated::path(name) } else { test_analyzer(name) }
}

/// Failures within the window that quarantine an instance (the host's failure policy).
pub const QUARANTINE_FAILURES: u64 = 5;
/// The host's default `--series-cap`.
pub const SERIES_CAP: u64 = 10_000;
/// Bytes of guest text (a log line, an error) the host keeps.
pub const GUEST_TEXT: usize = 1024;

/// The cardinality bomb's family.
pub const CARDINALITY_FAMILY: &str = "wasmtap_test_cardinality_bomb_total";
/// Distinct label values every cardinality-bomb instance emits (its crate's `VALUES`).
pub const CARDINALITY_VALUES: u64 = 1_000_000;
/// The call on which `panic-nth-batch` panics (its crate's `PANIC_ON_CALL`).
pub const PANIC_ON_CALL: u64 = 3;
/// Calls a `memory-bomb` instance survives under the 64 MiB default cap (16 MiB each).
pub const MEMORY_BOMB_GOOD_CALLS: u64 = 3;

/// The exposition bomb's histogram: a name of 128 bytes, the most the host takes.
pub const EXPOSITION_BOMB_FAMILY: &str = "wasmtap_test_exposition_bomb_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
/// The exposition bomb's counter of the histogram series it sent.
pub const EXPOSITION_BOMB_SENT: &str = "wasmtap_test_exposition_bomb_series_total";
/// Histogram series each exposition-bomb instance sends (its crate's `PER_INSTANCE`).
pub const EXPOSITION_BOMB_PER_INSTANCE: u64 = 128;
/// The estimated exposition bytes one analyzer's series may take (README: 32 MiB).
pub const EXPOSITION_BUDGET: usize = 32 << 20;

/// The overflowing histogram, and the counter of the updates sent to it.
pub const OVERFLOW_FAMILY: &str = "wasmtap_test_histogram_overflow";
pub const OVERFLOW_SENT: &str = "wasmtap_test_histogram_overflow_updates_total";
/// Observations per update (its crate's `COUNT`, the host's per-update limit 2^40), and the
/// updates one instance sends at least (its crate's `PER_INSTANCE`, 2^24: one instance alone
/// would take the count to 2^64).
pub const OVERFLOW_COUNT: u64 = 1 << 40;
pub const OVERFLOW_PER_INSTANCE: u64 = 1 << 24;
/// Updates a series can take before its count would pass u64: all identical, so the total
/// stops at exactly `(2^24 − 1) × 2^40`, the largest multiple of 2^40 below 2^64.
pub const OVERFLOW_KEPT: u64 = OVERFLOW_PER_INSTANCE - 1;
pub const OVERFLOW_MAX_COUNT: u64 = OVERFLOW_KEPT * OVERFLOW_COUNT;

/// `log-flood`'s counter of its calls, and its lines per call.
pub const LOG_FLOOD_CALLS: &str = "wasmtap_test_log_flood_calls_total";
pub const LOG_FLOOD_LINES_PER_CALL: u64 = 2;

/// Families the quarantined analyzers never manage to update: every call of theirs fails
/// before any update applies, so a label-less counter among them stays at the 0 it is exported
/// with from the start, and no other series appears.
pub const NEVER_UPDATED: &[&str] = &[
    "wasmtap_test_huge_updates_total",
    "wasmtap_test_infinite_loop_packets_total",
    "wasmtap_test_stack_overflow_packets_total",
    "wasmtap_test_huge_label_value_total",
    "wasmtap_test_long_label_value_total",
    "wasmtap_test_huge_call_bytes_total",
    "wasmtap_test_huge_error_calls_total",
    "wasmtap_test_histogram_count_mismatch_bytes",
    "wasmtap_test_counter_infinity_total",
    "wasmtap_test_histogram_sum_infinity",
    "wasmtap_test_histogram_huge_count",
];

/// How forged text would start a line of the host's log: guest text laid out like the
/// host's lines (`log-newline`, `huge-error`, `name-newline`, `version-newline`). Every line
/// the host writes starts with the current time, never with these.
pub const FORGED_LINE_STARTS: &[&str] = &["2024-01-01T00:00:00.000000Z", "ERROR host:"];

/// The lines of `log` that guest text forged: a line starting like [`FORGED_LINE_STARTS`], or
/// any raw escape character (the host escapes guest text; its own output to a pipe has none).
pub fn forged_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| FORGED_LINE_STARTS.iter().any(|s| l.starts_with(s)) || l.contains('\x1b'))
        .map(|l| l.chars().take(200).collect())
        .collect()
}
