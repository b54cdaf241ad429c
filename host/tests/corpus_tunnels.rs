//! Tunnels in the capture corpus (issue 19: "extend the fuzz/corpus checks accordingly"). Every
//! capture of the corpus in which tshark shows a tunnel goes through `wasmtap replay`, and
//! 1. per innermost (src, dst) pair, every per-pair series of the default analyzers equals what
//!    tshark shows of the same frames: resets, don't-fragment, window-scale options and the last
//!    shift, data segments and the six TCP expert counters; per device, frames, received, and
//!    the count and sum of the IP-size and TCP-payload histograms;
//! 2. `wasmtap_host_tunnel_packets_total{kind}` and `wasmtap_host_tunnel_undecoded_total{reason}`
//!    equal the tunnel layers tshark shows, counted by the rules of the README's "Tunnels".
//!
//! The per-pair round-trip histograms (`wasmtap_tcp_ack_rtt_seconds`,
//! `wasmtap_tcp_handshake_seconds`) of these captures are compared with tshark's values in
//! `corpus_rtt.rs`, whose list holds every tunnelled capture in which tshark shows one.
//!
//! tshark reads each capture once (`-T json`, with `-d udp.port==8472,vxlan` as the README says to
//! compare), and its layers, in order, are the oracle. Where the README says that the host's view
//! of a frame is not tshark's innermost packet (a GRE carrying ERSPAN is not opened, nor a tunnel
//! inside a fragment; ARP inside VXLAN is a frame of its own, not IP), [`host_view`] derives the
//! host's view from tshark's layers by that rule, and each [`Rule`] quotes the README. A frame
//! whose view no rule derives (a tunnel header that tshark shows cut, say) fails the test rather
//! than be guessed.
//!
//! The captures are [`TUNNEL_CAPTURES`]: those of tcpdump's tests/ folder (the corpus that
//! `corpus.rs` replays) in which tshark shows a tunnel ([`Frame::tunnels`]). Each must still show
//! one; `every_tunnel_capture_of_the_corpus_is_listed` (ignored: it reads the whole corpus with
//! tshark, about three minutes) finds any that the list misses.
//!
//! Not covered, as tshark shows no tunnel in them:
//! - `bigtcp-*-vxlan-*` and `bigtcp-*-geneve-*`: BIG TCP packets whose IP length field (IPv4
//!   total length, IPv6 payload length without a jumbo option) and UDP length are 0. tshark 4.0
//!   reads no UDP payload in them (IPv4: "Bad length value 0 < 8"), so it shows no tunnel; the
//!   host takes the lengths from the wire and opens the tunnel, as tcpdump's own expected output
//!   for these captures does ("presumed TSO", "presumed BIG TCP").
//! - `nsh-over-vxlan-gpe.pcap`: VXLAN-GPE on UDP 4790, not a port the host opens (or that tshark
//!   calls VXLAN); `mpls-over-udp.pcap`, LISP, Teredo, sFlow and other encapsulations the README
//!   does not list.
//!
//! Without WASMTAP_CORPUS the tests say on stderr that they are skipped and why, unless
//! WASMTAP_REQUIRE_CORPUS=1 makes that a failure, as in `corpus.rs`.

mod common;
mod tcp_analysis;

use common::corpus::{DECODE_AS, captures, corpus_dir_or_skip, in_parallel};
use common::live::{DeviceCounts, device_samples};
use common::tunnel::Kind;
use common::*;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tcp_analysis::{COUNTERS, FLAG_COUNTERS};

/// The captures of tcpdump's tests/ folder in which tshark 4.0 (`-d udp.port==8472,vxlan`) shows
/// a tunnel in at least one frame ([`Frame::tunnels`]), found by reading all 830 with tshark as
/// `every_tunnel_capture_of_the_corpus_is_listed` does.
const TUNNEL_CAPTURES: [&str; 34] = [
    "NHRP-responder-address.pcap",
    "NHRP_registration.pcap",
    "erspan-type-i-1.pcap",
    "erspan-type-i-2.pcap",
    "erspan-type-i-3.pcap",
    "erspan-type-i-4.pcap",
    "erspan-type-ii-1.pcap",
    "erspan-type-ii-2.pcap",
    "erspan-type-ii-3.pcap",
    "erspan-type-iii-ft-0.pcap",
    "erspan-type-iii-ft-7.pcap",
    "erspan-type-iii-pb-1.pcap",
    "esp_truncated.pcap",
    "geneve-gcp.pcap",
    "geneve.pcap",
    "gre-heapoverflow-2.pcap",
    "gso-ipv4-geneve-ipv4.pcap",
    "gso-ipv4-geneve-ipv6.pcap",
    "gso-ipv4-vxlan-ipv4.pcap",
    "gso-ipv4-vxlan-ipv6.pcap",
    "gso-ipv6-geneve-ipv4.pcap",
    "gso-ipv6-geneve-ipv6.pcap",
    "gso-ipv6-vxlan-ipv4.pcap",
    "gso-ipv6-vxlan-ipv6.pcap",
    "ios_nhrp.pcap",
    "ipv6-srh-ext-header.pcap",
    "isis-infinite-loop.pcap",
    "nhrp-trace.pcap",
    "nhrp.pcapng",
    "pptp.pcap",
    "various_gre.pcap",
    "vxlan.pcap",
    "vxlan_port_8472.pcap",
    "wccp_redirect_gre.pcap",
];

