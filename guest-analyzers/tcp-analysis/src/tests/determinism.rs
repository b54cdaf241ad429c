//! Results do not depend on batch boundaries or tick timing: a random workload with every kind
//! of event, evictions and idle expiry, run whole and split in many ways.

use super::flows::Rng;
use super::*;

/// Per-connection sender state of the generator.
struct Side {
    next: u32,
}

/// `n` packets over `conns` connections: handshakes, data, bursts, losses and retransmissions,
/// duplicate ACKs, zero windows and probes, keep-alives, FIN, RST, new SYNs, sequence numbers
/// near 2^32,
/// and now and then a pause longer than the 2 s idle timeout used below.
fn workload(seed: u64, conns: u32, n: usize) -> Vec<PacketFields> {
    let mut rng = Rng(seed);
    let mut sides: Vec<[Side; 2]> = (0..conns)
        .map(|i| {
            let isn = |r: &mut Rng| match r.below(3) {
                0 => 0u32.wrapping_sub(r.below(5000) as u32),
                _ => r.next() as u32,
            };
            let _ = i;
            [Side { next: isn(&mut rng) }, Side { next: isn(&mut rng) }]
        })
        .collect();
    let mut us = 0u64;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        us += match rng.below(100) {
            0 => 2_500_000,
            1..=30 => rng.below(50),
            31..=60 => rng.below(4000),
            61..=90 => rng.below(30_000),
            _ => rng.below(400_000),
        };
        let i = rng.below(u64::from(conns)) as usize;
        let k = Conn::new(i as u32);
        let d = rng.below(2) as usize;
        let (seq, ack) = (sides[i][d].next, sides[i][1 - d].next);
        let (mut flags, mut s, mut a, mut len, mut win) = (ACK, seq, ack, 0u32, 1000u16);
        match rng.below(100) {
            0..=34 => len = [1, 100, 1448, 1448][rng.below(4) as usize],
            35..=44 => {
                s = seq.wrapping_sub([1, 100, 1448, 2896][rng.below(4) as usize]);
                len = 100;
            }
            45..=49 => {
                s = seq.wrapping_add(1448);
                len = 1448;
            }
            50..=54 => {
                s = seq.wrapping_sub(1);
                len = rng.below(2) as u32;
            }
            55..=62 => win = 0,
            63..=65 => flags = FIN | ACK,
            66 => flags = RST,
            67..=68 => {
                flags = SYN;
                a = 0;
            }
            69 => flags = SYN | ACK,
            70..=72 => len = 1,
            73..=75 => a = ack.wrapping_add(1448),
            76..=77 => {
                // The receiver asks three times for data below the sender's next byte, and the
                // sender re-sends it at once: a fast retransmission.
                let (r, asked) = (1 - d, seq.wrapping_sub(1448));
                let rs = sides[i][r].next;
                for _ in 0..3 {
                    us += 10;
                    out.push(if r == 0 {
                        k.c(us, ACK, rs, asked, 0, 1000)
                    } else {
                        k.s(us, ACK, rs, asked, 0, 1000)
                    });
                }
                us += 10;
                s = asked;
                len = 1448;
            }
            80 => {
                // A burst of 30 segments before any ACK: up to 30 records in flight.
                for _ in 0..29 {
                    let s = sides[i][d].next;
                    out.push(if d == 0 {
                        k.c(us, ACK, s, ack, 1448, 1000)
                    } else {
                        k.s(us, ACK, s, ack, 1448, 1000)
                    });
                    us += 5;
                    sides[i][d].next = s.wrapping_add(1448);
                }
                s = sides[i][d].next;
                len = 1448;
            }
            78..=79 => {
                // A segment overtakes the one before it by 10 µs: out-of-order.
                let ahead = seq.wrapping_add(100);
                out.push(if d == 0 {
                    k.c(us, ACK, ahead, ack, 100, 1000)
                } else {
                    k.s(us, ACK, ahead, ack, 100, 1000)
                });
                us += 10;
                len = 100;
                sides[i][d].next = ahead.wrapping_add(100);
            }
            _ => {}
        }
        let p =
            if d == 0 { k.c(us, flags, s, a, len, win) } else { k.s(us, flags, s, a, len, win) };
        out.push(p);
        let end = s.wrapping_add(len).wrapping_add(u32::from(flags & (SYN | FIN) != 0));
        if (end.wrapping_sub(sides[i][d].next) as i32) > 0 && flags & RST == 0 {
            sides[i][d].next = end;
        }
    }
    out
}

/// Small enough a table and short enough a timeout that evictions and expiry both happen; the
/// RTT budget (24 × 128 bytes) suffices.
const CONFIG: [(&str, &str); 3] =
    [("max_flows", "24"), ("idle_timeout_seconds", "2"), ("closed_linger_seconds", "1")];

/// A table of 3 flows (for 4 connections), whose RTT budget (3 × 128 bytes) runs out:
/// refusals happen too.
const TINY: [(&str, &str); 3] =
    [("max_flows", "3"), ("idle_timeout_seconds", "2"), ("closed_linger_seconds", "1")];

#[test]
fn batch_boundaries_and_ticks_do_not_change_the_results() {
    for (seed, config, conns) in
        [(1, &CONFIG, 40), (2, &CONFIG, 40), (3, &CONFIG, 40), (4, &TINY, 4)]
    {
        let packets = workload(seed, conns, 4000);
        let whole = run(config, &packets);
        // The workload exercises every counter, evictions and the three histograms, and the
        // tiny table its RTT budget.
        for f in SEGMENT_COUNTERS.into_iter().chain([EVICTED]) {
            assert!(whole.count(f) > 0.0, "seed {seed}: family {f} never counted");
        }
        assert!(whole.histogram(HANDSHAKE).2 > 0);
        assert!(whole.histogram(DURATION).2 > 40);
        assert!(whole.histogram(ACK_RTT).2 > 100);
        if config == &TINY {
            assert!(whole.count(UNTIMED) > 0.0, "seed {seed}: the RTT budget never ran out");
        }
        for size in 1..=7 {
            run_in(config, &packets, &[size], false).assert_same(&whole);
            run_in(config, &packets, &[size], true).assert_same(&whole);
        }
        let mut rng = Rng(seed ^ 0xfeed);
        let sizes: Vec<usize> = (0..97).map(|_| 1 + rng.below(200) as usize).collect();
        run_in(config, &packets, &sizes, true).assert_same(&whole);
    }
}

#[test]
fn a_replay_is_repeatable() {
    let packets = workload(9, 30, 3000);
    run_in(&CONFIG, &packets, &[64], true).assert_same(&run_in(&CONFIG, &packets, &[64], true));
}
