//! Building batch bytes by hand, for analyzer unit tests run natively.
//!
//! Input: [`PacketFields`], one per record, every field of layout version 1 spelled out (with a
//! few constructors for the common IPv4/IPv6/TCP cases). Output: the exact `list<u8>` the host
//! would pass to `process`, which [`crate::Batch::parse`] or [`crate::Runner::process`] take.
//!
//! ```
//! use wasmtap_sdk::{Batch, BatchBuilder, PacketFields, tcp_flags};
//! use std::net::Ipv4Addr;
//!
//! let syn = PacketFields::ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
//!     .with_tcp(40000, 443, tcp_flags::SYN)
//!     .with_wscale(7);
//! let bytes = BatchBuilder::new().push(&syn).push(&PacketFields::default()).build();
//! let batch = Batch::parse(&bytes).expect("a valid batch");
//! assert_eq!(batch.len(), 2);
//! assert_eq!(batch.iter().next().and_then(|p| p.wscale()), Some(7));
//! ```

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::batch::Packet;
use crate::layout::{
    HEADER_LEN, LAYOUT_VERSION, RECORD_LEN, header_flags, offset, packet_bits, tcp_options,
};

/// IP protocol number of TCP.
const IPPROTO_TCP: u8 = 6;
/// A TCP header without options; the constructors' default header length.
const TCP_MIN_HEADER: u8 = 20;
/// The Linux default TTL; a plausible value for hand-built packets.
const DEFAULT_TTL: u8 = 64;

/// Every field of one layout-1 record. Zero (the `Default`) means "not carried".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketFields {
    /// Packet time, ns since the Unix epoch.
    pub time_ns: u64,
    /// Flow id (the host's hash of the canonical 5-tuple).
    pub flow_id: u64,
    /// Source address bytes (IPv4 in the first 4).
    pub src: [u8; 16],
    /// Destination address bytes.
    pub dst: [u8; 16],
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgement number.
    pub ack: u32,
    /// TCP TSval.
    pub tsval: u32,
    /// TCP TSecr.
    pub tsecr: u32,
    /// Frame length on the wire.
    pub wire_len: u32,
    /// IP length (IPv4 total length, or IPv6 payload length + 40).
    pub ip_len: u32,
    /// TCP payload length.
    pub payload_len: u32,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// TCP window as sent.
    pub window: u16,
    /// TCP MSS option value.
    pub mss: u16,
    /// Device index.
    pub device: u16,
    /// IP protocol of the transport.
    pub ip_proto: u8,
    /// TCP flags byte (see [`crate::tcp_flags`]).
    pub tcp_flags: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Window scale shift.
    pub wscale: u8,
    /// Packet bits (see [`crate::packet_bits`]).
    pub packet_bits: u8,
    /// TCP option bits (see [`crate::tcp_options`]).
    pub tcp_options: u8,
    /// Number of SACK blocks.
    pub sack_blocks: u8,
    /// TCP header length in bytes.
    pub tcp_header_len: u8,
}

