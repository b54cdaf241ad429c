//! # wasmtap-record: the batch layout, written once
//!
//! The host packs every decoded packet into a fixed-stride little-endian record and passes a
//! batch of them to each analyzer's `process`; the guest SDK reads them back. Both sides take
//! the layout from this crate: the offsets and bits, the one record struct and its encoder, and
//! the one header writer.
//!
//! Stage: batch (the layout of the bytes between the host's batcher and the analyzers).
//! Input: a [`PacketFields`] per record (the host builds it from its decoded packet, a test by
//! hand) and a [`BatchHeader`] per batch. Output: the bytes of the `process` comment in
//! `wit/analyzer.wit`, layout version 1: a 16-byte header, then 96-byte records. Nothing of the
//! batch layout allocates, and the crate needs neither `std` nor any dependency.
//!
//! The other direction is here too: [`updates`], the packed encoding in which `process` and
//! `tick` return their metric updates, written by the guest SDK and read by the host.
//!
//! ```
//! use wasmtap_record::{BatchHeader, HEADER_LEN, PacketFields, RECORD_LEN, offset, tcp_flags};
//! use core::net::Ipv4Addr;
//!
//! let syn = PacketFields::ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
//!     .with_tcp(40000, 443, tcp_flags::SYN);
//! let mut batch = [0u8; HEADER_LEN + RECORD_LEN];
//! let (header, records) = batch.split_at_mut(HEADER_LEN);
//! BatchHeader::new(1).encode_into(header);
//! syn.encode_into(records);
//! assert_eq!(batch[HEADER_LEN + offset::TCP_FLAGS], tcp_flags::SYN);
//! ```

#![no_std]

extern crate alloc;

mod layout;
pub mod updates;

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

pub use layout::{
    EXTENDED_LEN, HEADER_COUNT, HEADER_FLAGS, HEADER_LEN, HEADER_RESERVED, HEADER_STRIDE,
    HEADER_VERSION, LAYOUT_VERSION, RECORD_LEN, TUNNEL_LEN, header_flags, offset, packet_bits,
    tcp_flags, tcp_options, tunnel_bits, tunnel_kind, tunnel_offset,
};

/// IP protocol number of TCP.
const IPPROTO_TCP: u8 = 6;
/// A TCP header without options; the constructors' default header length.
const TCP_MIN_HEADER: u8 = 20;
/// The Linux default TTL; a plausible value for hand-built packets.
const DEFAULT_TTL: u8 = 64;

/// Every field of one layout-1 record, by name. Zero (the `Default`) means "not carried".
///
/// The host fills one per packet and writes it with [`PacketFields::encode_into`]; analyzer
/// tests build them with the constructors (`ipv4`, `with_tcp`, …) and the SDK's batch builder.
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

    /// Writes the record into the first [`RECORD_LEN`] bytes of `out`, every byte of them
    /// (the reserved ones zeroed), little-endian at the offsets of [`offset`]. Bytes past
    /// [`RECORD_LEN`] (the rest of a wider stride) are left as they are.
    ///
    /// The host calls this once per packet: it neither allocates nor loops.
    ///
    /// # Panics
    /// If `out` is shorter than [`RECORD_LEN`] (a caller bug: records are one stride each).
    #[inline]
    pub fn encode_into(&self, out: &mut [u8]) {
        let r = &mut out[..RECORD_LEN];
        put(r, offset::TIME_NS, self.time_ns.to_le_bytes());
        put(r, offset::FLOW_ID, self.flow_id.to_le_bytes());
        put(r, offset::SRC_ADDR, self.src);
        put(r, offset::DST_ADDR, self.dst);
        put(r, offset::SEQ, self.seq.to_le_bytes());
        put(r, offset::ACK, self.ack.to_le_bytes());
        put(r, offset::TSVAL, self.tsval.to_le_bytes());
        put(r, offset::TSECR, self.tsecr.to_le_bytes());
        put(r, offset::WIRE_LEN, self.wire_len.to_le_bytes());
        put(r, offset::IP_LEN, self.ip_len.to_le_bytes());
        put(r, offset::PAYLOAD_LEN, self.payload_len.to_le_bytes());
        put(r, offset::SRC_PORT, self.src_port.to_le_bytes());
        put(r, offset::DST_PORT, self.dst_port.to_le_bytes());
        put(r, offset::WINDOW, self.window.to_le_bytes());
        put(r, offset::MSS, self.mss.to_le_bytes());
        put(r, offset::DEVICE, self.device.to_le_bytes());
        r[offset::IP_PROTO] = self.ip_proto;
        r[offset::TCP_FLAGS] = self.tcp_flags;
        r[offset::TTL] = self.ttl;
        r[offset::WSCALE] = self.wscale;
        r[offset::PACKET_BITS] = self.packet_bits;
        r[offset::TCP_OPTIONS] = self.tcp_options;
        r[offset::SACK_BLOCKS] = self.sack_blocks;
        r[offset::TCP_HEADER_LEN] = self.tcp_header_len;
        put(r, offset::RESERVED, [0; 2]);
    }

    /// The [`RECORD_LEN`] record bytes of layout version 1, as [`PacketFields::encode_into`]
    /// writes them.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut r = [0; RECORD_LEN];
        self.encode_into(&mut r);
        r
    }
}

