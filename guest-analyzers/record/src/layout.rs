//! The byte layout of a batch, version 1: header size and field offsets, record size and field
//! offsets, and the bits of the flag bytes.
//!
//! Input: nothing; these are the numbers of the `process` comment in `wit/analyzer.wit`, byte
//! for byte. Output: constants used by the encoder and header writer ([`crate::PacketFields`],
//! [`crate::BatchHeader`]) and by the guest SDK's batch view, which reads what they write.

/// The record layout version of this crate: the host writes it in the batch header, and the
/// SDK reads batches of this version only.
pub const LAYOUT_VERSION: u16 = 1;
/// Size of the batch header (version, stride, count, flags, reserved), fixed by the WIT contract.
pub const HEADER_LEN: usize = 16;
/// Byte offset of the header's `u16` layout version ([`LAYOUT_VERSION`]).
pub const HEADER_VERSION: usize = 0;
/// Byte offset of the header's `u16` record stride (at least [`RECORD_LEN`]).
pub const HEADER_STRIDE: usize = 2;
/// Byte offset of the header's `u32` record count.
pub const HEADER_COUNT: usize = 4;
/// Byte offset of the header's `u32` flags ([`header_flags`]); zero from a host that sets none.
pub const HEADER_FLAGS: usize = 8;
/// Byte offset of the header's `u32` reserved word, zero.
pub const HEADER_RESERVED: usize = 12;

/// Bits of the batch header's flags word.
pub mod header_flags {
    /// The host will call again soon: the analyzer may hold this call's updates and return
    /// them with a later call's. A call without it (and every `tick`) returns all held updates.
    pub const HOLD: u32 = 0x01;
}
/// Bytes of a layout-1 record: what the encoder writes and the SDK reads. The stride may be
/// larger (readers skip the extra bytes), never smaller.
pub const RECORD_LEN: usize = 96;

/// Bytes of the tunnel extension that follows the [`RECORD_LEN`] bytes of layout 1 in a record
/// of stride [`EXTENDED_LEN`] or more: the outermost tunnel a packet came through (see
/// [`tunnel_offset`]). A reader built for layout 1 alone skips it by the stride.
pub const TUNNEL_LEN: usize = 40;
/// A record with the tunnel extension: the stride the host writes for a batch that holds a
/// tunnelled packet. A batch of a smaller stride (at least [`RECORD_LEN`]) has no extension,
/// and its packets came through no tunnel the writer opened.
pub const EXTENDED_LEN: usize = RECORD_LEN + TUNNEL_LEN;

/// Byte offsets of the fields inside one record, exactly as in the WIT comment.
pub mod offset {
    /// `u64` packet time, ns since the Unix epoch.
    pub const TIME_NS: usize = 0;
    /// `u64` flow id, equal for both directions.
    pub const FLOW_ID: usize = 8;
    /// `[16]` source address (IPv4 in the first 4 bytes).
    pub const SRC_ADDR: usize = 16;
    /// `[16]` destination address.
    pub const DST_ADDR: usize = 32;
    /// `u32` TCP sequence number.
    pub const SEQ: usize = 48;
    /// `u32` TCP acknowledgement number.
    pub const ACK: usize = 52;
    /// `u32` TCP timestamp value.
    pub const TSVAL: usize = 56;
    /// `u32` TCP timestamp echo reply.
    pub const TSECR: usize = 60;
    /// `u32` frame length on the wire.
    pub const WIRE_LEN: usize = 64;
    /// `u32` IP length from the header.
    pub const IP_LEN: usize = 68;
    /// `u32` TCP payload length.
    pub const PAYLOAD_LEN: usize = 72;
    /// `u16` source port.
    pub const SRC_PORT: usize = 76;
    /// `u16` destination port.
    pub const DST_PORT: usize = 78;
    /// `u16` TCP window as sent.
    pub const WINDOW: usize = 80;
    /// `u16` TCP MSS option value.
    pub const MSS: usize = 82;
    /// `u16` device index.
    pub const DEVICE: usize = 84;
    /// `u8` IP protocol of the transport.
    pub const IP_PROTO: usize = 86;
    /// `u8` TCP flags.
    pub const TCP_FLAGS: usize = 87;
    /// `u8` IPv4 TTL or IPv6 hop limit.
    pub const TTL: usize = 88;
    /// `u8` TCP window scale shift.
    pub const WSCALE: usize = 89;
    /// `u8` packet bits.
    pub const PACKET_BITS: usize = 90;
    /// `u8` TCP option bits.
    pub const TCP_OPTIONS: usize = 91;
    /// `u8` number of SACK blocks.
    pub const SACK_BLOCKS: usize = 92;
    /// `u8` TCP header length in bytes.
    pub const TCP_HEADER_LEN: usize = 93;
    /// `u16` reserved, zero.
    pub const RESERVED: usize = 94;
}