/// The per-pair histograms that `corpus_rtt.rs` compares with tshark (their `_bucket`, `_sum`
/// and `_count` series).
const RTT_HISTOGRAMS: [&str; 2] = [common::rtt::ACK_RTT, common::rtt::HANDSHAKE];

/// The host's default VXLAN ports and Geneve's (README, Tunnels, "What is opened").
const VXLAN_PORTS: [u64; 2] = [4789, 8472];
const GENEVE_PORT: u64 = 6081;
/// "up to 3 tunnels inside one another" (README, Tunnels).
const MAX_DEPTH: usize = 3;
/// The payloads a GRE or Geneve header names that the host opens ("What is opened": Ethernet
/// (0x6558), IPv4, IPv6).
const ETHERTYPE_IPV4: u64 = 0x0800;
const ETHERTYPE_IPV6: u64 = 0x86dd;
const ETHERTYPE_TEB: u64 = 0x6558;
/// IP protocols that carry a tunnel.
const IPPROTO_IPV4: u64 = 4;
const IPPROTO_UDP: u64 = 17;
const IPPROTO_IPV6: u64 = 41;
const IPPROTO_GRE: u64 = 47;
/// IPv6 extension headers, by next-header value, and the layer tshark puts each in.
const IPV6_EXTENSIONS: [(u64, &str); 4] =
    [(0, "ipv6.hopopts"), (43, "ipv6.routing"), (44, "ipv6.fraghdr"), (60, "ipv6.dstopts")];

const TUNNEL_PACKETS: &str = "wasmtap_host_tunnel_packets_total";
const TUNNEL_UNDECODED: &str = "wasmtap_host_tunnel_undecoded_total";
/// The one per-pair series that is not in `FLAG_COUNTERS` or `COUNTERS`: a gauge, the shift of
/// the latest window-scale option by packet time (header-flags keeps the later of equal times).
const WSCALE_SHIFT: &str = "wasmtap_tcp_window_scale_shift";
const IP_SIZE: &str = "wasmtap_ip_packet_size_bytes";
const TCP_PAYLOAD: &str = "wasmtap_tcp_payload_size_bytes";

/// Per-capture bound for tshark: the largest listed capture takes a fraction of a second, a
/// large corpus capture in the full scan a few seconds.
const TSHARK_TIMEOUT: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------------------------------
// What the README says the host does with a tunnel

/// The `reason` of `wasmtap_host_tunnel_undecoded_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reason {
    Truncated,
    Malformed,
    Unsupported,
    TooDeep,
}

impl Reason {
    const ALL: [Reason; 4] =
        [Reason::Truncated, Reason::Malformed, Reason::Unsupported, Reason::TooDeep];

    fn label(self) -> &'static str {
        match self {
            Reason::Truncated => "truncated",
            Reason::Malformed => "malformed",
            Reason::Unsupported => "unsupported",
            Reason::TooDeep => "too_deep",
        }
    }
}

/// A rule of the README by which the host's view of a frame is not tshark's innermost packet;
/// [`Rule::readme`] quotes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    /// A GRE or Geneve tunnel whose header names a payload the host does not open: counted
    /// `unsupported`, not under its kind (the table's kinds are what the host opens), and the
    /// analyzers see the carrier. GRE is named by its first four bytes, before any optional
    /// field: a GRE of another version or with routing is not a tunnel of the table, so the
    /// host reads no further, and the reason is `unsupported` even where the capture ends
    /// inside its optional fields (`gre-heapoverflow-2.pcap`).
    Unsupported,
    Malformed,
    Truncated,
    TooDeep,
    Fragment,
    NonIp,
    Carrier,
}

impl Rule {
    /// The rule by which the host counts a tunnel under `reason`.
    fn of(reason: Reason) -> Rule {
        match reason {
            Reason::Truncated => Rule::Truncated,
            Reason::Malformed => Rule::Malformed,
            Reason::Unsupported => Rule::Unsupported,
            Reason::TooDeep => Rule::TooDeep,
        }
    }

    /// The README's words (section "Tunnels").
    fn readme(self) -> &'static str {
        match self {
            Rule::Unsupported => {
                "what is opened: \"`gre` | IP protocol 47, version 0, no routing | Ethernet \
                 (0x6558), IPv4, IPv6\", \"`geneve` | ... | Ethernet, IPv4, IPv6\"; \
                 \"`unsupported` | GRE version 1 (PPTP), GRE with routing, GRE or Geneve \
                 carrying something other than IPv4, IPv6 or Ethernet (ERSPAN, MPLS, NSH, …)\""
            }
            Rule::Malformed => {
                "\"`malformed` | VXLAN without the I flag, a Geneve version other than 0, \
                 options or an inner packet longer than the tunnel carried, an inner header of \
                 another IP version than announced\""
            }
            Rule::Truncated => {
                "\"`truncated` | the capture ends inside a tunnel header or inside the inner \
                 packet's IP, TCP or UDP header\""
            }
            Rule::TooDeep => "\"`too_deep` | a fourth tunnel inside three opened ones\"",
            Rule::Fragment => {
                "\"A tunnel inside a fragment is not opened: the fragment is analysed as it is.\""
            }
            Rule::NonIp => {
                "\"A tunnel whose Ethernet frame carries no IP (ARP inside VXLAN) gives the \
                 analyzers that frame, not IP, as it would be on its own\""
            }
            Rule::Carrier => {
                "\"The analyzers then see the carrier (the last packet read whole)\": a tunnel \
                 inside one that was not opened is not reached"
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Rule::Unsupported => "unsupported",
            Rule::Malformed => "malformed",
            Rule::Truncated => "truncated",
            Rule::TooDeep => "too-deep",
            Rule::Fragment => "in-fragment",
            Rule::NonIp => "non-ip-inside",
            Rule::Carrier => "not-reached",
        }
    }
}

