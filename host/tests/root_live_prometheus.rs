//! ROOT: `wasmtap run` capturing live on a veth inside a network namespace, scraped by a real
//! Prometheus server (Debian's `prometheus`) running in the same namespace.
//!
//! Skipped (loudly) without root, unless WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;

use common::live::LiveHost;
use common::promql::{Prometheus, ScrapeJob};
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const TRAFFIC_PORT: u16 = 5001;
/// Bytes per bulk upload (half as much comes back): a few hundred segments per transfer.
const LIVE_BULK_BYTES: u64 = 300_000;

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

    // The host, capturing on veth_a in namespace a; ready within 60 s (it compiles its
    // analyzers at start).
    let mut host = LiveHost::start("wasmtap run", &ns, &["-i", &pair.veth_a]);
    host.wait_ready(Duration::from_secs(60));
    assert_eq!(host.status("/healthz"), Some(200), "/healthz:\n{}", host.log());

    // A reference capture of the same interface, started after the host is ready and
    // before any test traffic.
    let reference = dir.join("reference.pcap");
    let tcpdump = Tcpdump::start(&ns, &pair.veth_a, &reference);
    let server = start_traffic_server(&pair, TRAFFIC_PORT);

    // First burst; the exporter must show it within 2 s (batches flush within ~100 ms).
    run_traffic_client(&pair, &pair.v4_b, TRAFFIC_PORT, LIVE_BULK_BYTES);
    let burst_done = Instant::now();
    let seen = host.poll(Duration::from_secs(2), |s| {
        has_metric(s, "wasmtap_packets_total") && sum_metric(s, "wasmtap_packets_total") > 0.0
    });
    let latency = burst_done.elapsed();
    assert!(
        seen.met,
        "no packets in /metrics 2 s after the first burst; last scrape: {:?}\nhost log:\n{}",
        seen.samples,
        host.log()
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
    let count = count_metric;
    let polled = host.poll(Duration::from_secs(10), |s| {
        has_metric(s, "wasmtap_tcp_resets_total")
            && count(s, "wasmtap_tcp_resets_total") == expected.resets
            && count(s, "wasmtap_ip_dont_fragment_total") == expected.dont_fragment
            && count(s, "wasmtap_tcp_window_scale_options_total") == expected.wscale_options
            && count(s, "wasmtap_packets_total") >= expected.frames
    });
    let samples = polled.samples;
    assert!(
        polled.met,
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
    let text = host.get("/metrics").expect("scrape /metrics");
    let check = run_with_input(
        Command::new("promtool").args(["check", "metrics"]),
        Some(text.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(check.success(), "promtool check metrics: {}", check.describe());

    // A real Prometheus scrapes it.
    let listen = host.addr.to_string();
    let prom = Prometheus::start(&ns, &[ScrapeJob::metrics("wasmtap", &listen)]);
    let packets = prom.poll_nonzero("sum(wasmtap_packets_total)", Duration::from_secs(60));
    assert!(
        packets >= expected.frames as f64,
        "prometheus sum(wasmtap_packets_total) = {packets}, reference capture has {} frames\n{}",
        expected.frames,
        prom.logs()
    );
    let resets = prom.value("sum(wasmtap_tcp_resets_total)");
    assert_eq!(resets, Some(expected.resets as f64), "prometheus sum(wasmtap_tcp_resets_total)");
    let up = prom.value("up{job=\"wasmtap\"}");
    assert_eq!(up, Some(1.0), "prometheus up{{job=\"wasmtap\"}}");
    drop(prom);

    // Graceful shutdown on SIGINT.
    let exited = host.stop("INT", Duration::from_secs(15));
    let log = host.log();
    assert!(!log.contains("panicked"), "host panicked:\n{log}");
    assert_eq!(exited, Some(true), "wasmtap run did not exit 0 within 15 s of SIGINT:\n{log}");
}
