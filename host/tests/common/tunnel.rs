//! Tunnels built around the frames of a real capture, for the tests whose expected values come
//! from how their input was built (`root_tunnel_wrapped`): every frame of an Ethernet capture
//! is wrapped in one or more [`Layer`]s of VXLAN, Geneve, GRE or IP-in-IP and written to a new
//! pcap with its original timestamp ([`wrap_capture`]), counting the tunnel headers written per
//! [`Kind`]; [`filter_capture`] writes the frames a wrapped capture holds, unwrapped, to
//! compare with.
//!
//! The outer Ethernet, IPv4, IPv6 and UDP headers come from etherparse's header types, with
//! their lengths, the IPv4 header checksum and, over IPv6, the UDP checksum computed (over
//! IPv4, UDP carries checksum 0, as VXLAN and Geneve senders do). etherparse has no VXLAN
//! (RFC 7348), Geneve (RFC 8926) or GRE (RFC 2784, RFC 2890) header, so those are written here.
//!
//! A frame goes one way through every layer's underlay: from node `a` to node `b` when its
//! Ethernet source address is below its destination, else from `b` to `a`, so that both
//! directions of a unicast conversation each keep their own outer addresses, as between two
//! real nodes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, UdpHeader,
};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};

/// EtherTypes of the frames and payloads the tunnels carry.
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
/// Transparent Ethernet bridging: an Ethernet frame in GRE or Geneve.
const ETHERTYPE_TEB: u16 = 0x6558;
/// The VXLAN header's I flag: the VNI is valid (RFC 7348, section 5).
const VXLAN_I_FLAG: u8 = 0x08;
/// GRE flag bits of the first 16 bits (RFC 2784 and RFC 2890); version 0.
const GRE_CHECKSUM: u16 = 0x8000;
const GRE_KEY: u16 = 0x2000;
const GRE_SEQUENCE: u16 = 0x1000;
/// Geneve's UDP port (RFC 8926).
pub const GENEVE_PORT: u16 = 6081;
/// The UDP source port of each direction's VXLAN and Geneve packets: senders pick one from a
/// hash of the inner flow; any fixed one will do.
const UDP_SOURCE_PORTS: [u16; 2] = [49_153, 49_154];
/// TTL / hop limit of every outer header.
const OUTER_TTL: u8 = 64;
/// Room for the headers wrapped around a frame, added to the snap length of the capture.
const SNAPLEN_ROOM: u32 = 1024;

/// A tunnel kind as `wasmtap_host_tunnel_packets_total{kind}` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Vxlan,
    Geneve,
    Gre,
    /// IPv4 carried right after an IP header (IP protocol 4).
    Ipv4InIp,
    /// IPv6 carried right after an IP header (IP protocol 41).
    Ipv6InIp,
}

impl Kind {
    pub const ALL: [Kind; 5] =
        [Kind::Vxlan, Kind::Geneve, Kind::Gre, Kind::Ipv4InIp, Kind::Ipv6InIp];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Vxlan => "vxlan",
            Kind::Geneve => "geneve",
            Kind::Gre => "gre",
            Kind::Ipv4InIp => "ipv4_in_ip",
            Kind::Ipv6InIp => "ipv6_in_ip",
        }
    }
}

/// The two nodes at the ends of a tunnel (both IPv4 or both IPv6).
#[derive(Debug, Clone, Copy)]
pub struct Underlay {
    pub a: IpAddr,
    pub b: IpAddr,
}

impl Underlay {
    /// 192.0.2.n ↔ 198.51.100.n (RFC 5737's documentation ranges).
    pub fn v4(n: u8) -> Underlay {
        Underlay { a: Ipv4Addr::new(192, 0, 2, n).into(), b: Ipv4Addr::new(198, 51, 100, n).into() }
    }

    /// 2001:db8:n::a ↔ 2001:db8:n::b (RFC 3849's documentation prefix).
    pub fn v6(n: u16) -> Underlay {
        Underlay {
            a: Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 0xa).into(),
            b: Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 0xb).into(),
        }
    }
}