// ------------------------------------------------------------------------------------------
// tshark's reading of a capture

#[derive(Deserialize)]
struct Packet {
    #[serde(rename = "_source")]
    source: Source,
}

#[derive(Deserialize)]
struct Source {
    layers: Node,
}

/// A value of tshark's JSON with every object kept in order, repeated keys included: tshark
/// repeats `eth`, `ip` and so on for each header of a tunnelled frame, inner after outer (a
/// header quoted by ICMP or NHRP stays inside the layer that quotes it), and `_ws.expert` for
/// each expert flag of a TCP header (a fast retransmission is a retransmission too).
#[derive(Debug)]
enum Node {
    Text(String),
    List(Vec<Node>),
    Tree(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value of tshark's JSON")
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Text(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Text(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Text(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Text(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Text(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::List(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Tree(entries))
            }
        }
        d.deserialize_any(Any)
    }
}

/// The first value of `key` anywhere in `n` (a layer's fields nest in subtrees).
fn field<'a>(n: &'a Node, key: &str) -> Option<&'a Node> {
    match n {
        Node::Tree(t) => t
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
            .or_else(|| t.iter().find_map(|(_, v)| field(v, key))),
        Node::List(l) => l.iter().find_map(|x| field(x, key)),
        Node::Text(_) => None,
    }
}

/// The text of the first value of `key` in `n`.
fn text<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    match field(n, key)? {
        Node::Text(s) => Some(s),
        Node::List(l) => match l.first()? {
            Node::Text(s) => Some(s),
            _ => None,
        },
        Node::Tree(_) => None,
    }
}

/// A number as tshark writes it: decimal, or hexadecimal after `0x`.
fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `frame.time_epoch` ("1368908504.925960000") in nanoseconds.
fn epoch_ns(s: &str) -> Option<i128> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let (secs, ns): (i128, i128) = (secs.parse().ok()?, digits.parse().ok()?);
    Some(if s.starts_with('-') { secs * 1_000_000_000 - ns } else { secs * 1_000_000_000 + ns })
}

/// One frame as tshark dissects it.
struct Frame {
    number: u64,
    time_ns: i128,
    layers: Vec<(String, Node)>,
}

/// What the host does with a tunnel header.
enum Step {
    Open(Payload),
    Refuse(Reason, Rule),
}

/// What a tunnel header says follows it.
#[derive(Clone, Copy)]
enum Payload {
    Ethernet,
    Ip(u8),
}

/// What the host makes of the packet inside an opened tunnel.
enum Inner {
    /// An IP packet, at this layer.
    Ip(usize),
    /// An Ethernet frame without IP.
    NonIp,
    /// A packet that cannot be read.
    Refused(Reason, Rule),
}

impl Frame {
    fn new(packet: Packet) -> Result<Frame, String> {
        let Node::Tree(layers) = packet.source.layers else {
            return Err(format!("tshark's layers are not an object: {:?}", packet.source.layers));
        };
        let frame = layers.iter().find(|l| l.0 == "frame").map(|l| &l.1);
        let number = frame.and_then(|f| text(f, "frame.number")).and_then(number);
        let time_ns = frame.and_then(|f| text(f, "frame.time_epoch")).and_then(epoch_ns);
        match (number, time_ns) {
            (Some(number), Some(time_ns)) => Ok(Frame { number, time_ns, layers }),
            _ => Err(format!("a tshark frame without frame.number or frame.time_epoch: {frame:?}")),
        }
    }

    fn name(&self, i: usize) -> &str {
        self.layers.get(i).map_or("", |l| l.0.as_str())
    }

    fn text(&self, i: usize, key: &str) -> Option<&str> {
        text(&self.layers.get(i)?.1, key)
    }

    fn num(&self, i: usize, key: &str) -> Option<u64> {
        self.text(i, key).and_then(number)
    }

    fn flag(&self, i: usize, key: &str) -> Option<bool> {
        self.text(i, key).map(|v| matches!(v, "1" | "True" | "true"))
    }

    /// The version of an `ip` or `ipv6` layer's header. tshark's IPv4 dissector hands a header
    /// of version 6 to its IPv6 one: one header, shown as an `ip` layer of version 6 and an
    /// `ipv6` layer.
    fn ip_version(&self, i: usize) -> Option<u64> {
        match self.name(i) {
            "ip" => self.num(i, "ip.version"),
            "ipv6" => self.num(i, "ipv6.version"),
            _ => None,
        }
    }

    fn is_ip_header(&self, i: usize) -> bool {
        matches!((self.name(i), self.ip_version(i)), ("ip", Some(4)) | ("ipv6", Some(6)))
    }

    fn first_ip(&self) -> Option<usize> {
        (0..self.layers.len()).find(|&i| self.is_ip_header(i))
    }

    /// The protocol after the IP header at `i` and its extension headers.
    fn protocol(&self, i: usize) -> Option<u64> {
        if self.name(i) == "ip" {
            return self.num(i, "ip.proto");
        }
        let mut next = self.num(i, "ipv6.nxt")?;
        for _ in 0..IPV6_EXTENSIONS.len() {
            match IPV6_EXTENSIONS.iter().find(|e| e.0 == next) {
                Some((_, ext)) => next = self.num(i, &format!("{ext}.nxt"))?,
                None => break,
            }
        }
        Some(next)
    }

