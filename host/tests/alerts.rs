//! The alerting rules, checked with Debian's promtool: `dashboard/wasmtap-alerts.yaml`, and the
//! optional `dashboard/wasmtap-alerts-rtt.yaml` (a pair's median ACK RTT rising, off by default
//! in the chart). For each file:
//! - `promtool check rules` accepts it;
//! - `promtool test rules` on its `.test.yaml` passes: every alert fires on crafted series and
//!   stays quiet on the normal ones beside them (promtool compares the whole list of alerts of a
//!   name at each evaluation time, so a quiet series that fired would fail);
//! - every alert of the file has a test, and the tests are not vacuous: copies of the rules with
//!   one safeguard removed each (the minimum-traffic guard, the reason filter, the `for` of the
//!   drops and of the pod source alerts; the RTT alert's two sample guards, its ratio, its
//!   offset and its `for`) make `promtool test rules` fail.
//!
//! The chart's PrometheusRule carries the same rules (`chart.rs` checks that).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A rules file of `dashboard/`, its unit tests, and how many rules it has.
struct RulesFile {
    rules: &'static str,
    tests: &'static str,
    count: usize,
}

const MAIN: RulesFile =
    RulesFile { rules: "wasmtap-alerts.yaml", tests: "wasmtap-alerts.test.yaml", count: 6 };
const RTT: RulesFile =
    RulesFile { rules: "wasmtap-alerts-rtt.yaml", tests: "wasmtap-alerts-rtt.test.yaml", count: 1 };
const FILES: [RulesFile; 2] = [MAIN, RTT];

fn dashboard_dir() -> PathBuf {
    repo_root().join("dashboard")
}

/// `promtool ARGS...` in `dir`, with a timeout.
fn promtool(dir: &Path, args: &[&str]) -> RunResult {
    require_tools(&["promtool"]);
    run_with_timeout(Command::new("promtool").current_dir(dir).args(args), Duration::from_secs(60))
}

#[test]
fn alert_rules_pass_promtool_check() {
    for f in FILES {
        let r = promtool(&dashboard_dir(), &["check", "rules", f.rules]);
        eprintln!("{}", r.stdout_text());
        assert!(r.success(), "promtool check rules {}: {}", f.rules, r.describe());
        let found = format!("SUCCESS: {} rules found", f.count);
        assert!(r.stdout_text().contains(&found), "{}: {}", f.rules, r.describe());
    }
}

#[test]
fn every_alert_fires_on_faults_and_stays_quiet_otherwise() {
    for f in FILES {
        let r = promtool(&dashboard_dir(), &["test", "rules", f.tests]);
        eprintln!("{}{}", r.stdout_text(), r.stderr_text());
        assert!(r.success(), "promtool test rules {}: {}", f.tests, r.describe());
        assert!(r.stdout_text().contains("SUCCESS"), "{}: {}", f.tests, r.describe());
    }
}

#[test]
fn every_alert_has_a_test_that_checks_firing_and_quiet() {
    for f in FILES {
        let rules = std::fs::read_to_string(dashboard_dir().join(f.rules)).expect("rules");
        let tests = std::fs::read_to_string(dashboard_dir().join(f.tests)).expect("tests");
        let alerts: Vec<&str> = rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- alert: "))
            .map(str::trim)
            .collect();
        assert_eq!(alerts.len(), f.count, "{}: {alerts:?}", f.rules);
        assert!(tests.contains(&format!("  - {}\n", f.rules)), "{} loads {}", f.tests, f.rules);
        for alert in alerts {
            let evals: Vec<&str> = tests
                .split("- eval_time:")
                .skip(1)
                .filter(|block| block.contains(&format!("alertname: {alert}\n")))
                .collect();
            assert!(
                evals.iter().any(|b| b.contains("exp_alerts: []")),
                "{alert}: no evaluation where it must stay quiet"
            );
            assert!(
                evals.iter().any(|b| b.contains("exp_labels:")),
                "{alert}: no evaluation where it must fire"
            );
        }
    }
}

