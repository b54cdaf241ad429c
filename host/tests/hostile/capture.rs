//! A synthetic TCP capture for the hostile-analyzer suite, and a paced writer for it.
//!
//! Input: a seed. Output: a pcap (Ethernet, microsecond timestamps) of a few hundred TCP
//! connections over IPv4 and IPv6 — handshakes with and without window scaling, data both ways,
//! FIN or RST endings, DF on most IPv4 connections — with correct checksums and sequence numbers,
//! plus the counts it was built with (which tshark must agree with). [`Synthetic::pace_into`]
//! writes it into a FIFO over a set wall-clock time, so that a `host replay` reading the FIFO
//! lasts long enough for the failure policy's backoffs (100 ms, doubling) to run their course:
//! without pacing, a replay of a few thousand packets ends in milliseconds.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

/// Connections in the capture: with up to 20 data exchanges each, about 7,000 packets — 800+
/// batches of 8, enough for five failures per hostile analyzer on each of two workers.
const CONNECTIONS: u32 = 250;
/// Packet time between connection starts: the capture spans about 40 s of packet time, so the
/// analyzers get about 40 ticks.
const CONNECTION_SPACING_US: u64 = 160_000;
/// Packet time of the first packet (2024-01-01T00:00:00Z), in µs since the epoch.
const START_US: u64 = 1_704_067_200_000_000;

/// TCP flag bits.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// The capture and what it holds.
pub struct Synthetic {
    /// The whole pcap file.
    pub bytes: Vec<u8>,
    /// Where each packet record (header and data) ends in `bytes`, in order.
    record_ends: Vec<usize>,
    pub frames: u64,
    pub resets: u64,
    pub dont_fragment: u64,
    pub wscale_options: u64,
}

/// The pcap global header's length.
const GLOBAL_HEADER_LEN: usize = 24;

/// splitmix64: deterministic and good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Copy)]
enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl Addrs {
    fn reversed(self) -> Addrs {
        match self {
            Addrs::V4(a, b) => Addrs::V4(b, a),
            Addrs::V6(a, b) => Addrs::V6(b, a),
        }
    }
}

/// One TCP segment to write.
struct Segment {
    time_us: u64,
    addrs: Addrs,
    ports: (u16, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    /// Window scale option, for SYNs that carry one.
    wscale: Option<u8>,
    payload: usize,
    dont_fragment: bool,
}

/// One side of a connection: its address, port and next sequence number.
struct Side {
    port: u16,
    seq: u32,
}

impl Synthetic {
    /// Builds the capture from `seed`.
    pub fn generate(seed: u64) -> Synthetic {
        let mut rng = Rng(seed);
        let mut segments = Vec::new();
        for c in 0..CONNECTIONS {
            connection(&mut rng, c, &mut segments);
        }
        // Connections overlap in time; the capture is in time order (stable for ties).
        segments.sort_by_key(|s| s.time_us);
        let mut bytes = global_header();
        let mut record_ends = Vec::with_capacity(segments.len());
        let mut ip_id = 0u16;
        let (mut resets, mut dont_fragment, mut wscale_options) = (0, 0, 0);
        for s in &segments {
            ip_id = ip_id.wrapping_add(1);
            let frame = frame(s, ip_id);
            let (sec, usec) = (s.time_us / 1_000_000, s.time_us % 1_000_000);
            let len = u32::try_from(frame.len()).expect("a small frame");
            for field in [sec as u32, usec as u32, len, len] {
                bytes.extend_from_slice(&field.to_le_bytes());
            }
            bytes.extend_from_slice(&frame);
            record_ends.push(bytes.len());
            resets += u64::from(s.flags & RST != 0);
            dont_fragment += u64::from(s.dont_fragment && matches!(s.addrs, Addrs::V4(..)));
            wscale_options += u64::from(s.wscale.is_some());
        }
        let frames = segments.len() as u64;
        Synthetic { bytes, record_ends, frames, resets, dont_fragment, wscale_options }
    }

    /// Writes the capture into `fifo` in `chunks` equal parts spread over `duration`. Blocks
    /// until a reader opens the FIFO; gives up quietly when the reader goes away.
    pub fn pace_into(&self, fifo: &Path, duration: Duration, chunks: usize) {
        let Ok(mut out) = std::fs::OpenOptions::new().write(true).open(fifo) else { return };
        let start = Instant::now();
        let per_chunk = self.record_ends.len().div_ceil(chunks.max(1));
        let mut from = 0;
        if out.write_all(&self.bytes[..GLOBAL_HEADER_LEN]).is_err() {
            return;
        }
        for (i, ends) in self.record_ends.chunks(per_chunk).enumerate() {
            let to = *ends.last().expect("chunks are never empty");
            let from_byte = if from == 0 { GLOBAL_HEADER_LEN } else { from };
            if out.write_all(&self.bytes[from_byte..to]).and_then(|()| out.flush()).is_err() {
                return;
            }
            from = to;
            let due = duration.mul_f64((i + 1) as f64 / chunks as f64);
            std::thread::sleep(due.saturating_sub(start.elapsed()));
        }
    }
}

fn global_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(GLOBAL_HEADER_LEN);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // microsecond pcap
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    h.extend_from_slice(&65_535u32.to_le_bytes()); // snaplen
    h.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    h
}

