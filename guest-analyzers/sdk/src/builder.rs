//! Building batch bytes by hand, for analyzer unit tests run natively.
//!
//! Input: [`PacketFields`], one per record, every field of layout version 1 spelled out (with a
//! few constructors for the common IPv4/IPv6/TCP cases), and for a tunnelled packet its
//! [`TunnelFields`]. Output: the exact `list<u8>` the host would pass to `process`, which
//! [`crate::Batch::parse`] or [`crate::Runner::process`] take: the header and records are
//! written by `wasmtap-record`, the same code the host writes with.
//!
//! ```
//! use wasmtap_sdk::{Batch, BatchBuilder, PacketFields, tcp_flags};
//! use std::net::Ipv4Addr;
//!
//! let syn = PacketFields::ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
//!     .with_tcp(40000, 443, tcp_flags::SYN)
//!     .with_wscale(7);
//! let bytes = BatchBuilder::new().push(&syn).push(&PacketFields::default()).build();
//! let batch = Batch::parse(&bytes).expect("a valid batch");
//! assert_eq!(batch.len(), 2);
//! assert_eq!(batch.iter().next().and_then(|p| p.wscale()), Some(7));
//! ```
//!
//! A tunnelled packet: [`BatchBuilder::push_tunnelled`] writes the tunnel extension too, in
//! records of stride 136, as the host does.
//!
//! ```
//! use wasmtap_sdk::{Batch, BatchBuilder, PacketFields, TunnelFields, TunnelKind};
//! use wasmtap_sdk::{tcp_flags, tunnel_bits, tunnel_kind};
//! use std::net::{IpAddr, Ipv4Addr};
//!
//! let inner = PacketFields::ipv4(Ipv4Addr::new(10, 244, 1, 5), Ipv4Addr::new(10, 244, 2, 7))
//!     .with_tcp(40000, 8080, tcp_flags::SYN);
//! let node_a = Ipv4Addr::new(192, 168, 0, 1);
//! let mut vxlan = TunnelFields {
//!     id: 1,
//!     kind: tunnel_kind::VXLAN,
//!     depth: 1,
//!     bits: tunnel_bits::OUTER_IPV4 | tunnel_bits::ID,
//!     ..TunnelFields::default()
//! };
//! vxlan.outer_src[..4].copy_from_slice(&node_a.octets());
//! vxlan.outer_dst[..4].copy_from_slice(&[192, 168, 0, 2]);
//!
//! let bytes = BatchBuilder::new().push_tunnelled(&inner, &vxlan).build();
//! let batch = Batch::parse(&bytes).expect("a valid batch");
//! assert_eq!(batch.stride(), 136);
//! let t = batch.get(0).and_then(|p| p.tunnel()).expect("a tunnel");
//! assert_eq!((t.kind(), t.id(), t.depth()), (TunnelKind::Vxlan, Some(1), 1));
//! assert_eq!(t.outer_src(), Some(IpAddr::V4(node_a)));
//! ```

use wasmtap_record::{
    BatchHeader, HEADER_LEN, PacketFields, RECORD_LEN, TunnelFields, header_flags, offset,
    tunnel_offset,
};

use crate::batch::{Packet, Tunnel};

impl From<Packet<'_>> for PacketFields {
    /// Reads every field back; `PacketFields::from(p).encode() == *p.raw()`.
    fn from(p: Packet<'_>) -> Self {
        Self {
            time_ns: p.time_ns(),
            flow_id: p.flow_id(),
            src: *p.src_addr_raw(),
            dst: *p.dst_addr_raw(),
            seq: p.seq(),
            ack: p.ack_num(),
            tsval: p.tsval(),
            tsecr: p.tsecr(),
            wire_len: p.wire_len(),
            ip_len: p.ip_len(),
            payload_len: p.payload_len(),
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            window: p.window(),
            mss: p.mss(),
            device: p.device(),
            ip_proto: p.ip_proto(),
            tcp_flags: p.tcp_flags(),
            ttl: p.ttl(),
            wscale: p.raw()[offset::WSCALE],
            packet_bits: p.packet_bits(),
            tcp_options: p.tcp_option_bits(),
            sack_blocks: p.sack_block_count(),
            tcp_header_len: p.tcp_header_len(),
        }
    }
}

