//! What a replay's output and log must show for each hostile analyzer that loads, and what a
//! `wasmtap check` report must say: the documented outcomes of `cases.rs`, as checks.
//!
//! Input: a replay's exposition (text and parsed samples) and its log, or a `wasmtap check` run.
//! Output: the problems found, as sentences (empty when every outcome holds), so that a test
//! reports them all at once.

use super::cases::*;
use super::support::{family_bytes, missing_words_or, overlong_lines};
use crate::common::{RunResult, Sample, value_of};

/// How long a replay ran compared with the failure policy's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Span {
    /// Long enough for every instance to fail [`QUARANTINE_FAILURES`] times (the backoffs
    /// take 1.5 s): exact counts.
    Paced,
    /// Maybe shorter: a quarantined analyzer must have failed, only ever for its reason.
    Quick,
}

/// The problems with the outcome of `h` (an analyzer that loads) in a replay with `workers`
/// workers: `text` and `samples` its output, `log` its stderr.
pub fn replay_problems(
    h: &Hostile,
    text: &str,
    samples: &[Sample],
    log: &str,
    workers: u64,
    span: Span,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(format!("{}: {what}", h.name));
        }
    };
    let a = ("analyzer", h.name);
    let state = |s: &str| value_of(samples, "wasmtap_analyzer_state", &[a, ("state", s)]);
    let failures = |reason: Option<&str>| {
        let mut labels = vec![a];
        labels.extend(reason.map(|r| ("reason", r)));
        value_of(samples, "wasmtap_analyzer_failures_total", &labels)
    };
    let count = |name: &str| value_of(samples, name, &[]);
    let series = |family: &str| value_of(samples, "wasmtap_host_series", &[("family", family)]);
    let refused = |family: &str| {
        value_of(samples, "wasmtap_host_series_refused_total", &[("family", family)])
    };
    let running_unharmed = |check: &mut dyn FnMut(bool, String)| {
        check(state("running") == Some(1.0), format!("not running: {:?}", state("running")));
        // Every reason is exported at 0 from the start: present, and 0.
        check(failures(None) == Some(0.0), format!("failed: {:?}", failures(None)));
    };
    match h.expect {
        Expect::Quarantined { reason, trap, or_budget, words } => {
            let all = failures(None).unwrap_or(0.0);
            // Marked `or_budget`: some failures may be at the CPU budget, each a trap too.
            let own = failures(Some(reason));
            let budget = if or_budget { failures(Some(TIMEOUT)) } else { None };
            let only_these = match budget {
                None => own == Some(all),
                Some(budget) => own.unwrap_or(0.0) + budget == all,
            };
            let or = if or_budget { format!(" or {TIMEOUT}") } else { String::new() };
            check(only_these, format!("failures other than {reason}{or}"));
            let traps = value_of(samples, "wasmtap_analyzer_traps_total", &[a]).unwrap_or(0.0);
            let expected = if trap { all } else { budget.unwrap_or(0.0) };
            check(traps == expected, format!("{traps} traps, {all} failures"));
            let skipped = value_of(samples, "wasmtap_analyzer_skipped_packets_total", &[a]);
            check(skipped.is_some_and(|s| s > 0.0), "no packets skipped".into());
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(&format!("analyzer={} ", h.name)))
                .filter(|l| l.contains("restarting in") || l.contains("quarantined after"))
                .collect();
            for line in &lines {
                let missing = missing_words_or(line, words, h.expect.budget_message());
                check(missing.is_empty(), format!("{missing:?} missing from {line:?}"));
            }
            if span == Span::Paced {
                let expected = (QUARANTINE_FAILURES * workers) as f64;
                check(state("quarantined") == Some(1.0), "not quarantined".into());
                check(all == expected, format!("{all} failures, expected {expected}"));
                let restarts = value_of(samples, "wasmtap_analyzer_restarts_total", &[a]);
                let expected = ((QUARANTINE_FAILURES - 1) * workers) as f64;
                check(restarts == Some(expected), format!("{restarts:?} restarts"));
                let quarantined = lines.iter().filter(|l| l.contains("quarantined")).count();
                check(quarantined as u64 == workers, format!("{quarantined} quarantine lines"));
            } else {
                check(all > 0.0, "never failed".into());
            }
        }
        Expect::Capped { family, .. } => {
            running_unharmed(&mut check);
            check(
                series(family) == Some(SERIES_CAP as f64),
                format!("{:?} series", series(family)),
            );
            let live = samples.iter().filter(|s| s.name == family).count() as u64;
            check(live == SERIES_CAP, format!("{live} series in the exposition"));
            let expected = (workers * CARDINALITY_VALUES - SERIES_CAP) as f64;
            check(refused(family) == Some(expected), format!("refused {:?}", refused(family)));
        }
        Expect::Budgeted { family, .. } => {
            running_unharmed(&mut check);
            let kept = series(family).unwrap_or(0.0);
            let sent = count(EXPOSITION_BOMB_SENT).unwrap_or(0.0);
            let expected = (workers * EXPOSITION_BOMB_PER_INSTANCE) as f64;
            check(sent == expected, format!("sent {sent} series, expected {expected}"));
            check(kept >= 1.0 && kept < SERIES_CAP as f64, format!("{kept} series kept"));
            let refused = refused(family);
            check(refused == Some(sent - kept), format!("refused {refused:?}, sent {sent}"));
            // Stopped by the budget, not before it: the family's exposition is within it, and
            // one more series (at most twice the average size) would not have fitted.
            let bytes = family_bytes(text, family);
            let per_series = bytes / (kept.max(1.0) as usize);
            let fits = bytes <= EXPOSITION_BUDGET + EXPOSITION_BUDGET / 20;
            let full = bytes + 2 * per_series > EXPOSITION_BUDGET;
            check(fits && full, format!("{bytes} bytes of exposition in {kept} series"));
            let warned =
                log.lines().any(|l| l.contains("exposition budget reached") && l.contains(family));
            check(warned, "no warning that the exposition budget was reached".into());
        }
        Expect::Overflowed { family, .. } => {
            running_unharmed(&mut check);
            let max = OVERFLOW_MAX_COUNT as f64;
            let name = format!("{family}_count");
            check(count(&name) == Some(max), format!("{name} = {:?}", count(&name)));
            for le in ["1", "+Inf"] {
                let bucket = value_of(samples, &format!("{family}_bucket"), &[("le", le)]);
                check(bucket == Some(max), format!("bucket le={le}: {bucket:?}"));
            }
            let sent = count(OVERFLOW_SENT).unwrap_or(0.0);
            check(sent >= OVERFLOW_PER_INSTANCE as f64, format!("only {sent} updates sent"));
            let expected = sent - OVERFLOW_KEPT as f64;
            check(refused(family) == Some(expected), format!("refused {:?}", refused(family)));
            check(series(family) == Some(1.0), format!("{:?} series", series(family)));
        }
        Expect::Logs { cut, shows } => {
            running_unharmed(&mut check);
            let ours: Vec<&str> =
                log.lines().filter(|l| l.contains(&format!("analyzer=\"{}\"", h.name))).collect();
            check(!ours.is_empty(), "nothing in the host's log".into());
            for word in shows {
                check(ours.iter().any(|l| l.contains(word)), format!("no line shows {word:?}"));
            }
            let cut_lines = value_of(samples, "wasmtap_analyzer_log_lines_cut_total", &[a]);
            let dropped = value_of(samples, "wasmtap_analyzer_log_lines_dropped_total", &[a]);
            if cut {
                let (c, d) = (cut_lines.unwrap_or(0.0), dropped.unwrap_or(0.0));
                let lines = LOG_FLOOD_LINES_PER_CALL as f64 * count(LOG_FLOOD_CALLS).unwrap_or(0.0);
                check(c > 0.0 && c + d == lines, format!("{c} cut + {d} dropped of {lines}"));
                check(c == ours.len() as f64, format!("{c} cut, {} lines logged", ours.len()));
            } else {
                check(cut_lines.unwrap_or(0.0) == 0.0, format!("{cut_lines:?} lines cut"));
            }
        }
        Expect::Rejected { .. } => unreachable!("{} never loads", h.name),
    }
    problems
}

