//! ROOT: issue 19, acceptance 2: the TCP inside every tunnel kind, from real traffic. This
//! kernel has no Geneve, GRE or IPIP driver, so a real lossy capture is recorded once per test
//! process (IPv4 and IPv6 TCP between two namespaces, nftables dropping 2% of the segments each
//! namespace receives, after the capture point, as in `root_tcp_analysis`), and each test wraps
//! every frame of it in one kind of tunnel, or in two or three nested ones (`common::tunnel`):
//! VXLAN on 4789 and 8472, Geneve with and without options, GRE carrying IPv4, IPv6 and
//! Ethernet with and without key and sequence number (and with a checksum), IPv4-in-IPv4,
//! IPv6-in-IPv4 and both in IPv6. The underlays use the documentation ranges (192.0.2.0/24,
//! 198.51.100.0/24, 2001:db8::/32); every VNI and GRE key is distinct. A tunnel that carries IP
//! carries the capture's frames of that IP version alone, without their link header.
//!
//! For each wrapped capture, replayed with `wasmtap replay`:
//! - tshark finds every outer header valid (IPv4 header, UDP and GRE checksums, nothing
//!   malformed) and opens every layer: each IP frame's innermost addresses are the original
//!   frame's, under one outer IP header per layer;
//! - every per-pair counter of the default analyzers (resets, don't-fragment, window scale
//!   options, data segments, retransmissions, fast and spurious ones, out-of-order segments,
//!   duplicate ACKs, zero windows) equals tshark's count per innermost (src, dst) pair exactly,
//!   and the host's frame count equals tshark's;
//! - every series of the analyzers' families (those per pair: counters, the window scale
//!   gauge, the handshake and ACK RTT histograms; and those per device: frames, IP packet and
//!   TCP payload size histograms, connection durations) equals the replay of the same frames
//!   unwrapped, the device label aside: the records describe the innermost packet;
//! - `wasmtap_host_tunnel_packets_total{kind}` is the number of tunnel headers of that kind
//!   written (frames times the layers of that kind), every kind exported, and
//!   `wasmtap_host_tunnel_undecoded_total` is 0 for every reason (the unwrapped replay has no
//!   tunnel series);
//!
//! and the replay of the unwrapped frames equals tshark's reading of them exactly, with no
//! tunnel counted. A failure names the kind, the counter, the pair and both counts. Skipped
//! (loudly) without root, unless WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;
mod tcp_analysis;

use common::live::device_samples;
use common::tunnel::{
    Frames, GeneveOption, GrePayload, Kind, Layer, Underlay, filter_capture, wrap_capture,
};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tcp_analysis::{COUNTERS, FLAG_COUNTERS, Reference};

/// The traffic server's base port inside namespace b (see `common::traffic`).
const PORT: u16 = 5001;
/// Bytes uploaded per bulk transfer (half as much comes back): enough segments for dozens of
/// losses each way, few enough frames (≈ 5,000) that tshark reads each wrapped capture in
/// about a second per pass.
const BULK_BYTES: u64 = 1_000_000;
/// Bytes sent to the slow reader: about a second of its pace, a dozen window closures.
const SLOW_BYTES: u64 = 150_000;
/// Share of TCP segments nftables drops in each namespace's input hook, in percent.
const LOSS_PERCENT: u32 = 2;

/// The host's tunnel self-metrics and the reasons it leaves a tunnel undecoded.
const TUNNEL_PACKETS: &str = "wasmtap_host_tunnel_packets_total";
const TUNNEL_UNDECODED: &str = "wasmtap_host_tunnel_undecoded_total";
const UNDECODED_REASONS: [&str; 4] = ["truncated", "malformed", "unsupported", "too_deep"];

/// The port tshark knows VXLAN on without being told.
const VXLAN_IANA_PORT: u16 = 4789;
/// The Linux kernel's VXLAN port (flannel, Cilium).
const VXLAN_LINUX_PORT: u16 = 8472;

/// The recorded capture.
struct Recorded {
    file: PathBuf,
}

/// Records the capture once per test process; every test here wraps the same file.
fn capture(test: &str) -> Option<&'static Recorded> {
    if !require_root(test) {
        return None;
    }
    static CAPTURE: OnceLock<Recorded> = OnceLock::new();
    Some(CAPTURE.get_or_init(record))
}

fn record() -> Recorded {
    require_tools(&["tshark"]);
    let started = Instant::now();
    let cap = record_lossy("tunnel-lossy-", LOSS_PERCENT, PORT, BULK_BYTES, SLOW_BYTES);
    let (ab, ba) = (cap.dropped_ab, cap.dropped_ba);
    eprintln!("recorded in {:.1} s", started.elapsed().as_secs_f64());
    assert!(ab > 0 && ba > 0, "nftables dropped nothing one way: {ab} a→b, {ba} b→a");
    Recorded { file: cap.file }
}