    /// Whether the IP header at `i` is a fragment (IPv4 MF or offset, an IPv6 fragment header
    /// with either).
    fn fragment(&self, i: usize) -> bool {
        match self.name(i) {
            "ip" => {
                self.flag(i, "ip.flags.mf") == Some(true)
                    || self.num(i, "ip.frag_offset").is_some_and(|o| o != 0)
            }
            _ => {
                self.flag(i, "ipv6.fraghdr.more") == Some(true)
                    || self.num(i, "ipv6.fraghdr.offset").is_some_and(|o| o != 0)
            }
        }
    }

    fn addresses(&self, i: usize) -> Option<(IpAddr, IpAddr)> {
        let (src, dst) =
            if self.name(i) == "ip" { ("ip.src", "ip.dst") } else { ("ipv6.src", "ipv6.dst") };
        Some((self.text(i, src)?.parse().ok()?, self.text(i, dst)?.parse().ok()?))
    }

    /// The IP length the host's IP-size histogram takes: IPv4 total length, IPv6 payload
    /// length + 40 (README, Metrics).
    fn ip_len(&self, i: usize) -> Option<u64> {
        match self.name(i) {
            "ip" => self.num(i, "ip.len"),
            _ => self.num(i, "ipv6.plen").map(|n| n + 40),
        }
    }

    /// The tunnels tshark shows: each VXLAN, Geneve or GRE layer, and each IP header right
    /// after an IP header of protocol 4 or 41; the index of the tunnel's header layer (the
    /// inner IP header for IP-in-IP) and its kind.
    fn tunnels(&self) -> Vec<(usize, Kind)> {
        let mut out = Vec::new();
        for i in 0..self.layers.len() {
            let kind = match self.name(i) {
                "vxlan" => Some((i, Kind::Vxlan)),
                "geneve" => Some((i, Kind::Geneve)),
                "gre" => Some((i, Kind::Gre)),
                _ if self.is_ip_header(i) && matches!(self.name(i + 1), "ip" | "ipv6") => {
                    match self.protocol(i) {
                        Some(IPPROTO_IPV4) => Some((i + 1, Kind::Ipv4InIp)),
                        Some(IPPROTO_IPV6) => Some((i + 1, Kind::Ipv6InIp)),
                        _ => None,
                    }
                }
                _ => None,
            };
            out.extend(kind);
        }
        out
    }

    /// The tunnel the host looks for after the IP header at `at`, by its protocol and UDP
    /// ports (README, "What is opened"), and the layer where tshark shows its header.
    fn tunnel_after(&self, at: usize) -> Option<(Kind, usize)> {
        match self.protocol(at)? {
            IPPROTO_UDP if self.name(at + 1) == "udp" => {
                let ports = [self.num(at + 1, "udp.srcport"), self.num(at + 1, "udp.dstport")];
                let either = |port: u64| ports.contains(&Some(port));
                if VXLAN_PORTS.into_iter().any(either) {
                    Some((Kind::Vxlan, at + 2))
                } else if either(GENEVE_PORT) {
                    Some((Kind::Geneve, at + 2))
                } else {
                    None
                }
            }
            IPPROTO_GRE => Some((Kind::Gre, at + 1)),
            IPPROTO_IPV4 => Some((Kind::Ipv4InIp, at + 1)),
            IPPROTO_IPV6 => Some((Kind::Ipv6InIp, at + 1)),
            _ => None,
        }
    }

    /// What the host does with the tunnel header that tshark shows at layer `at`.
    fn header(&self, kind: Kind, at: usize) -> Result<Step, String> {
        let by_ether_type = |key: &str| match self.num(at, key) {
            Some(ETHERTYPE_TEB) => Ok(Some(Payload::Ethernet)),
            Some(ETHERTYPE_IPV4) => Ok(Some(Payload::Ip(4))),
            Some(ETHERTYPE_IPV6) => Ok(Some(Payload::Ip(6))),
            Some(_) => Ok(None),
            None => Err(format!("tshark shows no {key}")),
        };
        let refuse = |reason| Ok(Step::Refuse(reason, Rule::of(reason)));
        // For IP-in-IP, `at` is the inner IP header itself, which `inner` reads.
        let ip_in_ip = matches!(kind, Kind::Ipv4InIp | Kind::Ipv6InIp);
        let cut = !ip_in_ip && self.name(at + 1).starts_with("_ws.");
        if cut && kind != Kind::Gre {
            return Err(format!(
                "tshark shows the {} header cut or malformed ({}): no rule says whether the host \
                 reads it whole",
                kind.label(),
                self.name(at + 1)
            ));
        }
        let payload = match kind {
            Kind::Vxlan => match self.flag(at, "vxlan.flag_i") {
                Some(true) => Payload::Ethernet,
                Some(false) => return refuse(Reason::Malformed),
                None => return Err("tshark shows no vxlan.flag_i".into()),
            },
            Kind::Geneve => {
                if self.num(at, "geneve.version") != Some(0) {
                    return refuse(Reason::Malformed);
                }
                match by_ether_type("geneve.proto_type")? {
                    Some(p) => p,
                    None => return refuse(Reason::Unsupported),
                }
            }
            Kind::Gre => {
                let version = self.num(at, "gre.flags.version");
                if version.is_none() {
                    return Err("tshark shows no gre.flags.version".into());
                }
                if version != Some(0) || self.flag(at, "gre.flags.routing") == Some(true) {
                    return refuse(Reason::Unsupported);
                }
                let Some(payload) = by_ether_type("gre.proto")? else {
                    return refuse(Reason::Unsupported);
                };
                if cut {
                    return Err(format!(
                        "tshark shows the GRE header cut or malformed ({}): no rule says whether \
                         the host reads it whole",
                        self.name(at + 1)
                    ));
                }
                payload
            }
            Kind::Ipv4InIp => Payload::Ip(4),
            Kind::Ipv6InIp => Payload::Ip(6),
        };
        Ok(Step::Open(payload))
    }

