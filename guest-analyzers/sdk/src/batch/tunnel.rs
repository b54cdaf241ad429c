//! The tunnel extension of a record: the outermost tunnel (VXLAN, Geneve, GRE, IP-in-IP) that
//! the host opened to reach the packet that the rest of the record describes.
//!
//! Input: bytes 96..136 of a record whose batch stride is at least 136 (the `process` comment
//! in `wit/analyzer.wit`). Output: a [`Tunnel`] view that reads them in place, and the
//! [`TunnelKind`] of its kind byte. Nothing here copies or allocates.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wasmtap_record::{RECORD_LEN, TUNNEL_LEN, tunnel_bits, tunnel_kind, tunnel_offset};

use super::u32_at;

// The record's tunnel offsets count from the start of the record; the view holds only the
// extension, so it reads at these (compile-time) differences. Indexing the fixed-size array
// with them needs no bounds check at run time, and an offset past the extension would not
// compile.
const OUTER_SRC: usize = tunnel_offset::OUTER_SRC_ADDR - RECORD_LEN;
const OUTER_DST: usize = tunnel_offset::OUTER_DST_ADDR - RECORD_LEN;
const ID: usize = tunnel_offset::TUNNEL_ID - RECORD_LEN;
const KIND: usize = tunnel_offset::TUNNEL_KIND - RECORD_LEN;
const DEPTH: usize = tunnel_offset::TUNNEL_DEPTH - RECORD_LEN;
const BITS: usize = tunnel_offset::TUNNEL_BITS - RECORD_LEN;

/// The kind of the outermost tunnel (the record's kind byte, offset 132).
///
/// A code this SDK does not name (a newer host's) is carried as [`TunnelKind::Unknown`] rather
/// than refused, so an analyzer built today keeps reading batches from a later host. The enum
/// is non-exhaustive: a later SDK may name more codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TunnelKind {
    /// VXLAN (RFC 7348), on one of the host's VXLAN UDP ports.
    Vxlan,
    /// Geneve (RFC 8926), on UDP 6081.
    Geneve,
    /// GRE version 0 (RFC 2784/2890), with IPv4, IPv6 or Ethernet inside.
    Gre,
    /// IPv4 directly inside IPv4 or IPv6 (IP protocol 4).
    Ipv4InIp,
    /// IPv6 directly inside IPv4 or IPv6 (IP protocol 41).
    Ipv6InIp,
    /// A non-zero code this SDK does not know.
    Unknown(u8),
}

impl TunnelKind {
    /// The kind of a kind byte, or `None` for 0 (no tunnel).
    #[inline]
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            tunnel_kind::NONE => return None,
            tunnel_kind::VXLAN => Self::Vxlan,
            tunnel_kind::GENEVE => Self::Geneve,
            tunnel_kind::GRE => Self::Gre,
            tunnel_kind::IPV4_IN_IP => Self::Ipv4InIp,
            tunnel_kind::IPV6_IN_IP => Self::Ipv6InIp,
            other => Self::Unknown(other),
        })
    }

    /// The kind byte as the record carries it (see [`tunnel_kind`]).
    #[inline]
    pub const fn code(self) -> u8 {
        match self {
            Self::Vxlan => tunnel_kind::VXLAN,
            Self::Geneve => tunnel_kind::GENEVE,
            Self::Gre => tunnel_kind::GRE,
            Self::Ipv4InIp => tunnel_kind::IPV4_IN_IP,
            Self::Ipv6InIp => tunnel_kind::IPV6_IN_IP,
            Self::Unknown(code) => code,
        }
    }

    /// A name for a text label: the `kind` label values of the host's
    /// `wasmtap_host_tunnel_packets_total` (`vxlan`, `geneve`, `gre`, `ipv4_in_ip`,
    /// `ipv6_in_ip`), so an analyzer's series join the host's; `unknown` for every code this
    /// SDK does not name (use [`TunnelKind::code`] to tell them apart).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vxlan => "vxlan",
            Self::Geneve => "geneve",
            Self::Gre => "gre",
            Self::Ipv4InIp => "ipv4_in_ip",
            Self::Ipv6InIp => "ipv6_in_ip",
            Self::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for TunnelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(code) => write!(f, "unknown ({code})"),
            known => f.write_str(known.as_str()),
        }
    }
}

