//! Hand-built frames and the pcap files that carry them, for the tests whose expected values
//! come from how their input was built: etherparse's `PacketBuilder` makes Ethernet +
//! IPv4/IPv6 + TCP frames from a [`TcpSegment`] (lengths and checksums included), `pcap-file`
//! writes them ([`Pcap`]: a classic pcap, microsecond timestamps, Ethernet), to a file or to
//! memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder, TcpHeader, TcpOptionElement};
use pcap_file::pcap::{PcapPacket, PcapWriter};

/// TCP flag bits (the low byte of the flags field).
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// The pcap file header's length: where the first record starts.
pub const PCAP_HEADER_LEN: usize = 24;

/// Locally administered MACs that no test interface has, so that a receiving stack drops the
/// frames without answering: the lower address of a segment's two has the first, the higher
/// one the second, so each direction has its own pair.
const MAC_LOWER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_HIGHER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// TTL / hop limit of every packet: Linux's default.
const TTL: u8 = 64;
/// Packet time of the frames [`write_pcap`] writes (14 Nov 2023), and their spacing.
const WRITE_PCAP_START: Duration = Duration::from_secs(1_700_000_000);
const WRITE_PCAP_SPACING: Duration = Duration::from_millis(1);

/// One TCP segment to build. Start from [`TcpSegment::new`] and set what matters:
/// `TcpSegment { seq, flags: SYN, ..TcpSegment::new(src, sport, dst, dport) }`.
#[derive(Debug, Clone)]
pub struct TcpSegment {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    /// The acknowledgment number field, written as given (whatever the ACK flag).
    pub ack: u32,
    /// [`FIN`], [`SYN`], [`RST`], [`PSH`], [`ACK`] or'ed together.
    pub flags: u8,
    pub window: u16,
    /// TCP options, in order (etherparse pads them to a multiple of 4 bytes).
    pub options: Vec<TcpOptionElement>,
    /// The payload: this many zero bytes.
    pub payload_len: usize,
    /// The IPv4 identification (unused for IPv6).
    pub ip_id: u16,
    /// The IPv4 don't-fragment flag (unused for IPv6).
    pub dont_fragment: bool,
}

impl TcpSegment {
    /// A segment from `src`:`sport` to `dst`:`dport` with sequence and acknowledgment numbers
    /// 0, no flags, a window of 64,240 (Linux's first), no options, no payload, IP id 0 and DF
    /// set.
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> TcpSegment {
        TcpSegment {
            src,
            dst,
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags: 0,
            window: 64_240,
            options: Vec::new(),
            payload_len: 0,
            ip_id: 0,
            dont_fragment: true,
        }
    }

    /// The Ethernet frame of this segment, with valid IP and TCP checksums.
    pub fn frame(&self) -> Vec<u8> {
        let (smac, dmac) =
            if self.src < self.dst { (MAC_LOWER, MAC_HIGHER) } else { (MAC_HIGHER, MAC_LOWER) };
        let eth = PacketBuilder::ethernet2(smac, dmac);
        let ip = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = Ipv4Header::new(0, TTL, IpNumber::TCP, s.octets(), d.octets())
                    .expect("a zero payload length fits");
                h.identification = self.ip_id;
                h.dont_fragment = self.dont_fragment;
                eth.ip(IpHeaders::Ipv4(h, Default::default()))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), TTL),
            _ => panic!("mixed address families in {self:?}"),
        };
        let mut tcp = TcpHeader::new(self.sport, self.dport, self.seq, self.window);
        tcp.acknowledgment_number = self.ack;
        tcp.fin = self.flags & FIN != 0;
        tcp.syn = self.flags & SYN != 0;
        tcp.rst = self.flags & RST != 0;
        tcp.psh = self.flags & PSH != 0;
        tcp.ack = self.flags & ACK != 0;
        tcp.set_options(&self.options).expect("TCP options fit in 40 bytes");
        let builder = ip.tcp_header(tcp);
        let payload = vec![0u8; self.payload_len];
        let mut out = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut out, &payload).expect("a segment of a test capture fits");
        out
    }
}

/// An Ethernet/IPv4 TCP segment with RST|ACK set from `src:sport` to `dst:dport`.
pub fn tcp_reset(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    TcpSegment {
        seq: 1000,
        ack: 1,
        flags: RST | ACK,
        window: 0,
        ..TcpSegment::new(src.into(), sport, dst.into(), dport)
    }
    .frame()
}

/// One reset per source address `base.0.i` (i in `range`) to `dst`: one series per pair in
/// a per-pair family, each updated once.
pub fn resets_from(base: u8, range: std::ops::Range<u32>, dst: Ipv4Addr) -> Vec<Vec<u8>> {
    range
        .map(|i| {
            let [_, _, hi, lo] = i.to_be_bytes();
            tcp_reset(Ipv4Addr::new(10, base, hi, lo), dst, 40_000, 80)
        })
        .collect()
}

/// A pcap being written: to a file ([`Pcap::create`]) or to memory ([`Pcap::in_memory`]).
/// Frames must be written in time order.
pub struct Pcap<W: Write> {
    writer: PcapWriter<W>,
    frames: u64,
    bytes: usize,
}

impl Pcap<BufWriter<File>> {
    /// Creates `path` and writes the file header.
    pub fn create(path: &Path) -> Pcap<BufWriter<File>> {
        let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Pcap::new(BufWriter::with_capacity(1 << 20, file))
    }
}

impl Pcap<Vec<u8>> {
    /// A pcap in memory; [`Pcap::finish`] returns its bytes.
    pub fn in_memory() -> Pcap<Vec<u8>> {
        Pcap::new(Vec::new())
    }
}

impl<W: Write> Pcap<W> {
    fn new(out: W) -> Pcap<W> {
        let writer = PcapWriter::new(out).expect("writing the pcap header");
        Pcap { writer, frames: 0, bytes: PCAP_HEADER_LEN }
    }

    /// Appends one frame captured at `time_us` (µs since the Unix epoch).
    pub fn write(&mut self, time_us: u64, frame: &[u8]) {
        let len = u32::try_from(frame.len()).expect("frame fits a pcap record");
        let packet = PcapPacket::new(Duration::from_micros(time_us), len, frame);
        self.bytes += self.writer.write_packet(&packet).expect("writing a pcap record");
        self.frames += 1;
    }

    /// Appends the frame of `segment`, captured at `time_us`.
    pub fn write_segment(&mut self, time_us: u64, segment: &TcpSegment) {
        self.write(time_us, &segment.frame());
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes written so far, the file header included: where the next record will start.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Flushes the output and returns it.
    pub fn finish(self) -> W {
        let mut out = self.writer.into_writer();
        out.flush().expect("flushing the pcap");
        out
    }
}

/// Writes `frames` to `path` as a pcap, one millisecond apart.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut pcap = Pcap::create(path);
    for (i, f) in frames.iter().enumerate() {
        let at = WRITE_PCAP_START + WRITE_PCAP_SPACING * u32::try_from(i).expect("frame count");
        pcap.write(u64::try_from(at.as_micros()).expect("a time in µs"), f);
    }
    pcap.finish();
}
