//! Sequence analysis stage: Wireshark's TCP expert rules, applied to one segment of one
//! connection.
//!
//! Input: a [`Segment`] (the TCP fields of one packet record) and the index of the direction it
//! travels in. Output: the [`flag`] bits tshark would set on it (`tcp.analysis.*`); the
//! per-direction state is updated in place, and with it the connection's initial RTT, which
//! [`Connection::show_initial_rtt`] hands out once, when tshark would first show it.
//!
//! The rules follow `tcp_analyze_sequence_number` and the conversation handling of `dissect_tcp`
//! in Wireshark 4.0's `epan/dissectors/packet-tcp.c`, with tshark's default preferences (analyze
//! sequence numbers on, `tcp.fastrt_supersedes_ooo` on). The analysis runs on absolute sequence
//! numbers, as Wireshark's does (relative numbers only change what it displays), and like
//! Wireshark it treats a stored value of zero (`nextseq`, `lastack`, `maxseqtobeacked`) as "not
//! seen yet". Flags that cannot change any count exported here (window update, window full,
//! previous segment not captured, ACKed unseen segment) are not kept, but their side effects on
//! the state are reproduced.

/// The `tcp.analysis` flags a segment can get (a subset of Wireshark's `TCP_A_*`).
pub mod flag {
    /// `tcp.analysis.retransmission` on its own (not fast, not spurious).
    pub const RETRANSMISSION: u16 = 0x0001;
    /// `tcp.analysis.fast_retransmission` (tshark also shows `tcp.analysis.retransmission`).
    pub const FAST_RETRANSMISSION: u16 = 0x0002;
    /// `tcp.analysis.spurious_retransmission` (tshark also shows `tcp.analysis.retransmission`).
    pub const SPURIOUS_RETRANSMISSION: u16 = 0x0004;
    /// `tcp.analysis.out_of_order`.
    pub const OUT_OF_ORDER: u16 = 0x0008;
    /// `tcp.analysis.duplicate_ack`.
    pub const DUPLICATE_ACK: u16 = 0x0010;
    /// `tcp.analysis.zero_window`.
    pub const ZERO_WINDOW: u16 = 0x0020;
    /// `tcp.analysis.zero_window_probe`.
    pub const ZERO_WINDOW_PROBE: u16 = 0x0040;
    /// `tcp.analysis.zero_window_probe_ack`.
    pub const ZERO_WINDOW_PROBE_ACK: u16 = 0x0080;
    /// `tcp.analysis.keep_alive`.
    pub const KEEP_ALIVE: u16 = 0x0100;
    /// `tcp.analysis.keep_alive_ack`.
    pub const KEEP_ALIVE_ACK: u16 = 0x0200;
    /// Any of the three that tshark reports as `tcp.analysis.retransmission`.
    pub const ANY_RETRANSMISSION: u16 =
        RETRANSMISSION | FAST_RETRANSMISSION | SPURIOUS_RETRANSMISSION;
}

/// TCP flag bits, as in the record's flags byte.
mod th {
    /// FIN: takes one sequence number.
    pub const FIN: u8 = 0x01;
    /// SYN: takes one sequence number.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK: the acknowledgement number is valid.
    pub const ACK: u8 = 0x10;
}

/// A retransmission this soon after the last ACK from the other side, repeating the
/// duplicate-ACKed sequence number, is "fast" (Wireshark's fixed 20 ms).
const FAST_RETRANSMISSION_WINDOW_NS: u64 = 20_000_000;

/// Out-of-order threshold before the connection has an initial RTT (Wireshark's fixed 3 ms);
/// once it has one, the initial RTT is the threshold.
const DEFAULT_OUT_OF_ORDER_NS: u64 = 3_000_000;

/// Wireshark's duplicate-ACK count of -1 (set after an "ACKed unseen segment"), which it
/// keeps in an unsigned field: it therefore passes the "at least two duplicate ACKs" test of a
/// fast retransmission, and the next duplicate ACK counts as the first.
const UNSEEN_ACKED: u32 = u32::MAX;

