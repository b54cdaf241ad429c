//! Unit tests: hand-built batches (the SDK's `BatchBuilder`) through the SDK's `Runner`, which
//! calls the analyzer as the host does and returns exactly the updates the host would receive.
//!
//! Inputs: packets written field by field, packet times in ns. Outputs: assertions on the
//! counter updates of each `process` and `tick` call, and on the attempt table.

use std::net::{Ipv4Addr, Ipv6Addr};

use wasmtap_sdk::wit::{LabelValue, MetricKind, MetricUpdate, UpdateValue};
use wasmtap_sdk::{BatchBuilder, PacketFields, Runner, tcp_flags};

use super::*;

/// Family indices, in the order `init` declares them.
const UNANSWERED: u32 = 0;
const REFUSED: u32 = 1;
const EVICTIONS: u32 = 2;

/// One second in ns.
const SEC: u64 = 1_000_000_000;
/// Packet time of the first packet of every test (an arbitrary recent date).
const T0: u64 = 1_700_000_000 * SEC;
/// The default timeout in ns.
const TIMEOUT: u64 = DEFAULT_TIMEOUT_MS * 1_000_000;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The server's label value.
const SERVER_LABEL: LabelValue = LabelValue::Ipv4(0x0a00_0002);

/// A client SYN from `sport` to the server's `dport` with initial sequence number `isn`.
fn syn(sport: u16, dport: u16, isn: u32, t: u64) -> PacketFields {
    PacketFields {
        seq: isn,
        ..PacketFields::ipv4(CLIENT, SERVER).with_tcp(sport, dport, tcp_flags::SYN).with_time(t)
    }
}

/// The server's answer to a SYN on (`sport`, `dport`) acknowledging `ack`, with `flags`.
fn answer(sport: u16, dport: u16, flags: u8, ack: u32, t: u64) -> PacketFields {
    PacketFields {
        seq: 0x5e4e_0000,
        ack,
        ..PacketFields::ipv4(SERVER, CLIENT).with_tcp(dport, sport, flags).with_time(t)
    }
}

fn syn_ack(sport: u16, dport: u16, isn: u32, t: u64) -> PacketFields {
    answer(sport, dport, tcp_flags::SYN | tcp_flags::ACK, isn.wrapping_add(1), t)
}

fn rst_ack(sport: u16, dport: u16, isn: u32, t: u64) -> PacketFields {
    answer(sport, dport, tcp_flags::RST | tcp_flags::ACK, isn.wrapping_add(1), t)
}

/// A runner initialised with `config`, its families checked.
fn runner(config: &[(&str, &str)]) -> Runner<SynNoAnswer> {
    let mut r = Runner::new();
    let entries = config.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let info = r.init(Config::new(entries)).expect("init");
    assert_eq!(info.name, "syn-no-answer");
    let families: Vec<_> =
        info.families.iter().map(|f| (f.name.as_str(), f.kind, f.label_names.join(","))).collect();
    assert_eq!(
        families,
        vec![
            ("tcp_syn_unanswered_total", MetricKind::Counter, "dst_ip,dst_port,device".into()),
            ("tcp_syn_refused_total", MetricKind::Counter, "dst_ip,dst_port,device".into()),
            ("tcp_syn_evictions_total", MetricKind::Counter, "device".into()),
        ]
    );
    r
}

/// `packets` as one batch through `process`.
fn process(r: &mut Runner<SynNoAnswer>, packets: &[PacketFields]) -> Vec<MetricUpdate> {
    let mut b = BatchBuilder::new();
    for p in packets {
        b.push(p);
    }
    r.process(&b.build()).expect("process")
}

fn tick(r: &mut Runner<SynNoAnswer>, now: u64, end: bool) -> Vec<MetricUpdate> {
    r.tick(now, end).expect("tick")
}

/// The updates as (family, labels, counter add).
fn counts(out: &[MetricUpdate]) -> Vec<(u32, Vec<LabelValue>, f64)> {
    out.iter()
        .map(|u| match u.value {
            UpdateValue::CounterAdd(v) => (u.family, u.labels.clone(), v),
            ref other => panic!("only counters expected, got {other:?}"),
        })
        .collect()
}

/// The labels of a per-destination series on the test server.
fn to_server(port: LabelValue, device: u16) -> Vec<LabelValue> {
    vec![SERVER_LABEL, port, LabelValue::Device(device)]
}

fn other() -> LabelValue {
    LabelValue::Text("other".into())
}

fn held(r: &Runner<SynNoAnswer>) -> usize {
    r.analyzer().expect("initialised").table().len()
}

