//! Decode stage tests: hand-built frames (etherparse's `PacketBuilder`, or bytes by hand where
//! the builder cannot make them) through [`decode`], checking real field values.
#![allow(clippy::unwrap_used, reason = "building constant test frames cannot fail")]

use etherparse::{
    IpHeaders, IpNumber, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader, LinuxSllPacketType,
    PacketBuilder, PacketBuilderStep, TcpOptionElement, VlanId,
};

use super::*;

/// A capture time with nanosecond digits, to see it copied unchanged.
const TS: u64 = 1_700_000_000_123_456_789;
const SRC4: [u8; 4] = [192, 168, 1, 10];
const DST4: [u8; 4] = [10, 0, 0, 1];
const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
/// MSS, SACK-permitted, timestamps, NOP, window scale, SACK with 2 blocks: 38 bytes of
/// options, padded to 40, so a 60-byte TCP header.
const OPTIONS: [TcpOptionElement; 6] = [
    TcpOptionElement::MaximumSegmentSize(1460),
    TcpOptionElement::SelectiveAcknowledgementPermitted,
    TcpOptionElement::Timestamp(0x0a0b_0c0d, 0x0102_0304),
    TcpOptionElement::Noop,
    TcpOptionElement::WindowScale(7),
    TcpOptionElement::SelectiveAcknowledgement((1000, 2000), [Some((3000, 4000)), None, None]),
];
const PAYLOAD: [u8; 100] = [0x55; 100];

/// Every link type, for the robustness tests.
const ALL_LINKS: [LinkType; 6] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::RawIp,
    LinkType::Null,
    LinkType::Loop,
];

/// Serializes a finished `PacketBuilder` chain with `payload`.
macro_rules! built {
    ($builder:expr, $payload:expr) => {{
        let mut v = Vec::new();
        $builder.write(&mut v, $payload).unwrap();
        v
    }};
}

/// Decodes `frame` (fully captured) into a fresh meta whose device is 3.
fn run(link: LinkType, frame: &[u8]) -> (Decoded, PacketMeta) {
    run_cut(link, frame, frame.len())
}

/// Decodes the first `caplen` bytes of `frame`, as a snaplen would cut it.
fn run_cut(link: LinkType, frame: &[u8], caplen: usize) -> (Decoded, PacketMeta) {
    let mut m = PacketMeta { device: 3, ..PacketMeta::default() };
    let d = decode(link, TS, frame.len() as u32, &frame[..caplen], &VxlanPorts::default(), &mut m);
    (d, m)
}

/// A SYN/ACK with ECE and CWR, every option and 100 bytes of payload, on top of `ip`.
fn syn_ack(ip: PacketBuilderStep<IpHeaders>) -> Vec<u8> {
    let b = ip.tcp(40000, 443, 0x1000_0001, 29200).syn().ack(0x2000_0002).ece().cwr();
    built!(b.options(&OPTIONS).unwrap(), &PAYLOAD)
}

/// The start of an Ethernet II frame.
fn eth() -> PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
}

/// The fields `syn_ack` puts into the TCP header, whatever is below it.
fn assert_syn_ack_tcp(m: &PacketMeta) {
    assert!(m.has_tcp);
    assert_eq!((m.src_port, m.dst_port), (40000, 443));
    assert_eq!((m.seq, m.ack, m.window), (0x1000_0001, 0x2000_0002, 29200));
    assert_eq!(m.tcp_flags, 0x02 | 0x10 | 0x40 | 0x80);
    assert_eq!(m.tcp_hdr_len, 60);
    assert!(m.has_mss && m.sack_permitted && m.has_timestamps && m.has_wscale);
    assert_eq!((m.mss, m.wscale, m.sack_blocks), (1460, 7, 2));
    assert_eq!((m.tsval, m.tsecr), (0x0a0b_0c0d, 0x0102_0304));
    assert_eq!(m.payload_len, 100);
    assert_eq!(m.ip_proto, 6);
}

fn assert_v4_addresses(m: &PacketMeta) {
    assert_eq!(m.family, IpFamily::V4);
    assert_eq!(&m.src_addr[..4], &SRC4);
    assert_eq!(&m.dst_addr[..4], &DST4);
    assert!(m.src_addr[4..].iter().chain(&m.dst_addr[4..]).all(|&b| b == 0));
}

