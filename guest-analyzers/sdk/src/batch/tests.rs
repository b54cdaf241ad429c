//! Tests of the batch view: header checks, stride handling, every field offset and the tunnel
//! extension, against bytes written by hand and by the builder.

use super::*;
use crate::{BatchBuilder, PacketFields, TunnelFields, tunnel_bits, tunnel_kind};

fn header(version: u16, stride: u16, count: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&stride.to_le_bytes());
    h.extend_from_slice(&count.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h
}

#[test]
fn rejects_bad_headers() {
    assert_eq!(Batch::parse(&[1, 0, 96]).err(), Some(BatchError::ShortHeader(3)));
    assert_eq!(Batch::parse(&header(2, 96, 0)).err(), Some(BatchError::Version(2)));
    assert_eq!(Batch::parse(&header(1, 95, 0)).err(), Some(BatchError::Stride(95)));
    assert_eq!(
        Batch::parse(&header(1, 96, 1)).err(),
        Some(BatchError::Length { expected: 112, actual: 16 })
    );
    let mut long = header(1, 96, 0);
    long.push(0);
    assert!(Batch::parse(&long).is_err());
    // A huge count must not overflow (wasm32 has a 32-bit usize).
    assert!(Batch::parse(&header(1, u16::MAX, u32::MAX)).is_err());
    let msg: String = BatchError::Version(7).into();
    assert!(msg.contains("version 7"), "{msg}");
}

#[test]
fn empty_batch() {
    let bytes = header(1, 96, 0);
    let b = Batch::parse(&bytes).expect("valid");
    assert!(b.is_empty());
    assert_eq!(b.iter().count(), 0);
    assert!(b.get(0).is_none());
}

