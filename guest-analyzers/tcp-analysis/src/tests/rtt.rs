//! ACK round-trip times and the per-pair handshake histogram: each expected sample follows from
//! how the conversation was built and the rule in the crate docs (Wireshark 4.0.17's
//! `tcp.analysis.ack_rtt` and `initial_rtt`). The conversations without a cap were also
//! written to pcaps, and tshark 4.0.17 showed exactly these samples on them; the caps and the
//! memory budget are this analyzer's (the 10 000 per direction is Wireshark's too).

use super::flows::Rng;
use super::*;
use crate::analysis::Segment;
use crate::rtt::{Cap, MAX_UNACKED, NONE, Timing, Timings};

const C: u32 = 1000;
const S: u32 = 5000;

/// The ACK RTT series of data sent by `src` to `dst` (device 0): (bucket counts, sum, count).
fn rtt_from(t: &Totals, k: &Conn, src: Ipv4Addr) -> (Vec<u64>, f64, u64) {
    let dst = if src == k.client.ip { k.server.ip } else { k.client.ip };
    t.series(ACK_RTT, src, dst, k.device).unwrap_or((vec![0; 19], 0.0, 0))
}

/// The bucket (index into the 19 counts, `+Inf` last) that `seconds` falls in.
fn bucket(seconds: f64) -> usize {
    RTT_BOUNDS.partition_point(|b| *b < seconds)
}

/// Asserts a histogram series holds exactly the samples `us` (in µs).
#[track_caller]
fn assert_samples(h: &(Vec<u64>, f64, u64), us: &[f64]) {
    let mut expected = vec![0; 19];
    for u in us {
        expected[bucket(u * 1e-6)] += 1;
    }
    let sum: f64 = us.iter().sum::<f64>() * 1e-6;
    assert_eq!((&h.0, h.2), (&expected, us.len() as u64), "buckets, count of {us:?}");
    assert!((h.1 - sum).abs() < 1e-12, "sum {} vs {sum}", h.1);
}

/// The handshake of `k` at `t`: SYN, SYN/ACK after `half` µs, ACK after `half` more.
fn handshake(k: &Conn, t: u64, half: u64) -> Vec<PacketFields> {
    vec![
        k.c(t, SYN, C, 0, 0, 64240),
        k.s(t + half, SYN | ACK, S, C + 1, 0, 65160),
        k.c(t + 2 * half, ACK, C + 1, S + 1, 0, 1000),
    ]
}

#[test]
fn syn_syn_ack_and_fin_are_timed_each_way() {
    let k = Conn::new(1);
    let mut p = handshake(&k, 0, 500);
    p.extend([
        k.c(2000, FIN | ACK, C + 1, S + 1, 0, 1000), // 4 FIN: one sequence number
        k.s(2300, FIN | ACK, S + 1, C + 2, 0, 1000), // 5 acks the FIN (300 µs); its own FIN
        k.c(2420, ACK, C + 2, S + 2, 0, 1000),       // 6 acks the server's FIN (120 µs)
    ]);
    let t = run(&[], &p);
    // The SYN/ACK acknowledges the SYN (500 µs), the FIN/ACK the FIN: the client's data.
    assert_samples(&rtt_from(&t, &k, k.client.ip), &[500.0, 300.0]);
    // The handshake ACK acknowledges the SYN/ACK (500 µs), the last ACK the server's FIN.
    assert_samples(&rtt_from(&t, &k, k.server.ip), &[500.0, 120.0]);
    assert_eq!(t.series_count(ACK_RTT), 2);
    assert_eq!(t.count(UNTIMED), 0.0);
}

