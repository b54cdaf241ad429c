//! The batch view: a typed, zero-copy reading of the packed record buffer that the host passes
//! to `process`.
//!
//! Input: the `list<u8>` of one `process` call, laid out as documented on `process` in
//! `wit/analyzer.wit` (layout version 1, and the tunnel extension when the stride is at least
//! 136). Output: a [`Batch`] that yields one [`Packet`] per record; every field accessor reads
//! the little-endian bytes in place, without copying or allocating, and [`Packet::tunnel`]
//! reads the extension ([`Tunnel`]). The offsets come from `wasmtap-record`, the crate the host
//! writes batches with.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wasmtap_record::{
    EXTENDED_LEN, HEADER_COUNT, HEADER_FLAGS, HEADER_LEN, HEADER_STRIDE, HEADER_VERSION,
    LAYOUT_VERSION, RECORD_LEN, TUNNEL_LEN, header_flags, offset, packet_bits, tcp_flags,
    tcp_options,
};

use crate::family::Label;

mod tunnel;

pub use tunnel::{Tunnel, TunnelKind};

/// Why a batch buffer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the 16-byte header.
    ShortHeader(usize),
    /// A layout version this SDK does not read.
    Version(u16),
    /// A record stride below the 96 bytes of layout 1.
    Stride(u16),
    /// The buffer length does not match header + count × stride.
    Length {
        /// Bytes the header promises.
        expected: u64,
        /// Bytes received.
        actual: usize,
    },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShortHeader(n) => {
                write!(f, "batch of {n} bytes is shorter than its {HEADER_LEN}-byte header")
            }
            Self::Version(v) => write!(
                f,
                "batch layout version {v} is not supported (this analyzer reads version {LAYOUT_VERSION})"
            ),
            Self::Stride(s) => {
                write!(f, "batch record stride {s} is below the {RECORD_LEN} bytes of layout 1")
            }
            Self::Length { expected, actual } => {
                write!(f, "batch header promises {expected} bytes but the buffer has {actual}")
            }
        }
    }
}

impl std::error::Error for BatchError {}

impl From<BatchError> for String {
    fn from(e: BatchError) -> Self {
        e.to_string()
    }
}

#[inline]
fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut a = [0; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// A checked, borrowed view of one batch buffer.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    records: &'a [u8],
    stride: usize,
    count: usize,
    hold: bool,
}

impl<'a> Batch<'a> {
    /// Checks the header (version 1, stride ≥ 96, exact length) and returns the view.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let (header, records) =
            bytes.split_first_chunk::<HEADER_LEN>().ok_or(BatchError::ShortHeader(bytes.len()))?;
        let version = u16_at(header, HEADER_VERSION);
        if version != LAYOUT_VERSION {
            return Err(BatchError::Version(version));
        }
        let stride = u16_at(header, HEADER_STRIDE);
        if usize::from(stride) < RECORD_LEN {
            return Err(BatchError::Stride(stride));
        }
        let count = u32_at(header, HEADER_COUNT);
        let expected = HEADER_LEN as u64 + u64::from(count) * u64::from(stride);
        if expected != bytes.len() as u64 {
            return Err(BatchError::Length { expected, actual: bytes.len() });
        }
        Ok(Self {
            records,
            stride: usize::from(stride),
            // The length check above proves count × stride fits in memory, so in usize.
            count: records.len() / usize::from(stride),
            hold: u32_at(header, HEADER_FLAGS) & header_flags::HOLD != 0,
        })
    }

    /// True if the host set [`header_flags::HOLD`]: it will call again soon, so this call's
    /// updates may be held and returned with a later call's. The [`crate::Runner`] decides.
    pub fn may_hold(&self) -> bool {
        self.hold
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The record stride in bytes (≥ 96).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// True if the records carry the tunnel extension (a stride of at least 136): the writer
    /// opens tunnels, and [`Packet::tunnel`] says which packets came through one. Without it
    /// no packet of the batch came through a tunnel.
    pub fn has_tunnel_extension(&self) -> bool {
        self.stride >= EXTENDED_LEN
    }

    /// The record at `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<Packet<'a>> {
        let start = index.checked_mul(self.stride)?;
        let record = self.records.get(start..)?.get(..self.stride)?;
        Packet::split(record)
    }

    /// Iterates the records in order.
    pub fn iter(&self) -> Packets<'a> {
        Packets { rest: self.records, stride: self.stride, remaining: self.count }
    }
}

impl<'a> IntoIterator for &Batch<'a> {
    type Item = Packet<'a>;
    type IntoIter = Packets<'a>;
    fn into_iter(self) -> Packets<'a> {
        self.iter()
    }
}