/// For an analyzer marked `or_budget`, how many of its failures in a replay were at the CPU
/// budget: which outcome the run saw, for the test to print.
pub fn budget_note(h: &Hostile, samples: &[Sample]) -> Option<String> {
    let Expect::Quarantined { or_budget: true, .. } = h.expect else { return None };
    let failures = |labels: &[(&str, &str)]| {
        value_of(samples, "wasmtap_analyzer_failures_total", labels).unwrap_or(0.0)
    };
    let all = failures(&[("analyzer", h.name)]);
    let budget = failures(&[("analyzer", h.name), ("reason", TIMEOUT)]);
    Some(format!("{}: {budget} of its {all} failures at the CPU budget", h.name))
}

/// The problems of a whole replay (or check) log: overlong or forged lines.
pub fn log_problems(what: &str, log: &str) -> Vec<String> {
    let mut problems: Vec<String> = overlong_lines(log)
        .into_iter()
        .map(|l| format!("{what}: overlong log line: {l}"))
        .collect();
    problems.extend(forged_lines(log).into_iter().map(|l| format!("{what}: forged line: {l}")));
    problems
}

/// The line of `wasmtap check`'s report that says what failed.
pub fn fail_line(out: &str) -> Option<&str> {
    out.lines().find(|l| l.starts_with("FAIL"))
}

/// The problems with a `wasmtap check` run of `h` that must fail with `words` on its `FAIL` line
/// (or, for an analyzer whose outcome is [`Expect::Logs`], pass).
pub fn check_problems(h: &Hostile, r: &RunResult) -> Vec<String> {
    let mut problems = log_problems(&format!("wasmtap check {}", h.name), &r.stderr);
    let words = match h.expect {
        Expect::Rejected { check, .. } => check,
        Expect::Quarantined { words, .. }
        | Expect::Capped { words, .. }
        | Expect::Budgeted { words, .. }
        | Expect::Overflowed { words, .. } => words,
        Expect::Logs { shows, .. } => {
            if !r.success() || r.stdout.lines().last() != Some("PASS") {
                problems.push(format!("wasmtap check {} did not pass: {}", h.name, r.describe()));
            }
            for word in shows {
                if !r.stderr.contains(word) {
                    problems.push(format!("wasmtap check {}: its log lacks {word:?}", h.name));
                }
            }
            return problems;
        }
    };
    let Some(line) = fail_line(&r.stdout).filter(|_| r.status.is_some_and(|s| !s.success())) else {
        problems.push(format!("wasmtap check {} did not fail: {}", h.name, r.describe()));
        return problems;
    };
    let missing = missing_words_or(line, words, h.expect.budget_message());
    if !missing.is_empty() {
        problems.push(format!("wasmtap check {}: {missing:?} missing from {line:?}", h.name));
    }
    if h.name == "panic-nth-batch" && !r.stderr.contains("panicking on batch 3") {
        let d = r.describe();
        problems
            .push(format!("wasmtap check {}: the panic message is not in the log: {d}", h.name));
    }
    problems
}