#[test]
fn a_partial_ack_trims_and_the_ack_of_the_end_samples_the_original() {
    // partial_cumulative.pcap, frames 4–10.
    let k = Conn::new(2);
    let mut p = handshake(&k, 0, 1000);
    p.extend([
        k.c(3000, ACK, C + 1, S + 1, 100, 1000),   // 4 ends C+101
        k.c(3010, ACK, C + 101, S + 1, 100, 1000), // 5 ends C+201
        k.c(3020, ACK, C + 201, S + 1, 100, 1000), // 6 ends C+301
        k.s(3500, ACK, S + 1, C + 50, 0, 1000),    // 7 inside 4: no sample, 4 stays
        k.s(3700, ACK, S + 1, C + 101, 0, 1000),   // 8 the end of 4: 700 µs from 4
        k.s(3800, ACK, S + 1, C + 250, 0, 1000),   // 9 past 5, inside 6: 5 goes silently
        k.s(3900, ACK, S + 1, C + 301, 0, 1000),   // 10 the end of 6: 880 µs
    ]);
    let t = run(&[], &p);
    assert_samples(&rtt_from(&t, &k, k.client.ip), &[1000.0, 700.0, 880.0]);
}

#[test]
fn a_cumulative_ack_samples_only_the_segment_it_ends_and_drops_the_rest() {
    // partial_cumulative.pcap, frames 11–15.
    let k = Conn::new(3);
    let mut p = handshake(&k, 0, 1000);
    p.extend([
        k.c(3000, ACK, C + 1, S + 1, 100, 1000),   // ends C+101
        k.c(3100, ACK, C + 101, S + 1, 100, 1000), // ends C+201
        k.s(3600, ACK, S + 1, C + 201, 0, 1000),   // both: 500 µs from the second only
        k.s(3700, ACK, S + 1, C + 101, 0, 1000),   // an old ACK: the first is gone
        k.c(4000, ACK, C + 201, S + 1, 100, 1000), // ends C+301
        k.s(4100, ACK, S + 1, C + 999, 0, 1000),   // beyond every end: all gone, no sample
        k.s(4200, ACK, S + 1, C + 301, 0, 1000),   // nothing left to sample
    ]);
    let t = run(&[], &p);
    assert_samples(&rtt_from(&t, &k, k.client.ip), &[1000.0, 500.0]);
}

#[test]
fn a_retransmitted_segment_is_timed_from_its_first_send() {
    // retrans.pcap: no Karn filtering; the oldest listed segment with that end wins.
    let k = Conn::new(4);
    let mut p = handshake(&k, 0, 1000);
    p.extend([
        k.c(3000, PSH | ACK, C + 1, S + 1, 100, 1000),   // 4
        k.c(53_000, PSH | ACK, C + 1, S + 1, 100, 1000), // 5 retransmission, 50 ms later
        k.s(60_000, ACK, S + 1, C + 101, 0, 1000),       // 6 57 ms from 4, not 7 ms from 5
    ]);
    let t = run(&[], &p);
    assert_eq!(t.count(RETRANS), 1.0);
    assert_samples(&rtt_from(&t, &k, k.client.ip), &[1000.0, 57_000.0]);
}

#[test]
fn keep_alives_with_a_byte_are_timed_without_one_not() {
    // keepalive_zwp.pcap, frames 4–9.
    let k = Conn::new(5);
    let mut p = handshake(&k, 0, 1000);
    p.extend([
        k.c(3000, ACK, C + 1, S + 1, 100, 1000),
        k.s(3200, ACK, S + 1, C + 101, 0, 1000), // 200 µs
        k.c(1_003_200, ACK, C + 100, S + 1, 1, 1000), // keep-alive with its byte, ends C+101
        k.s(1_003_230, ACK, S + 1, C + 101, 0, 1000), // keep-alive ACK: 30 µs
        k.c(2_003_230, ACK, C + 100, S + 1, 0, 1000), // keep-alive without a byte: not timed
        k.s(2_003_260, ACK, S + 1, C + 101, 0, 1000), // nothing to sample
    ]);
    let t = run(&[], &p);
    assert_eq!(t.segment_counts(), [0.0; 6]);
    assert_samples(&rtt_from(&t, &k, k.client.ip), &[1000.0, 200.0, 30.0]);
}

