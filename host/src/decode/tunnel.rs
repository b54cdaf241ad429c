//! Decode stage, tunnels: opens VXLAN, Geneve, GRE and IP-in-IP down to the innermost IP
//! packet, so that the analyzers see the pods' TCP that an overlay network carries between
//! nodes.
//!
//! Input: a [`PacketMeta`] whose IP layer `decode/ip.rs` has just filled, the bytes after that
//! IP header ([`Transport`]) and the UDP ports to read as VXLAN ([`VxlanPorts`]).
//! Output: the same meta, rewritten to describe the innermost IP packet when a tunnel was
//! opened, with the tunnels' identity in [`Tunnel`]; or left describing the carrier, with the
//! reason in [`Tunnel::fault`], when a tunnel header or the packet inside it could not be read.
//! The kinds, with their record codes and label values, are the record layout's
//! ([`TunnelKind`], from `wasmtap-record`): the analyzers read the same names.
//!
//! The tunnel headers are read by hand: etherparse 0.21 parses none of them. The layers inside
//! (Ethernet, IP, TCP) go through the same code as the outermost ones. Nothing here allocates
//! or loops more than [`MAX_DEPTH`] times; a packet that is not UDP, GRE or IP-in-IP costs one
//! comparison of its IP protocol.

pub use wasmtap_record::TunnelKind;

use super::ip::{self, IpOutcome, Transport};
use super::link::{self, LinkType};
use super::{IpFamily, PacketMeta};

/// Tunnels opened inside one another at most. Overlays nest one deep, a VPN or a provider's
/// network underneath one more; a third leaves room, and the bound keeps a crafted packet of
/// nothing but tunnel headers from costing more than a few of them.
pub const MAX_DEPTH: usize = 3;

/// The most VXLAN ports `--vxlan-port` takes: a bound on the per-packet look-up (a linear
/// scan), far above the two that CNIs use (4789 by the standard, 8472 by the Linux kernel).
pub const MAX_VXLAN_PORTS: usize = 8;

/// The standard VXLAN port (RFC 7348): Calico's operator install, Cilium's choice on request.
pub const VXLAN_PORT: u16 = 4789;
/// The Linux kernel's default VXLAN port: flannel and Cilium use it.
pub const LINUX_VXLAN_PORT: u16 = 8472;
/// The Geneve port (RFC 8926), fixed by IANA: Cilium and OVN.
pub const GENEVE_PORT: u16 = 6081;

/// Odd multipliers (from the golden ratio and from pi) that spread a tunnel's two endpoint
/// addresses over a key before the flow hash takes it; any two distinct odd constants would do.
const ENDPOINT_MIX: [u64; 2] = [0x9e37_79b9_7f4a_7c15, 0x243f_6a88_85a3_08d3];

/// IP protocol numbers that carry a tunnel.
const IPPROTO_IPV4: u8 = 4;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_GRE: u8 = 47;

/// A UDP header: ports, length, checksum.
const UDP_LEN: usize = 8;
/// The UDP ports: the first 4 bytes, all that says whether a tunnel follows.
const UDP_PORTS_LEN: usize = 4;
/// A VXLAN header: flags, reserved, 24-bit VNI, reserved.
const VXLAN_LEN: usize = 8;
/// VXLAN flags: the VNI is valid. RFC 7348 requires it set.
const VXLAN_I_FLAG: u8 = 0x08;
/// The fixed Geneve header; options follow, their length in 4-byte words in the first byte.
const GENEVE_FIXED_LEN: usize = 8;
/// The options length (in 4-byte words) is the low 6 bits of the first byte; the top 2 are the
/// version.
const GENEVE_OPTIONS_MASK: u8 = 0x3f;
/// The fixed GRE header: flags and version, protocol type.
const GRE_FIXED_LEN: usize = 4;
/// Each optional GRE field (checksum and reserved, key, sequence number) is 4 bytes.
const GRE_FIELD_LEN: usize = 4;
/// GRE flag bits of the first byte (RFC 2784, RFC 2890).
const GRE_CHECKSUM: u8 = 0x80;
const GRE_ROUTING: u8 = 0x40;
const GRE_KEY: u8 = 0x20;
const GRE_SEQUENCE: u8 = 0x10;
/// GRE version: the low 3 bits of the second byte; 0 is GRE, 1 is PPTP's enhanced GRE.
const GRE_VERSION_MASK: u8 = 0x07;