#[test]
fn an_answered_handshake_counts_nothing_and_leaves_no_state() {
    let mut r = runner(&[]);
    let out = process(&mut r, &[syn(40_000, 443, 7, T0), syn_ack(40_000, 443, 7, T0 + 1_000)]);
    assert_eq!(out, vec![]);
    assert_eq!(held(&r), 0);
    assert_eq!(tick(&mut r, T0 + 100 * SEC, true), vec![]);
}

#[test]
fn a_rst_answer_counts_as_refused_in_the_same_call() {
    let mut r = runner(&[]);
    let out = process(
        &mut r,
        &[syn(40_000, 443, 7, T0).with_device(2), rst_ack(40_000, 443, 7, T0 + 50_000)],
    );
    assert_eq!(counts(&out), vec![(REFUSED, to_server(LabelValue::Number(443), 2), 1.0)]);
    assert_eq!(held(&r), 0);
    // Nothing is left to expire.
    assert_eq!(tick(&mut r, T0 + 100 * SEC, true), vec![]);
}

#[test]
fn an_unanswered_attempt_counts_once_after_the_timeout_despite_retransmissions() {
    let mut r = runner(&[]);
    // Linux retransmits a SYN after 1 s, 3 s, 7 s, ...
    assert_eq!(process(&mut r, &[syn(40_000, 5001, 9, T0), syn(40_000, 5001, 9, T0 + SEC)]), []);
    // Exactly at the deadline the attempt may still be answered.
    assert_eq!(tick(&mut r, T0 + TIMEOUT, false), vec![]);
    let out = tick(&mut r, T0 + TIMEOUT + 1, false);
    assert_eq!(counts(&out), vec![(UNANSWERED, to_server(other(), 0), 1.0)]);
    // Later retransmissions and a late answer count nothing more.
    let late = [syn(40_000, 5001, 9, T0 + 3 * SEC + 5), syn(40_000, 5001, 9, T0 + 7 * SEC)];
    assert_eq!(process(&mut r, &late), vec![]);
    assert_eq!(tick(&mut r, T0 + 8 * SEC, false), vec![]);
    assert_eq!(held(&r), 1, "kept while the client retransmits");
    assert_eq!(process(&mut r, &[syn_ack(40_000, 5001, 9, T0 + 9 * SEC)]), vec![]);
    assert_eq!(held(&r), 0, "the late answer ends it");
    assert_eq!(tick(&mut r, T0 + 100 * SEC, true), vec![]);
}

#[test]
fn a_counted_attempt_leaves_after_the_linger_time() {
    let mut r = runner(&[("linger_ms", "10000")]);
    process(&mut r, &[syn(40_000, 22, 9, T0), syn(40_000, 22, 9, T0 + 3 * SEC)]);
    let out = tick(&mut r, T0 + 4 * SEC, false);
    assert_eq!(counts(&out), vec![(UNANSWERED, to_server(LabelValue::Number(22), 0), 1.0)]);
    // Linger runs from the latest SYN (3 s): held at 13 s, gone after.
    tick(&mut r, T0 + 13 * SEC, false);
    assert_eq!(held(&r), 1);
    tick(&mut r, T0 + 13 * SEC + 1, false);
    assert_eq!(held(&r), 0);
    // The same SYN again after that is a new attempt, counted again.
    process(&mut r, &[syn(40_000, 22, 9, T0 + 20 * SEC)]);
    let out = tick(&mut r, T0 + 24 * SEC, false);
    assert_eq!(counts(&out), vec![(UNANSWERED, to_server(LabelValue::Number(22), 0), 1.0)]);
}

#[test]
fn the_answer_decides_in_packet_time() {
    let mut r = runner(&[]);
    // Answered exactly at the deadline: in time.
    let out = process(&mut r, &[syn(1, 80, 1, T0), syn_ack(1, 80, 1, T0 + TIMEOUT)]);
    assert_eq!(out, vec![]);
    // A RST one ns after the deadline: unanswered (decided on that packet), not refused.
    let out = process(&mut r, &[syn(2, 80, 2, T0), rst_ack(2, 80, 2, T0 + TIMEOUT + 1)]);
    assert_eq!(counts(&out), vec![(UNANSWERED, to_server(LabelValue::Number(80), 0), 1.0)]);
    assert_eq!(held(&r), 0, "the late RST ends the attempt");
    // The same within the timeout: refused.
    let out = process(&mut r, &[syn(3, 80, 3, T0), rst_ack(3, 80, 3, T0 + TIMEOUT)]);
    assert_eq!(counts(&out), vec![(REFUSED, to_server(LabelValue::Number(80), 0), 1.0)]);
}