/// One Geneve option (a TLV): its class, type and data (a multiple of 4 bytes, at most 124).
#[derive(Debug, Clone)]
pub struct GeneveOption {
    pub class: u16,
    pub kind: u8,
    pub data: Vec<u8>,
}

/// What a GRE header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrePayload {
    /// The IP packet of the frame inside (protocol type 0x0800 or 0x86DD by its version).
    Ip,
    /// The whole Ethernet frame inside (transparent Ethernet bridging, 0x6558).
    Ethernet,
}

/// One layer of encapsulation: an outer Ethernet header, an outer IP header between the
/// underlay's nodes, and the tunnel's own headers.
#[derive(Debug, Clone)]
pub enum Layer {
    /// UDP to `port`, the VXLAN header (I flag, `vni`), the Ethernet frame inside.
    Vxlan { underlay: Underlay, port: u16, vni: u32 },
    /// UDP to 6081, the Geneve header (version 0, protocol type 0x6558, `vni`) and its
    /// `options`, the Ethernet frame inside.
    Geneve { underlay: Underlay, vni: u32, options: Vec<GeneveOption> },
    /// GRE version 0 with the checksum, key and sequence fields the flags say, then the
    /// payload. The sequence number counts each direction's packets from 1.
    Gre {
        underlay: Underlay,
        payload: GrePayload,
        checksum: bool,
        key: Option<u32>,
        sequence: bool,
    },
    /// The IP packet inside right after the outer IP header (IP protocol 4 or 41 by its
    /// version).
    IpInIp { underlay: Underlay },
}

impl Layer {
    fn underlay(&self) -> Underlay {
        match self {
            Layer::Vxlan { underlay, .. }
            | Layer::Geneve { underlay, .. }
            | Layer::Gre { underlay, .. }
            | Layer::IpInIp { underlay } => *underlay,
        }
    }

    /// Whether the layer carries the IP packet of its inner frame rather than the frame.
    fn carries_ip(&self) -> bool {
        matches!(self, Layer::IpInIp { .. } | Layer::Gre { payload: GrePayload::Ip, .. })
    }

    /// The UDP port of a VXLAN layer (for tshark's Decode As).
    pub fn vxlan_port(&self) -> Option<u16> {
        match self {
            Layer::Vxlan { port, .. } => Some(*port),
            _ => None,
        }
    }
}

/// Which frames of a capture to keep, by EtherType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frames {
    All,
    Ipv4,
    Ipv6,
    /// IPv4 and IPv6.
    Ip,
}

impl Frames {
    pub fn keeps(self, frame: &[u8]) -> bool {
        let ethertype = ether_type(frame);
        match self {
            Frames::All => true,
            Frames::Ipv4 => ethertype == Some(ETHERTYPE_IPV4),
            Frames::Ipv6 => ethertype == Some(ETHERTYPE_IPV6),
            Frames::Ip => matches!(ethertype, Some(ETHERTYPE_IPV4 | ETHERTYPE_IPV6)),
        }
    }
}

fn ether_type(frame: &[u8]) -> Option<u16> {
    frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// The source and destination of the IP packet in an Ethernet frame (`None` if it has none).
pub fn ip_pair(frame: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let ip = frame.get(14..)?;
    match ether_type(frame)? {
        ETHERTYPE_IPV4 if ip.len() >= 20 => {
            let at = |i: usize| Ipv4Addr::new(ip[i], ip[i + 1], ip[i + 2], ip[i + 3]);
            Some((at(12).into(), at(16).into()))
        }
        ETHERTYPE_IPV6 if ip.len() >= 40 => {
            let at = |i: usize| -> IpAddr {
                let b: [u8; 16] = ip[i..i + 16].try_into().expect("16 bytes");
                Ipv6Addr::from(b).into()
            };
            Some((at(8), at(24)))
        }
        _ => None,
    }
}

/// What [`wrap_capture`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Wrapped {
    /// Frames written.
    pub frames: u64,
    /// Tunnel headers written, per kind (every kind present, 0 if unused).
    pub headers: BTreeMap<Kind, u64>,
    /// Per frame in order: the addresses of the IP packet of the original frame, if any.
    pub inner: Vec<Option<(IpAddr, IpAddr)>>,
}