/// Ether types a GRE or Geneve header names its payload by.
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Transparent Ethernet bridging: an Ethernet frame follows.
const ETHERTYPE_TEB: u16 = 0x6558;

/// The headers of the deepest packet decode reads whole: an Ethernet frame with two VLAN tags,
/// [`MAX_DEPTH`] tunnels each of IPv6, UDP, an 8-byte VXLAN or Geneve header and an inner
/// Ethernet header (a GRE tunnel with every optional field and Ethernet inside is the same
/// size), then IPv6 and a TCP header with 40 bytes of options. The default snap length must
/// hold it (`config`).
pub const DEEPEST_HEADERS: u32 = 14 + 2 * 4 + (MAX_DEPTH as u32) * (40 + 8 + 8 + 14) + 40 + 60;

/// The UDP ports whose datagrams are read as VXLAN (`--vxlan-port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanPorts {
    ports: [u16; MAX_VXLAN_PORTS],
    len: usize,
}

impl Default for VxlanPorts {
    /// 4789 and 8472: the standard port and the Linux kernel's, which flannel and Cilium use.
    fn default() -> Self {
        let mut ports = [0; MAX_VXLAN_PORTS];
        ports[..2].copy_from_slice(&[VXLAN_PORT, LINUX_VXLAN_PORT]);
        Self { ports, len: 2 }
    }
}

impl VxlanPorts {
    /// No port: no UDP is read as VXLAN (`--vxlan-port none`).
    pub const NONE: VxlanPorts = VxlanPorts { ports: [0; MAX_VXLAN_PORTS], len: 0 };

    /// The given ports, or `None` when there are more than [`MAX_VXLAN_PORTS`]. An empty list
    /// reads no UDP as VXLAN.
    pub fn new(list: &[u16]) -> Option<Self> {
        let mut ports = [0; MAX_VXLAN_PORTS];
        ports.get_mut(..list.len())?.copy_from_slice(list);
        Some(Self { ports, len: list.len() })
    }

    /// The ports, in the order given.
    pub fn as_slice(&self) -> &[u16] {
        &self.ports[..self.len]
    }

    #[inline]
    fn contains(&self, port: u16) -> bool {
        self.as_slice().contains(&port)
    }
}

/// Why a tunnel, or the packet inside it, was not opened: the `reason` label of
/// `wasmtap_host_tunnel_undecoded_total`. The record then describes the carrier (the last IP
/// packet that was read whole), or for [`Undecoded::Truncated`] after an opened tunnel, the
/// inner IP packet without its TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Undecoded {
    /// The capture ends inside a tunnel header, or inside the inner packet's IP or TCP
    /// header (the snap length, or a frame cut short).
    Truncated = 1,
    /// A header that breaks its own rules: VXLAN without the I flag, a Geneve version other
    /// than 0, options or an inner IP packet longer than the tunnel carried, an inner header
    /// that is not the IP version the tunnel announced.
    Malformed,
    /// A tunnel payload that is not opened: GRE version 1 (PPTP), GRE with routing, and GRE
    /// or Geneve payloads other than IPv4, IPv6 and Ethernet (ERSPAN, MPLS, NSH, …).
    Unsupported,
    /// A tunnel inside [`MAX_DEPTH`] opened ones.
    TooDeep,
}

impl Undecoded {
    /// Every reason, each exported at 0 for a captured interface from the start.
    pub const ALL: [Undecoded; 4] =
        [Undecoded::Truncated, Undecoded::Malformed, Undecoded::Unsupported, Undecoded::TooDeep];

