//! ROOT: real TCP traffic between two network namespaces, captured with tcpdump, replayed
//! through `wasmtap replay`, and compared with tshark's reading of the same file.
//!
//! Skipped (loudly) without root, unless WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The traffic server's base port inside namespace b (see `common::traffic`).
const PORT: u16 = 5001;
/// Bytes uploaded per bulk transfer (half as much comes back): a few MB per family.
const BULK_BYTES: u64 = 3_000_000;

/// Records the capture once per test process; every test here reads the same file.
fn capture(test: &str) -> Option<&'static Path> {
    if !require_root(test) {
        return None;
    }
    static CAPTURE: OnceLock<PathBuf> = OnceLock::new();
    Some(CAPTURE.get_or_init(record_capture).as_path())
}

fn record_capture() -> PathBuf {
    require_tools(&["tcpdump", "tshark", "python3", "ip"]);
    let file = fresh_capture(Path::new(env!("CARGO_TARGET_TMPDIR")), "netns-traffic-");
    let pair = NetnsPair::new();
    let tcpdump = Tcpdump::start(&pair.a, &pair.veth_a, &file);
    let _server = start_traffic_server(&pair, PORT);
    run_traffic_client(&pair, &pair.v4_b, PORT, BULK_BYTES);
    run_traffic_client(&pair, &pair.v6_b, PORT, BULK_BYTES);
    let captured = tcpdump.stop();
    eprintln!("captured {captured} packets into {}", file.display());
    file
}

