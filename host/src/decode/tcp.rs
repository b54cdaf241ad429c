//! Decode stage, transport layer: TCP header and options, and UDP ports.
//!
//! Input: the captured bytes of the IP payload (possibly cut short by the snaplen).
//! Output: the TCP (or UDP port) fields of a [`PacketMeta`].
//!
//! Read by hand rather than with etherparse, which has two limits that matter here:
//! `TcpSlice`/`TcpHeaderSlice` refuse a header whose options the snaplen cut off (we still
//! want the fixed 20 bytes), and `TcpOptionsIterator` stops at the first option kind it does not
//! know (MD5, TCP-AO, MPTCP, Fast Open, experimental), losing e.g. timestamps that follow an MD5
//! signature. Unknown options are skipped by their length byte instead.

use super::PacketMeta;

/// The fixed part of a TCP header; `data offset` counts from here up to 60 bytes.
const TCP_FIXED_LEN: usize = 20;
/// UDP carries its ports in the first 4 bytes, like TCP.
const UDP_PORTS_LEN: usize = 4;

/// End of option list (RFC 9293): the rest of the option space is padding.
const OPT_END: u8 = 0;
/// No-operation: a one-byte filler between options.
const OPT_NOP: u8 = 1;
/// Maximum segment size: kind, len 4, u16.
const OPT_MSS: u8 = 2;
/// Window scale: kind, len 3, shift.
const OPT_WSCALE: u8 = 3;
/// SACK permitted: kind, len 2.
const OPT_SACK_PERMITTED: u8 = 4;
/// SACK: kind, len 2 + 8·n, n (left, right) edge pairs.
const OPT_SACK: u8 = 5;
/// Timestamps: kind, len 10, TSval, TSecr.
const OPT_TIMESTAMPS: u8 = 8;
/// Bytes per SACK block: a left and a right edge, 4 bytes each.
const SACK_BLOCK_LEN: usize = 8;