    /// What the host makes of the packet inside the tunnel whose header tshark shows at `at`.
    fn inner(&self, kind: Kind, at: usize, payload: Payload) -> Result<Inner, String> {
        let ip_in_ip = matches!(kind, Kind::Ipv4InIp | Kind::Ipv6InIp);
        let mut i = if ip_in_ip { at } else { at + 1 };
        let announced = match payload {
            Payload::Ethernet => {
                if self.name(i) != "eth" || self.name(i + 1).starts_with("_ws.") {
                    return Err(format!(
                        "after the {} header tshark shows {:?} then {:?}, not a whole Ethernet \
                         header",
                        kind.label(),
                        self.name(i),
                        self.name(i + 1)
                    ));
                }
                i += 1;
                while self.name(i) == "vlan" {
                    i += 1;
                }
                if !matches!(self.name(i), "ip" | "ipv6") {
                    return Ok(Inner::NonIp);
                }
                None
            }
            Payload::Ip(version) => Some(u64::from(version)),
        };
        let version = self.ip_version(i);
        if announced.is_some_and(|a| version != Some(a)) {
            return Ok(Inner::Refused(Reason::Malformed, Rule::Malformed));
        }
        if self.name(i) == "ip" && version == Some(6) && self.name(i + 1) == "ipv6" {
            i += 1;
        }
        if !self.is_ip_header(i) {
            return Err(format!("tshark shows {:?} inside the {}", self.name(i), kind.label()));
        }
        if self.addresses(i).is_none() {
            return if self.name(i + 1) == "_ws.short" {
                Ok(Inner::Refused(Reason::Truncated, Rule::Truncated))
            } else {
                Err(format!("tshark shows the {} inner IP header without addresses", kind.label()))
            };
        }
        Ok(Inner::Ip(i))
    }
}

/// What the host must make of one frame, derived from tshark's layers by the README's rules.
#[derive(Debug, Default)]
struct View {
    /// The tunnel headers read whole, outermost first (layer, kind): what
    /// `wasmtap_host_tunnel_packets_total` counts.
    opened: Vec<(usize, Kind)>,
    /// Why the last tunnel, or the packet inside it, was not opened.
    fault: Option<Reason>,
    /// The layer whose IP header the record describes; `None` when the analyzers see no IP.
    ip: Option<usize>,
    /// The README's rules by which this view is not tshark's innermost packet.
    rules: Vec<Rule>,
}

/// The host's view of frame `f`: it starts at the outermost IP header and opens the tunnel
/// after it, and the one after that, as README "Tunnels" says, reading each header from tshark's
/// layer for it. Every tunnel layer that tshark shows must be opened or left by a rule.
fn host_view(f: &Frame) -> Result<View, String> {
    let shown = f.tunnels();
    let mut v = View::default();
    let Some(mut at) = f.first_ip() else {
        return match shown.first() {
            None => Ok(v),
            Some(t) => Err(format!("tshark shows a {} but no IP header before it", t.1.label())),
        };
    };
    v.ip = Some(at);
    // The tunnel header where the host stopped, when it stopped at one.
    let mut stop = None;
    while let Some((kind, header)) = f.tunnel_after(at) {
        if f.fragment(at) {
            v.rules.push(Rule::Fragment);
            stop = Some(header);
            break;
        }
        if !shown.contains(&(header, kind)) {
            return Err(format!(
                "the host reads a {} header where tshark shows {:?}",
                kind.label(),
                f.name(header)
            ));
        }
        let payload = match f.header(kind, header)? {
            Step::Open(payload) => payload,
            Step::Refuse(reason, rule) => {
                (v.fault, stop) = (Some(reason), Some(header));
                v.rules.push(rule);
                break;
            }
        };
        if v.opened.len() == MAX_DEPTH {
            (v.fault, stop) = (Some(Reason::TooDeep), Some(header));
            v.rules.push(Rule::TooDeep);
            break;
        }
        v.opened.push((header, kind));
        match f.inner(kind, header, payload)? {
            Inner::Ip(i) => (at, v.ip) = (i, Some(i)),
            Inner::NonIp => {
                (v.ip, stop) = (None, Some(header));
                v.rules.push(Rule::NonIp);
                break;
            }
            Inner::Refused(reason, rule) => {
                (v.fault, stop) = (Some(reason), Some(header));
                v.rules.push(rule);
                break;
            }
        }
    }
    if let Some(at) = v.ip.filter(|_| !v.opened.is_empty())
        && matches!(f.name(at + 1), "tcp" | "udp")
        && f.name(at + 2).starts_with("_ws.")
    {
        return Err(format!(
            "tshark shows the inner {} header cut or malformed: no rule says which of its fields \
             the host reads",
            f.name(at + 1)
        ));
    }
    for &(i, kind) in &shown {
        if v.opened.contains(&(i, kind)) || stop == Some(i) {
            continue;
        }
        match stop {
            Some(s) if i > s => v.rules.push(Rule::Carrier),
            _ => {
                return Err(format!(
                    "tshark shows a {} (layer {i}) that no rule of the README leaves unopened",
                    kind.label()
                ));
            }
        }
    }
    Ok(v)
}

