//! Round-trip times (issue 20), tshark's and the host's, as exact integers of nanoseconds:
//! tshark's `tcp.analysis.ack_rtt` values per (data sender, acknowledger) pair and its
//! `tcp.analysis.initial_rtt` per (client, server) pair, once per connection ([`TsharkRtts`]);
//! the host's `wasmtap_tcp_ack_rtt_seconds` and `wasmtap_tcp_handshake_seconds` histograms per
//! pair, read from an exposition ([`host_histograms`]); and their exact comparison
//! ([`compare_exact`]): per pair, every bucket, the count and the sum to the nanosecond.
//!
//! No value goes through f64. tshark prints these fields as `secs.nnnnnnnnn` (an unnormalised
//! sub-second count as more digits: [`parse_tshark_ns`]); the host keeps a histogram's sum in
//! exact billionths and prints it as the f64 nearest to it, whose shortest decimal form pins the
//! billionth down for any sum below about 10^5 s ([`parse_decimal_ns`] reads it back, and
//! refuses a text that does not).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::exposition::parse_sample;
use super::process::{require_tools, run_with_timeout};

/// The ACK round-trip histogram: src_ip sent the data, dst_ip acknowledged it.
pub const ACK_RTT: &str = "wasmtap_tcp_ack_rtt_seconds";
/// The handshake histogram: src_ip is the client (the SYN's sender).
pub const HANDSHAKE: &str = "wasmtap_tcp_handshake_seconds";

/// The bounds (`le`) of both histograms' buckets, in ns (the issue's 25 µs to 10 s); `+Inf`
/// follows.
pub const BOUNDS_NS: [i64; 18] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// Buckets per histogram: one per bound and `+Inf`.
pub const SLOTS: usize = BOUNDS_NS.len() + 1;

/// (src_ip, dst_ip) of a series.
pub type Pair = (IpAddr, IpAddr);

/// Values per pair, in ns, in capture order.
pub type Values = BTreeMap<Pair, Vec<i64>>;

/// The bucket a value falls in: the first whose bound is ≥ it (Prometheus `le`), else `+Inf`.
/// Negative values fall in the first.
pub fn bucket_of(v: i64) -> usize {
    BOUNDS_NS.iter().position(|&b| v <= b).unwrap_or(BOUNDS_NS.len())
}

/// A bucket's `le`, as text.
pub fn bound_text(i: usize) -> String {
    BOUNDS_NS.get(i).map_or_else(|| "+Inf".to_string(), |&b| seconds(i128::from(b)))
}

/// ns as seconds with 9 decimals, as tshark prints them (`-0.000005000`).
pub fn seconds(ns: i128) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let a = ns.unsigned_abs();
    format!("{sign}{}.{:09}", a / 1_000_000_000, a % 1_000_000_000)
}

/// One histogram: observations per bucket (not cumulative), their count and their sum in ns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; SLOTS],
    pub count: u64,
    pub sum_ns: i128,
}

impl Histogram {
    /// The histogram the host should hold for `values`.
    pub fn of(values: &[i64]) -> Histogram {
        let mut h = Histogram::default();
        for &v in values {
            h.buckets[bucket_of(v)] += 1;
            h.count += 1;
            h.sum_ns += i128::from(v);
        }
        h
    }

    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
    }

    /// Observations ≤ the bound of bucket `i` (the exposition's `le` sample).
    pub fn cumulative(&self, i: usize) -> u64 {
        self.buckets[..=i].iter().sum()
    }
}

// ------------------------------------------------------------------------------------------
// Numbers as text

