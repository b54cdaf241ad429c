//! ROOT: issue 3, acceptance 1: real lossy Linux TCP, captured with tcpdump, replayed through
//! `wasmtap replay`, and compared with tshark's TCP expert analysis of the same file at run time.
//!
//! Two network namespaces `a` and `b` joined by a veth pair (`common::topology::NetnsPair`).
//! nftables drops 2% of TCP segments at random on the *input* hook of each namespace, i.e. in
//! the receiving side of each direction, and tcpdump captures on `a`'s veth:
//! - a → b: captured on `a`'s egress, then dropped on `b`'s input;
//! - b → a: captured on `a`'s ingress (packet taps run before netfilter), then dropped on
//!   `a`'s input.
//!
//! So every drop happens after the capture point: the capture holds each lost segment and its
//! retransmission, as a capture on a lossy path would. Offloads are off, so the capture holds
//! real segments. The traffic (`tests/traffic.py`), over IPv4 and IPv6 each: a bulk
//! transfer (4 MB up, 2 MB down), a slow reader with a small SO_RCVBUF (zero windows, the
//! sender's persist probes, window updates), a refused connection, an abort with unread data
//! and a SO_LINGER-0 close (resets).
//!
//! It shows that, on that capture:
//! - `tcp.analysis.retransmission`, `.fast_retransmission`, `.spurious_retransmission`,
//!   `.out_of_order`, `.duplicate_ack` and `.zero_window` equal the analyzer's six counters
//!   exactly, in total and for every (src_ip, dst_ip) pair;
//! - the capture is interesting: retransmissions, fast retransmissions, duplicate ACKs, zero
//!   windows and resets are all non-zero, and nftables dropped segments in both directions;
//! - the handshake histogram holds, per (client, server) pair, tshark's initial RTT of every
//!   connection that has one, exactly: each bucket, the count and the sum to the nanosecond;
//! - replaying the capture twice gives byte-identical output, and `--workers 1
//!   --batch-size 7` gives the same output as the defaults (the whole exposition).
//!
//! Every comparison is printed as a table. Skipped (loudly) without root, unless
//! WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;
mod tcp_analysis;

use common::rtt::{HANDSHAKE, TsharkRtts, compare_exact, host_histograms_ok};
use common::*;
use std::path::PathBuf;
use std::sync::OnceLock;
use tcp_analysis::{COUNTERS, compare_by_pair, compare_totals, format_pairs, format_table};

/// The traffic server's base port inside namespace b (see `common::traffic`).
const PORT: u16 = 5001;
/// Bytes uploaded per bulk transfer (half as much comes back): a few MB per family.
const BULK_BYTES: u64 = 4_000_000;
/// Bytes sent to the slow reader: about 3 s of its pace, dozens of window closures.
const SLOW_BYTES: u64 = 400_000;
/// Share of TCP segments nftables drops in each namespace's input hook, in percent.
const LOSS_PERCENT: u32 = 2;

/// The recorded capture and the drops per direction.
struct Recorded {
    file: PathBuf,
    /// Segments dropped a → b (in b's input) and b → a (in a's input).
    dropped_ab: u64,
    dropped_ba: u64,
}

/// Records the capture once per test process; every test here reads the same file.
fn capture(test: &str) -> Option<&'static Recorded> {
    if !require_root(test) {
        return None;
    }
    static CAPTURE: OnceLock<Recorded> = OnceLock::new();
    Some(CAPTURE.get_or_init(record))
}