/// tshark's view must show that the traffic really had what the comparisons need.
fn assert_capture_is_interesting(file: &Path, t: &Totals) {
    assert!(t.frames > 1000, "only {} frames captured", t.frames);
    assert!(t.resets > 0, "no RSTs in the capture");
    assert!(t.dont_fragment > 0, "no DF packets in the capture");
    assert!(t.wscale_options > 0, "no window-scale options in the capture");
    // Each family ran refused + abort + linger0, so at least 3 RSTs each.
    let v4_resets = tshark_count(file, Some("ip && tcp.flags.reset==1"));
    let v6_resets = tshark_count(file, Some("ipv6 && tcp.flags.reset==1"));
    assert!(v4_resets >= 3 && v6_resets >= 3, "resets v4={v4_resets} v6={v6_resets}");
    assert!(tshark_count(file, Some("ipv6 && tcp")) > 1000, "little IPv6");
    assert!(tshark_count(file, Some("ip && tcp")) > 1000, "little IPv4");
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn replay_totals_equal_tshark() {
    let Some(file) = capture("replay_totals_equal_tshark") else {
        return;
    };
    let dir = TempDir::new("replay-totals");
    let expected = Totals::from_tshark(file);
    assert_capture_is_interesting(file, &expected);

    let text = replay_to_text(file, &[], &dir);
    let samples = parse_exposition(&text);
    let got = Totals::from_exposition(&samples);
    eprintln!("tshark: {expected:?}\nhost:   {got:?}");
    assert_eq!(got, expected, "wasmtap replay totals differ from tshark's");

    // For replay, `device` is the capture file's base name.
    let base = file.file_name().expect("file name").to_string_lossy().into_owned();
    let devices: Vec<&String> = samples
        .iter()
        .filter(|s| s.name == "wasmtap_packets_total")
        .filter_map(|s| s.labels.get("device"))
        .collect();
    assert_eq!(
        devices,
        vec![&base],
        "wasmtap_packets_total devices should be exactly the capture's base name"
    );
}

/// Sum of a histogram family's `_count`, `_sum`, and its `+Inf` buckets.
fn histogram_totals(samples: &[Sample], family: &str) -> (u64, f64, u64) {
    let count = sum_metric(samples, &format!("{family}_count"));
    let sum = sum_metric(samples, &format!("{family}_sum"));
    let inf: f64 = samples
        .iter()
        .filter(|s| s.name == format!("{family}_bucket"))
        .filter(|s| s.labels.get("le").map(String::as_str) == Some("+Inf"))
        .map(|s| s.value)
        .sum();
    (as_count(count, family), sum, as_count(inf, &format!("{family}_bucket{{le=\"+Inf\"}}")))
}

/// Buckets must be cumulative and non-decreasing per series.
fn assert_buckets_cumulative(samples: &[Sample], family: &str) {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
        let mut labels = s.labels.clone();
        let le = labels.remove("le").expect("bucket without le");
        let le: f64 = le.parse().expect("le is a number");
        series.entry(format!("{labels:?}")).or_default().push((le, s.value));
    }
    assert!(!series.is_empty(), "{family} has no buckets");
    for (key, mut buckets) in series {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in buckets.windows(2) {
            assert!(
                w[0].1 <= w[1].1,
                "{family}{key}: bucket le={} ({}) > le={} ({})",
                w[0].0,
                w[0].1,
                w[1].0,
                w[1].1
            );
        }
    }
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn replay_histograms_match_tshark_lengths() {
    let Some(file) = capture("replay_histograms_match_tshark_lengths") else {
        return;
    };
    let dir = TempDir::new("replay-hist");
    let samples = parse_exposition(&replay_to_text(file, &[], &dir));

    // TCP payload: one observation per TCP segment, sum = sum of tshark's tcp.len.
    let tcp = tshark_fields(file, Some("tcp"), &["tcp.len"]);
    let tcp_sum: u64 = tcp.iter().map(|r| r[0].parse::<u64>().expect("tcp.len")).sum();
    let (count, sum, inf) = histogram_totals(&samples, "wasmtap_tcp_payload_size_bytes");
    assert_eq!(
        (count, sum, inf),
        (tcp.len() as u64, tcp_sum as f64, tcp.len() as u64),
        "wasmtap_tcp_payload_size_bytes (count, sum, +Inf) vs tshark"
    );
    assert_buckets_cumulative(&samples, "wasmtap_tcp_payload_size_bytes");

    // IP size, as the README states it: every IP packet (TCP or not), IPv4 total length,
    // IPv6 payload length + 40.
    let ip_len = |filter: &str| -> (u64, u64) {
        let rows = tshark_fields(file, Some(filter), &["ip.len", "ipv6.plen"]);
        let sum = rows
            .iter()
            .map(|r| {
                if !r[0].is_empty() {
                    r[0].parse::<u64>().expect("ip.len")
                } else {
                    r[1].parse::<u64>().expect("ipv6.plen") + 40
                }
            })
            .sum();
        (rows.len() as u64, sum)
    };
    let all_ip = ip_len("ip || ipv6");
    let (count, sum, inf) = histogram_totals(&samples, "wasmtap_ip_packet_size_bytes");
    assert_eq!(count, inf, "ip size _count vs +Inf bucket");
    assert_eq!(
        (count, sum),
        (all_ip.0, all_ip.1 as f64),
        "wasmtap_ip_packet_size_bytes (count, sum) vs tshark's every IP packet"
    );
    assert_buckets_cumulative(&samples, "wasmtap_ip_packet_size_bytes");
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn replay_per_address_pair_counts_equal_tshark() {
    let Some(file) = capture("replay_per_address_pair_counts_equal_tshark") else {
        return;
    };
    let dir = TempDir::new("replay-pairs");
    let samples = parse_exposition(&replay_to_text(file, &[], &dir));
    for (metric, filter) in [
        ("wasmtap_tcp_resets_total", "tcp.flags.reset==1"),
        ("wasmtap_ip_dont_fragment_total", "ip.flags.df==1"),
        ("wasmtap_tcp_window_scale_options_total", "tcp.options.wscale.shift"),
        // The denominator of the per-pair retransmission and out-of-order ratios.
        ("wasmtap_tcp_data_segments_total", "tcp.len>0"),
    ] {
        let expected = tshark_count_by_pair(file, filter);
        let got: BTreeMap<(IpAddr, IpAddr), u64> =
            sum_by_pair(&samples, metric).into_iter().filter(|(_, v)| *v > 0).collect();
        assert!(!expected.is_empty(), "tshark found no {filter}");
        assert_eq!(got, expected, "{metric} per (src_ip, dst_ip) vs tshark {filter}");
    }
    // Resets went both ways (server refusals/aborts and the client's linger-0 close).
    let resets = tshark_count_by_pair(file, "tcp.flags.reset==1");
    assert!(resets.len() >= 4, "resets by pair: {resets:?}");

    // The shift gauge exists for every pair that sent a window-scale option.
    let shifts: Vec<&Sample> =
        samples.iter().filter(|s| s.name == "wasmtap_tcp_window_scale_shift").collect();
    let wscale_pairs = tshark_count_by_pair(file, "tcp.options.wscale.shift");
    assert_eq!(
        shifts.len(),
        wscale_pairs.len(),
        "one wasmtap_tcp_window_scale_shift series per pair: {shifts:?}"
    );
    // The last shift each pair advertised, per tshark.
    let rows = tshark_fields(
        file,
        Some("tcp.options.wscale.shift"),
        &["ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.options.wscale.shift"],
    );
    let mut last: BTreeMap<(IpAddr, IpAddr), f64> = BTreeMap::new();
    for r in rows {
        let a = |v4: &String, v6: &String| -> IpAddr {
            if v4.is_empty() { v6 } else { v4 }.parse().expect("address")
        };
        last.insert((a(&r[0], &r[1]), a(&r[2], &r[3])), r[4].parse().expect("shift"));
    }
    for s in shifts {
        let key: (IpAddr, IpAddr) = (
            s.labels["src_ip"].parse().expect("src_ip"),
            s.labels["dst_ip"].parse().expect("dst_ip"),
        );
        assert_eq!(Some(&s.value), last.get(&key), "wasmtap_tcp_window_scale_shift{key:?}");
    }
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn replay_is_deterministic_across_runs_workers_and_batch_sizes() {
    let Some(file) = capture("replay_is_deterministic_across_runs_workers_and_batch_sizes") else {
        return;
    };
    let dir = TempDir::new("replay-determinism");
    let first = replay_to_text(file, &[], &dir);
    let second = replay_to_text(file, &[], &dir);
    let small = replay_to_text(file, &["--workers", "1", "--batch-size", "7"], &dir);
    let wide = replay_to_text(file, &["--workers", "2", "--batch-size", "1"], &dir);
    assert!(first.contains("wasmtap_packets_total"));
    // The same command twice: byte-identical, self-metrics included.
    assert!(first == second, "two identical replays differ:\n{}", line_diff(&first, &second));
    // Other worker counts and batch sizes: the analyzers' metrics are byte-identical; the
    // host's self-metrics (instances per worker, ...) legitimately depend on the worker count.
    let analyzers = without_self_metrics(&first);
    for (args, text) in
        [("--workers 1 --batch-size 7", &small), ("--workers 2 --batch-size 1", &wide)]
    {
        let other = without_self_metrics(text);
        assert!(
            analyzers == other,
            "{args} differs from the default:\n{}",
            line_diff(&analyzers, &other)
        );
    }
}

/// Writes examples/captures/sample.pcap: a few hundred packets of real IPv4 + IPv6 TCP
/// between a namespace pair, with refused/aborted connections (RSTs). Run by hand:
/// `WASMTAP_RECORD_SAMPLE=1 cargo test --release -p host --test root_replay_vs_tshark -- --ignored record_sample`
#[test]
#[ignore = "writes examples/captures/sample.pcap; run by hand to re-record it"]
fn record_sample_capture() {
    // scripts/test runs ignored tests too (the root ones): re-record only when asked.
    if std::env::var_os("WASMTAP_RECORD_SAMPLE").is_none() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED record_sample_capture: set WASMTAP_RECORD_SAMPLE=1 to re-record\n",
        );
        return;
    }
    if !require_root("record_sample_capture") {
        return;
    }
    let out = sample_capture();
    let dir = TempDir::new("sample");
    let tmp = dir.join("sample.pcap");
    let pair = NetnsPair::new();
    let tcpdump = Tcpdump::start(&pair.a, &pair.veth_a, &tmp);
    let _server = start_traffic_server(&pair, PORT);
    run_traffic_client(&pair, &pair.v4_b, PORT, 60_000);
    run_traffic_client(&pair, &pair.v6_b, PORT, 60_000);
    let n = tcpdump.stop();
    std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
    std::fs::copy(&tmp, &out).expect("copy sample");
    eprintln!("wrote {n} packets to {}", out.display());
}
