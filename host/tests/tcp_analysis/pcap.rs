//! Writing pcap files from a test: a classic (microsecond) pcap writer and an encoder for
//! Ethernet + IPv4/IPv6 + TCP frames with valid IP and TCP checksums.
//!
//! Used by the tests that build their captures themselves (the hand-made edge cases, the
//! million-flow capture), so that each test's input is defined in the test.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;

/// TCP flag bits (the low byte of the flags field).
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// pcap link type of Ethernet frames.
const LINKTYPE_ETHERNET: u32 = 1;
/// Snapshot length written to the file header: whole frames are stored.
const SNAPLEN: u32 = 65_535;
/// Locally administered MAC addresses of the two ends (only the direction matters).
const MAC_LOWER: [u8; 6] = [0x02, 0x99, 0, 0, 0, 1];
const MAC_HIGHER: [u8; 6] = [0x02, 0x99, 0, 0, 0, 2];
/// TTL / hop limit of every packet: Linux's default.
const TTL: u8 = 64;

/// A classic pcap file (magic 0xa1b2c3d4, microsecond timestamps, Ethernet), written
/// through a buffer. Frames must be written in time order.
pub struct PcapWriter {
    out: BufWriter<File>,
    frames: u64,
}

impl PcapWriter {
    /// Creates `path` and writes the file header.
    pub fn create(path: &Path) -> PcapWriter {
        let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes()); // UTC
        header.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        header.extend_from_slice(&SNAPLEN.to_le_bytes());
        header.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&header).expect("write pcap header");
        PcapWriter { out, frames: 0 }
    }

    /// Appends one frame captured at `time_us` (µs since the Unix epoch).
    pub fn write(&mut self, time_us: u64, frame: &[u8]) {
        let len = u32::try_from(frame.len()).expect("frame fits a pcap record");
        let secs = u32::try_from(time_us / 1_000_000).expect("time before 2106");
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&secs.to_le_bytes());
        rec[4..8].copy_from_slice(&((time_us % 1_000_000) as u32).to_le_bytes());
        rec[8..12].copy_from_slice(&len.to_le_bytes());
        rec[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&rec).expect("write pcap record header");
        self.out.write_all(frame).expect("write pcap frame");
        self.frames += 1;
    }

    /// Flushes the file; returns the number of frames written.
    pub fn finish(mut self) -> u64 {
        self.out.flush().expect("flush pcap");
        self.frames
    }
}

/// One TCP segment to encode. The payload is `payload_len` zero bytes.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload_len: u16,
    /// An MSS option (SYNs).
    pub mss: Option<u16>,
}

/// One's-complement sum of `data` as big-endian 16-bit words, added to `acc`.
fn ones_sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Folds a one's-complement sum to 16 bits and complements it.
fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

impl TcpSegment {
    /// Appends the Ethernet frame of this segment to `out` (cleared first). `ip_id` is the
    /// IPv4 identification (unused for IPv6).
    pub fn encode(&self, ip_id: u16, out: &mut Vec<u8>) {
        out.clear();
        let options: &[u8] = match self.mss {
            Some(mss) => &[2, 4, (mss >> 8) as u8, mss as u8],
            None => &[],
        };
        let tcp_len = 20 + options.len() + usize::from(self.payload_len);
        // The MAC order follows the address order, so each direction has its own pair.
        let (smac, dmac) =
            if self.src < self.dst { (MAC_LOWER, MAC_HIGHER) } else { (MAC_HIGHER, MAC_LOWER) };
        out.extend_from_slice(&dmac);
        out.extend_from_slice(&smac);
        let pseudo = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out.extend_from_slice(&0x0800u16.to_be_bytes());
                let total = u16::try_from(20 + tcp_len).expect("IPv4 packet too long");
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
                ip[6] = 0x40; // DF
                ip[8] = TTL;
                ip[9] = 6;
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let sum = fold(ones_sum(&ip, 0));
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                out.extend_from_slice(&ip);
                let mut p = ones_sum(&s.octets(), 0);
                p = ones_sum(&d.octets(), p);
                p + 6 + tcp_len as u32
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out.extend_from_slice(&0x86ddu16.to_be_bytes());
                let plen = u16::try_from(tcp_len).expect("IPv6 payload too long");
                out.extend_from_slice(&[0x60, 0, 0, 0]);
                out.extend_from_slice(&plen.to_be_bytes());
                out.extend_from_slice(&[6, TTL]);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                let mut p = ones_sum(&s.octets(), 0);
                p = ones_sum(&d.octets(), p);
                p + 6 + tcp_len as u32
            }
            _ => panic!("mixed address families in {self:?}"),
        };
        let tcp_start = out.len();
        out.extend_from_slice(&self.sport.to_be_bytes());
        out.extend_from_slice(&self.dport.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ack.to_be_bytes());
        out.push((((20 + options.len()) / 4) << 4) as u8);
        out.push(self.flags);
        out.extend_from_slice(&self.window.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]); // checksum (below), urgent pointer
        out.extend_from_slice(options);
        out.resize(out.len() + usize::from(self.payload_len), 0);
        let sum = fold(ones_sum(&out[tcp_start..], pseudo));
        out[tcp_start + 16..tcp_start + 18].copy_from_slice(&sum.to_be_bytes());
    }
}
