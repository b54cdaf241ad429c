//! Hand-built conversations for each rule; every expected count is what tshark 4.0.17 reports
//! for the same segments in a pcap (frame numbers in the comments are tshark's).

use super::*;

/// Client and server initial sequence numbers.
const C: u32 = 1000;
const S: u32 = 5000;

/// [retransmissions, fast, spurious, out-of-order, duplicate ACKs, zero windows].
type Counts = [f64; 6];

/// The three-way handshake starting at `t` with an initial RTT of `rtt` µs (frames 1–3).
fn handshake(k: &Conn, t: u64, rtt: u64) -> Vec<PacketFields> {
    vec![
        k.c(t, SYN, C, 0, 0, 64240),
        k.s(t + rtt / 2, SYN | ACK, S, C + 1, 0, 65160),
        k.c(t + rtt, ACK, C + 1, S + 1, 0, 1000),
    ]
}

fn assert_counts(t: &Totals, expected: Counts) {
    assert_eq!(t.segment_counts(), expected, "[retrans, fast, spurious, ooo, dupack, zerowin]");
}

#[test]
fn a_clean_transfer_counts_nothing() {
    let k = Conn::new(1);
    let mut p = handshake(&k, 0, 200);
    p.extend([
        k.c(300, PSH | ACK, C + 1, S + 1, 300, 1000),
        k.s(400, ACK, S + 1, C + 301, 0, 1000),
        k.s(500, PSH | ACK, S + 1, C + 301, 1000, 1000),
        k.c(600, ACK, C + 301, S + 1001, 0, 1000),
        k.s(610, PSH | ACK, S + 1001, C + 301, 1000, 1000),
        k.s(620, PSH | ACK, S + 2001, C + 301, 500, 1000),
        k.c(700, ACK, C + 301, S + 2501, 0, 1000),
        k.c(800, FIN | ACK, C + 301, S + 2501, 0, 1000),
        k.s(900, FIN | ACK, S + 2501, C + 302, 0, 1000),
        k.c(1000, ACK, C + 302, S + 2502, 0, 1000),
    ]);
    let t = run(&[], &p);
    assert_counts(&t, [0.0; 6]);
    // iRTT 200 µs, in the 250 µs bucket (index 3).
    let (buckets, sum, count) = t.histogram(HANDSHAKE);
    assert_eq!((count, buckets[3]), (1, 1));
    assert!((sum - 0.0002).abs() < 1e-12);
    // Closed by the server's FIN at 900 µs: in the 1 ms bucket (index 0); observed once,
    // not again at the end of the capture.
    let (buckets, sum, count) = t.histogram(DURATION);
    assert_eq!((count, buckets[0]), (1, 1));
    assert!((sum - 0.0009).abs() < 1e-12);
    assert_eq!(t.count(EVICTED), 0.0);
}

