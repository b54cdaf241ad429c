//! The `tcp-analysis` analyzer: Wireshark's TCP expert analysis, per connection, as metrics.
//!
//! Input: every record of every batch; TCP segments (records with a TCP header that are not IP
//! fragments) are analyzed, everything else is skipped. Output: the families below (the host
//! prefixes `wasmtap_`), and per-connection state bounded by a flow table.
//!
//! ```text
//! records ─▶ flow table (table.rs) ─▶ sequence analysis (analysis.rs) ─┬▶ updates (metrics.rs)
//!            by flow id, LRU, idle     tshark's rules, per direction    │  counters, histograms
//!                                   ─▶ round trips (rtt.rs) ───────────┘
//!                                      timed segments, per direction
//! ```
//!
//! # Metrics
//!
//! The per-segment counters carry `src_ip`, `dst_ip` and `device` of the flagged segment (its
//! sender, its receiver, the interface or file it was captured on), as tshark shows them.
//! Each counts the segments on which tshark 4.0 shows the field with its default preferences
//! (`tcp.analyze_sequence_numbers` on; `tcp.fastrt_supersedes_ooo` on; relative sequence numbers
//! on, which changes only what tshark displays: its analysis, like this one, runs on the
//! absolute numbers):
//!
//! | metric | tshark field | a segment counts when |
//! |---|---|---|
//! | `tcp_retransmissions_total` | `tcp.analysis.retransmission` | it is a retransmission, a fast retransmission or a spurious retransmission (tshark adds the `retransmission` expert item to all three, so this equals `tshark -Y tcp.analysis.retransmission`) |
//! | `tcp_fast_retransmissions_total` | `tcp.analysis.fast_retransmission` | see below |
//! | `tcp_spurious_retransmissions_total` | `tcp.analysis.spurious_retransmission` | see below |
//! | `tcp_out_of_order_total` | `tcp.analysis.out_of_order` | see below |
//! | `tcp_duplicate_acks_total` | `tcp.analysis.duplicate_ack` | see below |
//! | `tcp_zero_window_total` | `tcp.analysis.zero_window` | its window is 0 and none of SYN, FIN, RST is set, unless it is a zero-window probe |
//!
//! A segment gets at most one of retransmission, fast retransmission, spurious retransmission
//! and out-of-order. In tshark's order, for a segment with payload, SYN or FIN that is not a
//! keep-alive ("the sequence number did not advance" means its sequence number is below the
//! highest one seen in its direction, `nextseq`, unless it carries more than one byte starting
//! exactly one byte below `nextseq`, which is new data after a zero-window probe):
//! 1. **spurious retransmission**: it carries payload and all of it (`seq + len`) is at or below
//!    the last acknowledgement number the other side sent;
//! 2. **fast retransmission**: the sequence number did not advance, the other side has sent at
//!    least two duplicate ACKs in a row asking for exactly this sequence number, and its last
//!    segment came less than 20 ms before this one;
//! 3. **out-of-order**: the sequence number did not advance, this segment came sooner after the
//!    segment that last advanced `nextseq` than the connection's initial RTT (3 ms while the
//!    initial RTT is unknown), and it does not end exactly at `nextseq` (its end counting the
//!    SYN or FIN sequence number);
//! 4. **retransmission**: the sequence number did not advance.
//!
//! SYN and FIN take one sequence number each, so a retransmitted SYN or FIN is a retransmission
//! like retransmitted data, and a SYN with a new initial sequence number on the same ports starts
//! a new connection ("port numbers reused") instead. Comparisons are modulo 2^32 (Wireshark's
//! `LT_SEQ`/`GT_SEQ`), so sequence-number wraparound is handled.
//!
//! Other flags matter to the counts only through these rules:
//! - **duplicate ACK**: no payload, no SYN/FIN/RST, a non-zero window equal to this direction's
//!   previous one, the sequence number equal to `nextseq` and the same acknowledgement number as
//!   this direction's previous segment, and not a keep-alive ACK;
//! - **keep-alive**: zero or one byte at `nextseq - 1`, no SYN/FIN/RST; never a retransmission;
//! - **keep-alive ACK**: what would be a duplicate ACK right after a keep-alive from the other
//!   side; not counted as a duplicate ACK;
//! - **zero-window probe**: one byte at `nextseq` while the other side's last window was 0; it
//!   is not a zero window itself, and it does not advance `nextseq`, so repeated probes are not
//!   retransmissions (nor is the data that later starts with the probed byte);
//! - **zero-window probe ACK**: a repeated bare ACK with window 0 right after a probe; it is a
//!   zero window but not a duplicate ACK;
//! - **window update** (a bare ACK with a new window) is neither a duplicate ACK nor counted;
//! - **previous segment not captured** (a sequence number beyond `nextseq`) moves `nextseq` on;
//!   the segments that fill the gap later are then out-of-order or retransmissions as above;
//! - **ACKed unseen segment** (an ACK from A beyond B's highest contiguous sequence number): if
//!   B has sent beyond a gap, its highest contiguous sequence number jumps to its highest one;
//!   otherwise B's duplicate-ACK count becomes Wireshark's -1, which tshark 4.0 keeps unsigned,
//!   so that A's next retransmission of the sequence number B last acknowledged, within 20 ms of
//!   B's last segment, is "fast" without any duplicate ACK (and B's next duplicate ACK counts as
//!   its first);
//! - **RST** segments are never duplicate ACKs, zero windows or keep-alives, and carry no
//!   sequence space; a retransmitted SYN first restores `nextseq` as Wireshark does, so that a
//!   RST in between does not hide it.
//!
//! # Round-trip times
//!
//! `tcp_ack_rtt_seconds{src_ip,dst_ip,device}` holds one observation for every value tshark 4.0
//! gives `tcp.analysis.ack_rtt`, and `tcp_handshake_seconds{src_ip,dst_ip,device}` one per
//! connection for `tcp.analysis.initial_rtt`, as `tcp_analyze_sequence_number` and `dissect_tcp`
//! in Wireshark's `packet-tcp.c` compute them (sequence analysis on, its default).
//!
//! **ACK RTT.** Labels: `src_ip` sent the acknowledged data, `dst_ip` acknowledged it (the ACK's
//! sender), `device` is the ACK's, so a pair's RTT sits beside its retransmission counters.
//! - *Timed*: every segment with payload, SYN or FIN, whatever else tshark says of it:
//!   retransmissions (fast, spurious), out-of-order segments, keep-alives that carry their byte,
//!   zero-window probes, SYN/ACKs, FIN/ACKs, RSTs with payload. Its end is `seq + len`, plus one
//!   for SYN or FIN (one for both), modulo 2^32. Pure ACKs, window updates, keep-alives without
//!   a byte and RSTs without payload are not timed.
//! - *Which ACK gives a sample*: the acknowledgement number of every analyzed segment, whatever
//!   its flags (that of a SYN or a bare RST too, usually 0), is checked against the other
//!   direction's timed segments. If one of them ends exactly there, the sample is this
//!   segment's packet time minus the time that segment was first sent.
//! - *Cumulative and partial ACKs*: every timed segment that the ACK reaches — ending at or
//!   before it, modulo 2^32 (`(ack - end) as i32 >= 0`) — is forgotten; only one ending exactly
//!   at it gives a sample, so a cumulative ACK samples the last segment it covers, if it ends
//!   there, and drops the others unsampled. An ACK inside a segment keeps it, to be sampled by a
//!   later ACK of its end, from its send time; an ACK beyond every end drops them all unsampled.
//!   SACK blocks are not read.
//! - *Retransmissions*: a retransmitted segment is timed again, but a sample is measured from the
//!   first send of that end still remembered (no Karn filtering: Wireshark's oldest list entry
//!   wins), so a retransmission timeout shows as a long RTT. A retransmission sent after the
//!   last ACK is remembered anew, so a duplicate ACK of its end samples it.
//! - *Zero and negative values*: a sample of exactly 0 (ACK and data with the same capture
//!   timestamp, common in microsecond captures) is not observed: tshark then shows
//!   `acks_frame` without `ack_rtt`. A negative one (the capture clock stepped back) is observed
//!   as tshark shows it: in the first bucket, subtracted from the sum.
//! - *Caps*: a direction remembers at most 10 000 timed segments (repeats included),
//!   Wireshark's `TCP_MAX_UNACKED_SEGMENTS`; and the records of all flows (16 bytes per distinct
//!   end, in buffers that double as they fill and are freed as ACKs empty them) share a budget
//!   of 128 bytes per flow of `max_flows` (8 MiB by default). A segment either cap refuses is
//!   counted in `tcp_analysis_rtt_segments_untimed_total` (no labels) and not timed: its ACK
//!   gives no sample. Before refusing for the budget the analyzer forgets the connections that
//!   have expired, so the result does not depend on when expiry last ran.
//!
//! **Handshake.** `src_ip` is the client (the sender of the SYN the time is measured from),
//! `dst_ip` the server, `device` that of the connection's first packet. The value is tshark's
//! initial RTT: from the most recent SYN without ACK to the first segment after it with ACK and
//! without SYN, from either side (the client's ACK, or the server's data, FIN/ACK or RST/ACK).
//! A result of 0 leaves it unknown (the next such segment computes it again); a negative one is
//! observed. It is observed once per connection (a SYN with a new initial sequence number on the
//! same ports starts a new one), and only if tshark shows it: tshark prints it on segments with
//! an analysis subtree, which from the completing segment on means one that acknowledges the
//! end of a timed segment exactly (even with a 0 sample) or carries payload. The value waits
//! for such a segment; a connection without one is never observed. A retransmitted SYN does not
//! inflate it: tshark measures from the last SYN.
//!
//! **Buckets** (both histograms, seconds): 25 µs, 50 µs, 100 µs, 250 µs, 500 µs, 1 ms, 2.5 ms,
//! 5 ms, 10 ms, 25 ms, 50 ms, 100 ms, 250 ms, 500 ms, 1 s, 2.5 s, 5 s, 10 s: about ×2.5 apart
//! from a veth pair or loopback (tens of µs) through one data centre (hundreds of µs),
//! regional and intercontinental paths (ms to hundreds of ms) to retransmission timeouts (1 s
//! and its doublings).
//!
//! # Connection duration (label `device`: the device of the connection's first packet)
//!
//! `tcp_connection_duration_seconds` is observed once per connection, from its first packet
//! (the first SYN, or the first segment seen if the capture missed the SYN) to the packet that
//! closed it: the second direction's first FIN, or the first RST. A connection that is not
//! closed is observed up to its last packet when it leaves the flow table: idle expiry,
//! eviction, a new SYN reusing its ports, or the end of the capture (`tick` with
//! `end_of_capture`): open connections count as closed by the end of the capture. tshark has no
//! such field; this is wasmtap's definition. Times are packet times.
//!
//! # Flow state, and the counter `tcp_analysis_flows_evicted_total`
//!
//! Connections are keyed by the host's flow id (a hash of the 5-tuple, the same both ways) and
//! the direction bit; both directions share one entry of 160 bytes. A connection that times a
//! segment also gets a timing entry (40 bytes in wasm) and record buffers within the shared
//! budget above, all freed when it leaves the table. The table holds at most `max_flows`
//! connections (config key `max_flows`, default 65 536: about 23 MiB in wasm with the index,
//! the timing entries and the RTT budget, if all are in use; the analyzer refuses a `max_flows`
//! whose total would pass 40 MiB, about 110 000, inside the host's 64 MiB per instance). Packet
//! time, made monotonic (the latest packet time seen so far), drives expiry: an open connection
//! with no packet for `idle_timeout_seconds` (default 300) is forgotten, and a closed one is
//! kept for `closed_linger_seconds` (default 60, Linux's TIME_WAIT) so that late ACKs (the one
//! of the last FIN, which gives its RTT) and retransmitted FINs are still classified. Expiry is
//! checked when the connection's next packet arrives, when the table is full or the RTT budget
//! short, and in every `tick`, with the same rule, so results do not depend on batch
//! boundaries or tick timing. When the table is full and nothing has expired, the least
//! recently seen closed connection, else the least recently seen open one, is evicted and
//! counted in `tcp_analysis_flows_evicted_total` (no labels). A connection seen again after it
//! was forgotten starts over as if the capture began there.
//!
//! # Where this can differ from tshark
//!
//! - Wireshark never forgets a connection; this analyzer does after the timeouts above or an
//!   eviction, and a long-silent connection that resumes is then analyzed afresh (its timed
//!   segments forgotten). So does a connection in a capture whose clock steps back by more than
//!   the idle timeout.
//! - Wireshark has no memory budget: a segment refused for it (counted) is one tshark times.
//! - Only the TCP the host decodes is analyzed (inside a tunnel, the innermost packet of the
//!   tunnels it opens), not link types or tunnels it does not read, which tshark may dissect.
//! - The host's flow id covers the tunnel's id (VNI, GRE key): a connection whose two
//!   directions travel with different ids (tcpdump's `geneve.pcap`: VNI 10 one way, 11 back) is
//!   two one-way flows here, so its ACKs never meet its data (no ACK RTT) and each direction is
//!   analyzed alone; tshark pairs them by the inner addresses and ports.
//! - IP fragments are skipped (tshark analyzes the reassembled segment, and its ACK).
//! - Wireshark stops adding the SYN/FIN sequence number to `nextseq` once 10 000 segments of a
//!   direction are unacknowledged (one-sided captures); this analyzer always adds it.
//! - Two connections whose 64-bit flow ids collide share state.