/// Reads a big-endian u16 at a constant offset of a fixed-size header.
#[inline(always)]
fn be16(b: &[u8; TCP_FIXED_LEN], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at a constant offset of a fixed-size header.
#[inline(always)]
fn be32(b: &[u8; TCP_FIXED_LEN], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Fills the TCP fields of `m` from the captured bytes of a TCP segment whose length per the
/// IP header(s) is `segment_len`. Sets `m.has_tcp` when a TCP header was there: its fixed
/// 20 bytes captured and a data offset of at least 5 words. Options cut off by the snaplen are
/// left absent and set `m.truncated`.
#[inline]
pub(super) fn tcp(segment: &[u8], segment_len: u32, m: &mut PacketMeta) {
    let Some(fixed) = segment.first_chunk::<TCP_FIXED_LEN>() else {
        return;
    };
    let header_len = usize::from(fixed[12] >> 4) * 4;
    if header_len < TCP_FIXED_LEN {
        // A data offset below 5 words is not a TCP header we can trust.
        return;
    }
    m.has_tcp = true;
    m.src_port = be16(fixed, 0);
    m.dst_port = be16(fixed, 2);
    m.seq = be32(fixed, 4);
    m.ack = be32(fixed, 8);
    m.tcp_flags = fixed[13];
    m.window = be16(fixed, 14);
    // At most 15 · 4 = 60, so it fits.
    m.tcp_hdr_len = header_len as u8;
    m.payload_len = segment_len.saturating_sub(u32::from(m.tcp_hdr_len));
    if segment.len() < header_len {
        m.truncated = true;
    }
    let options_end = header_len.min(segment.len());
    if let Some(options) = segment.get(TCP_FIXED_LEN..options_end) {
        parse_options(options, m);
    }
}

/// Walks the TCP options. An option that is cut off or malformed ends the walk; unknown
/// kinds are skipped by their length.
#[inline]
fn parse_options(options: &[u8], m: &mut PacketMeta) {
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            OPT_END => return,
            OPT_NOP => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = options.get(at + 1) else {
            return;
        };
        let len = usize::from(len);
        if len < 2 {
            // A length that does not cover kind and length would never advance.
            return;
        }
        let Some(body) = options.get(at + 2..at + len) else {
            // Cut off by the snaplen (or by the header length): absent.
            return;
        };
        match (kind, body) {
            (OPT_MSS, &[a, b]) => {
                m.mss = u16::from_be_bytes([a, b]);
                m.has_mss = true;
            }
            (OPT_WSCALE, &[shift]) => {
                m.wscale = shift;
                m.has_wscale = true;
            }
            (OPT_SACK_PERMITTED, &[]) => m.sack_permitted = true,
            (OPT_SACK, blocks) if !blocks.is_empty() && blocks.len() % SACK_BLOCK_LEN == 0 => {
                // At most (40 − 2) / 8 = 4 blocks fit in the option space.
                m.sack_blocks = (blocks.len() / SACK_BLOCK_LEN) as u8;
            }
            (OPT_TIMESTAMPS, &[v0, v1, v2, v3, e0, e1, e2, e3]) => {
                m.tsval = u32::from_be_bytes([v0, v1, v2, v3]);
                m.tsecr = u32::from_be_bytes([e0, e1, e2, e3]);
                m.has_timestamps = true;
            }
            // Unknown kinds, and known kinds with a wrong length, are skipped.
            _ => {}
        }
        at += len;
    }
}

/// Fills the ports of a UDP datagram, when its first 4 bytes were captured.
#[inline]
pub(super) fn udp(datagram: &[u8], m: &mut PacketMeta) {
    if let Some(&[s0, s1, d0, d1]) = datagram.first_chunk::<UDP_PORTS_LEN>() {
        m.src_port = u16::from_be_bytes([s0, s1]);
        m.dst_port = u16::from_be_bytes([d0, d1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20-byte header with the given data offset (in bytes) followed by `options`.
    fn segment(header_len: u8, options: &[u8]) -> Vec<u8> {
        let mut s = vec![
            0x30,
            0x39,
            0x01,
            0xbb, // ports 12345 → 443
            0,
            0,
            0,
            100, // seq
            0,
            0,
            0,
            200, // ack
            (header_len / 4) << 4,
            0x12, // SYN|ACK
            0xff,
            0xff, // window
            0,
            0,
            0,
            0, // checksum, urgent
        ];
        s.extend_from_slice(options);
        s
    }

    #[test]
    fn fixed_fields() {
        let mut m = PacketMeta::default();
        tcp(&segment(20, &[]), 120, &mut m);
        assert!(m.has_tcp);
        assert_eq!(m.payload_len, 100);
        assert_eq!((m.src_port, m.dst_port, m.seq, m.ack), (12345, 443, 100, 200));
        assert_eq!((m.tcp_flags, m.window, m.tcp_hdr_len), (0x12, 0xffff, 20));
        assert!(!m.truncated && !m.has_mss && !m.has_timestamps);
    }

    #[test]
    fn unknown_options_are_skipped_not_fatal() {
        // NOP NOP MD5(kind 19, len 18) NOP NOP TS — what etherparse's iterator gives up on.
        let mut opts = vec![1, 1, 19, 18];
        opts.extend_from_slice(&[0xaa; 16]);
        opts.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
        let mut m = PacketMeta::default();
        tcp(&segment(52, &opts), 52, &mut m);
        assert!(m.has_timestamps);
        assert_eq!((m.tsval, m.tsecr), (7, 9));
    }

    #[test]
    fn sack_blocks_and_bad_lengths() {
        let mut opts = vec![1, 1, 5, 26];
        opts.extend_from_slice(&[0x11; 24]);
        let mut m = PacketMeta::default();
        tcp(&segment(48, &opts), 48, &mut m);
        assert_eq!(m.sack_blocks, 3);

        // MSS with length 3 is malformed: skipped. Then a window scale of length 0 ends the walk.
        let mut m = PacketMeta::default();
        tcp(&segment(28, &[2, 3, 5, 3, 0, 3, 3, 7]), 28, &mut m);
        assert!(!m.has_mss);
        assert!(!m.has_wscale && m.wscale == 0, "wscale len 0 must stop the walk");
        assert_eq!(m.tcp_hdr_len, 28);
    }

    #[test]
    fn cut_options_are_absent_and_truncated() {
        // MSS, then a timestamp cut after 4 of its 10 bytes.
        let opts = [2, 4, 0x05, 0xb4, 1, 1, 8, 10, 0, 0];
        let seg = segment(32, &opts);
        let mut m = PacketMeta::default();
        tcp(&seg, 1032, &mut m);
        assert!(m.truncated && m.has_mss && !m.has_timestamps);
        assert_eq!((m.mss, m.tcp_hdr_len, m.seq, m.payload_len), (1460, 32, 100, 1000));
    }

    #[test]
    fn not_a_header() {
        let mut m = PacketMeta::default();
        tcp(&segment(20, &[])[..19], 40, &mut m);
        tcp(&segment(16, &[]), 40, &mut m);
        assert!(!m.has_tcp);
        assert_eq!((m.src_port, m.payload_len), (0, 0));
        udp(&[0, 53], &mut m);
        assert_eq!(m.src_port, 0);
        udp(&[0, 53, 0x30, 0x39], &mut m);
        assert_eq!((m.src_port, m.dst_port), (53, 12345));
    }
}
