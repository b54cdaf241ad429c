//! A test analyzer that traps on its first batch must not take the host or the other
//! analyzers down: the replay exits 0, the trap is logged and counted under the analyzer's
//! name, and the default analyzers' metrics are exactly those of a run without it (and
//! tshark's counts). No root needed: it replays the committed sample capture.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn trap_analyzer() -> PathBuf {
    // Built by the `wasmtap-test-analyzers` dev-dependency (host/test-analyzers/build.rs).
    let path = wasmtap_test_analyzers::path("trap-first-batch");
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

/// The metric families declared (`# TYPE name kind`) in an exposition.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The family a line belongs to: the name in a comment, or the sample name with a
/// histogram suffix removed when that gives a known family.
fn family_of_line<'a>(line: &'a str, known: &BTreeSet<String>) -> &'a str {
    if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
        return rest.split_whitespace().next().unwrap_or("");
    }
    let name = line.split(|c: char| c == '{' || c.is_whitespace()).next().unwrap_or("");
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && known.contains(base)
        {
            return base;
        }
    }
    name
}

#[test]
fn trapping_analyzer_is_isolated_reported_and_counted() {
    let sample = sample_capture();
    assert!(sample.is_file(), "{} is missing", sample.display());
    let analyzer = trap_analyzer();
    let dir = TempDir::new("bad-analyzer");

    let baseline = replay_to_text(&sample, &[], &dir);

    let out = dir.join("with-trap.prom");
    let r = host_replay(
        &[
            sample.as_os_str(),
            "--analyzer".as_ref(),
            analyzer.as_os_str(),
            "--output".as_ref(),
            out.as_os_str(),
        ],
        std::time::Duration::from_secs(120),
    );
    assert_no_host_panic(&r, "replay with a trapping analyzer");
    assert!(r.success(), "a trapping analyzer must not fail the replay: {}", r.describe());
    assert!(
        r.stderr_text().contains("trap-first-batch"),
        "stderr does not mention the trapping analyzer: {}",
        r.describe()
    );
    let with_trap = std::fs::read_to_string(&out).expect("read output");
    let samples = parse_exposition(&with_trap);

    let traps: f64 = samples
        .iter()
        .filter(|s| s.name == "wasmtap_analyzer_traps_total")
        .filter(|s| s.labels.get("analyzer").map(String::as_str) == Some("trap-first-batch"))
        .map(|s| s.value)
        .sum();
    assert!(
        traps >= 1.0,
        "wasmtap_analyzer_traps_total{{analyzer=\"trap-first-batch\"}} = {traps}\n{with_trap}"
    );

    // The default analyzers' output is untouched by the bad neighbour: every family of the
    // baseline (self-metrics aside) is byte-identical in the run with the trapping analyzer.
    let baseline_families = families(&without_self_metrics(&baseline));
    assert!(baseline_families.contains("wasmtap_packets_total"));
    let defaults = |text: &str| -> String {
        without_self_metrics(text)
            .lines()
            .filter(|l| baseline_families.contains(family_of_line(l, &baseline_families)))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    assert_eq!(
        defaults(&with_trap),
        defaults(&baseline),
        "default analyzers' metrics changed when a trapping analyzer was added"
    );
    // ...and right.
    assert_eq!(
        Totals::from_exposition(&samples),
        Totals::from_tshark(&sample),
        "totals with a trapping analyzer vs tshark"
    );
    // The baseline has no traps.
    let base_traps: f64 = parse_exposition(&baseline)
        .iter()
        .filter(|s| s.name == "wasmtap_analyzer_traps_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(base_traps, 0.0, "default analyzers trapped:\n{baseline}");
}

#[test]
fn sample_replay_equals_tshark() {
    let sample = sample_capture();
    assert!(sample.is_file(), "{} is missing", sample.display());
    let dir = TempDir::new("sample");
    let samples = parse_exposition(&replay_to_text(&sample, &[], &dir));
    let expected = Totals::from_tshark(&sample);
    assert!(expected.resets > 0 && expected.wscale_options > 0 && expected.dont_fragment > 0);
    assert_eq!(Totals::from_exposition(&samples), expected);
    let resets = sum_by_pair(&samples, "wasmtap_tcp_resets_total");
    assert_eq!(
        resets,
        tshark_count_by_pair(&sample, "tcp.flags.reset==1"),
        "resets per (src_ip, dst_ip)"
    );
}

#[test]
fn no_default_analyzers_means_no_default_metrics() {
    let sample = sample_capture();
    let analyzer = trap_analyzer();
    let dir = TempDir::new("no-defaults");
    let text = replay_to_text_checked(
        &sample,
        &["--no-default-analyzers", "--analyzer", analyzer.to_str().expect("utf-8 path")],
        &dir,
        assert_no_host_panic,
    );
    let samples = parse_exposition(&text);
    assert!(
        !has_metric(&samples, "wasmtap_packets_total"),
        "--no-default-analyzers still exported wasmtap_packets_total:\n{text}"
    );
}
