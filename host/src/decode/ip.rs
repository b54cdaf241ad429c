//! Decode stage, network layer: one IPv4 or IPv6 header (the outermost, or one inside a tunnel) (with IPv4 AH and IPv6
//! extension headers), then the transport header through `decode/tcp.rs`.
//!
//! Input: the captured bytes from the start of the IP header, and the IP length the wire
//! implies (frame length on the wire minus the link header). The wire length stands in when the
//! header's own length field is zero (TSO / BIG TCP / jumbograms), and caps a TCP payload
//! length computed from a header that claims more than the frame had on the wire.
//! Output: the IP, TCP and UDP-port fields of a [`PacketMeta`], an [`IpOutcome`], and the
//! transport bytes ([`Transport`]) for `decode/tunnel.rs` to look into.
//!
//! Uses etherparse's lax `LaxIpSlice`, which accepts a capture shorter than the IP length.
//! Where even the fixed IP header is cut off (etherparse refuses it), the fields that were
//! captured are read by hand.

use etherparse::err::ip::LaxHeaderSliceError;
use etherparse::{IpNumber, Ipv6ExtensionSlice, Ipv6ExtensionsSlice, LaxIpSlice};

use super::{IpFamily, PacketMeta, tcp};

/// The fixed IPv6 header; the IPv6 payload length excludes it.
const IPV6_HEADER_LEN: u32 = 40;
/// IPv6 hop-by-hop option type of the Jumbo Payload option (RFC 2675).
const OPT_JUMBO_PAYLOAD: u8 = 0xc2;
/// IPv6 hop-by-hop Pad1: a single zero byte with no length.
const OPT_PAD1: u8 = 0;
/// IPv4 flags byte (offset 6): don't fragment.
const IPV4_DF: u8 = 0x40;
/// IPv4 flags byte (offset 6): more fragments.
const IPV4_MF: u8 = 0x20;
/// IPv4 fragment offset: the low 13 bits of bytes 6–7.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

/// What the network layer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IpOutcome {
    /// Not an IPv4/IPv6 header (bad version or header length): nothing was filled.
    NotIp,
    /// An IP header so short that an address was not captured (no flow id).
    NoAddresses,
    /// Addresses (and whatever else was captured) filled in, and the [`Transport`].
    Addressed,
    /// The addresses were captured, the rest of the IP header was cut off (by the snaplen):
    /// the fields that were captured are filled in, and `truncated`.
    Cut,
}

/// The transport layer that follows an IP header: where a tunnel header would start. Filled
/// through a `&mut` rather than returned inside [`IpOutcome`]: moving the returned enum about
/// cost the decoder of every packet a store-forwarding stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Transport<'a> {
    /// The captured bytes after the IP header(s) (empty when none were captured).
    pub bytes: &'a [u8],
    /// Its length per the IP header, bounded by what the frame had on the wire.
    pub wire_len: u32,
    /// The packet starts its transport header (not a fragment: a tunnel inside a fragment is
    /// not opened, and a non-first fragment has no transport header at all).
    pub whole: bool,
}

impl Transport<'_> {
    /// No transport: nothing after the IP header was read.
    pub const NONE: Transport<'static> = Transport { bytes: &[], wire_len: 0, whole: false };
}