/// A time or time difference as tshark prints it (`frame.time_epoch`, `tcp.analysis.ack_rtt`:
/// `secs.nnnnnnnnn`, `-` in front of a negative one), in ns. tshark formats seconds and
/// nanoseconds as `%d.%09d`, so an unnormalised sub-second count (≥ 10^9, from a capture record
/// whose sub-second field is out of range) shows as more than nine digits: they are that
/// count, not a fraction.
pub fn parse_tshark_ns(text: &str) -> Result<i128, String> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || !(frac.is_empty() || digits(frac)) || frac.len() > 12 {
        return Err(format!("not a tshark time: {text:?}"));
    }
    let secs: i128 = secs.parse().map_err(|e| format!("{text:?}: {e}"))?;
    let sub: i128 = if frac.len() <= 9 {
        format!("{frac:0<9}").parse().map_err(|e| format!("{text:?}: {e}"))?
    } else {
        frac.parse().map_err(|e| format!("{text:?}: {e}"))?
    };
    let v = secs * 1_000_000_000 + sub;
    Ok(if neg { -v } else { v })
}

/// A decimal number of seconds as the exposition prints it (Rust's shortest round-trip form of
/// an f64: `0.000025`, `1000007.724456789`, `-1`; an exponent is accepted too), as a whole
/// number of ns, computed in integers. The text must lie within a quarter of a nanosecond of
/// that number (the host prints exact billionths through one f64, which stays far closer below
/// about 10^5 s); otherwise it is not a sum of billionths and this is an error.
pub fn parse_decimal_ns(text: &str) -> Result<i128, String> {
    let t = text.trim();
    let bad = || format!("not a decimal number: {text:?}");
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exp) = match t.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| bad())?),
        None => (t, 0),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let all = format!("{whole}{frac}");
    let all = all.trim_start_matches('0');
    if all.len() > 36 {
        return Err(format!("{text:?}: too many digits"));
    }
    let digits: i128 = if all.is_empty() { 0 } else { all.parse().map_err(|_| bad())? };
    // value = digits × 10^(exp − frac digits) s = digits × 10^(exp − frac digits + 9) ns.
    let scale = exp - frac.len() as i32 + 9;
    let ns = if scale >= 0 {
        10i128
            .checked_pow(scale as u32)
            .and_then(|p| digits.checked_mul(p))
            .ok_or_else(|| format!("{text:?}: out of range"))?
    } else {
        let div = 10i128.checked_pow((-scale) as u32).unwrap_or(i128::MAX);
        let (q, r) = (digits / div, digits % div);
        // Within a quarter of a nanosecond of q or of q + 1.
        if r * 4 <= div {
            q
        } else if r * 4 >= div * 3 {
            q + 1
        } else {
            return Err(format!("{text:?} is not a whole number of nanoseconds"));
        }
    };
    Ok(if neg { -ns } else { ns })
}

// ------------------------------------------------------------------------------------------
// tshark

/// The fields [`tshark_tcp_frames`] reads, all in one tshark run.
pub const TSHARK_FIELDS: [&str; 12] = [
    "frame.number",
    "frame.time_epoch",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.stream",
    "tcp.flags",
    "tcp.analysis.ack_rtt",
    "tcp.analysis.acks_frame",
    "tcp.analysis.initial_rtt",
];

/// TCP header flags.
pub const SYN: u16 = 0x02;
pub const ACK: u16 = 0x10;

/// One frame with a TCP header, as tshark shows it.
#[derive(Debug, Clone)]
pub struct TcpFrame {
    pub number: u64,
    /// tshark's frame time (`frame.time_epoch`), as it prints it.
    pub time_ns: i128,
    /// The source and destination of the IP header that carries the (first) TCP header: the
    /// innermost one before it, as the host's records describe it. `None` without IP.
    pub pair: Option<Pair>,
    /// The TCP header is quoted inside an ICMP error.
    pub quoted: bool,
    /// TCP headers in the frame.
    pub tcp_layers: usize,
    pub stream: Option<u64>,
    pub flags: u16,
    pub ack_rtt: Option<i64>,
    pub acks_frame: Option<u64>,
    pub initial_rtt: Option<i64>,
}

impl TcpFrame {
    /// A SYN without ACK: the one that starts the handshake time.
    pub fn is_syn(&self) -> bool {
        self.flags & (SYN | ACK) == SYN
    }
}

