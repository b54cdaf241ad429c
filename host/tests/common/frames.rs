//! Hand-built frames and the pcap files that carry them, for tests whose expected values come
//! from how their input was built: etherparse's `PacketBuilder` makes the frames (checksums
//! included), `pcap-file` writes them.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};

/// Locally administered MACs that no test interface has: a receiving stack drops the frames
/// without answering.
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// An Ethernet/IPv4 TCP segment with RST|ACK set from `src:sport` to `dst:dport`.
pub fn tcp_reset(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 0)
        .rst()
        .ack(1);
    let mut out = Vec::with_capacity(b.size(0));
    b.write(&mut out, &[]).expect("writing to a Vec cannot fail");
    out
}

/// Writes `frames` to `path` as an Ethernet pcap, one millisecond apart.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let file = std::fs::File::create(path).expect("creating the pcap");
    let mut w = PcapWriter::new(file).expect("writing the pcap header");
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::from_secs(1_700_000_000) + Duration::from_millis(i as u64);
        let len = u32::try_from(f.len()).expect("frame length");
        w.write_packet(&PcapPacket::new(ts, len, f)).expect("writing a packet");
    }
}

/// One reset per source address `base.0.i` (i in `range`) to `dst`: one series per pair in
/// a per-pair family, each updated once.
pub fn resets_from(base: u8, range: std::ops::Range<u32>, dst: Ipv4Addr) -> Vec<Vec<u8>> {
    range
        .map(|i| {
            let [_, _, hi, lo] = i.to_be_bytes();
            tcp_reset(Ipv4Addr::new(10, base, hi, lo), dst, 40_000, 80)
        })
        .collect()
}
