//! Tests: hand-built TCP conversations, run through the analyzer the way the host runs it
//! (`Runner`, packed batches, ticks), with the metric updates summed over all calls.
//!
//! The expected counts of the conversations in `cases` were checked against tshark 4.0.17 on
//! the same segments written to a pcap.

mod cases;
mod determinism;
mod flows;
mod rtt;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use wasmtap_sdk::wit::{MetricKind, MetricUpdate, UpdateValue};
use wasmtap_sdk::{BatchBuilder, Config, PacketFields, Runner, packet_bits};

use crate::TcpAnalysis;

/// Family indices, in declaration order.
pub const RETRANS: u32 = 0;
pub const FAST: u32 = 1;
pub const SPURIOUS: u32 = 2;
pub const OUT_OF_ORDER: u32 = 3;
pub const DUP_ACK: u32 = 4;
pub const ZERO_WINDOW: u32 = 5;
pub const HANDSHAKE: u32 = 6;
pub const DURATION: u32 = 7;
pub const EVICTED: u32 = 8;
pub const ACK_RTT: u32 = 9;
pub const UNTIMED: u32 = 10;

/// Upper bounds of the RTT histograms' buckets (ACK RTT and handshake), `+Inf` after them.
pub const RTT_BOUNDS: [f64; 18] = [
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0, 2.5, 5.0, 10.0,
];

/// The per-segment counters.
pub const SEGMENT_COUNTERS: [u32; 6] =
    [RETRANS, FAST, SPURIOUS, OUT_OF_ORDER, DUP_ACK, ZERO_WINDOW];

/// TCP flags.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Packet time of `us` microseconds into a test capture.
pub fn at(us: u64) -> u64 {
    1_700_000_000_000_000_000 + us * 1_000
}

/// One side of a test connection's 4-tuple.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// A test connection between a client and a server, with the flow id the host would give it.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub client: Endpoint,
    pub server: Endpoint,
    pub flow_id: u64,
    pub device: u16,
}

impl Conn {
    /// Connection number `i`: 10.0.x.y:(40000 + i % 20000) to 10.99.0.1:80.
    pub fn new(i: u32) -> Self {
        let ip = Ipv4Addr::new(10, (i >> 8) as u8, (i & 0xff) as u8, 1);
        Self {
            client: Endpoint { ip, port: 40_000 + (i % 20_000) as u16 },
            server: Endpoint { ip: Ipv4Addr::new(10, 99, 0, 1), port: 80 },
            flow_id: 0x5eed_0000_0000 + u64::from(i),
            device: 0,
        }
    }

    /// A segment from `from` to `to` of this connection.
    #[allow(clippy::too_many_arguments)]
    fn segment(
        &self,
        from: Endpoint,
        to: Endpoint,
        us: u64,
        flags: u8,
        seq: u32,
        ack: u32,
        len: u32,
        window: u16,
    ) -> PacketFields {
        let mut p = PacketFields::ipv4(from.ip, to.ip)
            .with_tcp(from.port, to.port, flags)
            .with_payload(len)
            .with_time(at(us))
            .with_device(self.device);
        p.flow_id = self.flow_id;
        p.seq = seq;
        p.ack = ack;
        p.window = window;
        // The host's direction bit: the source is the higher (address, port).
        if (u32::from(from.ip), from.port) > (u32::from(to.ip), to.port) {
            p.packet_bits |= packet_bits::DIRECTION;
        }
        p
    }

    /// Client to server.
    pub fn c(&self, us: u64, flags: u8, seq: u32, ack: u32, len: u32, window: u16) -> PacketFields {
        self.segment(self.client, self.server, us, flags, seq, ack, len, window)
    }

    /// Server to client.
    pub fn s(&self, us: u64, flags: u8, seq: u32, ack: u32, len: u32, window: u16) -> PacketFields {
        self.segment(self.server, self.client, us, flags, seq, ack, len, window)
    }
}

/// Metric updates summed over calls: counters per series, histograms per series.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Totals {
    counters: BTreeMap<(u32, String), f64>,
    histograms: BTreeMap<(u32, String), (Vec<u64>, f64, u64)>,
}

impl Totals {
    fn add(&mut self, updates: Vec<MetricUpdate>) {
        for u in updates {
            let key = (u.family, format!("{:?}", u.labels));
            match u.value {
                UpdateValue::CounterAdd(v) => *self.counters.entry(key).or_default() += v,
                UpdateValue::Histogram(h) => {
                    let e = self
                        .histograms
                        .entry(key)
                        .or_insert_with(|| (vec![0; h.bucket_counts.len()], 0.0, 0));
                    for (a, b) in e.0.iter_mut().zip(&h.bucket_counts) {
                        *a += b;
                    }
                    e.1 += h.sum;
                    e.2 += h.count;
                }
                UpdateValue::GaugeSet(_) => panic!("no gauges here"),
            }
        }
    }

    /// Sum of a counter family over all series.
    pub fn count(&self, family: u32) -> f64 {
        self.counters.iter().filter(|((f, _), _)| *f == family).map(|(_, v)| v).sum()
    }

