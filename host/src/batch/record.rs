//! Batch stage, record layout (writer side): packs [`PacketMeta`]s into the little-endian,
//! fixed-stride buffer that analyzers receive in `process`.
//!
//! Input: a [`PacketMeta`] per packet, and the record count of a batch.
//! Output: the 16-byte batch header and one record per packet, byte-for-byte as the comment on
//! `process` in `wit/analyzer.wit` specifies: layout version 1's 96 bytes, and in a batch that
//! holds a tunnelled packet, the 40 bytes of the tunnel extension after each (stride 136). A
//! batch without one keeps stride 96, so traffic without tunnels pays nothing for them. This module only
//! maps the decoder's fields onto the record's; the bytes are written by `wasmtap-record`, the
//! crate whose layout the guest SDK reads.
//!
//! Passing packed bytes rather than a `list<record>` costs ≈18 ns instead of ≈120 ns per packet
//! per analyzer (DESIGN.md, "pass the batch as bytes"). Nothing here allocates.

use wasmtap_record::{BatchHeader, PacketFields, TunnelFields, tunnel_bits};

use crate::decode::{IpFamily, PacketMeta};

// The layout comes from `wasmtap-record`, the crate the guest SDK reads and builds batches
// with: one definition for both sides of the contract (the `process` comment in
// `wit/analyzer.wit`).
/// The stride of a batch with a tunnelled packet in it: layout 1 and the tunnel extension. The
/// batch buffers are sized for it.
pub use wasmtap_record::EXTENDED_LEN as EXTENDED_STRIDE;
/// The stride of a batch none of whose packets came through a tunnel: layout 1 alone.
pub use wasmtap_record::RECORD_LEN as BASE_STRIDE;
pub use wasmtap_record::header_flags::HOLD;
pub use wasmtap_record::tcp_options as tcp_option_bits;
pub use wasmtap_record::{HEADER_FLAGS, HEADER_LEN, LAYOUT_VERSION, offset, packet_bits};

/// Writes the batch header for `count` records of `stride` bytes ([`BASE_STRIDE`] or
/// [`EXTENDED_STRIDE`]) into the first [`HEADER_LEN`] bytes of `buf` (no flags:
/// [`write_flags`] sets them once the batch is complete).
///
/// # Panics
/// If `buf` is shorter than [`HEADER_LEN`] (a caller bug: the batch buffer is sized up front).
pub fn write_header(buf: &mut [u8], count: u32, stride: usize) {
    let header = BatchHeader::new(count);
    let stride = u16::try_from(stride).unwrap_or(BatchHeader::EXTENDED_STRIDE);
    BatchHeader { stride, ..header }.encode_into(buf);
}

/// Writes the header's flags word (bits of `wasmtap_record::header_flags`).
///
/// # Panics
/// If `buf` is shorter than [`HEADER_LEN`] (a caller bug: the batch buffer is sized up front).
pub fn write_flags(buf: &mut [u8], flags: u32) {
    wasmtap_record::write_flags(buf, flags);
}

/// A batch of no records and no flags: a call that only asks analyzers for the updates they
/// hold.
pub fn empty_batch() -> [u8; HEADER_LEN] {
    let mut buf = [0; HEADER_LEN];
    write_header(&mut buf, 0, BASE_STRIDE);
    buf
}

/// Writes one record of layout 1 into the first [`BASE_STRIDE`] bytes of `out`, every byte of
/// it (reserved ones zeroed).
///
/// # Panics
/// If `out` is shorter than [`BASE_STRIDE`] (a caller bug: records are one stride each).
#[inline]
pub fn write_record(meta: &PacketMeta, out: &mut [u8]) {
    fields_of(meta).encode_into(out);
}

/// Writes the tunnel extension of one record: bytes [`BASE_STRIDE`]..[`EXTENDED_STRIDE`] of
/// `out` (all zero for a packet that came through no tunnel).
///
/// # Panics
/// If `out` is shorter than [`EXTENDED_STRIDE`].
#[inline]
pub fn write_tunnel(meta: &PacketMeta, out: &mut [u8]) {
    tunnel_of(meta).encode_into(out);
}

/// Turns the first `count` records of `records` from [`BASE_STRIDE`] into [`EXTENDED_STRIDE`],
/// in place, with empty extensions: what a batch becomes when its first tunnelled packet comes.
///
/// # Panics
/// If `records` is shorter than `count` extended records.
pub fn widen(records: &mut [u8], count: usize) {
    for k in (0..count).rev() {
        let (from, to) = (k * BASE_STRIDE, k * EXTENDED_STRIDE);
        records.copy_within(from..from + BASE_STRIDE, to);
        records[to + BASE_STRIDE..to + EXTENDED_STRIDE].fill(0);
    }
}