mod analysis;
mod metrics;
mod rtt;
mod table;

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Direction, Updates};

use crate::metrics::Metrics;
use crate::table::{FlowTable, Stage};

pub use crate::analysis::{Connection, Outcome, Segment, flag};

/// Default `max_flows`: 65 536 connections take at most about 23 MiB in wasm (slab and index,
/// 12 MiB; timing entries and the RTT budget, 11 MiB, allocated only as flows time segments),
/// a third of the host's 64 MiB per-instance cap, and cover a busy server's concurrent
/// connections per worker.
const DEFAULT_MAX_FLOWS: usize = 65_536;

/// Largest flow table, with its timing state, that `max_flows` may ask for: 40 MiB leaves room
/// for the batch buffer, the update lists and the allocator inside the host's 64 MiB
/// per-instance cap.
const MAX_TABLE_BYTES: usize = 40 << 20;

/// Default `idle_timeout_seconds`: 5 minutes, as long as common proxies and load balancers
/// keep an idle connection; one silent for longer has most likely gone (its close not captured),
/// and keeping it would only crowd the table.
const DEFAULT_IDLE_TIMEOUT_S: f64 = 300.0;

/// Default `closed_linger_seconds`: 60 s, as long as Linux keeps a closed connection in
/// TIME_WAIT, so late ACKs, retransmitted FINs and trailing RSTs are still analyzed.
const DEFAULT_CLOSED_LINGER_S: f64 = 60.0;

