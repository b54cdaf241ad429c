//! A synthetic TCP capture for the hostile-analyzer suite, and a paced writer for it.
//!
//! Input: a seed. Output: a pcap (Ethernet, microsecond timestamps) of a few hundred TCP
//! connections over IPv4 and IPv6 — handshakes with and without window scaling, data both ways,
//! FIN or RST endings, DF on most IPv4 connections — with correct checksums and sequence numbers
//! (the frames and the file come from `common::frames`), plus the counts it was built with
//! (which tshark must agree with). [`Synthetic::pace_into`] writes it into a FIFO over a set
//! wall-clock time, so that a `wasmtap replay` reading the FIFO lasts long enough for the failure
//! policy's backoffs (100 ms, doubling) to run their course: without pacing, a replay of a few
//! thousand packets ends in milliseconds.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use etherparse::TcpOptionElement;

use crate::common::frames::{ACK, FIN, PCAP_HEADER_LEN, PSH, Pcap, RST, SYN, TcpSegment};

/// Connections in the capture: with up to 20 data exchanges each, about 7,000 packets — 800+
/// batches of 8, enough for five failures per hostile analyzer on each of two workers.
const CONNECTIONS: u32 = 250;
/// Packet time between connection starts: the capture spans about 40 s of packet time, so the
/// analyzers get about 40 ticks.
const CONNECTION_SPACING_US: u64 = 160_000;
/// Packet time of the first packet (2024-01-01T00:00:00Z), in µs since the epoch.
const START_US: u64 = 1_704_067_200_000_000;

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

impl Synthetic {
    /// Builds the capture from `seed`.
    pub fn generate(seed: u64) -> Synthetic {
        let mut rng = Rng(seed);
        let mut segments = Vec::new();
        for c in 0..CONNECTIONS {
            connection(&mut rng, c, &mut segments);
        }
        // Connections overlap in time; the capture is in time order (stable for ties).
        segments.sort_by_key(|(time_us, _)| *time_us);
        let mut pcap = Pcap::in_memory();
        let mut record_ends = Vec::with_capacity(segments.len());
        let (mut resets, mut dont_fragment, mut wscale_options) = (0, 0, 0);
        for (i, (time_us, segment)) in segments.into_iter().enumerate() {
            let s = TcpSegment { ip_id: (i + 1) as u16, ..segment };
            pcap.write_segment(time_us, &s);
            record_ends.push(pcap.len());
            resets += u64::from(s.flags & RST != 0);
            dont_fragment += u64::from(s.dont_fragment && s.src.is_ipv4());
            let wscale = s.options.iter().any(|o| matches!(o, TcpOptionElement::WindowScale(_)));
            wscale_options += u64::from(wscale);
        }
        let frames = pcap.frames();
        Synthetic {
            bytes: pcap.finish(),
            record_ends,
            frames,
            resets,
            dont_fragment,
            wscale_options,
        }
    }

    /// Writes the capture into `fifo` in `chunks` equal parts spread over `duration`. Blocks
    /// until a reader opens the FIFO; gives up quietly when the reader goes away.
    pub fn pace_into(&self, fifo: &Path, duration: Duration, chunks: usize) {
        let Ok(mut out) = std::fs::OpenOptions::new().write(true).open(fifo) else { return };
        let start = Instant::now();
        let per_chunk = self.record_ends.len().div_ceil(chunks.max(1));
        let mut from = 0;
        if out.write_all(&self.bytes[..PCAP_HEADER_LEN]).is_err() {
            return;
        }
        for (i, ends) in self.record_ends.chunks(per_chunk).enumerate() {
            let to = *ends.last().expect("chunks are never empty");
            let from_byte = if from == 0 { PCAP_HEADER_LEN } else { from };
            if out.write_all(&self.bytes[from_byte..to]).and_then(|()| out.flush()).is_err() {
                return;
            }
            from = to;
            let due = duration.mul_f64((i + 1) as f64 / chunks as f64);
            std::thread::sleep(due.saturating_sub(start.elapsed()));
        }
    }
}

/// One side of a connection: its address, port and next sequence number.
struct Side {
    addr: IpAddr,
    port: u16,
    seq: u32,
}

/// The options of a SYN sent at `time_us`: MSS 1460, SACK permitted, timestamps, and a window
/// scale of `wscale` (or no-ops in its place), 20 bytes in all.
fn syn_options(time_us: u64, wscale: Option<u8>) -> Vec<TcpOptionElement> {
    let mut options = vec![
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp((time_us / 1000) as u32, 0),
    ];
    match wscale {
        Some(shift) => {
            options.extend([TcpOptionElement::Noop, TcpOptionElement::WindowScale(shift)])
        }
        None => options.extend(std::iter::repeat_n(TcpOptionElement::Noop, 4)),
    }
    options
}

/// The segments of connection `c`, with their times: handshake, data, then FIN/FIN/ACK or a
/// reset.
fn connection(rng: &mut Rng, c: u32, out: &mut Vec<(u64, TcpSegment)>) {
    let v6 = rng.chance(20);
    let (client_addr, server_addr): (IpAddr, IpAddr) = if v6 {
        let client = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 1 + (c % 50) as u16);
        let server = Ipv6Addr::new(0xfd00, 0, 0, 2, 0, 0, 0, 1 + (c % 5) as u16);
        (client.into(), server.into())
    } else {
        let client = Ipv4Addr::new(10, 0, (c / 200) as u8, 1 + (c % 200) as u8);
        let server = Ipv4Addr::new(10, 1, 0, 1 + (c % 5) as u8);
        (client.into(), server.into())
    };
    let dont_fragment = !v6 && rng.chance(75);
    let mut client = Side { addr: client_addr, port: 30_000 + c as u16, seq: rng.next() as u32 };
    let port = if rng.chance(50) { 80 } else { 443 };
    let mut server = Side { addr: server_addr, port, seq: rng.next() as u32 };
    let mut t = START_US + u64::from(c) * CONNECTION_SPACING_US + rng.range(0, 50_000);
    let mut emit = |rng: &mut Rng, from_client: bool, flags: u8, wscale, payload: usize| {
        t += rng.range(200, 3_000);
        let (me, peer) = if from_client { (&mut client, &server) } else { (&mut server, &client) };
        let segment = TcpSegment {
            seq: me.seq,
            ack: if flags & ACK != 0 { peer.seq } else { 0 },
            flags,
            options: if flags & SYN != 0 { syn_options(t, wscale) } else { Vec::new() },
            payload_len: payload,
            dont_fragment,
            ..TcpSegment::new(me.addr, me.port, peer.addr, peer.port)
        };
        out.push((t, segment));
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