    /// A counter family's value for segments sent by `src`.
    pub fn count_from(&self, family: u32, src: Ipv4Addr) -> f64 {
        let prefix = format!("[{:?}", wasmtap_sdk::wit::LabelValue::Ipv4(u32::from(src)));
        self.counters
            .iter()
            .filter(|((f, l), _)| *f == family && l.starts_with(&prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// The six per-segment counters, in [`SEGMENT_COUNTERS`] order.
    pub fn segment_counts(&self) -> [f64; 6] {
        SEGMENT_COUNTERS.map(|f| self.count(f))
    }

    /// A histogram family summed over series: (bucket counts, sum, count).
    pub fn histogram(&self, family: u32) -> (Vec<u64>, f64, u64) {
        let mut out: (Vec<u64>, f64, u64) = (Vec::new(), 0.0, 0);
        for ((f, _), (b, s, c)) in &self.histograms {
            if *f != family {
                continue;
            }
            out.0.resize(b.len(), 0);
            for (a, x) in out.0.iter_mut().zip(b) {
                *a += x;
            }
            out.1 += s;
            out.2 += c;
        }
        out
    }

    /// A histogram series of a per-pair family: (bucket counts, sum, count), if present.
    pub fn series(
        &self,
        family: u32,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        device: u16,
    ) -> Option<(Vec<u64>, f64, u64)> {
        use wasmtap_sdk::wit::LabelValue::{Device, Ipv4};
        let key = format!("{:?}", [Ipv4(u32::from(src)), Ipv4(u32::from(dst)), Device(device)]);
        self.histograms.get(&(family, key)).cloned()
    }

    /// The number of series of a family.
    pub fn series_count(&self, family: u32) -> usize {
        self.histograms.keys().chain(self.counters.keys()).filter(|(f, _)| *f == family).count()
    }

    /// Same counters and histogram counts; histogram sums equal up to rounding.
    pub fn assert_same(&self, other: &Totals) {
        assert_eq!(self.counters, other.counters);
        assert_eq!(
            self.histograms.keys().collect::<Vec<_>>(),
            other.histograms.keys().collect::<Vec<_>>()
        );
        for (k, (b, s, c)) in &self.histograms {
            let (b2, s2, c2) = &other.histograms[k];
            assert_eq!((b, c), (b2, c2), "{k:?}");
            assert!((s - s2).abs() <= 1e-9 * s.abs().max(1.0), "{k:?}: {s} vs {s2}");
        }
    }
}

/// A runner initialised with `config`, after checking the declared families.
pub fn runner(config: &[(&str, &str)]) -> Runner<TcpAnalysis> {
    let mut r = Runner::new();
    let entries = config.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let info = r.init(Config::new(entries)).expect("init");
    let kinds: Vec<_> = info.families.iter().map(|f| (f.name.as_str(), f.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("tcp_retransmissions_total", MetricKind::Counter),
            ("tcp_fast_retransmissions_total", MetricKind::Counter),
            ("tcp_spurious_retransmissions_total", MetricKind::Counter),
            ("tcp_out_of_order_total", MetricKind::Counter),
            ("tcp_duplicate_acks_total", MetricKind::Counter),
            ("tcp_zero_window_total", MetricKind::Counter),
            ("tcp_handshake_seconds", MetricKind::Histogram),
            ("tcp_connection_duration_seconds", MetricKind::Histogram),
            ("tcp_analysis_flows_evicted_total", MetricKind::Counter),
            ("tcp_ack_rtt_seconds", MetricKind::Histogram),
            ("tcp_analysis_rtt_segments_untimed_total", MetricKind::Counter),
        ]
    );
    for f in [0, 1, 2, 3, 4, 5, 6, 9].map(|i| &info.families[i]) {
        assert_eq!(f.label_names, ["src_ip", "dst_ip", "device"], "{}", f.name);
    }
    assert_eq!(info.families[7].label_names, ["device"]);
    assert!(info.families[8].label_names.is_empty());
    assert!(info.families[10].label_names.is_empty());
    for f in [6, 9].map(|i| &info.families[i]) {
        assert_eq!(f.buckets, RTT_BOUNDS, "{}", f.name);
    }
    r
}

/// Runs `packets` in batches of the given sizes (cycled), ticking with the latest packet time
/// after each batch if `ticks`, and ends with an end-of-capture tick.
pub fn run_in(
    config: &[(&str, &str)],
    packets: &[PacketFields],
    sizes: &[usize],
    ticks: bool,
) -> Totals {
    let mut r = runner(config);
    let mut totals = Totals::default();
    let mut latest = 0;
    let mut rest = packets;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at(size.clamp(1, rest.len()));
        rest = tail;
        let mut b = BatchBuilder::new();
        for p in batch {
            b.push(p);
            latest = latest.max(p.time_ns);
        }
        totals.add(r.process(&b.build()).expect("process"));
        if ticks {
            totals.add(r.tick(latest, false).expect("tick"));
        }
    }
    totals.add(r.tick(latest, true).expect("end tick"));
    totals
}

/// Runs `packets` as one batch, then the end-of-capture tick.
pub fn run(config: &[(&str, &str)], packets: &[PacketFields]) -> Totals {
    run_in(config, packets, &[packets.len().max(1)], false)
}
