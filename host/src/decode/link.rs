//! Decode stage, link layer: strips the capture's link header and finds where the IP packet starts.
//!
//! Input: the raw frame bytes and the capture's [`LinkType`] (from the pcap DLT).
//! Output: a [`Network`] saying whether the frame carries IP, the byte offset of the IP header
//! inside the frame, and the interface index when a Linux SLL2 header carried one.
//!
//! The link headers handled here are fixed-size and trivial, so they are read by hand; the IP
//! layer and everything above it goes to etherparse (see `decode/ip.rs`). etherparse 0.21 has no
//! SLL2 parser, and reading Ethernet/VLAN/SLL by hand too keeps one code path for all of them.

/// Ethernet II header: two MAC addresses and the ether type.
pub(super) const ETHERNET_LEN: usize = 14;
/// One 802.1Q / 802.1ad tag: TCI (2 bytes) followed by the inner ether type.
const VLAN_TAG_LEN: usize = 4;
/// At most this many stacked VLAN tags are skipped (QinQ is 2; a little slack for odd stacks,
/// and a bound so that a frame of nothing but tags cannot loop for long).
const MAX_VLAN_TAGS: usize = 4;
/// Linux "cooked" capture v1 header (DLT_LINUX_SLL); the protocol type is its last 2 bytes.
const SLL_LEN: usize = 16;
/// Offset of the protocol (ether type) field in an SLL v1 header.
const SLL_PROTOCOL_AT: usize = 14;
/// Linux "cooked" capture v2 header (DLT_LINUX_SLL2): protocol (2), reserved (2),
/// interface index (4), ARPHRD (2), packet type (1), address length (1), address (8).
const SLL2_LEN: usize = 20;
/// Offset of the big-endian interface index in an SLL2 header.
const SLL2_IFINDEX_AT: usize = 4;
/// BSD loopback (DLT_NULL / DLT_LOOP) header: a 4-byte address family.
const LOOPBACK_LEN: usize = 4;

/// Ether type of IPv4.
const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ether type of IPv6.
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q customer VLAN tag.
const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad provider (QinQ outer) tag.
const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Pre-standard QinQ outer tag, still emitted by some switches.
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

/// BSD AF_INET: the same value on every BSD and on Linux.
const AF_INET: u32 = 2;
/// AF_INET6 differs by OS: 24 on NetBSD/OpenBSD, 28 on FreeBSD, 30 on macOS; all mean IPv6
/// in a loopback capture, whichever OS wrote the file.
const AF_INET6_VALUES: [u32; 3] = [24, 28, 30];

/// How the capture frames its packets: the pcap link-layer header type, reduced to the
/// handful of framings the decoder understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet II (DLT 1), with any 802.1Q / 802.1ad (QinQ) tags inside.
    Ethernet,
    /// Linux cooked capture v1 (DLT 113), e.g. older `-i any` captures.
    LinuxSll,
    /// Linux cooked capture v2 (DLT 276), `-i any` on libpcap ≥ 1.10; carries the ifindex.
    LinuxSll2,
    /// No link header: the frame starts with an IPv4 or IPv6 header (DLT 12, 14, 101, 228, 229).
    RawIp,
    /// BSD loopback (DLT 0): 4-byte address family in the capturing host's byte order.
    Null,
    /// OpenBSD loopback (DLT 108): 4-byte address family in network byte order.
    Loop,
}

impl LinkType {
    /// Maps a pcap DLT / LINKTYPE number to a link type, or `None` when the decoder does
    /// not understand it (the caller counts such frames as non-IP).
    pub fn from_dlt(dlt: i32) -> Option<LinkType> {
        match dlt {
            0 => Some(LinkType::Null),
            1 => Some(LinkType::Ethernet),
            // DLT_RAW is 12 on most systems and 14 on OpenBSD; files use LINKTYPE_RAW 101,
            // and 228/229 are the IPv4-only and IPv6-only raw types.
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            108 => Some(LinkType::Loop),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            _ => None,
        }
    }
}

/// Where the network layer of a frame is, as found by [`network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Network {
    /// Offset of the first byte after the link header(s), i.e. of the IP header when `is_ip`.
    pub offset: usize,
    /// The link layer says IPv4 or IPv6 follows (for raw IP: always, the IP layer checks).
    pub is_ip: bool,
    /// Interface index from an SLL2 header, 0 otherwise.
    pub ifindex: u32,
}

impl Network {
    /// A frame whose link layer is not followed by IP (or is too short to tell).
    const NON_IP: Network = Network { offset: 0, is_ip: false, ifindex: 0 };
}

