//! Tunnels through `wasmtap replay`, end to end, on hand-built captures whose expected counts
//! come from how each frame was built: bad tunnel headers counted by reason and never analysed
//! as TCP, `--vxlan-port` deciding what is opened, and pod attribution by the inner addresses.
//! (Real traffic in tunnels: `root_vxlan`, `root_tunnel_wrapped`; the corpus: `corpus_tunnels`.)

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use common::frames::tcp_reset;
use common::*;
use etherparse::{IpNumber, PacketBuilder};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use serde_json::json;

/// The pods, inside the tunnels.
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 7);
/// The nodes, outside.
const NODE_A: [u8; 4] = [192, 0, 2, 1];
const NODE_B: [u8; 4] = [192, 0, 2, 2];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
/// The VXLAN I flag: the VNI is valid.
const VXLAN_I: u8 = 0x08;
/// GRE's key-present flag.
const GRE_KEY: u8 = 0x20;
/// Where the inner TCP header starts in [`in_vxlan`]'s frames: outer Ethernet, IPv4, UDP, VXLAN,
/// inner Ethernet, IPv4.
const INNER_TCP_AT: usize = 14 + 20 + 8 + 8 + 14 + 20;

/// A reset from pod A to pod B, in an Ethernet frame.
fn pod_reset() -> Vec<u8> {
    tcp_reset(POD_A, POD_B, 40000, 8080)
}

/// `payload` in UDP from node A to node B, to `port`.
fn udp(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(NODE_A, NODE_B, 64)
        .udp(51000, port)
        .write(&mut v, payload)
        .expect("a test frame");
    v
}

/// `payload` directly in IPv4 from node A to node B with protocol `proto`.
fn ip(proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(NODE_A, NODE_B, 64)
        .write(&mut v, IpNumber(proto), payload)
        .expect("a test frame");
    v
}

/// An Ethernet frame in VXLAN with `flags` and `vni`, to `port`.
fn vxlan_with(flags: u8, vni: u32, port: u16, inner: &[u8]) -> Vec<u8> {
    let [_, a, b, c] = vni.to_be_bytes();
    udp(port, &[&[flags, 0, 0, 0, a, b, c, 0][..], inner].concat())
}

fn in_vxlan(inner: &[u8], port: u16) -> Vec<u8> {
    vxlan_with(VXLAN_I, 42, port, inner)
}

/// Frames with their captured lengths (a cut frame keeps its length on the wire).
fn write_capture(path: &Path, frames: &[(Vec<u8>, usize)]) {
    let file = File::create(path).expect("create the capture");
    let mut w = PcapWriter::new(BufWriter::new(file)).expect("pcap header");
    for (i, (frame, caplen)) in frames.iter().enumerate() {
        let time = Duration::from_secs(1_700_000_000) + Duration::from_millis(i as u64);
        let len = u32::try_from(frame.len()).expect("small frame");
        w.write_packet(&PcapPacket::new(time, len, &frame[..*caplen])).expect("pcap record");
    }
}

fn whole(frames: Vec<Vec<u8>>) -> Vec<(Vec<u8>, usize)> {
    frames.into_iter().map(|f| (f.clone(), f.len())).collect()
}

/// The value of the one sample of `name` whose labels include `labels`, 0 if none.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect();
    assert!(matching.len() <= 1, "{name}{labels:?} matches {matching:?}");
    matching.first().map_or(0.0, |s| s.value)
}

/// Resets per (src_ip, dst_ip).
fn resets(samples: &[Sample]) -> BTreeMap<(String, String), f64> {
    samples
        .iter()
        .filter(|s| s.name == "wasmtap_tcp_resets_total")
        .map(|s| ((s.labels["src_ip"].clone(), s.labels["dst_ip"].clone()), s.value))
        .collect()
}

