//! The tunnel extension of a record: the outermost tunnel (VXLAN, Geneve, GRE, IP-in-IP) that
//! the host opened to reach the packet that the rest of the record describes.
//!
//! Input: bytes 96..136 of a record whose batch stride is at least 136 (the `process` comment
//! in `wit/analyzer.wit`). Output: a [`Tunnel`] view that reads them in place, and the
//! [`TunnelKind`] of its kind byte. Nothing here copies or allocates.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use wasmtap_record::TunnelKind;
use wasmtap_record::{RECORD_LEN, TUNNEL_LEN, tunnel_bits, tunnel_offset};

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