#[test]
fn only_the_server_acknowledging_the_syn_answers_it() {
    let mut r = runner(&[]);
    let isn = u32::MAX; // ISN + 1 wraps to 0
    let mut wrong_ack = rst_ack(4, 443, isn, T0 + 10);
    wrong_ack.ack = 12_345;
    let mut bare_rst = rst_ack(4, 443, isn, T0 + 20);
    bare_rst.tcp_flags = tcp_flags::RST;
    // The client's own RST (it gave up), and a RST from another server port.
    let client_rst = PacketFields {
        seq: isn.wrapping_add(1),
        ..PacketFields::ipv4(CLIENT, SERVER).with_tcp(4, 443, tcp_flags::RST).with_time(T0 + 30)
    };
    let other_port = rst_ack(4, 444, isn, T0 + 40);
    let out = process(&mut r, &[syn(4, 443, isn, T0), wrong_ack, bare_rst, client_rst, other_port]);
    assert_eq!(out, vec![]);
    assert_eq!(r.analyzer().expect("init").table().get(&key(4, 443)).map(|a| a.isn), Some(isn));
    let out = process(&mut r, &[rst_ack(4, 443, isn, T0 + 50)]);
    assert_eq!(counts(&out), vec![(REFUSED, to_server(LabelValue::Number(443), 0), 1.0)]);
}

/// The table key of a client-to-server attempt on the test addresses.
fn key(sport: u16, dport: u16) -> Key {
    let mut client = [0; 16];
    let mut server = [0; 16];
    client[..4].copy_from_slice(&CLIENT.octets());
    server[..4].copy_from_slice(&SERVER.octets());
    Key { client, server, client_port: sport, server_port: dport, ipv6: false }
}

#[test]
fn a_syn_answer_may_acknowledge_fast_open_data() {
    let mut r = runner(&[]);
    let mut tfo = syn(5, 443, 100, T0);
    tfo = tfo.with_payload(10);
    let mut accepted = syn_ack(5, 443, 100, T0 + 10);
    accepted.ack = 111; // ISN + 1 + 10 bytes of data
    assert_eq!(process(&mut r, &[tfo, accepted]), vec![]);
    assert_eq!(held(&r), 0);
    let mut beyond = syn_ack(6, 443, 100, T0 + 10);
    beyond.ack = 112;
    process(&mut r, &[syn(6, 443, 100, T0).with_payload(10), beyond]);
    assert_eq!(held(&r), 1, "an ack beyond the SYN's data is not an answer to it");
}

#[test]
fn a_new_isn_on_the_same_ports_is_a_new_attempt() {
    let mut r = runner(&[]);
    let out = process(&mut r, &[syn(7, 443, 1_000, T0), syn(7, 443, 2_000, T0 + SEC)]);
    assert_eq!(counts(&out), vec![(UNANSWERED, to_server(LabelValue::Number(443), 0), 1.0)]);
    // The new attempt is refused; the old attempt's answer would not match it.
    let out = process(&mut r, &[rst_ack(7, 443, 1_000, T0 + SEC + 1)]);
    assert_eq!(out, vec![]);
    let out = process(&mut r, &[rst_ack(7, 443, 2_000, T0 + SEC + 2)]);
    assert_eq!(counts(&out), vec![(REFUSED, to_server(LabelValue::Number(443), 0), 1.0)]);
}

#[test]
fn a_copy_of_the_syn_on_another_device_is_the_same_attempt() {
    let mut r = runner(&[]);
    process(&mut r, &[syn(8, 6379, 5, T0).with_device(1), syn(8, 6379, 5, T0 + 20).with_device(4)]);
    let out = tick(&mut r, T0 + 4 * SEC, false);
    assert_eq!(counts(&out), vec![(UNANSWERED, to_server(LabelValue::Number(6379), 1), 1.0)]);
}

#[test]
fn the_end_of_a_capture_counts_expired_attempts_only() {
    let mut r = runner(&[]);
    process(&mut r, &[syn(9, 80, 1, T0), syn(10, 80, 1, T0 + 2 * SEC)]);
    // At 4 s the first is past its deadline; the second, 2 s old, has an unknown outcome.
    let out = tick(&mut r, T0 + 4 * SEC, true);
    assert_eq!(counts(&out), vec![(UNANSWERED, to_server(LabelValue::Number(80), 0), 1.0)]);
    assert_eq!(held(&r), 0, "the end of a capture clears the table");
}

