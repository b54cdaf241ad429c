//! Stage: capture.
//!
//! Inputs: a network interface (live, libpcap, one OS thread each) or a pcap/pcapng file.
//! Outputs: raw frames with their link type and timestamps, decoded on the spot into
//! [`PacketMeta`] and pushed into a [`Batcher`]; packet and drop counts in the self-metrics.
//!
//! The loops here do not allocate, lock or log per packet. Live capture never blocks on the
//! analyzers: the batcher drops and counts when a worker's queue is full.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use pcap::{Active, Capture, Linktype, Precision};
use prometheus::IntCounter;

use crate::batch::Batcher;
use crate::decode::{self, LinkType, PacketMeta};
use crate::registry::Devices;
use crate::telemetry::Telemetry;

/// How long libpcap may hold packets before handing them over: bounds metric latency for a
/// trickle of traffic (with the batch age, under DESIGN's 100 ms) at no cost under load.
const READ_TIMEOUT_MS: i32 = 50;
/// Kernel ring buffer per interface: ≈1 s of a 100k packets/s interface at the default snaplen.
const KERNEL_BUFFER_BYTES: i32 = 32 << 20;
/// Packets counted locally before the shared counters are updated, to keep atomics off the
/// per-packet path.
const COUNT_EVERY: u64 = 1024;
/// LINKTYPE_LINUX_SLL2: like SLL but carries the interface index, so `any` can be labelled
/// by interface.
const DLT_LINUX_SLL2: i32 = 276;

/// Why a capture could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("interface {0:?} does not exist (see `ip link`)")]
    NoSuchInterface(String),
    #[error(
        "permission denied capturing on {0:?}: run as root, or give the binary CAP_NET_RAW and \
         CAP_NET_ADMIN (setcap cap_net_raw,cap_net_admin=eip host)"
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

fn now_ns() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A frame of a link type we do not decode: counted, never analyzed as IP.
fn undecoded(ts_ns: u64, wire_len: u32) -> PacketMeta {
    PacketMeta { ts_ns, wire_len, ..PacketMeta::default() }
}

fn link_type(l: Linktype) -> Option<LinkType> {
    LinkType::from_dlt(l.0)
}

/// A live capture, opened and filtered, ready to be run on its own thread.
pub struct Live {
    iface: String,
    cap: Capture<Active>,
    link: Option<LinkType>,
}

impl Live {
    /// Opens `iface`. Errors are reported here, before any thread starts.
    pub fn open(
        iface: &str,
        snaplen: u32,
        promisc: bool,
        filter: Option<&str>,
    ) -> Result<Self, Error> {
        let open_err = |e: pcap::Error| {
            let reason = e.to_string();
            let lower = reason.to_lowercase();
            if lower.contains("no such device") || lower.contains("doesn't exist") {
                Error::NoSuchInterface(iface.to_owned())
            } else if lower.contains("permission") || lower.contains("not permitted") {
                Error::PermissionDenied(iface.to_owned())
            } else {
                Error::Open { iface: iface.to_owned(), reason }
            }
        };
        let mut cap = Capture::from_device(iface)
            .map_err(open_err)?
            .snaplen(i32::try_from(snaplen).unwrap_or(i32::MAX))
            .promisc(promisc)
            .timeout(READ_TIMEOUT_MS)
            .buffer_size(KERNEL_BUFFER_BYTES)
            .precision(Precision::Nano)
            .open()
            .map_err(open_err)?;
        if iface == "any" {
            // Not every libpcap offers SLL2; plain SLL still works, labelled `any`.
            let _ = cap.set_datalink(Linktype(DLT_LINUX_SLL2));
        }
        if let Some(f) = filter {
            cap.filter(f, true)
                .map_err(|e| Error::Filter { filter: f.to_owned(), reason: e.to_string() })?;
        }
        let link = link_type(cap.get_datalink());
        if link.is_none() {
            tracing::warn!(
                iface,
                "link type {:?} is not decoded; frames are only counted",
                cap.get_datalink()
            );
        }
        Ok(Self { iface: iface.to_owned(), cap, link })
    }

