//! Tests of the encoder and the header writer: every field at the offset that the `process`
//! comment in `wit/analyzer.wit` documents, checked against those numbers as written there
//! (not through [`offset`]), so that a wrong constant shows as well as a wrong write.

use super::*;

fn u16_at(r: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([r[at], r[at + 1]])
}
fn u32_at(r: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]])
}
fn u64_at(r: &[u8], at: usize) -> u64 {
    u64::from(u32_at(r, at)) | u64::from(u32_at(r, at + 4)) << 32
}

/// A record with a distinct value in every field, so a swapped offset shows.
fn sample() -> PacketFields {
    PacketFields {
        time_ns: 0x0102_0304_0506_0708,
        flow_id: 0x1112_1314_1516_1718,
        src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        dst: core::array::from_fn(|i| 0x20 + i as u8),
        seq: 0x2122_2324,
        ack: 0x3132_3334,
        tsval: 0x4142_4344,
        tsecr: 0x5152_5354,
        wire_len: 1514,
        ip_len: 1500,
        payload_len: 1448,
        src_port: 0x6162,
        dst_port: 443,
        window: 0x7172,
        mss: 1460,
        device: 0x0203,
        ip_proto: 6,
        tcp_flags: 0x18,
        ttl: 64,
        wscale: 7,
        // IPv4 | DF | TCP | truncated | direction
        packet_bits: 0x01 | 0x04 | 0x10 | 0x20 | 0x40,
        // timestamps | MSS | SACK blocks
        tcp_options: 0x02 | 0x04 | 0x10,
        sack_blocks: 2,
        tcp_header_len: 52,
    }
}

#[test]
fn header_layout() {
    let mut buf = [0xffu8; HEADER_LEN + 3];
    BatchHeader::new(0x0a0b_0c0d).encode_into(&mut buf);
    assert_eq!(u16_at(&buf, 0), 1);
    assert_eq!(u16_at(&buf, 2), 96);
    assert_eq!(u32_at(&buf, 4), 0x0a0b_0c0d);
    assert_eq!(u64_at(&buf, 8), 0);
    assert_eq!(&buf[HEADER_LEN..], &[0xff; 3], "nothing past the header is touched");

    let wide = BatchHeader { stride: 128, count: 2, flags: header_flags::HOLD };
    wide.encode_into(&mut buf);
    assert_eq!(u16_at(&buf, 2), 128);
    assert_eq!(u32_at(&buf, 4), 2);
    assert_eq!(u32_at(&buf, 8), 0x01, "hold is bit 0x01 of the flags word");
    assert_eq!(u32_at(&buf, 12), 0, "the reserved word is zeroed");
}

#[test]
fn write_flags_touches_only_the_flags_word() {
    let mut buf = [0u8; HEADER_LEN];
    BatchHeader::new(3).encode_into(&mut buf);
    let before = buf;
    write_flags(&mut buf, header_flags::HOLD);
    assert_eq!(u32_at(&buf, 8), 0x01);
    assert_eq!(buf[..8], before[..8]);
    assert_eq!(buf[12..], before[12..]);
    write_flags(&mut buf, 0);
    assert_eq!(buf, before);
}