/// Reads a big-endian u16 at `at`, or `None` when the frame is too short.
#[inline(always)]
fn be16(data: &[u8], at: usize) -> Option<u16> {
    data.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// Reads 4 bytes at `at`, or `None` when the frame is too short.
#[inline(always)]
fn bytes4(data: &[u8], at: usize) -> Option<[u8; 4]> {
    data.get(at..at + 4).and_then(|b| b.try_into().ok())
}

/// Strips the link header(s) of one frame. Never panics; a frame too short for its link
/// header is reported as non-IP.
#[inline]
pub(super) fn network(link: LinkType, data: &[u8]) -> Network {
    match link {
        LinkType::Ethernet => match be16(data, ETHERNET_LEN - 2) {
            Some(ether_type) => by_ether_type(ether_type, data, ETHERNET_LEN, 0),
            None => Network::NON_IP,
        },
        LinkType::LinuxSll => match be16(data, SLL_PROTOCOL_AT) {
            Some(protocol) => by_ether_type(protocol, data, SLL_LEN, 0),
            None => Network::NON_IP,
        },
        LinkType::LinuxSll2 => {
            if data.len() < SLL2_LEN {
                return Network::NON_IP;
            }
            match (be16(data, 0), bytes4(data, SLL2_IFINDEX_AT)) {
                (Some(protocol), Some(ifindex)) => {
                    by_ether_type(protocol, data, SLL2_LEN, u32::from_be_bytes(ifindex))
                }
                _ => Network::NON_IP,
            }
        }
        LinkType::RawIp => Network { offset: 0, is_ip: true, ifindex: 0 },
        LinkType::Null => match bytes4(data, 0) {
            // The writer's byte order is unknown: address families are small numbers, so
            // whichever reading fits in 16 bits is the right one.
            Some(af) => {
                let le = u32::from_le_bytes(af);
                let family = if le > 0xffff { u32::from_be_bytes(af) } else { le };
                by_family(family)
            }
            None => Network::NON_IP,
        },
        LinkType::Loop => match bytes4(data, 0) {
            Some(af) => by_family(u32::from_be_bytes(af)),
            None => Network::NON_IP,
        },
    }
}

/// Loopback address family → network layer.
#[inline]
fn by_family(family: u32) -> Network {
    let is_ip = family == AF_INET || AF_INET6_VALUES.contains(&family);
    Network { offset: LOOPBACK_LEN, is_ip, ifindex: 0 }
}

/// Follows an ether type (skipping VLAN / QinQ tags) to the network layer that starts at
/// `offset`.
#[inline]
fn by_ether_type(mut ether_type: u16, data: &[u8], mut offset: usize, ifindex: u32) -> Network {
    for _ in 0..=MAX_VLAN_TAGS {
        match ether_type {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => {
                return Network { offset, is_ip: true, ifindex };
            }
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => {
                // The inner ether type is the last 2 bytes of the tag.
                match be16(data, offset + VLAN_TAG_LEN - 2) {
                    Some(inner) => {
                        ether_type = inner;
                        offset += VLAN_TAG_LEN;
                    }
                    None => break,
                }
            }
            _ => break,
        }
    }
    Network { offset, is_ip: false, ifindex }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_dlt_maps_known_types_and_refuses_others() {
        assert_eq!(LinkType::from_dlt(0), Some(LinkType::Null));
        assert_eq!(LinkType::from_dlt(1), Some(LinkType::Ethernet));
        for raw in [12, 14, 101, 228, 229] {
            assert_eq!(LinkType::from_dlt(raw), Some(LinkType::RawIp), "dlt {raw}");
        }
        assert_eq!(LinkType::from_dlt(108), Some(LinkType::Loop));
        assert_eq!(LinkType::from_dlt(113), Some(LinkType::LinuxSll));
        assert_eq!(LinkType::from_dlt(276), Some(LinkType::LinuxSll2));
        // 802.11 radiotap, PPP, NFLOG, negative garbage.
        for other in [127, 9, 239, -1, 100_000] {
            assert_eq!(LinkType::from_dlt(other), None, "dlt {other}");
        }
    }

    #[test]
    fn ethernet_vlan_stacks_and_limits() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x88, 0xa8, 0x00, 0x07, 0x86, 0xdd]);
        let n = network(LinkType::Ethernet, &f);
        assert_eq!(n, Network { offset: 22, is_ip: true, ifindex: 0 });

        // Tag cut in the middle: not IP.
        let n = network(LinkType::Ethernet, &f[..16]);
        assert!(!n.is_ip);

        // More tags than we follow: not IP, and no endless loop.
        let mut many = vec![0u8; 12];
        for _ in 0..(MAX_VLAN_TAGS + 2) {
            many.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
        }
        many.extend_from_slice(&[0x08, 0x00]);
        assert!(!network(LinkType::Ethernet, &many).is_ip);
    }

    #[test]
    fn loopback_families_in_both_byte_orders() {
        assert!(network(LinkType::Null, &[2, 0, 0, 0]).is_ip);
        assert!(network(LinkType::Null, &[0, 0, 0, 2]).is_ip);
        assert!(network(LinkType::Null, &[30, 0, 0, 0]).is_ip);
        assert!(network(LinkType::Null, &[0, 0, 0, 24]).is_ip);
        assert!(!network(LinkType::Null, &[7, 0, 0, 0]).is_ip);
        assert!(network(LinkType::Loop, &[0, 0, 0, 28]).is_ip);
        // DLT_LOOP is always network order.
        assert!(!network(LinkType::Loop, &[2, 0, 0, 0]).is_ip);
        assert!(!network(LinkType::Loop, &[0, 0, 2]).is_ip);
        assert_eq!(network(LinkType::Null, &[2, 0, 0, 0]).offset, 4);
    }

    #[test]
    fn short_link_headers_are_not_ip() {
        for link in [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2] {
            assert!(!network(link, &[0x08, 0x00]).is_ip, "{link:?}");
            assert!(!network(link, &[]).is_ip, "{link:?}");
        }
    }
}