/// Writes every field at its WIT offset by hand, then reads it through the accessors.
#[test]
fn every_field_at_its_wit_offset() {
    let mut rec = [0u8; RECORD_LEN];
    rec[0..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
    rec[8..16].copy_from_slice(&0xdead_beef_0000_0001u64.to_le_bytes());
    rec[16..20].copy_from_slice(&[192, 168, 1, 10]);
    rec[32..36].copy_from_slice(&[10, 0, 0, 1]);
    rec[48..52].copy_from_slice(&1000u32.to_le_bytes());
    rec[52..56].copy_from_slice(&2000u32.to_le_bytes());
    rec[56..60].copy_from_slice(&3000u32.to_le_bytes());
    rec[60..64].copy_from_slice(&4000u32.to_le_bytes());
    rec[64..68].copy_from_slice(&1514u32.to_le_bytes());
    rec[68..72].copy_from_slice(&1500u32.to_le_bytes());
    rec[72..76].copy_from_slice(&1448u32.to_le_bytes());
    rec[76..78].copy_from_slice(&443u16.to_le_bytes());
    rec[78..80].copy_from_slice(&51000u16.to_le_bytes());
    rec[80..82].copy_from_slice(&65535u16.to_le_bytes());
    rec[82..84].copy_from_slice(&1460u16.to_le_bytes());
    rec[84..86].copy_from_slice(&7u16.to_le_bytes());
    rec[86] = 6;
    rec[87] = tcp_flags::SYN | tcp_flags::ACK | tcp_flags::CWR;
    rec[88] = 63;
    rec[89] = 9;
    rec[90] =
        packet_bits::IPV4 | packet_bits::DONT_FRAGMENT | packet_bits::TCP | packet_bits::DIRECTION;
    rec[91] = tcp_options::SACK_PERMITTED
        | tcp_options::TIMESTAMPS
        | tcp_options::MSS
        | tcp_options::WINDOW_SCALE;
    rec[92] = 2;
    rec[93] = 40;
    let mut bytes = header(1, 96, 1);
    bytes.extend_from_slice(&rec);

    let batch = Batch::parse(&bytes).expect("valid");
    let p = batch.get(0).expect("one record");
    assert_eq!(p.time_ns(), 0x0102_0304_0506_0708);
    assert_eq!(p.flow_id(), 0xdead_beef_0000_0001);
    assert_eq!(p.src_ip(), Some("192.168.1.10".parse().expect("ip")));
    assert_eq!(p.dst_ip(), Some("10.0.0.1".parse().expect("ip")));
    assert_eq!(p.src_label(), Label::Ipv4(0xc0a8_010a));
    assert_eq!(p.dst_label(), Label::Ipv4(0x0a00_0001));
    assert_eq!(p.device_label(), Label::Device(7));
    assert_eq!((p.seq(), p.ack_num(), p.tsval(), p.tsecr()), (1000, 2000, 3000, 4000));
    assert_eq!((p.wire_len(), p.ip_len(), p.payload_len()), (1514, 1500, 1448));
    assert_eq!((p.src_port(), p.dst_port(), p.window(), p.mss()), (443, 51000, 65535, 1460));
    assert_eq!((p.device(), p.ip_proto(), p.ttl()), (7, 6, 63));
    assert!(p.syn() && p.ack() && p.cwr());
    assert!(!p.fin() && !p.rst() && !p.psh() && !p.urg() && !p.ece());
    assert!(p.is_ipv4() && !p.is_ipv6() && p.is_ip());
    assert!(p.dont_fragment() && !p.is_fragment() && p.has_tcp() && !p.truncated());
    assert_eq!(p.direction(), Direction::FromHigher);
    assert!(p.sack_permitted() && p.has_timestamps() && p.has_mss() && p.has_wscale());
    assert!(!p.has_sack_blocks());
    assert_eq!(p.wscale(), Some(9));
    assert_eq!((p.sack_block_count(), p.tcp_header_len()), (2, 40));
    assert_eq!(p.raw(), &rec);
    // The builder writes the same bytes back.
    assert_eq!(PacketFields::from(p).encode(), rec);
}

#[test]
fn ipv6_addresses_and_labels() {
    let src: core::net::Ipv6Addr = "2001:db8::1".parse().expect("ip");
    let dst: core::net::Ipv6Addr = "fe80::2:3".parse().expect("ip");
    let bytes = BatchBuilder::new().push(&PacketFields::ipv6(src, dst)).build();
    let batch = Batch::parse(&bytes).expect("valid");
    let p = batch.get(0).expect("record");
    assert!(p.is_ipv6() && !p.is_ipv4());
    assert_eq!(p.src_ip(), Some(IpAddr::V6(src)));
    assert_eq!(p.dst_ip(), Some(IpAddr::V6(dst)));
    assert_eq!(p.src_label(), Label::Ipv6(0x2001_0db8_0000_0000, 1));
    assert_eq!(p.dst_label(), Label::Ipv6(0xfe80_0000_0000_0000, 0x0000_0000_0002_0003));
    assert_eq!(p.src_label(), Label::from(IpAddr::V6(src)));
}

#[test]
fn non_ip_record_has_no_address() {
    let bytes = BatchBuilder::new().push(&PacketFields::default()).build();
    let batch = Batch::parse(&bytes).expect("valid");
    let p = batch.get(0).expect("record");
    assert_eq!(p.src_ip(), None);
    assert_eq!(p.src_label(), Label::Ipv4(0));
    assert_eq!(p.wscale(), None);
    assert_eq!(p.direction(), Direction::FromLower);
}

#[test]
fn wider_stride_skips_the_extra_bytes() {
    let mut b = BatchBuilder::with_stride(128);
    for i in 0..5u16 {
        b.push(&PacketFields::default().with_device(i).with_time(u64::from(i) * 10));
    }
    let bytes = b.build();
    assert_eq!(bytes.len(), HEADER_LEN + 5 * 128);
    let batch = Batch::parse(&bytes).expect("valid");
    assert_eq!(batch.stride(), 128);
    let it = batch.iter();
    assert_eq!(it.len(), 5);
    let devices: Vec<u16> = it.map(|p| p.device()).collect();
    assert_eq!(devices, vec![0, 1, 2, 3, 4]);
    assert_eq!(batch.get(4).map(|p| p.time_ns()), Some(40));
    assert!(batch.get(5).is_none());
    assert_eq!((&batch).into_iter().filter(|p| p.device() % 2 == 0).count(), 3);
}

#[test]
fn builder_helpers_set_what_they_say() {
    let p = PacketFields::ipv4([10, 0, 0, 1].into(), [10, 0, 0, 2].into())
        .with_tcp(1, 2, tcp_flags::RST)
        .with_payload(100)
        .with_wscale(0)
        .with_bits(packet_bits::DONT_FRAGMENT);
    let bytes = BatchBuilder::new().push(&p).build();
    let batch = Batch::parse(&bytes).expect("valid");
    let r = batch.get(0).expect("record");
    assert_eq!((r.ip_len(), r.payload_len(), r.tcp_header_len()), (140, 100, 20));
    assert!(r.rst() && r.has_tcp() && r.dont_fragment() && r.is_ipv4());
    assert_eq!(r.ip_proto(), 6);
    assert_eq!(r.wscale(), Some(0));
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&a);
    out
}

