//! Issue 3, acceptance 2 (no root needed): a hand-made capture, written by this test, with one
//! connection per TCP edge case:
//!
//! | scenario | addresses | what it exercises |
//! |---|---|---|
//! | keep-alive | 10.99.1.1 ↔ .2 | keep-alives (0 and 1 byte) and their ACKs, a retransmitted FIN |
//! | zero window | 10.99.2.1 ↔ .2 | zero window, two zero-window probes and their ACKs, a window update, new data starting with the probed byte, a RST |
//! | SYN retransmission | 10.99.3.1 ↔ .2 | a retransmitted SYN, a retransmitted SYN/ACK and the duplicate ACK it draws |
//! | wraparound (IPv6) | fd99::4:1 ↔ fd99::4:2 | both directions cross 2^32: a fast retransmission of a segment spanning the wrap after 3 duplicate ACKs, and a plain (timeout) retransmission of one |
//! | spurious | 10.99.5.1 ↔ .2 | a retransmission of acknowledged data, and its duplicate ACK |
//! | fast retransmission | 10.99.6.1 ↔ .2 | 3 duplicate ACKs, then the fast retransmission |
//! | out-of-order | 10.99.7.1 ↔ .2 | a segment arriving after a later one, within the initial RTT |
//!
//! It shows that:
//! - tshark, reading the file, flags each frame exactly as the scenario intends (so the capture
//!   really exercises each case: e.g. keep-alives are flagged keep-alive and NOT retransmission,
//!   the probes are zero-window probes and NOT retransmissions, the window update is no
//!   duplicate ACK);
//! - `wasmtap replay` gives, for every `tcp.analysis.*` counter, tshark's count, in total and per
//!   (src_ip, dst_ip) pair, i.e. per scenario: counts are computed from tshark at run time;
//! - the handshake histogram holds tshark's initial RTT of every connection, per (client,
//!   server) pair, exactly (each bucket, the count and the sum to the nanosecond), and the
//!   duration histogram one observation per connection;
//! - the ACK round-trip histogram holds tshark's `tcp.analysis.ack_rtt` values per (data sender,
//!   acknowledger) pair, exactly;
//! - the frames are well-formed (tshark verifies every IP and TCP checksum).

mod common;
mod tcp_analysis;

use common::frames::{ACK, FIN, PSH, Pcap, RST, SYN, TcpSegment};
use common::rtt::{ACK_RTT, HANDSHAKE, TsharkRtts, compare_exact, host_histograms_ok};
use common::*;
use etherparse::TcpOptionElement;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use tcp_analysis::{COUNTERS, compare_by_pair, compare_totals, format_pairs, format_table};

/// The `tcp.analysis.*` flags checked frame by frame: the six counted ones and those that
/// tell the edge cases apart.
const CHECKED: [&str; 12] = [
    "retransmission",
    "fast_retransmission",
    "spurious_retransmission",
    "out_of_order",
    "duplicate_ack",
    "zero_window",
    "zero_window_probe",
    "zero_window_probe_ack",
    "keep_alive",
    "keep_alive_ack",
    "window_update",
    "lost_segment",
];

/// Packet time of the first scenario (14 Nov 2023), in µs.
const T0_US: u64 = 1_700_000_000_000_000;
/// Scenarios start this far apart (each lasts a few seconds; all together stay well under
/// the analyzer's 300 s idle timeout, which is not what this test is about).
const SCENARIO_GAP_US: u64 = 10_000_000;
/// Half the initial RTT: SYN → SYN/ACK → ACK take 500 µs each, so iRTT = 1 ms.
const HALF_RTT_US: u64 = 500;
/// Receive window of both sides (no window scaling: the SYNs carry no wscale option).
const WINDOW: u16 = 8192;
/// Full-size segment payload used by the scenarios.
const SEG: u16 = 1000;

const C: usize = 0;
const S: usize = 1;

/// One frame of the capture, with the flags tshark should give it.
struct Frame {
    time_us: u64,
    seg: TcpSegment,
    expect: BTreeSet<&'static str>,
    scenario: &'static str,
    what: &'static str,
}