/// Iterator over the records of a [`Batch`].
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    rest: &'a [u8],
    stride: usize,
    remaining: usize,
}

impl<'a> Iterator for Packets<'a> {
    type Item = Packet<'a>;

    #[inline]
    fn next(&mut self) -> Option<Packet<'a>> {
        // Two length checks per record, as many as reading a layout-1 record and skipping the
        // stride: the record's tail is a by-product of the split, not a third check.
        let (record, rest) = self.rest.split_at_checked(self.stride)?;
        let packet = Packet::split(record)?;
        self.rest = rest;
        self.remaining = self.remaining.saturating_sub(1);
        Some(packet)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Packets<'_> {}

/// Which side of the connection sent a packet, relative to the canonical (sorted) 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The source is the lower endpoint.
    FromLower,
    /// The source is the higher endpoint.
    FromHigher,
}

/// One packet record: accessors read the fields in place. Fields the packet does not carry
/// read as zero.
///
/// For a tunnelled packet the addresses, ports, flags, lengths, TTL and other header fields
/// describe the innermost packet, except [`Packet::wire_len`], the captured frame's;
/// [`Packet::tunnel`] describes the outermost tunnel.
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    // The layout-1 bytes as a fixed-size array, so that the field accessors index it with
    // constant offsets and no bounds check.
    rec: &'a [u8; RECORD_LEN],
    // The record's bytes past layout 1: empty at stride 96, the tunnel extension (and whatever
    // a later layout appends) from stride 136. Only `tunnel` checks its length.
    tail: &'a [u8],
}

impl fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("time_ns", &self.time_ns())
            .field("src", &self.src_ip())
            .field("dst", &self.dst_ip())
            .field("ports", &(self.src_port(), self.dst_port()))
            .field("tcp_flags", &self.tcp_flags())
            .field("device", &self.device())
            .field("tunnel", &self.tunnel())
            .finish_non_exhaustive()
    }
}

impl<'a> Packet<'a> {
    /// The view of one record of `stride` bytes, or `None` if it is shorter than layout 1.
    #[inline]
    fn split(record: &'a [u8]) -> Option<Self> {
        let (rec, tail) = record.split_first_chunk::<RECORD_LEN>()?;
        Some(Self { rec, tail })
    }