#[test]
fn ethernet_ipv4_tcp_with_every_option() {
    let frame = syn_ack(eth().ipv4(SRC4, DST4, 64));
    assert_eq!(frame.len(), 14 + 20 + 60 + 100);
    let (d, m) = run(LinkType::Ethernet, &frame);
    assert_eq!(d, Decoded::Tcp);
    assert_v4_addresses(&m);
    assert_syn_ack_tcp(&m);
    assert_eq!((m.ts_ns, m.wire_len, m.ip_len), (TS, 194, 180));
    assert_eq!((m.ttl, m.device, m.ifindex), (64, 3, 0));
    assert!(m.dont_fragment && !m.fragment && !m.truncated);
    assert_ne!(m.flow_id, 0);
    // 192.168.1.10 > 10.0.0.1: the source is the higher endpoint.
    assert!(m.direction);
}

#[test]
fn vlan_and_qinq_tags_are_skipped() {
    let (_, plain) = run(LinkType::Ethernet, &syn_ack(eth().ipv4(SRC4, DST4, 64)));
    let vid = |v| VlanId::try_new(v).unwrap();
    let single = syn_ack(eth().single_vlan(vid(100)).ipv4(SRC4, DST4, 64));
    assert_eq!(&single[12..14], &[0x81, 0x00]);
    let double = syn_ack(eth().double_vlan(vid(200), vid(100)).ipv4(SRC4, DST4, 64));
    assert_eq!(&double[12..14], &[0x88, 0xa8], "802.1ad outer tag");
    for frame in [single, double] {
        let (d, m) = run(LinkType::Ethernet, &frame);
        assert_eq!(d, Decoded::Tcp);
        assert_v4_addresses(&m);
        assert_syn_ack_tcp(&m);
        assert_eq!(m.flow_id, plain.flow_id);
        assert_eq!(m.wire_len as usize, frame.len());
    }
}

#[test]
fn linux_sll() {
    let frame = syn_ack(
        PacketBuilder::linux_sll(LinuxSllPacketType::OUTGOING, 6, [1, 2, 3, 4, 5, 6, 0, 0])
            .ipv4(SRC4, DST4, 61),
    );
    assert_eq!(&frame[14..16], &[0x08, 0x00]);
    let (d, m) = run(LinkType::LinuxSll, &frame);
    assert_eq!(d, Decoded::Tcp);
    assert_v4_addresses(&m);
    assert_syn_ack_tcp(&m);
    assert_eq!((m.ttl, m.ifindex, m.ip_len), (61, 0, 180));
}

/// An SLL2 header: protocol, reserved, ifindex, ARPHRD_ETHER, outgoing, 6-byte address.
fn sll2(protocol: u16, ifindex: u32) -> Vec<u8> {
    let mut h = protocol.to_be_bytes().to_vec();
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&ifindex.to_be_bytes());
    h.extend_from_slice(&[0, 1, 4, 6, 1, 2, 3, 4, 5, 6, 0, 0]);
    h
}

#[test]
fn linux_sll2_carries_the_ifindex() {
    let mut frame = sll2(0x86dd, 0x0102_0304);
    frame.extend(syn_ack(PacketBuilder::ipv6(SRC6, DST6, 50)));
    let (d, m) = run(LinkType::LinuxSll2, &frame);
    assert_eq!(d, Decoded::Tcp);
    assert_eq!(m.ifindex, 0x0102_0304);
    assert_eq!((m.family, m.src_addr, m.dst_addr), (IpFamily::V6, SRC6, DST6));
    assert_syn_ack_tcp(&m);
    assert_eq!((m.ttl, m.ip_len), (50, 40 + 60 + 100));
    assert!(!m.dont_fragment && !m.truncated);

    // ARP inside SLL2: not IP, but the interface is still known.
    let mut arp = sll2(0x0806, 9);
    arp.extend_from_slice(&[0; 28]);
    let (d, m) = run(LinkType::LinuxSll2, &arp);
    assert_eq!((d, m.ifindex, m.family), (Decoded::NonIp, 9, IpFamily::NotIp));
}