/// The tunnel extension of a record: the outermost tunnel, all zero for a packet that came
/// through none.
#[inline]
fn tunnel_of(m: &PacketMeta) -> TunnelFields {
    let t = &m.tunnel;
    let Some(kind) = t.kind() else {
        return TunnelFields::default();
    };
    let family = match t.outer_family {
        IpFamily::NotIp => 0,
        IpFamily::V4 => tunnel_bits::OUTER_IPV4,
        IpFamily::V6 => tunnel_bits::OUTER_IPV6,
    };
    TunnelFields {
        outer_src: t.outer_src,
        outer_dst: t.outer_dst,
        id: t.id.unwrap_or(0),
        kind: kind.code(),
        depth: t.depth,
        bits: family | flag(t.id.is_some(), tunnel_bits::ID),
    }
}

/// The record's fields for one packet: the decoder's names and booleans turned into the
/// record's (a copy the optimiser folds into the stores of the encoder).
#[inline]
fn fields_of(m: &PacketMeta) -> PacketFields {
    PacketFields {
        time_ns: m.ts_ns,
        flow_id: m.flow_id,
        src: m.src_addr,
        dst: m.dst_addr,
        seq: m.seq,
        ack: m.ack,
        tsval: m.tsval,
        tsecr: m.tsecr,
        wire_len: m.wire_len,
        ip_len: m.ip_len,
        payload_len: m.payload_len,
        src_port: m.src_port,
        dst_port: m.dst_port,
        window: m.window,
        mss: m.mss,
        device: m.device,
        ip_proto: m.ip_proto,
        tcp_flags: m.tcp_flags,
        ttl: m.ttl,
        wscale: m.wscale,
        packet_bits: packet_bits_of(m),
        tcp_options: tcp_option_bits_of(m),
        sack_blocks: m.sack_blocks,
        tcp_header_len: m.tcp_hdr_len,
    }
}

/// The packet-bits byte of a record.
#[inline]
fn packet_bits_of(m: &PacketMeta) -> u8 {
    use packet_bits as b;
    let family = match m.family {
        IpFamily::NotIp => 0,
        IpFamily::V4 => b::IPV4,
        IpFamily::V6 => b::IPV6,
    };
    family
        | flag(m.dont_fragment, b::DONT_FRAGMENT)
        | flag(m.fragment, b::FRAGMENT)
        | flag(m.has_tcp, b::TCP)
        | flag(m.truncated, b::TRUNCATED)
        | flag(m.direction, b::DIRECTION)
}

/// The TCP-option-bits byte of a record.
#[inline]
fn tcp_option_bits_of(m: &PacketMeta) -> u8 {
    use tcp_option_bits as b;
    flag(m.sack_permitted, b::SACK_PERMITTED)
        | flag(m.has_timestamps, b::TIMESTAMPS)
        | flag(m.has_mss, b::MSS)
        | flag(m.has_wscale, b::WINDOW_SCALE)
        | flag(m.sack_blocks > 0, b::SACK_BLOCKS)
}

