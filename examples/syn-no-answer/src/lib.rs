//! # syn-no-answer: TCP connection attempts that fail, per destination
//!
//! An example wasmtap analyzer, written with the guest SDK the way a user would write one (see
//! `README.md` for how to build it and load it). The built-in analyzers count resets and
//! retransmissions, but not connections that never get going: a SYN that is refused, or that
//! goes unanswered.
//!
//! Input: every record of every batch. Only TCP segments with SYN or RST set matter: a SYN
//! without ACK starts a connection attempt (or retransmits one), and a SYN/ACK or a RST from
//! the other side answers it. Output (the host prefixes the names with `wasmtap_`):
//!
//! | metric | labels | counts, once per attempt |
//! |---|---|---|
//! | `tcp_syn_unanswered_total` | `dst_ip`, `dst_port`, `device` | attempts that got neither a SYN/ACK nor a RST within the timeout |
//! | `tcp_syn_refused_total` | `dst_ip`, `dst_port`, `device` | attempts answered by a RST within the timeout |
//! | `tcp_syn_evictions_total` | `device` | attempts dropped because the table of attempts was full |
//!
//! ## Rules
//!
//! - An **attempt** is a SYN without ACK from a client to a server: a 4-tuple and the client's
//!   initial sequence number (ISN). Retransmissions of the SYN carry the same ISN and belong to
//!   the same attempt, as do copies of it captured on another interface. A SYN with another ISN
//!   on the same 4-tuple starts a new attempt; the previous one, if still waiting, counts as
//!   unanswered.
//! - An **answer** comes from the server: a SYN/ACK or a RST, with the ACK flag and the
//!   acknowledgement number ISN + 1 (up to ISN + 1 + the SYN's payload, for TCP Fast Open).
//!   Other segments (a stale RST of an older connection) answer nothing; a RST without ACK
//!   never answers a SYN (RFC 9293 §3.10.7.1 puts the ACK on it).
//! - **Decided in packet time.** An answer at most the timeout after the first SYN settles the
//!   attempt: a SYN/ACK counts nothing, a RST counts as refused. An attempt with no answer by
//!   then counts as unanswered as soon as packet time passes its deadline: at the next SYN or
//!   answer the analyzer sees, or at the next tick (at least once per second of packet time),
//!   or at the end of a capture. A late answer counts nothing more. An attempt still inside its
//!   timeout when a capture ends is not counted: its outcome is unknown.
//! - After it counts, an unanswered attempt stays in the table for the linger time after its
//!   latest SYN, so that further retransmissions of it do not count again.
//!
//! The capture must see both directions: where it sees only the SYNs (asymmetric routing, a
//! BPF filter on one direction), every attempt counts as unanswered.
//!
//! ## Labels, and why their number is bounded
//!
//! - `dst_ip`: the server. As many values as destinations that the node's clients fail to
//!   reach; the host's series cap per family (`--series-cap`) bounds a scan of many addresses.
//! - `dst_port`: the server's port if it is one of [`SERVICE_PORTS`] (ports that services
//!   listen on), else `other`. A port scan lands in `other`, so a destination has at most
//!   `SERVICE_PORTS.len() + 1` port values.
//! - `device`: the interface (in a replay, the capture file) of the attempt's first SYN.
//!
//! ## State
//!
//! At most `max_pending` attempts at a time (see `attempts.rs`): an attempt leaves the table
//! when it is answered, or after it counted and its client stopped retransmitting. When the
//! table is full, a new attempt evicts a counted attempt, else the waiting one closest to its
//! deadline, and the eviction is counted.
//!
//! ## Configuration
//!
//! Keys of the `Config` handed to `init` (the host passes none today, so the defaults apply;
//! the unit tests set them):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `timeout_ms` | 3000 | how long after its first SYN an attempt may be answered |
//! | `linger_ms` | 65000 | how long a counted attempt waits for further retransmissions of its SYN |
//! | `max_pending` | 16384 | most attempts held at once |

mod attempts;
#[cfg(test)]
mod tests;

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Label, Updates};

pub use attempts::{Attempt, Key, Outcome, Settings, Syn, Table};

/// Default timeout: the initial retransmission timeout of RFC 1122 (3 s). A server that is up
/// answers within a round trip, and by 3 s a Linux client (initial RTO 1 s) has already
/// retransmitted its SYN twice.
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;

/// Default linger: longer than the longest pause between two retransmissions of one SYN by a
/// Linux client (32 s with the default `tcp_syn_retries` = 6; 64 s with 7), so a client that
/// keeps trying counts once.
pub const DEFAULT_LINGER_MS: u64 = 65_000;

/// Default table size: at about 250 bytes per attempt (hash map and index entries), 16,384
/// attempts take about 4 MiB of the 64 MiB an analyzer instance gets by default, and they hold
/// over 5,000 new failing attempts per second across the 3 s timeout.
pub const DEFAULT_MAX_PENDING: usize = 16_384;

