//! Shared by the tcp-analysis tests (`root_tcp_analysis`, `tcp_edge_cases`, `flow_bound`,
//! `root_interfaces`): the analyzer's per-segment counters paired with the tshark fields they
//! count, and their comparison with tshark's reading of the same capture, as tables; and a
//! live host's counts of one interface against tshark's reading of a tcpdump of it
//! ([`Reference`], `root_pods`).
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use crate::common::live::{DeviceCounts, device_samples};
use crate::common::{
    Dissect, Sample, as_count, sum_by_pair, sum_metric, tshark_count, tshark_count_by_inner_pair,
    tshark_count_by_pair,
};

/// The tcp-analysis analyzer's per-segment counters and the tshark field each one counts
/// (frames on which tshark shows the field; see the analyzer's crate docs).
pub const COUNTERS: [(&str, &str); 6] = [
    ("wasmtap_tcp_retransmissions_total", "tcp.analysis.retransmission"),
    ("wasmtap_tcp_fast_retransmissions_total", "tcp.analysis.fast_retransmission"),
    ("wasmtap_tcp_spurious_retransmissions_total", "tcp.analysis.spurious_retransmission"),
    ("wasmtap_tcp_out_of_order_total", "tcp.analysis.out_of_order"),
    ("wasmtap_tcp_duplicate_acks_total", "tcp.analysis.duplicate_ack"),
    ("wasmtap_tcp_zero_window_total", "tcp.analysis.zero_window"),
];

/// Retransmissions and out-of-order segments: a segment that does not advance the sequence is
/// one or the other, by timing.
pub const RETRANSMISSIONS: &str = COUNTERS[0].0;
pub const OUT_OF_ORDER: &str = COUNTERS[3].0;
/// Duplicate ACKs: see [`ORDER_FREE`] for their one dependence on the other direction.
pub const DUPLICATE_ACKS: &str = COUNTERS[4].0;

/// The counters that depend only on the segments of their own direction, in order: any two
/// captures of the same frames agree on them exactly, but for one rule of duplicate ACKs. A
/// bare ACK right after a keep-alive from the other side is a keep-alive ACK, not a duplicate
/// ACK (the analyzer's crate docs, as in Wireshark), and two packet sockets can interleave the
/// two directions differently: each keep-alive of the other side can move one ACK across, so
/// duplicate ACKs per (src, dst) may differ by tshark's keep-alives from dst to src
/// ([`Reference::keep_alives_to`]). Linux sends its zero-window probes as such keep-alives
/// (`seq = snd_una - 1`, no payload), so the slow reader of the traffic gives some.
pub const ORDER_FREE: [&str; 2] =
    ["wasmtap_tcp_duplicate_acks_total", "wasmtap_tcp_zero_window_total"];

/// How far the other four counters of one (src, dst) pair may be from tshark's, where `n` is
/// tshark's count of its retransmitted and out-of-order segments: 4, or a fifth of `n` if that
/// is more. No two packet sockets see a frame at the same time: each stamps a TCP segment with
/// its own clock reading (the skb carries TCP's monotonic departure time, which af_packet does
/// not report), so two tcpdumps on one veth differ by up to ~35 µs per frame, and the two
/// directions' frames can interleave differently. tshark calls a segment that does not advance
/// the sequence out-of-order if it comes less than the initial RTT (tens of µs on a veth)
/// after the highest one, and a retransmission fast or spurious by what the other direction
/// has acknowledged so far; so a few segments change category between two captures of the
/// same traffic (up to three seen on a busy machine). Every such segment is still one of
/// them: the sum of retransmissions and out-of-order segments per pair is compared within
/// [`NOT_ADVANCING_ALLOWANCE`]. The host's replay of each capture equals tshark's counts
/// exactly.
pub fn timing_allowance(n: u64) -> u64 {
    (n / 5).max(4)
}

/// How far the sum of retransmissions and out-of-order segments of one (src, dst) pair may be
/// from tshark's on another packet socket's capture of the same interface: 1. A segment's
/// category also depends on the other direction (an ACK beyond a gap, a window that closed),
/// and the two directions' frames can interleave differently on two sockets, so a segment can
/// be flagged on one and not on the other: a fresh-clone run of `root_interfaces` once saw the
/// host count 27 retransmissions and 10 out-of-order on a pair where tshark's capture had 26
/// and 10, every other counter and every frame count equal.
pub const NOT_ADVANCING_ALLOWANCE: u64 = 1;

/// The analyzer's flow-eviction counter (no labels).
pub const EVICTIONS: &str = "wasmtap_tcp_analysis_flows_evicted_total";

/// One counter's total, per tshark and per the host.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: &'static str,
    pub field: &'static str,
    pub tshark: u64,
    pub host: u64,
}

impl Row {
    pub fn diff(&self) -> i64 {
        self.host as i64 - self.tshark as i64
    }
}

/// Totals of every counter in [`COUNTERS`]: tshark's count of frames showing the field in
/// `file`, beside the sum of the metric over all series of `samples`.
pub fn compare_totals(file: &Path, samples: &[Sample]) -> Vec<Row> {
    COUNTERS
        .iter()
        .map(|&(metric, field)| Row {
            metric,
            field,
            tshark: tshark_count(file, Some(field)),
            host: as_count(sum_metric(samples, metric), metric),
        })
        .collect()
}

