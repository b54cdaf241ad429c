//! Stage: batch.
//!
//! Input: decoded [`PacketMeta`]s from one capture source (an interface thread or a replay).
//! Output: [`Batch`]es — packed record buffers (layout in [`record`] and `wit/analyzer.wit`) —
//! sharded by flow id onto the workers' queues, flushed at `batch_size` packets or when the
//! oldest packet in a shard is `max_age` old, whichever comes first.
//!
//! Nothing here allocates per packet: buffers come from a pool that workers refill when they
//! are done with a batch. A live source never blocks on a full queue; it drops the batch and
//! counts the packets. A replay waits instead, so it loses nothing.
//!
//! Every batch sent or dropped is tallied per device (read back from its records), so that a
//! source can report, per interface, the packets that reached the analyzers and those lost to
//! a full queue: [`Batcher::take_tally`]. Tunnelled packets are tallied per device as they come,
//! by the tunnel headers read and the reason a tunnel was left unopened:
//! [`Batcher::take_tunnel_tally`].

pub mod record;

use std::time::Duration;

use std::collections::HashMap;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use foldhash::fast::RandomState;

use crate::decode::{PacketMeta, TunnelKind, Undecoded};

/// Packets per batch by default: enough to amortize a call into Wasm (≈1 µs fixed cost) to
/// nothing per packet, small enough (≈96 KiB) that a batch stays in the L2 cache.
pub const DEFAULT_BATCH_SIZE: usize = 1024;

/// Live batches are flushed when their oldest packet is this old, so metrics trail traffic by
/// at most this plus one pcap read timeout (DESIGN: ≤ 100 ms).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_millis(50);

/// Batches a worker's queue holds: ≈64k packets, tens of milliseconds of a busy link, so a
/// short stall in one analyzer does not cost packets.
pub const QUEUE_BATCHES: usize = 64;

/// What a source does when a worker's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullQueue {
    /// Drop the batch and count its packets (live capture: never block libpcap).
    Drop,
    /// Wait for room (replay: lose nothing).
    Wait,
}

/// A packed batch on its way to one worker. Its buffer goes back to its source's pool on drop.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    count: usize,
    /// Bytes per record: [`record::BASE_STRIDE`], or [`record::EXTENDED_STRIDE`] when a packet
    /// of the batch came through a tunnel.
    stride: usize,
    max_ts: u64,
    pool: Sender<Vec<u8>>,
}

impl Batch {
    /// The packed bytes: header and records.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..record::HEADER_LEN + self.count * self.stride]
    }

    /// Number of packet records.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The latest packet time in the batch, ns since the epoch.
    pub fn max_ts(&self) -> u64 {
        self.max_ts
    }

    /// Sets or clears the header's hold flag: whether analyzers may keep this batch's updates
    /// and return them with a later call's (the worker's choice, see `runtime::worker`).
    pub fn set_hold(&mut self, hold: bool) {
        record::write_flags(&mut self.buf, if hold { record::HOLD } else { 0 });
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // A full or closed pool just means the buffer is freed instead of reused.
        let _ = self.pool.try_send(std::mem::take(&mut self.buf));
    }
}

struct Shard {
    buf: Vec<u8>,
    count: usize,
    /// Stride of the records written so far: base until a tunnelled packet comes.
    stride: usize,
    max_ts: u64,
    /// Packet time of the shard's first packet, for live flushing by age.
    opened: Option<u64>,
}

/// Packs one source's packets into batches and hands them to the workers.
pub struct Batcher {
    shards: Vec<Shard>,
    queues: Vec<Sender<Batch>>,
    pool_tx: Sender<Vec<u8>>,
    pool_rx: Receiver<Vec<u8>>,
    batch_size: usize,
    max_age: Duration,
    full: FullQueue,
    tally: Tally,
    tunnels: TunnelTally,
}