// ------------------------------------------------------------------------------------------
// The expected values of one capture

/// Per (src, dst).
type ByPair = BTreeMap<(IpAddr, IpAddr), u64>;

/// What the host must export for one capture, from tshark's reading of it.
#[derive(Default)]
struct Expected {
    frames: u64,
    /// Count and sum of the IP-size and TCP-payload histograms.
    ip_size: (u64, u64),
    tcp_payload: (u64, u64),
    /// Tunnel layers tshark shows, by kind.
    shown: BTreeMap<Kind, u64>,
    kinds: BTreeMap<Kind, u64>,
    reasons: BTreeMap<Reason, u64>,
    rules: BTreeMap<Rule, u64>,
    /// Per per-pair counter, the frames showing its tshark field in the host's view.
    pairs: BTreeMap<&'static str, ByPair>,
    /// The latest window-scale shift per pair: (time, frame number, shift).
    shift: BTreeMap<(IpAddr, IpAddr), (i128, u64, u64)>,
    /// tshark's TCP streams, by frames whose TCP header the host sees and frames whose it does
    /// not (inside a tunnel it does not open): tshark's expert analysis of a stream seen in
    /// part is not the host's.
    seen_streams: BTreeMap<u64, Vec<u64>>,
    unseen_streams: BTreeMap<u64, Vec<u64>>,
    /// Frames whose view no rule derives.
    underived: Vec<String>,
}

/// A per-pair counter's tshark field or filter, as `FLAG_COUNTERS` and `COUNTERS` give it
/// (`field`, `field==value` or `field > value`), evaluated on the layer the host's record takes
/// it from: an `ip.*` field on its IP header (IPv4 only), a `tcp.*` field on the TCP header
/// after it. A field of a header the host does not see (an outer IPv4 header's DF, a TCP
/// segment quoted by ICMP) does not count.
fn shows(f: &Frame, ip: usize, tcp: Option<usize>, filter: &str) -> bool {
    let (key, test) = if let Some((k, v)) = filter.split_once("==") {
        (k.trim(), Some(("==", v.trim())))
    } else if let Some((k, v)) = filter.split_once('>') {
        (k.trim(), Some((">", v.trim())))
    } else {
        (filter.trim(), None)
    };
    let layer = match key.split('.').next() {
        Some("ip") => Some(ip).filter(|&i| f.name(i) == "ip"),
        Some("tcp") => tcp,
        _ => panic!("no layer of the host's record for the tshark filter {filter:?}"),
    };
    let Some(value) = layer.and_then(|l| f.text(l, key)) else { return false };
    match test {
        None => true,
        Some(("==", "1")) => matches!(value, "1" | "True" | "true"),
        Some(("==", want)) => value == want,
        Some((_, min)) => number(value).zip(number(min)).is_some_and(|(v, m)| v > m),
    }
}

impl Expected {
    fn of(frames: &[Frame]) -> Expected {
        let mut e = Expected::default();
        for f in frames {
            e.frames += 1;
            for (_, kind) in f.tunnels() {
                *e.shown.entry(kind).or_default() += 1;
            }
            match host_view(f) {
                Ok(v) => e.add(f, &v),
                Err(why) => e.underived.push(format!(
                    "frame {}: {why} (tshark: {})",
                    f.number,
                    f.layers.iter().map(|l| l.0.as_str()).collect::<Vec<_>>().join(":")
                )),
            }
        }
        e
    }

    fn add(&mut self, f: &Frame, v: &View) {
        for &(_, kind) in &v.opened {
            *self.kinds.entry(kind).or_default() += 1;
        }
        if let Some(reason) = v.fault {
            *self.reasons.entry(reason).or_default() += 1;
        }
        for &rule in &v.rules {
            *self.rules.entry(rule).or_default() += 1;
        }
        let tcp = v.ip.map(|ip| ip + 1).filter(|&t| f.name(t) == "tcp");
        for (i, layer) in f.layers.iter().enumerate().filter(|l| l.1.0 == "tcp") {
            let streams =
                if Some(i) == tcp { &mut self.seen_streams } else { &mut self.unseen_streams };
            if let Some(s) = text(&layer.1, "tcp.stream").and_then(number) {
                streams.entry(s).or_default().push(f.number);
            }
        }
        let Some(ip) = v.ip else { return };
        let Some(pair) = f.addresses(ip) else {
            let why = "the IP header the host reads has no addresses in tshark";
            return self.underived.push(format!("frame {}: {why}", f.number));
        };
        match f.ip_len(ip) {
            Some(len) => {
                self.ip_size.0 += 1;
                self.ip_size.1 += len;
            }
            None => self.underived.push(format!("frame {}: no IP length in tshark", f.number)),
        }
        if let Some(t) = tcp {
            self.tcp_payload.0 += 1;
            self.tcp_payload.1 += f.num(t, "tcp.len").unwrap_or(0);
            if let Some(shift) = f.num(t, "tcp.options.wscale.shift") {
                let latest = self.shift.entry(pair).or_insert((f.time_ns, f.number, shift));
                if f.time_ns >= latest.0 {
                    *latest = (f.time_ns, f.number, shift);
                }
            }
        }
        for &(metric, filter) in FLAG_COUNTERS.iter().chain(&COUNTERS) {
            if shows(f, ip, tcp, filter) {
                *self.pairs.entry(metric).or_default().entry(pair).or_default() += 1;
            }
        }
    }

