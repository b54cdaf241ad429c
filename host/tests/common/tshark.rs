//! tshark, the tests' oracle: the fields of the frames of a capture matching a display filter
//! ([`tshark_fields`]), counts of such frames in total and per address pair, and [`Totals`],
//! the counts that tshark and the default analyzers must agree on.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::exposition::{Sample, as_count, has_metric, sum_metric};
use super::process::{require_tools, run_ok};

/// `tshark -r FILE [-Y FILTER] -T fields -e f1 -e f2 ...`, one Vec per matching frame, in
/// capture order.
pub fn tshark_fields(file: &Path, filter: Option<&str>, fields: &[&str]) -> Vec<Vec<String>> {
    require_tools(&["tshark"]);
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file);
    if let Some(f) = filter {
        cmd.args(["-Y", f]);
    }
    cmd.args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = run_ok(&mut cmd, Duration::from_secs(120));
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The number of frames in `file` matching the display filter (all frames for `None`).
pub fn tshark_count(file: &Path, filter: Option<&str>) -> u64 {
    tshark_fields(file, filter, &["frame.number"]).len() as u64
}

/// The address in columns `v4` (`ip.*`) or `v6` (`ipv6.*`) of a tshark row.
pub fn row_addr(row: &[String], v4: usize, v6: usize) -> IpAddr {
    let get = |i: usize| row.get(i).map(String::as_str).unwrap_or("");
    let s = if get(v4).is_empty() { get(v6) } else { get(v4) };
    s.parse().unwrap_or_else(|e| panic!("tshark address {s:?} in {row:?}: {e}"))
}

/// Frames matching `filter`, counted per (source, destination) address (IPv4 or IPv6).
pub fn tshark_count_by_pair(file: &Path, filter: &str) -> BTreeMap<(IpAddr, IpAddr), u64> {
    let rows = tshark_fields(file, Some(filter), &["ip.src", "ipv6.src", "ip.dst", "ipv6.dst"]);
    let mut out = BTreeMap::new();
    for row in rows {
        *out.entry((row_addr(&row, 0, 1), row_addr(&row, 2, 3))).or_insert(0) += 1;
    }
    out
}

/// The counts that tshark and the default analyzers must agree on.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Totals {
    pub frames: u64,
    pub resets: u64,
    pub dont_fragment: u64,
    pub wscale_options: u64,
}

impl Totals {
    /// The default analyzers' counts, read from an exposition.
    pub fn from_exposition(samples: &[Sample]) -> Totals {
        for name in [
            "wasmtap_packets_total",
            "wasmtap_tcp_resets_total",
            "wasmtap_ip_dont_fragment_total",
            "wasmtap_tcp_window_scale_options_total",
        ] {
            assert!(has_metric(samples, name), "the exposition has no {name} sample");
        }
        let count = |name: &str| as_count(sum_metric(samples, name), name);
        Totals {
            frames: count("wasmtap_packets_total"),
            resets: count("wasmtap_tcp_resets_total"),
            dont_fragment: count("wasmtap_ip_dont_fragment_total"),
            wscale_options: count("wasmtap_tcp_window_scale_options_total"),
        }
    }

    /// tshark's counts of the same things in `file`.
    pub fn from_tshark(file: &Path) -> Totals {
        Totals {
            frames: tshark_count(file, None),
            resets: tshark_count(file, Some("tcp.flags.reset==1")),
            dont_fragment: tshark_count(file, Some("ip.flags.df==1")),
            wscale_options: tshark_count(file, Some("tcp.options.wscale.shift")),
        }
    }
}

/// How tshark is to dissect a capture with tunnels in it: the UDP ports to decode as VXLAN
/// besides 4789, which it knows (`-d udp.port==8472,vxlan` for the Linux kernel's default).
#[derive(Debug, Clone, Default)]
pub struct Dissect {
    pub vxlan_ports: Vec<u16>,
}

impl Dissect {
    /// VXLAN on `ports` as well as on 4789.
    pub fn vxlan(ports: &[u16]) -> Dissect {
        Dissect { vxlan_ports: ports.to_vec() }
    }