/// Server ports that get their own `dst_port` value; every other port is `other`. Sorted (for
/// the binary search). Chosen as ports that services listen on: the common IANA ones, plus
/// databases, message brokers and Kubernetes' and Prometheus' own.
pub const SERVICE_PORTS: [u16; 40] = [
    21,    // FTP
    22,    // SSH
    23,    // Telnet
    25,    // SMTP
    53,    // DNS over TCP
    80,    // HTTP
    110,   // POP3
    143,   // IMAP
    389,   // LDAP
    443,   // HTTPS
    445,   // SMB
    465,   // SMTPS
    587,   // mail submission
    636,   // LDAPS
    853,   // DNS over TLS
    993,   // IMAPS
    995,   // POP3S
    1433,  // SQL Server
    1521,  // Oracle
    2049,  // NFS
    2379,  // etcd clients
    2380,  // etcd peers
    3000,  // Grafana
    3306,  // MySQL
    3389,  // RDP
    4222,  // NATS
    5432,  // PostgreSQL
    5672,  // AMQP
    6379,  // Redis
    6443,  // Kubernetes API server
    8080,  // HTTP alternate
    8443,  // HTTPS alternate
    9090,  // Prometheus
    9092,  // Kafka
    9100,  // node_exporter
    9200,  // Elasticsearch
    9725,  // wasmtap
    10250, // kubelet
    11211, // memcached
    27017, // MongoDB
];

/// The `dst_port` value of ports not in [`SERVICE_PORTS`].
const OTHER_PORT: Label = Label::Text("other");

/// Labels of the per-destination families.
const DESTINATION_LABELS: [&str; 3] = ["dst_ip", "dst_port", "device"];

/// The `dst_port` label value of `port`.
pub fn port_label(port: u16) -> Label {
    if SERVICE_PORTS.binary_search(&port).is_ok() {
        Label::Number(i64::from(port))
    } else {
        OTHER_PORT
    }
}

/// The declared families.
#[derive(Debug, Clone, Copy)]
struct Families {
    unanswered: Counter,
    refused: Counter,
    evictions: Counter,
}

impl Families {
    /// Counts one attempt that ended badly.
    fn count(self, out: &mut Updates, outcome: Outcome, key: &Key, attempt: &Attempt) {
        let device = Label::Device(attempt.device);
        let destination = [key.server_label(), port_label(key.server_port), device];
        match outcome {
            Outcome::Unanswered => out.inc(self.unanswered, &destination),
            Outcome::Refused => out.inc(self.refused, &destination),
            Outcome::Evicted => out.inc(self.evictions, &[device]),
        }
    }
}

/// Failed connection attempts per destination.
pub struct SynNoAnswer {
    families: Families,
    table: Table,
}

impl SynNoAnswer {
    /// The attempt table (for tests).
    pub fn table(&self) -> &Table {
        &self.table
    }
}

/// The value of `key` in `config` as a positive whole number, or `default` if it is absent.
fn setting(config: &Config, key: &str, default: u64) -> Result<u64, String> {
    let Some(text) = config.get(key) else { return Ok(default) };
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("config {key}={text:?}: expected a whole number above 0")),
    }
}

/// The table settings from `config`.
pub fn settings(config: &Config) -> Result<Settings, String> {
    const NS_PER_MS: u64 = 1_000_000;
    let max_pending = setting(config, "max_pending", DEFAULT_MAX_PENDING as u64)?;
    Ok(Settings {
        timeout_ns: setting(config, "timeout_ms", DEFAULT_TIMEOUT_MS)?.saturating_mul(NS_PER_MS),
        linger_ns: setting(config, "linger_ms", DEFAULT_LINGER_MS)?.saturating_mul(NS_PER_MS),
        max_pending: usize::try_from(max_pending).unwrap_or(usize::MAX),
    })
}

impl Analyzer for SynNoAnswer {
    fn init(config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let settings = settings(config)?;
        let mut info = AnalyzerInfo::new("syn-no-answer", env!("CARGO_PKG_VERSION"));
        let unanswered = info.counter(
            "tcp_syn_unanswered_total",
            "TCP connection attempts (a SYN without ACK, retransmissions counted once) that got \
             neither a SYN/ACK nor a RST within the timeout (3 s by default) of the first SYN.",
            &DESTINATION_LABELS,
        );
        let refused = info.counter(
            "tcp_syn_refused_total",
            "TCP connection attempts answered by a RST (connection refused) within the timeout.",
            &DESTINATION_LABELS,
        );
        let evictions = info.counter(
            "tcp_syn_evictions_total",
            "Connection attempts dropped from the analyzer's full table of attempts.",
            &["device"],
        );
        let families = Families { unanswered, refused, evictions };
        Ok((Self { families, table: Table::new(settings) }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        let families = self.families;
        let mut report = |outcome, key: &Key, a: &Attempt| families.count(out, outcome, key, a);
        for p in batch {
            if !p.has_tcp() || !(p.syn() || p.rst()) {
                continue;
            }
            if p.syn() && !p.ack() && !p.rst() {
                let syn = Syn {
                    isn: p.seq(),
                    payload_len: p.payload_len(),
                    time_ns: p.time_ns(),
                    device: p.device(),
                };
                self.table.syn(Key::of_syn(&p), syn, &mut report);
            } else if p.ack() {
                let key = Key::of_answer(&p);
                self.table.answer(key, p.ack_num(), p.rst(), p.time_ns(), &mut report);
            }
        }
        Ok(())
    }

    fn tick(&mut self, now_ns: u64, end_of_capture: bool, out: &mut Updates) -> Result<(), String> {
        let families = self.families;
        self.table.expire(now_ns, &mut |outcome, key, a| families.count(out, outcome, key, a));
        if end_of_capture {
            self.table.clear();
        }
        Ok(())
    }
}

wasmtap_sdk::export_analyzer!(SynNoAnswer);