#[test]
fn raw_ipv4_and_ipv6() {
    let (d, m) = run(LinkType::RawIp, &syn_ack(PacketBuilder::ipv4(SRC4, DST4, 7)));
    assert_eq!(d, Decoded::Tcp);
    assert_v4_addresses(&m);
    assert_syn_ack_tcp(&m);
    assert_eq!((m.wire_len, m.ip_len, m.ttl), (180, 180, 7));

    let (d, m) = run(LinkType::RawIp, &syn_ack(PacketBuilder::ipv6(SRC6, DST6, 8)));
    assert_eq!(d, Decoded::Tcp);
    assert_eq!((m.family, m.src_addr, m.dst_addr, m.ttl), (IpFamily::V6, SRC6, DST6, 8));
    assert_syn_ack_tcp(&m);
    assert_eq!(m.ip_len, 200);
    // 2001:db8::a > 2001:db8::1
    assert!(m.direction);
}

#[test]
fn bsd_loopback_null_in_both_byte_orders_and_loop() {
    let ip = syn_ack(PacketBuilder::ipv4(SRC4, DST4, 64));
    let ip6 = syn_ack(PacketBuilder::ipv6(SRC6, DST6, 64));
    let cases: [(LinkType, [u8; 4], &[u8], IpFamily); 5] = [
        (LinkType::Null, 2u32.to_le_bytes(), &ip, IpFamily::V4),
        (LinkType::Null, 2u32.to_be_bytes(), &ip, IpFamily::V4),
        (LinkType::Null, 30u32.to_le_bytes(), &ip6, IpFamily::V6),
        (LinkType::Loop, 2u32.to_be_bytes(), &ip, IpFamily::V4),
        (LinkType::Loop, 24u32.to_be_bytes(), &ip6, IpFamily::V6),
    ];
    for (link, af, packet, family) in cases {
        let mut frame = af.to_vec();
        frame.extend_from_slice(packet);
        let (d, m) = run(link, &frame);
        assert_eq!((d, m.family), (Decoded::Tcp, family), "{link:?} {af:?}");
        assert_syn_ack_tcp(&m);
    }
    // An unknown family (AF_APPLETALK) is not IP.
    let mut frame = 16u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&ip);
    assert_eq!(run(LinkType::Null, &frame).0, Decoded::NonIp);
}

#[test]
fn ipv6_hop_by_hop_and_destination_options_before_tcp() {
    let pad_n = [1, 4, 0, 0, 0, 0]; // a PadN option filling the 8-byte header
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(Ipv6RawExtHeader::new_raw(IpNumber::TCP, &pad_n).unwrap()),
        destination_options: Some(Ipv6RawExtHeader::new_raw(IpNumber::TCP, &pad_n).unwrap()),
        ..Ipv6Extensions::default()
    };
    let header =
        Ipv6Header { hop_limit: 33, source: SRC6, destination: DST6, ..Ipv6Header::default() };
    let frame = syn_ack(eth().ip(IpHeaders::Ipv6(header, exts)));
    // Next headers as built: IPv6 → hop-by-hop (0) → destination options (60) → TCP (6).
    assert_eq!((frame[14 + 6], frame[14 + 40], frame[14 + 48]), (0, 60, 6));
    let (d, m) = run(LinkType::Ethernet, &frame);
    assert_eq!(d, Decoded::Tcp);
    assert_eq!((m.family, m.src_addr, m.ttl), (IpFamily::V6, SRC6, 33));
    assert_syn_ack_tcp(&m);
    assert_eq!(m.ip_len, 40 + 16 + 60 + 100);
}