/// Writes every extension field at its WIT offset by hand (96..136), then reads it through
/// the tunnel view, and through the builder's fields back to the same bytes.
#[test]
fn every_tunnel_field_at_its_wit_offset() {
    let outer_src: core::net::Ipv6Addr = "2001:db8::a".parse().expect("ip");
    let outer_dst: core::net::Ipv6Addr = "2001:db8::b".parse().expect("ip");
    let inner = PacketFields::ipv4([10, 244, 1, 5].into(), [10, 244, 2, 7].into()).with_tcp(
        40000,
        8080,
        tcp_flags::SYN,
    );
    let mut rec = [0u8; EXTENDED_LEN];
    inner.encode_into(&mut rec);
    rec[96..112].copy_from_slice(&outer_src.octets());
    rec[112..128].copy_from_slice(&outer_dst.octets());
    rec[128..132].copy_from_slice(&0x00ab_cdefu32.to_le_bytes());
    rec[132] = 2; // Geneve
    rec[133] = 3;
    rec[134] = 0x02 | 0x04; // outer IPv6, id valid
    let mut bytes = header(1, 136, 1);
    bytes.extend_from_slice(&rec);

    let batch = Batch::parse(&bytes).expect("valid");
    assert!(batch.has_tunnel_extension());
    let p = batch.get(0).expect("one record");
    // Layout 1 reads as before: the inner packet.
    assert_eq!(PacketFields::from(p), inner);
    let t = p.tunnel().expect("a tunnel");
    assert_eq!(t.kind(), TunnelKind::Geneve);
    assert_eq!(t.kind().code(), 2);
    assert_eq!(t.id(), Some(0x00ab_cdef));
    assert_eq!(t.depth(), 3);
    assert_eq!(t.bits(), tunnel_bits::OUTER_IPV6 | tunnel_bits::ID);
    assert_eq!(t.outer_src(), Some(IpAddr::V6(outer_src)));
    assert_eq!(t.outer_dst(), Some(IpAddr::V6(outer_dst)));
    assert_eq!(t.raw()[..], rec[96..]);
    let mut back = [0u8; EXTENDED_LEN];
    TunnelFields::from(t).encode_into(&mut back);
    assert_eq!(back[96..], rec[96..]);
    // The iterator sees the same record.
    assert_eq!(batch.iter().next().and_then(|p| p.tunnel()).map(|t| t.raw()), Some(t.raw()));
}