/// The frames of one selection of the capture, unwrapped: its replay and tshark's reading.
struct Baseline {
    frames: u64,
    samples: Vec<Sample>,
    reference: Reference,
    device: String,
    /// How the replay differs from tshark, or counts a tunnel (empty when it does not).
    failures: Vec<String>,
}

/// The baseline of `frames`, made once per test process.
fn baseline(rec: &Recorded, frames: Frames) -> &'static Baseline {
    static BASELINES: [OnceLock<Baseline>; 4] = [const { OnceLock::new() }; 4];
    let (i, tag) = match frames {
        Frames::All => (0, "all"),
        Frames::Ipv4 => (1, "ipv4"),
        Frames::Ipv6 => (2, "ipv6"),
        Frames::Ip => (3, "ip"),
    };
    BASELINES[i].get_or_init(|| {
        let started = Instant::now();
        let prefix = format!("tunnel-unwrapped-{tag}-");
        let file = fresh_capture(Path::new(env!("CARGO_TARGET_TMPDIR")), &prefix);
        let n = filter_capture(&rec.file, &file, frames);
        let device = device_of(&file);
        let dir = TempDir::new("tunnel-unwrapped");
        let samples = parse_exposition(&replay_to_text(&file, &[], &dir));
        let reference = Reference::read(&device, &file);
        let what = format!("unwrapped ({tag})");
        let mut failures = against_tshark(&what, &reference, &samples, &device);
        let none = Kind::ALL.iter().map(|k| (*k, 0)).collect();
        failures.extend(tunnel_metric_failures(&what, &samples, &device, &none));
        // The capture must have what the comparison is about.
        for metric in [
            "wasmtap_tcp_retransmissions_total",
            "wasmtap_tcp_duplicate_acks_total",
            "wasmtap_tcp_resets_total",
            "wasmtap_tcp_data_segments_total",
        ] {
            if reference.total(metric) == 0 {
                failures.push(format!("{what}: tshark finds nothing for {metric}"));
            }
        }
        eprintln!(
            "{what}: {n} frames, {}; read in {:.1} s",
            totals(&reference),
            started.elapsed().as_secs_f64()
        );
        Baseline { frames: n, samples, reference, device, failures }
    })
}

/// The device label a replay gives a capture: its file name.
fn device_of(file: &Path) -> String {
    file.file_name().expect("a file name").to_string_lossy().into_owned()
}

/// tshark's totals of the compared counters, for the log.
fn totals(reference: &Reference) -> String {
    FLAG_COUNTERS
        .iter()
        .chain(&COUNTERS)
        .map(|(metric, _)| {
            let short = metric.trim_start_matches("wasmtap_").trim_end_matches("_total");
            format!("{short} {}", reference.total(metric))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every per-pair counter of a replay against tshark's reading of the same capture, exactly:
/// one line per (counter, pair) that differs, and the reference's own checks (frames
/// captured, received and dropped).
fn against_tshark(
    what: &str,
    reference: &Reference,
    samples: &[Sample],
    device: &str,
) -> Vec<String> {
    let mut out: Vec<String> =
        reference.mismatches(samples).into_iter().map(|m| format!("{what}: {m}")).collect();
    let on_device = device_samples(samples, device);
    for (metric, field) in FLAG_COUNTERS.iter().chain(&COUNTERS) {
        let host = sum_by_pair(&on_device, metric);
        let tshark = reference.tshark(metric);
        let pairs: BTreeSet<_> = host.keys().chain(tshark.keys()).collect();
        for pair in pairs {
            let h = host.get(pair).copied().unwrap_or(0);
            let t = tshark.get(pair).copied().unwrap_or(0);
            if h != t {
                out.push(format!(
                    "{what}: {metric} {} -> {}: host {h}, tshark {t} ({:+}; {field})",
                    pair.0,
                    pair.1,
                    h as i64 - t as i64
                ));
            }
        }
    }
    out
}

/// The host's tunnel self-metrics for `device` against the headers written per kind: every
/// kind and every undecoded reason exported, the packets as built, nothing undecoded; and for a
/// capture without tunnels, no tunnel series at all (a device's appear with its first tunnel).
fn tunnel_metric_failures(
    what: &str,
    samples: &[Sample],
    device: &str,
    built: &BTreeMap<Kind, u64>,
) -> Vec<String> {
    if built.values().all(|n| *n == 0) {
        return samples
            .iter()
            .filter(|s| s.name == TUNNEL_PACKETS || s.name == TUNNEL_UNDECODED)
            .filter(|s| s.labels.get("device").map(String::as_str) == Some(device))
            .map(|s| format!("{what}: a tunnel series without any tunnel: {s:?}"))
            .collect();
    }
    let mut out = Vec::new();
    for (kind, want) in built {
        let labels = [("device", device), ("kind", kind.label())];
        match value_of(samples, TUNNEL_PACKETS, &labels) {
            None => out.push(format!("{what}: no {TUNNEL_PACKETS}{{kind=\"{}\"}}", kind.label())),
            Some(v) if v != *want as f64 => out.push(format!(
                "{what}: {TUNNEL_PACKETS}{{kind=\"{}\"}}: host {v}, built {want} ({:+})",
                kind.label(),
                v - *want as f64
            )),
            Some(_) => {}
        }
    }
    for reason in UNDECODED_REASONS {
        let labels = [("device", device), ("reason", reason)];
        match value_of(samples, TUNNEL_UNDECODED, &labels) {
            None => out.push(format!("{what}: no {TUNNEL_UNDECODED}{{reason=\"{reason}\"}}")),
            Some(v) if v != 0.0 => {
                out.push(format!("{what}: {TUNNEL_UNDECODED}{{reason=\"{reason}\"}} = {v}, not 0"))
            }
            Some(_) => {}
        }
    }
    out
}

/// The series of the analyzers' families (not the host's self-metrics), keyed by name and
/// labels without the device.
fn analyzer_series(samples: &[Sample]) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|s| {
            !s.name.starts_with("wasmtap_host_") && !s.name.starts_with("wasmtap_analyzer_")
        })
        .map(|s| {
            let labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "device")
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            (format!("{}{{{}}}", s.name, labels.join(",")), s.value)
        })
        .collect()
}

