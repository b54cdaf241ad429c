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

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Gauge, Label, Updates};

/// Labels of every family here: who sent, to whom, on which device.
const LABELS: [&str; 3] = ["src_ip", "dst_ip", "device"];

/// Header flag and option counters per (sender, receiver, device).
pub struct HeaderFlags {
    resets: Counter,
    dont_fragment: Counter,
    wscale_options: Counter,
    wscale_shift: Gauge,
    data_segments: Counter,
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
        Ok((Self { resets, dont_fragment, wscale_options, wscale_shift, data_segments }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        // The last two pairs are counted here and emitted when they make room or the batch
        // ends: a bulk transfer's segments and ACKs then cost a scan of a few entries each,
        // not a series lookup per counter.
        let mut recent = Recent::default();
        for p in batch {
            let df = p.is_ipv4() && p.dont_fragment();
            let rst = p.has_tcp() && p.rst();
            let wscale = if p.has_tcp() { p.wscale() } else { None };
            let data = p.has_tcp() && p.payload_len() > 0;
            if !(df || rst || wscale.is_some() || data) {
                continue;
            }
            let pair = [p.src_label(), p.dst_label(), p.device_label()];
            let c = recent.counts(pair, |old| self.emit(old, out));
            c.resets += u32::from(rst);
            c.dont_fragment += u32::from(df);
            c.data_segments += u32::from(data);
            if let Some(shift) = wscale {
                c.wscale_options += 1;
                // Packets come in time order within a batch; the gauge keeps the latest.
                if c.wscale.is_none_or(|(_, at)| p.time_ns() >= at) {
                    c.wscale = Some((shift, p.time_ns()));
                }
            }
        }
        for pair in recent.drain() {
            self.emit(&pair, out);
        }
        Ok(())
    }
}

impl HeaderFlags {
    /// Emits one pair's counts: only the counters that counted something, as per packet.
    fn emit(&self, (labels, c): &(Pair, Counts), out: &mut Updates) {
        if c.resets > 0 {
            out.add(self.resets, labels, f64::from(c.resets));
        }
        if c.dont_fragment > 0 {
            out.add(self.dont_fragment, labels, f64::from(c.dont_fragment));
        }
        if let Some((shift, at_ns)) = c.wscale {
            out.add(self.wscale_options, labels, f64::from(c.wscale_options));
            out.set(self.wscale_shift, labels, f64::from(shift), at_ns);
        }
        if c.data_segments > 0 {
            out.add(self.data_segments, labels, f64::from(c.data_segments));
        }
    }
}

/// A pair's label values: source, destination, device.
type Pair = [Label; 3];

/// What one pair counted since it entered [`Recent`].
#[derive(Default, Clone, Copy)]
struct Counts {
    resets: u32,
    dont_fragment: u32,
    wscale_options: u32,
    /// The latest shift and its packet time.
    wscale: Option<(u8, u64)>,
    data_segments: u32,
}

/// Pairs kept at once: the two directions of a connection, or of several between the same two
/// hosts. With many connections interleaved most packets miss anyway, and a longer scan only
/// costs (measured with bench/throughput: 4 was no faster on the lossy capture and slower on the
/// synthetic one).
const RECENT: usize = 2;

/// The last few pairs seen, replaced oldest first.
#[derive(Default)]
struct Recent {
    entries: [Option<(Pair, Counts)>; RECENT],
    next: usize,
}

impl Recent {
    /// The counts of `pair`, making room for it (the oldest entry goes to `evict`) if new.
    #[inline]
    fn counts(&mut self, pair: Pair, evict: impl FnOnce(&(Pair, Counts))) -> &mut Counts {
        let found = self.entries.iter().position(|e| e.as_ref().is_some_and(|(p, _)| *p == pair));
        let i = match found {
            Some(i) => i,
            None => {
                let i = self.next;
                self.next = (i + 1) % RECENT;
                if let Some(old) = &self.entries[i] {
                    evict(old);
                }
                self.entries[i] = Some((pair, Counts::default()));
                i
            }
        };
        // The entry at `i` was found or just filled.
        &mut self.entries[i].get_or_insert_with(|| (pair, Counts::default())).1
    }

    /// The pairs still held, oldest first.
    fn drain(&mut self) -> impl Iterator<Item = (Pair, Counts)> + '_ {
        let start = self.next;
        (0..RECENT).filter_map(move |k| self.entries[(start + k) % RECENT].take())
    }
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
        // More pairs than the recent set holds, in a round robin, so every pair is evicted
        // and comes back many times: its totals must still be exact.
        let pairs = 3 * RECENT as u8 + 1;
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
}
