//! Stage: capture.
//!
//! Inputs: a network interface (live, libpcap, one OS thread each: [`live`]) or a pcap/pcapng
//! file ([`replay`]).
//! Outputs: raw frames with their link type and timestamps, decoded on the spot into
//! [`PacketMeta`], labelled with their device and pushed into a [`Batcher`]; packet and drop
//! counts in the self-metrics.
//!
//! The loops here do not allocate, lock or log per packet. Live capture never blocks on the
//! analyzers: the batcher drops and counts when a worker's queue is full.

pub mod live;

use std::path::{Path, PathBuf};

use pcap::{Capture, Linktype, Precision};
use prometheus::IntCounter;

use crate::batch::Batcher;
use crate::decode::{self, LinkType, PacketMeta};
use crate::registry::Devices;

/// Packets read between two progress reports of a replay.
const PROGRESS_EVERY: u64 = 1024;

/// Why a capture could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("interface {0:?} does not exist (see `ip link`)")]
    NoSuchInterface(String),
    #[error(
        "permission denied capturing on {0:?}: capture needs CAP_NET_RAW (and CAP_NET_ADMIN for \
         --promisc): run as root, add the capability to the container (file capabilities set \
         with setcap are ignored under no_new_privs), or setcap cap_net_raw=eip on the binary"
    )]
    PermissionDenied(String),
    #[error("capture filter {filter:?} is invalid: {reason}")]
    Filter { filter: String, reason: String },
    #[error("cannot capture on {iface:?}: {reason}")]
    Open { iface: String, reason: String },
    #[error("{}: no such file", path.display())]
    NoSuchFile { path: PathBuf },
    #[error("{}: cannot read it as a pcap or pcapng capture: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("{}: reading stopped after {packets} packets: {reason}", path.display())]
    Read { path: PathBuf, packets: u64, reason: String },
}

fn ts_ns(h: &pcap::PacketHeader) -> u64 {
    // With nanosecond precision libpcap puts nanoseconds in tv_usec.
    let secs = u64::try_from(h.ts.tv_sec).unwrap_or(0);
    let frac = u64::try_from(h.ts.tv_usec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(frac)
}

/// A frame of a link type we do not decode: counted, never analyzed as IP.
fn undecoded(ts_ns: u64, wire_len: u32) -> PacketMeta {
    PacketMeta { ts_ns, wire_len, ..PacketMeta::default() }
}

fn link_type(l: Linktype) -> Option<LinkType> {
    LinkType::from_dlt(l.0)
}

/// Reads a capture file through the batcher. Returns the number of packets read.
pub fn replay(
    path: &Path,
    batcher: &mut Batcher,
    devices: &Devices,
    received: &IntCounter,
    progress: &dyn Fn(u64),
) -> Result<u64, Error> {
    if !path.exists() {
        return Err(Error::NoSuchFile { path: path.to_owned() });
    }
    let mut cap = Capture::from_file_with_precision(path, Precision::Nano)
        .map_err(|e| Error::BadFile { path: path.to_owned(), reason: e.to_string() })?;
    let link = link_type(cap.get_datalink());
    let name = path
        .file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let device = devices.intern(&name);
    let mut meta = PacketMeta::default();
    let (mut packets, mut bytes) = (0u64, 0u64);
    let result = loop {
        match cap.next_packet() {
            Ok(p) => {
                let ts = ts_ns(p.header);
                match link {
                    Some(link) => {
                        decode::decode(link, ts, p.header.len, p.data, &mut meta);
                    }
                    None => meta = undecoded(ts, p.header.len),
                }
                meta.set_device(device);
                batcher.push(&meta);
                packets += 1;
                // A pcap record header is 16 bytes; close enough for pcapng's progress too.
                bytes += u64::from(p.header.caplen) + 16;
                if packets % PROGRESS_EVERY == 0 {
                    progress(std::mem::take(&mut bytes));
                }
            }
            Err(pcap::Error::NoMorePackets) => break Ok(packets),
            Err(e) => {
                break Err(Error::Read { path: path.to_owned(), packets, reason: e.to_string() });
            }
        }
    };
    progress(bytes);
    received.inc_by(packets);
    result
}