    fn args(&self) -> Vec<String> {
        self.vxlan_ports
            .iter()
            .flat_map(|p| ["-d".to_owned(), format!("udp.port=={p},vxlan")])
            .collect()
    }
}

/// One frame as tshark dissects it, reduced to its innermost IP header: the one the host's
/// records describe. A header quoted inside an ICMP error does not count: the host reads the
/// ICMP packet's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerFrame {
    /// The innermost source and destination, `None` for a frame without IP.
    pub pair: Option<(IpAddr, IpAddr)>,
    /// The innermost header is IPv4 with don't-fragment set.
    pub dont_fragment: bool,
    /// How many IP headers carry the innermost one (0 for a frame that is not tunnelled).
    pub outer_ip_headers: usize,
}

/// The frames of `file` matching `filter` (all for `None`), each reduced to its innermost IP
/// header, in capture order.
pub fn tshark_inner_frames(
    file: &Path,
    filter: Option<&str>,
    dissect: &Dissect,
) -> Vec<InnerFrame> {
    require_tools(&["tshark"]);
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file).args(dissect.args());
    if let Some(f) = filter {
        cmd.args(["-Y", f]);
    }
    cmd.args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]);
    for f in ["frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.flags.df"] {
        cmd.args(["-e", f]);
    }
    let out = run_ok(&mut cmd, Duration::from_secs(300));
    out.lines().filter(|l| !l.is_empty()).map(inner_frame).collect()
}

/// Reads one row of [`tshark_inner_frames`]: the protocol stack says which IP header is the
/// innermost (the last `ip` or `ipv6` before any `icmp`/`icmpv6`) and its index among the
/// headers of its version; the address and DF lists are indexed by it.
fn inner_frame(line: &str) -> InnerFrame {
    let cols: Vec<&str> = line.split('\t').collect();
    let col = |i: usize| -> Vec<&str> {
        cols.get(i).map(|c| c.split(',').filter(|s| !s.is_empty()).collect()).unwrap_or_default()
    };
    let (mut v4, mut v6, mut last) = (0usize, 0usize, None);
    for layer in cols.first().copied().unwrap_or("").split(':') {
        match layer {
            "icmp" | "icmpv6" => break,
            "ip" => {
                v4 += 1;
                last = Some((4, v4 - 1));
            }
            "ipv6" => {
                v6 += 1;
                last = Some((6, v6 - 1));
            }
            _ => {}
        }
    }
    let addr = |list: Vec<&str>, at: usize| -> IpAddr {
        let s = list.get(at).unwrap_or_else(|| panic!("tshark row {line:?}: no address {at}"));
        s.parse().unwrap_or_else(|e| panic!("tshark address {s:?} in {line:?}: {e}"))
    };
    match last {
        None => InnerFrame { pair: None, dont_fragment: false, outer_ip_headers: 0 },
        Some((4, at)) => InnerFrame {
            pair: Some((addr(col(1), at), addr(col(2), at))),
            dont_fragment: col(5).get(at).is_some_and(|d| *d == "1" || *d == "True"),
            outer_ip_headers: v4 + v6 - 1,
        },
        Some((_, at)) => InnerFrame {
            pair: Some((addr(col(3), at), addr(col(4), at))),
            dont_fragment: false,
            outer_ip_headers: v4 + v6 - 1,
        },
    }
}

/// Frames matching `filter` and `keep`, counted per innermost (source, destination).
pub fn tshark_count_by_inner_pair(
    file: &Path,
    filter: &str,
    dissect: &Dissect,
    keep: impl Fn(&InnerFrame) -> bool,
) -> BTreeMap<(IpAddr, IpAddr), u64> {
    let mut out = BTreeMap::new();
    for f in tshark_inner_frames(file, Some(filter), dissect) {
        if let Some(pair) = f.pair.filter(|_| keep(&f)) {
            *out.entry(pair).or_insert(0) += 1;
        }
    }
    out
}