/// One connection being scripted: tracks each side's next sequence number, the ACK number
/// it sends and its window; every frame is sent `dt_us` after the previous one.
struct Conv<'a> {
    frames: &'a mut Vec<Frame>,
    scenario: &'static str,
    t_us: u64,
    addr: [IpAddr; 2],
    port: [u16; 2],
    nxt: [u32; 2],
    rcv: [u32; 2],
    win: [u16; 2],
}

impl<'a> Conv<'a> {
    fn new(frames: &'a mut Vec<Frame>, scenario: &'static str, n: u16, v6: bool) -> Conv<'a> {
        let addr = |host: u8| -> IpAddr {
            if v6 { format!("fd99::{n}:{host}") } else { format!("10.99.{n}.{host}") }
                .parse()
                .expect("address")
        };
        Conv {
            frames,
            scenario,
            t_us: T0_US + u64::from(n) * SCENARIO_GAP_US,
            addr: [addr(1), addr(2)],
            port: [50_000 + n, 39_000 + n],
            nxt: [0; 2],
            rcv: [0; 2],
            win: [WINDOW; 2],
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn raw(
        &mut self,
        from: usize,
        dt_us: u64,
        flags: u8,
        seq: u32,
        len: u16,
        expect: &[&'static str],
        what: &'static str,
    ) {
        self.t_us += dt_us;
        let to = 1 - from;
        let mut expect: BTreeSet<&'static str> = expect.iter().copied().collect();
        // tshark shows `tcp.analysis.retransmission` on fast and spurious ones too.
        if expect.contains("fast_retransmission") || expect.contains("spurious_retransmission") {
            expect.insert("retransmission");
        }
        for e in &expect {
            assert!(CHECKED.contains(e), "unknown flag {e}");
        }
        self.frames.push(Frame {
            time_us: self.t_us,
            seg: TcpSegment {
                seq,
                ack: if flags & ACK != 0 { self.rcv[from] } else { 0 },
                flags,
                window: self.win[from],
                payload_len: usize::from(len),
                // An MSS option on SYNs.
                options: if flags & SYN != 0 {
                    vec![TcpOptionElement::MaximumSegmentSize(1460)]
                } else {
                    Vec::new()
                },
                ..TcpSegment::new(self.addr[from], self.port[from], self.addr[to], self.port[to])
            },
            expect,
            scenario: self.scenario,
            what,
        });
    }

    /// SYN, SYN/ACK, ACK, 500 µs apart.
    fn handshake(&mut self, isn_c: u32, isn_s: u32) {
        self.syn(0, isn_c, &[], "SYN");
        self.syn_ack(HALF_RTT_US, isn_s, &[], "SYN/ACK");
        self.ack_all(C, HALF_RTT_US, &[], "handshake ACK");
    }

    fn syn(&mut self, dt_us: u64, isn: u32, expect: &[&'static str], what: &'static str) {
        self.raw(C, dt_us, SYN, isn, 0, expect, what);
        self.nxt[C] = isn.wrapping_add(1);
    }

    fn syn_ack(&mut self, dt_us: u64, isn: u32, expect: &[&'static str], what: &'static str) {
        self.rcv[S] = self.nxt[C];
        self.raw(S, dt_us, SYN | ACK, isn, 0, expect, what);
        self.nxt[S] = isn.wrapping_add(1);
    }

    /// New data from `from`; returns its sequence number.
    fn data(
        &mut self,
        from: usize,
        dt_us: u64,
        len: u16,
        expect: &[&'static str],
        what: &'static str,
    ) -> u32 {
        let seq = self.nxt[from];
        self.raw(from, dt_us, PSH | ACK, seq, len, expect, what);
        self.nxt[from] = seq.wrapping_add(u32::from(len));
        seq
    }

    /// Data from `from` at `seq` again (a retransmission, a probe, a late segment).
    fn resend(
        &mut self,
        from: usize,
        dt_us: u64,
        seq: u32,
        len: u16,
        expect: &[&'static str],
        what: &'static str,
    ) {
        self.raw(from, dt_us, PSH | ACK, seq, len, expect, what);
    }

    /// A bare ACK of `ack` from `from`.
    fn ack(
        &mut self,
        from: usize,
        dt_us: u64,
        ack: u32,
        expect: &[&'static str],
        what: &'static str,
    ) {
        self.rcv[from] = ack;
        let seq = self.nxt[from];
        self.raw(from, dt_us, ACK, seq, 0, expect, what);
    }

    /// A bare ACK of everything the other side sent.
    fn ack_all(&mut self, from: usize, dt_us: u64, expect: &[&'static str], what: &'static str) {
        let ack = self.nxt[1 - from];
        self.ack(from, dt_us, ack, expect, what);
    }

    /// A FIN from `from`, acknowledging everything the other side sent.
    fn fin(&mut self, from: usize, dt_us: u64, expect: &[&'static str], what: &'static str) {
        self.rcv[from] = self.nxt[1 - from];
        let seq = self.nxt[from];
        self.raw(from, dt_us, FIN | ACK, seq, 0, expect, what);
        self.nxt[from] = seq.wrapping_add(1);
    }

    /// FIN, FIN/ACK, ACK.
    fn close(&mut self) {
        self.fin(C, 10_000, &[], "FIN");
        self.fin(S, HALF_RTT_US, &[], "FIN/ACK");
        self.ack_all(C, HALF_RTT_US, &[], "last ACK");
    }
}

/// Every scenario's frames, in time order.
fn scenarios() -> Vec<Frame> {
    let mut frames = Vec::new();

    // Keep-alives: zero or one byte at nextseq - 1; never retransmissions, and their ACKs
    // are no duplicate ACKs.
    let mut k = Conv::new(&mut frames, "keep-alive", 1, false);
    k.handshake(1_000_000, 2_000_000);
    k.data(C, 10_000, 100, &[], "request");
    k.ack_all(S, HALF_RTT_US, &[], "its ACK");
    let ka = k.nxt[C].wrapping_sub(1);
    k.raw(C, 2_000_000, ACK, ka, 0, &["keep_alive"], "keep-alive, no data");
    k.ack_all(S, HALF_RTT_US, &["keep_alive_ack"], "keep-alive ACK");
    k.raw(C, 2_000_000, ACK, ka, 1, &["keep_alive"], "keep-alive with one byte");
    k.ack_all(S, HALF_RTT_US, &["keep_alive_ack"], "keep-alive ACK");
    k.data(C, 10_000, 200, &[], "new data after the keep-alives");
    k.ack_all(S, HALF_RTT_US, &[], "its ACK");
    k.fin(C, 10_000, &[], "FIN");
    let fin_seq = k.nxt[C].wrapping_sub(1);
    k.raw(C, 300_000, FIN | ACK, fin_seq, 0, &["retransmission"], "FIN retransmitted");
    k.fin(S, HALF_RTT_US, &[], "FIN/ACK");
    k.ack_all(C, HALF_RTT_US, &[], "last ACK");

    // Zero window: the receiver's window closes; the sender probes it with one new byte
    // twice (probes, not retransmissions); the window update opens it (no duplicate ACK).
    let mut k = Conv::new(&mut frames, "zero window", 2, false);
    k.handshake(3_000_000, 4_000_000);
    k.data(C, 10_000, SEG, &[], "data");
    k.data(C, 20, SEG, &[], "data");
    k.win[S] = 0;
    k.ack_all(S, HALF_RTT_US, &["zero_window"], "ACK with window 0");
    let probe = k.nxt[C];
    k.resend(C, 200_000, probe, 1, &["zero_window_probe"], "zero-window probe");
    k.ack_all(S, HALF_RTT_US, &["zero_window", "zero_window_probe_ack"], "probe ACK");
    k.resend(C, 400_000, probe, 1, &["zero_window_probe"], "second zero-window probe");
    k.ack_all(S, HALF_RTT_US, &["zero_window", "zero_window_probe_ack"], "probe ACK");
    k.win[S] = WINDOW;
    k.ack_all(S, 100_000, &["window_update"], "window update");
    k.data(C, 1_000, SEG, &[], "new data starting with the probed byte");
    k.ack_all(S, HALF_RTT_US, &[], "its ACK");
    k.win[C] = 0;
    let seq = k.nxt[C];
    k.raw(C, 10_000, RST | ACK, seq, 0, &[], "RST with window 0 (no zero window)");

    // SYN retransmission, SYN/ACK retransmission.
    let mut k = Conv::new(&mut frames, "SYN retransmission", 3, false);
    k.syn(0, 5_000_000, &[], "SYN");
    k.syn(1_000_000, 5_000_000, &["retransmission"], "SYN retransmitted");
    k.syn_ack(HALF_RTT_US, 6_000_000, &[], "SYN/ACK");
    k.ack_all(C, HALF_RTT_US, &[], "handshake ACK");
    k.syn_ack(1_000_000, 6_000_000, &["retransmission"], "SYN/ACK retransmitted");
    k.ack_all(C, HALF_RTT_US, &["duplicate_ack"], "the ACK again");
    k.data(C, 10_000, 100, &[], "request");
    k.ack_all(S, HALF_RTT_US, &[], "its ACK");
    k.close();

    // Sequence numbers wrapping at 2^32 in both directions, over IPv6.
    let mut k = Conv::new(&mut frames, "wraparound", 4, true);
    // The client's data runs from 2^32 - 2500; the third segment spans the wrap.
    k.handshake(u32::MAX - 2500, u32::MAX - 1200);
    k.data(C, 10_000, SEG, &[], "s1");
    k.data(C, 20, SEG, &[], "s2");
    let s3 = k.data(C, 20, SEG, &[], "s3, spans 2^32 (lost after the capture point)");
    assert!(s3 > u32::MAX - u32::from(SEG) && s3.wrapping_add(u32::from(SEG)) < u32::from(SEG));
    k.data(C, 20, SEG, &[], "s4, after the wrap");
    k.data(C, 20, SEG, &[], "s5");
    k.data(C, 20, SEG, &[], "s6");
    k.ack(S, HALF_RTT_US, s3, &[], "ACK up to s3");
    for _ in 0..3 {
        k.ack(S, 20, s3, &["duplicate_ack"], "duplicate ACK asking for s3");
    }
    k.resend(C, 100, s3, SEG, &["fast_retransmission"], "s3 again: fast retransmission");
    k.ack_all(S, HALF_RTT_US, &[], "ACK of everything");
    // The server's data runs from 2^32 - 1200; r2 spans the wrap.
    k.data(S, 10_000, SEG, &[], "r1");
    let r2 = k.data(S, 20, SEG, &[], "r2, spans 2^32 (lost after the capture point)");
    k.data(S, 20, SEG / 2, &[], "r3, after the wrap");
    k.ack(C, HALF_RTT_US, r2, &[], "ACK up to r2");
    k.ack(C, 20, r2, &["duplicate_ack"], "duplicate ACK asking for r2");
    k.resend(S, 200_000, r2, SEG, &["retransmission"], "r2 again after a timeout");
    k.ack_all(C, HALF_RTT_US, &[], "ACK of everything");
    k.close();

    // A spurious retransmission: the data had been acknowledged.
    let mut k = Conv::new(&mut frames, "spurious", 5, false);
    k.handshake(7_000_000, 8_000_000);
    let d1 = k.data(C, 10_000, SEG, &[], "d1");
    k.ack_all(S, HALF_RTT_US, &[], "its ACK (lost after the capture point)");
    k.resend(C, 300_000, d1, SEG, &["spurious_retransmission"], "d1 again");
    k.ack_all(S, HALF_RTT_US, &["duplicate_ack"], "duplicate ACK (a D-SACK in real stacks)");
    k.data(C, 1_000, SEG / 2, &[], "new data");
    k.ack_all(S, HALF_RTT_US, &[], "its ACK");
    k.close();

    // A fast retransmission after three duplicate ACKs.
    let mut k = Conv::new(&mut frames, "fast retransmission", 6, false);
    k.handshake(9_000_000, 10_000_000);
    k.data(C, 10_000, SEG, &[], "d1");
    let d2 = k.data(C, 20, SEG, &[], "d2 (lost after the capture point)");
    for _ in 0..3 {
        k.data(C, 20, SEG, &[], "d3..d5");
    }
    k.ack(S, HALF_RTT_US, d2, &[], "ACK up to d2");
    for _ in 0..3 {
        k.ack(S, 20, d2, &["duplicate_ack"], "duplicate ACK asking for d2");
    }
    k.resend(C, 100, d2, SEG, &["fast_retransmission"], "d2 again: fast retransmission");
    k.ack_all(S, HALF_RTT_US, &[], "ACK of everything");
    k.close();

    // Out of order: d2 arrives 80 µs after d3, less than the 1 ms initial RTT.
    let mut k = Conv::new(&mut frames, "out-of-order", 7, false);
    k.handshake(11_000_000, 12_000_000);
    k.data(C, 10_000, SEG, &[], "d1");
    let d2 = k.nxt[C];
    k.nxt[C] = d2.wrapping_add(u32::from(SEG));
    k.data(C, 20, SEG, &["lost_segment"], "d3, before d2");
    k.resend(C, 80, d2, SEG, &["out_of_order"], "d2, late");
    k.ack_all(S, HALF_RTT_US, &[], "ACK of everything");
    k.close();

    frames
}

/// Writes the scenarios' frames to `path`.
fn write_capture(frames: &[Frame], path: &Path) {
    let mut pcap = Pcap::create(path);
    for (i, f) in frames.iter().enumerate() {
        pcap.write_segment(f.time_us, &TcpSegment { ip_id: i as u16, ..f.seg.clone() });
    }
    assert_eq!(pcap.frames(), frames.len() as u64);
    pcap.finish();
}

/// Builds the capture in a fresh directory.
fn capture(dir: &TempDir) -> (Vec<Frame>, PathBuf) {
    let frames = scenarios();
    assert!(frames.windows(2).all(|w| w[0].time_us <= w[1].time_us), "frames out of time order");
    let path = dir.join("edge-cases.pcap");
    write_capture(&frames, &path);
    (frames, path)
}

#[test]
fn tshark_flags_each_frame_as_the_scenario_intends() {
    let dir = TempDir::new("tcp-edge-flags");
    let (frames, file) = capture(&dir);
    // Frame number (1-based) → the checked flags tshark shows on it.
    let mut got: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    for flag in CHECKED {
        for row in tshark_fields(&file, Some(&format!("tcp.analysis.{flag}")), &["frame.number"]) {
            let n: usize = row[0].parse().expect("frame number");
            got.entry(n).or_default().insert(flag);
        }
    }
    let mut report = String::new();
    let mut bad = 0;
    for (i, f) in frames.iter().enumerate() {
        let shown = got.remove(&(i + 1)).unwrap_or_default();
        let ok = shown == f.expect;
        bad += usize::from(!ok);
        if !f.expect.is_empty() || !ok {
            report.push_str(&format!(
                "  {:>3} {:<20} {:<50} expected {:?}, tshark {:?}{}\n",
                i + 1,
                f.scenario,
                f.what,
                f.expect,
                shown,
                if ok { "" } else { "   <-- MISMATCH" }
            ));
        }
    }
    assert!(got.is_empty(), "tshark flagged frames beyond the capture: {got:?}");
    eprintln!("\nframes with tcp.analysis flags (expected vs tshark):\n{report}");
    assert_eq!(bad, 0, "{bad} frames are not flagged by tshark as the scenario intends");
    // Every checked flag occurs at least once, so each edge case is really in the file.
    for flag in CHECKED {
        assert!(frames.iter().any(|f| f.expect.contains(flag)), "no frame exercises {flag}");
    }
}

#[test]
fn replay_counts_equal_tshark_per_metric_and_per_pair() {
    let dir = TempDir::new("tcp-edge-counts");
    let (_, file) = capture(&dir);
    let samples = parse_exposition(&replay_to_text(&file, &[], &dir));

    let rows = compare_totals(&file, &samples);
    eprintln!("{}", format_table("edge cases: totals, wasmtap replay vs tshark", &rows, |_| 0));
    for r in &rows {
        assert!(r.tshark > 0, "{} is not exercised by the capture", r.field);
    }
    let mut failures = Vec::new();
    for (metric, field) in COUNTERS {
        let pairs = compare_by_pair(&file, &samples, metric, field);
        eprint!("{}", format_pairs(&format!("{metric} per pair ({field})"), &pairs, |_, _| 0));
        for ((src, dst), (t, h)) in pairs {
            if t != h {
                failures
                    .push(format!("{metric}{{src_ip={src},dst_ip={dst}}}: host {h}, tshark {t}"));
            }
        }
    }
    for r in rows.iter().filter(|r| r.host != r.tshark) {
        failures.push(format!("{}: host {}, tshark {} ({})", r.metric, r.host, r.tshark, r.field));
    }
    assert!(failures.is_empty(), "wasmtap replay differs from tshark:\n{}", failures.join("\n"));
}

#[test]
fn handshake_and_duration_histograms_match_tshark_connections() {
    let dir = TempDir::new("tcp-edge-hist");
    let (_, file) = capture(&dir);
    let text = replay_to_text(&file, &[], &dir);
    let samples = parse_exposition(&text);

    // tshark's iRTT once per TCP stream (shown on every frame after the handshake), per
    // (client, server): exactly the host's histogram, each bucket, count and sum to the ns.
    let tshark = TsharkRtts::read(&file, &[]);
    let mut streams = BTreeSet::new();
    for row in tshark_fields(&file, Some("tcp"), &["tcp.stream"]) {
        streams.insert(row[0].parse::<u64>().expect("tcp.stream"));
    }
    assert_eq!(tshark.initial_rtt_count(), streams.len(), "tshark has no iRTT for some connection");
    let c = compare_exact(
        &format!("{HANDSHAKE} (tcp.analysis.initial_rtt)"),
        &tshark.initial_rtt,
        &host_histograms_ok(&text, HANDSHAKE, None),
    );
    eprintln!("handshakes: tshark {} connections{}", streams.len(), c.report);
    assert!(c.is_exact(), "handshake histogram differs from tshark:\n{}", c.mismatches.join("\n"));

    let durations = sum_metric(&samples, "wasmtap_tcp_connection_duration_seconds_count");
    assert_eq!(durations, streams.len() as f64, "one duration per tshark TCP stream");
}

/// The ACK round-trip histogram per (data sender, acknowledger) equals tshark's
/// `tcp.analysis.ack_rtt` values exactly, on the scenarios' keep-alives, zero-window probes,
/// retransmitted SYNs and SYN/ACKs, sequence numbers that wrap and retransmissions.
#[test]
fn ack_rtt_histogram_equals_tshark_per_pair() {
    let dir = TempDir::new("tcp-edge-ack-rtt");
    let (_, file) = capture(&dir);
    let text = replay_to_text(&file, &[], &dir);
    let tshark = TsharkRtts::read(&file, &[]);
    let c = compare_exact(
        &format!("{ACK_RTT} (tcp.analysis.ack_rtt)"),
        &tshark.ack_rtt,
        &host_histograms_ok(&text, ACK_RTT, None),
    );
    eprintln!("ack_rtt: tshark {} values{}", tshark.ack_rtt_count(), c.report);
    // Every scenario's connection acknowledges its handshake, in both directions of most.
    assert!(tshark.ack_rtt.len() >= 7, "ack_rtt values on {} pairs only", tshark.ack_rtt.len());
    assert!(c.is_exact(), "ACK RTT histogram differs from tshark:\n{}", c.mismatches.join("\n"));
}

#[test]
fn every_checksum_is_valid() {
    let dir = TempDir::new("tcp-edge-checksums");
    let (frames, file) = capture(&dir);
    let rows = run_ok(
        std::process::Command::new("tshark")
            .args(["-n", "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-r"])
            .arg(&file)
            .args(["-T", "fields", "-e", "ip.checksum.status", "-e", "tcp.checksum.status"]),
        REPLAY_TIMEOUT,
    );
    // Status 1 is "Good"; IPv6 has no header checksum (empty field).
    let mut checked = 0;
    for (i, line) in rows.lines().enumerate() {
        let mut cols = line.split('\t');
        let (ip, tcp) = (cols.next().unwrap_or(""), cols.next().unwrap_or(""));
        assert!(ip.is_empty() || ip == "1", "frame {}: IPv4 checksum status {ip:?}", i + 1);
        assert_eq!(tcp, "1", "frame {}: TCP checksum status", i + 1);
        checked += 1;
    }
    assert_eq!(checked, frames.len(), "tshark read every frame");
}
