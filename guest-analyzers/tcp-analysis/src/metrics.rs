//! Metrics stage: the families this analyzer declares and how analysis results become updates.
//!
//! Input: the [`flag`](crate::analysis::flag) bits of each segment with its packet's labels,
//! ACK round-trip times and initial RTTs with the packet that shows them, segments a cap left
//! untimed, and flows leaving the table. Output: counter increments and histogram observations
//! in the call's [`Updates`] (which aggregates them per series).

use wasmtap_sdk::{AnalyzerInfo, Counter, Histogram, Label, Packet, Updates};

use crate::analysis::flag;
use crate::table::{Flow, Removal};

/// Labels of the per-segment counters: sender, receiver and device of the flagged segment.
const SEGMENT_LABELS: [&str; 3] = ["src_ip", "dst_ip", "device"];

/// Buckets of both round-trip histograms (ACK RTT and handshake), in seconds: 1, 2.5, 5 per
/// decade (about ×2.5 apart, 18 bounds) from 25 µs to 10 s, so that one set serves data-centre
/// and internet paths alike. 25–100 µs: loopback, veth pairs and one host's pods (a quantile
/// still resolves there); 250 µs–1 ms: one data centre, across nodes and racks; 2.5–50 ms:
/// regional and continental paths; 100–500 ms: intercontinental, satellite and mobile paths and
/// delayed ACKs (Linux waits up to 40 ms, others up to 200 ms); 1–10 s: retransmission
/// timeouts (Linux's initial one is 1 s, then it doubles), so a sample measured from a segment's
/// first send across its retransmissions, or a handshake that waited for a retransmitted SYN/ACK,
/// lands in a bucket of its own. A zero-window probe answered after a long stall goes to +Inf.
/// Negative values (a capture clock that stepped back) fall in the first bucket.
const RTT_BUCKETS: [f64; 18] = [
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0, 2.5, 5.0, 10.0,
];

/// Connection duration buckets, in seconds: 1–100 ms for single request/response exchanges on
/// a LAN, 0.5–10 s for page loads and short transfers, 30 s–1 h for long-lived and pooled
/// connections (5 minutes is the default idle timeout, so idle-expired flows with a single burst
/// land around there), and anything longer in `+Inf`.
const DURATION_BUCKETS: [f64; 13] =
    [0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// Nanoseconds per second, for converting packet-time differences.
const NS_PER_S: f64 = 1e9;

/// A packet-time difference in seconds (the SDK sums it back to the exact nanosecond).
fn seconds(ns: i64) -> f64 {
    ns as f64 / NS_PER_S
}

/// Handles of the declared families.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    retransmissions: Counter,
    fast_retransmissions: Counter,
    spurious_retransmissions: Counter,
    out_of_order: Counter,
    duplicate_acks: Counter,
    zero_window: Counter,
    handshake: Histogram,
    duration: Histogram,
    evicted: Counter,
    ack_rtt: Histogram,
    untimed: Counter,
}

impl Metrics {
    /// Declares the families in `info` (in this order; the host prefixes `wasmtap_`).
    pub fn declare(info: &mut AnalyzerInfo) -> Self {
        let l = &SEGMENT_LABELS;
        Self {
            retransmissions: info.counter(
                "tcp_retransmissions_total",
                "TCP segments tshark flags as retransmissions, fast and spurious ones included \
                 (tshark: tcp.analysis.retransmission).",
                l,
            ),
            fast_retransmissions: info.counter(
                "tcp_fast_retransmissions_total",
                "TCP fast retransmissions: repeating the sequence number asked for by at least \
                 two duplicate ACKs, within 20 ms of the last one \
                 (tshark: tcp.analysis.fast_retransmission).",
                l,
            ),
            spurious_retransmissions: info.counter(
                "tcp_spurious_retransmissions_total",
                "TCP segments re-sending data the receiver had already acknowledged \
                 (tshark: tcp.analysis.spurious_retransmission).",
                l,
            ),
            out_of_order: info.counter(
                "tcp_out_of_order_total",
                "TCP segments filling a gap below the highest sequence number sooner than the \
                 initial RTT (3 ms if unknown) after it was sent (tshark: tcp.analysis.out_of_order).",
                l,
            ),
            duplicate_acks: info.counter(
                "tcp_duplicate_acks_total",
                "TCP duplicate ACKs (tshark: tcp.analysis.duplicate_ack).",
                l,
            ),
            zero_window: info.counter(
                "tcp_zero_window_total",
                "TCP segments advertising a zero receive window, without SYN, FIN or RST \
                 (tshark: tcp.analysis.zero_window).",
                l,
            ),
            handshake: info.histogram(
                "tcp_handshake_seconds",
                "TCP handshake time per connection, src_ip the client (the SYN's sender): from \
                 the last SYN to the first ACK after it, in seconds \
                 (tshark: tcp.analysis.initial_rtt).",
                l,
                &RTT_BUCKETS,
            ),
            duration: info.histogram(
                "tcp_connection_duration_seconds",
                "TCP connection duration in packet time, from the first SYN (or first segment \
                 seen) to the close (FIN both ways, or RST), idle expiry, eviction or the end of \
                 the capture, in seconds.",
                &["device"],
                &DURATION_BUCKETS,
            ),
            evicted: info.counter(
                "tcp_analysis_flows_evicted_total",
                "Connections the tcp-analysis analyzer dropped from its flow table because the \
                 table was full (idle expiry is not counted).",
                &[],
            ),
            ack_rtt: info.histogram(
                "tcp_ack_rtt_seconds",
                "TCP round-trip time from a segment (payload, SYN or FIN; its first send) to \
                 the ACK that acknowledges its end exactly, src_ip the data sender, dst_ip the \
                 acknowledger, in seconds (tshark: tcp.analysis.ack_rtt).",
                l,
                &RTT_BUCKETS,
            ),
            untimed: info.counter(
                "tcp_analysis_rtt_segments_untimed_total",
                "TCP segments with payload, SYN or FIN that the tcp-analysis analyzer did not \
                 time because a cap was reached (10 000 unacknowledged segments in a direction, \
                 or the memory budget of all flows); their ACKs give no RTT sample.",
                &[],
            ),
        }
    }