/// Every analyzer series whose value differs between the wrapped and the unwrapped replay.
fn series_differences(what: &str, wrapped: &[Sample], unwrapped: &[Sample]) -> Vec<String> {
    let (w, u) = (analyzer_series(wrapped), analyzer_series(unwrapped));
    let keys: BTreeSet<&String> = w.keys().chain(u.keys()).collect();
    let show = |v: Option<&f64>| v.map_or_else(|| "absent".to_owned(), f64::to_string);
    let mut out = Vec::new();
    for key in keys {
        let (a, b) = (w.get(key), u.get(key));
        if a != b {
            let diff = a.copied().unwrap_or(0.0) - b.copied().unwrap_or(0.0);
            out.push(format!(
                "{what}: {key}: wrapped {}, unwrapped {} ({diff:+})",
                show(a),
                show(b)
            ));
        }
    }
    if !w.keys().any(|k| k.contains("src_ip=")) {
        out.push(format!("{what}: the wrapped replay has no per-pair series"));
    }
    out
}

/// tshark's dissection of the wrapped capture against how it was built: as many frames, and
/// every frame that carries IP seen at its original addresses under `depth` outer IP headers.
fn dissection_failures(
    what: &str,
    file: &Path,
    dissect: &Dissect,
    inner: &[Option<(std::net::IpAddr, std::net::IpAddr)>],
    depth: usize,
) -> Vec<String> {
    let frames = tshark_inner_frames(file, None, dissect);
    let mut out = Vec::new();
    if frames.len() != inner.len() {
        out.push(format!("{what}: tshark reads {} frames, {} written", frames.len(), inner.len()));
    }
    let wrong: Vec<String> = frames
        .iter()
        .zip(inner)
        .enumerate()
        .filter_map(|(i, (seen, built))| {
            let built = (*built)?;
            let ok = seen.pair == Some(built) && seen.outer_ip_headers == depth;
            (!ok).then(|| {
                let (n, pair, under) = (i + 1, seen.pair, seen.outer_ip_headers);
                format!(
                    "frame {n}: tshark sees {pair:?} under {under} outer IP headers, \
                     built {} -> {} under {depth}",
                    built.0, built.1
                )
            })
        })
        .collect();
    if !wrong.is_empty() {
        out.push(format!(
            "{what}: tshark does not see {} frames as built, e.g.:\n  {}",
            wrong.len(),
            wrong.iter().take(5).cloned().collect::<Vec<_>>().join("\n  ")
        ));
    }
    out
}