#[test]
fn builder_writes_every_tunnel_kind_and_reads_it_back() {
    let kinds = [
        (tunnel_kind::VXLAN, TunnelKind::Vxlan, "vxlan"),
        (tunnel_kind::GENEVE, TunnelKind::Geneve, "geneve"),
        (tunnel_kind::GRE, TunnelKind::Gre, "gre"),
        (tunnel_kind::IPV4_IN_IP, TunnelKind::Ipv4InIp, "ipv4_in_ip"),
        (tunnel_kind::IPV6_IN_IP, TunnelKind::Ipv6InIp, "ipv6_in_ip"),
    ];
    let mut b = BatchBuilder::new();
    let mut written = Vec::new();
    for (i, (code, _, _)) in (0u8..).zip(kinds) {
        let t = TunnelFields {
            outer_src: v4([192, 168, 0, i]),
            outer_dst: v4([192, 168, 1, i]),
            // The id is valid for the even ones only; the odd ones carry stray bytes.
            id: 1000 + u32::from(i),
            kind: code,
            depth: 1,
            bits: tunnel_bits::OUTER_IPV4 | if i % 2 == 0 { tunnel_bits::ID } else { 0 },
        };
        let p =
            PacketFields::ipv4([10, 0, 0, i].into(), [10, 0, 1, i].into()).with_device(i.into());
        b.push_tunnelled(&p, &t);
        written.push(t);
    }
    let bytes = b.build();
    assert_eq!(bytes.len(), HEADER_LEN + kinds.len() * EXTENDED_LEN);
    let batch = Batch::parse(&bytes).expect("valid");
    assert_eq!(batch.stride(), EXTENDED_LEN);
    for ((i, p), ((_, kind, name), t)) in (0u8..).zip(&batch).zip(kinds.into_iter().zip(&written)) {
        assert_eq!(p.device(), u16::from(i));
        let tunnel = p.tunnel().expect("a tunnel");
        assert_eq!(tunnel.kind(), kind);
        assert_eq!(tunnel.kind().as_str(), name);
        assert_eq!(tunnel.kind().to_string(), name);
        assert_eq!(tunnel.id(), (i % 2 == 0).then_some(1000 + u32::from(i)));
        assert_eq!(tunnel.outer_src(), Some(IpAddr::from([192, 168, 0, i])));
        assert_eq!(tunnel.outer_dst(), Some(IpAddr::from([192, 168, 1, i])));
        assert_eq!(TunnelFields::from(tunnel), *t);
    }
}

#[test]
fn no_tunnel_below_stride_136_or_with_kind_zero() {
    // Stride 96: no extension at all.
    let bytes = BatchBuilder::new().push(&PacketFields::default()).build();
    let batch = Batch::parse(&bytes).expect("valid");
    assert!(!batch.has_tunnel_extension());
    assert!(batch.get(0).expect("record").tunnel().is_none());

    // Stride 128: bytes past 96 that look like a tunnel are not one, since the extension needs
    // 136 bytes.
    let mut rec = [0u8; 128];
    rec[96..100].copy_from_slice(&[192, 168, 0, 1]);
    rec[100..128].fill(0x01);
    let mut bytes = header(1, 128, 1);
    bytes.extend_from_slice(&rec);
    let batch = Batch::parse(&bytes).expect("valid");
    assert!(!batch.has_tunnel_extension());
    assert!(batch.get(0).expect("record").tunnel().is_none());
    assert!(batch.iter().all(|p| p.tunnel().is_none()));

    // Stride 136, kind 0: an untunnelled packet, whatever the other bytes say.
    let mut rec = [0u8; EXTENDED_LEN];
    rec[96..].fill(0xff);
    rec[132] = 0;
    let mut bytes = header(1, 136, 1);
    bytes.extend_from_slice(&rec);
    let batch = Batch::parse(&bytes).expect("valid");
    assert!(batch.has_tunnel_extension());
    assert!(batch.get(0).expect("record").tunnel().is_none());
}

#[test]
fn pushing_a_tunnel_widens_the_records_already_pushed() {
    let plain = PacketFields::ipv4([10, 0, 0, 1].into(), [10, 0, 0, 2].into()).with_time(7);
    let t = TunnelFields {
        kind: tunnel_kind::GRE,
        depth: 1,
        bits: tunnel_bits::OUTER_IPV4,
        ..TunnelFields::default()
    };
    let mut b = BatchBuilder::new();
    b.push(&plain).push_tunnelled(&plain.with_time(8), &t).push(&plain.with_time(9));
    let bytes = b.build();
    let batch = Batch::parse(&bytes).expect("valid");
    assert_eq!((batch.stride(), batch.len()), (EXTENDED_LEN, 3));
    let seen: Vec<(u64, Option<TunnelKind>)> =
        batch.iter().map(|p| (p.time_ns(), p.tunnel().map(|t| t.kind()))).collect();
    assert_eq!(seen, vec![(7, None), (8, Some(TunnelKind::Gre)), (9, None)]);
    assert_eq!(batch.get(0).map(PacketFields::from), Some(plain));
    // GRE without a key: no id.
    assert_eq!(batch.get(1).and_then(|p| p.tunnel()).map(|t| t.id()), Some(None));
}