impl From<Tunnel<'_>> for TunnelFields {
    /// Reads every field of the extension back, the id even where [`Tunnel::id`] says it is
    /// not valid, so that encoding the result writes `t.raw()` again (its reserved byte zeroed).
    fn from(t: Tunnel<'_>) -> Self {
        let id_at = tunnel_offset::TUNNEL_ID - RECORD_LEN;
        let raw = t.raw();
        Self {
            outer_src: *t.outer_src_raw(),
            outer_dst: *t.outer_dst_raw(),
            id: u32::from_le_bytes([raw[id_at], raw[id_at + 1], raw[id_at + 2], raw[id_at + 3]]),
            kind: t.kind().code(),
            depth: t.depth(),
            bits: t.bits(),
        }
    }
}

/// Accumulates records and writes a complete batch (header + records).
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    stride: u16,
    count: u32,
    records: Vec<u8>,
    flags: u32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty batch with the minimal stride (96).
    pub fn new() -> Self {
        Self { stride: BatchHeader::MIN_STRIDE, count: 0, records: Vec::new(), flags: 0 }
    }

    /// An empty batch whose records are `stride` bytes (raised to 96 if smaller); the extra
    /// bytes are zero, which exercises readers that must skip them.
    pub fn with_stride(stride: u16) -> Self {
        Self { stride: stride.max(BatchHeader::MIN_STRIDE), ..Self::new() }
    }

    /// Sets or clears [`header_flags::HOLD`]: whether the analyzer may hold this call's updates
    /// for a later call, as the host asks while more batches follow.
    pub fn hold(&mut self, hold: bool) -> &mut Self {
        if hold {
            self.flags |= header_flags::HOLD;
        } else {
            self.flags &= !header_flags::HOLD;
        }
        self
    }

    /// Appends one record.
    pub fn push(&mut self, p: &PacketFields) -> &mut Self {
        let at = self.records.len();
        self.records.resize(at + usize::from(self.stride), 0);
        p.encode_into(&mut self.records[at..]);
        self.count = self.count.saturating_add(1);
        self
    }

    /// Appends one record of a packet that came through the tunnel `t`: `p` describes the
    /// innermost packet, `t` the outermost tunnel (written at bytes 96..136, the tunnel
    /// extension). A builder of stride below 136 is widened to 136 first, as the host writes
    /// it; the records already pushed keep their fields and get an extension of zeros (no
    /// tunnel). A wider stride is kept.
    pub fn push_tunnelled(&mut self, p: &PacketFields, t: &TunnelFields) -> &mut Self {
        self.widen(BatchHeader::EXTENDED_STRIDE);
        let at = self.records.len();
        self.push(p);
        t.encode_into(&mut self.records[at..]);
        self
    }

    /// Raises the stride to at least `stride`, moving the records already pushed into records
    /// of the new stride (the added bytes zero).
    fn widen(&mut self, stride: u16) {
        if self.stride >= stride {
            return;
        }
        let (old, new) = (usize::from(self.stride), usize::from(stride));
        let mut records = vec![0; self.records.len() / old * new];
        for (from, to) in self.records.chunks_exact(old).zip(records.chunks_exact_mut(new)) {
            to[..old].copy_from_slice(from);
        }
        self.records = records;
        self.stride = stride;
    }

    /// Number of records pushed.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch bytes, as the host would pass them to `process`.
    pub fn build(&self) -> Vec<u8> {
        let mut out = vec![0; HEADER_LEN];
        BatchHeader { stride: self.stride, count: self.count, flags: self.flags }
            .encode_into(&mut out);
        out.extend_from_slice(&self.records);
        out
    }
}