#[test]
fn a_duplicate_ack_samples_a_retransmission_listed_since_the_last_ack() {
    let k = Conn::new(6);
    let mut p = handshake(&k, 0, 1000);
    p.extend([
        k.c(3000, ACK, C + 1, S + 1, 100, 1000),
        k.s(3400, ACK, S + 1, C + 101, 0, 1000), // 400 µs
        k.c(3500, ACK, C + 1, S + 1, 100, 1000), // spurious retransmission, listed again
        k.s(3560, ACK, S + 1, C + 101, 0, 1000), // duplicate ACK: 60 µs from the retransmission
    ]);
    let t = run(&[], &p);
    assert_eq!(t.count(DUP_ACK), 1.0);
    assert_eq!(t.count(SPURIOUS), 1.0);
    assert_samples(&rtt_from(&t, &k, k.client.ip), &[1000.0, 400.0, 60.0]);
}

#[test]
fn a_zero_delta_is_not_observed_and_a_negative_one_is() {
    // zero_negative.pcap: the same timestamp (tshark shows acks_frame, no ack_rtt), then an
    // ACK 5 µs before the data it acknowledges (tshark shows -0.000005000).
    let k = Conn::new(7);
    let mut p = handshake(&k, 0, 1000);
    p.extend([
        k.c(3000, ACK, C + 1, S + 1, 100, 1000),
        k.s(3000, ACK, S + 1, C + 101, 0, 1000), // 0: removed, not observed
        k.s(3100, ACK, S + 1, C + 101, 0, 1000), // nothing left
        k.c(4000, ACK, C + 101, S + 1, 100, 1000),
        k.s(3995, ACK, S + 1, C + 201, 0, 1000), // -5 µs
    ]);
    let t = run(&[], &p);
    assert_samples(&rtt_from(&t, &k, k.client.ip), &[1000.0, -5.0]);
}

#[test]
fn sequence_numbers_wrap() {
    // wrap.pcap: the first segment crosses 2^32.
    let k = Conn::new(8);
    let c: u32 = 0xffff_ff00;
    let p = [
        k.c(0, SYN, c, 0, 0, 64240),
        k.s(1000, SYN | ACK, S, c.wrapping_add(1), 0, 65160),
        k.c(2000, ACK, c.wrapping_add(1), S + 1, 0, 1000),
        k.c(3000, ACK, c.wrapping_add(1), S + 1, 0x200, 1000), // ends 0x101
        k.c(4000, ACK, 0x101, S + 1, 0x100, 1000),             // ends 0x201
        k.s(5000, ACK, S + 1, 0x101, 0, 1000),                 // 2 ms
        k.s(6000, ACK, S + 1, 0x201, 0, 1000),                 // 2 ms
    ];
    let t = run(&[], &p);
    assert_samples(&rtt_from(&t, &k, k.client.ip), &[1000.0, 2000.0, 2000.0]);
}

#[test]
fn any_ack_field_counts_a_bare_rst_clears_what_it_reaches() {
    // rst_noack.pcap: a RST without ACK carries ack 0, which reaches (removes) the client's
    // segment ending at 0xa000_0065, so the later ACK of that end samples nothing.
    let k = Conn::new(9);
    let c: u32 = 0xa000_0000;
    let p = [
        k.c(0, SYN, c, 0, 0, 64240),
        k.s(1000, SYN | ACK, S, c + 1, 0, 65160),
        k.c(2000, ACK, c + 1, S + 1, 0, 1000),
        k.c(3000, ACK, c + 1, S + 1, 100, 1000),
        k.s(4000, RST, S + 1, 0, 0, 0),
        k.s(5000, ACK, S + 1, c + 101, 0, 1000),
    ];
    let t = run(&[], &p);
    assert_samples(&rtt_from(&t, &k, k.client.ip), &[1000.0]);
    assert_samples(&rtt_from(&t, &k, k.server.ip), &[1000.0]);
}

