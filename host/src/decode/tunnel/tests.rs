//! Tunnel tests: hand-built tunnelled frames (etherparse's `PacketBuilder` for the Ethernet, IP
//! and UDP layers, the tunnel headers by hand as their RFCs lay them out) through
//! [`decode`](super::super::decode). Expected values come from how each frame was built: the
//! inner packet decoded on its own, and the tunnel fields written into it.
#![allow(clippy::unwrap_used, reason = "building constant test frames cannot fail")]

use etherparse::{IpNumber, PacketBuilder, TcpOptionElement};

use super::super::{Decoded, IpFamily, LinkType, PacketMeta, decode};
use super::*;

const TS: u64 = 1_700_000_000_000_000_001;
/// Pod addresses, inside the tunnels.
const POD_A: [u8; 4] = [10, 244, 1, 5];
const POD_B: [u8; 4] = [10, 244, 2, 7];
const POD6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a];
const POD6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b];
/// Node addresses, outside.
const NODE_A: [u8; 4] = [192, 0, 2, 1];
const NODE_B: [u8; 4] = [192, 0, 2, 2];
const NODE6_A: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const NODE6_B: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// A TCP header with 40 bytes of options: the longest there is.
const OPTIONS: [TcpOptionElement; 6] = [
    TcpOptionElement::MaximumSegmentSize(1410),
    TcpOptionElement::SelectiveAcknowledgementPermitted,
    TcpOptionElement::Timestamp(7, 9),
    TcpOptionElement::Noop,
    TcpOptionElement::WindowScale(9),
    TcpOptionElement::SelectiveAcknowledgement((1, 2), [Some((3, 4)), None, None]),
];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const ETHERTYPE_ARP: u16 = 0x0806;

/// A pod's TCP segment in an Ethernet frame: IPv4, a 60-byte TCP header, 20 bytes of data.
pub(in crate::decode) fn pod_frame_v4() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(POD_A, POD_B, 63)
        .tcp(41000, 8080, 1000, 500)
        .ack(77)
        .psh()
        .options(&OPTIONS)
        .unwrap();
    let mut v = Vec::new();
    b.write(&mut v, &[0x5a; 20]).unwrap();
    v
}

/// The same over IPv6.
fn pod_frame_v6() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(POD6_A, POD6_B, 63)
        .tcp(41000, 8080, 1000, 500)
        .ack(77)
        .options(&OPTIONS)
        .unwrap();
    let mut v = Vec::new();
    b.write(&mut v, &[0x5a; 20]).unwrap();
    v
}

/// `frame` without its Ethernet header: the IP packet.
fn ip_of(frame: &[u8]) -> Vec<u8> {
    frame[14..].to_vec()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Ethernet + IPv4 between the nodes, then UDP from `sport` to `dport` carrying `payload`.
fn udp4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(NODE_A, NODE_B, 64).udp(sport, dport);
    b.write(&mut v, payload).unwrap();
    v
}

/// The same over IPv6.
fn udp6(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(NODE6_A, NODE6_B, 64).udp(sport, dport);
    b.write(&mut v, payload).unwrap();
    v
}

/// Ethernet + IPv4 between the nodes with IP protocol `proto` and `payload`.
fn ip4(proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(NODE_A, NODE_B, 64);
    b.write(&mut v, IpNumber(proto), payload).unwrap();
    v
}

/// The same over IPv6.
fn ip6(proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(NODE6_A, NODE6_B, 64);
    b.write(&mut v, IpNumber(proto), payload).unwrap();
    v
}

/// A VXLAN header with the I flag and `vni`.
fn vxlan_header(vni: u32) -> [u8; 8] {
    let [_, a, b, c] = vni.to_be_bytes();
    [VXLAN_I_FLAG, 0, 0, 0, a, b, c, 0]
}

/// A Geneve header: version 0, `options` (a multiple of 4 bytes), the payload's ether type.
fn geneve_header(vni: u32, ether_type: u16, options: &[u8]) -> Vec<u8> {
    let [_, a, b, c] = vni.to_be_bytes();
    let [t0, t1] = ether_type.to_be_bytes();
    let words = u8::try_from(options.len() / 4).unwrap();
    cat(&[&[words, 0, t0, t1, a, b, c, 0], options])
}

