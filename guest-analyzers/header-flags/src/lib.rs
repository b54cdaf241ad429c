//! The `header-flags` analyzer: counts packets by notable IP and TCP header flags and options.
//!
//! Input: every record of every batch. Output, per sender, receiver and device (`src_ip`,
//! `dst_ip`, `device`; the source is the packet's sender):
//! - `tcp_resets_total`: TCP segments with RST set;
//! - `ip_dont_fragment_total`: IPv4 packets with DF set;
//! - `tcp_window_scale_options_total`: TCP segments carrying a window-scale option;
//! - `tcp_window_scale_shift`: the shift last advertised (a gauge, at its packet time);
//! - `tcp_data_segments_total`: TCP segments carrying payload (`tcp.len > 0`), the denominator
//!   of per-pair ratios such as retransmissions or out-of-order segments per data segment.
//!
//! (The host prefixes the names with `wasmtap_`.)

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Gauge, LabelMap, Updates};

/// Labels of every family here: who sent, to whom, on which device.
const LABELS: [&str; 3] = ["src_ip", "dst_ip", "device"];

/// Header flag and option counters per (sender, receiver, device).
pub struct HeaderFlags {
    resets: Counter,
    dont_fragment: Counter,
    wscale_options: Counter,
    wscale_shift: Gauge,
    data_segments: Counter,
    /// Counts per (sender, receiver, device) since the last flush: one lookup per packet, one
    /// update per counter and pair per flush.
    pairs: LabelMap<3, Counts>,
}

impl Analyzer for HeaderFlags {
    // Ours, and tested not to fail: the cheaper path is worth the rare loss.
    const HOLD_UPDATES: bool = true;

    fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let mut info = AnalyzerInfo::new("header-flags", env!("CARGO_PKG_VERSION"));
        let resets = info.counter(
            "tcp_resets_total",
            "TCP segments with the RST flag set (tshark: tcp.flags.reset == 1).",
            &LABELS,
        );
        let dont_fragment = info.counter(
            "ip_dont_fragment_total",
            "IPv4 packets with the don't-fragment flag set (tshark: ip.flags.df == 1).",
            &LABELS,
        );
        let wscale_options = info.counter(
            "tcp_window_scale_options_total",
            "TCP segments carrying a window scale option (tshark: tcp.options.wscale.shift present).",
            &LABELS,
        );
        let wscale_shift = info.gauge(
            "tcp_window_scale_shift",
            "The window scale shift the sender advertised last (tshark: tcp.options.wscale.shift).",
            &LABELS,
        );
        let data_segments = info.counter(
            "tcp_data_segments_total",
            "TCP segments carrying payload, retransmissions included; the denominator of per-pair \
             retransmission and out-of-order ratios (tshark: tcp.len > 0).",
            &LABELS,
        );
        let pairs = LabelMap::new();
        Ok((
            Self { resets, dont_fragment, wscale_options, wscale_shift, data_segments, pairs },
            info,
        ))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        for p in batch {
            let df = p.is_ipv4() && p.dont_fragment();
            let rst = p.has_tcp() && p.rst();
            let wscale = if p.has_tcp() { p.wscale() } else { None };
            let data = p.has_tcp() && p.payload_len() > 0;
            if !(df || rst || wscale.is_some() || data) {
                continue;
            }
            let c = self.pairs.entry([p.src_label(), p.dst_label(), p.device_label()]);
            c.resets += u32::from(rst);
            c.dont_fragment += u32::from(df);
            c.data_segments += u32::from(data);
            if let Some(shift) = wscale {
                c.wscale_options += 1;
                // Packets come in time order; the gauge keeps the latest.
                if c.wscale.is_none_or(|(_, at)| p.time_ns() >= at) {
                    c.wscale = Some((shift, p.time_ns()));
                }
            }
        }
        if self.pairs.len() >= MAX_PAIRS {
            self.flush(out)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Updates) -> Result<(), String> {
        let Self { resets, dont_fragment, wscale_options, wscale_shift, data_segments, pairs } =
            self;
        for (labels, c) in pairs.drain() {
            // Only the counters that counted something, as if emitted per packet.
            if c.resets > 0 {
                out.add(*resets, &labels, f64::from(c.resets));
            }
            if c.dont_fragment > 0 {
                out.add(*dont_fragment, &labels, f64::from(c.dont_fragment));
            }
            if let Some((shift, at_ns)) = c.wscale {
                out.add(*wscale_options, &labels, f64::from(c.wscale_options));
                out.set(*wscale_shift, &labels, f64::from(shift), at_ns);
            }
            if c.data_segments > 0 {
                out.add(*data_segments, &labels, f64::from(c.data_segments));
            }
        }
        Ok(())
    }
}

