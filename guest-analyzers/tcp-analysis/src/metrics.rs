//! Metrics stage: the families this analyzer declares and how analysis results become updates.
//!
//! Input: the [`flag`](crate::analysis::flag) bits of each segment with its packet's labels,
//! initial RTTs, and flows leaving the table. Output: counter increments and histogram
//! observations in the call's [`Updates`] (which aggregates them per series).

use wasmtap_sdk::{AnalyzerInfo, Counter, Histogram, Label, Packet, Updates};

use crate::analysis::flag;
use crate::table::{Flow, Removal};

/// Labels of the per-segment counters: sender, receiver and device of the flagged segment.
const SEGMENT_LABELS: [&str; 3] = ["src_ip", "dst_ip", "device"];

/// Initial RTT buckets, in seconds. 100 µs–1 ms covers veth pairs, loopback and one data
/// centre; 2.5–50 ms regional paths; 100–500 ms intercontinental and mobile paths; 1 s and 3 s
/// catch handshakes that waited for a retransmitted SYN/ACK (Linux's initial RTO is 1 s; 3 s was
/// the classic one). A retransmitted SYN does not inflate it: tshark measures from the last SYN.
const HANDSHAKE_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0];

/// Connection duration buckets, in seconds: 1–100 ms for single request/response exchanges on
/// a LAN, 0.5–10 s for page loads and short transfers, 30 s–1 h for long-lived and pooled
/// connections (5 minutes is the default idle timeout, so idle-expired flows with a single burst
/// land around there), and anything longer in `+Inf`.
const DURATION_BUCKETS: [f64; 13] =
    [0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// Nanoseconds per second, for converting packet-time differences.
const NS_PER_S: f64 = 1e9;

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
                "TCP handshake time: from the last SYN to the first ACK after it, in seconds \
                 (tshark: tcp.analysis.initial_rtt).",
                &["device"],
                &HANDSHAKE_BUCKETS,
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

    /// Observes an initial RTT.
    pub fn handshake(&self, device: u16, rtt_ns: u64, out: &mut Updates) {
        out.observe(self.handshake, &[Label::Device(device)], rtt_ns as f64 / NS_PER_S);
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