/// A GRE header with the optional fields its `flags` (C, K, S bits) announce.
fn gre_header(flags: u8, ether_type: u16, key: u32, seq: u32) -> Vec<u8> {
    let mut h = vec![flags, 0];
    h.extend(ether_type.to_be_bytes());
    if flags & GRE_CHECKSUM != 0 {
        h.extend([0xab, 0xcd, 0, 0]);
    }
    if flags & GRE_KEY != 0 {
        h.extend(key.to_be_bytes());
    }
    if flags & GRE_SEQUENCE != 0 {
        h.extend(seq.to_be_bytes());
    }
    h
}

/// `inner` (an Ethernet frame) in VXLAN `vni` over IPv4 UDP to `port`.
pub(in crate::decode) fn in_vxlan(inner: &[u8], vni: u32, port: u16) -> Vec<u8> {
    udp4(51234, port, &cat(&[&vxlan_header(vni), inner]))
}

fn run_with(frame: &[u8], caplen: usize, ports: &VxlanPorts) -> (Decoded, PacketMeta) {
    let mut m = PacketMeta { device: 5, ..PacketMeta::default() };
    let d = decode(LinkType::Ethernet, TS, frame.len() as u32, &frame[..caplen], ports, &mut m);
    (d, m)
}

fn run(frame: &[u8]) -> (Decoded, PacketMeta) {
    run_with(frame, frame.len(), &VxlanPorts::default())
}

/// `inner` decoded alone, as a frame of `link`.
fn alone(link: LinkType, inner: &[u8]) -> PacketMeta {
    let mut m = PacketMeta { device: 5, ..PacketMeta::default() };
    decode(link, TS, inner.len() as u32, inner, &VxlanPorts::default(), &mut m);
    m
}

/// The meta of a tunnelled packet describes the inner packet exactly as decoding it alone does,
/// apart from the frame length, the flow id (which covers the tunnel) and the tunnel fields.
fn assert_inner(m: &PacketMeta, inner: &PacketMeta, frame_len: usize) {
    assert_eq!(m.wire_len as usize, frame_len, "the frame length stays the frame's");
    let same = PacketMeta {
        wire_len: inner.wire_len,
        flow_id: inner.flow_id,
        tunnel: Tunnel::default(),
        ..*m
    };
    assert_eq!(&same, inner);
    assert!(m.has_tcp && m.flow_id != 0);
}

/// What [`Tunnel`] says of a packet opened through `kinds` (outermost first) whose outermost
/// tunnel has `id`, over the IPv4 node addresses.
fn assert_tunnel_v4(m: &PacketMeta, kinds: &[TunnelKind], id: Option<u32>) {
    let t = &m.tunnel;
    assert_eq!(t.kind(), kinds.first().copied());
    assert_eq!(t.id, id);
    assert_eq!(usize::from(t.depth), kinds.len());
    assert_eq!(t.read().collect::<Vec<_>>(), kinds);
    assert_eq!(t.outer_family, IpFamily::V4);
    assert_eq!((&t.outer_src[..4], &t.outer_dst[..4]), (&NODE_A[..], &NODE_B[..]));
    assert_eq!(t.fault(), None);
}

#[test]
fn vxlan_on_both_default_ports() {
    let pod = pod_frame_v4();
    for port in [4789, 8472] {
        let frame = in_vxlan(&pod, 42, port);
        let (d, m) = run(&frame);
        assert_eq!(d, Decoded::Tcp, "port {port}");
        assert_inner(&m, &alone(LinkType::Ethernet, &pod), frame.len());
        assert_tunnel_v4(&m, &[TunnelKind::Vxlan], Some(42));
    }
    // From the VXLAN port (a reply from a misbehaving peer): tshark opens it too.
    let frame = udp4(8472, 40000, &cat(&[&vxlan_header(7), &pod]));
    assert_tunnel_v4(&run(&frame).1, &[TunnelKind::Vxlan], Some(7));
}