/// The outermost tunnel a packet came through, read in place from the record's extension
/// (see [`crate::Packet::tunnel`]). Everything else in the record describes the innermost
/// packet; this is the view from the captured link, between the two tunnel endpoints (in a
/// cluster, usually two nodes).
#[derive(Clone, Copy)]
pub struct Tunnel<'a> {
    ext: &'a [u8; TUNNEL_LEN],
    kind: TunnelKind,
}

impl fmt::Debug for Tunnel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("kind", &self.kind)
            .field("id", &self.id())
            .field("depth", &self.depth())
            .field("outer_src", &self.outer_src())
            .field("outer_dst", &self.outer_dst())
            .finish()
    }
}

impl<'a> Tunnel<'a> {
    /// The view of an extension, or `None` if its kind byte is 0 (the packet came through no
    /// tunnel).
    #[inline]
    pub(super) fn read(ext: &'a [u8; TUNNEL_LEN]) -> Option<Self> {
        Some(Self { kind: TunnelKind::from_code(ext[KIND])?, ext })
    }

    /// The raw 40 bytes of the extension (record bytes 96..136).
    #[inline]
    pub fn raw(&self) -> &'a [u8; TUNNEL_LEN] {
        self.ext
    }
    /// The outermost tunnel's kind.
    #[inline]
    pub fn kind(&self) -> TunnelKind {
        self.kind
    }
    /// The tunnel bits byte (see [`tunnel_bits`]).
    #[inline]
    pub fn bits(&self) -> u8 {
        self.ext[BITS]
    }
    /// The outermost tunnel's id: the VXLAN or Geneve VNI (24 bits) or the GRE key, if it has
    /// one ([`tunnel_bits::ID`]; a GRE header without a key, or IP-in-IP, has none).
    #[inline]
    pub fn id(&self) -> Option<u32> {
        (self.bits() & tunnel_bits::ID != 0).then(|| u32_at(self.ext, ID))
    }
    /// Tunnel headers opened to reach the packet: 1 for one tunnel, more for a tunnel inside a
    /// tunnel (up to the host's limit of 3).
    #[inline]
    pub fn depth(&self) -> u8 {
        self.ext[DEPTH]
    }
    /// Source address bytes of the outermost IP header, as recorded (IPv4 in the first 4).
    #[inline]
    pub fn outer_src_raw(&self) -> &'a [u8; 16] {
        addr(self.ext, OUTER_SRC)
    }
    /// Destination address bytes of the outermost IP header, as recorded.
    #[inline]
    pub fn outer_dst_raw(&self) -> &'a [u8; 16] {
        addr(self.ext, OUTER_DST)
    }
    /// Source address of the outermost IP header, by the family the tunnel bits name
    /// ([`tunnel_bits::OUTER_IPV4`] or [`tunnel_bits::OUTER_IPV6`]); `None` if they name
    /// neither.
    #[inline]
    pub fn outer_src(&self) -> Option<IpAddr> {
        self.outer_ip(self.outer_src_raw())
    }
    /// Destination address of the outermost IP header, like [`Tunnel::outer_src`].
    #[inline]
    pub fn outer_dst(&self) -> Option<IpAddr> {
        self.outer_ip(self.outer_dst_raw())
    }
    #[inline]
    fn outer_ip(&self, raw: &[u8; 16]) -> Option<IpAddr> {
        // IPv4 first, as for the inner addresses (`Packet::src_ip`).
        if self.bits() & tunnel_bits::OUTER_IPV4 != 0 {
            Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])))
        } else if self.bits() & tunnel_bits::OUTER_IPV6 != 0 {
            Some(IpAddr::V6(Ipv6Addr::from(*raw)))
        } else {
            None
        }
    }
}

/// The 16 address bytes at `at` of the extension.
#[inline]
fn addr(ext: &[u8; TUNNEL_LEN], at: usize) -> &[u8; 16] {
    let (_, tail) = ext.split_at(at);
    // Both address offsets are followed by at least 16 bytes of the 40-byte extension.
    tail.first_chunk::<16>().unwrap_or(&[0; 16])
}