    #[inline]
    fn u8(&self, at: usize) -> u8 {
        self.rec[at]
    }
    #[inline]
    fn u16(&self, at: usize) -> u16 {
        u16_at(self.rec, at)
    }
    #[inline]
    fn u32(&self, at: usize) -> u32 {
        u32_at(self.rec, at)
    }
    #[inline]
    fn u64(&self, at: usize) -> u64 {
        let mut a = [0; 8];
        a.copy_from_slice(&self.rec[at..at + 8]);
        u64::from_le_bytes(a)
    }
    #[inline]
    fn addr(&self, at: usize) -> &'a [u8; 16] {
        let rec: &'a [u8; RECORD_LEN] = self.rec;
        let (_, tail) = rec.split_at(at);
        // Both address offsets are followed by at least 16 bytes of the 96-byte record.
        tail.first_chunk::<16>().unwrap_or(&[0; 16])
    }

    /// The raw 96 bytes of the record (layout version 1).
    #[inline]
    pub fn raw(&self) -> &'a [u8; RECORD_LEN] {
        self.rec
    }
    /// Packet time, ns since the Unix epoch.
    #[inline]
    pub fn time_ns(&self) -> u64 {
        self.u64(offset::TIME_NS)
    }
    /// Flow id: a hash of the canonical 5-tuple and the device, equal for both directions.
    ///
    /// Key per-flow state by it alone: a connection seen on two interfaces (say a pod's veth
    /// and its peer's bridge port, both captured by `-i any`) has one flow id per interface,
    /// so each observation point is analyzed on its own and a copy of a segment on a second
    /// interface is never mistaken for a retransmission. For a tunnelled packet it covers each
    /// tunnel's kind and outer addresses too (in either order; not the VNI, which Cilium sets
    /// per direction), so the same inner addresses between other nodes are another flow.
    #[inline]
    pub fn flow_id(&self) -> u64 {
        self.u64(offset::FLOW_ID)
    }
    /// Source address bytes as recorded (IPv4 in the first 4 bytes, rest zero).
    #[inline]
    pub fn src_addr_raw(&self) -> &'a [u8; 16] {
        self.addr(offset::SRC_ADDR)
    }
    /// Destination address bytes as recorded.
    #[inline]
    pub fn dst_addr_raw(&self) -> &'a [u8; 16] {
        self.addr(offset::DST_ADDR)
    }
    #[inline]
    fn ip(&self, raw: &[u8; 16]) -> Option<IpAddr> {
        if self.is_ipv4() {
            Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])))
        } else if self.is_ipv6() {
            Some(IpAddr::V6(Ipv6Addr::from(*raw)))
        } else {
            None
        }
    }
    /// Source address, or `None` for a non-IP record.
    #[inline]
    pub fn src_ip(&self) -> Option<IpAddr> {
        self.ip(self.src_addr_raw())
    }
    /// Destination address, or `None` for a non-IP record.
    #[inline]
    pub fn dst_ip(&self) -> Option<IpAddr> {
        self.ip(self.dst_addr_raw())
    }
    #[inline]
    fn addr_label(&self, raw: &[u8; 16]) -> Label {
        if self.is_ipv6() {
            let (hi, lo) = raw.split_at(8);
            let mut h = [0; 8];
            let mut l = [0; 8];
            h.copy_from_slice(hi);
            l.copy_from_slice(lo);
            Label::Ipv6(u64::from_be_bytes(h), u64::from_be_bytes(l))
        } else {
            Label::Ipv4(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
        }
    }
    /// The source address as a label value: `ipv6` if the IPv6 bit is set, else `ipv4` from the
    /// first 4 bytes (0.0.0.0 for a non-IP record).
    #[inline]
    pub fn src_label(&self) -> Label {
        self.addr_label(self.src_addr_raw())
    }
    /// The destination address as a label value, like [`Packet::src_label`].
    #[inline]
    pub fn dst_label(&self) -> Label {
        self.addr_label(self.dst_addr_raw())
    }
    /// The device index as a label value (the host prints the interface or file name).
    #[inline]
    pub fn device_label(&self) -> Label {
        Label::Device(self.device())
    }
    /// TCP sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        self.u32(offset::SEQ)
    }
    /// TCP acknowledgement number (the ACK *flag* is [`Packet::ack`]).
    #[inline]
    pub fn ack_num(&self) -> u32 {
        self.u32(offset::ACK)
    }
    /// TCP timestamp value (valid if [`Packet::has_timestamps`]).
    #[inline]
    pub fn tsval(&self) -> u32 {
        self.u32(offset::TSVAL)
    }
    /// TCP timestamp echo reply (valid if [`Packet::has_timestamps`]).
    #[inline]
    pub fn tsecr(&self) -> u32 {
        self.u32(offset::TSECR)
    }
    /// Frame length on the wire: for a tunnelled packet, the captured frame's, outer headers
    /// included.
    #[inline]
    pub fn wire_len(&self) -> u32 {
        self.u32(offset::WIRE_LEN)
    }
    /// IP length from the header: IPv4 total length, or IPv6 payload length + 40.
    #[inline]
    pub fn ip_len(&self) -> u32 {
        self.u32(offset::IP_LEN)
    }
    /// TCP payload length, from the IP and TCP header lengths.
    #[inline]
    pub fn payload_len(&self) -> u32 {
        self.u32(offset::PAYLOAD_LEN)
    }
    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        self.u16(offset::SRC_PORT)
    }
    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.u16(offset::DST_PORT)
    }
    /// TCP window as sent (not scaled).
    #[inline]
    pub fn window(&self) -> u16 {
        self.u16(offset::WINDOW)
    }
    /// TCP MSS option value (valid if [`Packet::has_mss`], else zero).
    #[inline]
    pub fn mss(&self) -> u16 {
        self.u16(offset::MSS)
    }
    /// Device index.
    #[inline]
    pub fn device(&self) -> u16 {
        self.u16(offset::DEVICE)
    }
    /// IP protocol of the transport (6 TCP, 17 UDP, 1 ICMP, ...).
    #[inline]
    pub fn ip_proto(&self) -> u8 {
        self.u8(offset::IP_PROTO)
    }
    /// IPv4 TTL or IPv6 hop limit.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.u8(offset::TTL)
    }
    /// The TCP flags byte (see [`tcp_flags`]).
    #[inline]
    pub fn tcp_flags(&self) -> u8 {
        self.u8(offset::TCP_FLAGS)
    }
    #[inline]
    fn flag(&self, bit: u8) -> bool {
        self.tcp_flags() & bit != 0
    }
    /// FIN flag.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flag(tcp_flags::FIN)
    }
    /// SYN flag.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flag(tcp_flags::SYN)
    }
    /// RST flag.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flag(tcp_flags::RST)
    }
    /// PSH flag.
    #[inline]
    pub fn psh(&self) -> bool {
        self.flag(tcp_flags::PSH)
    }
    /// ACK flag (the acknowledgement number is [`Packet::ack_num`]).
    #[inline]
    pub fn ack(&self) -> bool {
        self.flag(tcp_flags::ACK)
    }
    /// URG flag.
    #[inline]
    pub fn urg(&self) -> bool {
        self.flag(tcp_flags::URG)
    }
    /// ECE flag.
    #[inline]
    pub fn ece(&self) -> bool {
        self.flag(tcp_flags::ECE)
    }
    /// CWR flag.
    #[inline]
    pub fn cwr(&self) -> bool {
        self.flag(tcp_flags::CWR)
    }
    /// The packet-bits byte (see [`packet_bits`]).
    #[inline]
    pub fn packet_bits(&self) -> u8 {
        self.u8(offset::PACKET_BITS)
    }
    #[inline]
    fn bit(&self, bit: u8) -> bool {
        self.packet_bits() & bit != 0
    }
    /// An IPv4 packet.
    #[inline]
    pub fn is_ipv4(&self) -> bool {
        self.bit(packet_bits::IPV4)
    }
    /// An IPv6 packet.
    #[inline]
    pub fn is_ipv6(&self) -> bool {
        self.bit(packet_bits::IPV6)
    }
    /// IPv4 or IPv6.
    #[inline]
    pub fn is_ip(&self) -> bool {
        self.bit(packet_bits::IPV4 | packet_bits::IPV6)
    }
    /// IPv4 don't-fragment flag.
    #[inline]
    pub fn dont_fragment(&self) -> bool {
        self.bit(packet_bits::DONT_FRAGMENT)
    }
    /// A fragment (MF set or a non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.bit(packet_bits::FRAGMENT)
    }
    /// A TCP header is present; the TCP fields are valid.
    #[inline]
    pub fn has_tcp(&self) -> bool {
        self.bit(packet_bits::TCP)
    }
    /// Captured less than the headers claim.
    #[inline]
    pub fn truncated(&self) -> bool {
        self.bit(packet_bits::TRUNCATED)
    }
    /// Which endpoint of the canonical 5-tuple sent the packet.
    #[inline]
    pub fn direction(&self) -> Direction {
        if self.bit(packet_bits::DIRECTION) { Direction::FromHigher } else { Direction::FromLower }
    }
    /// The TCP-option-bits byte (see [`tcp_options`]).
    #[inline]
    pub fn tcp_option_bits(&self) -> u8 {
        self.u8(offset::TCP_OPTIONS)
    }
    #[inline]
    fn option(&self, bit: u8) -> bool {
        self.tcp_option_bits() & bit != 0
    }
    /// The SACK-permitted option was present.
    #[inline]
    pub fn sack_permitted(&self) -> bool {
        self.option(tcp_options::SACK_PERMITTED)
    }
    /// The timestamps option was present.
    #[inline]
    pub fn has_timestamps(&self) -> bool {
        self.option(tcp_options::TIMESTAMPS)
    }
    /// The MSS option was present.
    #[inline]
    pub fn has_mss(&self) -> bool {
        self.option(tcp_options::MSS)
    }
    /// The window-scale option was present.
    #[inline]
    pub fn has_wscale(&self) -> bool {
        self.option(tcp_options::WINDOW_SCALE)
    }
    /// The window-scale shift, if the option was present (shift 0 is a valid option).
    #[inline]
    pub fn wscale(&self) -> Option<u8> {
        self.has_wscale().then(|| self.u8(offset::WSCALE))
    }
    /// SACK blocks were present.
    #[inline]
    pub fn has_sack_blocks(&self) -> bool {
        self.option(tcp_options::SACK_BLOCKS)
    }
    /// Number of SACK blocks.
    #[inline]
    pub fn sack_block_count(&self) -> u8 {
        self.u8(offset::SACK_BLOCKS)
    }
    /// TCP header length in bytes.
    #[inline]
    pub fn tcp_header_len(&self) -> u8 {
        self.u8(offset::TCP_HEADER_LEN)
    }
    /// The outermost tunnel the packet came through, or `None` if it came through none: the
    /// batch's stride is below 136 (no extension), or the extension's kind byte is 0.
    #[inline]
    pub fn tunnel(&self) -> Option<Tunnel<'a>> {
        Tunnel::read(self.tail.first_chunk::<TUNNEL_LEN>()?)
    }
}

#[cfg(test)]
mod tests;
