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
