//! Hot reload under traffic (issue 4, acceptance 2; needs root).
//!
//! `host run -i <veth> --analyzer-dir DIR` captures real TCP traffic between two namespaces
//! while analyzers are added to, replaced in and removed from the watched directory between
//! bursts. Each change must show in `GET /analyzers` within 2 s, and the default analyzers must
//! lose no packet to it: their resets, DF and window-scale totals must equal tshark's on a
//! tcpdump capture of the same interface, taken at the same time.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

const TRAFFIC_PORT: u16 = 5001;
/// Small bursts: exact live counts must not depend on the capture buffer's size.
const BURST_BYTES: u64 = 200_000;
/// The promise of the issue: a change takes effect within 2 s.
const RELOAD_LIMIT: Duration = Duration::from_secs(2);

fn test_analyzer(name: &str) -> PathBuf {
    wasmtap_test_analyzers::path(name)
}

/// Names in `GET /analyzers`, crudely parsed: every `"name":"…"` at the top level of the list
/// comes before its `"version"`.
fn analyzer_names(pair: &NetnsPair, ns: &str, listen: &str) -> Option<Vec<String>> {
    let body = curl_in(pair, ns, &format!("http://{listen}/analyzers"))?;
    let names = body
        .split("\"name\":\"")
        .skip(1)
        .filter(|part| part.contains("\"version\""))
        .filter_map(|part| part.split('"').next())
        .filter(|n| !n.starts_with("wasmtap_"))
        .map(str::to_owned)
        .collect();
    Some(names)
}

/// Waits until `want(names)` holds; returns how long it took.
fn wait_for(
    pair: &NetnsPair,
    ns: &str,
    listen: &str,
    what: &str,
    want: impl Fn(&[String]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let names = analyzer_names(pair, ns, listen).unwrap_or_default();
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

fn count(samples: &[Sample], name: &str) -> u64 {
    as_count(sum_metric(samples, name), name)
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
    assert!(first.exists() && second.exists(), "test analyzers missing: {first:?} {second:?}");

    let pair = NetnsPair::new();
    let ns = pair.a.clone();
    let dir = TempDir::new("hot-reload");
    let watched = dir.join("analyzers");
    std::fs::create_dir(&watched).expect("create the watched directory");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = pair.exec(&ns, HOST);
    cmd.args(["run", "-i", &pair.veth_a, "--listen", &listen, "--analyzer-dir"]).arg(&watched);
    let mut host = Spawned::start("host run", &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(60);
    while curl_in(&pair, &ns, &format!("http://{listen}/readyz")).is_none() {
        if let Some(status) = host.try_status() {
            panic!("host run exited early ({status}):\n{}", host.stderr());
        }
        assert!(Instant::now() < deadline, "/readyz not OK within 60 s:\n{}", host.stderr());
        thread::sleep(Duration::from_millis(50));
    }

    let reference = dir.join("reference.pcap");
    let tcpdump = Tcpdump::start(&pair, &ns, &pair.veth_a, &reference);
    let server = start_traffic_server(&pair, TRAFFIC_PORT);
    run_traffic_client(&pair, &pair.v4_b, TRAFFIC_PORT, BURST_BYTES);

    // Add.
    deploy(&first, &watched, "extra.wasm");
    let added = wait_for(&pair, &ns, &listen, "add", |n| n.iter().any(|x| x == "syn-no-answer"));
    run_traffic_client(&pair, &pair.v6_b, TRAFFIC_PORT, BURST_BYTES);

    // Replace the same file with another analyzer.
    deploy(&second, &watched, "extra.wasm");
    let replaced = wait_for(&pair, &ns, &listen, "replace", |n| {
        n.iter().any(|x| x == "trap-first-batch") && !n.iter().any(|x| x == "syn-no-answer")
    });
    run_traffic_client(&pair, &pair.v4_b, TRAFFIC_PORT, BURST_BYTES);

    // Remove.
    std::fs::remove_file(watched.join("extra.wasm")).expect("remove analyzer");
    let removed = wait_for(&pair, &ns, &listen, "remove", |n| {
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
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let text = curl_in(&pair, &ns, &format!("http://{listen}/metrics")).unwrap_or_default();
        let s = parse_exposition(&text);
        let matched = has_metric(&s, "wasmtap_tcp_resets_total")
            && count(&s, "wasmtap_tcp_resets_total") == expected.resets
            && count(&s, "wasmtap_ip_dont_fragment_total") == expected.dont_fragment
            && count(&s, "wasmtap_tcp_window_scale_options_total") == expected.wscale_options
            && count(&s, "wasmtap_packets_total") >= expected.frames;
        if matched || Instant::now() >= deadline {
            break s;
        }
        thread::sleep(Duration::from_millis(100));
    };
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
        host.stderr()
    );
    assert!(got.3 >= expected.frames, "packets {} < tshark frames {}", got.3, expected.frames);
    assert!(
        !has_metric(&samples, "wasmtap_test_trap_packets_total"),
        "removed analyzer's series remain"
    );

    let status = host.interrupt_and_wait(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "host run did not exit cleanly: {status:?}");
}
