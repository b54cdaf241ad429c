//! Round-trip stage: Wireshark's lists of unacknowledged segments, per direction, as timed
//! records, and the ACKs that time them (`tcp.analysis.ack_rtt`).
//!
//! Input: each analyzed segment of a flow (its end in sequence space if it carries payload, SYN
//! or FIN; its acknowledgement number; its packet time) with its direction. Output: for a
//! segment whose acknowledgement number equals the end of a timed segment of the other
//! direction, the time since that segment was first sent (which may be 0 or negative, as in
//! tshark), and whether a cap refused to time the segment itself.
//!
//! Wireshark 4.0 (`tcp_analyze_sequence_number` in `packet-tcp.c`) keeps, per direction, a list
//! of every segment with payload, SYN or FIN (retransmissions included), up to 10 000 entries.
//! Each segment's acknowledgement number, whatever its flags, walks the other direction's list
//! from the newest entry to the oldest: an entry ending exactly at the ACK gives the sample and
//! goes, one the ACK reaches past its end goes silently, one the ACK falls inside is trimmed and
//! stays. The oldest of several entries with the same end wins (each match overwrites the
//! last). Removal and sampling depend only on an entry's end, so one record per distinct end,
//! holding the time of the first segment listed with that end and how many listed segments end
//! there, is exactly equivalent: with `n` a record's end and `a` the ACK, the record goes iff
//! `(a - n) as i32 >= 0`, and gives the sample iff `n == a`.
//!
//! Layout: a slab of per-flow entries ([`Timings`]), created when a flow first times a segment
//! and freed with the flow; in each, per direction, a buffer of records allocated on demand
//! (a "ring": records are appended at the end and popped from the front by moving a start
//! index, the popped slots reclaimed when the buffer fills). The records are kept sorted by
//! sequence number (modulo 2^32, all within 2^31 of the first): a new segment usually goes at
//! the end (else binary search), and an ACK removes a prefix, popped one record at a time, so
//! each packet costs a constant amount of work however many segments are in flight. A segment
//! that cannot keep that order (only possible when a direction's ends span more than 2^31)
//! marks the direction unsorted until the next ACK, which scans it and sorts the rest again.
//! Memory is bounded three ways: Wireshark's 10 000 segments per direction, the slab (at most
//! one entry per flow of the table), and a byte budget shared by every flow for the buffers
//! (capacity and allocation overhead counted; grown by doubling, halved when a quarter full,
//! freed when empty; a small emptied buffer waits in a pool of spares for the next flow).
//! Whenever the budget cannot give a buffer what it asks for, the table sweeps the expired
//! flows and asks again ([`Timings::retry`]), so that what the budget allows never depends on
//! when expiry last ran.

use crate::analysis::Segment;

/// Wireshark's `TCP_MAX_UNACKED_SEGMENTS`: a direction lists at most this many segments (with
/// repeats), so one-sided captures do not grow its list without end; beyond it segments are not
/// timed until ACKs remove some.
pub const MAX_UNACKED: u16 = 10_000;

/// The ring budget per flow of the table: 128 bytes, 8 MiB at the default 65 536 flows, which
/// is 7 records (16 bytes each, plus a buffer's overhead) per flow on average or, say, 500 bulk
/// transfers with 1 000 segments in flight each, while every flow of a full table still times
/// its handshake. Scaling it with `max_flows` keeps the analyzer's whole state proportional to
/// the table that the configuration checks against its memory limit. Measured (replays of
/// 2^20 one-SYN flows as in `host/tests/flow_bound.rs`, and of 65 536 connections sending 20
/// unacknowledged segments each): the first holds one 32-byte record buffer per flow of the
/// full table (2 MiB) and raised the host's peak RSS from 33–34 MiB to 38–41 MiB (the test
/// limit is 256 MiB); the second fills the budget (7 records per connection, 851 968 segments
/// refused and counted) and raised it from 62 MiB to 75 MiB: the 8 MiB of buffers and 2.75 MiB
/// of timing entries, as computed.
pub const BUDGET_BYTES_PER_FLOW: usize = 128;

/// Bytes the allocator may spend around one ring's buffer (dlmalloc's chunk header and its
/// rounding to 8 bytes are at most this), charged to the budget with the buffer itself.
const ALLOC_OVERHEAD: usize = 16;

/// Marks a flow without timing state.
pub const NONE: u32 = u32::MAX;

/// Half the sequence space: records of a sorted direction lie within it of the first.
const HALF: u32 = 1 << 31;

/// One distinct end of timed segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    /// The sequence number just past the segment (SYN and FIN count one).
    end: u32,
    /// How many listed segments end here (the first one and its repeats).
    count: u32,
    /// Packet time of the first segment listed with this end.
    sent_ns: u64,
}