/// The tunnel extension of one record, by name (see [`tunnel_offset`]). Zero (the `Default`)
/// means the packet came through no tunnel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelFields {
    /// Source address of the outermost IP header (IPv4 in the first 4 bytes).
    pub outer_src: [u8; 16],
    /// Destination address of the outermost IP header.
    pub outer_dst: [u8; 16],
    /// VNI or GRE key of the outermost tunnel (valid with [`tunnel_bits::ID`]).
    pub id: u32,
    /// The outermost tunnel's kind ([`tunnel_kind`]).
    pub kind: u8,
    /// Tunnel headers opened.
    pub depth: u8,
    /// Tunnel bits ([`tunnel_bits`]).
    pub bits: u8,
}

impl TunnelFields {
    /// Writes the extension into bytes [`RECORD_LEN`]..[`EXTENDED_LEN`] of the record `out`,
    /// every byte of them (the reserved one zeroed).
    ///
    /// # Panics
    /// If `out` is shorter than [`EXTENDED_LEN`] (a caller bug: the stride is fixed up front).
    #[inline]
    pub fn encode_into(&self, out: &mut [u8]) {
        let r = &mut out[..EXTENDED_LEN];
        put(r, tunnel_offset::OUTER_SRC_ADDR, self.outer_src);
        put(r, tunnel_offset::OUTER_DST_ADDR, self.outer_dst);
        put(r, tunnel_offset::TUNNEL_ID, self.id.to_le_bytes());
        r[tunnel_offset::TUNNEL_KIND] = self.kind;
        r[tunnel_offset::TUNNEL_DEPTH] = self.depth;
        r[tunnel_offset::TUNNEL_BITS] = self.bits;
        r[tunnel_offset::TUNNEL_RESERVED] = 0;
    }
}

/// The kind of the outermost tunnel (the record's kind byte, offset 132).
///
/// A code this crate does not name (a newer host's) is carried as [`TunnelKind::Unknown`] rather
/// than refused, so an analyzer built today keeps reading batches from a later host. The enum
/// is non-exhaustive: a later version may name more codes. The host labels its
/// `wasmtap_host_tunnel_packets_total` with [`TunnelKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TunnelKind {
    /// VXLAN (RFC 7348), on one of the host's VXLAN UDP ports.
    Vxlan,
    /// Geneve (RFC 8926), on UDP 6081.
    Geneve,
    /// GRE version 0 (RFC 2784/2890), with IPv4, IPv6 or Ethernet inside.
    Gre,
    /// IPv4 directly inside IPv4 or IPv6 (IP protocol 4).
    Ipv4InIp,
    /// IPv6 directly inside IPv4 or IPv6 (IP protocol 41).
    Ipv6InIp,
    /// A non-zero code this crate does not know.
    Unknown(u8),
}

impl TunnelKind {
    /// Every kind with a name: the ones a host of this version writes.
    pub const KNOWN: [TunnelKind; 5] =
        [Self::Vxlan, Self::Geneve, Self::Gre, Self::Ipv4InIp, Self::Ipv6InIp];