    /// The host's exposition of the capture replayed as `device`, against these: one line per
    /// difference, and a line per frame whose view no rule derives.
    fn mismatches(&self, device: &str, samples: &[Sample]) -> Vec<String> {
        let mut out = self.underived.clone();
        let on = device_samples(samples, device);
        let c = DeviceCounts::of(samples, device);
        if c.packets != self.frames || c.received != self.frames || c.dropped_total() != 0 {
            out.push(format!("tshark has {} frames, the host {c}", self.frames));
        }
        let count = |name: &str| as_count(value_of(&on, name, &[]).unwrap_or(0.0), name);
        for (histogram, (n, sum)) in [(IP_SIZE, self.ip_size), (TCP_PAYLOAD, self.tcp_payload)] {
            let host = (count(&format!("{histogram}_count")), count(&format!("{histogram}_sum")));
            if host != (n, sum) {
                out.push(format!(
                    "{histogram}: count and sum {n} and {sum} by tshark, {} and {} by the host",
                    host.0, host.1
                ));
            }
        }
        let labelled = |name: &str, key: &str, value: &str| {
            as_count(value_of(&on, name, &[(key, value)]).unwrap_or(0.0), name)
        };
        for kind in Kind::ALL {
            let want = self.kinds.get(&kind).copied().unwrap_or(0);
            let host = labelled(TUNNEL_PACKETS, "kind", kind.label());
            if host != want {
                out.push(format!(
                    "{TUNNEL_PACKETS}{{kind={:?}}}: {want} by tshark, {host} by the host",
                    kind.label()
                ));
            }
        }
        for reason in Reason::ALL {
            let want = self.reasons.get(&reason).copied().unwrap_or(0);
            let host = labelled(TUNNEL_UNDECODED, "reason", reason.label());
            if host != want {
                out.push(format!(
                    "{TUNNEL_UNDECODED}{{reason={:?}}}: {want} by tshark, {host} by the host",
                    reason.label()
                ));
            }
        }
        let known_kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.label()).collect();
        let known_reasons: Vec<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
        for s in &on {
            let odd = |key: &str, known: &[&str]| {
                s.labels.get(key).is_some_and(|v| !known.contains(&v.as_str()))
            };
            if (s.name == TUNNEL_PACKETS && odd("kind", &known_kinds))
                || (s.name == TUNNEL_UNDECODED && odd("reason", &known_reasons))
            {
                out.push(format!("a tunnel series this test does not know: {s:?}"));
            }
        }
        let mut per_pair: Vec<(&str, ByPair)> = FLAG_COUNTERS
            .iter()
            .chain(&COUNTERS)
            .map(|&(metric, _)| (metric, self.pairs.get(metric).cloned().unwrap_or_default()))
            .collect();
        per_pair.push((WSCALE_SHIFT, self.shift.iter().map(|(p, s)| (*p, s.2)).collect()));
        for (metric, want) in &per_pair {
            let host = sum_by_pair(&on, metric);
            for pair in want.keys().chain(host.keys()).collect::<BTreeSet<_>>() {
                let (w, h) = (want.get(pair).copied(), host.get(pair).copied());
                if w != h {
                    out.push(format!(
                        "{metric}{{{} -> {}}}: {} by tshark, {} by the host",
                        pair.0,
                        pair.1,
                        w.map_or("none".into(), |w| w.to_string()),
                        h.map_or("none".into(), |h| h.to_string())
                    ));
                }
            }
        }
        for s in on.iter().filter(|s| s.labels.contains_key("src_ip")) {
            let compared_in_corpus_rtt = RTT_HISTOGRAMS.iter().any(|h| s.name.starts_with(h));
            if !compared_in_corpus_rtt && !per_pair.iter().any(|(m, _)| *m == s.name) {
                out.push(format!("a per-pair series this test has no tshark field for: {s:?}"));
            }
        }
        for (stream, seen) in &self.seen_streams {
            if let Some(unseen) = self.unseen_streams.get(stream) {
                out.push(format!(
                    "tshark's TCP stream {stream} is in frames whose TCP the host sees ({seen:?}) \
                     and in frames inside a tunnel it does not open ({unseen:?}): its expert \
                     analysis cannot be the host's"
                ));
            }
        }
        out
    }

    /// One line: tshark's tunnel layers, what the host must count by the README's rules, and
    /// which rules applied.
    fn summary(&self) -> String {
        let list = |m: Vec<(&str, u64)>| {
            if m.is_empty() {
                "-".to_string()
            } else {
                m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
            }
        };
        let shown = list(self.shown.iter().map(|(k, n)| (k.label(), *n)).collect());
        let mut host: Vec<(&str, u64)> = self.kinds.iter().map(|(k, n)| (k.label(), *n)).collect();
        host.extend(self.reasons.iter().map(|(r, n)| (r.label(), *n)));
        let rules = list(self.rules.iter().map(|(r, n)| (r.name(), *n)).collect());
        let series: usize =
            self.pairs.values().map(BTreeMap::len).sum::<usize>() + self.shift.len();
        format!(
            "{:>4} frames | tshark: {shown} | host must count: {} | rules: {rules} | {series} \
             per-pair series",
            self.frames,
            list(host)
        )
    }
}

// ------------------------------------------------------------------------------------------
// Running tshark and the host