/// The frames of the wrapped capture whose outer headers tshark finds wrong: a bad IPv4 header,
/// UDP or GRE checksum (checked at every layer; the inner TCP checksums are the capture's,
/// left to the NIC on transmit, so they are not), or a malformed or erroneous layer.
fn header_failures(what: &str, file: &Path, vxlan_ports: &[u16]) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file);
    for port in vxlan_ports {
        cmd.args(["-d", &format!("udp.port=={port},vxlan")]);
    }
    cmd.args(["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-Y"]).arg(
        "ip.checksum.status == 0 || udp.checksum.status == 0 || gre.checksum.status == 0 \
         || _ws.malformed || _ws.expert.severity >= error",
    );
    let bad = run_ok(&mut cmd, Duration::from_secs(120));
    let lines: Vec<&str> = bad.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "{what}: tshark finds {} frames with a bad checksum or a malformed layer, e.g.:\n  {}",
        lines.len(),
        lines.iter().take(5).copied().collect::<Vec<_>>().join("\n  ")
    )]
}

/// One line per counter, for the log: tshark's total and the host's on the wrapped capture,
/// then the same on the unwrapped frames, and the pairs tshark counts it for.
fn summary(what: &str, reference: &Reference, samples: &[Sample], base: &Baseline) -> String {
    let mut out = format!("\n{what}\n");
    let _ = writeln!(
        out,
        "  {:<44} {:>15} {:>15} {:>6}",
        "counter (tshark/host)", "wrapped", "unwrapped", "pairs"
    );
    for (metric, _) in FLAG_COUNTERS.iter().chain(&COUNTERS) {
        let both = |r: &Reference, s: &[Sample]| {
            format!("{}/{}", r.total(metric), count_metric(s, metric))
        };
        let _ = writeln!(
            out,
            "  {:<44} {:>15} {:>15} {:>6}",
            metric,
            both(reference, samples),
            both(&base.reference, &base.samples),
            reference.tshark(metric).len()
        );
    }
    out
}

/// Wraps the capture's `frames` in `layers` (outermost first) and checks the replay of the
/// result (see the module docs).
fn check_wrapped(test: &str, frames: Frames, layers: &[Layer]) {
    let Some(rec) = capture(test) else {
        return;
    };
    let started = Instant::now();
    let base = baseline(rec, frames);
    let dir = TempDir::new(&format!("tunnel-{test}"));
    let file = dir.join(&format!("{test}.pcap"));
    let wrapped = wrap_capture(&rec.file, &file, frames, layers);
    assert_eq!(wrapped.frames, base.frames, "{test}: frames wrapped vs unwrapped");
    let device = device_of(&file);
    let samples = parse_exposition(&replay_to_text(&file, &[], &dir));
    let ports: Vec<u16> =
        layers.iter().filter_map(Layer::vxlan_port).filter(|p| *p != VXLAN_IANA_PORT).collect();
    let dissect = Dissect::vxlan(&ports);

    let mut failures = base.failures.clone();
    failures.extend(header_failures(test, &file, &ports));
    failures.extend(dissection_failures(test, &file, &dissect, &wrapped.inner, layers.len()));
    failures.extend(tunnel_metric_failures(test, &samples, &device, &wrapped.headers));
    failures.extend(series_differences(test, &samples, &base.samples));
    let reference = Reference::read_inner(&device, &file, &dissect);
    failures.extend(against_tshark(test, &reference, &samples, &device));

    let built: Vec<String> = wrapped
        .headers
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{} {n}", k.label()))
        .collect();
    let without_ip = wrapped.inner.iter().filter(|pair| pair.is_none()).count();
    let mut report = summary(
        &format!(
            "{test}: {} frames ({without_ip} without IP inside), tunnel headers {}, {} s",
            wrapped.frames,
            built.join(", "),
            started.elapsed().as_secs()
        ),
        &reference,
        &samples,
        base,
    );
    let _ = write!(report, "  (unwrapped device {})", base.device);
    eprintln!("{report}");
    // The wrapped capture goes also when a comparison fails (WASMTAP_KEEP_TMP=1 keeps it):
    // the recorded capture stays in the target's tmp folder, and wrapping it again is
    // deterministic.
    drop(dir);
    assert!(
        failures.is_empty(),
        "{test}: {} differences ({} frames, {without_ip} without IP inside the tunnel):\n{}",
        failures.len(),
        wrapped.frames,
        failures.join("\n")
    );
}

// ------------------------------------------------------------------------------------------
// The kinds

/// Two Geneve options: 4 and 8 bytes of data, 20 bytes in all, to be skipped by length.
fn geneve_options() -> Vec<GeneveOption> {
    vec![
        GeneveOption { class: 0x0102, kind: 0x01, data: vec![0xde, 0xad, 0xbe, 0xef] },
        GeneveOption { class: 0xfff0, kind: 0x7f, data: (1..=8).collect() },
    ]
}