impl PacketFields {
    /// An IPv4 packet from `src` to `dst` (IPv4 bit, TTL 64, an empty 20-byte IP header).
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        let mut p = Self {
            packet_bits: packet_bits::IPV4,
            ttl: DEFAULT_TTL,
            ip_len: 20,
            ..Self::default()
        };
        p.src[..4].copy_from_slice(&src.octets());
        p.dst[..4].copy_from_slice(&dst.octets());
        p
    }

    /// An IPv6 packet from `src` to `dst` (IPv6 bit, hop limit 64, IP length 40).
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self {
            packet_bits: packet_bits::IPV6,
            ttl: DEFAULT_TTL,
            ip_len: 40,
            src: src.octets(),
            dst: dst.octets(),
            ..Self::default()
        }
    }

    /// Adds a TCP header without options: TCP bit, protocol 6, ports, flags, header length 20
    /// (and 20 more bytes of IP length).
    pub fn with_tcp(mut self, src_port: u16, dst_port: u16, flags: u8) -> Self {
        self.packet_bits |= packet_bits::TCP;
        self.ip_proto = IPPROTO_TCP;
        self.src_port = src_port;
        self.dst_port = dst_port;
        self.tcp_flags = flags;
        self.tcp_header_len = TCP_MIN_HEADER;
        self.ip_len += u32::from(TCP_MIN_HEADER);
        self
    }

    /// Adds `len` bytes of TCP payload (payload length and IP length).
    pub fn with_payload(mut self, len: u32) -> Self {
        self.payload_len = len;
        self.ip_len += len;
        self
    }

    /// Adds a window-scale option with `shift`.
    pub fn with_wscale(mut self, shift: u8) -> Self {
        self.tcp_options |= tcp_options::WINDOW_SCALE;
        self.wscale = shift;
        self
    }

    /// Sets the device index.
    pub fn with_device(mut self, device: u16) -> Self {
        self.device = device;
        self
    }

    /// Sets the packet time.
    pub fn with_time(mut self, time_ns: u64) -> Self {
        self.time_ns = time_ns;
        self
    }

    /// Sets extra packet bits (e.g. [`crate::packet_bits::DONT_FRAGMENT`]).
    pub fn with_bits(mut self, bits: u8) -> Self {
        self.packet_bits |= bits;
        self
    }

    /// The 96 record bytes of layout version 1.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut r = [0; RECORD_LEN];
        let mut put = |at: usize, bytes: &[u8]| r[at..at + bytes.len()].copy_from_slice(bytes);
        put(offset::TIME_NS, &self.time_ns.to_le_bytes());
        put(offset::FLOW_ID, &self.flow_id.to_le_bytes());
        put(offset::SRC_ADDR, &self.src);
        put(offset::DST_ADDR, &self.dst);
        put(offset::SEQ, &self.seq.to_le_bytes());
        put(offset::ACK, &self.ack.to_le_bytes());
        put(offset::TSVAL, &self.tsval.to_le_bytes());
        put(offset::TSECR, &self.tsecr.to_le_bytes());
        put(offset::WIRE_LEN, &self.wire_len.to_le_bytes());
        put(offset::IP_LEN, &self.ip_len.to_le_bytes());
        put(offset::PAYLOAD_LEN, &self.payload_len.to_le_bytes());
        put(offset::SRC_PORT, &self.src_port.to_le_bytes());
        put(offset::DST_PORT, &self.dst_port.to_le_bytes());
        put(offset::WINDOW, &self.window.to_le_bytes());
        put(offset::MSS, &self.mss.to_le_bytes());
        put(offset::DEVICE, &self.device.to_le_bytes());
        put(offset::IP_PROTO, &[self.ip_proto]);
        put(offset::TCP_FLAGS, &[self.tcp_flags]);
        put(offset::TTL, &[self.ttl]);
        put(offset::WSCALE, &[self.wscale]);
        put(offset::PACKET_BITS, &[self.packet_bits]);
        put(offset::TCP_OPTIONS, &[self.tcp_options]);
        put(offset::SACK_BLOCKS, &[self.sack_blocks]);
        put(offset::TCP_HEADER_LEN, &[self.tcp_header_len]);
        r
    }
}

impl From<Packet<'_>> for PacketFields {
    /// Reads every field back; `PacketFields::from(p).encode() == *p.raw()`.
    fn from(p: Packet<'_>) -> Self {
        Self {
            time_ns: p.time_ns(),
            flow_id: p.flow_id(),
            src: *p.src_addr_raw(),
            dst: *p.dst_addr_raw(),
            seq: p.seq(),
            ack: p.ack_num(),
            tsval: p.tsval(),
            tsecr: p.tsecr(),
            wire_len: p.wire_len(),
            ip_len: p.ip_len(),
            payload_len: p.payload_len(),
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            window: p.window(),
            mss: p.mss(),
            device: p.device(),
            ip_proto: p.ip_proto(),
            tcp_flags: p.tcp_flags(),
            ttl: p.ttl(),
            wscale: p.raw()[offset::WSCALE],
            packet_bits: p.packet_bits(),
            tcp_options: p.tcp_option_bits(),
            sack_blocks: p.sack_block_count(),
            tcp_header_len: p.tcp_header_len(),
        }
    }
}

/// Accumulates records and writes a complete batch (header + records).
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    stride: usize,
    count: u32,
    records: Vec<u8>,
    flags: u32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty batch with the minimal stride (96).
    pub fn new() -> Self {
        Self { stride: RECORD_LEN, count: 0, records: Vec::new(), flags: 0 }
    }

    /// An empty batch whose records are `stride` bytes (raised to 96 if smaller); the extra
    /// bytes are zero, which exercises readers that must skip them.
    pub fn with_stride(stride: u16) -> Self {
        Self { stride: usize::from(stride).max(RECORD_LEN), ..Self::new() }
    }

    /// Sets or clears [`header_flags::HOLD`]: whether the analyzer may hold this call's updates
    /// for a later call, as the host asks while more batches follow.
    pub fn hold(&mut self, hold: bool) -> &mut Self {
        if hold {
            self.flags |= header_flags::HOLD;
        } else {
            self.flags &= !header_flags::HOLD;
        }
        self
    }

    /// Appends one record.
    pub fn push(&mut self, p: &PacketFields) -> &mut Self {
        self.records.extend_from_slice(&p.encode());
        self.records.resize(self.records.len() + self.stride - RECORD_LEN, 0);
        self.count = self.count.saturating_add(1);
        self
    }

    /// Number of records pushed.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch bytes, as the host would pass them to `process`.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.records.len());
        out.extend_from_slice(&LAYOUT_VERSION.to_le_bytes());
        // `stride` is at most u16::MAX by construction.
        out.extend_from_slice(&u16::try_from(self.stride).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.records);
        out
    }
}