#[test]
fn the_per_direction_cap_refuses_segments_past_10_000_and_counts_them() {
    // cap.pcap: 10 005 one-byte segments, none acknowledged; the last 5 are not timed.
    let k = Conn::new(10);
    let mut p = handshake(&k, 0, 1000);
    let n = u32::from(MAX_UNACKED) + 5;
    for i in 0..n {
        p.push(k.c(3000 + 10 * u64::from(i), ACK, C + 1 + i, S + 1, 1, 1000));
    }
    let last = 3000 + 10 * u64::from(n - 1);
    p.extend([
        // The end of segment 9 999 (index 9 998, sent at last − 60): listed, 9 999 entries go,
        // 90 µs.
        k.s(last + 30, ACK, S + 1, C + 1 + 9_999, 0, 1000),
        // The end of index 10 000, which the cap refused: no sample.
        k.s(last + 40, ACK, S + 1, C + 1 + 10_001, 0, 1000),
        // Room again: the next segment is timed (10 µs later, 20 µs).
        k.c(last + 50, ACK, C + 1 + n, S + 1, 1, 1000),
        k.s(last + 70, ACK, S + 1, C + 2 + n, 0, 1000),
    ]);
    let t = run(&[], &p);
    assert_eq!(t.count(UNTIMED), 5.0);
    assert_samples(&rtt_from(&t, &k, k.client.ip), &[1000.0, 90.0, 20.0]);
}

#[test]
fn the_shared_budget_refuses_segments_and_an_ack_gives_the_room_back() {
    // max_flows 2: a budget of 2 × 128 bytes for the rings of all flows; a ring of n 16-byte
    // records is charged 16 n + 16 bytes and grows 1, 2, 4, 8 while the budget allows.
    let (a, b) = (Conn::new(11), Conn::new(12));
    let config = [("max_flows", "2")];
    let data = |k: &Conn, t0: u64, n: u32| -> Vec<PacketFields> {
        (0..n).map(|i| k.c(t0 + u64::from(i), ACK, C + 1 + 10 * i, S + 1, 10, 1000)).collect()
    };
    let mut p = data(&a, 0, 8); // a: 8 records, 144 bytes
    // b: 1, 2, 4 records (80 bytes); the 112 bytes left hold 6; the 7th is refused.
    p.extend(data(&b, 100, 7));
    // A repeat of b's 6th segment needs no room: timed (its first send's time kept).
    p.push(b.c(300, ACK, C + 51, S + 1, 10, 1000));
    // a's ACK frees its 144 bytes: b's 8th segment is timed (its ring grows to 12).
    p.push(a.s(400, ACK, S + 1, C + 81, 0, 1000));
    p.push(b.c(500, ACK, C + 71, S + 1, 10, 1000));
    p.push(b.s(600, ACK, S + 1, C + 61, 0, 1000)); // the 6th end: from 105 µs
    p.push(b.s(650, ACK, S + 1, C + 71, 0, 1000)); // the refused 7th end: no sample
    p.push(b.s(700, ACK, S + 1, C + 81, 0, 1000)); // the 8th: from 500 µs
    let t = run(&config, &p);
    assert_eq!(t.count(UNTIMED), 1.0);
    // a: 400 − 7 µs. b: its 6th end from the first send (600 − 105), then the 8th segment.
    assert_samples(&rtt_from(&t, &a, a.client.ip), &[393.0]);
    assert_samples(&rtt_from(&t, &b, b.client.ip), &[495.0, 200.0]);
}