/// The segments of connection `c`: handshake, data, then FIN/FIN/ACK or a reset.
fn connection(rng: &mut Rng, c: u32, out: &mut Vec<Segment>) {
    let v6 = rng.chance(20);
    let addrs = if v6 {
        let client = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 1 + (c % 50) as u16);
        let server = Ipv6Addr::new(0xfd00, 0, 0, 2, 0, 0, 0, 1 + (c % 5) as u16);
        Addrs::V6(client, server)
    } else {
        let client = Ipv4Addr::new(10, 0, (c / 200) as u8, 1 + (c % 200) as u8);
        let server = Ipv4Addr::new(10, 1, 0, 1 + (c % 5) as u8);
        Addrs::V4(client, server)
    };
    let dont_fragment = !v6 && rng.chance(75);
    let mut client = Side { port: 30_000 + c as u16, seq: rng.next() as u32 };
    let mut server = Side { port: if rng.chance(50) { 80 } else { 443 }, seq: rng.next() as u32 };
    let mut t = START_US + u64::from(c) * CONNECTION_SPACING_US + rng.range(0, 50_000);
    let mut emit = |rng: &mut Rng, from_client: bool, flags: u8, wscale, payload: usize| {
        t += rng.range(200, 3_000);
        let (me, peer) = if from_client { (&mut client, &server) } else { (&mut server, &client) };
        let a = if from_client { addrs } else { addrs.reversed() };
        let ack = if flags & ACK != 0 { peer.seq } else { 0 };
        out.push(Segment {
            time_us: t,
            addrs: a,
            ports: (me.port, peer.port),
            seq: me.seq,
            ack,
            flags,
            wscale,
            payload,
            dont_fragment,
        });
        let consumed = payload as u32 + u32::from(flags & (SYN | FIN) != 0);
        me.seq = me.seq.wrapping_add(consumed);
    };
    let client_ws = rng.chance(70).then(|| rng.range(2, 9) as u8);
    let server_ws = client_ws.and_then(|_| rng.chance(80).then(|| rng.range(0, 14) as u8));
    emit(rng, true, SYN, client_ws, 0);
    emit(rng, false, SYN | ACK, server_ws, 0);
    emit(rng, true, ACK, None, 0);
    for _ in 0..rng.range(1, 20) {
        let request = rng.range(1, 600) as usize;
        emit(rng, true, PSH | ACK, None, request);
        let response = rng.range(0, 1400) as usize;
        emit(rng, false, if response > 0 { PSH | ACK } else { ACK }, None, response);
    }
    match rng.range(0, 99) {
        0..=59 => {
            emit(rng, true, FIN | ACK, None, 0);
            emit(rng, false, FIN | ACK, None, 0);
            emit(rng, true, ACK, None, 0);
        }
        60..=84 => emit(rng, false, RST | ACK, None, 0),
        _ => emit(rng, true, RST, None, 0),
    }
}

/// The Ethernet frame of one segment.
fn frame(s: &Segment, ip_id: u16) -> Vec<u8> {
    let tcp = tcp_header_and_payload(s);
    let mut f = Vec::with_capacity(14 + 40 + tcp.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02]);
    match s.addrs {
        Addrs::V4(src, dst) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = u16::try_from(20 + tcp.len()).expect("a small packet");
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
            if s.dont_fragment {
                ip[6] = 0x40;
            }
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        Addrs::V6(src, dst) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            let len = u16::try_from(tcp.len()).expect("a small packet");
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&[6, 64]);
            f.extend_from_slice(&src.octets());
            f.extend_from_slice(&dst.octets());
        }
    }
    f.extend_from_slice(&tcp);
    f
}

/// The TCP header (with options on SYNs), a zero payload, and the checksum filled in.
fn tcp_header_and_payload(s: &Segment) -> Vec<u8> {
    let mut options = Vec::new();
    if s.flags & SYN != 0 {
        options.extend_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        options.extend_from_slice(&[4, 2]); // SACK permitted
        options.extend_from_slice(&[8, 10]); // timestamps
        options.extend_from_slice(&((s.time_us / 1000) as u32).to_be_bytes());
        options.extend_from_slice(&0u32.to_be_bytes());
        match s.wscale {
            Some(shift) => options.extend_from_slice(&[1, 3, 3, shift]),
            None => options.extend_from_slice(&[1, 1, 1, 1]),
        }
    }
    let header_len = 20 + options.len();
    let mut t = vec![0u8; header_len + s.payload];
    t[0..2].copy_from_slice(&s.ports.0.to_be_bytes());
    t[2..4].copy_from_slice(&s.ports.1.to_be_bytes());
    t[4..8].copy_from_slice(&s.seq.to_be_bytes());
    t[8..12].copy_from_slice(&s.ack.to_be_bytes());
    t[12] = ((header_len / 4) as u8) << 4;
    t[13] = s.flags;
    t[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    t[20..header_len].copy_from_slice(&options);
    let len = u32::try_from(t.len()).expect("a small segment");
    let sum = match s.addrs {
        Addrs::V4(src, dst) => {
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(len as u16).to_be_bytes());
            checksum(&[&pseudo, &t])
        }
        Addrs::V6(src, dst) => {
            let mut pseudo = Vec::with_capacity(40);
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&len.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
            checksum(&[&pseudo, &t])
        }
    };
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts` (each of even length,
/// except possibly the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
