//! Flow-state stage: the bounded table of TCP connections, keyed by the host's flow id.
//!
//! Input: flow ids and packet times (made monotonic by the caller). Output: a slot holding each
//! flow's [`Flow`] state and its timed segments ([`Timings`]), and the flows that leave the
//! table — idle-expired, evicted because the table was full, or drained at the end of the
//! capture — handed to a callback with the reason; their timing state is freed with them.
//!
//! Layout, fixed at `init` so that steady state allocates nothing:
//! - a slab of at most `max_flows` [`Flow`]s, with a free list;
//! - an open-addressing index (linear probing, backward-shift deletion, no tombstones) of
//!   (flow id, slot) pairs, at most half full;
//! - two intrusive doubly-linked lists through the slab, each in order of last activity: open
//!   connections, and closed ones (both FINs or a RST) that linger for late segments.
//!
//! Besides, allocated as flows time segments: the timing state (`rtt.rs`), one entry per flow
//! that has one and rings of records within a byte budget of
//! [`BUDGET_BYTES_PER_FLOW`](crate::rtt::BUDGET_BYTES_PER_FLOW) per flow of the table.
//!
//! Packet time only moves the lists forward, so each list is sorted by last activity and its
//! head is the first to expire. That makes expiry independent of when it is checked: a flow is
//! expired once `now - last_ns` exceeds its list's timeout, whether the sweep in `tick`, the
//! lookup of its next packet, or the insertion of a new flow into a full table notices it.

use crate::analysis::{Connection, Segment};
use crate::rtt::{self, Cap, Timing, Timings};

/// Marks an empty index entry and the ends of a list.
const NONE: u32 = u32::MAX;

/// Fibonacci-hashing multiplier (2^64 / φ): spreads flow ids, including the small sequential
/// ids of hand-built tests, over the index.
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// Which list a flow is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Not closed yet; expires after the idle timeout.
    Open = 0,
    /// Closed (both FINs or a RST) and its duration observed; kept for the linger time.
    Closed = 1,
}

/// Why a flow left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// No packet for longer than its timeout.
    Expired,
    /// Dropped to make room: the table was full and nothing had expired.
    Evicted,
    /// The capture ended.
    EndOfCapture,
}

/// One connection's state in the table.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// The host's flow id.
    pub id: u64,
    /// (Monotonic) packet time of the first packet: the SYN, or the first segment seen.
    pub first_ns: u64,
    /// (Monotonic) packet time of the last packet.
    pub last_ns: u64,
    /// The sequence analysis state.
    pub conn: Connection,
    /// Device of the first packet (the histograms' label).
    pub device: u16,
    /// Directions (bit 0, bit 1) that have sent a FIN.
    pub fins: u8,
    stage: Stage,
    prev: u32,
    next: u32,
    /// Handle of its timing state in the table's [`Timings`], [`rtt::NONE`] if none yet.
    timing: u32,
}

impl Flow {
    /// A new flow seen first at `now_ns` on `device`.
    fn new(id: u64, now_ns: u64, device: u16) -> Self {
        Self {
            id,
            first_ns: now_ns,
            last_ns: now_ns,
            conn: Connection::NEW,
            device,
            fins: 0,
            stage: Stage::Open,
            prev: NONE,
            next: NONE,
            timing: rtt::NONE,
        }
    }

    /// Whether the connection is closed (and its duration observed).
    pub fn is_closed(&self) -> bool {
        self.stage == Stage::Closed
    }
}

/// Head and tail of one list.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

/// The bounded flow table.
pub struct FlowTable {
    slots: Vec<Flow>,
    free: Vec<u32>,
    /// (flow id, slot) or (_, `NONE`) when empty; a power of two at least twice `max`.
    index: Vec<(u64, u32)>,
    shift: u32,
    lists: [List; 2],
    len: usize,
    max: usize,
    /// Timeouts of the open and closed lists.
    timeouts: [u64; 2],
    /// The flows' timed segments.
    timings: Timings,
}

impl FlowTable {
    /// Bytes of memory a table of `max_flows` may take: slab, index and free list, and the
    /// timing state (per-flow entries and the ring budget).
    pub fn memory_bytes(max_flows: usize) -> usize {
        let index = max_flows.max(1).saturating_mul(2).checked_next_power_of_two();
        let index_bytes = index.map_or(usize::MAX, |n| n.saturating_mul(size_of::<(u64, u32)>()));
        let per_flow = size_of::<Flow>()
            + size_of::<u32>()
            + Timings::PER_FLOW_BYTES
            + rtt::BUDGET_BYTES_PER_FLOW;
        max_flows.saturating_mul(per_flow).saturating_add(index_bytes)
    }