/// `a < b` in sequence space (Wireshark's `LT_SEQ`): correct across the 2^32 wrap.
#[inline]
fn lt_seq(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in sequence space (`LE_SEQ`).
#[inline]
fn le_seq(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// `a > b` in sequence space (`GT_SEQ`).
#[inline]
fn gt_seq(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The fields of one TCP segment that the analysis reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Packet time, ns since the Unix epoch (as captured, not made monotonic).
    pub time_ns: u64,
    /// Sequence number (absolute).
    pub seq: u32,
    /// Acknowledgement number (absolute; whatever the header holds, even without ACK).
    pub ack: u32,
    /// Payload length from the IP and TCP header lengths (`tcp.len`).
    pub len: u32,
    /// Window as sent, not scaled.
    pub window: u16,
    /// TCP flags byte.
    pub flags: u8,
}

impl Segment {
    fn has(&self, bits: u8) -> bool {
        self.flags & bits != 0
    }

    /// SYN without ACK: a connection request.
    pub fn is_syn_only(&self) -> bool {
        self.flags & (th::SYN | th::ACK) == th::SYN
    }

    /// RST set.
    pub fn is_rst(&self) -> bool {
        self.has(th::RST)
    }

    /// FIN set.
    pub fn is_fin(&self) -> bool {
        self.has(th::FIN)
    }

    /// SYN or FIN set: the segment takes one sequence number besides its payload.
    pub fn takes_sequence_number(&self) -> bool {
        self.has(th::SYN | th::FIN)
    }

    /// The sequence number just past the segment: its payload, plus one for SYN or FIN (one for
    /// both together), modulo 2^32.
    pub fn end(&self) -> u32 {
        self.seq.wrapping_add(self.len).wrapping_add(u32::from(self.takes_sequence_number()))
    }
}

/// What Wireshark keeps per direction (`tcp_flow_t` and its `tcp_analyze_seq_flow_info_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Direction {
    /// Highest sequence number seen plus one (SYN and FIN count one); 0 = none yet.
    next_seq: u32,
    /// Highest contiguous sequence number seen; 0 = none yet.
    max_seq_to_be_acked: u32,
    /// Acknowledgement number of this direction's last segment.
    last_ack: u32,
    /// The initial sequence number as guessed by Wireshark (only its reuse check reads it).
    base_seq: u32,
    /// Packet time at which `next_seq` last advanced.
    next_seq_time_ns: u64,
    /// Packet time of this direction's last segment.
    last_ack_time_ns: u64,
    /// Raw window of the last segment; `u32::MAX` before the first one, so that it never
    /// equals a real (16-bit) window.
    window: u32,
    /// Duplicate ACKs in a row, or [`UNSEEN_ACKED`] after an "ACKed unseen segment".
    dup_acks: u32,
    /// The keep-alive and zero-window-probe flags of the last segment.
    last_flags: u16,
    /// Whether `base_seq` is set.
    base_set: bool,
}

impl Direction {
    const NEW: Self = Self {
        next_seq: 0,
        max_seq_to_be_acked: 0,
        last_ack: 0,
        base_seq: 0,
        next_seq_time_ns: 0,
        last_ack_time_ns: 0,
        window: u32::MAX,
        dup_acks: 0,
        last_flags: 0,
        base_set: false,
    };
}

/// The analysis state of one TCP conversation (Wireshark's `tcp_analysis`, reduced to what the
/// exported counts depend on): both directions, the last SYN time and the initial RTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    dirs: [Direction; 2],
    /// Time of the most recent SYN (without ACK); 0 = none.
    mru_syn_ns: u64,
    /// Initial RTT (`tcp.analysis.initial_rtt`) in ns; 0 = not known. Signed because a capture
    /// whose clock steps back can make it negative, as in Wireshark.
    first_rtt_ns: i64,
    /// Direction of the most recent SYN (without ACK) up to the initial RTT: the client's.
    client_dir: u8,
    /// Whether [`Connection::show_initial_rtt`] has handed the initial RTT out.
    first_rtt_shown: bool,
}

/// What one segment got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The [`flag`] bits.
    pub flags: u16,
}

impl Default for Connection {
    fn default() -> Self {
        Self::NEW
    }
}

impl Connection {
    /// A connection with nothing seen.
    pub const NEW: Self = Self {
        dirs: [Direction::NEW; 2],
        mru_syn_ns: 0,
        first_rtt_ns: 0,
        client_dir: 0,
        first_rtt_shown: false,
    };

    /// Whether `seg`, sent in direction `dir`, starts a new connection on the same ports: a SYN
    /// (without ACK) whose sequence number differs from the one this direction started with.
    /// Wireshark then opens a new conversation ("TCP port numbers reused"); the caller replaces
    /// this state with a new one.
    pub fn is_reused_by(&self, dir: usize, seg: &Segment) -> bool {
        let d = &self.dirs[dir & 1];
        seg.is_syn_only() && d.base_set && seg.seq != d.base_seq
    }

