//! Shared by the tcp-analysis tests (`root_tcp_analysis`, `tcp_edge_cases`, `flow_bound`,
//! `root_interfaces`): the analyzer's per-segment counters paired with the tshark fields they
//! count, and their comparison with tshark's reading of the same capture, as tables.
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use crate::common::{
    Sample, as_count, sum_by_pair, sum_metric, tshark_count, tshark_count_by_pair,
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

/// Per-pair rows as a table (one metric).
pub fn format_pairs(
    title: &str,
    pairs: &BTreeMap<(IpAddr, IpAddr), (u64, u64)>,
    allowed: impl Fn(u64) -> u64,
) -> String {
    let mut out = format!("\n{title}\n");
    let _ = writeln!(
        out,
        "  {:<42} {:>9} {:>9} {:>7} {:>8}  verdict",
        "src_ip -> dst_ip", "tshark", "host", "diff", "allowed"
    );
    for ((src, dst), (t, h)) in pairs {
        let diff = *h as i64 - *t as i64;
        let ok = diff.unsigned_abs() <= allowed(*t);
        let _ = writeln!(
            out,
            "  {:<42} {:>9} {:>9} {:>+7} {:>8}  {}",
            format!("{src} -> {dst}"),
            t,
            h,
            diff,
            allowed(*t),
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    out
}