#[test]
fn vxlan_ports_come_from_the_flag() {
    let frame = in_vxlan(&pod_frame_v4(), 42, 8472);
    let only_4789 = VxlanPorts::new(&[4789]).unwrap();
    for ports in [only_4789, VxlanPorts::NONE] {
        let (d, m) = run_with(&frame, frame.len(), &ports);
        assert_eq!(d, Decoded::Ip, "{ports:?}");
        assert_eq!((m.ip_proto, m.dst_port), (17, 8472));
        assert_eq!(&m.src_addr[..4], &NODE_A);
        assert_eq!(m.tunnel, Tunnel::default());
    }
    let custom = VxlanPorts::new(&[9999, 8472]).unwrap();
    assert_eq!(run_with(&frame, frame.len(), &custom).0, Decoded::Tcp);
    assert_eq!(VxlanPorts::new(&[1; MAX_VXLAN_PORTS + 1]), None);
}

#[test]
fn geneve_with_and_without_options_and_every_payload() {
    let pod = pod_frame_v4();
    let options = [0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef];
    for opts in [&[][..], &options] {
        let frame =
            udp4(50000, GENEVE_PORT, &cat(&[&geneve_header(0x1234, ETHERTYPE_TEB, opts), &pod]));
        let (d, m) = run(&frame);
        assert_eq!(d, Decoded::Tcp);
        assert_inner(&m, &alone(LinkType::Ethernet, &pod), frame.len());
        assert_tunnel_v4(&m, &[TunnelKind::Geneve], Some(0x1234));
    }
    for (ether_type, inner) in [(ETHERTYPE_IPV4, pod_frame_v4()), (ETHERTYPE_IPV6, pod_frame_v6())]
    {
        let ip = ip_of(&inner);
        let frame = udp4(50000, GENEVE_PORT, &cat(&[&geneve_header(9, ether_type, &[]), &ip]));
        let (_, m) = run(&frame);
        assert_inner(&m, &alone(LinkType::RawIp, &ip), frame.len());
        assert_tunnel_v4(&m, &[TunnelKind::Geneve], Some(9));
    }
}

#[test]
fn gre_every_payload_with_and_without_key_sequence_and_checksum() {
    let flag_sets =
        [0, GRE_KEY, GRE_SEQUENCE, GRE_KEY | GRE_SEQUENCE, GRE_CHECKSUM | GRE_KEY | GRE_SEQUENCE];
    for flags in flag_sets {
        let key = (flags & GRE_KEY != 0).then_some(0xfeed_0001);
        for (ether_type, inner, link) in [
            (ETHERTYPE_IPV4, ip_of(&pod_frame_v4()), LinkType::RawIp),
            (ETHERTYPE_IPV6, ip_of(&pod_frame_v6()), LinkType::RawIp),
            (ETHERTYPE_TEB, pod_frame_v4(), LinkType::Ethernet),
        ] {
            let gre = gre_header(flags, ether_type, 0xfeed_0001, 3);
            let frame = ip4(IPPROTO_GRE, &cat(&[&gre, &inner]));
            let (d, m) = run(&frame);
            assert_eq!(d, Decoded::Tcp, "flags {flags:#x} type {ether_type:#x}");
            assert_inner(&m, &alone(link, &inner), frame.len());
            assert_tunnel_v4(&m, &[TunnelKind::Gre], key);
        }
    }
}

#[test]
fn ip_in_ip_both_ways_and_over_ipv6() {
    let v4 = ip_of(&pod_frame_v4());
    let v6 = ip_of(&pod_frame_v6());
    for (proto, inner, kind) in
        [(IPPROTO_IPV4, &v4, TunnelKind::Ipv4InIp), (IPPROTO_IPV6, &v6, TunnelKind::Ipv6InIp)]
    {
        let frame = ip4(proto, inner);
        let (_, m) = run(&frame);
        assert_inner(&m, &alone(LinkType::RawIp, inner), frame.len());
        assert_tunnel_v4(&m, &[kind], None);

        let frame = ip6(proto, inner);
        let (_, m) = run(&frame);
        assert_inner(&m, &alone(LinkType::RawIp, inner), frame.len());
        assert_eq!(m.tunnel.outer_family, IpFamily::V6);
        assert_eq!((m.tunnel.outer_src, m.tunnel.outer_dst), (NODE6_A, NODE6_B));
    }
}