    /// Analyzes one segment sent in direction `dir` (0 or 1; the record's direction bit). Check
    /// [`Connection::is_reused_by`] first: a SYN that starts a new connection belongs to a new
    /// `Connection`.
    pub fn analyze(&mut self, dir: usize, seg: &Segment) -> Outcome {
        let first_rtt_ns = self.first_rtt_ns;
        let (fwd, rev) = self.split(dir);
        if fwd.base_set {
            if seg.is_syn_only() {
                // The same SYN again: Wireshark restores the next sequence number (a RST may
                // have moved it) so that the retransmitted SYN is analyzed as one.
                fwd.next_seq = fwd.max_seq_to_be_acked;
            } else if seg.flags & (th::SYN | th::ACK) == th::SYN | th::ACK
                && seg.seq != fwd.base_seq
            {
                fwd.base_seq = seg.seq;
            }
        }
        let flags = analyze_sequence(fwd, rev, seg, first_rtt_ns);
        if seg.is_syn_only() {
            self.mru_syn_ns = seg.time_ns;
            if self.first_rtt_ns == 0 {
                self.client_dir = (dir & 1) as u8;
            }
        }
        if seg.flags & (th::SYN | th::ACK) == th::ACK
            && self.mru_syn_ns != 0
            && self.first_rtt_ns == 0
        {
            // The first segment with ACK and without SYN after a SYN completes the handshake
            // (tshark's iRTT). A result of 0 leaves it unknown: the next one computes it again.
            self.first_rtt_ns = seg.time_ns.wrapping_sub(self.mru_syn_ns) as i64;
        }
        Outcome { flags }
    }

    /// The initial RTT in ns (not 0; negative if the capture's clock stepped back) and the
    /// client's direction (the sender of the SYN it was measured from), once per connection: on
    /// the first segment, from the one that completed the handshake on, that tshark shows it on.
    /// tshark shows `tcp.analysis.initial_rtt` only on a segment with an analysis subtree, which
    /// from the handshake on is one that acknowledges the end of a timed segment exactly
    /// (`acked_exactly`: it shows `tcp.analysis.acks_frame`) or that carries payload; a
    /// connection with no such segment never shows it. Call after [`Connection::analyze`].
    pub fn show_initial_rtt(&mut self, acked_exactly: bool, seg: &Segment) -> Option<(i64, usize)> {
        if self.first_rtt_ns == 0 || self.first_rtt_shown || !(acked_exactly || seg.len > 0) {
            return None;
        }
        self.first_rtt_shown = true;
        Some((self.first_rtt_ns, usize::from(self.client_dir)))
    }

    fn split(&mut self, dir: usize) -> (&mut Direction, &mut Direction) {
        let [a, b] = &mut self.dirs;
        if dir & 1 == 0 { (a, b) } else { (b, a) }
    }
}

/// Wireshark's `tcp_analyze_sequence_number` for one segment: classifies it and updates both
/// directions' state. `first_rtt_ns` is the connection's initial RTT (0 if not known yet).
fn analyze_sequence(
    fwd: &mut Direction,
    rev: &mut Direction,
    seg: &Segment,
    first_rtt_ns: i64,
) -> u16 {
    let (seq, ack, len) = (seg.seq, seg.ack, seg.len);
    let window = u32::from(seg.window);
    let control = seg.has(th::SYN | th::FIN | th::RST);

    if !fwd.base_set {
        fwd.base_seq = if seg.has(th::SYN) { seq } else { seq.wrapping_sub(1) };
        fwd.base_set = true;
    }
    if !rev.base_set && seg.has(th::ACK) {
        rev.base_seq = ack.wrapping_sub(1);
        rev.base_set = true;
    }

    let mut flags = classify_fwd(fwd, rev, seg, window, control);

    // The ACK number moved on: the duplicate-ACK run is over.
    if ack != fwd.last_ack {
        fwd.dup_acks = 0;
    }

    // "ACKed unseen segment": this ACK covers data the other direction was not seen sending.
    // If that direction's highest contiguous sequence number is below its highest one, it jumps
    // there; otherwise its duplicate-ACK count becomes Wireshark's -1.
    if rev.max_seq_to_be_acked != 0 && gt_seq(ack, rev.max_seq_to_be_acked) && seg.has(th::ACK) {
        if lt_seq(rev.max_seq_to_be_acked, rev.next_seq) {
            rev.max_seq_to_be_acked = rev.next_seq;
        } else {
            rev.dup_acks = UNSEEN_ACKED;
        }
    }

    if len > 0 || seg.has(th::SYN | th::FIN) {
        flags |= classify_retransmission(fwd, rev, seg, flags, first_rtt_ns);
    }

    // Where this segment ends; SYN and FIN take one sequence number.
    let next_seq = seg.end();
    // A zero-window probe does not advance the sequence space.
    let probe = flags & flag::ZERO_WINDOW_PROBE != 0;
    if (gt_seq(next_seq, fwd.next_seq) || fwd.next_seq == 0) && !probe {
        fwd.next_seq = next_seq;
        fwd.next_seq_time_ns = seg.time_ns;
    }
    if (seq == fwd.max_seq_to_be_acked || fwd.max_seq_to_be_acked == 0) && !probe {
        fwd.max_seq_to_be_acked = fwd.next_seq;
    }
    fwd.window = window;
    fwd.last_ack = ack;
    fwd.last_ack_time_ns = seg.time_ns;
    fwd.last_flags = flags & (flag::KEEP_ALIVE | flag::ZERO_WINDOW_PROBE);
    flags
}