/// TCP flag bits of the record's flags byte (offset 87), as on the wire.
pub mod tcp_flags {
    /// FIN: the sender has finished sending.
    pub const FIN: u8 = 0x01;
    /// SYN: synchronise sequence numbers (connection open).
    pub const SYN: u8 = 0x02;
    /// RST: reset the connection.
    pub const RST: u8 = 0x04;
    /// PSH: push buffered data to the application.
    pub const PSH: u8 = 0x08;
    /// ACK: the acknowledgement number is valid.
    pub const ACK: u8 = 0x10;
    /// URG: the urgent pointer is valid.
    pub const URG: u8 = 0x20;
    /// ECE: ECN echo.
    pub const ECE: u8 = 0x40;
    /// CWR: congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// Bits of the record's packet-bits byte (offset 90), set by the host's decoder.
pub mod packet_bits {
    /// The packet is IPv4.
    pub const IPV4: u8 = 0x01;
    /// The packet is IPv6.
    pub const IPV6: u8 = 0x02;
    /// IPv4 don't-fragment flag set.
    pub const DONT_FRAGMENT: u8 = 0x04;
    /// A fragment: MF set or a non-zero fragment offset.
    pub const FRAGMENT: u8 = 0x08;
    /// A TCP header is present (and its fields are valid).
    pub const TCP: u8 = 0x10;
    /// Captured less than the headers claim (snaplen).
    pub const TRUNCATED: u8 = 0x20;
    /// The source is the higher endpoint of the canonical 5-tuple.
    pub const DIRECTION: u8 = 0x40;
}

/// Bits of the record's TCP-option-bits byte (offset 91): which options the segment carried.
pub mod tcp_options {
    /// SACK permitted.
    pub const SACK_PERMITTED: u8 = 0x01;
    /// Timestamps (TSval/TSecr are valid).
    pub const TIMESTAMPS: u8 = 0x02;
    /// Maximum segment size (the MSS field is valid).
    pub const MSS: u8 = 0x04;
    /// Window scale (the shift field is valid).
    pub const WINDOW_SCALE: u8 = 0x08;
    /// SACK blocks (the block count is valid).
    pub const SACK_BLOCKS: u8 = 0x10;
}

/// Byte offsets of the tunnel extension's fields inside a record of stride [`EXTENDED_LEN`] or
/// more. They describe the outermost tunnel the host opened: the one on the captured link,
/// between two nodes. Everything in layout 1 describes the innermost packet.
pub mod tunnel_offset {
    /// `[16]` source address of the outermost IP header (IPv4 in the first 4 bytes).
    pub const OUTER_SRC_ADDR: usize = 96;
    /// `[16]` destination address of the outermost IP header.
    pub const OUTER_DST_ADDR: usize = 112;
    /// `u32` the outermost tunnel's id: VXLAN or Geneve VNI (24 bits), or GRE key (valid if
    /// [`super::tunnel_bits::ID`]).
    pub const TUNNEL_ID: usize = 128;
    /// `u8` the outermost tunnel's kind ([`super::tunnel_kind`]); 0 if none was opened.
    pub const TUNNEL_KIND: usize = 132;
    /// `u8` tunnel headers opened to reach the packet, 0 to the host's limit of 3.
    pub const TUNNEL_DEPTH: usize = 133;
    /// `u8` tunnel bits ([`super::tunnel_bits`]).
    pub const TUNNEL_BITS: usize = 134;
    /// `u8` reserved, zero.
    pub const TUNNEL_RESERVED: usize = 135;
}

/// Values of the tunnel-kind byte (offset 132).
pub mod tunnel_kind {
    /// Not tunnelled (or the extension is absent).
    pub const NONE: u8 = 0;
    /// VXLAN (RFC 7348) on one of the host's VXLAN UDP ports (`--vxlan-port`).
    pub const VXLAN: u8 = 1;
    /// Geneve (RFC 8926) on UDP 6081.
    pub const GENEVE: u8 = 2;
    /// GRE version 0 (RFC 2784/2890): IPv4, IPv6 or Ethernet inside.
    pub const GRE: u8 = 3;
    /// IPv4 directly inside IPv4 or IPv6 (IP protocol 4: Linux `ipip`, Calico's IP-in-IP).
    pub const IPV4_IN_IP: u8 = 4;
    /// IPv6 directly inside IPv4 or IPv6 (IP protocol 41: Linux `sit`, `ip6tnl`).
    pub const IPV6_IN_IP: u8 = 5;
}

/// Bits of the record's tunnel-bits byte (offset 134).
pub mod tunnel_bits {
    /// The outermost IP header is IPv4.
    pub const OUTER_IPV4: u8 = 0x01;
    /// The outermost IP header is IPv6.
    pub const OUTER_IPV6: u8 = 0x02;
    /// The tunnel id is valid: a VXLAN or Geneve VNI, or a GRE header with its key.
    pub const ID: u8 = 0x04;
}