/// Pairs counted at most between flushes: at five series each, with what the runner may hold
/// ([`wasmtap_sdk::HOLD_MAX_SERIES`]), one returned list stays below the host's 65,536 updates.
const MAX_PAIRS: usize = 4096;

/// What one (sender, receiver, device) counted since the last flush.
#[derive(Default, Clone, Copy)]
struct Counts {
    resets: u32,
    dont_fragment: u32,
    wscale_options: u32,
    /// The latest shift and its packet time.
    wscale: Option<(u8, u64)>,
    data_segments: u32,
}

wasmtap_sdk::export_analyzer!(HeaderFlags);

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use wasmtap_sdk::wit::{LabelValue, MetricKind, MetricUpdate, UpdateValue};
    use wasmtap_sdk::{BatchBuilder, PacketFields, Runner, packet_bits, tcp_flags};

    const RESETS: u32 = 0;
    const DF: u32 = 1;
    const WSCALE_OPTIONS: u32 = 2;
    const WSCALE_SHIFT: u32 = 3;
    const DATA_SEGMENTS: u32 = 4;

    fn runner() -> Runner<HeaderFlags> {
        let mut r = Runner::new();
        let info = r.init(Config::default()).expect("init");
        let names: Vec<_> = info.families.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            names,
            vec![
                ("tcp_resets_total", MetricKind::Counter),
                ("ip_dont_fragment_total", MetricKind::Counter),
                ("tcp_window_scale_options_total", MetricKind::Counter),
                ("tcp_window_scale_shift", MetricKind::Gauge),
                ("tcp_data_segments_total", MetricKind::Counter),
            ]
        );
        assert!(info.families.iter().all(|f| f.label_names == LABELS));
        assert!(info.families.iter().all(|f| f.help.contains("tshark")));
        r
    }

    fn find(out: &[MetricUpdate], family: u32, src: u32) -> Option<&UpdateValue> {
        out.iter()
            .find(|u| u.family == family && u.labels[0] == LabelValue::Ipv4(src))
            .map(|u| &u.value)
    }

    #[test]
    fn counts_flags_per_sender() {
        let client = Ipv4Addr::new(10, 0, 0, 1);
        let server = Ipv4Addr::new(10, 0, 0, 2);
        let mut b = BatchBuilder::new();
        // Handshake: both SYNs carry window scale (client 7, server 9), both DF.
        b.push(
            &PacketFields::ipv4(client, server)
                .with_tcp(5000, 80, tcp_flags::SYN)
                .with_wscale(7)
                .with_time(100)
                .with_bits(packet_bits::DONT_FRAGMENT),
        );
        b.push(
            &PacketFields::ipv4(server, client)
                .with_tcp(80, 5000, tcp_flags::SYN | tcp_flags::ACK)
                .with_wscale(9)
                .with_time(200)
                .with_bits(packet_bits::DONT_FRAGMENT),
        );
        // A later, odd segment from the client re-advertising shift 0: the gauge follows it.
        b.push(
            &PacketFields::ipv4(client, server)
                .with_tcp(5000, 80, tcp_flags::ACK)
                .with_wscale(0)
                .with_time(300),
        );
        // Two resets from the server, one without DF.
        b.push(
            &PacketFields::ipv4(server, client)
                .with_tcp(80, 5000, tcp_flags::RST)
                .with_bits(packet_bits::DONT_FRAGMENT),
        );
        b.push(&PacketFields::ipv4(server, client).with_tcp(
            80,
            5000,
            tcp_flags::RST | tcp_flags::ACK,
        ));
        // Not counted: a plain ACK, and a UDP packet whose (meaningless) flag bytes say RST.
        b.push(&PacketFields::ipv4(client, server).with_tcp(5000, 80, tcp_flags::ACK));
        b.push(&PacketFields {
            ip_proto: 17,
            tcp_flags: tcp_flags::RST,
            ..PacketFields::ipv4(client, server)
        });

        let out = runner().process(&b.build()).expect("process");
        let c: u32 = client.into();
        let s: u32 = server.into();
        assert_eq!(find(&out, WSCALE_OPTIONS, c), Some(&UpdateValue::CounterAdd(2.0)));
        assert_eq!(find(&out, WSCALE_OPTIONS, s), Some(&UpdateValue::CounterAdd(1.0)));
        assert_eq!(find(&out, WSCALE_SHIFT, c), Some(&UpdateValue::GaugeSet((0.0, 300))));
        assert_eq!(find(&out, WSCALE_SHIFT, s), Some(&UpdateValue::GaugeSet((9.0, 200))));
        assert_eq!(find(&out, DF, c), Some(&UpdateValue::CounterAdd(1.0)));
        assert_eq!(find(&out, DF, s), Some(&UpdateValue::CounterAdd(2.0)));
        assert_eq!(find(&out, RESETS, s), Some(&UpdateValue::CounterAdd(2.0)));
        assert_eq!(find(&out, RESETS, c), None);
        // One update per series: 2 senders × (wscale options, shift, DF) + server resets.
        assert_eq!(out.len(), 7);
        let rst = out.iter().find(|u| u.family == RESETS).expect("resets");
        assert_eq!(
            rst.labels,
            vec![LabelValue::Ipv4(s), LabelValue::Ipv4(c), LabelValue::Device(0)]
        );
    }

    #[test]
    fn ipv6_has_no_dont_fragment_but_counts_options_and_resets() {
        let a: Ipv6Addr = "2001:db8::a".parse().expect("ip");
        let z = Ipv6Addr::LOCALHOST;
        let p = PacketFields::ipv6(a, z)
            .with_tcp(1, 2, tcp_flags::SYN | tcp_flags::RST)
            .with_wscale(14)
            .with_device(2)
            // A decoder never sets DF on IPv6; make sure the analyzer would not count it anyway.
            .with_bits(packet_bits::DONT_FRAGMENT);
        let out = runner().process(&BatchBuilder::new().push(&p).build()).expect("process");
        let families: Vec<u32> = out.iter().map(|u| u.family).collect();
        assert_eq!(families, vec![RESETS, WSCALE_OPTIONS, WSCALE_SHIFT]);
        assert_eq!(
            out[0].labels,
            vec![
                LabelValue::Ipv6((0x2001_0db8_0000_0000, 0xa)),
                LabelValue::Ipv6((0, 1)),
                LabelValue::Device(2)
            ]
        );
        assert_eq!(out[2].value, UpdateValue::GaugeSet((14.0, 0)));
    }

    /// The counter of `family` for (src, dst, device) in `out`, if updated.
    fn pair(out: &[MetricUpdate], family: u32, labels: [LabelValue; 3]) -> Option<&UpdateValue> {
        out.iter().find(|u| u.family == family && u.labels == labels).map(|u| &u.value)
    }

    #[test]
    fn counts_segments_with_payload_per_pair_and_device() {
        let client = Ipv4Addr::new(10, 0, 0, 1);
        let server = Ipv4Addr::new(10, 0, 0, 2);
        let (c, s) = (u32::from(client), u32::from(server));
        let mut b = BatchBuilder::new();
        // Counted, client -> server on device 0: a data segment, the same segment again (a
        // retransmission carries payload too), a FIN with the last bytes, and a SYN carrying
        // data (TCP Fast Open): tshark's tcp.len > 0 holds for all four.
        let data = PacketFields::ipv4(client, server).with_tcp(5000, 80, tcp_flags::ACK);
        b.push(&data.with_payload(1448));
        b.push(&data.with_payload(1448));
        let fin = tcp_flags::FIN | tcp_flags::ACK;
        b.push(&PacketFields::ipv4(client, server).with_tcp(5000, 80, fin).with_payload(10));
        b.push(
            &PacketFields::ipv4(client, server).with_tcp(5001, 80, tcp_flags::SYN).with_payload(1),
        );
        // Counted: the server's one answer with payload, and the client's segment on device 1.
        b.push(
            &PacketFields::ipv4(server, client).with_tcp(80, 5000, tcp_flags::PSH).with_payload(5),
        );
        b.push(&data.with_payload(1).with_device(1));
        // Not counted: the server's pure ACKs and its SYN/ACK, and a UDP packet with a payload.
        b.push(&PacketFields::ipv4(server, client).with_tcp(80, 5000, tcp_flags::ACK));
        b.push(&PacketFields::ipv4(server, client).with_tcp(
            80,
            5001,
            tcp_flags::SYN | tcp_flags::ACK,
        ));
        b.push(&PacketFields {
            ip_proto: 17,
            payload_len: 100,
            ..PacketFields::ipv4(client, server)
        });

        let out = runner().process(&b.build()).expect("process");
        let labels = |src: u32, dst: u32, dev: u16| {
            [LabelValue::Ipv4(src), LabelValue::Ipv4(dst), LabelValue::Device(dev)]
        };
        assert_eq!(pair(&out, DATA_SEGMENTS, labels(c, s, 0)), Some(&UpdateValue::CounterAdd(4.0)));
        assert_eq!(pair(&out, DATA_SEGMENTS, labels(s, c, 0)), Some(&UpdateValue::CounterAdd(1.0)));
        assert_eq!(pair(&out, DATA_SEGMENTS, labels(c, s, 1)), Some(&UpdateValue::CounterAdd(1.0)));
        // Nothing else: no DF, no RST, no window scale in this batch.
        assert_eq!(out.len(), 3, "{out:?}");
    }

    #[test]
    fn data_segments_count_ipv6_and_truncated_records_by_header_length() {
        let a: Ipv6Addr = "2001:db8::a".parse().expect("ip");
        let z: Ipv6Addr = "2001:db8::f".parse().expect("ip");
        // A record cut at the snap length still carries the payload length of its headers.
        let p = PacketFields::ipv6(a, z)
            .with_tcp(1, 2, tcp_flags::ACK)
            .with_payload(9000)
            .with_bits(packet_bits::TRUNCATED);
        let out =
            runner().process(&BatchBuilder::new().push(&p).push(&p).build()).expect("process");
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].family, DATA_SEGMENTS);
        assert_eq!(out[0].value, UpdateValue::CounterAdd(2.0));
        assert_eq!(
            out[0].labels,
            vec![
                LabelValue::Ipv6((0x2001_0db8_0000_0000, 0xa)),
                LabelValue::Ipv6((0x2001_0db8_0000_0000, 0xf)),
                LabelValue::Device(0)
            ]
        );
    }

    #[test]
    fn nothing_notable_emits_nothing() {
        let p = PacketFields::ipv4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST).with_tcp(
            1,
            2,
            tcp_flags::ACK,
        );
        assert_eq!(
            runner().process(&BatchBuilder::new().push(&p).push(&PacketFields::default()).build()),
            Ok(vec![])
        );
    }

    #[test]
    fn many_interleaved_pairs_count_exactly() {
        // Pairs in a round robin: each one's totals must be exact.
        let pairs = 7u8;
        let mut b = BatchBuilder::new();
        for round in 0..10u64 {
            for i in 0..pairs {
                let src = Ipv4Addr::new(10, 0, 1, i);
                let dst = Ipv4Addr::new(10, 0, 2, i);
                let mut p = PacketFields::ipv4(src, dst)
                    .with_tcp(1000, 80, tcp_flags::ACK)
                    .with_payload(100)
                    .with_time(round * 1000 + u64::from(i))
                    .with_bits(packet_bits::DONT_FRAGMENT);
                if round == 3 {
                    p = p.with_wscale(i % 15);
                }
                b.push(&p);
            }
        }
        let out = runner().process(&b.build()).expect("process");
        for i in 0..pairs {
            let src = u32::from(Ipv4Addr::new(10, 0, 1, i));
            assert_eq!(find(&out, DATA_SEGMENTS, src), Some(&UpdateValue::CounterAdd(10.0)));
            assert_eq!(find(&out, DF, src), Some(&UpdateValue::CounterAdd(10.0)));
            assert_eq!(find(&out, WSCALE_OPTIONS, src), Some(&UpdateValue::CounterAdd(1.0)));
            let at = 3000 + u64::from(i);
            let shift = f64::from(i % 15);
            assert_eq!(find(&out, WSCALE_SHIFT, src), Some(&UpdateValue::GaugeSet((shift, at))));
        }
        // One update per series: four families per pair.
        assert_eq!(out.len(), 4 * usize::from(pairs));
    }
    #[test]
    fn counts_held_over_calls_come_back_exact_and_the_pair_table_stays_bounded() {
        let mut r = runner();
        // More pairs than the table keeps between flushes, over several held calls, each pair
        // twice: a data segment with DF and a window scale option.
        let pairs = MAX_PAIRS as u32 + 904;
        let packet = |i: u32, shift: u8, at: u64| {
            PacketFields::ipv4(Ipv4Addr::from(0x0a00_0000 + i), Ipv4Addr::new(10, 99, 0, 1))
                .with_tcp(1000, 80, tcp_flags::ACK)
                .with_payload(10)
                .with_wscale(shift)
                .with_time(at)
                .with_bits(packet_bits::DONT_FRAGMENT)
        };
        for round in 0..2u64 {
            for chunk in (0..pairs).collect::<Vec<_>>().chunks(1000) {
                let mut b = BatchBuilder::new();
                for &i in chunk {
                    b.push(&packet(i, (round as u8) + 3, round * 10 + 1));
                }
                assert_eq!(r.process(&b.hold(true).build()).expect("held"), vec![]);
                let held = r.analyzer().expect("loaded").pairs.len();
                assert!(held < MAX_PAIRS, "{held} pairs kept after a call");
            }
        }
        let out = r.process(&BatchBuilder::new().build()).expect("flush");
        for i in [0, 1, MAX_PAIRS as u32, pairs - 1] {
            let src = 0x0a00_0000 + i;
            assert_eq!(find(&out, DATA_SEGMENTS, src), Some(&UpdateValue::CounterAdd(2.0)));
            assert_eq!(find(&out, DF, src), Some(&UpdateValue::CounterAdd(2.0)));
            assert_eq!(find(&out, WSCALE_OPTIONS, src), Some(&UpdateValue::CounterAdd(2.0)));
            assert_eq!(find(&out, WSCALE_SHIFT, src), Some(&UpdateValue::GaugeSet((4.0, 11))));
        }
        assert_eq!(out.len(), 4 * pairs as usize);
        assert_eq!(r.process(&BatchBuilder::new().build()).expect("nothing left"), vec![]);
    }

    #[test]
    fn a_tick_returns_the_counts_held() {
        let mut r = runner();
        let p = PacketFields::ipv4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST).with_tcp(
            1,
            2,
            tcp_flags::RST,
        );
        assert_eq!(r.process(&BatchBuilder::new().push(&p).hold(true).build()), Ok(vec![]));
        let out = r.tick(5, false).expect("tick");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].family, RESETS);
        assert_eq!(out[0].value, UpdateValue::CounterAdd(1.0));
    }
}