/// Copies of `f`'s rules with one mutation each must still be valid rules, and must fail its
/// unit tests.
fn assert_mutants_fail(f: &RulesFile, mutations: &[(&str, &str, &str)]) {
    let rules = std::fs::read_to_string(dashboard_dir().join(f.rules)).expect("rules");
    let tests = std::fs::read_to_string(dashboard_dir().join(f.tests)).expect("tests");
    for (what, from, to) in mutations {
        assert!(rules.contains(from), "mutation {what:?}: {from:?} is not in {}", f.rules);
        let dir = TempDir::new("alert-mutant");
        std::fs::write(dir.join(f.rules), rules.replacen(from, to, 1)).expect("write rules");
        std::fs::write(dir.join(f.tests), &tests).expect("write tests");
        let check = promtool(dir.path(), &["check", "rules", f.rules]);
        assert!(check.success(), "{what}: the mutant must still be valid: {}", check.describe());
        let r = promtool(dir.path(), &["test", "rules", f.tests]);
        eprintln!("{what}: promtool test rules exit {:?}", r.code());
        assert!(!r.success(), "{what}: the unit tests still pass: {}", r.describe());
    }
}

/// Each mutation removes one safeguard from the rules; the unit tests must then fail.
#[test]
fn the_unit_tests_catch_rules_without_their_safeguards() {
    let mutations: [(&str, &str, &str); 6] = [
        (
            "no minimum-traffic guard on the retransmission ratio",
            "(rate(wasmtap_tcp_data_segments_total[5m])) >= 1",
            "(rate(wasmtap_tcp_data_segments_total[5m])) >= 0",
        ),
        ("a lower ratio threshold", ") > 0.05\n", ") > 0.005\n"),
        ("every drop reason alerts", "{reason=~\"kernel|queue_full\"}", ""),
        (
            "no `for` on the drops alert",
            "for: 10m\n        labels:\n          severity: warning\n        annotations:\n          summary: wasmtap drops",
            "for: 0m\n        labels:\n          severity: warning\n        annotations:\n          summary: wasmtap drops",
        ),
        (
            "backoff counts as quarantined",
            "{state=\"quarantined\"}",
            "{state=~\"quarantined|backoff\"}",
        ),
        (
            "no `for` on the pod source alert",
            "for: 10m\n        labels:\n          severity: warning\n        annotations:\n          summary: wasmtap cannot read",
            "for: 0m\n        labels:\n          severity: warning\n        annotations:\n          summary: wasmtap cannot read",
        ),
    ];
    assert_mutants_fail(&MAIN, &mutations);
}

/// The same for the ACK RTT rise: without either sample guard, with a lower ratio, without
/// the offset of the baseline or without `for`, its unit tests fail.
#[test]
fn the_rtt_unit_tests_catch_a_rule_without_its_safeguards() {
    let mutations: [(&str, &str, &str); 5] = [
        (
            "no guard on the samples of the last 5 minutes",
            "(rate(wasmtap_tcp_ack_rtt_seconds_count[5m])) >= 1",
            "(rate(wasmtap_tcp_ack_rtt_seconds_count[5m])) >= 0",
        ),
        (
            "no guard on the samples of the baseline hour",
            "(rate(wasmtap_tcp_ack_rtt_seconds_count[1h] offset 5m)) >= 1",
            "(rate(wasmtap_tcp_ack_rtt_seconds_count[1h] offset 5m)) >= 0",
        ),
        ("a lower ratio", "3 * histogram_quantile", "2 * histogram_quantile"),
        (
            "a baseline that holds the window it is compared with",
            "(rate(wasmtap_tcp_ack_rtt_seconds_bucket[1h] offset 5m))",
            "(rate(wasmtap_tcp_ack_rtt_seconds_bucket[1h]))",
        ),
        ("no `for`", "for: 15m\n", "for: 0m\n"),
    ];
    assert_mutants_fail(&RTT, &mutations);
}