#[test]
fn bad_tunnels_are_counted_by_reason_and_never_analysed() {
    let dir = TempDir::new("tunnel-bad-input");
    let file = dir.join("bad.pcap");
    let pod = pod_reset();
    let mut frames = Vec::new();
    // 5 good ones: read as VXLAN, analysed.
    frames.extend(whole(vec![in_vxlan(&pod, 8472); 5]));
    // 3 without the I flag: malformed, not read.
    frames.extend(whole(vec![vxlan_with(0, 42, 4789, &pod); 3]));
    // 2 whose inner IPv4 length runs past the frame: read, malformed.
    let mut long = pod.clone();
    long[16..18].copy_from_slice(&1400u16.to_be_bytes());
    frames.extend(whole(vec![in_vxlan(&long, 4789); 2]));
    // 4 cut inside the inner TCP header's fixed part: read, truncated.
    for cut in [0, 5, 12, 19] {
        let f = in_vxlan(&pod, 4789);
        frames.push((f, INNER_TCP_AT + cut));
    }
    // 2 in GRE version 1: unsupported, not read.
    let gre_v1 = [&[GRE_KEY, 1, 0x08, 0x00, 0, 0, 0, 1][..], &pod[14..]].concat();
    frames.extend(whole(vec![ip(47, &gre_v1); 2]));
    // 1 four tunnels deep: three read, too deep.
    let mut deep = pod.clone();
    for _ in 0..4 {
        deep = in_vxlan(&deep, 4789);
    }
    frames.push((deep.clone(), deep.len()));
    write_capture(&file, &frames);

    let samples = parse_exposition(&replay_to_text(&file, &[], &dir));
    let device = ("device", "bad.pcap");
    let read = |kind: &str| {
        value(&samples, "wasmtap_host_tunnel_packets_total", &[device, ("kind", kind)])
    };
    let undecoded = |reason: &str| {
        value(&samples, "wasmtap_host_tunnel_undecoded_total", &[device, ("reason", reason)])
    };
    assert_eq!(read("vxlan"), (5 + 2 + 4 + 3) as f64);
    for kind in ["geneve", "gre", "ipv4_in_ip", "ipv6_in_ip"] {
        assert_eq!(read(kind), 0.0, "{kind}");
    }
    assert_eq!(undecoded("malformed"), (3 + 2) as f64);
    assert_eq!(undecoded("truncated"), 4.0);
    assert_eq!(undecoded("unsupported"), 2.0);
    assert_eq!(undecoded("too_deep"), 1.0);
    // Only the 5 good frames reach the TCP analysis; every frame is counted.
    let pair = (POD_A.to_string(), POD_B.to_string());
    assert_eq!(resets(&samples), BTreeMap::from([(pair, 5.0)]));
    assert_eq!(value(&samples, "wasmtap_packets_total", &[device]), frames.len() as f64);
}

#[test]
fn the_vxlan_port_flag_decides_what_is_opened() {
    let dir = TempDir::new("tunnel-vxlan-port");
    let file = dir.join("vxlan-8472.pcap");
    write_capture(&file, &whole(vec![in_vxlan(&pod_reset(), 8472); 3]));
    let pair = (POD_A.to_string(), POD_B.to_string());
    let device = ("device", "vxlan-8472.pcap");
    for (flags, opened) in [
        (&[][..], true),
        (&["--vxlan-port", "8472"][..], true),
        (&["--vxlan-port", "4789"][..], false),
        (&["--vxlan-port", "none"][..], false),
    ] {
        let samples = parse_exposition(&replay_to_text(&file, flags, &dir));
        let vxlan =
            value(&samples, "wasmtap_host_tunnel_packets_total", &[device, ("kind", "vxlan")]);
        if opened {
            assert_eq!(vxlan, 3.0, "{flags:?}");
            assert_eq!(resets(&samples), BTreeMap::from([(pair.clone(), 3.0)]), "{flags:?}");
        } else {
            assert_eq!(vxlan, 0.0, "{flags:?}");
            assert!(resets(&samples).is_empty(), "{flags:?}: UDP between nodes has no resets");
        }
    }
    let r = host_replay(
        &[file.as_os_str(), "--vxlan-port".as_ref(), "6081".as_ref()],
        Duration::from_secs(30),
    );
    let failed = r.status.is_some_and(|s| !s.success());
    assert!(failed && r.stderr.contains("--vxlan-port 6081"), "{}", r.stderr);
}

#[test]
fn pods_are_attributed_by_the_inner_addresses() {
    let dir = TempDir::new("tunnel-pods");
    let file = dir.join("overlay.pcap");
    write_capture(&file, &whole(vec![ip(4, &pod_reset()[14..]); 2]));
    let pods = dir.join("pods.json");
    let pod = |name: &str, addr: Ipv4Addr| {
        json!({
            "namespace": "shop",
            "name": name,
            "uid": format!("{name}-uid"),
            "workload": name.trim_end_matches("-0"),
            "addresses": [addr.to_string()],
            "interface": null,
        })
    };
    let table = json!({
        "node_addresses": [Ipv4Addr::from(NODE_A).to_string()],
        "pods": [pod("cart-0", POD_A), pod("db-0", POD_B)],
    });
    std::fs::write(&pods, table.to_string()).expect("write the pod table");
    let samples =
        parse_exposition(&replay_to_text(&file, &["--pods", pods.to_str().expect("utf-8")], &dir));
    let series: Vec<&Sample> =
        samples.iter().filter(|s| s.name == "wasmtap_tcp_resets_total").collect();
    assert_eq!(series.len(), 1, "{series:?}");
    let l = &series[0].labels;
    assert_eq!(
        (l["src_ip"].as_str(), l["src_pod"].as_str(), l["dst_ip"].as_str(), l["dst_pod"].as_str()),
        (POD_A.to_string().as_str(), "cart-0", POD_B.to_string().as_str(), "db-0")
    );
    assert_eq!((l["src_workload"].as_str(), l["dst_namespace"].as_str()), ("cart", "shop"));
    assert_eq!(series[0].value, 2.0);
}
