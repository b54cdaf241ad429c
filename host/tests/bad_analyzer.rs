//! A test analyzer that traps on its first batch must not take the host or the other
//! analyzers down: the replay exits 0, the trap is logged and counted under the analyzer's
//! name, and the default analyzers' metrics are exactly those of a run without it (and
//! tshark's counts). No root needed: it replays the committed sample capture.

mod common;

use common::*;

#[test]
fn trapping_analyzer_is_isolated_reported_and_counted() {
    let sample = sample_capture();
    assert!(sample.is_file(), "{} is missing", sample.display());
    let analyzer = test_analyzer("trap-first-batch");
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

    // The default analyzers' output is untouched by the bad neighbour: every series of the
    // baseline's families (self-metrics aside) is the same in the run with the trapping
    // analyzer.
    let diffs = default_differences(&with_trap, &baseline);
    assert!(
        diffs.is_empty(),
        "default analyzers' metrics changed when a trapping analyzer was added:\n{}",
        diffs.join("\n")
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
    let analyzer = test_analyzer("trap-first-batch");
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