    /// The reason of a [`Tunnel`]'s code, `None` for 0.
    fn from_code(code: u8) -> Option<Undecoded> {
        Undecoded::ALL.into_iter().find(|r| *r as u8 == code)
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Undecoded::Truncated => "truncated",
            Undecoded::Malformed => "malformed",
            Undecoded::Unsupported => "unsupported",
            Undecoded::TooDeep => "too_deep",
        }
    }
}

/// The tunnels a packet came through. All empty for a packet that came through none.
///
/// Its `Default` is all zero bytes, so that resetting it for every packet is a plain memset:
/// kinds and the reason are kept as codes (0 for none), not as `Option`s of enums, whose
/// non-zero `None` made the reset copy a template and stall on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tunnel {
    /// The outermost tunnel's VNI or GRE key, if it has one.
    pub id: Option<u32>,
    /// Tunnels opened to reach the packet the meta describes.
    pub depth: u8,
    /// The family of the outermost IP header, when a tunnel was opened.
    pub outer_family: IpFamily,
    /// The outermost IP header's source address (IPv4 in the first 4 bytes).
    pub outer_src: [u8; 16],
    /// The outermost IP header's destination address.
    pub outer_dst: [u8; 16],
    /// The record codes ([`TunnelKind::code`]) of every tunnel header read whole, outermost
    /// first, 0 after the last: what `wasmtap_host_tunnel_packets_total` counts. One more than
    /// `depth` when the last one's payload was not opened.
    codes: [u8; MAX_DEPTH],
    /// Why the last tunnel, or the packet inside it, was not opened: [`Undecoded`] as a code,
    /// 0 for none.
    fault: u8,
    /// The tunnels opened, folded together by kind and endpoints (the carrier's two addresses,
    /// in either order): the flow id covers them, so the same inner addresses in tunnels between
    /// two other nodes are another flow. Not the VNI or key: Cilium puts the sender's security
    /// identity in the VNI, which then differs between the two directions of one connection,
    /// and tshark follows a connection across both. 0 when none was opened.
    pub(super) key: u64,
}

impl Tunnel {
    /// No tunnel: all zero.
    pub const NONE: Tunnel = Tunnel {
        id: None,
        depth: 0,
        outer_family: IpFamily::NotIp,
        outer_src: [0; 16],
        outer_dst: [0; 16],
        codes: [0; MAX_DEPTH],
        fault: 0,
        key: 0,
    };

    /// The outermost tunnel's kind, if one was opened.
    #[inline]
    pub fn kind(&self) -> Option<TunnelKind> {
        if self.depth == 0 { None } else { TunnelKind::from_code(self.codes[0]) }
    }

    /// Why the last tunnel, or the packet inside it, was not opened.
    #[inline]
    pub fn fault(&self) -> Option<Undecoded> {
        Undecoded::from_code(self.fault)
    }

    /// Whether there is anything to count: a tunnel header read, or one that could not be.
    #[inline]
    pub fn is_seen(&self) -> bool {
        self.codes[0] != 0 || self.fault != 0
    }

    /// The tunnel headers read whole, outermost first.
    pub fn read(&self) -> impl Iterator<Item = TunnelKind> + '_ {
        self.codes.iter().map_while(|&c| TunnelKind::from_code(c))
    }

    fn set_fault(&mut self, reason: Undecoded) {
        self.fault = reason as u8;
    }

    /// A tunnel of `kind` with `id`, opened `depth` deep, between the IPv4 or IPv6 `outer`
    /// addresses: for the tests of the stages after decode.
    #[cfg(test)]
    pub fn opened(
        kind: TunnelKind,
        id: Option<u32>,
        depth: u8,
        outer: (IpFamily, [u8; 16], [u8; 16]),
    ) -> Tunnel {
        let mut codes = [0; MAX_DEPTH];
        for c in codes.iter_mut().take(usize::from(depth)) {
            *c = kind.code();
        }
        let (outer_family, outer_src, outer_dst) = outer;
        Tunnel { id, depth, outer_family, outer_src, outer_dst, codes, fault: 0, key: 1 }
    }
}