/// Every frame of `file` with a TCP header, from one run of
/// `tshark -n -r FILE EXTRA... -Y tcp -T fields` with [`TSHARK_FIELDS`] (every occurrence).
/// An error if tshark fails (a capture it reads only in part) or prints what this cannot read.
pub fn tshark_tcp_frames(file: &Path, extra: &[&str]) -> Result<Vec<TcpFrame>, String> {
    require_tools(&["tshark"]);
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file).args(extra).args(["-Y", "tcp", "-T", "fields"]);
    cmd.args(["-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]);
    for f in TSHARK_FIELDS {
        cmd.args(["-e", f]);
    }
    let r = run_with_timeout(&mut cmd, Duration::from_secs(600));
    if !r.success() {
        return Err(format!("tshark failed on {}: {}", file.display(), r.describe()));
    }
    r.stdout_text().lines().filter(|l| !l.is_empty()).map(tcp_frame).collect()
}

/// Reads one row of [`tshark_tcp_frames`].
fn tcp_frame(line: &str) -> Result<TcpFrame, String> {
    let cols: Vec<&str> = line.split('\t').collect();
    let col = |i: usize| -> Vec<&str> {
        cols.get(i).map(|c| c.split(',').filter(|s| !s.is_empty()).collect()).unwrap_or_default()
    };
    let first = |i: usize| col(i).first().copied();
    let err = |what: &str| format!("tshark row {line:?}: {what}");
    let number = first(0).and_then(|n| n.parse().ok()).ok_or_else(|| err("frame.number"))?;
    let time_ns = parse_tshark_ns(first(1).ok_or_else(|| err("no frame.time_epoch"))?)?;
    // The IP header before the first TCP header, and whether an ICMP error quotes it.
    let (mut v4, mut v6, mut carrier, mut quoted, mut tcp_layers) = (0, 0, None, false, 0);
    for layer in cols.get(2).copied().unwrap_or("").split(':') {
        match layer {
            "ip" if tcp_layers == 0 => {
                v4 += 1;
                carrier = Some((3, v4 - 1));
            }
            "ipv6" if tcp_layers == 0 => {
                v6 += 1;
                carrier = Some((5, v6 - 1));
            }
            "icmp" | "icmpv6" if tcp_layers == 0 => quoted = true,
            "tcp" => tcp_layers += 1,
            _ => {}
        }
    }
    // `None` if tshark shows no such address (a header it could not read).
    let pair = carrier.and_then(|(c, at)| {
        let addr = |i: usize| col(i).get(at).and_then(|s| s.parse::<IpAddr>().ok());
        Some((addr(c)?, addr(c + 1)?))
    });
    // The first TCP header's value (a frame with several that shows one is refused by
    // `TsharkRtts::of`).
    let ns = |i: usize| -> Result<Option<i64>, String> {
        col(i)
            .first()
            .map(|v| {
                parse_tshark_ns(v).and_then(|n| i64::try_from(n).map_err(|e| err(&e.to_string())))
            })
            .transpose()
    };
    let flags = first(8).map_or(Ok(0), |f| {
        u16::from_str_radix(f.trim_start_matches("0x"), 16).map_err(|e| err(&format!("flags: {e}")))
    })?;
    Ok(TcpFrame {
        number,
        time_ns,
        pair,
        quoted,
        tcp_layers,
        stream: first(7).and_then(|s| s.parse().ok()),
        flags,
        ack_rtt: ns(9)?,
        acks_frame: first(10).and_then(|s| s.parse().ok()),
        initial_rtt: ns(11)?,
    })
}

/// One `initial_rtt` of tshark's: its connection and the frames it is measured between.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub stream: u64,
    /// The last SYN (without ACK) of the stream before tshark first shows the value: its time
    /// starts the measure (Wireshark's `ts_mru_syn`).
    pub syn_frame: u64,
    /// The first frame that shows the value.
    pub shown_on: u64,
    pub value: i64,
}

