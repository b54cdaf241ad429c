//! A million-packet capture for the hostile suite's memory bound, and what tshark counts in it,
//! both cached across runs.
//!
//! Input: `bench/synth_pcap.py` (deterministic: the same seed gives the same bytes) and tshark.
//! Output: [`capture`], the path of `synth-1m.pcap` (1,000,000 TCP packets in 19,389 flows,
//! each its own address pair) under Cargo's per-test temporary folder, with tshark's counts:
//! frames, and per (source, destination) pair the RSTs, IPv4 DF packets and window-scale
//! options. Generating takes about 5 s and counting about 25 s; both are kept (`synth-1m.pcap`
//! and `synth-1m.tshark`, which records the capture's size with the counts) and reused while
//! the capture's size still matches.
//!
//! The pairs outnumber the default series cap (10,000), so a per-pair family of the default
//! analyzers exports some of them; every series it exports must then hold tshark's count for
//! its pair (a pair's series starts with its first update or never, so it misses none).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{live::synth_pcap, require_tools, run_ok};

/// Packets in the capture: the issue's "≥ 1M".
pub const PACKETS: u64 = 1_000_000;

/// A count per (source, destination) address pair.
pub type PerPair = BTreeMap<(IpAddr, IpAddr), u64>;

/// What tshark counts in the capture.
#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    pub frames: u64,
    /// `tcp.flags.reset == 1`, `ip.flags.df == 1`, `tcp.options.wscale.shift` present.
    pub resets: PerPair,
    pub dont_fragment: PerPair,
    pub wscale_options: PerPair,
}

/// The capture and what tshark counts in it.
pub struct Million {
    pub path: PathBuf,
    pub counts: Counts,
}

/// The cached capture and counts, made if missing or stale.
pub fn capture() -> Million {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile-million");
    std::fs::create_dir_all(&dir).expect("creating the capture's folder");
    let path = dir.join("synth-1m.pcap");
    let record = dir.join("synth-1m.tshark");
    let size = || std::fs::metadata(&path).map(|m| m.len()).ok();
    if let (Some(size), Ok(text)) = (size(), std::fs::read_to_string(&record))
        && let Some(counts) = parse_record(&text, size)
    {
        return Million { path, counts };
    }
    // Written aside and renamed, so an interrupted run leaves no half capture behind.
    let part = dir.join(format!("part-{}", std::process::id()));
    std::fs::create_dir_all(&part).expect("mkdir");
    let made = synth_pcap(&part, "synth-1m", PACKETS);
    std::fs::rename(&made, &path).expect("moving the capture into place");
    let _ = std::fs::remove_dir_all(&part);
    let counts = tshark_counts(&path);
    std::fs::write(&record, format_record(&counts, size().expect("the capture's size")))
        .expect("writing tshark's counts");
    Million { path, counts }
}

/// The cache file: `size frames`, then `R|D|W src dst count` per pair.
fn format_record(c: &Counts, size: u64) -> String {
    let mut out = format!("{size} {}\n", c.frames);
    for (tag, map) in [("R", &c.resets), ("D", &c.dont_fragment), ("W", &c.wscale_options)] {
        for ((src, dst), n) in map {
            let _ = writeln!(out, "{tag} {src} {dst} {n}");
        }
    }
    out
}

/// The counts in `text` if it records a capture of `size` bytes.
fn parse_record(text: &str, size: u64) -> Option<Counts> {
    let mut lines = text.lines();
    let head: Vec<u64> =
        lines.next()?.split_whitespace().map(|w| w.parse().ok()).collect::<Option<_>>()?;
    let [recorded, frames] = head[..] else { return None };
    if recorded != size {
        return None;
    }
    let mut c = Counts { frames, ..Counts::default() };
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [tag, src, dst, n] = f[..] else { return None };
        let map = match tag {
            "R" => &mut c.resets,
            "D" => &mut c.dont_fragment,
            "W" => &mut c.wscale_options,
            _ => return None,
        };
        map.insert((src.parse().ok()?, dst.parse().ok()?), n.parse().ok()?);
    }
    Some(c)
}

/// Frames, and RSTs, IPv4 DF and window-scale options per address pair, in `file`: the
/// fields the other tests filter on with `Totals::from_tshark`, in one tshark pass.
pub fn tshark_counts(file: &Path) -> Counts {
    require_tools(&["tshark"]);
    let fields = [
        "frame.number",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "tcp.flags.reset",
        "ip.flags.df",
        "tcp.options.wscale.shift",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file);
    cmd.args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = run_ok(&mut cmd, Duration::from_secs(600));
    let set = |v: &str| matches!(v, "1" | "True");
    let mut c = Counts::default();
    for line in out.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        c.frames += 1;
        let pick = |v4: &str, v6: &str| -> Option<IpAddr> {
            if v4.is_empty() { v6.parse().ok() } else { v4.parse().ok() }
        };
        let (Some(src), Some(dst)) = (pick(get(1), get(2)), pick(get(3), get(4))) else {
            continue;
        };
        let add = |map: &mut PerPair, yes: bool| {
            if yes {
                *map.entry((src, dst)).or_insert(0) += 1;
            }
        };
        add(&mut c.resets, set(get(5)));
        add(&mut c.dont_fragment, set(get(6)));
        add(&mut c.wscale_options, !get(7).is_empty());
    }
    c
}