#[test]
fn a_retransmission_after_a_timeout() {
    let k = Conn::new(2);
    let mut p = handshake(&k, 0, 1000);
    p.extend([
        k.c(1100, ACK, C + 1, S + 1, 100, 1000),
        k.c(1110, ACK, C + 101, S + 1, 100, 1000),
        k.s(1600, ACK, S + 1, C + 101, 0, 1000),
        // The second segment again, 200 ms later: an RTO retransmission.
        k.c(201_110, ACK, C + 101, S + 1, 100, 1000),
        k.s(201_600, ACK, S + 1, C + 201, 0, 1000),
    ]);
    let t = run(&[], &p);
    assert_counts(&t, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(t.count_from(RETRANS, k.client.ip), 1.0);
    assert_eq!(t.count_from(RETRANS, k.server.ip), 0.0);
}

#[test]
fn fast_and_spurious_retransmissions_count_as_retransmissions() {
    let k = Conn::new(3);
    let mut p = handshake(&k, 0, 1000);
    for i in 0..5 {
        p.push(k.c(1010 + 10 * i, ACK, C + 1 + 100 * i as u32, S + 1, 100, 1000)); // 4–8
    }
    p.extend([
        k.s(1550, ACK, S + 1, C + 101, 0, 1000),   // 9
        k.s(1560, ACK, S + 1, C + 101, 0, 1000),   // 10 dup
        k.s(1570, ACK, S + 1, C + 101, 0, 1000),   // 11 dup
        k.s(1580, ACK, S + 1, C + 101, 0, 1000),   // 12 dup
        k.c(1680, ACK, C + 101, S + 1, 100, 1000), // 13 fast retransmission
        k.s(2180, ACK, S + 1, C + 501, 0, 1000),   // 14
        k.c(2190, ACK, C + 101, S + 1, 100, 1000), // 15 spurious: already acknowledged
    ]);
    let t = run(&[], &p);
    assert_counts(&t, [2.0, 1.0, 1.0, 0.0, 3.0, 0.0]);
    assert_eq!(t.count_from(DUP_ACK, k.server.ip), 3.0);
    assert_eq!(t.count_from(FAST, k.client.ip), 1.0);
}

#[test]
fn out_of_order_or_retransmission_by_the_initial_rtt() {
    let k = Conn::new(4);
    // iRTT 10 ms.
    let mut p = handshake(&k, 0, 10_000);
    p.extend([
        k.c(10_100, ACK, C + 1, S + 1, 100, 1000),   // 4
        k.c(10_110, ACK, C + 201, S + 1, 100, 1000), // 5 (a gap)
        k.c(15_110, ACK, C + 101, S + 1, 100, 1000), // 6 fills it 5 ms later: out-of-order
        k.c(15_120, ACK, C + 401, S + 1, 100, 1000), // 7 (a gap)
        k.c(30_120, ACK, C + 301, S + 1, 100, 1000), // 8 fills it 15 ms later: retransmission
        k.c(30_130, ACK, C + 501, S + 1, 100, 1000), // 9
        k.c(30_230, ACK, C + 501, S + 1, 100, 1000), // 10 ends at nextseq: retransmission
    ]);
    assert_counts(&run(&[], &p), [2.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn duplicate_acks_a_window_update_and_the_3ms_default_threshold() {
    // Captured mid-stream: no handshake, so the out-of-order threshold is 3 ms.
    let k = Conn::new(5);
    let p = [
        k.c(0, ACK, C + 1, S + 1, 100, 1000),
        k.c(10, ACK, C + 201, S + 1, 100, 1000),
        k.s(100, ACK, S + 1, C + 101, 0, 1000),
        k.s(200, ACK, S + 1, C + 101, 0, 1000),    // 4 dup
        k.s(300, ACK, S + 1, C + 101, 0, 1000),    // 5 dup
        k.s(400, ACK, S + 1, C + 101, 0, 2000),    // 6 window update: not a dup
        k.s(500, ACK, S + 1, C + 101, 0, 2000),    // 7 dup (third of the run)
        k.c(2010, ACK, C + 101, S + 1, 100, 1000), // 8 fast retransmission
        k.c(2020, ACK, C + 301, S + 1, 100, 1000),
        k.c(4030, ACK, C + 151, S + 1, 50, 1000), // 10 2 ms after: out-of-order
        k.c(8000, ACK, C + 201, S + 1, 100, 1000), // 11 6 ms after: retransmission
    ];
    assert_counts(&run(&[], &p), [2.0, 1.0, 0.0, 1.0, 3.0, 0.0]);
}

#[test]
fn keep_alives_and_their_acks_are_not_counted() {
    let k = Conn::new(6);
    let mut p = handshake(&k, 0, 1000);
    p.extend([
        k.c(1100, PSH | ACK, C + 1, S + 1, 100, 1000),
        k.s(1200, ACK, S + 1, C + 101, 0, 1000),
        k.c(60_001_200, ACK, C + 100, S + 1, 0, 1000), // 6 keep-alive
        k.s(60_001_300, ACK, S + 1, C + 101, 0, 1000), // 7 keep-alive ACK
        k.c(120_001_300, ACK, C + 100, S + 1, 1, 1000), // 8 keep-alive with a byte
        k.s(120_001_400, ACK, S + 1, C + 101, 0, 1000), // 9 keep-alive ACK
        k.s(120_001_500, ACK, S + 1, C + 101, 0, 1000), // 10 keep-alive ACK again
    ]);
    assert_counts(&run(&[], &p), [0.0; 6]);
}

#[test]
fn zero_window_probes_their_acks_and_the_window_update() {
    let k = Conn::new(7);
    let mut p = handshake(&k, 0, 1000);
    p.extend([
        k.c(1100, PSH | ACK, C + 1, S + 1, 100, 1000),
        k.s(1200, ACK, S + 1, C + 101, 0, 0), // 5 zero window
        k.c(201_200, ACK, C + 101, S + 1, 1, 1000), // 6 probe
        k.s(201_300, ACK, S + 1, C + 101, 0, 0), // 7 probe ACK, still zero
        k.c(601_300, ACK, C + 101, S + 1, 1, 1000), // 8 probe again: not a retransmission
        k.s(601_400, ACK, S + 1, C + 101, 0, 0), // 9 probe ACK, still zero
        k.s(701_400, ACK, S + 1, C + 101, 0, 1000), // 10 window update: not a dup ACK
        k.c(701_500, PSH | ACK, C + 101, S + 1, 100, 1000), // 11 the probed byte and more
        k.s(701_600, ACK, S + 1, C + 201, 0, 1000),
    ]);
    let t = run(&[], &p);
    assert_counts(&t, [0.0, 0.0, 0.0, 0.0, 0.0, 3.0]);
    assert_eq!(t.count_from(ZERO_WINDOW, k.server.ip), 3.0);
}

#[test]
fn syn_syn_ack_and_fin_retransmissions() {
    let k = Conn::new(8);
    let p = [
        k.c(0, SYN, C, 0, 0, 64240),
        k.c(1_000_000, SYN, C, 0, 0, 64240), // 2 retransmitted SYN
        k.s(1_000_500, SYN | ACK, S, C + 1, 0, 65160),
        k.s(2_000_500, SYN | ACK, S, C + 1, 0, 65160), // 4 retransmitted SYN/ACK
        k.c(2_001_000, ACK, C + 1, S + 1, 0, 1000),
        k.c(2_001_100, FIN | ACK, C + 1, S + 1, 0, 1000),
        k.c(2_301_100, FIN | ACK, C + 1, S + 1, 0, 1000), // 7 retransmitted FIN
        k.s(2_301_200, FIN | ACK, S + 1, C + 2, 0, 1000),
        k.c(2_301_300, ACK, C + 2, S + 2, 0, 1000),
    ];
    let t = run(&[], &p);
    assert_counts(&t, [3.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    // tshark's iRTT runs from the last SYN: 1.001 s (the 2.5 s bucket, index 15).
    let (buckets, sum, count) = t.histogram(HANDSHAKE);
    assert_eq!((count, buckets[15]), (1, 1));
    assert!((sum - 1.001).abs() < 1e-9);
    // From the first SYN to the server's FIN.
    let (_, sum, count) = t.histogram(DURATION);
    assert_eq!(count, 1);
    assert!((sum - 2.3012).abs() < 1e-9);
}

#[test]
fn retransmission_across_the_sequence_wrap() {
    let k = Conn::new(9);
    let c: u32 = 0xffff_ff00;
    let mut p = vec![
        k.c(0, SYN, c, 0, 0, 64240),
        k.s(500, SYN | ACK, S, c.wrapping_add(1), 0, 65160),
        k.c(1000, ACK, c.wrapping_add(1), S + 1, 0, 1000),
    ];
    // Four segments; the third crosses 2^32.
    for i in 0..4u32 {
        p.push(k.c(1010 + 10 * u64::from(i), ACK, c.wrapping_add(1 + 100 * i), S + 1, 100, 1000));
    }
    p.extend([
        k.s(1340, ACK, S + 1, c.wrapping_add(101), 0, 1000),
        k.c(301_340, ACK, c.wrapping_add(201), S + 1, 100, 1000), // 9 retransmission
        k.s(301_640, ACK, S + 1, c.wrapping_add(401), 0, 1000),
        k.c(301_650, ACK, c.wrapping_add(401), S + 1, 100, 1000), // new data after the wrap
    ]);
    assert_counts(&run(&[], &p), [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn resets_close_and_a_new_syn_reuses_the_ports() {
    let k = Conn::new(10);
    let p = [
        k.c(0, SYN, C, 0, 0, 64240),
        k.s(500, RST | ACK, 0, C + 1, 0, 0), // 2 refused (window 0 with RST: not counted)
        k.c(1_000_500, SYN, C, 0, 0, 64240), // 3 the same SYN again: retransmission
        k.s(1_001_000, RST | ACK, 0, C + 1, 0, 0),
        k.c(2_001_000, SYN, C + 77_777, 0, 0, 64240), // 5 a new connection on the same ports
        k.s(2_001_500, SYN | ACK, S, C + 77_778, 0, 65160),
        k.c(2_002_000, ACK, C + 77_778, S + 1, 0, 1000),
        k.c(2_002_100, ACK, C + 77_778, S + 1, 100, 1000),
        k.s(2_002_200, RST, S + 1, 0, 0, 0), // 9 reset
        k.s(2_002_300, RST, S + 1, 0, 0, 0), // 10 again: not a dup ACK
        k.c(2_002_400, ACK, C + 77_878, S + 1, 100, 1000), // 11 data after the reset
    ];
    let t = run(&[], &p);
    assert_counts(&t, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    // tshark's iRTT of the first connection is the RST/ACK (500 µs); the second's 1 ms.
    let (_, sum, count) = t.histogram(HANDSHAKE);
    assert_eq!(count, 2);
    assert!((sum - 0.0015).abs() < 1e-12);
    // Each connection observed once, closed by its first RST: 0.5 ms and 1.2 ms.
    let (_, sum, count) = t.histogram(DURATION);
    assert_eq!(count, 2);
    assert!((sum - 0.0017).abs() < 1e-12);
}

#[test]
fn acked_unseen_segments_as_tshark_4_0_handles_them() {
    let k = Conn::new(13);
    // The server acknowledges client data it was not seen sending, so the client's duplicate-ACK
    // count becomes Wireshark's (unsigned) -1: the server's quick retransmission is "fast".
    let mut p = handshake(&k, 0, 1000);
    p.extend([
        k.c(1100, ACK, C + 1, S + 1, 100, 1000),
        k.s(1200, ACK, S + 1, C + 301, 0, 1000), // 5 ACKed unseen segment
        k.s(1300, ACK, S + 1, C + 301, 100, 1000), // 6
        k.s(1800, ACK, S + 1, C + 301, 100, 1000), // 7 fast retransmission
    ]);
    assert_counts(&run(&[], &p), [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);

    // With a gap in the client's data (here across 2^32), its highest contiguous sequence
    // number jumps to its highest one instead, and the retransmission is a plain one.
    let i: u32 = 0xffff_ff00;
    let p = [
        k.c(0, SYN, i, 0, 0, 1000),
        k.s(500, SYN | ACK, S, i + 1, 0, 1000),
        k.c(1000, ACK, i + 1, S + 1, 0, 1000),
        k.c(1100, ACK, 0x65, S + 1, 100, 1000), // 4 a gap across 2^32
        k.s(1200, ACK, S + 1, 0x65, 0, 1000),   // 5 ACKed unseen segment
        k.s(1300, ACK, S + 1, 0x65, 100, 1000), // 6
        k.s(1800, ACK, S + 1, 0x65, 100, 1000), // 7 a plain retransmission
    ];
    assert_counts(&run(&[], &p), [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);

    // The jump shows when a retransmitted SYN restores the next sequence number to the highest
    // contiguous one: the old data after it is a retransmission, not a new segment.
    let mut p = handshake(&k, 0, 1000);
    p.extend([
        k.c(1100, ACK, C + 1, S + 1, 100, 1000),
        k.c(1200, ACK, C + 201, S + 1, 100, 1000), // 5 a gap
        k.s(1300, ACK, S + 1, C + 250, 0, 1000),   // 6 ACKed unseen segment
        k.c(1_001_300, SYN, C, 0, 0, 1000),        // 7 retransmitted SYN
        k.c(2_001_300, ACK, C + 251, S + 1, 100, 1000), // 8 retransmission
    ]);
    assert_counts(&run(&[], &p), [2.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn counters_are_labelled_by_the_flagged_segment() {
    let mut k = Conn::new(11);
    k.device = 3;
    let p = [
        k.s(0, ACK, S + 1, C + 1, 0, 0),
        k.c(10, ACK, C + 1, S + 1, 100, 1000),
        k.c(300_000, ACK, C + 1, S + 1, 100, 1000),
    ];
    let mut r = runner(&[]);
    let mut b = BatchBuilder::new();
    for x in &p {
        b.push(x);
    }
    let out = r.process(&b.build()).expect("process");
    use wasmtap_sdk::wit::LabelValue::{Device, Ipv4};
    let labels = |f: u32| out.iter().find(|u| u.family == f).map(|u| u.labels.clone());
    let (c, s) = (u32::from(k.client.ip), u32::from(k.server.ip));
    assert_eq!(labels(ZERO_WINDOW), Some(vec![Ipv4(s), Ipv4(c), Device(3)]));
    assert_eq!(labels(RETRANS), Some(vec![Ipv4(c), Ipv4(s), Device(3)]));
    // One update per series per call.
    assert_eq!(out.len(), 2);
}

#[test]
fn non_tcp_records_and_fragments_are_skipped() {
    let k = Conn::new(12);
    let udp = PacketFields { ip_proto: 17, ..PacketFields::ipv4(k.client.ip, k.server.ip) };
    let fragment = k.c(0, ACK, C, S, 100, 0).with_bits(packet_bits::FRAGMENT);
    let t = run(&[], &[udp, PacketFields::default(), fragment, fragment]);
    assert_counts(&t, [0.0; 6]);
    assert_eq!(t.histogram(DURATION).2, 0);
}