/// Per-layer, per-direction counters: the last IPv4 identification and GRE sequence number
/// written.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    ip_id: u16,
    gre_sequence: u32,
}

/// Writes every frame of `src` that `frames` keeps to `dst`, wrapped in `layers` (outermost
/// first), with its original timestamp; its captured and wire lengths each grow by the bytes
/// the layers add. Panics if `src` is not an Ethernet capture, or a layer that carries IP gets
/// a frame without it.
pub fn wrap_capture(src: &Path, dst: &Path, frames: Frames, layers: &[Layer]) -> Wrapped {
    let mut wrapped =
        Wrapped { headers: Kind::ALL.iter().map(|k| (*k, 0)).collect(), ..Wrapped::default() };
    let mut counters = vec![[Counters::default(); 2]; layers.len()];
    copy_capture(src, dst, SNAPLEN_ROOM, |frame| {
        if !frames.keeps(frame) {
            return None;
        }
        // Side 0 goes a → b, side 1 b → a (see the module docs).
        let side = usize::from(frame[6..12] > frame[0..6]);
        let mut out = frame.to_vec();
        for (layer, counters) in layers.iter().zip(&mut counters).rev() {
            let (next, kind) = encapsulate(layer, &out, side, &mut counters[side]);
            *wrapped.headers.get_mut(&kind).expect("every kind") += 1;
            out = next;
        }
        wrapped.frames += 1;
        wrapped.inner.push(ip_pair(frame));
        Some(out)
    });
    wrapped
}

/// Writes the frames of `src` that `frames` keeps to `dst`, unchanged; returns their number.
pub fn filter_capture(src: &Path, dst: &Path, frames: Frames) -> u64 {
    let mut n = 0;
    copy_capture(src, dst, 0, |frame| {
        frames.keeps(frame).then(|| {
            n += 1;
            frame.to_vec()
        })
    });
    n
}

/// Copies the packets of the Ethernet capture `src` to `dst` through `map` (`None` drops
/// one), with their timestamps, and their wire lengths changed by what `map` changed.
fn copy_capture(
    src: &Path,
    dst: &Path,
    snaplen_room: u32,
    mut map: impl FnMut(&[u8]) -> Option<Vec<u8>>,
) {
    let input = File::open(src).unwrap_or_else(|e| panic!("open {}: {e}", src.display()));
    let mut reader = PcapReader::new(BufReader::with_capacity(1 << 20, input))
        .unwrap_or_else(|e| panic!("{}: not a pcap: {e}", src.display()));
    let header = reader.header();
    assert_eq!(header.datalink, DataLink::ETHERNET, "{}: not an Ethernet capture", src.display());
    let header = PcapHeader { snaplen: header.snaplen + snaplen_room, ..header };
    let output = File::create(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
    let mut writer = PcapWriter::with_header(BufWriter::with_capacity(1 << 20, output), header)
        .expect("writing the pcap header");
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap_or_else(|e| panic!("{}: a bad record: {e}", src.display()));
        let Some(data) = map(&packet.data) else {
            continue;
        };
        let added = u32::try_from(data.len() - packet.data.len()).expect("a frame only grows");
        let out = PcapPacket::new(packet.timestamp, packet.orig_len + added, &data);
        writer.write_packet(&out).expect("writing a pcap record");
    }
    writer.into_writer().flush().unwrap_or_else(|e| panic!("write {}: {e}", dst.display()));
}

