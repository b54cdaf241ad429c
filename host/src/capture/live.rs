//! Stage: capture (live).
//!
//! Input: one interface, or libpcap's `any` pseudo-device, opened by [`Live::open`]; the
//! interface table ([`Links`]: names by index).
//! Output: decoded, device-labelled [`PacketMeta`]s pushed into a [`Batcher`] on the capture's
//! own thread; per-device received and `queue_full` counts and the capture's kernel and
//! interface drops (libpcap statistics), each exported at 0 from the start; tunnels read and
//! left unopened, per device from its first tunnel; and an [`Exit`]
//! saying why the thread ended.
//!
//! The socket is non-blocking and the thread waits in `poll(2)` with a timeout, so partial
//! batches are flushed by age, counters are published and statistics are read on a timer
//! that does not depend on packet arrival: one packet on an idle interface shows in every
//! metric within a second. (With libpcap's TPACKET_V3 ring, a blocking read on an idle
//! interface never returns, and its read timeout only fires once a packet has arrived.)
//!
//! Per packet the loop decodes, looks the device up in a thread-local map (a hash lookup, or
//! nothing when the interface is the same as the last packet's) and pushes; it does not
//! allocate, lock or log.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foldhash::fast::RandomState;
use pcap::{Active, Capture, Linktype, Precision};
use prometheus::IntCounter;
use rustix::event::{PollFd, PollFlags, Timespec};

use super::links::{Links, Selection};
use super::{CaptureMetrics, DropReason, Error, link_type, ts_ns};
use crate::batch::Batcher;
use crate::decode::{self, LinkType, PacketMeta, VxlanPorts};
use crate::registry::Devices;

/// How long the kernel may hold a partly filled ring block before handing it over: bounds
/// metric latency for a trickle (with the batch age, DESIGN's 100 ms) at no cost under load.
const READ_TIMEOUT_MS: i32 = 50;
/// Longest wait in `poll(2)` on an idle interface: the housekeeping period when no packet
/// arrives, and how long a stop request may wait.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Kernel ring buffer per interface: ≈1 s of a 100k packets/s interface at the default
/// snaplen.
const KERNEL_BUFFER_BYTES: i32 = 32 << 20;
/// Packets read between two looks at the clock under load, to keep clock reads off the
/// per-packet path (at 1 Mpps, every quarter of a millisecond).
const CLOCK_EVERY: u32 = 256;
/// Period of housekeeping under load: flush batches by age and publish the counts.
const HOUSEKEEPING_NS: u64 = 25_000_000;
/// Period of reading libpcap's statistics (kernel and interface drops).
const STATS_NS: u64 = 500_000_000;
/// LINKTYPE_LINUX_SLL2: like SLL but carries the interface index, so `any` can be labelled
/// by interface.
const DLT_LINUX_SLL2: i32 = 276;

fn now_ns() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a capture covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// One interface, by index: every packet is labelled with its current name.
    Interface(u32),
    /// libpcap's `any`: each packet is labelled with the interface the SLL2 header names.
    Any,
}

/// A live capture, opened and filtered, ready to be run on its own thread.
pub struct Live {
    /// The name it was opened by: the thread's name and the label of its statistics for
    /// `any`.
    iface: String,
    source: Source,
    cap: Capture<Active>,
    link: Option<LinkType>,
}

impl Live {
    /// Opens `iface` (`any`, or an interface name whose index is given in `source`). Errors
    /// are reported here, before any thread starts.
    pub fn open(
        iface: &str,
        source: Source,
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
        if source == Source::Any {
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
        let cap = cap.setnonblock().map_err(open_err)?;
        Ok(Self { iface: iface.to_owned(), source, cap, link })
    }

    /// Runs the capture loop on a new thread until [`Running::stop`] or an error.
    pub fn spawn(self, batcher: Batcher, ctx: Context) -> std::io::Result<Running> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            // Linux keeps the first 15 bytes of a thread name.
            .name(format!("cap-{}", self.iface))
            .spawn(move || self.run(batcher, &ctx, &flag))?;
        Ok(Running { thread, stop })
    }

