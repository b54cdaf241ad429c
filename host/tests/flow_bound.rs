//! Issue 3, acceptance 3: the tcp-analysis analyzer's flow state is bounded.
//!
//! The test writes a capture of 2^20 (1,048,576) distinct TCP flows, one SYN each, 1 µs apart
//! (64 source addresses × 16,384 source ports towards one server), so that no flow expires by
//! idle time and the flow table can only stay bounded by evicting. It replays the capture with
//! the default analyzers under `/usr/bin/time -v` and shows that:
//! - the host exits 0 and counted every packet, and the analyzer kept running (no trap, no
//!   restart: its memory stayed inside the per-instance cap);
//! - `wasmtap_tcp_analysis_flows_evicted_total` is > 0: the table is bounded and evictions are
//!   counted;
//! - every flow left the table exactly once: `wasmtap_tcp_connection_duration_seconds_count`
//!   (observed on eviction or at the end of the capture) equals the number of flows;
//! - the host's peak RSS ("Maximum resident set size") stays under 256 MiB.

mod common;
mod tcp_analysis;

use common::frames::{Pcap, SYN, TcpSegment};
use common::*;
use etherparse::TcpOptionElement;
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;
use tcp_analysis::EVICTIONS;

/// Source addresses (10.99.1.1 … 10.99.1.64).
const SOURCES: u32 = 64;
/// Source ports per address (1024 … 17407).
const PORTS: u32 = 16_384;
/// Distinct flows: 2^20, over the "≥ 1M".
const FLOWS: u32 = SOURCES * PORTS;
/// Packet-time spacing: 1 µs, so the whole capture spans about a second of packet time, far
/// below any idle timeout: every flow is still live when the table fills.
const SPACING_US: u64 = 1;
/// The bound on the host's peak RSS.
const MAX_RSS_KIB: u64 = 256 * 1024;
/// Generous limit for the replay (about a second of work normally, a few on a loaded machine).
const TIMEOUT: Duration = Duration::from_secs(90);

/// Streams the capture to `path`: flow i is a SYN from 10.99.1.(1 + i / PORTS), port
/// 1024 + i % PORTS, to 10.99.200.1:39000.
fn write_capture(path: &Path) {
    let mut pcap = Pcap::create(path);
    let dst = IpAddr::V4(Ipv4Addr::new(10, 99, 200, 1));
    let t0_us: u64 = 1_700_000_000_000_000;
    for i in 0..FLOWS {
        let src = IpAddr::V4(Ipv4Addr::new(10, 99, 1, 1 + (i / PORTS) as u8));
        let seg = TcpSegment {
            seq: i.wrapping_mul(2_654_435_761), // any distinct ISNs
            flags: SYN,
            options: vec![TcpOptionElement::MaximumSegmentSize(1460)],
            ip_id: i as u16,
            ..TcpSegment::new(src, 1024 + (i % PORTS) as u16, dst, 39_000)
        };
        pcap.write_segment(t0_us + u64::from(i) * SPACING_US, &seg);
    }
    assert_eq!(pcap.frames(), u64::from(FLOWS));
    pcap.finish();
}

#[test]
fn million_flows_replay_with_a_bounded_flow_table_and_rss() {
    let dir = TempDir::new("flow-bound");
    let capture = dir.join("million-flows.pcap");
    let t = std::time::Instant::now();
    write_capture(&capture);
    let size = std::fs::metadata(&capture).map(|m| m.len()).unwrap_or(0);
    eprintln!("wrote {FLOWS} flows ({} MB) in {:.1?}", size / 1_000_000, t.elapsed());

    let out = dir.join("out.prom");
    let args = [OsStr::new("replay"), capture.as_os_str(), OsStr::new("--output"), out.as_os_str()];
    let (r, rss_kib) = host_measured(&args, TIMEOUT);
    assert_no_panic(&r, "wasmtap replay of a million flows");
    assert!(r.success(), "wasmtap replay failed: {}", r.describe());
    let rss_kib = rss_kib.expect("GNU time's report of the peak RSS");
    let text = std::fs::read_to_string(&out).expect("read the exposition");
    let samples = parse_exposition(&text);

    let packets = as_count(sum_metric(&samples, "wasmtap_packets_total"), "packets");
    let evicted = as_count(sum_metric(&samples, EVICTIONS), EVICTIONS);
    let durations = as_count(
        sum_metric(&samples, "wasmtap_tcp_connection_duration_seconds_count"),
        "duration count",
    );
    let running = samples.iter().any(|s| {
        s.name == "wasmtap_analyzer_state"
            && s.labels.get("analyzer").map(String::as_str) == Some("tcp-analysis")
            && s.labels.get("state").map(String::as_str) == Some("running")
            && s.value == 1.0
    });
    eprintln!(
        "replay of {FLOWS} flows: {:.2?}, peak RSS {:.1} MiB (limit {} MiB), packets {packets}, \
         evicted {evicted}, still in the tables at the end {}, duration observations {durations}",
        r.elapsed,
        rss_kib as f64 / 1024.0,
        MAX_RSS_KIB / 1024,
        u64::from(FLOWS).saturating_sub(evicted),
    );

    assert_eq!(packets, u64::from(FLOWS), "wasmtap_packets_total");
    assert!(running, "tcp-analysis is not running at the end (trapped or quarantined):\n{text}");
    // Any trap, failed call, restart or skipped packet would mean an analyzer did not cope.
    let trouble: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            [
                "wasmtap_analyzer_traps_total",
                "wasmtap_analyzer_failures_total",
                "wasmtap_analyzer_restarts_total",
                "wasmtap_analyzer_skipped_packets_total",
            ]
            .contains(&s.name.as_str())
                && s.value != 0.0
        })
        .collect();
    assert!(trouble.is_empty(), "analyzer trouble: {trouble:?}");
    assert!(evicted > 0, "{EVICTIONS} is 0: the flow table was not bounded (or not counted)");
    assert!(evicted < u64::from(FLOWS), "every flow evicted: {evicted}");
    assert_eq!(durations, u64::from(FLOWS), "every flow leaves the table once (duration count)");
    assert!(
        rss_kib < MAX_RSS_KIB,
        "host peak RSS {rss_kib} KiB is over {MAX_RSS_KIB} KiB (256 MiB)"
    );
}