#[test]
fn a_full_table_evicts_counted_attempts_first_and_counts_evictions() {
    let mut r = runner(&[("max_pending", "2")]);
    // Attempt A expires and counts (it stays, counted); B waits.
    process(&mut r, &[syn(11, 80, 1, T0).with_device(3)]);
    let out = process(&mut r, &[syn(12, 80, 1, T0 + 4 * SEC).with_device(3)]);
    assert_eq!(counts(&out), vec![(UNANSWERED, to_server(LabelValue::Number(80), 3), 1.0)]);
    assert_eq!(held(&r), 2);
    // C evicts A, the counted one; D then evicts B, the waiting one closest to its deadline.
    let out = process(&mut r, &[syn(13, 80, 1, T0 + 5 * SEC).with_device(5)]);
    assert_eq!(counts(&out), vec![(EVICTIONS, vec![LabelValue::Device(3)], 1.0)]);
    let out = process(&mut r, &[syn(14, 80, 1, T0 + 5 * SEC)]);
    assert_eq!(counts(&out), vec![(EVICTIONS, vec![LabelValue::Device(3)], 1.0)]);
    assert_eq!(held(&r), 2);
    // B's answer finds nothing; A's retransmission is a new attempt.
    let out = process(&mut r, &[rst_ack(12, 80, 1, T0 + 5 * SEC + 1)]);
    assert_eq!(out, vec![]);
    // C and D are refused; the table never held more than 2.
    let out =
        process(&mut r, &[rst_ack(13, 80, 1, T0 + 6 * SEC), rst_ack(14, 80, 1, T0 + 6 * SEC)]);
    assert_eq!(
        counts(&out),
        vec![
            (REFUSED, to_server(LabelValue::Number(80), 5), 1.0),
            (REFUSED, to_server(LabelValue::Number(80), 0), 1.0)
        ]
    );
}

#[test]
fn ipv6_attempts_and_a_shorter_timeout() {
    let mut r = runner(&[("timeout_ms", "100")]);
    let client: Ipv6Addr = "fd00::1".parse().expect("address");
    let server: Ipv6Addr = "fd00::2".parse().expect("address");
    let p = PacketFields {
        seq: 77,
        ..PacketFields::ipv6(client, server).with_tcp(50_000, 5432, tcp_flags::SYN).with_time(T0)
    };
    process(&mut r, &[p]);
    let out = tick(&mut r, T0 + 100_000_001, false);
    let labels = vec![
        LabelValue::Ipv6((0xfd00_0000_0000_0000, 2)),
        LabelValue::Number(5432),
        LabelValue::Device(0),
    ];
    assert_eq!(counts(&out), vec![(UNANSWERED, labels, 1.0)]);
}

#[test]
fn ports_outside_the_service_list_are_other() {
    assert!(SERVICE_PORTS.windows(2).all(|w| w[0] < w[1]), "sorted, for the binary search");
    assert_eq!(port_label(443), Label::Number(443));
    assert_eq!(port_label(27017), Label::Number(27017));
    for port in [0, 1, 5001, 5003, 49_152, 65_535] {
        assert_eq!(port_label(port), Label::Text("other"), "port {port}");
    }
}

#[test]
fn bad_settings_fail_init_with_the_key_named() {
    for (key, value) in [("timeout_ms", "0"), ("linger_ms", "soon"), ("max_pending", "-3")] {
        let mut r = Runner::<SynNoAnswer>::new();
        let cfg = Config::new(vec![(key.to_owned(), value.to_owned())]);
        let err = r.init(cfg).expect_err("invalid setting");
        assert!(err.contains(key) && err.contains(value), "{err}");
    }
    let defaults = settings(&Config::default()).expect("defaults");
    assert_eq!(
        defaults,
        Settings { timeout_ns: 3 * SEC, linger_ns: 65 * SEC, max_pending: DEFAULT_MAX_PENDING }
    );
}

#[test]
fn many_attempts_stay_within_the_cap_and_each_ends_once() {
    // A linger of 1 ms drops counted attempts at once, so that every eviction is of a waiting
    // attempt and every attempt ends exactly once: unanswered or evicted.
    let mut r = runner(&[("max_pending", "100"), ("linger_ms", "1")]);
    let (mut unanswered, mut evicted) = (0.0, 0.0);
    let mut add = |out: &[MetricUpdate]| {
        for (family, _, n) in counts(out) {
            match family {
                UNANSWERED => unanswered += n,
                EVICTIONS => evicted += n,
                other => panic!("family {other} unexpected"),
            }
        }
    };
    // 50 batches 100 ms apart of 64 SYNs each, on 500 client ports in turn: ports come round
    // again with a new ISN, and up to 100 of them wait at a time.
    for batch in 0..50u64 {
        let packets: Vec<_> = (0..64u64)
            .map(|i| {
                let port = 1_000 + ((batch * 64 + i) % 500) as u16;
                syn(port, 80, batch as u32, T0 + batch * 100_000_000 + i)
            })
            .collect();
        add(&process(&mut r, &packets));
        assert!(held(&r) <= 100, "{} attempts held", held(&r));
    }
    add(&tick(&mut r, T0 + 100 * SEC, true));
    assert!(evicted > 0.0 && unanswered > 0.0, "{unanswered} unanswered, {evicted} evicted");
    assert_eq!(unanswered + evicted, 3_200.0);
}
