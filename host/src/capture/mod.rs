//! Stage: capture.
//!
//! Inputs: a network interface (live, libpcap, one OS thread each: [`live`]) or a pcap/pcapng
//! file ([`replay`]).
//! Outputs: raw frames with their link type and timestamps, decoded on the spot into
//! [`PacketMeta`], labelled with their device and pushed into a [`Batcher`]; packet and drop
//! counts in the self-metrics ([`CaptureMetrics`], drops by [`DropReason`]).
//!
//! [`links`] holds the interface table that live captures label packets from, and the
//! selection of interfaces; `interfaces` keeps the table up to date and attaches captures.
//!
//! The loops here do not allocate, lock or log per packet. Live capture never blocks on the
//! analyzers: the batcher drops and counts when a worker's queue is full.

pub mod links;
pub mod live;

use std::path::{Path, PathBuf};

use pcap::{Capture, Linktype, Precision};
use prometheus::{IntCounter, IntCounterVec};

use crate::batch::{Batcher, TunnelCount};
use crate::decode::{self, LinkType, PacketMeta, TunnelKind, Undecoded, VxlanPorts};
use crate::registry::Devices;
use crate::telemetry::{CpuClocks, SelfMetrics};

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

/// Why a packet was lost before analysis, as the `reason` label of
/// `wasmtap_host_packets_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Dropped by the kernel: the capture's ring buffer was full (libpcap's statistics).
    Kernel,
    /// Dropped by the interface or its driver (libpcap's statistics).
    Interface,
    /// Read, but a worker's queue was full: dropped rather than block the capture.
    QueueFull,
}

impl DropReason {
    /// Every reason, each exported for a captured interface from the moment it is attached.
    pub const ALL: [DropReason; 3] =
        [DropReason::Kernel, DropReason::Interface, DropReason::QueueFull];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Kernel => "kernel",
            DropReason::Interface => "interface",
            DropReason::QueueFull => "queue_full",
        }
    }
}

/// The capture stage's self-metrics: packets received and dropped, and tunnels read and left
/// unopened, per device.
pub struct CaptureMetrics {
    /// The capture threads' CPU times.
    pub cpu: CpuClocks,
    received: IntCounterVec,
    dropped: IntCounterVec,
    tunnel_packets: IntCounterVec,
    tunnel_undecoded: IntCounterVec,
}

impl CaptureMetrics {
    pub fn new(m: &SelfMetrics) -> prometheus::Result<Self> {
        Ok(Self {
            cpu: m.cpu_clocks(),
            received: m.counter(
                "wasmtap_host_packets_received_total",
                "Packets read from the source (interface or capture file) and handed to the \
                 analyzers.",
                &["device"],
            )?,
            dropped: m.counter(
                "wasmtap_host_packets_dropped_total",
                "Packets lost before analysis: by the kernel or the interface (libpcap's \
                 statistics) or because a worker's queue was full (read, not received).",
                &["device", "reason"],
            )?,
            tunnel_packets: m.counter(
                "wasmtap_host_tunnel_packets_total",
                "Tunnel headers read whole, by kind (vxlan, geneve, gre, ipv4_in_ip, ipv6_in_ip): \
                 a packet nested two deep counts twice. The analyzers see the innermost packet.",
                &["device", "kind"],
            )?,
            tunnel_undecoded: m.counter(
                "wasmtap_host_tunnel_undecoded_total",
                "Tunnels, or packets inside one, that could not be opened, by reason (truncated, \
                 malformed, unsupported, too_deep); the analyzers see the carrier instead.",
                &["device", "reason"],
            )?,
        })
    }

    /// Adds `n` to a device's tunnel counter for `what`. With `first` (the caller's first tunnel
    /// on this device), every tunnel series of the device appears, each kind and reason at 0
    /// until it happens: only interfaces that carry tunnels (an uplink, not the pods' veths)
    /// have them.
    pub fn tunnels(&self, device: &str, what: TunnelCount, n: u64, first: bool) {
        if first {
            self.show_tunnels(device);
        }
        let counter = match what {
            TunnelCount::Read(kind) => {
                self.tunnel_packets.with_label_values(&[device, kind.as_str()])
            }
            TunnelCount::Undecoded(reason) => {
                self.tunnel_undecoded.with_label_values(&[device, reason.as_str()])
            }
        };
        counter.inc_by(n);
    }

    /// Exports every tunnel series of `device` (at 0 until something happens).
    fn show_tunnels(&self, device: &str) {
        for kind in TunnelKind::KNOWN {
            self.tunnel_packets.with_label_values(&[device, kind.as_str()]);
        }
        for reason in Undecoded::ALL {
            self.tunnel_undecoded.with_label_values(&[device, reason.as_str()]);
        }
    }

    /// Packets of `device` handed to the analyzers.
    pub fn received(&self, device: &str) -> IntCounter {
        self.received.with_label_values(&[device])
    }

    /// Packets of `device` lost for `reason`.
    pub fn dropped(&self, device: &str, reason: DropReason) -> IntCounter {
        self.dropped.with_label_values(&[device, reason.as_str()])
    }

    /// Drops the series of a device that is gone (its counters restart from 0 if it comes
    /// back).
    pub fn forget(&self, device: &str) {
        let _ = self.received.remove_label_values(&[device]);
        for reason in DropReason::ALL {
            let _ = self.dropped.remove_label_values(&[device, reason.as_str()]);
        }
        for kind in TunnelKind::KNOWN {
            let _ = self.tunnel_packets.remove_label_values(&[device, kind.as_str()]);
        }
        for reason in Undecoded::ALL {
            let _ = self.tunnel_undecoded.remove_label_values(&[device, reason.as_str()]);
        }
    }
}

fn link_type(l: Linktype) -> Option<LinkType> {
    LinkType::from_dlt(l.0)
}

/// Reads a capture file through the batcher, its device named after the file, and counts its
/// packets and tunnels in `metrics`. Returns the number of packets read.
pub fn replay(
    path: &Path,
    batcher: &mut Batcher,
    devices: &Devices,
    vxlan: &VxlanPorts,
    metrics: &CaptureMetrics,
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
    let received = metrics.received(&name);
    let mut meta = PacketMeta::default();
    let (mut packets, mut bytes) = (0u64, 0u64);
    let result = loop {
        match cap.next_packet() {
            Ok(p) => {
                let ts = ts_ns(p.header);
                match link {
                    Some(link) => {
                        decode::decode(link, ts, p.header.len, p.data, vxlan, &mut meta);
                    }
                    None => meta = PacketMeta::non_ip(ts, p.header.len),
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
    // One device per file: its first tally shows its tunnel series.
    let mut first = true;
    batcher.take_tunnel_tally(|d, what, n| {
        metrics.tunnels(&devices.name(d), what, n, std::mem::take(&mut first));
    });
    result
}