    fn run(mut self, mut batcher: Batcher, ctx: &Context, stop: &AtomicBool) -> Exit {
        let mut labels = Labels::new(ctx, self.source);
        if let Source::Interface(_) = self.source
            && let Some(device) = labels.device(0)
        {
            // Its series show from the start, at 0 until something happens.
            labels.handles(device);
        }
        let mut meta = PacketMeta::default();
        let mut stats = Stats::default();
        // This thread's CPU time, counted with the statistics and at the end.
        let mut cpu = ctx.metrics.cpu.clock(std::thread::current().name().unwrap_or("cap"));
        let (mut next_house, mut next_stats, mut since_clock) = (0u64, 0u64, 0u32);
        let exit = loop {
            if stop.load(Ordering::Relaxed) {
                break Exit::Stopped;
            }
            let idle = match self.cap.next_packet() {
                Ok(p) => {
                    let ts = ts_ns(p.header);
                    match self.link {
                        Some(link) => {
                            decode::decode(link, ts, p.header.len, p.data, &ctx.vxlan, &mut meta);
                        }
                        None => meta = PacketMeta::non_ip(ts, p.header.len),
                    }
                    if let Some(device) = labels.device(meta.ifindex) {
                        meta.set_device(device);
                        batcher.push(&meta);
                    }
                    since_clock += 1;
                    if since_clock < CLOCK_EVERY {
                        continue;
                    }
                    false
                }
                // Non-blocking: nothing to read right now.
                Err(pcap::Error::TimeoutExpired) => true,
                Err(e) => break Exit::from_error(&e),
            };
            since_clock = 0;
            let now = now_ns();
            if now >= next_house {
                next_house = now + HOUSEKEEPING_NS;
                batcher.flush_due(now);
                labels.publish(&mut batcher);
            }
            if now >= next_stats {
                next_stats = now + STATS_NS;
                stats.read(&mut self.cap, &labels.stats_label(), &ctx.metrics);
                cpu.update();
            }
            if idle && let Some(exit) = wait(&self.cap) {
                break exit;
            }
        };
        batcher.flush();
        labels.publish(&mut batcher);
        stats.read(&mut self.cap, &labels.stats_label(), &ctx.metrics);
        cpu.update();
        exit
    }
}

/// Waits until the socket is readable or [`IDLE_WAIT`] passes. An error or hang-up on the
/// socket ends the capture: the interface went down or away.
fn wait(cap: &Capture<Active>) -> Option<Exit> {
    let mut fds = [PollFd::new(cap, PollFlags::IN)];
    let timeout = Timespec::try_from(IDLE_WAIT).unwrap_or(Timespec { tv_sec: 0, tv_nsec: 0 });
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(_) => {
            let r = fds[0].revents();
            let bad = PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL;
            // libpcap reports the reason (down, gone) on the next read; a socket that stays
            // in error without one is treated as gone rather than spun on.
            (r.intersects(bad) && !r.contains(PollFlags::IN))
                .then(|| Exit::Gone(format!("packet socket reported {r:?}")))
        }
        Err(rustix::io::Errno::INTR) => None,
        Err(e) => Some(Exit::Failed(format!("poll on the packet socket failed: {e}"))),
    }
}

/// Why a capture thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Stopped,
    /// The interface went down or was deleted: not a fault of the host.
    Gone(String),
    /// Any other error: the host is not capturing what it should.
    Failed(String),
}

impl Exit {
    fn from_error(e: &pcap::Error) -> Exit {
        let text = e.to_string();
        let lower = text.to_lowercase();
        let gone = ["went down", "disappeared", "no such device", "network is down", "hangup"]
            .iter()
            .any(|s| lower.contains(s));
        if gone { Exit::Gone(text) } else { Exit::Failed(text) }
    }
}

/// A capture thread at work.
pub struct Running {
    thread: JoinHandle<Exit>,
    stop: Arc<AtomicBool>,
}

impl Running {
    /// Whether the thread has ended on its own (see [`Running::join`]).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the capture and waits for its thread, which flushes its last batches. The
    /// thread notices within one idle wait (50 ms).
    pub fn stop(self) -> Exit {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits for the thread and says why it ended.
    pub fn join(self) -> Exit {
        self.thread.join().unwrap_or_else(|_| Exit::Failed("the capture thread panicked".into()))
    }
}

/// What a capture thread shares with the rest of the host.
#[derive(Clone)]
pub struct Context {
    pub links: Arc<Links>,
    pub devices: Arc<Devices>,
    pub metrics: Arc<CaptureMetrics>,
    /// Interfaces `any` must leave out (`--exclude`).
    pub selection: Arc<Selection>,
    /// UDP ports read as VXLAN (`--vxlan-port`).
    pub vxlan: VxlanPorts,
}

/// Device labels and counters of one capture thread, kept in thread-local maps that are
/// rebuilt whenever the interface table changes (a link added, renamed or deleted).
struct Labels<'a> {
    ctx: &'a Context,
    source: Source,
    generation: u64,
    /// Interface index → device index, `None` for an interface `--exclude` leaves out.
    by_ifindex: HashMap<u32, Option<u16>, RandomState>,
    /// The last lookup, which most packets repeat.
    last: (u32, Option<u16>),
    /// Device index → its received and queue-full counters.
    counters: HashMap<u16, (IntCounter, IntCounter), RandomState>,
    /// Devices whose tunnel series this thread has shown (with their first tunnel).
    tunnels_shown: HashSet<u16, RandomState>,
}

