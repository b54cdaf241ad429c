//! The alerting rules (`dashboard/wasmtap-alerts.yaml`), checked with Debian's promtool:
//! - `promtool check rules` accepts the file;
//! - `promtool test rules dashboard/wasmtap-alerts.test.yaml` passes: every alert fires on
//!   crafted series and stays quiet on the normal ones beside them (promtool compares the whole
//!   list of alerts of a name at each evaluation time, so a quiet series that fired would fail);
//! - every alert of the rules file has a test, and the tests are not vacuous: copies of the rules
//!   with one safeguard removed each (the minimum-traffic guard, the reason filter, the `for`
//!   of the drops and of the pod source alerts) make `promtool test rules` fail.
//!
//! The chart's PrometheusRule carries the same rules (`chart.rs` checks that).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const RULES: &str = "wasmtap-alerts.yaml";
const TESTS: &str = "wasmtap-alerts.test.yaml";

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
    let r = promtool(&dashboard_dir(), &["check", "rules", RULES]);
    eprintln!("{}", r.stdout_text());
    assert!(r.success(), "promtool check rules {RULES}: {}", r.describe());
    assert!(r.stdout_text().contains("SUCCESS: 6 rules found"), "{}", r.describe());
}

#[test]
fn every_alert_fires_on_faults_and_stays_quiet_otherwise() {
    let r = promtool(&dashboard_dir(), &["test", "rules", TESTS]);
    eprintln!("{}{}", r.stdout_text(), r.stderr_text());
    assert!(r.success(), "promtool test rules {TESTS}: {}", r.describe());
    assert!(r.stdout_text().contains("SUCCESS"), "{}", r.describe());
}

#[test]
fn every_alert_has_a_test_that_checks_firing_and_quiet() {
    let rules = std::fs::read_to_string(dashboard_dir().join(RULES)).expect("rules");
    let tests = std::fs::read_to_string(dashboard_dir().join(TESTS)).expect("tests");
    let alerts: Vec<&str> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).map(str::trim).collect();
    assert_eq!(alerts.len(), 6, "{alerts:?}");
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

/// Each mutation removes one safeguard from the rules; the unit tests must then fail.
#[test]
fn the_unit_tests_catch_rules_without_their_safeguards() {
    let rules = std::fs::read_to_string(dashboard_dir().join(RULES)).expect("rules");
    let tests = std::fs::read_to_string(dashboard_dir().join(TESTS)).expect("tests");
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
    for (what, from, to) in mutations {
        assert!(rules.contains(from), "mutation {what:?}: {from:?} is not in {RULES}");
        let dir = TempDir::new("alert-mutant");
        std::fs::write(dir.join(RULES), rules.replacen(from, to, 1)).expect("write rules");
        std::fs::write(dir.join(TESTS), &tests).expect("write tests");
        let check = promtool(dir.path(), &["check", "rules", RULES]);
        assert!(check.success(), "{what}: the mutant must still be valid: {}", check.describe());
        let r = promtool(dir.path(), &["test", "rules", TESTS]);
        eprintln!("{what}: promtool test rules exit {:?}", r.code());
        assert!(!r.success(), "{what}: the unit tests still pass: {}", r.describe());
    }
}