/// tshark's round-trip times in one capture, per pair.
#[derive(Debug, Clone, Default)]
pub struct TsharkRtts {
    /// `tcp.analysis.ack_rtt` per (data sender, acknowledger): the ACK frame's (dst, src).
    pub ack_rtt: Values,
    /// For each value of `ack_rtt`, in the same order: (ACK frame, acknowledged frame).
    pub ack_frames: BTreeMap<Pair, Vec<(u64, u64)>>,
    /// `tcp.analysis.initial_rtt` per (client, server), once per `tcp.stream`.
    pub initial_rtt: Values,
    /// For each value of `initial_rtt`, in the same order.
    pub handshakes: BTreeMap<Pair, Vec<Handshake>>,
    /// Exact-end ACKs that tshark shows without a value (`acks_frame` without `ack_rtt`: a
    /// difference of 0), per pair.
    pub zero_deltas: BTreeMap<Pair, u64>,
    /// Frames with a TCP header.
    pub tcp_frames: u64,
}

impl TsharkRtts {
    /// tshark's values in `file` ([`tshark_tcp_frames`] with `extra` arguments); panics if
    /// tshark fails.
    pub fn read(file: &Path, extra: &[&str]) -> TsharkRtts {
        let frames = tshark_tcp_frames(file, extra).unwrap_or_else(|e| panic!("{e}"));
        TsharkRtts::of(&frames).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
    }

    /// The values in `frames`. An error for what tshark shows that no pair can be given to:
    /// a value on a frame without IP or with several TCP headers, a stream with two different
    /// initial RTTs, or one without a SYN before it.
    pub fn of(frames: &[TcpFrame]) -> Result<TsharkRtts, String> {
        let mut out = TsharkRtts { tcp_frames: frames.len() as u64, ..TsharkRtts::default() };
        // Per stream: the last SYN seen, and whether its initial RTT was taken.
        let mut last_syn: BTreeMap<u64, &TcpFrame> = BTreeMap::new();
        let mut irtt: BTreeMap<u64, i64> = BTreeMap::new();
        for f in frames {
            let shows = f.ack_rtt.is_some() || f.acks_frame.is_some() || f.initial_rtt.is_some();
            if !shows {
                if let (true, Some(s)) = (f.is_syn(), f.stream) {
                    last_syn.insert(s, f);
                }
                continue;
            }
            let pair = match (f.pair, f.tcp_layers) {
                (Some(p), 1) => p,
                _ => {
                    return Err(format!(
                        "frame {}: tshark shows a round-trip time on a frame with {} TCP \
                         headers and {} IP header: {f:?}",
                        f.number,
                        f.tcp_layers,
                        if f.pair.is_some() { "an" } else { "no" }
                    ));
                }
            };
            let acked = (pair.1, pair.0);
            match (f.ack_rtt, f.acks_frame) {
                (Some(v), Some(a)) => {
                    out.ack_rtt.entry(acked).or_default().push(v);
                    out.ack_frames.entry(acked).or_default().push((f.number, a));
                }
                (None, Some(_)) => *out.zero_deltas.entry(acked).or_default() += 1,
                (Some(_), None) => {
                    return Err(format!("frame {}: ack_rtt without acks_frame", f.number));
                }
                (None, None) => {}
            }
            if let (Some(v), Some(s)) = (f.initial_rtt, f.stream) {
                match irtt.get(&s) {
                    Some(&seen) if seen != v => {
                        return Err(format!(
                            "stream {s}: two initial RTTs, {} and {} (frame {})",
                            seconds(seen.into()),
                            seconds(v.into()),
                            f.number
                        ));
                    }
                    Some(_) => {}
                    None => {
                        irtt.insert(s, v);
                        let syn = last_syn.get(&s).ok_or_else(|| {
                            format!(
                                "stream {s}: initial RTT on frame {} without a SYN before it",
                                f.number
                            )
                        })?;
                        let client = syn
                            .pair
                            .ok_or_else(|| format!("frame {}: SYN without IP", syn.number))?;
                        out.initial_rtt.entry(client).or_default().push(v);
                        out.handshakes.entry(client).or_default().push(Handshake {
                            stream: s,
                            syn_frame: syn.number,
                            shown_on: f.number,
                            value: v,
                        });
                    }
                }
            }
            if let (true, Some(s)) = (f.is_syn(), f.stream) {
                last_syn.insert(s, f);
            }
        }
        Ok(out)
    }