/// Bytes one record takes in a ring.
const REC_BYTES: usize = size_of::<Rec>();

/// One direction's timed segments.
#[derive(Debug, Default)]
struct Timed {
    /// The buffer: the records are `recs[head..]`, distinct ends, sorted by their distance
    /// from the first one's unless `unsorted`. The slots before `head` were popped from the
    /// front; they are reclaimed when the buffer is full.
    recs: Vec<Rec>,
    /// Index of the first record in `recs`.
    head: u32,
    /// Listed segments, repeats included (Wireshark's `segment_count`).
    entries: u16,
    /// Set when a record could not be placed in order; cleared by the next ACK.
    unsorted: bool,
    /// log2 of the capacity the ring had when it last emptied: a bulk transfer empties its
    /// ring whenever everything in flight is acknowledged, and regrowing it one doubling at a
    /// time would reallocate it a dozen times per round trip.
    last_cap_log2: u8,
}

/// Where a new end goes in a direction's records.
enum Place {
    /// A record with this end exists at this index.
    Found(usize),
    /// Insert at this index and stay sorted.
    At(usize),
    /// Append and become unsorted.
    Unsorted,
}

/// Which cap refused to time a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// Its direction already lists [`MAX_UNACKED`] segments (Wireshark's cap).
    Direction,
    /// Its record needs memory that the budget shared by all flows does not have.
    Budget,
}

/// What one segment did to its flow's timing state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// Its acknowledgement number equals the end of a timed segment of the other direction:
    /// the time since that segment (the first sent with that end) in ns; tshark shows
    /// `tcp.analysis.acks_frame` then, and `tcp.analysis.ack_rtt` if this is not 0.
    pub acked_ns: Option<i64>,
    /// It carries payload, SYN or FIN but a cap refused to time it.
    pub refused: Option<Cap>,
}

/// Emptied rings of at most this many records are kept for reuse (see [`SPARES`]).
const SPARE_CAPACITY: usize = 4;

/// How many emptied rings are kept for reuse. Request/response traffic empties a ring at nearly
/// every ACK and needs one again at the next segment; reusing one saves an allocator round
/// trip each time (measured on the synthetic benchmark capture: 0.04 s of CPU per million
/// packets, most of what the timing costs there). Kept outside the budget: at most 256 rings
/// of 4 records, 20 KiB.
const SPARES: usize = 256;

/// The byte budget of the rings, shared by all flows, and the spare rings.
#[derive(Debug)]
struct Budget {
    used: usize,
    limit: usize,
    /// Emptied rings kept for reuse, not charged to the budget while here.
    spares: Vec<Vec<Rec>>,
}

/// Bytes charged for a ring buffer of `capacity` records.
fn ring_bytes(capacity: usize) -> usize {
    if capacity == 0 { 0 } else { capacity * REC_BYTES + ALLOC_OVERHEAD }
}

impl Budget {
    /// Makes room for one more record in `t.recs`, whose buffer is full. Without the budget:
    /// by reclaiming the slots before `head` if they are at least half of it. Else an empty
    /// ring gets the capacity it had when it last emptied (a spare ring if that is small) and
    /// a full one is doubled. If the budget allows neither and `partly`, the dead slots are
    /// reclaimed if there are any, else it grows as far as the budget allows. False if there is
    /// no room for a record. (The caller asks for `partly` only after sweeping expired flows, so
    /// that every decision that the budget can refuse depends only on the flows still alive.)
    fn grow(&mut self, t: &mut Timed, partly: bool) -> bool {
        let recs = &mut t.recs;
        let cap = recs.capacity();
        let dead = t.head as usize;
        if dead > 0 && dead * 2 >= cap {
            recs.drain(..dead);
            t.head = 0;
            return true;
        }
        let held = ring_bytes(cap);
        let avail = self.limit.saturating_sub(self.used) + held;
        let want = if cap == 0 { 1 << t.last_cap_log2 } else { cap * 2 };
        let mut new = want.min(usize::from(MAX_UNACKED));
        let spare = cap == 0 && new <= SPARE_CAPACITY;
        if spare && let Some(ring) = self.spares.last() {
            let bytes = ring_bytes(ring.capacity());
            if bytes <= avail
                && let Some(ring) = self.spares.pop()
            {
                *recs = ring;
                self.used += bytes;
                return true;
            }
        }
        if ring_bytes(new) > avail || (spare && !self.spares.is_empty()) {
            if !partly {
                return false;
            }
            if dead > 0 {
                recs.drain(..dead);
                t.head = 0;
                return true;
            }
            new = new.min(avail.saturating_sub(ALLOC_OVERHEAD) / REC_BYTES);
            if new <= cap {
                return false;
            }
        }
        recs.drain(..dead);
        t.head = 0;
        recs.reserve_exact(new - recs.len());
        self.used = self.used - held + ring_bytes(recs.capacity());
        true
    }

