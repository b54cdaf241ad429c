//! ROOT: `host run` capturing live on a veth inside a network namespace, scraped by a real
//! Prometheus server (Debian's `prometheus`) running in the same namespace.
//!
//! Skipped (loudly) without root, unless WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;

use common::*;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const TRAFFIC_PORT: u16 = 5001;
/// Bytes per bulk upload (half as much comes back): a few hundred segments per transfer.
const LIVE_BULK_BYTES: u64 = 300_000;

/// GET http://127.0.0.1:port/metrics from inside `ns`, parsed.
fn scrape(pair: &NetnsPair, ns: &str, port: u16) -> Option<(String, Vec<Sample>)> {
    let text = curl_in(pair, ns, &format!("http://127.0.0.1:{port}/metrics"))?;
    let samples = parse_exposition(&text);
    Some((text, samples))
}

/// Polls /metrics until `done(samples)` holds or `timeout` passes; returns the last scrape.
fn poll_metrics(
    pair: &NetnsPair,
    ns: &str,
    port: u16,
    timeout: Duration,
    done: impl Fn(&[Sample]) -> bool,
) -> (bool, Vec<Sample>) {
    let deadline = Instant::now() + timeout;
    let mut last = Vec::new();
    loop {
        if let Some((_, s)) = scrape(pair, ns, port) {
            if done(&s) {
                return (true, s);
            }
            last = s;
        }
        if Instant::now() >= deadline {
            return (false, last);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn count(samples: &[Sample], name: &str) -> u64 {
    as_count(sum_metric(samples, name), name)
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn live_capture_is_served_and_scraped_by_prometheus() {
    if !require_root("live_capture_is_served_and_scraped_by_prometheus") {
        return;
    }
    require_tools(&["curl", "prometheus", "promtool", "tcpdump", "tshark", "python3"]);
    let pair = NetnsPair::new();
    let ns = pair.a.clone();
    let dir = TempDir::new("live");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");

    // The host, capturing on veth_a in namespace a.
    let mut host_cmd = pair.exec(&ns, HOST);
    host_cmd.args(["run", "-i", &pair.veth_a, "--listen", &listen]);
    host_cmd.env("RUST_LOG", "info");
    let mut host = Spawned::start("host run", &mut host_cmd);

    // Ready within 60 s (it compiles its analyzers at start).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if curl_in(&pair, &ns, &format!("http://{listen}/readyz")).is_some() {
            break;
        }
        if let Some(status) = host.try_status() {
            panic!("host run exited early ({status}):\n{}", host.stderr());
        }
        assert!(Instant::now() < deadline, "/readyz not OK within 60 s:\n{}", host.stderr());
        thread::sleep(Duration::from_millis(100));
    }
    let healthz = run_with_timeout(
        pair.exec(&ns, "curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            &format!("http://{listen}/healthz"),
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(healthz.stdout_text(), "200", "/healthz: {}", healthz.describe());

    // A reference capture of the same interface, started after the host is ready and
    // before any test traffic.
    let reference = dir.join("reference.pcap");
    let tcpdump = Tcpdump::start(&pair, &ns, &pair.veth_a, &reference);
    let server = start_traffic_server(&pair, TRAFFIC_PORT);

    // First burst; the exporter must show it within 2 s (batches flush within ~100 ms).
    run_traffic_client(&pair, &pair.v4_b, TRAFFIC_PORT, LIVE_BULK_BYTES);
    let burst_done = Instant::now();
    let (seen, samples) = poll_metrics(&pair, &ns, port, Duration::from_secs(2), |s| {
        has_metric(s, "wasmtap_packets_total") && sum_metric(s, "wasmtap_packets_total") > 0.0
    });
    let latency = burst_done.elapsed();
    assert!(
        seen,
        "no packets in /metrics 2 s after the first burst; last scrape: {samples:?}\nhost log:\n{}",
        host.stderr()
    );
    eprintln!("first burst visible in /metrics after {latency:?}");

    // More traffic, both families. Modest transfers: a live capture with a default-sized
    // kernel ring may legitimately drop frames of a multi-megabyte veth burst, and this test
    // wants exact counts.
    run_traffic_client(&pair, &pair.v6_b, TRAFFIC_PORT, LIVE_BULK_BYTES);
    run_traffic_client(&pair, &pair.v4_b, TRAFFIC_PORT, LIVE_BULK_BYTES);
    tcpdump.stop();
    drop(server);

    // Traffic-only metrics must match the reference capture exactly once the host has
    // caught up (bounded wait). packets_total also counts frames seen before tcpdump
    // started (neighbour discovery), so it is a lower bound there.
    let expected = Totals::from_tshark(&reference);
    assert!(
        expected.resets > 0 && expected.dont_fragment > 0 && expected.wscale_options > 0,
        "{expected:?}"
    );
    let (matched, samples) = poll_metrics(&pair, &ns, port, Duration::from_secs(10), |s| {
        has_metric(s, "wasmtap_tcp_resets_total")
            && count(s, "wasmtap_tcp_resets_total") == expected.resets
            && count(s, "wasmtap_ip_dont_fragment_total") == expected.dont_fragment
            && count(s, "wasmtap_tcp_window_scale_options_total") == expected.wscale_options
            && count(s, "wasmtap_packets_total") >= expected.frames
    });
    assert!(
        matched,
        "live metrics never matched the reference capture {expected:?}: resets={} df={} wscale={} packets={}",
        count(&samples, "wasmtap_tcp_resets_total"),
        count(&samples, "wasmtap_ip_dont_fragment_total"),
        count(&samples, "wasmtap_tcp_window_scale_options_total"),
        count(&samples, "wasmtap_packets_total"),
    );
    let devices: Vec<&String> = samples
        .iter()
        .filter(|s| s.name == "wasmtap_packets_total")
        .filter_map(|s| s.labels.get("device"))
        .collect();
    assert_eq!(devices, vec![&pair.veth_a], "device label of a live capture");

    // The exposition passes promtool's checks.
    let (text, _) = scrape(&pair, &ns, port).expect("scrape /metrics");
    let check = run_with_input(
        Command::new("promtool").args(["check", "metrics"]),
        Some(text.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(check.success(), "promtool check metrics: {}", check.describe());

    // A real Prometheus scrapes it.
    let prom = PrometheusServer::start(&pair, &ns, free_port(), &listen);
    let packets =
        prom.poll_nonzero(&pair, &ns, "sum(wasmtap_packets_total)", Duration::from_secs(60));
    assert!(
        packets >= expected.frames as f64,
        "prometheus sum(wasmtap_packets_total) = {packets}, reference capture has {} frames\n{}",
        expected.frames,
        prom.logs()
    );
    let resets = prom.query(&pair, &ns, "sum(wasmtap_tcp_resets_total)");
    assert_eq!(resets, Some(expected.resets as f64), "prometheus sum(wasmtap_tcp_resets_total)");
    let up = prom.query(&pair, &ns, "up{job=\"wasmtap\"}");
    assert_eq!(up, Some(1.0), "prometheus up{{job=\"wasmtap\"}}");
    drop(prom);

    // Graceful shutdown on SIGINT.
    let status = host.interrupt_and_wait(Duration::from_secs(15));
    let log = host.stderr();
    assert!(!log.contains("panicked"), "host panicked:\n{log}");
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "host run did not exit 0 within 15 s of SIGINT ({status:?}):\n{log}"
    );
}