    /// Every `ack_rtt` value.
    pub fn ack_rtt_count(&self) -> usize {
        self.ack_rtt.values().map(Vec::len).sum()
    }

    /// Every `initial_rtt` value (connections).
    pub fn initial_rtt_count(&self) -> usize {
        self.initial_rtt.values().map(Vec::len).sum()
    }
}

// ------------------------------------------------------------------------------------------
// The host's histograms

/// The histograms of `family` in an exposition, per (src_ip, dst_ip), summed over the series
/// of each pair (devices, pod labels), only those of `device` when given. The bucket counts
/// are de-cumulated, the sum read as exact ns ([`parse_decimal_ns`]). An error if a series'
/// bounds are not [`BOUNDS_NS`] and `+Inf`, its `+Inf` bucket is not its count, or a line
/// cannot be read.
pub fn host_histograms(
    text: &str,
    family: &str,
    device: Option<&str>,
) -> Result<BTreeMap<Pair, Histogram>, String> {
    #[derive(Default)]
    struct Series {
        le: BTreeMap<i128, u64>,
        inf: Option<u64>,
        sum: Option<i128>,
        count: Option<u64>,
    }
    let mut series: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family) else { continue };
        let suffix = rest.split(['{', ' ']).next().unwrap_or("");
        if !["_bucket", "_sum", "_count"].contains(&suffix) {
            continue;
        }
        let sample = parse_sample(line).map_err(|e| format!("{e}: {line:?}"))?;
        if device.is_some_and(|d| sample.labels.get("device").map(String::as_str) != Some(d)) {
            continue;
        }
        let value_text = line[line.rfind('}').map_or(0, |i| i + 1)..]
            .split_whitespace()
            .next()
            .ok_or_else(|| format!("no value: {line:?}"))?;
        let whole = || -> Result<u64, String> {
            let v = sample.value;
            if v >= 0.0 && v.fract() == 0.0 && v < 9.0e15 {
                Ok(v as u64)
            } else {
                Err(format!("not a whole count: {line:?}"))
            }
        };
        let key: Vec<(String, String)> = sample
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let s = series.entry(key).or_default();
        match suffix {
            "_bucket" => {
                let le = sample.labels.get("le").ok_or_else(|| format!("no le: {line:?}"))?;
                if le == "+Inf" {
                    s.inf = Some(whole()?);
                } else {
                    s.le.insert(parse_decimal_ns(le)?, whole()?);
                }
            }
            "_sum" => s.sum = Some(parse_decimal_ns(value_text)?),
            _ => s.count = Some(whole()?),
        }
    }
    let mut out: BTreeMap<Pair, Histogram> = BTreeMap::new();
    for (key, s) in series {
        let label = |name: &str| -> Result<IpAddr, String> {
            let v = key
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("{family} series without {name}: {key:?}"))?;
            v.parse().map_err(|e| format!("{family}{{{name}={v:?}}}: {e}"))
        };
        let bounds: Vec<i128> = s.le.keys().copied().collect();
        let want: Vec<i128> = BOUNDS_NS.iter().map(|&b| i128::from(b)).collect();
        if bounds != want {
            return Err(format!("{family} {key:?}: bucket bounds (ns) {bounds:?}, want {want:?}"));
        }
        let (Some(inf), Some(sum_ns), Some(count)) = (s.inf, s.sum, s.count) else {
            return Err(format!("{family} {key:?}: no +Inf bucket, sum or count"));
        };
        if inf != count {
            return Err(format!("{family} {key:?}: +Inf bucket {inf}, count {count}"));
        }
        let mut h = Histogram { count, sum_ns, ..Histogram::default() };
        let mut below = 0;
        for (i, cumulative) in s.le.values().chain([&inf]).enumerate() {
            h.buckets[i] = cumulative.checked_sub(below).ok_or_else(|| {
                format!("{family} {key:?}: bucket counts are not cumulative: {:?}", s.le)
            })?;
            below = *cumulative;
        }
        out.entry((label("src_ip")?, label("dst_ip")?)).or_default().add(&h);
    }
    Ok(out)
}