    /// Gives back what `t.recs` no longer needs: all of it once empty (a small ring to the
    /// spares), half once a quarter full.
    fn shrink(&mut self, t: &mut Timed) {
        let cap = t.recs.capacity();
        let live = t.len();
        if live == 0 {
            self.used -= ring_bytes(cap);
            t.last_cap_log2 = cap.max(1).ilog2() as u8;
            t.head = 0;
            let mut ring = std::mem::take(&mut t.recs);
            if cap <= SPARE_CAPACITY && self.spares.len() < SPARES {
                ring.clear();
                self.spares.push(ring);
            }
            return;
        }
        if cap >= 8 && live * 4 <= cap {
            t.recs.drain(..t.head as usize);
            t.head = 0;
            t.recs.shrink_to(live * 2);
            self.used = self.used - ring_bytes(cap) + ring_bytes(t.recs.capacity());
        }
    }

    /// Frees `recs`.
    fn free(&mut self, recs: &mut Vec<Rec>) {
        self.used -= ring_bytes(recs.capacity());
        *recs = Vec::new();
    }
}

impl Timed {
    /// The records.
    #[inline]
    fn live(&self) -> &[Rec] {
        &self.recs[self.head as usize..]
    }

    /// The number of records.
    #[inline]
    fn len(&self) -> usize {
        self.recs.len() - self.head as usize
    }

    /// Where a record ending at `end` is, or goes (an index into [`Timed::live`]).
    fn place(&self, end: u32) -> Place {
        let live = self.live();
        let (Some(first), Some(last)) = (live.first(), live.last()) else {
            return Place::At(0);
        };
        if self.unsorted {
            return match live.iter().position(|r| r.end == end) {
                Some(i) => Place::Found(i),
                None => Place::Unsorted,
            };
        }
        let base = first.end;
        let (d, span) = (end.wrapping_sub(base), last.end.wrapping_sub(base));
        if d < HALF {
            if d > span {
                return Place::At(live.len());
            }
            let i = live.partition_point(|r| r.end.wrapping_sub(base) < d);
            return if live[i].end == end { Place::Found(i) } else { Place::At(i) };
        }
        // Before the first record (or more than 2^31 after it): a new first one, if the span
        // from it to the last stays below 2^31.
        if u64::from(span) + (1u64 << 32) - u64::from(d) < u64::from(HALF) {
            Place::At(0)
        } else {
            Place::Unsorted
        }
    }

    /// Lists a segment ending at `end`, sent at `now_ns`, unless a cap refuses it (a ring may
    /// grow `partly` within the budget, see [`Budget::grow`]).
    fn insert(
        &mut self,
        end: u32,
        now_ns: u64,
        budget: &mut Budget,
        partly: bool,
    ) -> Result<(), Cap> {
        if self.entries >= MAX_UNACKED {
            return Err(Cap::Direction);
        }
        let place = self.place(end);
        if let Place::Found(i) = place {
            let head = self.head as usize;
            self.recs[head + i].count += 1;
        } else {
            if self.recs.len() == self.recs.capacity() && !budget.grow(self, partly) {
                return Err(Cap::Budget);
            }
            let rec = Rec { end, count: 1, sent_ns: now_ns };
            match place {
                Place::At(i) if i == self.len() => self.recs.push(rec),
                Place::At(i) => self.recs.insert(self.head as usize + i, rec),
                _ => {
                    self.recs.push(rec);
                    self.unsorted = true;
                }
            }
        }
        self.entries += 1;
        Ok(())
    }