#[test]
fn snaplen_cut_in_the_tcp_options() {
    let frame = syn_ack(eth().ipv4(SRC4, DST4, 64));
    // Ethernet, IPv4, fixed TCP, MSS (4), SACK-permitted (2), then 4 of the 10 timestamp bytes.
    let (d, m) = run_cut(LinkType::Ethernet, &frame, 14 + 20 + 20 + 4 + 2 + 4);
    assert_eq!(d, Decoded::Tcp);
    assert!(m.truncated && m.has_tcp);
    assert_v4_addresses(&m);
    assert_eq!((m.src_port, m.dst_port, m.seq, m.tcp_flags), (40000, 443, 0x1000_0001, 0xd2));
    assert!(m.has_mss && m.sack_permitted);
    assert!(!m.has_timestamps && !m.has_wscale && m.sack_blocks == 0);
    assert_eq!((m.tsval, m.mss), (0, 1460));
    // Lengths come from the headers, not from the 64 captured bytes.
    assert_eq!((m.wire_len, m.ip_len, m.tcp_hdr_len, m.payload_len), (194, 180, 60, 100));

    // Cut inside the fixed TCP header: IP, but no TCP fields.
    let (d, m) = run_cut(LinkType::Ethernet, &frame, 14 + 20 + 12);
    assert_eq!(d, Decoded::Ip);
    assert!(m.truncated && !m.has_tcp);
    assert_eq!((m.ip_proto, m.src_port, m.seq, m.payload_len), (6, 0, 0, 0));
    assert_ne!(m.flow_id, 0);
}

#[test]
fn snaplen_cut_in_the_ip_header() {
    let frame = syn_ack(eth().ipv4(SRC4, DST4, 64));
    // 14 bytes of IPv4 header: the source address is cut, so no flow id.
    let (d, m) = run_cut(LinkType::Ethernet, &frame, 14 + 14);
    assert_eq!(d, Decoded::Ip);
    assert_eq!((m.family, m.ip_len, m.ttl, m.ip_proto), (IpFamily::V4, 180, 64, 6));
    assert!(m.truncated && m.dont_fragment && !m.has_tcp);
    assert_eq!((m.flow_id, m.src_addr), (0, [0; 16]));

    // IPv4 with 8 bytes of options (IHL 7), cut after the fixed 20: etherparse refuses the
    // header, the fixed fields are still read, addresses give a flow id with ports 0.
    let mut with_opts = frame[14..34].to_vec();
    with_opts[0] = 0x47;
    with_opts.extend_from_slice(&[1, 1, 1, 1]);
    let (d, m) = run(LinkType::RawIp, &with_opts);
    assert_eq!(d, Decoded::Ip);
    assert_v4_addresses(&m);
    assert!(m.truncated && !m.has_tcp);
    assert_eq!((m.src_port, m.dst_port), (0, 0));
    assert_ne!(m.flow_id, 0);

    // IPv6 cut in the destination address.
    let v6 = syn_ack(PacketBuilder::ipv6(SRC6, DST6, 9));
    let (d, m) = run_cut(LinkType::RawIp, &v6, 30);
    assert_eq!(d, Decoded::Ip);
    assert_eq!((m.family, m.ip_len, m.ip_proto, m.ttl), (IpFamily::V6, 200, 6, 9));
    assert_eq!((m.src_addr, m.flow_id), (SRC6, 0));
    assert!(m.truncated);
}

#[test]
fn ipv4_fragments() {
    let frame = syn_ack(eth().ipv4(SRC4, DST4, 64));
    // First fragment: MF set, offset 0. The TCP header is there.
    let mut first = frame.clone();
    first[14 + 6] = 0x20;
    let (d, m) = run(LinkType::Ethernet, &first);
    assert_eq!(d, Decoded::Tcp);
    assert!(m.fragment && !m.dont_fragment);
    assert_syn_ack_tcp(&m);

    // A later fragment (offset 185 · 8 bytes): no TCP header, no ports.
    let mut later = frame.clone();
    later[14 + 6..14 + 8].copy_from_slice(&185u16.to_be_bytes());
    let (d, m) = run(LinkType::Ethernet, &later);
    assert_eq!(d, Decoded::Ip);
    assert!(m.fragment && !m.has_tcp);
    assert_eq!((m.ip_proto, m.src_port, m.seq, m.tcp_hdr_len, m.payload_len), (6, 0, 0, 0, 0));
    assert_eq!(m.ip_len, 180);
    assert_ne!(m.flow_id, 0);
}