#[test]
fn timing_state_is_freed_with_its_flow() {
    let mut r = runner(&[("max_flows", "2"), ("idle_timeout_seconds", "10")]);
    let mem = |r: &Runner<TcpAnalysis>| r.analyzer().map(TcpAnalysis::timing_memory);
    let send = |r: &mut Runner<TcpAnalysis>, p: &[PacketFields]| {
        let mut b = BatchBuilder::new();
        for x in p {
            b.push(x);
        }
        r.process(&b.build()).expect("process");
    };
    let (k1, k2, k3) = (Conn::new(13), Conn::new(14), Conn::new(15));
    // A bare ACK allocates nothing.
    send(&mut r, &[k1.s(0, ACK, S + 1, C + 1, 0, 1000)]);
    assert_eq!(mem(&r), Some((0, 0)));
    // A SYN does: one flow, one record of 16 bytes and 16 of overhead.
    send(&mut r, &[k2.c(10, SYN, C, 0, 0, 1000)]);
    assert_eq!(mem(&r), Some((1, 32)));
    // Acknowledged: the ring is freed, the flow's entry stays.
    send(&mut r, &[k2.s(20, SYN | ACK, S, C + 1, 0, 1000)]);
    assert_eq!(mem(&r), Some((1, 32)));
    send(&mut r, &[k2.c(30, ACK, C + 1, S + 1, 0, 1000)]);
    assert_eq!(mem(&r), Some((1, 0)));
    // Evicted (the table holds 2): k1 goes first, then k2 with its state.
    send(&mut r, &[k2.c(40, ACK, C + 1, S + 1, 100, 1000), k3.c(50, SYN, C, 0, 0, 1000)]);
    assert_eq!(mem(&r), Some((2, 64)));
    send(&mut r, &[k1.c(60, SYN, C, 0, 0, 1000)]);
    assert_eq!(mem(&r), Some((2, 64)));
    // Port reuse: k1's new SYN starts a new connection without the old state.
    send(&mut r, &[k1.c(70, SYN, C + 5000, 0, 0, 1000)]);
    assert_eq!(mem(&r), Some((2, 64)));
    // Idle expiry, then the end of the capture.
    r.tick(at(20_000_000), false).expect("tick");
    assert_eq!(mem(&r), Some((0, 0)));
    send(&mut r, &[k3.c(20_000_100, ACK, C + 1, S + 1, 10, 1000)]);
    assert_eq!(mem(&r), Some((1, 32)));
    r.tick(at(20_000_100), true).expect("end");
    assert_eq!(mem(&r), Some((0, 0)));
}

#[test]
fn the_handshake_is_per_pair_and_counted_once_per_connection() {
    let (k1, k2) = (Conn::new(16), Conn::new(17));
    let mut p = handshake(&k1, 0, 150); // iRTT 300 µs
    p.extend([
        k1.c(1000, PSH | ACK, C + 1, S + 1, 100, 1000),
        k1.s(1100, ACK, S + 1, C + 101, 0, 1000),
        // k2: the server's data (ACK, no SYN) completes the handshake, 2 ms after the SYN.
        k2.c(2000, SYN, C, 0, 0, 64240),
        k2.s(3000, SYN | ACK, S, C + 1, 0, 65160),
        k2.s(4000, PSH | ACK, S + 1, C + 1, 10, 1000),
        k2.c(4100, ACK, C + 1, S + 11, 0, 1000),
    ]);
    let t = run(&[], &p);
    let h1 = t.series(HANDSHAKE, k1.client.ip, k1.server.ip, 0).expect("k1");
    assert_samples(&h1, &[300.0]);
    let h2 = t.series(HANDSHAKE, k2.client.ip, k2.server.ip, 0).expect("k2, src the client");
    assert_samples(&h2, &[2000.0]);
    assert_eq!(t.series_count(HANDSHAKE), 2);
}

#[test]
fn the_handshake_is_held_until_a_segment_shows_it() {
    // synretrans_high_isn.pcap: the retransmitted SYN (ack field 0) removes the SYN/ACK, whose
    // end lies past 2^31, so the handshake ACK acknowledges nothing: tshark shows no iRTT on
    // it. It shows it (the value set by that ACK) on the client's first data, 1 s later.
    let k = Conn::new(18);
    let s: u32 = 0x9000_0000;
    let mut p = vec![
        k.c(0, SYN, C, 0, 0, 64240),
        k.s(1000, SYN | ACK, s, C + 1, 0, 65160), // acks the SYN: 1 ms
        k.c(501_000, SYN, C, 0, 0, 64240),        // retransmitted SYN: the most recent one
        k.c(502_000, ACK, C + 1, s + 1, 0, 1000), // iRTT 1 ms from it, not shown
    ];
    // Never shown: no segment after it with payload or an exact ACK.
    let t = run(&[], &p);
    assert_eq!(t.histogram(HANDSHAKE).2, 0);
    p.push(k.c(1_502_000, PSH | ACK, C + 1, s + 1, 10, 1000));
    p.push(k.c(1_503_000, PSH | ACK, C + 11, s + 1, 10, 1000));
    let t = run(&[], &p);
    assert_samples(&t.series(HANDSHAKE, k.client.ip, k.server.ip, 0).expect("shown"), &[1000.0]);
    assert_samples(&rtt_from(&t, &k, k.client.ip), &[1000.0]);

    // An exact ACK from the server shows it too, and a zero iRTT stays unknown (irtt_zero):
    // the RST/ACK at the SYN's time leaves it unset, so the next ACK sets it.
    let k = Conn::new(19);
    let p = [
        k.c(0, SYN, C, 0, 0, 64240),
        k.s(0, RST | ACK, 0, C + 1, 0, 0), // iRTT 0: unknown, acks the SYN (0 µs)
        k.s(700, ACK, S + 1, C + 1, 0, 1000), // sets 700 µs; acks nothing
        k.c(800, ACK, C + 1, S + 1, 0, 1000), // acks nothing
        k.c(900, FIN | ACK, C + 1, S + 1, 0, 1000), // no payload
        k.s(1000, ACK, S + 1, C + 2, 0, 1000), // acks the FIN: shown here
    ];
    let t = run(&[], &p);
    assert_samples(&t.series(HANDSHAKE, k.client.ip, k.server.ip, 0).expect("shown"), &[700.0]);
}