    /// Applies acknowledgement number `ack`, seen at `now_ns`: removes every record it reaches
    /// and returns the time since the one ending exactly at it, if any.
    fn ack(&mut self, ack: u32, now_ns: u64, budget: &mut Budget) -> Option<i64> {
        let base = self.live().first()?.end;
        let mut sample = None;
        let mut removed = 0;
        if self.unsorted {
            self.recs.drain(..self.head as usize);
            self.head = 0;
            self.recs.retain(|r| {
                let gone = ack.wrapping_sub(r.end) as i32 >= 0;
                if gone {
                    removed += r.count;
                    if r.end == ack {
                        sample = Some(r.sent_ns);
                    }
                }
                !gone
            });
            // Whatever is left ends within (ack, ack + 2^31]: in order from ack, within 2^31.
            self.recs.sort_unstable_by_key(|r| r.end.wrapping_sub(ack));
            self.unsorted = false;
        } else {
            // The records that go are a prefix or a suffix: popped one by one, which costs no
            // more than removing them (an ACK usually removes one or two).
            let x = ack.wrapping_sub(base);
            if x < HALF {
                // The records up to the ACK go; the last of them may end exactly at it.
                while let Some(r) = self.recs.get(self.head as usize)
                    && r.end.wrapping_sub(base) <= x
                {
                    if r.end == ack {
                        sample = Some(r.sent_ns);
                    }
                    removed += r.count;
                    self.head += 1;
                }
            } else {
                // The ACK lies more than 2^31 after the first record: the records more than
                // 2^31 before it go, from the end (none can end exactly at it).
                while self.len() > 0
                    && let Some(r) = self.recs.last()
                    && r.end.wrapping_sub(base) > x - HALF
                {
                    removed += r.count;
                    self.recs.pop();
                }
            }
        }
        if removed > 0 {
            self.entries -= removed as u16;
            budget.shrink(self);
        }
        sample.map(|sent| now_ns.wrapping_sub(sent) as i64)
    }
}

/// The timing state of every flow in the table: a slab of per-flow entries (both directions),
/// found by the handle the flow keeps, and the byte budget of their rings.
#[derive(Debug)]
pub struct Timings {
    slots: Vec<[Timed; 2]>,
    free: Vec<u32>,
    budget: Budget,
}

impl Timings {
    /// Bytes one flow's slab entry takes (with its place in the free list): what a table must
    /// allow per flow, besides the shared ring budget.
    pub const PER_FLOW_BYTES: usize = size_of::<[Timed; 2]>() + size_of::<u32>();

    /// No timing state yet; the rings may take `budget_bytes` in all.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            budget: Budget { used: 0, limit: budget_bytes, spares: Vec::new() },
        }
    }

    /// Applies segment `seg`, sent in direction `dir`, to the timing state behind `handle`
    /// (a flow's, [`NONE`] if it has none yet: it is created when the segment is timed). The
    /// two directions' lists are independent, as in Wireshark; the ACK goes first so that the
    /// memory it frees is available to the segment.
    #[inline]
    pub fn segment(&mut self, handle: &mut u32, dir: usize, seg: &Segment) -> Timing {
        let timed = seg.len > 0 || seg.takes_sequence_number();
        if *handle == NONE {
            if !timed {
                // Nothing listed either way: the ACK cannot match anything.
                return Timing::default();
            }
            *handle = self.alloc();
        }
        let [a, b] = &mut self.slots[*handle as usize];
        let (fwd, rev) = if dir & 1 == 0 { (a, b) } else { (b, a) };
        let acked_ns = rev.ack(seg.ack, seg.time_ns, &mut self.budget);
        let refused = if timed {
            fwd.insert(seg.end(), seg.time_ns, &mut self.budget, false).err()
        } else {
            None
        };
        Timing { acked_ns, refused }
    }

    /// Tries again to time segment `seg` of direction `dir` behind `handle`, growing its ring
    /// as far as the budget allows (after [`Timings::segment`] found the budget short for
    /// doubling it, and the caller swept the expired flows).
    pub fn retry(&mut self, handle: u32, dir: usize, seg: &Segment) -> Option<Cap> {
        let fwd = &mut self.slots.get_mut(handle as usize)?[dir & 1];
        fwd.insert(seg.end(), seg.time_ns, &mut self.budget, true).err()
    }

    fn alloc(&mut self) -> u32 {
        match self.free.pop() {
            Some(h) => h,
            None => {
                self.slots.push(Default::default());
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Frees the timing state behind `handle` (a flow leaving the table or starting over).
    pub fn release(&mut self, handle: u32) {
        if let Some(dirs) = self.slots.get_mut(handle as usize) {
            for d in dirs {
                self.budget.free(&mut d.recs);
                *d = Timed::default();
            }
            self.free.push(handle);
        }
    }

    /// Ring bytes in use (capacity and allocation overhead), at most the budget.
    pub fn used_bytes(&self) -> usize {
        self.budget.used
    }

    /// Per-flow entries in use.
    pub fn flows(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// For tests: the distinct ends and listed segments of one direction behind `handle`.
    #[cfg(test)]
    pub fn direction(&self, handle: u32, dir: usize) -> (usize, usize) {
        self.slots.get(handle as usize).map_or((0, 0), |d| {
            let t = &d[dir & 1];
            (t.len(), usize::from(t.entries))
        })
    }
}