fn record() -> Recorded {
    require_tools(&["tshark"]);
    let cap = record_lossy("lossy-tcp-", LOSS_PERCENT, PORT, BULK_BYTES, SLOW_BYTES);
    Recorded { file: cap.file, dropped_ab: cap.dropped_ab, dropped_ba: cap.dropped_ba }
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn lossy_traffic_counts_agree_with_tshark() {
    let Some(rec) = capture("lossy_traffic_counts_agree_with_tshark") else {
        return;
    };
    let file = rec.file.as_path();
    let dir = TempDir::new("lossy-counts");
    let samples = parse_exposition(&replay_to_text(file, &[], &dir));

    // A replay reads the same packets and timestamps as tshark: every counter must be equal,
    // in total and for every (source, destination) pair.
    let rows = compare_totals(file, &samples);
    let mut report = format_table(
        &format!("lossy capture ({LOSS_PERCENT}% loss each way): wasmtap replay vs tshark"),
        &rows,
        |_| 0,
    );
    let mut failures: Vec<String> = rows
        .iter()
        .filter(|r| r.diff() != 0)
        .map(|r| format!("{}: host {}, tshark {} ({})", r.metric, r.host, r.tshark, r.field))
        .collect();
    let mut retransmitting_pairs = 0;
    for (metric, field) in COUNTERS {
        let pairs = compare_by_pair(file, &samples, metric, field);
        report.push_str(&format_pairs(&format!("{metric} per pair ({field})"), &pairs, |_, _| 0));
        for ((src, dst), (t, h)) in &pairs {
            if h != t {
                failures.push(format!("{metric} {src} -> {dst}: host {h}, tshark {t}"));
            }
        }
        if field == "tcp.analysis.retransmission" {
            retransmitting_pairs = pairs.len();
        }
    }
    eprintln!("{report}");

    // The capture must really have what the comparison is about.
    let tshark = |field: &str| rows.iter().find(|r| r.field == field).map_or(0, |r| r.tshark);
    for field in [
        "tcp.analysis.retransmission",
        "tcp.analysis.fast_retransmission",
        "tcp.analysis.duplicate_ack",
        "tcp.analysis.zero_window",
    ] {
        assert!(tshark(field) > 0, "tshark finds no {field} in the capture");
    }
    assert!(tshark_count(file, Some("tcp.flags.reset==1")) > 0, "no resets in the capture");
    assert!(tshark_count(file, Some("ip && tcp")) > 1000, "little IPv4 TCP");
    assert!(tshark_count(file, Some("ipv6 && tcp")) > 1000, "little IPv6 TCP");
    assert!(rec.dropped_ab > 0 && rec.dropped_ba > 0, "nftables dropped nothing one way");
    // Both directions of both families had retransmissions.
    assert!(
        retransmitting_pairs >= 4,
        "retransmissions in fewer than 4 directions: {retransmitting_pairs}"
    );

    assert!(failures.is_empty(), "wasmtap replay differs from tshark:\n{}", failures.join("\n"));
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn lossy_handshake_histogram_holds_tshark_initial_rtts() {
    let Some(rec) = capture("lossy_handshake_histogram_holds_tshark_initial_rtts") else {
        return;
    };
    let file = rec.file.as_path();
    let dir = TempDir::new("lossy-irtt");
    let text = replay_to_text(file, &[], &dir);
    // tshark's iRTT once per tcp.stream, per (client, server): exactly the host's histogram,
    // bucket by bucket, count and sum to the nanosecond.
    let tshark = TsharkRtts::read(file, &[]);
    let c = compare_exact(
        &format!("{HANDSHAKE} (tcp.analysis.initial_rtt)"),
        &tshark.initial_rtt,
        &host_histograms_ok(&text, HANDSHAKE, None),
    );
    eprintln!(
        "\nhandshakes: tshark shows an iRTT for {} connections on {} (client, server) pairs{}",
        tshark.initial_rtt_count(),
        tshark.initial_rtt.len(),
        c.report
    );
    assert!(
        tshark.initial_rtt_count() >= 8,
        "expected ≥ 8 completed handshakes, tshark has {}",
        tshark.initial_rtt_count()
    );
    assert!(c.is_exact(), "handshake histogram differs from tshark:\n{}", c.mismatches.join("\n"));
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn lossy_replay_is_deterministic() {
    let Some(rec) = capture("lossy_replay_is_deterministic") else {
        return;
    };
    let file = rec.file.as_path();
    let dir = TempDir::new("lossy-determinism");
    let first = replay_to_text(file, &[], &dir);
    let second = replay_to_text(file, &[], &dir);
    let small = replay_to_text(file, &["--workers", "1", "--batch-size", "7"], &dir);
    assert!(first.contains("wasmtap_tcp_retransmissions_total{"), "no retransmission series");
    assert!(first == second, "two identical replays differ:\n{}", line_diff(&first, &second));
    // The whole exposition, self-metrics included (a replay has no wall-clock ones).
    assert!(
        first == small,
        "--workers 1 --batch-size 7 differs from the defaults:\n{}",
        line_diff(&first, &small)
    );
    eprintln!(
        "\ndeterminism: 3 replays ({} lines each) byte-identical, default and \
         --workers 1 --batch-size 7",
        first.lines().count()
    );
}
