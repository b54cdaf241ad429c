//! Tests of the batch view: header checks, stride handling and every field offset, against
//! bytes written by hand and by the builder.

use super::*;
use crate::{BatchBuilder, PacketFields};

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