impl<'a> Labels<'a> {
    fn new(ctx: &'a Context, source: Source) -> Self {
        Self {
            ctx,
            source,
            generation: ctx.links.generation(),
            by_ifindex: HashMap::default(),
            last: (u32::MAX, None),
            counters: HashMap::default(),
            tunnels_shown: HashSet::default(),
        }
    }

    /// The device of a packet (`ifindex` from an SLL2 header, else 0), or `None` to skip it.
    #[inline]
    fn device(&mut self, ifindex: u32) -> Option<u16> {
        let generation = self.ctx.links.generation();
        if generation != self.generation {
            // A gone interface's counters may have been dropped from the exposition: take
            // fresh handles too.
            self.generation = generation;
            self.by_ifindex.clear();
            self.counters.clear();
            self.tunnels_shown.clear();
            self.last = (u32::MAX, None);
        }
        if ifindex == self.last.0 {
            return self.last.1;
        }
        let device = match self.by_ifindex.get(&ifindex) {
            Some(d) => *d,
            None => {
                // A new interface, or the table changed: rare.
                let d = self.resolve(ifindex);
                self.by_ifindex.insert(ifindex, d);
                d
            }
        };
        self.last = (ifindex, device);
        device
    }

    fn resolve(&self, ifindex: u32) -> Option<u16> {
        let index = match self.source {
            Source::Interface(i) => i,
            Source::Any if ifindex == 0 => return Some(self.ctx.devices.intern("any")),
            Source::Any => ifindex,
        };
        let name = match self.ctx.links.name(index) {
            Some(name) => name,
            // Not (yet) in the table: the link event is still on its way.
            None => Arc::from(format!("ifindex{index}")),
        };
        if self.source == Source::Any && !self.ctx.selection.allows(&name) {
            return None;
        }
        Some(self.ctx.devices.intern(&name))
    }

    /// The label of this capture's own statistics: its interface's current name, or `any`.
    fn stats_label(&self) -> String {
        match self.source {
            Source::Interface(i) => {
                self.ctx.links.name(i).map_or_else(|| format!("ifindex{i}"), |n| n.to_string())
            }
            Source::Any => "any".to_owned(),
        }
    }

    /// The received and queue-full counters of `device`.
    fn handles(&mut self, device: u16) -> &(IntCounter, IntCounter) {
        let (metrics, devices) = (&self.ctx.metrics, &self.ctx.devices);
        self.counters.entry(device).or_insert_with(|| {
            let name = devices.name(device);
            (metrics.received(&name), metrics.dropped(&name, DropReason::QueueFull))
        })
    }

    /// Adds what the batcher queued and dropped, and the tunnels it counted, since the last
    /// call to the counters.
    fn publish(&mut self, batcher: &mut Batcher) {
        batcher.take_tally(|device, queued, dropped| {
            let (received, full) = self.handles(device);
            received.inc_by(queued);
            full.inc_by(dropped);
        });
        let (metrics, devices) = (&self.ctx.metrics, &self.ctx.devices);
        let shown = &mut self.tunnels_shown;
        batcher.take_tunnel_tally(|device, what, n| {
            let name = devices.name(device);
            metrics.tunnels(&name, what, n, shown.insert(device));
        });
    }
}

/// libpcap's cumulative statistics as last seen, to add only what is new.
#[derive(Default)]
struct Stats {
    dropped: u32,
    if_dropped: u32,
}

impl Stats {
    fn read(&mut self, cap: &mut Capture<Active>, label: &str, m: &CaptureMetrics) {
        if let Ok(s) = cap.stats() {
            let kernel = s.dropped.wrapping_sub(self.dropped);
            let interface = s.if_dropped.wrapping_sub(self.if_dropped);
            m.dropped(label, DropReason::Kernel).inc_by(u64::from(kernel));
            m.dropped(label, DropReason::Interface).inc_by(u64::from(interface));
            (self.dropped, self.if_dropped) = (s.dropped, s.if_dropped);
        }
    }
}
