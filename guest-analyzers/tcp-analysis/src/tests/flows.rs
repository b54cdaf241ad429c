//! The flow table: eviction, idle expiry, the closed-connection linger, the end of capture,
//! the configuration, and the index's consistency under random use.

use std::collections::HashMap;

use super::*;
use crate::table::{Flow, FlowTable, Removal, Stage};

const C: u32 = 1000;
const S: u32 = 5000;

#[test]
fn a_full_table_evicts_the_least_recently_seen_and_counts_it() {
    let (k1, k2, k3) = (Conn::new(1), Conn::new(2), Conn::new(3));
    let p = [
        k1.c(0, SYN, C, 0, 0, 1000),
        k2.c(1000, SYN, C, 0, 0, 1000),
        k1.s(1500, SYN | ACK, S, C + 1, 0, 1000),
        // Full: k2 is the least recently seen.
        k3.c(2000, SYN, C, 0, 0, 1000),
        // k2 comes back as a new flow (so its retransmitted SYN is not recognised) and
        // evicts k1.
        k2.c(1_000_000, SYN, C, 0, 0, 1000),
    ];
    let t = run(&[("max_flows", "2")], &p);
    assert_eq!(t.count(EVICTED), 2.0);
    assert_eq!(t.count(RETRANS), 0.0);
    // Evicted k2 (0 s) and k1 (1.5 ms), then k3 and the second k2 at the end of the capture.
    let (_, sum, count) = t.histogram(DURATION);
    assert_eq!(count, 4);
    assert!((sum - 0.0015).abs() < 1e-12);
}

#[test]
fn closed_connections_are_evicted_before_open_ones() {
    let (k1, k2, k3) = (Conn::new(1), Conn::new(2), Conn::new(3));
    let p = [
        k1.c(0, SYN, C, 0, 0, 1000),
        k1.s(100, RST | ACK, 0, C + 1, 0, 0),
        k2.c(200, SYN, C, 0, 0, 1000),
        // Full: k1 is closed, so it goes although k2 is older than k3.
        k3.c(300, SYN, C, 0, 0, 1000),
        k2.c(1_000_200, SYN, C, 0, 0, 1000),
    ];
    let t = run(&[("max_flows", "2")], &p);
    assert_eq!(t.count(EVICTED), 1.0);
    // k2 kept its state: its second SYN is a retransmission.
    assert_eq!(t.count(RETRANS), 1.0);
    // k1 once (at its RST, not again when evicted), k2 and k3 at the end.
    assert_eq!(t.histogram(DURATION).2, 3);
}

/// A connection idle for 15 s between its second and third segments, and another
/// connection's segment in the gap (so that a tick can come while the first is expired).
fn idle_gap() -> Vec<PacketFields> {
    let (k, other) = (Conn::new(4), Conn::new(40));
    vec![
        k.c(0, ACK, C, S, 100, 1000),
        k.c(5_000_000, ACK, C + 100, S, 100, 1000),
        other.c(16_000_000, ACK, C, S, 100, 1000),
        // Would be a retransmission, but the flow expired (idle 15 s > 10 s) and starts over.
        k.c(20_000_000, ACK, C + 100, S, 100, 1000),
        k.c(20_000_010, ACK, C + 100, S, 100, 1000),
    ]
}

#[test]
fn idle_flows_expire_in_packet_time_whoever_notices() {
    let config = [("idle_timeout_seconds", "10")];
    let p = idle_gap();
    let lazily = run(&config, &p);
    // The retransmission 10 µs after the restart is one; the one across the gap is not.
    assert_eq!(lazily.count(RETRANS), 1.0);
    assert_eq!(lazily.count(EVICTED), 0.0);
    // The first life lasted 5 s (observed at expiry), the second 10 µs and the other
    // connection 0 s (at the end).
    let (_, sum, count) = lazily.histogram(DURATION);
    assert_eq!(count, 3);
    assert!((sum - 5.00001).abs() < 1e-9);

    // The same with a tick sweeping between every pair of packets, and in one-packet batches.
    run_in(&config, &p, &[2], true).assert_same(&lazily);
    run_in(&config, &p, &[1], true).assert_same(&lazily);
    run_in(&config, &p, &[1], false).assert_same(&lazily);
}

#[test]
fn a_flow_idle_exactly_the_timeout_is_kept() {
    let k = Conn::new(5);
    let p = [k.c(0, ACK, C, S, 100, 1000), k.c(10_000_000, ACK, C, S, 100, 1000)];
    assert_eq!(run(&[("idle_timeout_seconds", "10")], &p).count(RETRANS), 1.0);
}

/// A closed connection and a retransmitted FIN `late_us` after the close.
fn late_fin(late_us: u64) -> Vec<PacketFields> {
    let k = Conn::new(6);
    vec![
        k.c(0, FIN | ACK, C, S, 0, 1000),
        k.s(100, FIN | ACK, S, C + 1, 0, 1000),
        k.c(100 + late_us, FIN | ACK, C, S + 1, 0, 1000),
    ]
}

