//! The `traffic` analyzer: how much is captured, and how big it is.
//!
//! Input: every record of every batch. Output, per device (`device` label):
//! - `packets_total`: every captured frame, IP or not;
//! - `ip_packet_size_bytes`: the IP length of IPv4 and IPv6 packets;
//! - `tcp_payload_size_bytes`: the payload length of segments with a TCP header.
//!
//! (The host prefixes the names with `wasmtap_`.)

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Histogram, Label, Updates};

/// IP length buckets: 64 catches bare ACKs and control packets (40–60 bytes), the powers of two
/// spread small to medium packets, 1500 is the Ethernet MTU, 9000 jumbo frames, and 65535 the
/// largest IPv4 total length (GRO/TSO super-packets show up on the capturing host); IPv6
/// jumbograms fall in `+Inf`.
const IP_SIZE_BUCKETS: [f64; 8] = [64.0, 128.0, 256.0, 512.0, 1024.0, 1500.0, 9000.0, 65535.0];

/// TCP payload buckets: 0 alone separates pure ACKs and control segments from data, 1460 is a
/// full segment on a 1500-byte MTU path (1448 with timestamps falls in the same bucket), 9000
/// covers jumbo frames and 65535 TSO/GRO super-segments.
const TCP_PAYLOAD_BUCKETS: [f64; 9] =
    [0.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 1460.0, 9000.0, 65535.0];

/// Packet counts and size distributions per device.
pub struct Traffic {
    packets: Counter,
    ip_size: Histogram,
    tcp_payload: Histogram,
}

impl Analyzer for Traffic {
    // Ours, and tested not to fail: the cheaper path is worth the rare loss.
    const HOLD_UPDATES: bool = true;

    fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let mut info = AnalyzerInfo::new("traffic", env!("CARGO_PKG_VERSION"));
        let packets = info.counter(
            "packets_total",
            "Captured frames, IP or not (tshark: the number of frames).",
            &["device"],
        );
        let ip_size = info.histogram(
            "ip_packet_size_bytes",
            "IP packet length from the header: IPv4 total length, or IPv6 payload length + 40 \
             (tshark: ip.len, ipv6.plen + 40).",
            &["device"],
            &IP_SIZE_BUCKETS,
        );
        let tcp_payload = info.histogram(
            "tcp_payload_size_bytes",
            "TCP payload length of segments with a TCP header (tshark: tcp.len).",
            &["device"],
            &TCP_PAYLOAD_BUCKETS,
        );
        Ok((Self { packets, ip_size, tcp_payload }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        // Packets come in runs from one device (a capture source fills a batch): bin a run
        // here and emit it once, instead of three series updates per packet.
        let mut run = Run::new(0);
        for p in batch {
            let device = p.device();
            if device != run.device {
                self.emit(&run, out);
                run = Run::new(device);
            }
            run.packets += 1;
            if p.is_ip() {
                run.ip_size.add(p.ip_len(), &IP_SIZE_BUCKETS);
            }
            if p.has_tcp() {
                run.tcp_payload.add(p.payload_len(), &TCP_PAYLOAD_BUCKETS);
            }
        }
        self.emit(&run, out);
        Ok(())
    }
}

impl Traffic {
    /// Emits a run's totals (nothing for an empty run or an empty histogram).
    fn emit(&self, run: &Run, out: &mut Updates) {
        if run.packets == 0 {
            return;
        }
        let device = [Label::Device(run.device)];
        out.add(self.packets, &device, run.packets as f64);
        for (histogram, bins) in
            [(self.ip_size, run.ip_size.view()), (self.tcp_payload, run.tcp_payload.view())]
        {
            if let Some((counts, sum)) = bins {
                out.observe_binned(histogram, &device, counts, sum as f64);
            }
        }
    }
}

/// One device's packets in a row: a count and two binned histograms.
struct Run {
    device: u16,
    packets: u64,
    ip_size: Bins<{ IP_SIZE_BUCKETS.len() + 1 }>,
    tcp_payload: Bins<{ TCP_PAYLOAD_BUCKETS.len() + 1 }>,
}

impl Run {
    fn new(device: u16) -> Self {
        Self { device, packets: 0, ip_size: Bins::default(), tcp_payload: Bins::default() }
    }
}

/// Histogram bins (the last is `+Inf`) and the exact sum of whole-number observations.
struct Bins<const N: usize> {
    counts: [u64; N],
    sum: u64,
}

impl<const N: usize> Default for Bins<N> {
    fn default() -> Self {
        Self { counts: [0; N], sum: 0 }
    }
}

impl<const N: usize> Bins<N> {
    /// The counts and the sum, unless nothing was observed.
    fn view(&self) -> Option<(&[u64], u64)> {
        self.counts.iter().any(|c| *c > 0).then_some((&self.counts[..], self.sum))
    }