/// Nanoseconds per second, for the timeouts.
const NS_PER_S: f64 = 1e9;

/// The analyzer: the flow table, the metric handles and the monotonic packet clock.
pub struct TcpAnalysis {
    table: FlowTable,
    metrics: Metrics,
    /// The latest packet time seen (or tick time), in ns.
    clock_ns: u64,
}

/// Reads a positive number of seconds from `config` as ns.
fn seconds(config: &Config, key: &str, default: f64) -> Result<u64, String> {
    let s = match config.get(key) {
        None => default,
        Some(v) => {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
                .ok_or_else(|| format!("{key}: expected a positive number of seconds, got {v:?}"))?
        }
    };
    Ok((s * NS_PER_S) as u64)
}

/// Reads `max_flows` from `config`.
fn max_flows(config: &Config) -> Result<usize, String> {
    let Some(v) = config.get("max_flows") else {
        return Ok(DEFAULT_MAX_FLOWS);
    };
    let n = v
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("max_flows: expected a positive integer, got {v:?}"))?;
    let bytes = FlowTable::memory_bytes(n);
    if bytes > MAX_TABLE_BYTES {
        return Err(format!(
            "max_flows: {n} flows would take {} MiB, more than the {} MiB this analyzer allows \
             itself inside the host's memory cap",
            bytes >> 20,
            MAX_TABLE_BYTES >> 20
        ));
    }
    Ok(n)
}