/// Whether the packet's IP protocol can carry a tunnel: the one test every packet pays.
#[inline(always)]
pub(super) fn may_carry(m: &PacketMeta) -> bool {
    matches!(m.ip_proto, IPPROTO_UDP | IPPROTO_GRE | IPPROTO_IPV4 | IPPROTO_IPV6)
}

/// What follows a tunnel header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// An Ethernet frame (VXLAN, Geneve or GRE with transparent Ethernet bridging).
    Ethernet,
    /// An IPv4 packet.
    Ipv4,
    /// An IPv6 packet.
    Ipv6,
}

/// A tunnel header read whole: what it is and where its payload is.
struct Found<'a> {
    kind: TunnelKind,
    id: Option<u32>,
    payload: Payload,
    /// The captured payload bytes.
    bytes: &'a [u8],
    /// The payload's length on the wire.
    wire_len: u32,
}

/// Opens the tunnels in the packet `m` describes, whose transport bytes are `transport`, as
/// far as they go and [`MAX_DEPTH`] allows.
// Kept out of `decode`, so that the path of a packet without a tunnel stays as short as it was.
#[inline(never)]
pub(super) fn open(m: &mut PacketMeta, mut transport: Transport<'_>, ports: &VxlanPorts) {
    loop {
        let found = match find(m, transport, ports) {
            None => return,
            Some(Err(fault)) => return m.tunnel.set_fault(fault),
            Some(Ok(found)) => found,
        };
        let depth = usize::from(m.tunnel.depth);
        let Some(slot) = m.tunnel.codes.get_mut(depth) else {
            return m.tunnel.set_fault(Undecoded::TooDeep);
        };
        *slot = found.kind.code();
        let carrier = *m;
        let next = match inner(m, &found) {
            Ok(next) => next,
            Err(fault) => {
                *m = carrier;
                m.tunnel.set_fault(fault);
                return;
            }
        };
        let t = &mut m.tunnel;
        if t.depth == 0 {
            t.id = found.id;
            t.outer_family = carrier.family;
            t.outer_src = carrier.src_addr;
            t.outer_dst = carrier.dst_addr;
        }
        t.depth += 1;
        t.key = t.key.rotate_left(24) ^ endpoints(&carrier, found.kind);
        let Some(next) = next else {
            // An Ethernet frame without IP: opened, and nothing further inside.
            return;
        };
        transport = next;
        if transport.whole && m.truncated && transport_cut(m, transport) {
            // The inner IP header was read, the TCP or UDP header after it was cut off. The
            // meta describes the inner IP packet, with the TCP fields that were captured (the
            // fixed header alone is enough to count a segment, as without a tunnel).
            return m.tunnel.set_fault(Undecoded::Truncated);
        }
        if !may_carry(m) {
            return;
        }
    }
}

/// A tunnel's kind and endpoints as one number, the same in both directions: the carrier's
/// addresses in order, mixed by two odd constants so that swapping them changes nothing and
/// the low and high halves both count.
fn endpoints(carrier: &PacketMeta, kind: TunnelKind) -> u64 {
    let (a, b) = (u128::from_be_bytes(carrier.src_addr), u128::from_be_bytes(carrier.dst_addr));
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let fold = |x: u128| (x as u64) ^ ((x >> 64) as u64).rotate_left(32);
    fold(low).wrapping_mul(ENDPOINT_MIX[0])
        ^ fold(high).wrapping_mul(ENDPOINT_MIX[1])
        ^ u64::from(kind.code())
}

/// Whether the TCP header, or the UDP ports that would say whether another tunnel follows,
/// of the packet `m` describes were cut off.
fn transport_cut(m: &PacketMeta, transport: Transport<'_>) -> bool {
    match m.ip_proto {
        super::IPPROTO_TCP => !m.has_tcp || transport.bytes.len() < usize::from(m.tcp_hdr_len),
        IPPROTO_UDP => transport.bytes.len() < UDP_PORTS_LEN,
        _ => false,
    }
}