/// Three tunnels deep, each layer a different kind: VXLAN in GRE in IP-in-IP, over IPv4.
pub(in crate::decode) fn three_deep(pod: &[u8]) -> Vec<u8> {
    let vxlan = in_vxlan(pod, 5, 4789);
    let gre = cat(&[&gre_header(GRE_KEY, ETHERTYPE_IPV4, 77, 0), &ip_of(&vxlan)]);
    let in_gre = ip4(IPPROTO_GRE, &gre);
    ip4(IPPROTO_IPV4, &ip_of(&in_gre))
}

#[test]
fn nesting_to_the_limit_and_past_it() {
    let pod = pod_frame_v4();
    let frame = three_deep(&pod);
    let (d, m) = run(&frame);
    assert_eq!(d, Decoded::Tcp);
    assert_inner(&m, &alone(LinkType::Ethernet, &pod), frame.len());
    let kinds = [TunnelKind::Ipv4InIp, TunnelKind::Gre, TunnelKind::Vxlan];
    assert_tunnel_v4(&m, &kinds, None);

    // A fourth: counted, and the packet left as the third tunnel's carrier (UDP to 4789).
    let four = three_deep(&in_vxlan(&pod, 6, 4789));
    let (d, m) = run(&four);
    assert_eq!(d, Decoded::Ip);
    assert_eq!(m.tunnel.fault(), Some(Undecoded::TooDeep));
    assert_eq!(m.tunnel.read().collect::<Vec<_>>(), kinds);
    assert_eq!((m.ip_proto, m.dst_port, m.tunnel.depth), (17, 4789, 3));
    assert_eq!(&m.src_addr[..4], &NODE_A);
}

/// The deepest packet the default snap length must hold whole: two VLAN tags, three tunnels of
/// IPv6 + UDP + VXLAN + Ethernet, then IPv6 and a TCP header with 40 bytes of options.
#[test]
fn the_deepest_headers_fit_their_constant() {
    let pod = pod_frame_v6();
    let mut frame = pod.clone();
    for vni in 1..=3 {
        frame = udp6(50000, 4789, &cat(&[&vxlan_header(vni), &frame]));
    }
    // Two VLAN tags after the MAC addresses.
    frame.splice(12..12, [0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2]);
    let headers = frame.len() - 20;
    assert_eq!(headers as u32, DEEPEST_HEADERS);
    let (d, m) = run_with(&frame, headers, &VxlanPorts::default());
    assert_eq!(d, Decoded::Tcp);
    assert_eq!(m.tunnel.depth, 3);
    assert_eq!((m.src_addr, m.dst_addr), (POD6_A, POD6_B));
    assert!(m.has_timestamps && m.has_wscale && m.sack_blocks == 2, "every option read");
    // Three bytes less cut the last option (two bytes of padding follow it): the header is
    // read, that option is not, and the cut is counted.
    let (d, m) = run_with(&frame, headers - 3, &VxlanPorts::default());
    assert!(d == Decoded::Tcp && m.truncated && m.sack_blocks == 0 && m.has_timestamps);
    assert_eq!(m.tunnel.fault(), Some(Undecoded::Truncated));
}

