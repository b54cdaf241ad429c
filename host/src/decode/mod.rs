//! Decode stage: one raw frame → one [`PacketMeta`].
//!
//! Input: the frame bytes as captured (possibly cut short by the snaplen), its length on the
//! wire, its timestamp and the capture's [`LinkType`].
//! Output: a fixed-size, `Copy` [`PacketMeta`] holding every field of a packed batch record
//! (see `batch/record.rs` and the `process` comment in `wit/analyzer.wit`), including the flow
//! id and direction bit, and a [`Decoded`] saying whether the frame was IP and had TCP.
//!
//! [`decode`] never panics and never allocates, on any input. Link headers are read by hand
//! (`link`), IP headers by etherparse's lax parser (`ip`), TCP by hand (`tcp`, which explains
//! why), and VXLAN, Geneve, GRE and IP-in-IP are opened by `tunnel` down to the innermost IP
//! packet, which is what the meta then describes (the tunnels' identity in
//! [`PacketMeta::tunnel`]).

mod ip;
mod link;
mod tcp;
#[cfg(test)]
mod tests;
mod tunnel;

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::FixedState;

pub use link::LinkType;
pub use tunnel::{
    DEEPEST_HEADERS, GENEVE_PORT, MAX_DEPTH, MAX_VXLAN_PORTS, Tunnel, TunnelKind, Undecoded,
    VxlanPorts,
};

/// Seed of the flow-id hash. Fixed so that a flow id is the same on every run and machine
/// (a replay is deterministic and two hosts agree); the value itself is arbitrary.
const FLOW_SEED: u64 = 0x7761_736d_7461_7001;
/// The flow-id hasher: foldhash's fast hash with the fixed seed above. Its output is pinned by
/// a test, since foldhash does not promise the same values across its own versions.
const FLOW_HASH: FixedState = FixedState::with_seed(FLOW_SEED);
/// IP protocol number of TCP.
const IPPROTO_TCP: u8 = 6;

/// Which IP version a packet carried, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpFamily {
    /// Not an IP packet (or not decodable as one).
    #[default]
    NotIp,
    /// IPv4: addresses in the first 4 bytes of the 16-byte address fields.
    V4,
    /// IPv6.
    V6,
}

/// What [`decode`] found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// No IPv4/IPv6 packet: an unknown or too-short link header, ARP, LLDP, a bad IP
    /// version… Only `ts_ns`, `wire_len`, `ifindex` and `device` are set.
    NonIp,
    /// An IP packet without a decoded TCP header: UDP, ICMP, a non-first fragment, or a TCP
    /// header cut off by the snaplen.
    Ip,
    /// An IP packet with a TCP header (`has_tcp`).
    Tcp,
}

/// Everything the analyzers see of one packet: the fields of one packed batch record.
///
/// Fields the packet does not carry are zero / `false`. Addresses are in network byte order;
/// IPv4 uses the first 4 bytes. Multi-byte values are host integers (the record writer makes
/// them little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketMeta {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Hash of the canonical (sorted) 5-tuple, the ids of the tunnels opened to reach it and,
    /// once [`PacketMeta::set_device`] has run, the device; equal for both directions; 0 when
    /// not IP.
    pub flow_id: u64,
    /// Source address (IPv4 in the first 4 bytes, rest zero).
    pub src_addr: [u8; 16],
    /// Destination address, likewise.
    pub dst_addr: [u8; 16],
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgement number.
    pub ack: u32,
    /// TCP timestamp value (valid if `has_timestamps`).
    pub tsval: u32,
    /// TCP timestamp echo reply (valid if `has_timestamps`).
    pub tsecr: u32,
    /// Frame length on the wire.
    pub wire_len: u32,
    /// IPv4 total length, or IPv6 payload length + 40 (from the header; from the wire length
    /// when the header says 0, as with TSO, BIG TCP and jumbograms).
    pub ip_len: u32,
    /// TCP payload length: IP length − IP header(s) − TCP header, not the captured bytes.
    pub payload_len: u32,
    /// Interface index from a Linux SLL2 header, 0 otherwise.
    pub ifindex: u32,
    /// Source port (TCP or UDP).
    pub src_port: u16,
    /// Destination port (TCP or UDP).
    pub dst_port: u16,
    /// TCP window as sent (not scaled).
    pub window: u16,
    /// TCP MSS option value (valid if `has_mss`).
    pub mss: u16,
    /// Device index, set by the caller; [`decode`] leaves it untouched.
    pub device: u16,
    /// IP version.
    pub family: IpFamily,
    /// IP protocol of the transport (after IPv4 AH / IPv6 extension headers).
    pub ip_proto: u8,
    /// TCP flags byte: FIN 0x01 … CWR 0x80.
    pub tcp_flags: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// TCP window scale shift as sent (valid if `has_wscale`).
    pub wscale: u8,
    /// Number of SACK blocks in a SACK option.
    pub sack_blocks: u8,
    /// TCP header length in bytes (from the data offset), options included.
    pub tcp_hdr_len: u8,
    /// IPv4 don't-fragment flag.
    pub dont_fragment: bool,
    /// A fragment: more-fragments set or a non-zero offset (IPv4, or an IPv6 fragment header).
    pub fragment: bool,
    /// The TCP header's fixed 20 bytes were captured (never set for non-first fragments).
    pub has_tcp: bool,
    /// Captured fewer bytes than the headers claim.
    pub truncated: bool,
    /// The source (address, port) is the higher endpoint of the canonical 5-tuple.
    pub direction: bool,
    /// TCP SACK-permitted option present.
    pub sack_permitted: bool,
    /// TCP timestamps option present.
    pub has_timestamps: bool,
    /// TCP MSS option present.
    pub has_mss: bool,
    /// TCP window scale option present.
    pub has_wscale: bool,
    /// The tunnels the packet came through, and the outermost one's identity.
    pub tunnel: Tunnel,
}