#[test]
fn closed_connections_linger_for_late_segments() {
    // Within the default linger (60 s): still analyzed, the FIN is a retransmission, and the
    // connection was observed once, at its close.
    let t = run(&[], &late_fin(1_000_000));
    assert_eq!(t.count(RETRANS), 1.0);
    assert_eq!(t.histogram(DURATION).2, 1);
    // After a shorter linger: forgotten, so the late FIN starts a new flow.
    let t = run(&[("closed_linger_seconds", "0.5")], &late_fin(1_000_000));
    assert_eq!(t.count(RETRANS), 0.0);
    assert_eq!(t.histogram(DURATION).2, 2);
    assert_eq!(t.count(EVICTED), 0.0);
}

#[test]
fn the_end_of_capture_observes_open_connections_once() {
    let k = Conn::new(7);
    let mut r = runner(&[]);
    let mut b = BatchBuilder::new();
    b.push(&k.c(0, SYN, C, 0, 0, 1000)).push(&k.s(2_000_000, SYN | ACK, S, C + 1, 0, 1000));
    let mut t = Totals::default();
    t.add(r.process(&b.build()).expect("process"));
    assert_eq!(t.histogram(DURATION).2, 0);
    t.add(r.tick(at(3_000_000), false).expect("tick"));
    assert_eq!(t.histogram(DURATION).2, 0);
    t.add(r.tick(at(3_000_000), true).expect("end"));
    let (buckets, sum, count) = t.histogram(DURATION);
    // 2 s: the 2.5 s bucket (index 5).
    assert_eq!((count, buckets[5]), (1, 1));
    assert!((sum - 2.0).abs() < 1e-12);
    assert_eq!(r.analyzer().map(TcpAnalysis::flows), Some(0));
    assert_eq!(r.tick(at(3_000_000), true), Ok(vec![]));
}

#[test]
fn the_configuration_is_checked() {
    let init = |k: &str, v: &str| {
        Runner::<TcpAnalysis>::new().init(Config::new(vec![(k.to_owned(), v.to_owned())]))
    };
    for (k, v) in [
        ("max_flows", "0"),
        ("max_flows", "many"),
        ("max_flows", "10000000"),
        // Over the 40 MiB the analyzer allows itself with its timing state.
        ("max_flows", "200000"),
        ("idle_timeout_seconds", "0"),
        ("idle_timeout_seconds", "-5"),
        ("idle_timeout_seconds", "NaN"),
        ("closed_linger_seconds", "soon"),
    ] {
        let err = init(k, v).expect_err(v);
        assert!(err.starts_with(k), "{err}");
    }
    for (k, v) in [("max_flows", "1"), ("max_flows", "100000"), ("idle_timeout_seconds", "2.5")] {
        assert!(init(k, v).is_ok(), "{k}={v}");
    }
    // The default table, with the timing state it may hold, stays well inside the host's 64 MiB
    // per instance (native sizes here; wasm32's are smaller).
    assert!(FlowTable::memory_bytes(65_536) < 26 << 20);
    assert!(size_of::<Flow>() <= 160);
}

/// A tiny deterministic generator (xorshift64*), for reproducible random tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn the_index_and_lists_agree_with_a_model_under_random_use() {
    const MAX: usize = 64;
    let mut table = FlowTable::new(MAX, u64::MAX / 2, u64::MAX / 2);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Model: id → (stage, last use); evictions must take the closed, then open, LRU.
    let mut model: HashMap<u64, (Stage, u64)> = HashMap::new();
    for now in 1..20_000u64 {
        // Ids with equal low bits collide in the index and exercise backward-shift deletion.
        let id = rng.below(200) << 40 | rng.below(3);
        let mut evicted = Vec::new();
        let slot = table.get_or_insert(id, now, 0, &mut |f: &Flow, why| {
            assert_eq!(why, Removal::Evicted);
            evicted.push(f.id);
        });
        let flow = table.flow_mut(slot);
        assert_eq!(flow.id, id);
        for victim in evicted {
            let lru =
                |stage| model.iter().filter(|(_, (s, _))| *s == stage).min_by_key(|(_, (_, t))| *t);
            let expected = lru(Stage::Closed).or_else(|| lru(Stage::Open)).map(|(id, _)| *id);
            assert_eq!(Some(victim), expected);
            model.remove(&victim);
        }
        let stage = match model.get(&id) {
            Some((Stage::Closed, _)) => Stage::Closed,
            _ if rng.below(10) == 0 => Stage::Closed,
            _ => Stage::Open,
        };
        table.touch(slot, now, stage);
        model.insert(id, (stage, now));
        assert_eq!(table.len(), model.len());
        assert!(table.len() <= MAX);
    }
    // Every modelled flow is found (not re-created) and the table drains completely.
    for (id, (_, last)) in &model {
        let slot = table.get_or_insert(*id, 20_000, 0, &mut |_: &Flow, _| panic!("no removal"));
        assert_eq!(table.flow_mut(slot).last_ns, *last);
    }
    let mut drained = 0;
    table.drain(&mut |_: &Flow, why| {
        assert_eq!(why, Removal::EndOfCapture);
        drained += 1;
    });
    assert_eq!((drained, table.len()), (model.len(), 0));
}