fn gre(underlay: Underlay, payload: GrePayload, key: Option<u32>, sequence: bool) -> Layer {
    Layer::Gre { underlay, payload, checksum: false, key, sequence }
}

macro_rules! root_test {
    ($name:ident, $frames:expr, $layers:expr) => {
        #[test]
        #[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
        fn $name() {
            check_wrapped(stringify!($name), $frames, &$layers);
        }
    };
}

root_test!(
    vxlan_4789_over_ipv4,
    Frames::All,
    [Layer::Vxlan { underlay: Underlay::v4(1), port: VXLAN_IANA_PORT, vni: 4001 }]
);
root_test!(
    vxlan_8472_over_ipv6,
    Frames::All,
    [Layer::Vxlan { underlay: Underlay::v6(2), port: VXLAN_LINUX_PORT, vni: 4002 }]
);
root_test!(
    vxlan_8472_over_ipv4,
    Frames::All,
    [Layer::Vxlan { underlay: Underlay::v4(3), port: VXLAN_LINUX_PORT, vni: 4003 }]
);
root_test!(
    geneve_over_ipv4,
    Frames::All,
    [Layer::Geneve { underlay: Underlay::v4(4), vni: 4004, options: vec![] }]
);
root_test!(
    geneve_with_options_over_ipv6,
    Frames::All,
    [Layer::Geneve { underlay: Underlay::v6(5), vni: 4005, options: geneve_options() }]
);
root_test!(gre_ipv4, Frames::Ipv4, [gre(Underlay::v4(6), GrePayload::Ip, None, false)]);
root_test!(
    gre_ipv4_key_sequence,
    Frames::Ipv4,
    [gre(Underlay::v4(7), GrePayload::Ip, Some(5007), true)]
);
root_test!(gre_ipv6, Frames::Ipv6, [gre(Underlay::v4(8), GrePayload::Ip, None, false)]);
root_test!(
    gre_ipv6_key_sequence_over_ipv6,
    Frames::Ipv6,
    [gre(Underlay::v6(9), GrePayload::Ip, Some(5009), true)]
);
root_test!(gre_ethernet, Frames::All, [gre(Underlay::v4(10), GrePayload::Ethernet, None, false)]);
root_test!(
    gre_ethernet_key_sequence,
    Frames::All,
    [gre(Underlay::v4(11), GrePayload::Ethernet, Some(5011), true)]
);
root_test!(
    gre_ethernet_key_only,
    Frames::All,
    [gre(Underlay::v6(12), GrePayload::Ethernet, Some(5012), false)]
);
root_test!(
    gre_ip_checksum_key_sequence,
    Frames::Ip,
    [Layer::Gre {
        underlay: Underlay::v4(13),
        payload: GrePayload::Ip,
        checksum: true,
        key: Some(5013),
        sequence: true
    }]
);
root_test!(
    gre_ethernet_checksum_sequence,
    Frames::All,
    [Layer::Gre {
        underlay: Underlay::v4(14),
        payload: GrePayload::Ethernet,
        checksum: true,
        key: None,
        sequence: true
    }]
);
root_test!(ipv4_in_ipv4, Frames::Ipv4, [Layer::IpInIp { underlay: Underlay::v4(15) }]);
root_test!(ipv6_in_ipv4, Frames::Ipv6, [Layer::IpInIp { underlay: Underlay::v4(16) }]);
root_test!(ip_in_ipv6, Frames::Ip, [Layer::IpInIp { underlay: Underlay::v6(17) }]);
root_test!(
    nested_vxlan_in_gre,
    Frames::All,
    [
        gre(Underlay::v4(18), GrePayload::Ip, Some(5018), false),
        Layer::Vxlan { underlay: Underlay::v4(19), port: VXLAN_IANA_PORT, vni: 4019 },
    ]
);
root_test!(
    nested_ip_in_ip_in_geneve,
    Frames::Ip,
    [
        Layer::Geneve { underlay: Underlay::v6(20), vni: 4020, options: geneve_options() },
        Layer::IpInIp { underlay: Underlay::v4(21) },
    ]
);
root_test!(
    nested_three_deep_geneve_in_vxlan_in_gre,
    Frames::All,
    [
        gre(Underlay::v6(22), GrePayload::Ethernet, Some(5022), true),
        Layer::Vxlan { underlay: Underlay::v4(23), port: VXLAN_LINUX_PORT, vni: 4023 },
        Layer::Geneve { underlay: Underlay::v4(24), vni: 4024, options: vec![] },
    ]
);