/// Packets per device since the last [`Batcher::take_tally`]: `(queued, dropped)`.
type Tally = HashMap<u16, (u64, u64), RandomState>;

/// What the batcher counts of a packet's tunnels, per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelCount {
    /// A tunnel header of this kind read whole.
    Read(TunnelKind),
    /// A tunnel, or the packet inside one, left unopened for this reason.
    Undecoded(Undecoded),
}

/// Tunnel events per device since the last [`Batcher::take_tunnel_tally`].
type TunnelTally = HashMap<(u16, TunnelCount), u64, RandomState>;

impl Batcher {
    /// `queues` has one sender per worker.
    pub fn new(
        queues: Vec<Sender<Batch>>,
        batch_size: usize,
        max_age: Duration,
        full: FullQueue,
    ) -> Self {
        let batch_size = batch_size.max(1);
        // Every queued batch, plus one being filled per shard, plus one in each worker.
        let pool_cap = queues.len() * (QUEUE_BATCHES + 2);
        let (pool_tx, pool_rx) = crossbeam_channel::bounded(pool_cap);
        let mut this = Self {
            shards: Vec::new(),
            queues,
            pool_tx,
            pool_rx,
            batch_size,
            max_age,
            full,
            tally: Tally::default(),
            tunnels: TunnelTally::default(),
        };
        this.shards = (0..this.queues.len())
            .map(|_| Shard {
                buf: this.buffer(),
                count: 0,
                stride: record::BASE_STRIDE,
                max_ts: 0,
                opened: None,
            })
            .collect();
        this
    }

    /// A buffer for a batch of base records, from the pool when it has one. A buffer that a
    /// tunnel widened comes back wide and is reused as it is.
    fn buffer(&self) -> Vec<u8> {
        let len = record::HEADER_LEN + self.batch_size * record::BASE_STRIDE;
        match self.pool_rx.try_recv() {
            Ok(buf) if buf.len() >= len => buf,
            _ => vec![0; len],
        }
    }

    /// Adds one packet. Sends its shard's batch when it is full.
    pub fn push(&mut self, meta: &PacketMeta) {
        let n = self.shards.len();
        if n == 0 {
            return;
        }
        // Sharding by flow id keeps both directions of a connection on one worker.
        let i = (meta.flow_id % n as u64) as usize;
        let shard = &mut self.shards[i];
        if meta.tunnel.depth != 0 && shard.stride == record::BASE_STRIDE {
            // The batch's first tunnelled packet: every record gets the extension. A buffer grows
            // once in its life (it goes back to the pool wide): buffers are sized for base
            // records, since most traffic has no tunnel and a live source keeps up to
            // `QUEUE_BATCHES` of them per worker.
            let wide = record::HEADER_LEN + self.batch_size * record::EXTENDED_STRIDE;
            if shard.buf.len() < wide {
                shard.buf.resize(wide, 0);
            }
            record::widen(&mut shard.buf[record::HEADER_LEN..], shard.count);
            shard.stride = record::EXTENDED_STRIDE;
        }
        let at = record::HEADER_LEN + shard.count * shard.stride;
        let out = &mut shard.buf[at..at + shard.stride];
        record::write_record(meta, out);
        if shard.stride == record::EXTENDED_STRIDE {
            record::write_tunnel(meta, out);
        }
        shard.count += 1;
        shard.max_ts = shard.max_ts.max(meta.ts_ns);
        if shard.count == 1 {
            shard.opened = Some(meta.ts_ns);
        }
        if shard.count >= self.batch_size {
            self.send(i);
        }
        if meta.tunnel.is_seen() {
            self.count_tunnels(meta);
        }
    }

    /// Counts the tunnel headers a packet came through and why one was not opened. Only
    /// tunnelled packets get here; the map holds one entry per device and kind or reason, so
    /// after the first packet of each it only adds.
    fn count_tunnels(&mut self, meta: &PacketMeta) {
        for kind in meta.tunnel.read() {
            *self.tunnels.entry((meta.device, TunnelCount::Read(kind))).or_default() += 1;
        }
        if let Some(reason) = meta.tunnel.fault() {
            *self.tunnels.entry((meta.device, TunnelCount::Undecoded(reason))).or_default() += 1;
        }
    }