#[test]
fn a_stride_past_136_keeps_the_extension_at_96() {
    let t = TunnelFields {
        id: 42,
        kind: tunnel_kind::VXLAN,
        depth: 2,
        bits: tunnel_bits::OUTER_IPV4 | tunnel_bits::ID,
        outer_src: v4([172, 16, 0, 1]),
        outer_dst: v4([172, 16, 0, 2]),
    };
    let mut b = BatchBuilder::with_stride(200);
    for i in 0..4u16 {
        let p = PacketFields::default().with_device(i);
        if i % 2 == 1 {
            b.push_tunnelled(&p, &t);
        } else {
            b.push(&p);
        }
    }
    let bytes = b.build();
    assert_eq!(bytes.len(), HEADER_LEN + 4 * 200);
    let batch = Batch::parse(&bytes).expect("valid");
    assert_eq!(batch.stride(), 200);
    assert!(batch.has_tunnel_extension());
    for (i, p) in (0u16..).zip(&batch) {
        assert_eq!(p.device(), i);
        let tunnel = p.tunnel().map(TunnelFields::from);
        assert_eq!(tunnel, (i % 2 == 1).then_some(t));
    }
    assert_eq!(batch.get(3).and_then(|p| p.tunnel()).and_then(|t| t.id()), Some(42));
    assert!(batch.get(4).is_none());
}

#[test]
fn an_unknown_kind_code_is_carried() {
    let t = TunnelFields {
        kind: 200,
        depth: 1,
        bits: tunnel_bits::OUTER_IPV4,
        outer_src: v4([10, 1, 1, 1]),
        outer_dst: v4([10, 1, 1, 2]),
        ..TunnelFields::default()
    };
    let bytes = BatchBuilder::new().push_tunnelled(&PacketFields::default(), &t).build();
    let batch = Batch::parse(&bytes).expect("valid");
    let tunnel = batch.get(0).and_then(|p| p.tunnel()).expect("a tunnel");
    assert_eq!(tunnel.kind(), TunnelKind::Unknown(200));
    assert_eq!((tunnel.kind().code(), tunnel.kind().as_str()), (200, "unknown"));
    assert_eq!(tunnel.kind().to_string(), "unknown (200)");
    assert_eq!(tunnel.outer_src(), Some(IpAddr::from([10, 1, 1, 1])));
    // Every code maps to a kind and back; 0 alone is no tunnel.
    assert_eq!(TunnelKind::from_code(0), None);
    for code in 1..=u8::MAX {
        assert_eq!(TunnelKind::from_code(code).map(TunnelKind::code), Some(code));
    }
}

#[test]
fn outer_addresses_follow_the_tunnel_bits() {
    let mut t = TunnelFields {
        kind: tunnel_kind::IPV6_IN_IP,
        depth: 1,
        outer_src: v4([10, 0, 0, 1]),
        outer_dst: v4([10, 0, 0, 2]),
        ..TunnelFields::default()
    };
    // Neither family named: no outer address, but still a tunnel.
    let bytes = BatchBuilder::new().push_tunnelled(&PacketFields::default(), &t).build();
    let batch = Batch::parse(&bytes).expect("valid");
    let tunnel = batch.get(0).and_then(|p| p.tunnel()).expect("a tunnel");
    assert_eq!((tunnel.outer_src(), tunnel.outer_dst()), (None, None));
    assert_eq!(tunnel.outer_src_raw(), &t.outer_src);
    assert!(format!("{:?}", batch.get(0).expect("record")).contains("Ipv6InIp"));

    t.bits = tunnel_bits::OUTER_IPV6;
    let bytes = BatchBuilder::new().push_tunnelled(&PacketFields::default(), &t).build();
    let batch = Batch::parse(&bytes).expect("valid");
    let tunnel = batch.get(0).and_then(|p| p.tunnel()).expect("a tunnel");
    assert_eq!(tunnel.outer_dst(), Some(IpAddr::V6(core::net::Ipv6Addr::from(t.outer_dst))));
}
