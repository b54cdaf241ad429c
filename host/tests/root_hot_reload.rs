//! Hot reload under traffic (issue 4, acceptance 2; needs root).
//!
//! `wasmtap run -i <veth> --analyzer-dir DIR` captures real TCP traffic between two namespaces
//! while analyzers are added to, replaced in and removed from the watched directory between
//! bursts. Each change must show in `GET /analyzers` within 2 s, and the default analyzers must
//! lose no packet to it: their resets, DF and window-scale totals must equal tshark's on a
//! tcpdump capture of the same interface, taken at the same time.

mod common;

use common::live::LiveHost;
use common::*;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

const TRAFFIC_PORT: u16 = 5001;
/// Small bursts: exact live counts must not depend on the capture buffer's size.
const BURST_BYTES: u64 = 200_000;
/// The promise of the issue: a change takes effect within 2 s.
const RELOAD_LIMIT: Duration = Duration::from_secs(2);

/// Waits until `want` holds of the names in `GET /analyzers`; returns how long it took.
fn wait_for_names(host: &LiveHost, what: &str, want: impl Fn(&[String]) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let names = host.analyzer_names();
        if want(&names) {
            return start.elapsed();
        }
        assert!(start.elapsed() < RELOAD_LIMIT * 3, "{what}: /analyzers still shows {names:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Copies `from` into the watched directory as `name`, the way a deploy would: write a hidden
/// temporary file, then rename it into place.
fn deploy(from: &Path, dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(from, &tmp).expect("copy analyzer");
    std::fs::rename(&tmp, dir.join(name)).expect("rename analyzer into place");
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn analyzers_come_and_go_under_traffic_without_losing_packets() {
    if !require_root("analyzers_come_and_go_under_traffic_without_losing_packets") {
        return;
    }
    require_tools(&["curl", "tcpdump", "tshark", "python3"]);
    let first = test_analyzer("syn-no-answer");
    let second = test_analyzer("trap-first-batch");

    let pair = NetnsPair::new();
    let ns = pair.a.clone();
    let dir = TempDir::new("hot-reload");
    let watched = dir.join("analyzers");
    std::fs::create_dir(&watched).expect("create the watched directory");
    let watched_arg = watched.to_str().expect("a UTF-8 path");
    let args = ["-i", pair.veth_a.as_str(), "--analyzer-dir", watched_arg];
    let mut host = LiveHost::start("wasmtap run", &ns, &args);
    host.wait_ready(Duration::from_secs(60));

    let reference = dir.join("reference.pcap");
    let tcpdump = Tcpdump::start(&ns, &pair.veth_a, &reference);
    let server = start_traffic_server(&pair, TRAFFIC_PORT);
    run_traffic_client(&pair, &pair.v4_b, TRAFFIC_PORT, BURST_BYTES);

    // Add.
    deploy(&first, &watched, "extra.wasm");
    let added = wait_for_names(&host, "add", |n| n.iter().any(|x| x == "syn-no-answer"));
    run_traffic_client(&pair, &pair.v6_b, TRAFFIC_PORT, BURST_BYTES);

    // Replace the same file with another analyzer.
    deploy(&second, &watched, "extra.wasm");
    let replaced = wait_for_names(&host, "replace", |n| {
        n.iter().any(|x| x == "trap-first-batch") && !n.iter().any(|x| x == "syn-no-answer")
    });
    run_traffic_client(&pair, &pair.v4_b, TRAFFIC_PORT, BURST_BYTES);

    // Remove.
    std::fs::remove_file(watched.join("extra.wasm")).expect("remove analyzer");
    let removed = wait_for_names(&host, "remove", |n| {
        !n.iter().any(|x| x == "trap-first-batch" || x == "syn-no-answer")
            && n.iter().any(|x| x == "traffic")
    });
    run_traffic_client(&pair, &pair.v6_b, TRAFFIC_PORT, BURST_BYTES);
    tcpdump.stop();
    drop(server);
    eprintln!(
        "changes visible in /analyzers after: add {added:?}, replace {replaced:?}, remove {removed:?}"
    );
    for (what, took) in [("add", added), ("replace", replaced), ("remove", removed)] {
        assert!(took <= RELOAD_LIMIT, "{what} took {took:?}, over {RELOAD_LIMIT:?}");
    }

    let expected = Totals::from_tshark(&reference);
    assert!(
        expected.resets > 0 && expected.dont_fragment > 0 && expected.wscale_options > 0,
        "{expected:?}"
    );
    let count = count_metric;
    let samples = host
        .poll(Duration::from_secs(10), |s| {
            has_metric(s, "wasmtap_tcp_resets_total")
                && count(s, "wasmtap_tcp_resets_total") == expected.resets
                && count(s, "wasmtap_ip_dont_fragment_total") == expected.dont_fragment
                && count(s, "wasmtap_tcp_window_scale_options_total") == expected.wscale_options
                && count(s, "wasmtap_packets_total") >= expected.frames
        })
        .samples;
    let got = (
        count(&samples, "wasmtap_tcp_resets_total"),
        count(&samples, "wasmtap_ip_dont_fragment_total"),
        count(&samples, "wasmtap_tcp_window_scale_options_total"),
        count(&samples, "wasmtap_packets_total"),
    );
    eprintln!("tshark {expected:?}; host (resets, df, wscale, packets) = {got:?}");
    assert_eq!(
        (got.0, got.1, got.2),
        (expected.resets, expected.dont_fragment, expected.wscale_options),
        "the default analyzers lost packets across reloads\nhost log:\n{}",
        host.log()
    );
    assert!(got.3 >= expected.frames, "packets {} < tshark frames {}", got.3, expected.frames);
    assert!(
        !has_metric(&samples, "wasmtap_test_trap_packets_total"),
        "removed analyzer's series remain"
    );

    let exited = host.stop("INT", Duration::from_secs(10));
    assert_eq!(exited, Some(true), "wasmtap run did not exit cleanly:\n{}", host.log());
}