    /// The kind of a kind byte, or `None` for 0 (no tunnel).
    #[inline]
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            tunnel_kind::NONE => return None,
            tunnel_kind::VXLAN => Self::Vxlan,
            tunnel_kind::GENEVE => Self::Geneve,
            tunnel_kind::GRE => Self::Gre,
            tunnel_kind::IPV4_IN_IP => Self::Ipv4InIp,
            tunnel_kind::IPV6_IN_IP => Self::Ipv6InIp,
            other => Self::Unknown(other),
        })
    }

    /// The kind byte as the record carries it (see [`tunnel_kind`]).
    #[inline]
    pub const fn code(self) -> u8 {
        match self {
            Self::Vxlan => tunnel_kind::VXLAN,
            Self::Geneve => tunnel_kind::GENEVE,
            Self::Gre => tunnel_kind::GRE,
            Self::Ipv4InIp => tunnel_kind::IPV4_IN_IP,
            Self::Ipv6InIp => tunnel_kind::IPV6_IN_IP,
            Self::Unknown(code) => code,
        }
    }

    /// A name for a text label: the `kind` label values of the host's
    /// `wasmtap_host_tunnel_packets_total` (`vxlan`, `geneve`, `gre`, `ipv4_in_ip`,
    /// `ipv6_in_ip`), so an analyzer's series join the host's; `unknown` for every code this
    /// crate does not name (use [`TunnelKind::code`] to tell them apart).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vxlan => "vxlan",
            Self::Geneve => "geneve",
            Self::Gre => "gre",
            Self::Ipv4InIp => "ipv4_in_ip",
            Self::Ipv6InIp => "ipv6_in_ip",
            Self::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for TunnelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(code) => write!(f, "unknown ({code})"),
            known => f.write_str(known.as_str()),
        }
    }
}

/// The 16-byte batch header of layout version 1 (the version itself is [`LAYOUT_VERSION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Bytes per record, at least [`RECORD_LEN`]; readers skip the bytes past it.
    pub stride: u16,
    /// Number of records that follow the header.
    pub count: u32,
    /// Bits of [`header_flags`].
    pub flags: u32,
}

impl BatchHeader {
    /// The stride of a writer that appends nothing to a layout-1 record: [`RECORD_LEN`]
    /// (96, far below `u16::MAX`).
    pub const MIN_STRIDE: u16 = RECORD_LEN as u16;

    /// The stride of a writer that appends the tunnel extension: [`EXTENDED_LEN`] (136).
    pub const EXTENDED_STRIDE: u16 = EXTENDED_LEN as u16;

    /// A header for `count` records of [`BatchHeader::MIN_STRIDE`] bytes, with no flags.
    pub const fn new(count: u32) -> Self {
        Self { stride: Self::MIN_STRIDE, count, flags: 0 }
    }

    /// A header for `count` records of [`BatchHeader::EXTENDED_STRIDE`] bytes (layout 1 and
    /// the tunnel extension), with no flags.
    pub const fn extended(count: u32) -> Self {
        Self { stride: Self::EXTENDED_STRIDE, count, flags: 0 }
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`, every byte of them:
    /// version, stride, count, flags and the reserved word (zero).
    ///
    /// # Panics
    /// If `out` is shorter than [`HEADER_LEN`] (a caller bug: the batch buffer is sized up
    /// front).
    #[inline]
    pub fn encode_into(&self, out: &mut [u8]) {
        let h = &mut out[..HEADER_LEN];
        put(h, HEADER_VERSION, LAYOUT_VERSION.to_le_bytes());
        put(h, HEADER_STRIDE, self.stride.to_le_bytes());
        put(h, HEADER_COUNT, self.count.to_le_bytes());
        write_flags(h, self.flags);
        put(h, HEADER_RESERVED, [0; 4]);
    }
}

/// Overwrites the flags word (bits of [`header_flags`]) of the batch header at the start of
/// `header`, and nothing else: a writer that decides the flags after the records sets them so.
///
/// # Panics
/// If `header` is shorter than [`HEADER_LEN`].
#[inline]
pub fn write_flags(header: &mut [u8], flags: u32) {
    put(&mut header[..HEADER_LEN], HEADER_FLAGS, flags.to_le_bytes());
}

/// Copies `bytes` into `out` at `at`.
#[inline(always)]
fn put<const N: usize>(out: &mut [u8], at: usize, bytes: [u8; N]) {
    out[at..at + N].copy_from_slice(&bytes);
}

#[cfg(test)]
mod tests;