/// [`host_histograms`] that panics on an error.
pub fn host_histograms_ok(
    text: &str,
    family: &str,
    device: Option<&str>,
) -> BTreeMap<Pair, Histogram> {
    host_histograms(text, family, device).unwrap_or_else(|e| panic!("{e}"))
}

// ------------------------------------------------------------------------------------------
// Comparison

/// The outcome of a comparison: a printable table and one line per difference.
#[derive(Debug, Default)]
pub struct Comparison {
    pub report: String,
    pub mismatches: Vec<String>,
}

impl Comparison {
    pub fn is_exact(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// Appends `other`.
    pub fn extend(&mut self, other: Comparison) {
        self.report.push_str(&other.report);
        self.mismatches.extend(other.mismatches);
    }
}

/// Compares the host's histograms of one family with tshark's values exactly, pair by pair
/// over the union of both sides' pairs: every bucket's count with the number of tshark's values
/// in it, the count with the number of values, the sum with their sum to the nanosecond. The
/// report has one row per pair and bucket that either side fills.
pub fn compare_exact(what: &str, tshark: &Values, host: &BTreeMap<Pair, Histogram>) -> Comparison {
    let mut c = Comparison {
        report: format!("\n{what}: tshark vs host, per pair\n"),
        ..Default::default()
    };
    let pairs: std::collections::BTreeSet<Pair> =
        tshark.keys().chain(host.keys()).copied().collect();
    let empty = Histogram::default();
    for pair in pairs {
        let values = tshark.get(&pair).map(Vec::as_slice).unwrap_or(&[]);
        let want = Histogram::of(values);
        let got = host.get(&pair).unwrap_or(&empty);
        let name = format!("{} -> {}", pair.0, pair.1);
        let verdict = |ok: bool| if ok { "ok" } else { "MISMATCH" };
        let _ = writeln!(
            c.report,
            "  {name}: count tshark {} host {} {}; sum tshark {} s host {} s {}",
            want.count,
            got.count,
            verdict(want.count == got.count),
            seconds(want.sum_ns),
            seconds(got.sum_ns),
            verdict(want.sum_ns == got.sum_ns)
        );
        for i in 0..SLOTS {
            let (t, h) = (want.buckets[i], got.buckets[i]);
            if t == 0 && h == 0 {
                continue;
            }
            let _ = writeln!(
                c.report,
                "      le={:<14} tshark {t:>7} host {h:>7}  {}",
                bound_text(i),
                verdict(t == h)
            );
            if t != h {
                let inside: Vec<String> = values
                    .iter()
                    .filter(|&&v| bucket_of(v) == i)
                    .take(8)
                    .map(|&v| seconds(v.into()))
                    .collect();
                c.mismatches.push(format!(
                    "{what} {name}: bucket le={}: host {h}, tshark {t} (tshark's values there: \
                     {}{})",
                    bound_text(i),
                    inside.join(", "),
                    if t > 8 { ", ..." } else { "" }
                ));
            }
        }
        if want.count != got.count {
            c.mismatches
                .push(format!("{what} {name}: count: host {}, tshark {}", got.count, want.count));
        }
        if want.sum_ns != got.sum_ns {
            c.mismatches.push(format!(
                "{what} {name}: sum: host {} s, tshark {} s ({:+} ns)",
                seconds(got.sum_ns),
                seconds(want.sum_ns),
                got.sum_ns - want.sum_ns
            ));
        }
    }
    c
}

/// Both families of an exposition against tshark's values, exactly ([`compare_exact`]);
/// `device` as in [`host_histograms`].
pub fn compare_rtts(tshark: &TsharkRtts, exposition: &str, device: Option<&str>) -> Comparison {
    let mut c = compare_exact(
        &format!("{ACK_RTT} (tcp.analysis.ack_rtt)"),
        &tshark.ack_rtt,
        &host_histograms_ok(exposition, ACK_RTT, device),
    );
    c.extend(compare_exact(
        &format!("{HANDSHAKE} (tcp.analysis.initial_rtt)"),
        &tshark.initial_rtt,
        &host_histograms_ok(exposition, HANDSHAKE, device),
    ));
    c
}