    /// Sends every non-empty shard whose oldest packet is older than `max_age` at `now_ns`
    /// (live capture: packet timestamps and the wall clock are the same clock).
    pub fn flush_due(&mut self, now_ns: u64) {
        let max_age = u64::try_from(self.max_age.as_nanos()).unwrap_or(u64::MAX);
        for i in 0..self.shards.len() {
            let due = self.shards[i].opened.is_some_and(|t| now_ns.saturating_sub(t) >= max_age);
            if due {
                self.send(i);
            }
        }
    }

    /// Sends every non-empty shard.
    pub fn flush(&mut self) {
        for i in 0..self.shards.len() {
            self.send(i);
        }
    }

    fn send(&mut self, i: usize) {
        if self.shards[i].count == 0 {
            return;
        }
        let fresh = self.buffer();
        let shard = &mut self.shards[i];
        let mut buf = std::mem::replace(&mut shard.buf, fresh);
        let count = std::mem::take(&mut shard.count);
        let stride = std::mem::replace(&mut shard.stride, record::BASE_STRIDE);
        let max_ts = std::mem::take(&mut shard.max_ts);
        shard.opened = None;
        record::write_header(&mut buf, u32::try_from(count).unwrap_or(u32::MAX), stride);
        let batch = Batch { buf, count, stride, max_ts, pool: self.pool_tx.clone() };
        // Counted as queued before it leaves; moved to dropped below if it finds no room.
        tally(&mut self.tally, &batch, |e, n| e.0 += n);
        let queue = &self.queues[i];
        let result = match self.full {
            FullQueue::Wait => queue.send(batch).map_err(|e| e.into_inner()),
            FullQueue::Drop => queue.try_send(batch).map_err(|e| match e {
                TrySendError::Full(b) | TrySendError::Disconnected(b) => b,
            }),
        };
        if let Err(lost) = result {
            tally(&mut self.tally, &lost, |e, n| {
                e.0 -= n;
                e.1 += n;
            });
        }
    }

    /// Hands over, and resets, the per-device counts of packets queued for the analyzers and
    /// packets dropped because a worker's queue was full: `f(device, queued, dropped)`.
    pub fn take_tally(&mut self, mut f: impl FnMut(u16, u64, u64)) {
        for (device, (queued, dropped)) in self.tally.drain() {
            f(device, queued, dropped);
        }
    }

    /// Hands over, and resets, the per-device counts of tunnel headers read and of tunnels
    /// left unopened: `f(device, what, packets)`.
    pub fn take_tunnel_tally(&mut self, mut f: impl FnMut(u16, TunnelCount, u64)) {
        for ((device, what), n) in self.tunnels.drain() {
            f(device, what, n);
        }
    }
}

/// Applies `f(entry, packets)` to the tally for each device in a batch, by the device field of
/// its records. Runs of one device (the common case: a source is one interface, or bursts on
/// one interface) cost one lookup.
fn tally(t: &mut Tally, batch: &Batch, f: impl Fn(&mut (u64, u64), u64)) {
    let bytes = batch.bytes();
    let mut run: Option<(u16, u64)> = None;
    for k in 0..batch.len() {
        let at = record::HEADER_LEN + k * batch.stride + record::offset::DEVICE;
        let device = bytes.get(at..at + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        run = match run {
            Some((d, n)) if d == device => Some((d, n + 1)),
            Some((d, n)) => {
                f(t.entry(d).or_default(), n);
                Some((device, 1))
            }
            None => Some((device, 1)),
        };
    }
    if let Some((d, n)) = run {
        f(t.entry(d).or_default(), n);
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests;