/// The window and ACK checks of one segment, up to Wireshark's `finished_fwd` label: zero
/// window (probe, ACK), keep-alive (ACK) and duplicate ACK.
fn classify_fwd(
    fwd: &mut Direction,
    rev: &Direction,
    seg: &Segment,
    window: u32,
    control: bool,
) -> u16 {
    let (seq, ack, len) = (seg.seq, seg.ack, seg.len);
    // One byte at the next sequence number while the other side advertises a zero window.
    if len == 1 && seq == fwd.next_seq && rev.window == 0 {
        return flag::ZERO_WINDOW_PROBE;
    }
    let mut flags = 0;
    if window == 0 && !control {
        flags |= flag::ZERO_WINDOW;
    }
    // Zero or one byte, one before the next sequence number.
    if len <= 1 && seq == fwd.next_seq.wrapping_sub(1) && !control {
        flags |= flag::KEEP_ALIVE;
    }
    // The rest all describe a bare ACK repeating this direction's previous one.
    let repeats =
        len == 0 && window == fwd.window && seq == fwd.next_seq && ack == fwd.last_ack && !control;
    if !repeats {
        return flags;
    }
    if window != 0 && rev.last_flags & flag::KEEP_ALIVE != 0 {
        return flags | flag::KEEP_ALIVE_ACK;
    }
    if window == 0 && rev.last_flags & flag::ZERO_WINDOW_PROBE != 0 {
        return flags | flag::ZERO_WINDOW_PROBE_ACK;
    }
    if window != 0 {
        fwd.dup_acks = if fwd.dup_acks == UNSEEN_ACKED { 1 } else { fwd.dup_acks.wrapping_add(1) };
        flags |= flag::DUPLICATE_ACK;
    }
    flags
}

/// Retransmission, fast or spurious retransmission, or out-of-order, for a segment that
/// carries data, SYN or FIN; `flags` are those found so far.
fn classify_retransmission(
    fwd: &Direction,
    rev: &Direction,
    seg: &Segment,
    flags: u16,
    first_rtt_ns: i64,
) -> u16 {
    let (seq, len) = (seg.seq, seg.len);
    // A keep-alive is never a retransmission.
    if flags & flag::KEEP_ALIVE != 0 {
        return 0;
    }
    let mut not_advanced = fwd.next_seq != 0 && lt_seq(seq, fwd.next_seq);
    // New data starting one byte early (after a zero-window probe) is not a retransmission.
    if len > 1 && fwd.next_seq.wrapping_sub(1) == seq {
        not_advanced = false;
    }
    // Data the other side has already acknowledged.
    if len > 0 && rev.last_ack != 0 && le_seq(seq.wrapping_add(len), rev.last_ack) {
        return flag::SPURIOUS_RETRANSMISSION;
    }
    // Repeats the sequence number the other side's duplicate ACKs ask for, soon after them.
    // (Times are subtracted as unsigned 64-bit numbers, as in Wireshark: a time before the
    // reference is a huge interval.)
    let since_ack = seg.time_ns.wrapping_sub(rev.last_ack_time_ns);
    if not_advanced
        && rev.dup_acks >= 2
        && rev.last_ack == seq
        && since_ack < FAST_RETRANSMISSION_WINDOW_NS
    {
        return flag::FAST_RETRANSMISSION;
    }
    // Came soon after the highest segment so far and fills a gap below it.
    let since_next = seg.time_ns.wrapping_sub(fwd.next_seq_time_ns);
    let threshold = if first_rtt_ns == 0 { DEFAULT_OUT_OF_ORDER_NS } else { first_rtt_ns as u64 };
    if not_advanced && since_next < threshold && fwd.next_seq != seg.end() {
        return flag::OUT_OF_ORDER;
    }
    if not_advanced { flag::RETRANSMISSION } else { 0 }
}