    /// An empty table for up to `max_flows` (≥ 1) flows; open flows expire after `idle_ns`,
    /// closed ones after `linger_ns` (at most `idle_ns`).
    pub fn new(max_flows: usize, idle_ns: u64, linger_ns: u64) -> Self {
        let max = max_flows.max(1);
        let index_len = (max * 2).next_power_of_two();
        Self {
            slots: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            index: vec![(0, NONE); index_len],
            shift: 64 - index_len.trailing_zeros(),
            lists: [List { head: NONE, tail: NONE }; 2],
            len: 0,
            max,
            timeouts: [idle_ns, linger_ns.min(idle_ns)],
            timings: Timings::new(max * rtt::BUDGET_BYTES_PER_FLOW),
        }
    }

    /// Number of flows held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The flow in `slot`.
    pub fn flow_mut(&mut self, slot: u32) -> &mut Flow {
        &mut self.slots[slot as usize]
    }

    /// Applies segment `seg`, sent in direction `dir` at (monotonic) `now_ns`, to the timing
    /// state of the flow in `slot`, which must not be expired at `now_ns`. If the shared budget
    /// is short for doubling the ring, the flows expired at `now_ns` go first (to `removed`)
    /// and the segment tries again, growing the ring as far as the budget then allows: expired
    /// flows hold memory only until something notices them, so without this whether (and how
    /// far) a ring grows would depend on when the last sweep ran.
    #[inline]
    pub fn time(
        &mut self,
        slot: u32,
        dir: usize,
        seg: &Segment,
        now_ns: u64,
        removed: &mut impl FnMut(&Flow, Removal),
    ) -> Timing {
        let mut timing = self.timings.segment(&mut self.slots[slot as usize].timing, dir, seg);
        if timing.refused == Some(Cap::Budget) {
            timing.refused = self.make_budget(slot, dir, seg, now_ns, removed);
        }
        timing
    }

    /// Sweeps the expired flows and tries the refused segment again.
    #[cold]
    fn make_budget(
        &mut self,
        slot: u32,
        dir: usize,
        seg: &Segment,
        now_ns: u64,
        removed: &mut impl FnMut(&Flow, Removal),
    ) -> Option<Cap> {
        self.expire(now_ns, removed);
        self.timings.retry(self.slots[slot as usize].timing, dir, seg)
    }

    /// The flows' timing state.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Starts the flow in `slot` over as a new connection at `now_ns` (ports reused by a new
    /// SYN), freeing its timing state; the caller moves it back to the open list with
    /// [`FlowTable::touch`].
    pub fn restart(&mut self, slot: u32, now_ns: u64, device: u16) {
        let flow = &mut self.slots[slot as usize];
        if flow.timing != rtt::NONE {
            self.timings.release(flow.timing);
        }
        let (prev, next, stage) = (flow.prev, flow.next, flow.stage);
        *flow = Flow { prev, next, stage, ..Flow::new(flow.id, now_ns, device) };
    }

    #[inline]
    fn home(&self, id: u64) -> usize {
        (id.wrapping_mul(SPREAD) >> self.shift) as usize
    }