/// Decodes the IP layer starting at `packet[0]`. `wire_ip_len` is the IP length implied by
/// the frame's length on the wire.
#[inline]
pub(super) fn ip<'a>(
    packet: &'a [u8],
    wire_ip_len: u32,
    m: &mut PacketMeta,
    transport: &mut Transport<'a>,
) -> IpOutcome {
    let slice = match LaxIpSlice::from_slice(packet) {
        // An extension-header stop error leaves the payload's ip_number at the header that
        // failed, so no transport is decoded after it; nothing else to do with it.
        Ok((slice, _stop)) => slice,
        Err(LaxHeaderSliceError::Len(_)) => return partial_header(packet, m),
        Err(LaxHeaderSliceError::Content(_)) => return IpOutcome::NotIp,
    };

    // Bytes of IP header plus extension headers before the transport header.
    let headers_len: u32;
    // Whether this packet starts the transport header (not a non-first fragment).
    let carries_transport: bool;
    match &slice {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            m.family = IpFamily::V4;
            m.src_addr[..4].copy_from_slice(&h.source());
            m.dst_addr[..4].copy_from_slice(&h.destination());
            m.ttl = h.ttl();
            m.dont_fragment = h.dont_fragment();
            let offset = h.fragments_offset().value();
            m.fragment = h.more_fragments() || offset != 0;
            carries_transport = offset == 0;
            let auth_len = v4.extensions().auth.map_or(0, |a| a.slice().len());
            headers_len = len_u32(h.slice().len() + auth_len);
            m.ip_len = match h.total_len() {
                // Segmentation offload and IPv4 BIG TCP hand the capture a 0 total length.
                0 => wire_ip_len,
                n => u32::from(n),
            };
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            m.family = IpFamily::V6;
            m.src_addr = h.source();
            m.dst_addr = h.destination();
            m.ttl = h.hop_limit();
            let exts = v6.extensions();
            m.fragment = exts.is_fragmenting_payload();
            carries_transport = !m.fragment || is_first_fragment(exts);
            headers_len = IPV6_HEADER_LEN + len_u32(exts.slice().len());
            m.ip_len = match h.payload_length() {
                0 if h.next_header() == IpNumber::IPV6_NO_NEXT_HEADER => IPV6_HEADER_LEN,
                // A jumbogram, or IPv6 BIG TCP (which leaves out the hop-by-hop header).
                0 => jumbo_payload_len(exts)
                    .map_or(wire_ip_len, |n| n.saturating_add(IPV6_HEADER_LEN)),
                n => u32::from(n) + IPV6_HEADER_LEN,
            };
        }
    }

    let payload = slice.payload();
    m.ip_proto = payload.ip_number.0;
    if (packet.len() as u64) < u64::from(m.ip_len) {
        m.truncated = true;
    }
    // The transport length comes from the headers, not from what was captured; but a header
    // claiming more than the frame had on the wire is bogus (tshark reports it as "total
    // length exceeds packet length"), so the wire bounds it.
    *transport = Transport {
        bytes: payload.payload,
        wire_len: m.ip_len.min(wire_ip_len).saturating_sub(headers_len),
        whole: carries_transport && !m.fragment,
    };
    if carries_transport {
        match payload.ip_number {
            IpNumber::TCP => tcp::tcp(transport.bytes, transport.wire_len, m),
            IpNumber::UDP => tcp::udp(transport.bytes, m),
            _ => {}
        }
    }
    IpOutcome::Addressed
}

/// A header length (at most a few hundred bytes from etherparse) as u32.
#[inline(always)]
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Whether the IPv6 fragment header of a fragmenting packet has offset 0.
fn is_first_fragment(exts: &Ipv6ExtensionsSlice<'_>) -> bool {
    exts.clone().into_iter().all(|ext| match ext {
        Ipv6ExtensionSlice::Fragment(f) => f.fragment_offset().value() == 0,
        _ => true,
    })
}

/// The Jumbo Payload length from a leading hop-by-hop header, if it has one.
fn jumbo_payload_len(exts: &Ipv6ExtensionsSlice<'_>) -> Option<u32> {
    if exts.first_header() != Some(IpNumber::IPV6_HEADER_HOP_BY_HOP) {
        return None;
    }
    let hbh = exts.slice();
    let hbh_len = (usize::from(*hbh.get(1)?) + 1) * 8;
    let options = hbh.get(2..hbh_len)?;
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        if kind == OPT_PAD1 {
            at += 1;
            continue;
        }
        let len = usize::from(*options.get(at + 1)?);
        if kind == OPT_JUMBO_PAYLOAD {
            let value: [u8; 4] = options.get(at + 2..at + 2 + len)?.try_into().ok()?;
            return Some(u32::from_be_bytes(value));
        }
        at += 2 + len;
    }
    None
}

/// An IP header cut off by the snaplen before etherparse would take it (the fixed part, or
/// IPv4 options, incomplete): reads the fixed fields that were captured and sets `truncated`.
fn partial_header(packet: &[u8], m: &mut PacketMeta) -> IpOutcome {
    let byte = |at: usize| packet.get(at).copied();
    let be16 = |at: usize| packet.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (src, dst) = match byte(0).map(|b| b >> 4) {
        Some(4) => {
            m.family = IpFamily::V4;
            m.ip_len = be16(2).map_or(0, u32::from);
            if let Some(flags_offset) = be16(6) {
                let [flags, _] = flags_offset.to_be_bytes();
                m.dont_fragment = flags & IPV4_DF != 0;
                m.fragment = flags & IPV4_MF != 0 || flags_offset & IPV4_FRAG_OFFSET_MASK != 0;
            }
            m.ttl = byte(8).unwrap_or(0);
            m.ip_proto = byte(9).unwrap_or(0);
            (packet.get(12..16), packet.get(16..20))
        }
        Some(6) => {
            m.family = IpFamily::V6;
            m.ip_len = be16(4).map_or(0, |n| u32::from(n) + IPV6_HEADER_LEN);
            m.ip_proto = byte(6).unwrap_or(0);
            m.ttl = byte(7).unwrap_or(0);
            (packet.get(8..24), packet.get(24..40))
        }
        _ => return IpOutcome::NotIp,
    };
    m.truncated = true;
    if let Some(src) = src {
        m.src_addr[..src.len()].copy_from_slice(src);
    }
    if let Some(dst) = dst {
        m.dst_addr[..dst.len()].copy_from_slice(dst);
    }
    if src.is_some() && dst.is_some() { IpOutcome::Cut } else { IpOutcome::NoAddresses }
}