/// The flow id covers the tunnel's endpoints, not its VNI: a reply in another VNI (Cilium puts
/// the sender's identity there) is the same connection, as tshark takes it; the same inner
/// packet between two other nodes is another flow.
#[test]
fn flow_ids_cover_the_tunnel_endpoints_and_both_directions_share_one() {
    let pod = pod_frame_v4();
    let a = run(&in_vxlan(&pod, 1, 8472)).1;
    let plain = run(&pod).1;
    assert_ne!(a.flow_id, plain.flow_id, "the tunnelled flow is not the bare one");
    assert_eq!(run(&in_vxlan(&pod, 2, 8472)).1.flow_id, a.flow_id, "another VNI, the same flow");
    let mut elsewhere = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([198, 51, 100, 1], NODE_B, 64)
        .udp(51234, 8472)
        .write(&mut elsewhere, &cat(&[&vxlan_header(1), &pod]))
        .unwrap();
    assert_ne!(run(&elsewhere).1.flow_id, a.flow_id, "another node, another flow");
    let in_geneve = udp4(51234, GENEVE_PORT, &cat(&[&geneve_header(1, ETHERTYPE_TEB, &[]), &pod]));
    assert_ne!(run(&in_geneve).1.flow_id, a.flow_id, "another kind, another flow");

    let reply = PacketBuilder::ethernet2(MAC_B, MAC_A)
        .ipv4(POD_B, POD_A, 63)
        .tcp(8080, 41000, 500, 500)
        .ack(1020);
    let mut back = Vec::new();
    reply.write(&mut back, &[]).unwrap();
    // The reply's outer header goes the other way, from another source port, in another VNI.
    let mut outer = Vec::new();
    PacketBuilder::ethernet2(MAC_B, MAC_A)
        .ipv4(NODE_B, NODE_A, 64)
        .udp(60000, 8472)
        .write(&mut outer, &cat(&[&vxlan_header(7), &back]))
        .unwrap();
    let r = run(&outer).1;
    assert_eq!(r.flow_id, a.flow_id);
    assert_ne!(r.direction, a.direction);
}

/// ARP inside VXLAN is what ARP is without it: a frame that is not IP, here with its tunnel.
#[test]
fn an_inner_frame_that_is_not_ip_is_opened_as_such() {
    let mut arp = vec![0xff; 12];
    arp.extend(ETHERTYPE_ARP.to_be_bytes());
    arp.extend([0u8; 28]);
    let frame = in_vxlan(&arp, 42, 4789);
    let (d, m) = run(&frame);
    assert_eq!(d, Decoded::NonIp);
    assert_eq!((m.family, m.flow_id, m.ip_len, m.ip_proto), (IpFamily::NotIp, 0, 0, 0));
    assert_eq!((m.wire_len as usize, m.ts_ns, m.device), (frame.len(), TS, 5));
    assert_tunnel_v4(&m, &[TunnelKind::Vxlan], Some(42));
    // Cut inside the inner Ethernet header: that is a truncated tunnel, and the carrier stays.
    let (d, m) = run_with(&frame, frame.len() - arp.len() + 10, &VxlanPorts::default());
    assert_eq!((d, m.ip_proto, m.tunnel.fault()), (Decoded::Ip, 17, Some(Undecoded::Truncated)));
}

/// Every case of the bad-input set: the reason, and the record left as the carrier.
#[test]
fn bad_tunnel_headers_are_counted_by_reason() {
    let pod = pod_frame_v4();
    let ip = ip_of(&pod);
    let mut no_i_flag = vxlan_header(42);
    no_i_flag[0] = 0;
    let mut gre_v1 = gre_header(GRE_KEY, ETHERTYPE_IPV4, 1, 0);
    gre_v1[1] = 1;
    let mut geneve_v1 = geneve_header(1, ETHERTYPE_TEB, &[]);
    geneve_v1[0] |= 0x40;
    // Options that claim 252 bytes, in a datagram that has far fewer.
    let mut geneve_long = geneve_header(1, ETHERTYPE_TEB, &[]);
    geneve_long[0] = 0x3f;
    // An inner IPv4 header that claims 1500 bytes, in a frame that carries far fewer.
    let mut long_inner = pod.clone();
    long_inner[16..18].copy_from_slice(&1500u16.to_be_bytes());
    let cases: [(&str, Vec<u8>, Undecoded, u8); 9] = [
        (
            "VXLAN without the I flag",
            udp4(1, 4789, &cat(&[&no_i_flag, &pod])),
            Undecoded::Malformed,
            17,
        ),
        ("GRE version 1", ip4(IPPROTO_GRE, &cat(&[&gre_v1, &ip])), Undecoded::Unsupported, 47),
        (
            "GRE with routing",
            ip4(IPPROTO_GRE, &cat(&[&gre_header(GRE_ROUTING, ETHERTYPE_IPV4, 0, 0), &ip])),
            Undecoded::Unsupported,
            47,
        ),
        (
            "GRE carrying ERSPAN",
            ip4(IPPROTO_GRE, &cat(&[&gre_header(GRE_SEQUENCE, 0x88be, 0, 1), &pod])),
            Undecoded::Unsupported,
            47,
        ),
        (
            "Geneve version 1",
            udp4(1, GENEVE_PORT, &cat(&[&geneve_v1, &pod])),
            Undecoded::Malformed,
            17,
        ),
        (
            "Geneve options past the datagram",
            udp4(1, GENEVE_PORT, &geneve_long),
            Undecoded::Malformed,
            17,
        ),
        (
            "Geneve carrying NSH",
            udp4(1, GENEVE_PORT, &cat(&[&geneve_header(1, 0x894f, &[]), &pod])),
            Undecoded::Unsupported,
            17,
        ),
        (
            "GRE announcing IPv4, carrying IPv6",
            ip4(
                IPPROTO_GRE,
                &cat(&[&gre_header(0, ETHERTYPE_IPV4, 0, 0), &ip_of(&pod_frame_v6())]),
            ),
            Undecoded::Malformed,
            47,
        ),
        (
            "an inner length past the frame",
            in_vxlan(&long_inner, 3, 4789),
            Undecoded::Malformed,
            17,
        ),
    ];
    for (what, frame, reason, carrier_proto) in cases {
        let (d, m) = run(&frame);
        assert_eq!(m.tunnel.fault(), Some(reason), "{what}");
        assert_eq!(d, Decoded::Ip, "{what}: nothing analysed as TCP");
        assert_eq!(
            (m.ip_proto, &m.src_addr[..4]),
            (carrier_proto, &NODE_A[..]),
            "{what}: the carrier"
        );
        assert_eq!(m.tunnel.depth, 0, "{what}");
    }
}