/// Decodes the packet inside `found` into `m`: `Ok(Some)` with its transport for an IP
/// packet, `Ok(None)` for an Ethernet frame that carries no IP (ARP, LLDP), which `m` then
/// describes as such a frame would on its own, `Err` when it cannot be read (the caller puts
/// the carrier back).
fn inner<'a>(m: &mut PacketMeta, found: &Found<'a>) -> Result<Option<Transport<'a>>, Undecoded> {
    let emptied = PacketMeta {
        ts_ns: m.ts_ns,
        wire_len: m.wire_len,
        ifindex: m.ifindex,
        device: m.device,
        tunnel: m.tunnel,
        ..PacketMeta::default()
    };
    let (bytes, wire_len) = match found.payload {
        Payload::Ethernet => {
            let net = link::network(LinkType::Ethernet, found.bytes);
            if found.bytes.len() < link::ETHERNET_LEN {
                return Err(Undecoded::Truncated);
            }
            if !net.is_ip {
                *m = emptied;
                return Ok(None);
            }
            let link_len = u32::try_from(net.offset).unwrap_or(u32::MAX);
            (
                found.bytes.get(net.offset..).unwrap_or_default(),
                found.wire_len.saturating_sub(link_len),
            )
        }
        Payload::Ipv4 | Payload::Ipv6 => (found.bytes, found.wire_len),
    };
    let version = bytes.first().map(|b| b >> 4);
    let announced = match found.payload {
        Payload::Ipv4 => Some(4),
        Payload::Ipv6 => Some(6),
        Payload::Ethernet => None,
    };
    match (version, announced) {
        (None, _) => return Err(Undecoded::Truncated),
        (Some(v), Some(a)) if v != a => return Err(Undecoded::Malformed),
        _ => {}
    }
    *m = emptied;
    let mut transport = Transport::NONE;
    match ip::ip(bytes, wire_len, m, &mut transport) {
        IpOutcome::NotIp => Err(Undecoded::Malformed),
        IpOutcome::NoAddresses | IpOutcome::Cut => Err(Undecoded::Truncated),
        // An inner packet longer than the tunnel carried: its lengths cannot be trusted.
        IpOutcome::Addressed if m.ip_len > wire_len => Err(Undecoded::Malformed),
        IpOutcome::Addressed => Ok(Some(transport)),
    }
}

/// The tunnel header at the start of the transport bytes of `m`, if its protocol and ports
/// say there is one: `Some(Ok)` when it was read whole, `Some(Err)` when not.
#[inline]
fn find<'a>(
    m: &PacketMeta,
    t: Transport<'a>,
    ports: &VxlanPorts,
) -> Option<Result<Found<'a>, Undecoded>> {
    if !t.whole {
        return None;
    }
    match m.ip_proto {
        IPPROTO_UDP => {
            // Either port, as tshark's UDP dissector tries both.
            let (src, dst) = (m.src_port, m.dst_port);
            let kind = if ports.contains(dst) || ports.contains(src) {
                TunnelKind::Vxlan
            } else if dst == GENEVE_PORT || src == GENEVE_PORT {
                TunnelKind::Geneve
            } else {
                return None;
            };
            let body = match after(t, UDP_LEN) {
                Ok((bytes, wire_len)) => Transport { bytes, wire_len, whole: true },
                Err(fault) => return Some(Err(fault)),
            };
            Some(match kind {
                TunnelKind::Vxlan => vxlan(body),
                _ => geneve(body),
            })
        }
        IPPROTO_GRE => Some(gre(t)),
        IPPROTO_IPV4 => Some(Ok(Found {
            kind: TunnelKind::Ipv4InIp,
            id: None,
            payload: Payload::Ipv4,
            bytes: t.bytes,
            wire_len: t.wire_len,
        })),
        IPPROTO_IPV6 => Some(Ok(Found {
            kind: TunnelKind::Ipv6InIp,
            id: None,
            payload: Payload::Ipv6,
            bytes: t.bytes,
            wire_len: t.wire_len,
        })),
        _ => None,
    }
}