#[test]
fn a_negative_handshake_is_observed_as_tshark_shows_it() {
    // The clock steps back 400 µs between the SYN and the ACK that acknowledges its SYN/ACK.
    let k = Conn::new(20);
    let p = [
        k.c(1000, SYN, C, 0, 0, 64240),
        k.s(1100, SYN | ACK, S, C + 1, 0, 65160),
        k.c(600, ACK, C + 1, S + 1, 0, 1000),
    ];
    let t = run(&[], &p);
    assert_samples(&t.series(HANDSHAKE, k.client.ip, k.server.ip, 0).expect("shown"), &[-400.0]);
    assert_samples(&rtt_from(&t, &k, k.server.ip), &[-500.0]);
}

/// Wireshark's list, literally (`tcp_analyze_sequence_number`, packet-tcp.c l.2478–2593):
/// entries (seq, nextseq, time) newest first, at most 10 000.
#[derive(Default)]
struct WiresharkList(Vec<(u32, u32, u64)>);

impl WiresharkList {
    fn insert(&mut self, seg: &Segment) {
        if (seg.len > 0 || seg.takes_sequence_number()) && self.0.len() < 10_000 {
            self.0.insert(0, (seg.seq, seg.end(), seg.time_ns));
        }
    }

    fn ack(&mut self, ack: u32, now: u64) -> Option<i64> {
        let gt = |x: u32, y: u32| (y.wrapping_sub(x) as i32) < 0;
        let le = |x: u32, y: u32| (x.wrapping_sub(y) as i32) <= 0;
        let mut res = None;
        let mut i = 0;
        while i < self.0.len() {
            let (seq, next, ts) = self.0[i];
            if ack == next {
                res = Some(now.wrapping_sub(ts) as i64);
            } else if gt(ack, seq) && le(ack, next) {
                self.0[i].0 = ack;
                continue;
            } else if gt(next, ack) {
                i += 1;
                continue;
            }
            self.0.remove(i);
        }
        res
    }
}