/// Per (src_ip, dst_ip): tshark's count of frames showing `field`, and the host's `metric`,
/// over the union of the pairs either one reports (missing = 0).
pub fn compare_by_pair(
    file: &Path,
    samples: &[Sample],
    metric: &str,
    field: &str,
) -> BTreeMap<(IpAddr, IpAddr), (u64, u64)> {
    let tshark = tshark_count_by_pair(file, field);
    let host = sum_by_pair(samples, metric);
    let keys: BTreeSet<_> = tshark.keys().chain(host.keys()).copied().collect();
    keys.into_iter()
        .map(|k| (k, (tshark.get(&k).copied().unwrap_or(0), host.get(&k).copied().unwrap_or(0))))
        .filter(|(_, (t, h))| *t != 0 || *h != 0)
        .collect()
}

/// The comparison as a table, with the allowed difference of each row.
pub fn format_table(title: &str, rows: &[Row], allowed: impl Fn(&Row) -> u64) -> String {
    let mut out = format!("\n{title}\n");
    let _ = writeln!(
        out,
        "  {:<38} {:>9} {:>9} {:>7} {:>8}  verdict",
        "tshark field", "tshark", "host", "diff", "allowed"
    );
    for r in rows {
        let ok = r.diff().unsigned_abs() <= allowed(r);
        let _ = writeln!(
            out,
            "  {:<38} {:>9} {:>9} {:>+7} {:>8}  {}",
            r.field,
            r.tshark,
            r.host,
            r.diff(),
            allowed(r),
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    out
}

/// Per-pair rows as a table (one metric); `allowed` is a pair's allowance, given its tshark count.
pub fn format_pairs(
    title: &str,
    pairs: &BTreeMap<(IpAddr, IpAddr), (u64, u64)>,
    allowed: impl Fn((IpAddr, IpAddr), u64) -> u64,
) -> String {
    let mut out = format!("\n{title}\n");
    let _ = writeln!(
        out,
        "  {:<42} {:>9} {:>9} {:>7} {:>8}  verdict",
        "src_ip -> dst_ip", "tshark", "host", "diff", "allowed"
    );
    for ((src, dst), (t, h)) in pairs {
        let diff = *h as i64 - *t as i64;
        let allowed = allowed((*src, *dst), *t);
        let ok = diff.unsigned_abs() <= allowed;
        let _ = writeln!(
            out,
            "  {:<42} {:>9} {:>9} {:>+7} {:>8}  {}",
            format!("{src} -> {dst}"),
            t,
            h,
            diff,
            allowed,
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    out
}

/// The keep-alives of [`ORDER_FREE`]'s rule.
const KEEP_ALIVE: &str = "tcp.analysis.keep_alive";

/// The header-flags analyzer's per-pair counters and the tshark filter each one counts: they
/// depend on each frame alone, so any two captures of the same frames agree on them exactly.
pub const FLAG_COUNTERS: [(&str, &str); 4] = [
    ("wasmtap_tcp_resets_total", "tcp.flags.reset==1"),
    ("wasmtap_ip_dont_fragment_total", "ip.flags.df==1"),
    ("wasmtap_tcp_window_scale_options_total", "tcp.options.wscale.shift"),
    ("wasmtap_tcp_data_segments_total", "tcp.len > 0"),
];

/// The header-flags analyzer's don't-fragment counter.
pub const DONT_FRAGMENT: &str = FLAG_COUNTERS[1].0;

/// Frames showing a tshark field, per (src, dst).
pub type ByPair = BTreeMap<(IpAddr, IpAddr), u64>;

/// tshark's reading of a capture of one interface that a live host captured too: its frames
/// and, for every counter of [`FLAG_COUNTERS`] and [`COUNTERS`], the frames showing its field
/// per (src, dst); and the host's counts of that interface against them.
pub struct Reference {
    device: String,
    frames: u64,
    counts: Vec<(&'static str, ByPair)>,
    /// tshark's keep-alives per (src, dst) (see [`ORDER_FREE`]).
    keep_alives: ByPair,
}

impl Reference {
    pub fn read(device: &str, file: &Path) -> Reference {
        let counts = FLAG_COUNTERS
            .iter()
            .chain(&COUNTERS)
            .map(|&(metric, field)| (metric, tshark_count_by_pair(file, field)))
            .collect();
        let keep_alives = tshark_count_by_pair(file, KEEP_ALIVE);
        Reference { device: device.into(), frames: tshark_count(file, None), counts, keep_alives }
    }

    /// The same for a capture with tunnels in it: every frame counts for its innermost
    /// addresses, and don't-fragment is the innermost header's (`ip.flags.df==1` matches a
    /// frame whose outer header has it, as a VXLAN underlay's often does).
    pub fn read_inner(device: &str, file: &Path, dissect: &Dissect) -> Reference {
        let counts = FLAG_COUNTERS
            .iter()
            .chain(&COUNTERS)
            .map(|&(metric, field)| {
                let by_pair = if metric == DONT_FRAGMENT {
                    tshark_count_by_inner_pair(file, "ip", dissect, |f| f.dont_fragment)
                } else {
                    tshark_count_by_inner_pair(file, field, dissect, |_| true)
                };
                (metric, by_pair)
            })
            .collect();
        let keep_alives = tshark_count_by_inner_pair(file, KEEP_ALIVE, dissect, |_| true);
        Reference { device: device.into(), frames: tshark_count(file, None), counts, keep_alives }
    }

    /// tshark's keep-alives sent to `src` by `dst`: how many of `src`'s ACKs to `dst` may be
    /// duplicate ACKs on one capture and keep-alive ACKs on another (see [`ORDER_FREE`]).
    pub fn keep_alives_to(&self, (src, dst): (IpAddr, IpAddr)) -> u64 {
        self.keep_alives.get(&(dst, src)).copied().unwrap_or(0)
    }

    pub fn tshark(&self, metric: &str) -> &ByPair {
        &self.counts.iter().find(|c| c.0 == metric).expect("a compared counter").1
    }

    pub fn total(&self, metric: &str) -> u64 {
        self.tshark(metric).values().sum()
    }

    /// How far a counter of `pair` may be from tshark's: a timing-dependent one by
    /// [`timing_allowance`], duplicate ACKs by the other side's keep-alives ([`ORDER_FREE`]).
    fn allowed(
        &self,
        metric: &str,
        pair: (IpAddr, IpAddr),
        retransmitted_or_out_of_order: u64,
    ) -> u64 {
        let timed = COUNTERS.iter().any(|c| c.0 == metric) && !ORDER_FREE.contains(&metric);
        if timed {
            timing_allowance(retransmitted_or_out_of_order)
        } else if metric == DUPLICATE_ACKS {
            self.keep_alives_to(pair)
        } else {
            0
        }
    }

    /// The host's counts on the interface against tshark's, one line per difference: frames
    /// and received exactly; per pair, the flag counters, duplicate ACKs and zero windows
    /// exactly, retransmissions plus out-of-order segments within [`NOT_ADVANCING_ALLOWANCE`],
    /// and each of those within what two packet sockets' timestamps can move (see
    /// [`timing_allowance`]).
    pub fn mismatches(&self, samples: &[Sample]) -> Vec<String> {
        let mut out = Vec::new();
        let c = DeviceCounts::of(samples, &self.device);
        if c.packets != self.frames || c.received != self.frames || c.dropped_total() != 0 {
            out.push(format!("{}: tshark has {} frames, the host {c}", self.device, self.frames));
        }
        let on_device = device_samples(samples, &self.device);
        let host: Vec<ByPair> = self.counts.iter().map(|c| sum_by_pair(&on_device, c.0)).collect();
        let pairs: BTreeSet<(IpAddr, IpAddr)> = host
            .iter()
            .chain(self.counts.iter().map(|c| &c.1))
            .flat_map(|b| b.keys().copied())
            .collect();
        for pair in pairs {
            let at = |b: &ByPair| b.get(&pair).copied().unwrap_or(0);
            let both = |metric: &str| {
                let i = self.counts.iter().position(|c| c.0 == metric).expect("a counter");
                (at(&host[i]), at(&self.counts[i].1))
            };
            let ((hr, tr), (ho, to)) = (both(RETRANSMISSIONS), both(OUT_OF_ORDER));
            let bad = (hr + ho).abs_diff(tr + to) > NOT_ADVANCING_ALLOWANCE
                || self.counts.iter().any(|c| {
                    let (h, t) = both(c.0);
                    h.abs_diff(t) > self.allowed(c.0, pair, tr + to)
                });
            if bad {
                let counts: Vec<String> = self
                    .counts
                    .iter()
                    .map(|c| format!("{} {}/{}", c.0, both(c.0).0, both(c.0).1))
                    .collect();
                out.push(format!(
                    "{}: {} -> {} (host/tshark): {}",
                    self.device,
                    pair.0,
                    pair.1,
                    counts.join(", ")
                ));
            }
        }
        out
    }

    /// The comparison as tables, one per counter.
    pub fn report(&self, samples: &[Sample]) -> String {
        let on_device = device_samples(samples, &self.device);
        let slack = self.total(RETRANSMISSIONS) + self.total(OUT_OF_ORDER);
        let mut out = format!(
            "\nframes on {}: tshark {}; host {}\n",
            self.device,
            self.frames,
            DeviceCounts::of(samples, &self.device)
        );
        for (metric, tshark) in &self.counts {
            let host = sum_by_pair(&on_device, metric);
            let keys: BTreeSet<_> = tshark.keys().chain(host.keys()).copied().collect();
            let rows = keys
                .into_iter()
                .map(|k| {
                    (k, (tshark.get(&k).copied().unwrap_or(0), host.get(&k).copied().unwrap_or(0)))
                })
                .collect();
            out += &format_pairs(&format!("{metric} on {}", self.device), &rows, |pair, _| {
                self.allowed(metric, pair, slack)
            });
        }
        out
    }
}