    /// Counts the flags of segment `p`.
    #[inline]
    pub fn segment(&self, p: &Packet<'_>, flags: u16, out: &mut Updates) {
        // The flags that have a counter; most segments have none and return at once.
        const COUNTED: u16 =
            flag::ANY_RETRANSMISSION | flag::OUT_OF_ORDER | flag::DUPLICATE_ACK | flag::ZERO_WINDOW;
        if flags & COUNTED == 0 {
            return;
        }
        let labels = [p.src_label(), p.dst_label(), p.device_label()];
        let counters = [
            (flag::ANY_RETRANSMISSION, self.retransmissions),
            (flag::FAST_RETRANSMISSION, self.fast_retransmissions),
            (flag::SPURIOUS_RETRANSMISSION, self.spurious_retransmissions),
            (flag::OUT_OF_ORDER, self.out_of_order),
            (flag::DUPLICATE_ACK, self.duplicate_acks),
            (flag::ZERO_WINDOW, self.zero_window),
        ];
        for (bits, counter) in counters {
            if flags & bits != 0 {
                out.inc(counter, &labels);
            }
        }
    }

    /// Observes the initial RTT `rtt_ns` of a connection first seen on `device`, shown on
    /// packet `p`, which the client sent if `from_client`.
    pub fn handshake(
        &self,
        p: &Packet<'_>,
        from_client: bool,
        device: u16,
        rtt_ns: i64,
        out: &mut Updates,
    ) {
        let (client, server) = if from_client {
            (p.src_label(), p.dst_label())
        } else {
            (p.dst_label(), p.src_label())
        };
        out.observe(self.handshake, &[client, server, Label::Device(device)], seconds(rtt_ns));
    }

    /// Observes the ACK RTT `rtt_ns` of ACK `p` (not observed if 0, as tshark does not show it):
    /// the data's sender is `p`'s destination.
    #[inline]
    pub fn ack_rtt(&self, p: &Packet<'_>, rtt_ns: i64, out: &mut Updates) {
        if rtt_ns != 0 {
            let labels = [p.dst_label(), p.src_label(), p.device_label()];
            out.observe(self.ack_rtt, &labels, seconds(rtt_ns));
        }
    }

    /// Counts a segment a cap left untimed.
    pub fn untimed(&self, out: &mut Updates) {
        out.inc(self.untimed, &[]);
    }

    /// Observes the duration of `flow`, ended at its last packet.
    pub fn duration(&self, flow: &Flow, out: &mut Updates) {
        let ns = flow.last_ns.saturating_sub(flow.first_ns);
        out.observe(self.duration, &[Label::Device(flow.device)], ns as f64 / NS_PER_S);
    }

    /// Accounts for a flow leaving the table: its duration if not yet observed, and the
    /// eviction if it was evicted.
    pub fn removed(&self, flow: &Flow, why: Removal, out: &mut Updates) {
        if !flow.is_closed() {
            self.duration(flow, out);
        }
        if why == Removal::Evicted {
            out.inc(self.evicted, &[]);
        }
    }
}