    /// Position in `index` of `id`, if present.
    #[inline]
    fn find(&self, id: u64) -> Option<usize> {
        let mask = self.index.len() - 1;
        let mut i = self.home(id);
        loop {
            let (key, slot) = self.index[i];
            if slot == NONE {
                return None;
            }
            if key == id {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Whether `flow` has been idle longer than its list's timeout at `now_ns`.
    #[inline]
    fn expired(&self, flow: &Flow, now_ns: u64) -> bool {
        now_ns.saturating_sub(flow.last_ns) > self.timeouts[flow.stage as usize]
    }

    /// The slot of flow `id` at `now_ns`, creating it (first seen on `device`) if it is absent
    /// or expired. Flows that leave to make room go to `removed` first.
    #[inline]
    pub fn get_or_insert(
        &mut self,
        id: u64,
        now_ns: u64,
        device: u16,
        removed: &mut impl FnMut(&Flow, Removal),
    ) -> u32 {
        if let Some(pos) = self.find(id) {
            let slot = self.index[pos].1;
            let flow = &self.slots[slot as usize];
            if !self.expired(flow, now_ns) {
                return slot;
            }
            removed(flow, Removal::Expired);
            self.remove(slot);
        }
        if self.len == self.max {
            self.make_room(now_ns, removed);
        }
        self.insert(Flow::new(id, now_ns, device))
    }

    /// Frees one slot in a full table: an expired flow if there is one (the head of either
    /// list), else the least recently seen closed flow, else the least recently seen open one.
    #[cold]
    fn make_room(&mut self, now_ns: u64, removed: &mut impl FnMut(&Flow, Removal)) {
        let [open, closed] = self.lists.map(|l| l.head);
        for head in [closed, open] {
            if head != NONE && self.expired(&self.slots[head as usize], now_ns) {
                removed(&self.slots[head as usize], Removal::Expired);
                self.remove(head);
                return;
            }
        }
        let victim = if closed != NONE { closed } else { open };
        if victim != NONE {
            removed(&self.slots[victim as usize], Removal::Evicted);
            self.remove(victim);
        }
    }

    fn insert(&mut self, flow: Flow) -> u32 {
        let id = flow.id;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = flow;
                s
            }
            None => {
                self.slots.push(flow);
                (self.slots.len() - 1) as u32
            }
        };
        let mask = self.index.len() - 1;
        let mut i = self.home(id);
        while self.index[i].1 != NONE {
            i = (i + 1) & mask;
        }
        self.index[i] = (id, slot);
        self.len += 1;
        self.push_back(slot, Stage::Open);
        slot
    }

    /// Removes the flow in `slot` from the index, its list and the slab, and frees its timing
    /// state.
    fn remove(&mut self, slot: u32) {
        let Flow { id, timing, .. } = self.slots[slot as usize];
        if timing != rtt::NONE {
            self.timings.release(timing);
            self.slots[slot as usize].timing = rtt::NONE;
        }
        if let Some(mut hole) = self.find(id) {
            // Backward-shift deletion: pull later entries of the probe run into the hole
            // unless their home lies cyclically after the hole.
            let mask = self.index.len() - 1;
            let mut i = hole;
            loop {
                i = (i + 1) & mask;
                let (key, s) = self.index[i];
                if s == NONE {
                    break;
                }
                let home = self.home(key);
                if (i.wrapping_sub(home) & mask) >= (i.wrapping_sub(hole) & mask) {
                    self.index[hole] = self.index[i];
                    hole = i;
                }
            }
            self.index[hole] = (0, NONE);
        }
        self.unlink(slot);
        self.free.push(slot);
        self.len -= 1;
    }

    fn unlink(&mut self, slot: u32) {
        let Flow { prev, next, stage, .. } = self.slots[slot as usize];
        let list = &mut self.lists[stage as usize];
        if prev == NONE {
            list.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NONE {
            list.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn push_back(&mut self, slot: u32, stage: Stage) {
        let list = &mut self.lists[stage as usize];
        let tail = list.tail;
        list.tail = slot;
        if tail == NONE {
            list.head = slot;
        } else {
            self.slots[tail as usize].next = slot;
        }
        let flow = &mut self.slots[slot as usize];
        flow.prev = tail;
        flow.next = NONE;
        flow.stage = stage;
    }

    /// Records activity on the flow in `slot` at `now_ns` and puts it at the end of the list
    /// for `stage` (moving it between lists when the connection closes or restarts).
    #[inline]
    pub fn touch(&mut self, slot: u32, now_ns: u64, stage: Stage) {
        let flow = &mut self.slots[slot as usize];
        flow.last_ns = now_ns;
        if flow.stage == stage && flow.next == NONE {
            return;
        }
        self.unlink(slot);
        self.push_back(slot, stage);
    }

    /// Removes every flow expired at `now_ns`, handing each to `removed`.
    pub fn expire(&mut self, now_ns: u64, removed: &mut impl FnMut(&Flow, Removal)) {
        for stage in [Stage::Open, Stage::Closed] {
            loop {
                let head = self.lists[stage as usize].head;
                if head == NONE || !self.expired(&self.slots[head as usize], now_ns) {
                    break;
                }
                removed(&self.slots[head as usize], Removal::Expired);
                self.remove(head);
            }
        }
    }

    /// Removes every flow (open ones first, each list oldest first), handing each to
    /// `removed` with [`Removal::EndOfCapture`].
    pub fn drain(&mut self, removed: &mut impl FnMut(&Flow, Removal)) {
        for stage in [Stage::Open, Stage::Closed] {
            loop {
                let head = self.lists[stage as usize].head;
                if head == NONE {
                    break;
                }
                removed(&self.slots[head as usize], Removal::EndOfCapture);
                self.remove(head);
            }
        }
    }
}