#[test]
fn every_field_at_its_documented_offset() {
    let p = sample();
    let mut r = [0xeeu8; RECORD_LEN];
    p.encode_into(&mut r);
    assert_eq!(u64_at(&r, 0), p.time_ns);
    assert_eq!(u64_at(&r, 8), p.flow_id);
    assert_eq!(&r[16..32], &p.src);
    assert_eq!(&r[32..48], &p.dst);
    assert_eq!(u32_at(&r, 48), p.seq);
    assert_eq!(u32_at(&r, 52), p.ack);
    assert_eq!(u32_at(&r, 56), p.tsval);
    assert_eq!(u32_at(&r, 60), p.tsecr);
    assert_eq!(u32_at(&r, 64), 1514);
    assert_eq!(u32_at(&r, 68), 1500);
    assert_eq!(u32_at(&r, 72), 1448);
    assert_eq!(u16_at(&r, 76), 0x6162);
    assert_eq!(u16_at(&r, 78), 443);
    assert_eq!(u16_at(&r, 80), 0x7172);
    assert_eq!(u16_at(&r, 82), 1460);
    assert_eq!(u16_at(&r, 84), 0x0203);
    assert_eq!(r[86], 6);
    assert_eq!(r[87], 0x18);
    assert_eq!(r[88], 64);
    assert_eq!(r[89], 7);
    assert_eq!(r[90], 0x01 | 0x04 | 0x10 | 0x20 | 0x40);
    assert_eq!(r[91], 0x02 | 0x04 | 0x10);
    assert_eq!(r[92], 2);
    assert_eq!(r[93], 52);
    assert_eq!(u16_at(&r, 94), 0, "reserved bytes are zeroed");
    // Little-endian, byte for byte.
    assert_eq!(&r[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(p.encode(), r);
}

#[test]
fn every_byte_is_written() {
    let mut r = [0xaau8; RECORD_LEN + 3];
    PacketFields::default().encode_into(&mut r);
    assert!(r[..RECORD_LEN].iter().all(|&b| b == 0), "an empty record is all zero");
    assert_eq!(&r[RECORD_LEN..], &[0xaa; 3], "nothing past the record is touched");
}

#[test]
fn a_batch_of_records_at_stride() {
    let mut buf = [0u8; HEADER_LEN + 2 * RECORD_LEN];
    let (header, records) = buf.split_at_mut(HEADER_LEN);
    BatchHeader::new(2).encode_into(header);
    let (mut a, mut b) = (sample(), sample());
    a.seq = 1;
    b.seq = 2;
    let (first, second) = records.split_at_mut(RECORD_LEN);
    a.encode_into(first);
    b.encode_into(second);
    assert_eq!(u32_at(&buf, 4), 2);
    assert_eq!(u32_at(&buf, HEADER_LEN + 48), 1);
    assert_eq!(u32_at(&buf, HEADER_LEN + RECORD_LEN + 48), 2);
}

#[test]
fn constructors_fill_the_fields_they_name() {
    let p = PacketFields::ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
        .with_tcp(40000, 443, tcp_flags::SYN)
        .with_payload(100)
        .with_wscale(0)
        .with_device(3)
        .with_time(5)
        .with_bits(packet_bits::DONT_FRAGMENT);
    assert_eq!((&p.src[..4], &p.dst[..4]), (&[10, 0, 0, 1][..], &[10, 0, 0, 2][..]));
    // 20 bytes of IPv4 header, 20 of TCP header, 100 of payload.
    assert_eq!((p.ip_len, p.payload_len, p.tcp_header_len), (140, 100, 20));
    assert_eq!((p.ip_proto, p.ttl, p.src_port, p.dst_port), (6, 64, 40000, 443));
    assert_eq!(p.packet_bits, 0x01 | 0x10 | 0x04);
    assert_eq!((p.tcp_flags, p.tcp_options, p.wscale), (0x02, 0x08, 0));
    assert_eq!((p.device, p.time_ns), (3, 5));

    let v6 = PacketFields::ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
    assert_eq!((v6.packet_bits, v6.ip_len, v6.ttl), (0x02, 40, 64));
    assert_eq!(v6.src, Ipv6Addr::LOCALHOST.octets());
}

/// The tunnel extension at the offsets of the WIT comment (96..136), written as given.
#[test]
fn tunnel_extension_layout() {
    let t = TunnelFields {
        outer_src: [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        outer_dst: core::array::from_fn(|i| 0x80 + i as u8),
        id: 0x00ab_cdef,
        kind: tunnel_kind::VXLAN,
        depth: 2,
        bits: tunnel_bits::OUTER_IPV4 | tunnel_bits::ID,
    };
    let mut r = [0xeeu8; 140];
    t.encode_into(&mut r);
    assert_eq!(&r[..96], &[0xee; 96], "layout 1's bytes are not touched");
    assert_eq!(&r[96..112], &t.outer_src);
    assert_eq!(&r[112..128], &t.outer_dst);
    assert_eq!(u32_at(&r, 128), 0x00ab_cdef);
    assert_eq!((r[132], r[133], r[134], r[135]), (1, 2, 0x05, 0));
    assert_eq!(&r[136..], &[0xee; 4], "nothing past the extension is touched");
    assert_eq!((EXTENDED_LEN, TUNNEL_LEN), (136, 40));

    let mut buf = [0u8; HEADER_LEN];
    BatchHeader::extended(3).encode_into(&mut buf);
    assert_eq!((u16_at(&buf, 2), u32_at(&buf, 4)), (136, 3));
}