    /// Runs the capture loop on a new thread until [`Running::stop`].
    pub fn spawn(
        mut self,
        batcher: Batcher,
        devices: Arc<Devices>,
        telemetry: Arc<Telemetry>,
    ) -> std::io::Result<Running> {
        let stop = Arc::new(AtomicBool::new(false));
        let breaker = self.cap.breakloop_handle();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("capture-{}", self.iface))
            .spawn(move || self.run(batcher, &devices, &telemetry, &flag))?;
        Ok(Running { thread, stop, breaker })
    }

    fn run(
        mut self,
        mut batcher: Batcher,
        devices: &Devices,
        telemetry: &Telemetry,
        stop: &AtomicBool,
    ) {
        let iface = self.iface.clone();
        let device = devices.intern(&iface);
        let mut by_ifindex = IfindexMap::default();
        let received = telemetry.packets_received.with_label_values(&[&iface]);
        let kernel_drops = telemetry.packets_dropped.with_label_values(&[&iface, "kernel"]);
        let if_drops = telemetry.packets_dropped.with_label_values(&[&iface, "interface"]);
        let (mut last_stats, mut seen_drops, mut seen_if_drops) = (now_ns(), 0u32, 0u32);
        let mut pending = 0u64;
        let mut meta = PacketMeta::default();
        while !stop.load(Ordering::Relaxed) {
            let now = match self.cap.next_packet() {
                Ok(p) => {
                    let ts = ts_ns(p.header);
                    match self.link {
                        Some(link) => {
                            decode::decode(link, ts, p.header.len, p.data, &mut meta);
                        }
                        None => meta = undecoded(ts, p.header.len),
                    }
                    meta.device = if meta.ifindex != 0 {
                        by_ifindex.device(meta.ifindex, devices)
                    } else {
                        device
                    };
                    batcher.push(&meta);
                    pending += 1;
                    if pending < COUNT_EVERY {
                        batcher.flush_due(ts);
                        continue;
                    }
                    ts
                }
                Err(pcap::Error::TimeoutExpired) => now_ns(),
                // pcap_breakloop from `Running::stop`.
                Err(pcap::Error::NoMorePackets) => break,
                Err(e) => {
                    tracing::error!(iface, "capture stopped: {e}");
                    break;
                }
            };
            received.inc_by(std::mem::take(&mut pending));
            batcher.flush_due(now);
            if now.saturating_sub(last_stats) >= 1_000_000_000 {
                last_stats = now;
                if let Ok(s) = self.cap.stats() {
                    kernel_drops.inc_by(u64::from(s.dropped.wrapping_sub(seen_drops)));
                    if_drops.inc_by(u64::from(s.if_dropped.wrapping_sub(seen_if_drops)));
                    (seen_drops, seen_if_drops) = (s.dropped, s.if_dropped);
                }
            }
        }
        received.inc_by(pending);
    }
}

/// A capture thread at work.
pub struct Running {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    breaker: pcap::BreakLoop,
}

impl Running {
    /// Stops the capture and waits for its thread, which flushes its last batches.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // libpcap's read timeout does not fire on an idle interface (TPACKET_V3), so wake
        // the blocked read as well.
        self.breaker.breakloop();
        if self.thread.join().is_err() {
            tracing::error!("a capture thread panicked");
        }
    }
}

/// Interface indices (from SLL2 headers on `any`) to device label indices.
#[derive(Default)]
struct IfindexMap {
    known: Vec<(u32, u16)>,
}

impl IfindexMap {
    fn device(&mut self, ifindex: u32, devices: &Devices) -> u16 {
        if let Some((_, d)) = self.known.iter().find(|(i, _)| *i == ifindex) {
            return *d;
        }
        // A new interface: look its name up once (rare: when a pod's veth first shows up).
        let name = interface_name(ifindex).unwrap_or_else(|| format!("ifindex{ifindex}"));
        let d = devices.intern(&name);
        self.known.push((ifindex, d));
        d
    }
}

fn interface_name(ifindex: u32) -> Option<String> {
    let entries = std::fs::read_dir("/sys/class/net").ok()?;
    entries.flatten().find_map(|e| {
        let idx = std::fs::read_to_string(e.path().join("ifindex")).ok()?;
        (idx.trim().parse::<u32>().ok()? == ifindex)
            .then(|| e.file_name().to_string_lossy().into_owned())
    })
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
                meta.device = device;
                batcher.push(&meta);
                packets += 1;
                // A pcap record header is 16 bytes; close enough for pcapng's progress too.
                bytes += u64::from(p.header.caplen) + 16;
                if packets % COUNT_EVERY == 0 {
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