impl PacketMeta {
    /// Every field zero: what [`decode`] starts each packet from. A constant rather than
    /// `Default::default()`, whose arrays were built in a temporary and copied, stalling every
    /// packet's decode on store forwarding.
    const EMPTY: PacketMeta = PacketMeta {
        ts_ns: 0,
        flow_id: 0,
        src_addr: [0; 16],
        dst_addr: [0; 16],
        seq: 0,
        ack: 0,
        tsval: 0,
        tsecr: 0,
        wire_len: 0,
        ip_len: 0,
        payload_len: 0,
        ifindex: 0,
        src_port: 0,
        dst_port: 0,
        window: 0,
        mss: 0,
        device: 0,
        family: IpFamily::NotIp,
        ip_proto: 0,
        tcp_flags: 0,
        ttl: 0,
        wscale: 0,
        sack_blocks: 0,
        tcp_hdr_len: 0,
        dont_fragment: false,
        fragment: false,
        has_tcp: false,
        truncated: false,
        direction: false,
        sack_permitted: false,
        has_timestamps: false,
        has_mss: false,
        has_wscale: false,
        tunnel: Tunnel::NONE,
    };

    /// The meta of a frame that carries no IP (or whose link type is unknown): only the time
    /// and the wire length set; `device` 0 for the caller to fill.
    pub fn non_ip(ts_ns: u64, wire_len: u32) -> PacketMeta {
        PacketMeta { ts_ns, wire_len, ..PacketMeta::default() }
    }

    /// Sets the device the packet was seen on and folds it into the flow id, so that one
    /// connection seen on two interfaces (a pod's veth and the bridge port of its peer, or
    /// every interface of `any`) is two flows: per-flow state in the analyzers is then kept
    /// per observation point, and a copy of a segment on a second interface is never taken
    /// for a retransmission. Non-IP packets keep flow id 0.
    #[inline]
    pub fn set_device(&mut self, device: u16) {
        self.device = device;
        if self.flow_id != 0 {
            let mut h = FLOW_HASH.build_hasher();
            h.write_u64(self.flow_id);
            h.write_u16(device);
            self.flow_id = h.finish();
        }
    }
}

/// Decodes one frame into `out`, overwriting every field except `device`.
///
/// `wire_len` is the frame's length on the wire (pcap `len`), `data` the captured bytes
/// (pcap `caplen` of them); UDP to or from one of `vxlan` is read as VXLAN. Never panics and
/// never allocates.
#[inline]
pub fn decode(
    link: LinkType,
    ts_ns: u64,
    wire_len: u32,
    data: &[u8],
    vxlan: &VxlanPorts,
    out: &mut PacketMeta,
) -> Decoded {
    // From the constant, then field by field: copying a value just built in pieces stalled on
    // store forwarding, in every packet's decode.
    let device = out.device;
    *out = PacketMeta::EMPTY;
    (out.ts_ns, out.wire_len, out.device) = (ts_ns, wire_len, device);
    let net = link::network(link, data);
    out.ifindex = net.ifindex;
    if !net.is_ip {
        return Decoded::NonIp;
    }
    let Some(packet) = data.get(net.offset..) else {
        return Decoded::NonIp;
    };
    let link_len = u32::try_from(net.offset).unwrap_or(u32::MAX);
    let mut transport = ip::Transport::NONE;
    match ip::ip(packet, wire_len.saturating_sub(link_len), out, &mut transport) {
        ip::IpOutcome::NotIp => Decoded::NonIp,
        ip::IpOutcome::NoAddresses => Decoded::Ip,
        ip::IpOutcome::Cut => {
            set_flow(out);
            Decoded::Ip
        }
        ip::IpOutcome::Addressed => {
            if tunnel::may_carry(out) {
                tunnel::open(out, transport, vxlan);
                if out.family == IpFamily::NotIp {
                    // A tunnel whose Ethernet frame carries no IP (ARP): that frame, as such.
                    return Decoded::NonIp;
                }
            }
            set_flow(out);
            if out.has_tcp { Decoded::Tcp } else { Decoded::Ip }
        }
    }
}

/// Sets `flow_id` and `direction` from the addresses, ports, protocol and family.
#[inline]
fn set_flow(m: &mut PacketMeta) {
    let src = (u128::from_be_bytes(m.src_addr), m.src_port);
    let dst = (u128::from_be_bytes(m.dst_addr), m.dst_port);
    m.direction = src > dst;
    let (low, high) = if m.direction { (dst, src) } else { (src, dst) };
    let mut h = FLOW_HASH.build_hasher();
    h.write_u128(low.0);
    h.write_u128(high.0);
    // The family keeps an IPv4 address apart from the IPv6 address with the same first bytes.
    h.write_u64(
        u64::from(low.1) << 32
            | u64::from(high.1) << 16
            | u64::from(m.ip_proto) << 8
            | m.family as u64,
    );
    if m.tunnel.key != 0 {
        h.write_u64(m.tunnel.key);
    }
    m.flow_id = h.finish();
}