#[test]
fn ipv6_non_first_fragment_has_no_tcp() {
    let mut frag = [0u8; 8];
    frag[0] = 6; // next header: TCP
    frag[2..4].copy_from_slice(&(100u16 << 3).to_be_bytes()); // offset 100, MF clear
    let mut packet = syn_ack(PacketBuilder::ipv6(SRC6, DST6, 9));
    packet[6] = 44; // next header: fragment
    packet.splice(40..40, frag);
    let len = (packet.len() - 40) as u16;
    packet[4..6].copy_from_slice(&len.to_be_bytes());
    let (d, m) = run(LinkType::RawIp, &packet);
    assert_eq!(d, Decoded::Ip);
    assert!(m.fragment && !m.has_tcp);
    assert_eq!((m.ip_proto, m.src_port, m.ip_len), (6, 0, 208));
}

#[test]
fn arp_is_not_ip() {
    let mut frame = vec![0xff; 12];
    frame.extend_from_slice(&[0x08, 0x06]);
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&[0; 20]);
    let mut m = PacketMeta { device: 5, flow_id: 77, has_tcp: true, ..PacketMeta::default() };
    let d = decode(LinkType::Ethernet, TS, 60, &frame, &VxlanPorts::default(), &mut m);
    assert_eq!(d, Decoded::NonIp);
    // Everything but time, wire length and device is reset.
    let expected = PacketMeta { ts_ns: TS, wire_len: 60, device: 5, ..PacketMeta::default() };
    assert_eq!(m, expected);
}

#[test]
fn udp_and_icmp_get_no_tcp_fields() {
    let frame = built!(eth().ipv4(SRC4, DST4, 64).udp(5353, 53), &[1, 2, 3]);
    let (d, m) = run(LinkType::Ethernet, &frame);
    assert_eq!(d, Decoded::Ip);
    assert_v4_addresses(&m);
    assert_eq!((m.ip_proto, m.src_port, m.dst_port, m.ip_len), (17, 5353, 53, 31));
    assert!(!m.has_tcp && m.payload_len == 0 && m.tcp_hdr_len == 0 && m.window == 0);
    assert_ne!(m.flow_id, 0);

    let frame = built!(eth().ipv4(SRC4, DST4, 64).icmpv4_echo_request(1, 2), &[]);
    let (d, m) = run(LinkType::Ethernet, &frame);
    assert_eq!((d, m.ip_proto, m.src_port, m.dst_port), (Decoded::Ip, 1, 0, 0));
}

#[test]
fn tso_zero_total_length_uses_the_wire_length() {
    let mut frame = syn_ack(eth().ipv4(SRC4, DST4, 64));
    frame[14 + 2..14 + 4].fill(0);
    let mut m = PacketMeta::default();
    // 64 000 bytes on the wire, 194 captured.
    assert_eq!(
        decode(LinkType::Ethernet, TS, 64_000, &frame, &VxlanPorts::default(), &mut m),
        Decoded::Tcp
    );
    assert_eq!(m.ip_len, 64_000 - 14);
    assert_eq!(m.payload_len, 64_000 - 14 - 20 - 60);
    assert!(m.truncated);
}

#[test]
fn empty_and_garbage_frames() {
    for link in ALL_LINKS {
        assert_eq!(run(link, &[]).0, Decoded::NonIp, "{link:?}");
        assert_eq!(run(link, &[0xde, 0xad, 0xbe, 0xef, 0x99]).0, Decoded::NonIp, "{link:?}");
    }
    // Version 4 with IHL 3 is not an IP header.
    assert_eq!(run(LinkType::RawIp, &[0x43; 40]).0, Decoded::NonIp);
}