/// Each tunnelled frame cut at every byte: no panic; a cut inside a tunnel header or the
/// inner headers counts `truncated`, and yields no TCP before the inner TCP header's fixed 20
/// bytes (cut options are left out, as without a tunnel); a cut in the outer headers is the
/// plain decoder's business (no tunnel seen, or not even UDP).
#[test]
fn every_tunnel_cut_at_every_byte() {
    let pod = pod_frame_v4();
    let ip = ip_of(&pod);
    // (frame, where the tunnel header starts)
    let frames: [(&str, Vec<u8>, usize); 6] = [
        ("vxlan", in_vxlan(&pod, 42, 8472), 14 + 20 + 8),
        (
            "geneve",
            udp4(1, GENEVE_PORT, &cat(&[&geneve_header(1, ETHERTYPE_TEB, &[0; 8]), &pod])),
            14 + 20 + 8,
        ),
        (
            "gre",
            ip4(
                IPPROTO_GRE,
                &cat(&[
                    &gre_header(GRE_CHECKSUM | GRE_KEY | GRE_SEQUENCE, ETHERTYPE_IPV4, 1, 2),
                    &ip,
                ]),
            ),
            14 + 20,
        ),
        ("ipip", ip4(IPPROTO_IPV4, &ip), 14 + 20),
        ("sit", ip4(IPPROTO_IPV6, &ip_of(&pod_frame_v6())), 14 + 20),
        ("nested", three_deep(&pod), 14 + 20),
    ];
    for (what, frame, tunnel_at) in frames {
        // The payload of the innermost TCP segment is 20 bytes: everything before is headers.
        let headers = frame.len() - 20;
        for caplen in 0..=frame.len() {
            let (d, m) = run_with(&frame, caplen, &VxlanPorts::default());
            // The inner TCP header has 40 bytes of options.
            if caplen < headers - 40 {
                assert_ne!(d, Decoded::Tcp, "{what} cut at {caplen}: no TCP from a cut header");
            } else if caplen >= headers {
                assert_eq!(d, Decoded::Tcp, "{what} cut at {caplen}");
                assert_eq!(m.tunnel.fault(), None, "{what} cut at {caplen}");
            }
            // The UDP header's 8 bytes are read before VXLAN or Geneve is known.
            let seen_at =
                if what == "vxlan" || what == "geneve" { tunnel_at - 4 } else { tunnel_at };
            if (seen_at..headers).contains(&caplen) {
                assert_eq!(m.tunnel.fault(), Some(Undecoded::Truncated), "{what} cut at {caplen}");
            }
        }
    }
}