/// tshark's frames of `file`, every layer in order.
fn tshark_frames(file: &Path) -> Result<Vec<Frame>, String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file).args(DECODE_AS).args(["-T", "json"]);
    let r = run_with_timeout(&mut cmd, TSHARK_TIMEOUT);
    if !r.success() {
        return Err(format!("tshark -T json failed: {}", r.describe()));
    }
    let packets: Vec<Packet> =
        serde_json::from_str(&r.stdout).map_err(|e| format!("tshark's JSON: {e}"))?;
    packets.into_iter().map(Frame::new).collect()
}

/// One capture checked: its summary line and its differences.
struct Checked {
    name: String,
    summary: String,
    rules: BTreeSet<Rule>,
    problems: Vec<String>,
}

fn check_capture(file: &Path, dir: &TempDir) -> Checked {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let frames = match tshark_frames(file) {
        Ok(frames) => frames,
        Err(why) => {
            let problems = vec![why];
            return Checked { name, summary: String::new(), rules: BTreeSet::new(), problems };
        }
    };
    let expected = Expected::of(&frames);
    let samples = parse_exposition(&replay_to_text(file, &[], dir));
    let mut problems = expected.mismatches(&name, &samples);
    if expected.shown.is_empty() {
        problems.push("tshark shows no tunnel in it: take it out of TUNNEL_CAPTURES".into());
    }
    let rules = expected.rules.keys().copied().collect();
    Checked { summary: expected.summary(), name, rules, problems }
}

#[test]
fn tunnelled_corpus_captures_replay_as_tshark_reads_them() {
    let test = "tunnelled_corpus_captures_replay_as_tshark_reads_them";
    let Some(corpus) = corpus_dir_or_skip(test) else { return };
    require_tools(&["tshark"]);
    assert!(corpus.is_dir(), "WASMTAP_CORPUS={} is not a directory", corpus.display());
    let files: Vec<PathBuf> = TUNNEL_CAPTURES.iter().map(|n| corpus.join(n)).collect();
    let missing: Vec<&PathBuf> = files.iter().filter(|f| !f.is_file()).collect();
    assert!(
        missing.is_empty(),
        "WASMTAP_CORPUS={} lacks captures of tcpdump's tests/ folder that this test reads: {missing:?}",
        corpus.display()
    );
    let start = Instant::now();
    let dir = TempDir::new("corpus-tunnels");
    let checked = in_parallel(&files, |f| check_capture(f, &dir));
    let mut report = String::new();
    let mut failures = Vec::new();
    let mut rules = BTreeSet::new();
    for c in &checked {
        let verdict = if c.problems.is_empty() { "ok" } else { "MISMATCH" };
        let _ = writeln!(report, "  {:<28} {} | {verdict}", c.name, c.summary);
        failures.extend(c.problems.iter().map(|p| format!("{}: {p}", c.name)));
        rules.extend(c.rules.iter().copied());
    }
    let _ = writeln!(report, "\nREADME rules applied (section \"Tunnels\"):");
    for rule in rules {
        let _ = writeln!(report, "  {:<14} {}", rule.name(), rule.readme());
    }
    println!(
        "\ntunnelled corpus captures: {} replayed and compared with tshark in {:.1?}\n{report}",
        checked.len(),
        start.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} differences between the host and tshark's reading by the README's rules:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Whether tshark's protocol list of a frame (`frame.protocols`) may hold a tunnel: a VXLAN,
/// Geneve or GRE layer, or an IP header right after another (IPv6 extension headers between).
fn may_hold_tunnel(protocols: &str) -> bool {
    let layers: Vec<&str> = protocols.split(':').filter(|l| !l.starts_with("ipv6.")).collect();
    layers.iter().any(|l| matches!(*l, "vxlan" | "geneve" | "gre"))
        || layers.windows(2).any(|w| w.iter().all(|l| matches!(*l, "ip" | "ipv6")))
}

#[test]
#[ignore = "reads every capture of WASMTAP_CORPUS with tshark (about three minutes): run it \
            with --ignored when the corpus changes"]
fn every_tunnel_capture_of_the_corpus_is_listed() {
    let test = "every_tunnel_capture_of_the_corpus_is_listed";
    let Some(corpus) = corpus_dir_or_skip(test) else { return };
    require_tools(&["tshark"]);
    let start = Instant::now();
    let files = captures(&corpus);
    // A cheap pass over every capture (tolerating captures tshark reads only in part), then
    // the JSON reading of the candidates.
    let found = in_parallel(&files, |file| {
        let mut cmd = Command::new("tshark");
        cmd.arg("-n").arg("-r").arg(file).args(DECODE_AS);
        cmd.args(["-T", "fields", "-e", "frame.protocols"]);
        let r = run_with_timeout(&mut cmd, TSHARK_TIMEOUT);
        if !r.stdout.lines().any(may_hold_tunnel) {
            return Ok(None);
        }
        let frames = tshark_frames(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let tunnelled = frames.iter().any(|f| !f.tunnels().is_empty());
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        Ok(name.filter(|_| tunnelled))
    });
    let errors: Vec<String> = found.iter().filter_map(|r| r.clone().err()).collect();
    let found: BTreeSet<String> = found.into_iter().filter_map(|r| r.ok().flatten()).collect();
    let listed: BTreeSet<String> = TUNNEL_CAPTURES.iter().map(|s| s.to_string()).collect();
    println!(
        "{} of {} captures show a tunnel in tshark ({:.1?}): {found:?}",
        found.len(),
        files.len(),
        start.elapsed()
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let unlisted: Vec<&String> = found.difference(&listed).collect();
    let stale: Vec<&String> = listed.difference(&found).collect();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "TUNNEL_CAPTURES is not the corpus's list: add {unlisted:?}, remove {stale:?}"
    );
}