/// xorshift64: a deterministic byte source, so a failure reproduces.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_and_garbled_bytes_never_panic() {
    let mut sll2_frame = sll2(0x86dd, 1);
    sll2_frame.extend(syn_ack(PacketBuilder::ipv6(SRC6, DST6, 8)));
    let pod = tunnel::tests::pod_frame_v4();
    let seeds: [(LinkType, Vec<u8>); 6] = [
        (LinkType::Ethernet, syn_ack(eth().ipv4(SRC4, DST4, 64))),
        (LinkType::RawIp, syn_ack(PacketBuilder::ipv6(SRC6, DST6, 8))),
        (LinkType::LinuxSll2, sll2_frame),
        (LinkType::Ethernet, syn_ack(eth().single_vlan(VlanId::ZERO).ipv4(SRC4, DST4, 1))),
        (LinkType::Ethernet, tunnel::tests::in_vxlan(&pod, 42, 8472)),
        (LinkType::Ethernet, tunnel::tests::three_deep(&pod)),
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15;
    let mut m = PacketMeta::default();
    let (mut tcp_seen, mut tunnels_seen) = (0, 0);
    for i in 0..60_000 {
        let frame: Vec<u8> = if i % 2 == 0 {
            let len = (next(&mut state) % 200) as usize;
            (0..len).map(|_| next(&mut state) as u8).collect()
        } else {
            // A valid frame with a few bytes flipped and a random cut.
            let (_, seed) = &seeds[(i / 2) % seeds.len()];
            let mut f = seed.clone();
            for _ in 0..1 + next(&mut state) % 4 {
                let at = (next(&mut state) as usize) % f.len();
                f[at] ^= next(&mut state) as u8 | 1;
            }
            f.truncate((next(&mut state) as usize) % (f.len() + 1));
            f
        };
        let link = if i % 2 == 0 {
            ALL_LINKS[i / 2 % ALL_LINKS.len()]
        } else {
            seeds[(i / 2) % seeds.len()].0
        };
        let wire = (next(&mut state) % 70_000) as u32;
        let d = decode(link, i as u64, wire, &frame, &VxlanPorts::default(), &mut m);
        // Invariants that hold for any input.
        assert_eq!(d == Decoded::Tcp, m.has_tcp);
        if m.has_tcp {
            tcp_seen += 1;
            assert!(m.family != IpFamily::NotIp && m.tcp_hdr_len >= 20 && m.tcp_hdr_len <= 60);
        }
        if d == Decoded::NonIp {
            assert_eq!((m.family, m.flow_id), (IpFamily::NotIp, 0));
        }
        assert!(m.sack_blocks <= 4);
        let (depth, read) = (usize::from(m.tunnel.depth), m.tunnel.read().count());
        assert!(depth <= MAX_DEPTH && (read == depth || read == depth + 1), "{:?}", m.tunnel);
        assert_eq!(m.tunnel.kind().is_some(), depth > 0);
        tunnels_seen += usize::from(depth > 0);
    }
    assert!(tcp_seen > 1000, "the garbled frames still reach TCP often: {tcp_seen}");
    assert!(tunnels_seen > 1000, "and open tunnels often: {tunnels_seen}");
}

#[test]
fn both_directions_share_a_flow_id() {
    let forward = syn_ack(eth().ipv4(SRC4, DST4, 64));
    let reverse = built!(eth().ipv4(DST4, SRC4, 64).tcp(443, 40000, 5, 100).ack(6), &[]);
    let (_, f) = run(LinkType::Ethernet, &forward);
    let (_, r) = run(LinkType::Ethernet, &reverse);
    assert_eq!(f.flow_id, r.flow_id);
    assert_ne!(f.direction, r.direction);

    // Same hosts, another client port: another flow.
    let other = built!(eth().ipv4(DST4, SRC4, 64).tcp(443, 40001, 5, 100), &[]);
    assert_ne!(run(LinkType::Ethernet, &other).1.flow_id, f.flow_id);

    // Same addresses and ports over UDP: another flow.
    let udp = built!(eth().ipv4(SRC4, DST4, 64).udp(40000, 443), &[]);
    assert_ne!(run(LinkType::Ethernet, &udp).1.flow_id, f.flow_id);
}

#[test]
fn flow_id_is_stable_across_runs_and_machines() {
    // Pinned: a change means a foldhash upgrade or a change to the hashed tuple, which
    // changes every flow id (sharding, and any analyzer state keyed by it, across a restart).
    let (_, m) = run(LinkType::Ethernet, &syn_ack(eth().ipv4(SRC4, DST4, 64)));
    assert_eq!(m.flow_id, 0x1e9d_63e9_f0a1_00c2);
}