impl TcpAnalysis {
    /// Number of connections in the flow table.
    pub fn flows(&self) -> usize {
        self.table.len()
    }

    /// Connections holding timing state, and the bytes their records take (buffer capacity and
    /// allocation overhead, what the shared budget counts).
    pub fn timing_memory(&self) -> (usize, usize) {
        let t = self.table.timings();
        (t.flows(), t.used_bytes())
    }
}

impl Analyzer for TcpAnalysis {
    // Ours, and tested not to fail: the cheaper path is worth the rare loss.
    const HOLD_UPDATES: bool = true;

    fn init(config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let max = max_flows(config)?;
        let idle = seconds(config, "idle_timeout_seconds", DEFAULT_IDLE_TIMEOUT_S)?;
        let linger = seconds(config, "closed_linger_seconds", DEFAULT_CLOSED_LINGER_S)?;
        let mut info = AnalyzerInfo::new("tcp-analysis", env!("CARGO_PKG_VERSION"));
        let metrics = Metrics::declare(&mut info);
        Ok((Self { table: FlowTable::new(max, idle, linger), metrics, clock_ns: 0 }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        let Self { table, metrics, clock_ns } = self;
        for p in batch {
            if !p.has_tcp() || p.is_fragment() {
                continue;
            }
            let seg = Segment {
                time_ns: p.time_ns(),
                seq: p.seq(),
                ack: p.ack_num(),
                len: p.payload_len(),
                window: p.window(),
                flags: p.tcp_flags(),
            };
            let dir = match p.direction() {
                Direction::FromLower => 0,
                Direction::FromHigher => 1,
            };
            *clock_ns = (*clock_ns).max(seg.time_ns);
            let now = *clock_ns;
            let slot = table.get_or_insert(p.flow_id(), now, p.device(), &mut |flow, why| {
                metrics.removed(flow, why, out)
            });
            let flow = table.flow_mut(slot);
            let mut closed = flow.is_closed();
            if flow.conn.is_reused_by(dir, &seg) {
                // A new connection on the same ports: the old one ended at its last packet.
                if !closed {
                    metrics.duration(flow, out);
                }
                table.restart(slot, now, p.device());
                closed = false;
            }
            let outcome = table.flow_mut(slot).conn.analyze(dir, &seg);
            metrics.segment(&p, outcome.flags, out);
            let timing =
                table.time(slot, dir, &seg, now, &mut |flow, why| metrics.removed(flow, why, out));
            if timing.refused.is_some() {
                metrics.untimed(out);
            }
            if let Some(rtt) = timing.acked_ns {
                metrics.ack_rtt(&p, rtt, out);
            }
            let flow = table.flow_mut(slot);
            if let Some((rtt, client)) = flow.conn.show_initial_rtt(timing.acked_ns.is_some(), &seg)
            {
                metrics.handshake(&p, dir == client, flow.device, rtt, out);
            }
            if seg.is_fin() {
                flow.fins |= 1 << dir;
            }
            if !closed && (seg.is_rst() || flow.fins == 0b11) {
                flow.last_ns = now;
                metrics.duration(flow, out);
                closed = true;
            }
            table.touch(slot, now, if closed { Stage::Closed } else { Stage::Open });
        }
        Ok(())
    }

    fn tick(&mut self, now_ns: u64, end_of_capture: bool, out: &mut Updates) -> Result<(), String> {
        let Self { table, metrics, clock_ns } = self;
        *clock_ns = (*clock_ns).max(now_ns);
        let mut removed = |flow: &table::Flow, why| metrics.removed(flow, why, out);
        if end_of_capture {
            table.drain(&mut removed);
        } else {
            table.expire(*clock_ns, &mut removed);
        }
        Ok(())
    }
}

wasmtap_sdk::export_analyzer!(TcpAnalysis);

#[cfg(test)]
mod tests;