    /// Counts `value` in the first bucket whose bound is at least it (Prometheus `le`), or in
    /// `+Inf`. The bounds are few and most values fall in the first ones: a scan.
    #[inline]
    fn add(&mut self, value: u32, bounds: &[f64]) {
        let v = f64::from(value);
        let bucket = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        if let Some(c) = self.counts.get_mut(bucket) {
            *c += 1;
        }
        self.sum += u64::from(value);
    }
}

wasmtap_sdk::export_analyzer!(Traffic);

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use wasmtap_sdk::wit::{HistogramDelta, LabelValue, MetricKind, UpdateValue};
    use wasmtap_sdk::{BatchBuilder, PacketFields, Runner, tcp_flags};

    fn runner() -> Runner<Traffic> {
        let mut r = Runner::new();
        let info = r.init(Config::default()).expect("init");
        let names: Vec<_> = info.families.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            names,
            vec![
                ("packets_total", MetricKind::Counter),
                ("ip_packet_size_bytes", MetricKind::Histogram),
                ("tcp_payload_size_bytes", MetricKind::Histogram),
            ]
        );
        assert!(info.families.iter().all(|f| f.label_names == ["device"]));
        r
    }

    fn histogram(u: &UpdateValue) -> &HistogramDelta {
        match u {
            UpdateValue::Histogram(d) => d,
            other => panic!("histogram expected, got {other:?}"),
        }
    }

    #[test]
    fn counts_every_frame_and_sizes_ip_and_tcp() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        let mut batch = BatchBuilder::new();
        // Device 0: a SYN (IP 40, payload 0), a 1448-byte data segment (IP 1488), a UDP packet
        // (IP 128, no TCP header), and an ARP frame (neither IP nor TCP).
        batch.push(&PacketFields::ipv4(a, b).with_tcp(1000, 80, tcp_flags::SYN));
        batch.push(&PacketFields::ipv4(a, b).with_tcp(1000, 80, tcp_flags::ACK).with_payload(1448));
        batch.push(&PacketFields { ip_len: 128, ip_proto: 17, ..PacketFields::ipv4(a, b) });
        batch.push(&PacketFields::default());
        // Device 3: one IPv6 segment with 100 bytes of payload (IP 40 + 20 + 100 = 160).
        batch.push(
            &PacketFields::ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST)
                .with_tcp(1, 2, tcp_flags::PSH | tcp_flags::ACK)
                .with_payload(100)
                .with_device(3),
        );

        let out = runner().process(&batch.build()).expect("process");
        // packets{0}, ip{0}, tcp{0}, packets{3}, ip{3}, tcp{3}: first-seen order.
        assert_eq!(out.len(), 6);
        assert_eq!((out[0].family, &out[0].labels), (0, &vec![LabelValue::Device(0)]));
        assert_eq!(out[0].value, UpdateValue::CounterAdd(4.0));

        let ip0 = histogram(&out[1].value);
        assert_eq!(out[1].family, 1);
        // 40 → le 64, 128 → le 128, 1488 → le 1500.
        assert_eq!(ip0.bucket_counts, vec![1, 1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!((ip0.count, ip0.sum), (3, 40.0 + 1488.0 + 128.0));

        let tcp0 = histogram(&out[2].value);
        assert_eq!(out[2].family, 2);
        // 0 → le 0, 1448 → le 1460.
        assert_eq!(tcp0.bucket_counts, vec![1, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!((tcp0.count, tcp0.sum), (2, 1448.0));

        assert_eq!(out[3].labels, vec![LabelValue::Device(3)]);
        assert_eq!(out[3].value, UpdateValue::CounterAdd(1.0));
        // IP length 160 → le 256.
        assert_eq!(histogram(&out[4].value).bucket_counts, vec![0, 0, 1, 0, 0, 0, 0, 0, 0]);
        // 100 → le 128.
        assert_eq!(histogram(&out[5].value).bucket_counts, vec![0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn oversized_packets_land_in_inf() {
        let p = PacketFields {
            ip_len: 70_000,
            ..PacketFields::ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST)
        };
        let out = runner().process(&BatchBuilder::new().push(&p).build()).expect("process");
        assert_eq!(out.len(), 2);
        assert_eq!(histogram(&out[1].value).bucket_counts, vec![0, 0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn an_empty_batch_emits_nothing() {
        assert_eq!(runner().process(&BatchBuilder::new().build()), Ok(vec![]));
    }
}