#[test]
fn the_records_give_what_wiresharks_list_gives_on_random_segments() {
    let mut budget_refusals = 0;
    for seed in 1..=48u64 {
        let mut rng = Rng(seed * 0x9e37_79b9);
        // Seeds past 40 have a small budget: a segment it refuses is left out of the model
        // list too, and the budget is never exceeded.
        let limit = if seed > 40 { 40 + 60 * (seed as usize - 40) } else { usize::MAX };
        let mut timings = Timings::new(limit);
        let mut handle = NONE;
        let mut lists = [WiresharkList::default(), WiresharkList::default()];
        let mut next = [rng.next() as u32, rng.next() as u32];
        // Some seeds spread sequence numbers over the whole space (unsorted rings), others
        // keep them near a sender's next byte; one fills a direction past the cap with ACKs
        // that stay far behind.
        let wild = seed % 4 == 0;
        let fill = seed == 10;
        let n = if fill { 11_000 } else { 3_000 };
        let mut t = 0u64;
        for i in 0..n {
            t += rng.below(1000);
            let d = if fill { usize::from(rng.below(50) == 0) } else { rng.below(2) as usize };
            let spread = |r: &mut Rng, base: u32| -> u32 {
                if wild && r.below(8) == 0 {
                    r.next() as u32
                } else {
                    base.wrapping_sub(r.below(6000) as u32).wrapping_add(r.below(2000) as u32)
                }
            };
            let seq = if fill { next[d] } else { spread(&mut rng, next[d]) };
            let ack = if fill && d == 1 {
                next[0].wrapping_sub(1 << 30)
            } else {
                spread(&mut rng, next[1 - d])
            };
            let len = [0, 0, 1, 100, 1448][(rng.below(5) as usize).max(2 * usize::from(fill))];
            let flags = [ACK, ACK, ACK, SYN, FIN | ACK, RST, SYN | FIN][rng.below(7) as usize];
            let seg = Segment { time_ns: t, seq, ack, len, window: 1000, flags };
            if (seg.end().wrapping_sub(next[d]) as i32) > 0 {
                next[d] = seg.end();
            }
            let timed = seg.len > 0 || seg.takes_sequence_number();
            let full = lists[d].0.len() >= usize::from(MAX_UNACKED);
            let expected = lists[1 - d].ack(ack, t);
            let mut got: Timing = timings.segment(&mut handle, d, &seg);
            assert_eq!(got.acked_ns, expected, "seed {seed}, segment {i}");
            if got.refused == Some(Cap::Budget) {
                // What the table does next (with no expired flow to sweep here): try again,
                // growing as far as the budget allows.
                got.refused = timings.retry(handle, d, &seg);
            }
            match got.refused {
                None => lists[d].insert(&seg),
                Some(Cap::Direction) => assert!(timed && full, "seed {seed}, segment {i}"),
                Some(Cap::Budget) => {
                    assert!(timed && limit < usize::MAX, "seed {seed}");
                    budget_refusals += 1;
                }
            }
            assert!(!(timed && full) || got.refused == Some(Cap::Direction));
            assert!(timings.used_bytes() <= limit, "seed {seed}: over the budget");
            if i % 101 == 0 || i == n - 1 {
                for (dir, list) in lists.iter().enumerate() {
                    let ends: std::collections::BTreeSet<u32> =
                        list.0.iter().map(|e| e.1).collect();
                    assert_eq!(
                        timings.direction(handle, dir),
                        (ends.len(), list.0.len()),
                        "seed {seed}, segment {i}: (distinct ends, entries) of direction {dir}"
                    );
                }
            }
        }
        if fill {
            assert_eq!(lists[0].0.len(), usize::from(MAX_UNACKED), "the cap was reached");
        }
    }
    assert!(budget_refusals > 100, "the small budgets refused {budget_refusals} segments");
}

#[test]
fn expired_flows_give_their_budget_back_whoever_notices() {
    // max_flows 2 (256 bytes of rings), idle timeout 1 s: a's 8 records (144 bytes) are dead
    // once a has been idle 1 s, so b's rings may grow past the 112 bytes left beside them
    // whether a tick swept a first or not.
    let (a, b) = (Conn::new(21), Conn::new(22));
    let config = [("max_flows", "2"), ("idle_timeout_seconds", "1")];
    let mut p: Vec<PacketFields> =
        (0..8).map(|i| a.c(i, ACK, C + 1 + 10 * i as u32, S + 1, 10, 1000)).collect();
    p.extend((0..7).map(|i| b.c(2_000_000 + i, ACK, C + 1 + 10 * i as u32, S + 1, 10, 1000)));
    p.push(b.s(2_000_100, ACK, S + 1, C + 71, 0, 1000));
    let lazily = run(&config, &p);
    assert_eq!(lazily.count(UNTIMED), 0.0);
    assert_samples(&rtt_from(&lazily, &b, b.client.ip), &[94.0]);
    // a left once (expired), b at the end.
    assert_eq!(lazily.histogram(DURATION).2, 2);
    run_in(&config, &p, &[1], true).assert_same(&lazily);
    run_in(&config, &p, &[8, 1], true).assert_same(&lazily);
}