/// `frame` (an Ethernet frame) wrapped in `layer`, going from the underlay's node `a` to `b`
/// on side 0 and back on side 1: a new Ethernet frame, and the kind of tunnel header written.
fn encapsulate(
    layer: &Layer,
    frame: &[u8],
    side: usize,
    counters: &mut Counters,
) -> (Vec<u8>, Kind) {
    let ethertype = ether_type(frame).expect("an Ethernet frame");
    // A layer that carries IP carries the frame's IP packet: its link header goes.
    let inner = if layer.carries_ip() {
        assert!(
            matches!(ethertype, ETHERTYPE_IPV4 | ETHERTYPE_IPV6),
            "{layer:?} carries IP, but a frame has EtherType {ethertype:#06x}"
        );
        &frame[Ethernet2Header::LEN..]
    } else {
        frame
    };
    let mut body = Vec::with_capacity(inner.len() + 64);
    let (protocol, kind) = match layer {
        Layer::Vxlan { vni, .. } => {
            body.extend_from_slice(&[VXLAN_I_FLAG, 0, 0, 0]);
            body.extend_from_slice(&vni_bytes(*vni));
            body.push(0);
            (IpNumber::UDP, Kind::Vxlan)
        }
        Layer::Geneve { vni, options, .. } => {
            write_geneve(&mut body, *vni, options);
            (IpNumber::UDP, Kind::Geneve)
        }
        Layer::Gre { payload, checksum, key, sequence, .. } => {
            let protocol_type = match payload {
                GrePayload::Ip => ethertype,
                GrePayload::Ethernet => ETHERTYPE_TEB,
            };
            let sequence = sequence.then(|| {
                counters.gre_sequence += 1;
                counters.gre_sequence
            });
            write_gre(&mut body, protocol_type, *checksum, *key, sequence, inner);
            (IpNumber::GRE, Kind::Gre)
        }
        Layer::IpInIp { .. } if ethertype == ETHERTYPE_IPV4 => (IpNumber::IPV4, Kind::Ipv4InIp),
        Layer::IpInIp { .. } => (IpNumber::IPV6, Kind::Ipv6InIp),
    };
    body.extend_from_slice(inner);
    let underlay = layer.underlay();
    let (src, dst) = if side == 0 { (underlay.a, underlay.b) } else { (underlay.b, underlay.a) };
    let udp_port = match layer {
        Layer::Vxlan { port, .. } => Some(*port),
        Layer::Geneve { .. } => Some(GENEVE_PORT),
        _ => None,
    };
    // The header right around a frame that carries no IP (ARP) has no DF, as a kernel tunnel
    // with `df inherit` sends it, so that tshark's innermost IP header of such a frame has
    // none either; every other outer header has DF set, so that only the innermost header
    // can say what the inner packet's DF is.
    let dont_fragment = ip_pair(frame).is_some() || layer.carries_ip();
    counters.ip_id = counters.ip_id.wrapping_add(1);
    let mut out = Vec::with_capacity(body.len() + 14 + 40 + 8);
    let (outer_ethertype, ip_header) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let udp = udp_port.map(|port| {
                UdpHeader::without_ipv4_checksum(UDP_SOURCE_PORTS[side], port, body.len())
                    .expect("a frame fits in UDP")
            });
            let len = body.len() + udp.as_ref().map_or(0, |_| UdpHeader::LEN);
            let len = u16::try_from(len).expect("a frame fits in IPv4");
            let mut ip = Ipv4Header::new(len, OUTER_TTL, protocol, s.octets(), d.octets())
                .expect("a frame fits in IPv4");
            ip.identification = counters.ip_id;
            ip.dont_fragment = dont_fragment;
            ip.header_checksum = ip.calc_header_checksum();
            let mut bytes = ip.to_bytes().to_vec();
            if let Some(udp) = udp {
                bytes.extend_from_slice(&udp.to_bytes());
            }
            (EtherType::IPV4, bytes)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: 0,
                next_header: protocol,
                hop_limit: OUTER_TTL,
                source: s.octets(),
                destination: d.octets(),
            };
            // IPv6 needs a UDP checksum (its pseudo header: the addresses and UDP's length).
            let udp = udp_port.map(|port| {
                UdpHeader::with_ipv6_checksum(UDP_SOURCE_PORTS[side], port, &ip, &body)
                    .expect("a frame fits in UDP")
            });
            ip.set_payload_length(body.len() + udp.as_ref().map_or(0, |_| UdpHeader::LEN))
                .expect("a frame fits in IPv6");
            let mut bytes = ip.to_bytes().to_vec();
            if let Some(udp) = udp {
                bytes.extend_from_slice(&udp.to_bytes());
            }
            (EtherType::IPV6, bytes)
        }
        _ => panic!("an underlay of mixed families: {underlay:?}"),
    };
    let macs = [node_mac(0x0a), node_mac(0x0b)];
    let eth = Ethernet2Header {
        source: macs[side],
        destination: macs[1 - side],
        ether_type: outer_ethertype,
    };
    out.extend_from_slice(&eth.to_bytes());
    out.extend_from_slice(&ip_header);
    out.extend_from_slice(&body);
    (out, kind)
}