/// `bit` if `on`, else 0.
#[inline(always)]
fn flag(on: bool, bit: u8) -> u8 {
    if on { bit } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Tunnel, TunnelKind};
    use wasmtap_record::tunnel_kind;

    /// A packet with a distinct value in every field, so a swapped field shows.
    fn sample() -> PacketMeta {
        PacketMeta {
            ts_ns: 0x0102_0304_0506_0708,
            flow_id: 0x1112_1314_1516_1718,
            src_addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst_addr: core::array::from_fn(|i| 0x20 + i as u8),
            seq: 0x2122_2324,
            ack: 0x3132_3334,
            tsval: 0x4142_4344,
            tsecr: 0x5152_5354,
            wire_len: 1514,
            ip_len: 1500,
            payload_len: 1448,
            ifindex: 7,
            src_port: 0x6162,
            dst_port: 443,
            window: 0x7172,
            mss: 1460,
            device: 0x0203,
            family: IpFamily::V4,
            ip_proto: 6,
            tcp_flags: 0x18,
            ttl: 64,
            wscale: 7,
            sack_blocks: 2,
            tcp_hdr_len: 52,
            dont_fragment: true,
            fragment: false,
            has_tcp: true,
            truncated: true,
            direction: true,
            sack_permitted: false,
            has_timestamps: true,
            has_mss: true,
            has_wscale: false,
            tunnel: Tunnel::default(),
        }
    }

    /// A packet that came through two tunnels, the outermost VXLAN over IPv6.
    fn tunnelled() -> PacketMeta {
        let outer = (
            IpFamily::V6,
            core::array::from_fn(|i| 0x40 + i as u8),
            core::array::from_fn(|i| 0x60 + i as u8),
        );
        let tunnel = Tunnel::opened(TunnelKind::Vxlan, Some(0x00ab_cdef), 2, outer);
        PacketMeta { tunnel, ..sample() }
    }

    /// Every decoded field lands in its record field, and that is what is written; the byte
    /// offsets of the record fields are `wasmtap-record`'s to test.
    #[test]
    fn every_packet_field_in_its_record_field() {
        let m = sample();
        let f = fields_of(&m);
        assert_eq!((f.time_ns, f.flow_id), (0x0102_0304_0506_0708, 0x1112_1314_1516_1718));
        assert_eq!((f.src, f.dst), (m.src_addr, m.dst_addr));
        assert_eq!(
            (f.seq, f.ack, f.tsval, f.tsecr),
            (0x2122_2324, 0x3132_3334, 0x4142_4344, 0x5152_5354)
        );
        assert_eq!((f.wire_len, f.ip_len, f.payload_len), (1514, 1500, 1448));
        assert_eq!((f.src_port, f.dst_port, f.window, f.mss), (0x6162, 443, 0x7172, 1460));
        assert_eq!((f.device, f.ip_proto, f.tcp_flags, f.ttl, f.wscale), (0x0203, 6, 0x18, 64, 7));
        // IPv4 | DF | TCP | truncated | direction
        assert_eq!(f.packet_bits, 0x01 | 0x04 | 0x10 | 0x20 | 0x40);
        // timestamps | MSS | SACK blocks
        assert_eq!(f.tcp_options, 0x02 | 0x04 | 0x10);
        assert_eq!((f.sack_blocks, f.tcp_header_len), (2, 52));

        let mut r = [0xeeu8; EXTENDED_STRIDE];
        write_record(&m, &mut r);
        assert_eq!(r[..96], f.encode());
        assert!(r[96..].iter().all(|&b| b == 0xee), "layout 1 alone");
        write_tunnel(&m, &mut r);
        assert!(r[96..].iter().all(|&b| b == 0), "no tunnel: the extension is all zero");
    }

    /// The tunnel fields land in the extension; the rest of the record is the inner packet's.
    #[test]
    fn tunnel_fields_in_the_extension() {
        let m = tunnelled();
        let t = tunnel_of(&m);
        assert_eq!((t.outer_src, t.outer_dst), (m.tunnel.outer_src, m.tunnel.outer_dst));
        assert_eq!((t.id, t.kind, t.depth), (0x00ab_cdef, tunnel_kind::VXLAN, 2));
        assert_eq!(t.bits, tunnel_bits::OUTER_IPV6 | tunnel_bits::ID);

        let mut r = [0xeeu8; EXTENDED_STRIDE];
        write_record(&m, &mut r);
        write_tunnel(&m, &mut r);
        assert_eq!(r[..96], fields_of(&m).encode());
        let mut alone = [0u8; EXTENDED_STRIDE];
        t.encode_into(&mut alone);
        assert_eq!(r[96..], alone[96..]);

        // Without an id (IP-in-IP), over IPv4.
        let outer = (IpFamily::V4, [0; 16], [0; 16]);
        let m = PacketMeta { tunnel: Tunnel::opened(TunnelKind::Ipv6InIp, None, 1, outer), ..m };
        let t = tunnel_of(&m);
        assert_eq!((t.id, t.kind, t.bits), (0, tunnel_kind::IPV6_IN_IP, tunnel_bits::OUTER_IPV4));
    }

    #[test]
    fn remaining_bits_and_an_empty_record() {
        let m = PacketMeta {
            family: IpFamily::V6,
            fragment: true,
            sack_permitted: true,
            has_wscale: true,
            ..PacketMeta::default()
        };
        let f = fields_of(&m);
        assert_eq!(f.packet_bits, 0x02 | 0x08);
        assert_eq!(f.tcp_options, 0x01 | 0x08);

        let mut r = [0xaau8; BASE_STRIDE];
        write_record(&PacketMeta::default(), &mut r);
        assert!(r.iter().all(|&b| b == 0), "a non-IP record is all zero");
    }

    #[test]
    fn header_count_and_flags() {
        let mut buf = empty_batch();
        assert_eq!(buf, [1, 0, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        write_header(&mut buf, 3, EXTENDED_STRIDE);
        write_flags(&mut buf, HOLD);
        assert_eq!(buf, [1, 0, 136, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    /// Widening moves every record to its extended place and zeroes the extensions.
    #[test]
    fn widening_keeps_every_record() {
        let metas: Vec<PacketMeta> =
            (0..3).map(|i| PacketMeta { ts_ns: i + 1, seq: 100 + i as u32, ..sample() }).collect();
        let mut buf = vec![0xffu8; 3 * EXTENDED_STRIDE];
        for (k, m) in metas.iter().enumerate() {
            write_record(m, &mut buf[k * BASE_STRIDE..]);
        }
        widen(&mut buf, 3);
        for (k, m) in metas.iter().enumerate() {
            let r = &buf[k * EXTENDED_STRIDE..(k + 1) * EXTENDED_STRIDE];
            assert_eq!(r[..96], fields_of(m).encode(), "record {k}");
            assert!(r[96..].iter().all(|&b| b == 0), "record {k}");
        }
    }
}