/// The first `N` bytes of a tunnel header, or why they are not there: a datagram shorter
/// on the wire than the header is malformed, a capture that ends inside it truncated.
fn fixed<const N: usize>(t: Transport<'_>) -> Result<&[u8; N], Undecoded> {
    if (t.wire_len as usize) < N {
        return Err(Undecoded::Malformed);
    }
    t.bytes.first_chunk::<N>().ok_or(Undecoded::Truncated)
}

/// The payload after a tunnel header of `header_len` bytes, or why there is none.
fn after(t: Transport<'_>, header_len: usize) -> Result<(&[u8], u32), Undecoded> {
    let header = u32::try_from(header_len).unwrap_or(u32::MAX);
    if t.wire_len < header {
        // The header (its options or optional fields) claims more than the datagram carried.
        return Err(Undecoded::Malformed);
    }
    let bytes = t.bytes.get(header_len..).ok_or(Undecoded::Truncated)?;
    Ok((bytes, t.wire_len - header))
}

/// A VXLAN header (RFC 7348) and the Ethernet frame after it.
fn vxlan(t: Transport<'_>) -> Result<Found<'_>, Undecoded> {
    let h = fixed::<VXLAN_LEN>(t)?;
    if h[0] & VXLAN_I_FLAG == 0 {
        return Err(Undecoded::Malformed);
    }
    let (bytes, wire_len) = after(t, VXLAN_LEN)?;
    Ok(Found {
        kind: TunnelKind::Vxlan,
        id: Some(u32::from_be_bytes([0, h[4], h[5], h[6]])),
        payload: Payload::Ethernet,
        bytes,
        wire_len,
    })
}

/// A Geneve header (RFC 8926), its options skipped by their declared length.
fn geneve(t: Transport<'_>) -> Result<Found<'_>, Undecoded> {
    let h = fixed::<GENEVE_FIXED_LEN>(t)?;
    if h[0] >> 6 != 0 {
        return Err(Undecoded::Malformed);
    }
    let header_len = GENEVE_FIXED_LEN + usize::from(h[0] & GENEVE_OPTIONS_MASK) * 4;
    let (bytes, wire_len) = after(t, header_len)?;
    Ok(Found {
        kind: TunnelKind::Geneve,
        id: Some(u32::from_be_bytes([0, h[4], h[5], h[6]])),
        payload: by_ether_type(u16::from_be_bytes([h[2], h[3]]))?,
        bytes,
        wire_len,
    })
}

/// A GRE header (RFC 2784 with RFC 2890's key and sequence number).
fn gre(t: Transport<'_>) -> Result<Found<'_>, Undecoded> {
    let h = fixed::<GRE_FIXED_LEN>(t)?;
    let flags = h[0];
    if h[1] & GRE_VERSION_MASK != 0 || flags & GRE_ROUTING != 0 {
        return Err(Undecoded::Unsupported);
    }
    let payload = by_ether_type(u16::from_be_bytes([h[2], h[3]]))?;
    let field = |bit: u8| if flags & bit != 0 { GRE_FIELD_LEN } else { 0 };
    let key_at = GRE_FIXED_LEN + field(GRE_CHECKSUM);
    let header_len = key_at + field(GRE_KEY) + field(GRE_SEQUENCE);
    let (bytes, wire_len) = after(t, header_len)?;
    // `after` proved the whole header captured, the key included.
    let id = (flags & GRE_KEY != 0)
        .then(|| t.bytes.get(key_at..key_at + GRE_FIELD_LEN))
        .flatten()
        .map(|k| u32::from_be_bytes([k[0], k[1], k[2], k[3]]));
    Ok(Found { kind: TunnelKind::Gre, id, payload, bytes, wire_len })
}

/// The payload an ether type in a GRE or Geneve header names.
fn by_ether_type(ether_type: u16) -> Result<Payload, Undecoded> {
    match ether_type {
        ETHERTYPE_TEB => Ok(Payload::Ethernet),
        ETHERTYPE_IPV4 => Ok(Payload::Ipv4),
        ETHERTYPE_IPV6 => Ok(Payload::Ipv6),
        _ => Err(Undecoded::Unsupported),
    }
}

#[cfg(test)]
pub(super) mod tests;