/// A node's locally administered MAC address.
fn node_mac(node: u8) -> [u8; 6] {
    [0x02, 0x00, 0x5e, 0x00, 0x00, node]
}

/// The low 24 bits of a VNI, in network order.
fn vni_bytes(vni: u32) -> [u8; 3] {
    assert!(vni < 1 << 24, "VNI {vni} has more than 24 bits");
    let [_, a, b, c] = vni.to_be_bytes();
    [a, b, c]
}

/// The Geneve header (RFC 8926, section 3.4): version 0, the options' length in 4-byte words,
/// no O or C bit, protocol type 0x6558, the VNI; then the options.
fn write_geneve(out: &mut Vec<u8>, vni: u32, options: &[GeneveOption]) {
    let words: usize = options.iter().map(|o| 1 + o.data.len() / 4).sum();
    let words = u8::try_from(words).ok().filter(|w| *w < 64).expect("Geneve options ≤ 252 bytes");
    out.push(words);
    out.push(0);
    out.extend_from_slice(&ETHERTYPE_TEB.to_be_bytes());
    out.extend_from_slice(&vni_bytes(vni));
    out.push(0);
    for o in options {
        assert!(o.data.len() % 4 == 0 && o.data.len() <= 124, "Geneve option data {o:?}");
        out.extend_from_slice(&o.class.to_be_bytes());
        out.push(o.kind);
        out.push((o.data.len() / 4) as u8);
        out.extend_from_slice(&o.data);
    }
}

/// The GRE header (RFC 2784 with RFC 2890's key and sequence number): the flags and version
/// 0, the protocol type, then the checksum (with 16 reserved bits), key and sequence number
/// fields that the flags announce. The checksum covers the header and `payload`.
fn write_gre(
    out: &mut Vec<u8>,
    protocol_type: u16,
    checksum: bool,
    key: Option<u32>,
    sequence: Option<u32>,
    payload: &[u8],
) {
    let start = out.len();
    let mut flags = 0;
    if checksum {
        flags |= GRE_CHECKSUM;
    }
    if key.is_some() {
        flags |= GRE_KEY;
    }
    if sequence.is_some() {
        flags |= GRE_SEQUENCE;
    }
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&protocol_type.to_be_bytes());
    if checksum {
        out.extend_from_slice(&[0; 4]);
    }
    for field in [key, sequence].into_iter().flatten() {
        out.extend_from_slice(&field.to_be_bytes());
    }
    if checksum {
        let sum = internet_checksum(&[&out[start..], payload]);
        out[start + 4..start + 6].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The Internet checksum (RFC 1071) of the concatenation of `parts`: the ones' complement of
/// the ones' complement sum of its 16-bit words, an odd last byte padded with zero.
fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for byte in parts.iter().flat_map(|p| p.iter().copied()) {
        match odd.take() {
            Some(high) => sum += u64::from(u16::from_be_bytes([high, byte])),
            None => odd = Some(byte),
        }
    }
    if let Some(high) = odd {
        sum += u64::from(u16::from_be_bytes([high, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
