//! Round-trip times in the capture corpus (issue 20, acceptance 2): every capture of the corpus
//! in which tshark shows `tcp.analysis.ack_rtt` or `tcp.analysis.initial_rtt` goes through
//! `wasmtap replay`, and per pair `wasmtap_tcp_ack_rtt_seconds` and
//! `wasmtap_tcp_handshake_seconds` must equal tshark's values exactly: every bucket's count, the
//! count, and the sum to the nanosecond (`common::rtt::compare_rtts`). The number of captures
//! that are exact is printed and asserted.
//!
//! tshark reads each capture once (`-T fields`, every field needed, with
//! `-d udp.port==8472,vxlan` as the README says to compare, since the host opens VXLAN on 8472
//! by default). The captures are [`RTT_CAPTURES`]: those of tcpdump's tests/ folder (the corpus
//! that `corpus.rs` replays) in which tshark, reading the whole file without an error, shows a
//! value. Each must still show one; `every_rtt_capture_of_the_corpus_is_listed` (ignored: it
//! reads all 830 captures with tshark, a minute or two) finds any that the list misses.
//!
//! A capture that differs must be explained by one of three rules, each stated here, derived
//! from the capture itself and checked against the host's exposition; such captures are
//! printed with what each rule changed. Any other difference fails the test.
//!
//! 1. **Link type.** The host decodes the link types the README lists (Ethernet, Linux
//!    SLL/SLL2, raw IPv4/IPv6, BSD loopback: LINKTYPE 1, 113, 276, 101, 228, 229, 12, 14, 0,
//!    108), tshark more (ARCNET, IP over InfiniBand). A capture none of whose link types (the
//!    pcap header's, or every pcapng interface's) is listed must give no RTT series at all.
//! 2. **Idle expiry.** The tcp-analysis analyzer forgets a connection that has had no packet
//!    for its idle timeout (`idle_timeout_seconds`, 300 s of packet time by default, packet time
//!    being the latest frame time so far, here over the TCP frames; its crate docs: "Where this
//!    can differ from tshark"),
//!    and times nothing across it; Wireshark never forgets. A value is dropped from tshark's
//!    when, between the two frames it is measured between (the acknowledged frame and the ACK;
//!    the handshake's SYN and the first frame that shows it), a frame of its `tcp.stream` comes
//!    more than 300 s after the connection's previous frame on that clock. The rest must be
//!    exact.
//! 3. **Frames tshark mistimes.** Wiretap keeps a record's sub-second part in a signed 32-bit
//!    count of nanoseconds, so a classic pcap record whose sub-second field is out of range and
//!    at least 2^31 ns (tcpdump's `timestamp_invalid_nano.pcap`: 0x80000000) becomes negative,
//!    and tshark's differences with that frame overflow. A frame is *mistimed* when the capture
//!    is a classic pcap and tshark's `frame.time_epoch` is not the record's `ts_sec` and
//!    sub-second field read from the file (an unnormalised count that tshark keeps, such as
//!    `timestamp_invalid_micro.pcap`'s 10^6 µs, is not mistimed). Such a field has no meaning,
//!    so the host's reading of it is its own: a value measured from or to a mistimed frame (an
//!    ACK or the frame it acknowledges; for a handshake, any frame of the stream from the SYN to
//!    the first frame that shows it) is left out of tshark's, and its pair's histogram must
//!    hold every other value in its bucket, at most that many observations more anywhere, and
//!    a sum that is not compared.
//!
//! Without WASMTAP_CORPUS the tests say on stderr that they are skipped and why, unless
//! WASMTAP_REQUIRE_CORPUS=1 makes that a failure, as in `corpus.rs`.

mod common;

use common::corpus::{DECODE_AS, captures, corpus_dir_or_skip, in_parallel};
use common::rtt::{
    ACK_RTT, BOUNDS_NS, Comparison, HANDSHAKE, Histogram, Pair, TcpFrame, TsharkRtts, Values,
    compare_exact, compare_rtts, host_histograms, parse_decimal_ns, parse_tshark_ns, seconds,
    tshark_tcp_frames,
};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The captures of tcpdump's tests/ folder in which tshark 4.0 (`-d udp.port==8472,vxlan`),
/// reading the whole file without an error, shows `tcp.analysis.ack_rtt` or
/// `tcp.analysis.initial_rtt` on at least one frame, found by reading all 830 as
/// `every_rtt_capture_of_the_corpus_is_listed` does.
const RTT_CAPTURES: [&str; 40] = [
    "accecn_handshake.pcap",
    "arcnet-rfc1051-arp-icmp-http.pcap",
    "arcnet-rfc1201-arp-icmp-http.pcap",
    "bgp-4byte-asn.pcap",
    "bgp-bgpsec.pcap",
    "bgp-cease-hard-reset.pcap",
    "bgp-enhanced-route-refresh-subtype.pcapng",
    "bgp-lu-multiple-labels.pcap",
    "bgp-role.pcapng",
    "bgp-rt-prefix.pcap",
    "dns_tcp.pcap",
    "dns_tcp_8053.pcap",
    "geneve.pcap",
    "ipoib.pcap",
    "ldp-common-session.pcap",
    "mptcp-aa-v1.pcap",
    "mptcp-fclose.pcap",
    "mptcp-v0.pcap",
    "mptcp-v1.pcap",
    "nfs-write-verf-cookie.pcapng",
    "of10_7050q.pcapng",
    "of10_7050sx_bsn.pcap",
    "of10_p3295.pcap",
    "of10_pf5240.pcap",
    "of10_s4810.pcap",
    "of13_ericsson.pcapng",
    "pptp.pcap",
    "print-flags.pcap",
    "resp_1_benchmark.pcap",
    "resp_2_inline.pcap",
    "resp_3_malicious.pcap",
    "smb_data_print-oobr.pcapng",
    "smb_data_print-segv.pcap",
    "ssh.pcap",
    "tcp-handshake-nano.pcap",
    "tfo-5c1fa7f9ae91.pcap",
    "timestamp_invalid_micro.pcap",
    "timestamp_invalid_nano.pcap",
    "whois.pcap",
    "zmtp1.pcap",
];

/// How many of [`RTT_CAPTURES`] equal tshark's values exactly, without any rule: all but the
/// ARCNET and IP-over-InfiniBand captures (rule 1), `smb_data_print-segv.pcap` (rule 2: an
/// ACK 21 years after the segment) and `timestamp_invalid_nano.pcap` (rule 3).
const EXACT_CAPTURES: usize = RTT_CAPTURES.len() - 5;

fn name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

// ------------------------------------------------------------------------------------------
// The rules

/// The link types the README lists as decoded (LINKTYPE values): Ethernet, Linux SLL and SLL2,
/// raw IP (LINKTYPE_RAW, IPV4, IPV6, and the DLT_RAW values 12 and 14 of older files), BSD
/// loopback (NULL, LOOP).
const DECODED_LINK_TYPES: [u32; 10] = [1, 113, 276, 101, 228, 229, 12, 14, 0, 108];

/// The analyzer's default idle timeout (`idle_timeout_seconds`), in ns.
const IDLE_TIMEOUT_NS: i128 = 300_000_000_000;

/// The link types of `file`: the classic pcap header's, or every pcapng interface's; `None`
/// if it is neither.
fn link_types(file: &Path) -> Option<Vec<u32>> {
    let bytes = std::fs::read(file).ok()?;
    let read = |at: usize, le: bool| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    match bytes.get(..4)? {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] | [0x34, 0xcd, 0xb2, 0xa1] => {
            Some(vec![read(20, true)? & 0xffff])
        }
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] | [0xa1, 0xb2, 0xcd, 0x34] => {
            Some(vec![read(20, false)? & 0xffff])
        }
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            // Blocks: type, total length, body; the section header's byte-order magic says
            // the order. An interface description (type 1) starts with its link type (16 bits).
            let mut le = true;
            let mut types = Vec::new();
            let mut at = 0;
            while at + 12 <= bytes.len() {
                if bytes[at..at + 4] == [0x0a, 0x0d, 0x0d, 0x0a] {
                    le = bytes.get(at + 8..at + 12)? == [0x4d, 0x3c, 0x2b, 0x1a];
                }
                let (kind, len) = (read(at, le)?, read(at + 4, le)? as usize);
                if kind == 1 {
                    types.push(read(at + 8, le)? & 0xffff);
                }
                if len < 12 {
                    break;
                }
                at += len;
            }
            Some(types)
        }
        _ => None,
    }
}

/// Each record's time in ns (`ts_sec` × 10^9 + the sub-second field × its unit, unnormalised),
/// if `file` is a classic pcap (µs or ns, either byte order, or the modified format's longer
/// record headers); `None` for any other format. Stops at a truncated record.
fn pcap_record_times(file: &Path) -> Option<Vec<i128>> {
    let bytes = std::fs::read(file).ok()?;
    let magic = bytes.get(..4)?;
    let (le, unit, header_len) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, 1000, 16),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, 1000, 16),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, 1, 16),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, 1, 16),
        [0x34, 0xcd, 0xb2, 0xa1] => (true, 1000, 24),
        [0xa1, 0xb2, 0xcd, 0x34] => (false, 1000, 24),
        _ => return None,
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    let mut times = Vec::new();
    let mut at = 24;
    while let (Some(secs), Some(sub), Some(len)) = (u32_at(at), u32_at(at + 4), u32_at(at + 8)) {
        times.push(i128::from(secs) * 1_000_000_000 + i128::from(sub) * unit);
        at += header_len + len as usize;
    }
    Some(times)
}

/// The frames whose tshark time differs from their record's (classic pcap only), with both.
fn mistimed_frames(file: &Path, frames: &[TcpFrame]) -> BTreeMap<u64, (i128, i128)> {
    let Some(records) = pcap_record_times(file) else {
        return BTreeMap::new();
    };
    frames
        .iter()
        .filter_map(|f| {
            let record = *records.get(usize::try_from(f.number).ok()?.checked_sub(1)?)?;
            (record != f.time_ns).then_some((f.number, (f.time_ns, record)))
        })
        .collect()
}

/// What rules 2 and 3 make of tshark's values: the values the host must hold exactly, the
/// values per pair whose bucket is not known (rule 3), and a line per value either rule took.
struct Ruled {
    rtts: TsharkRtts,
    /// Per pair, for ack_rtt and initial_rtt: observations the host may have more, anywhere.
    unknown: [BTreeMap<Pair, u64>; 2],
    notes: Vec<String>,
}

/// Applies rules 2 (idle expiry) and 3 (mistimed frames) to tshark's values.
fn apply_rules(
    frames: &[TcpFrame],
    rtts: &TsharkRtts,
    mistimed: &BTreeMap<u64, (i128, i128)>,
) -> Ruled {
    // The analyzer's clock at each frame: the latest frame time so far.
    let mut clock = BTreeMap::new();
    let mut latest = i128::MIN;
    for f in frames {
        latest = latest.max(f.time_ns);
        clock.insert(f.number, latest);
    }
    let stream_of: BTreeMap<u64, Option<u64>> =
        frames.iter().map(|f| (f.number, f.stream)).collect();
    // Whether a frame of `stream` in (from, to] comes more than the idle timeout after the
    // connection's previous frame, on the analyzer's clock.
    let idle_between = |stream: Option<u64>, from: u64, to: u64| -> Option<(u64, i128)> {
        let mut last = clock[&from];
        for f in frames.iter().filter(|f| f.number > from && f.number <= to && f.stream == stream) {
            let now = clock[&f.number];
            if now - last > IDLE_TIMEOUT_NS {
                return Some((f.number, now - last));
            }
            last = now;
        }
        None
    };
    let mut out = Ruled {
        rtts: rtts.clone(),
        unknown: [BTreeMap::new(), BTreeMap::new()],
        notes: Vec::new(),
    };
    for (pair, measured) in &rtts.ack_frames {
        let mut kept = Vec::new();
        for (&(ack, acked), &v) in measured.iter().zip(&rtts.ack_rtt[pair]) {
            let what = format!(
                "ack_rtt {} -> {} {} s (frames {acked} → {ack})",
                pair.0,
                pair.1,
                seconds(v.into())
            );
            if let Some((at, gap)) = idle_between(stream_of[&ack], acked, ack) {
                out.notes.push(format!(
                    "rule 2: {what}: frame {at} comes {} s after the connection's previous frame",
                    seconds(gap)
                ));
            } else if mistimed.contains_key(&ack) || mistimed.contains_key(&acked) {
                out.notes.push(format!("rule 3: {what}: measured with a mistimed frame"));
                *out.unknown[0].entry(*pair).or_default() += 1;
            } else {
                kept.push(v);
            }
        }
        out.rtts.ack_rtt.insert(*pair, kept);
    }
    for (pair, handshakes) in &rtts.handshakes {
        let mut kept = Vec::new();
        for h in handshakes {
            let what = format!(
                "initial_rtt {} -> {} {} s (stream {}, frames {} → {})",
                pair.0,
                pair.1,
                seconds(h.value.into()),
                h.stream,
                h.syn_frame,
                h.shown_on
            );
            let timed = frames.iter().filter(|f| {
                f.stream == Some(h.stream) && f.number >= h.syn_frame && f.number <= h.shown_on
            });
            if let Some((at, gap)) = idle_between(Some(h.stream), h.syn_frame, h.shown_on) {
                out.notes.push(format!(
                    "rule 2: {what}: frame {at} comes {} s after the connection's previous frame",
                    seconds(gap)
                ));
            } else if timed.clone().any(|f| mistimed.contains_key(&f.number)) {
                out.notes.push(format!("rule 3: {what}: measured with a mistimed frame"));
                *out.unknown[1].entry(*pair).or_default() += 1;
            } else {
                kept.push(h.value);
            }
        }
        out.rtts.initial_rtt.insert(*pair, kept);
    }
    for (n, (t, r)) in mistimed {
        out.notes.push(format!(
            "rule 3: frame {n}: tshark's time {} s, the record's {} s",
            seconds(*t),
            seconds(*r)
        ));
    }
    out
}

/// One family against tshark's values under the rules: pairs without `unknown` observations
/// exactly ([`compare_exact`]); a pair with k of them (rule 3) must hold every value in its
/// bucket (each bucket at least tshark's count), and between 0 and k observations more, its
/// sum not compared.
fn compare_ruled(
    what: &str,
    values: &Values,
    host: &BTreeMap<Pair, Histogram>,
    unknown: &BTreeMap<Pair, u64>,
) -> Comparison {
    let plain = |m: &Values| -> Values {
        m.iter().filter(|(p, _)| !unknown.contains_key(p)).map(|(p, v)| (*p, v.clone())).collect()
    };
    let host_plain: BTreeMap<Pair, Histogram> = host
        .iter()
        .filter(|(p, _)| !unknown.contains_key(p))
        .map(|(p, h)| (*p, h.clone()))
        .collect();
    let mut c = compare_exact(what, &plain(values), &host_plain);
    let empty = Histogram::default();
    for (pair, &k) in unknown {
        let want = Histogram::of(values.get(pair).map(Vec::as_slice).unwrap_or(&[]));
        let got = host.get(pair).unwrap_or(&empty);
        let name = format!("{} -> {}", pair.0, pair.1);
        let short: Vec<String> = (0..want.buckets.len())
            .filter(|&i| got.buckets[i] < want.buckets[i])
            .map(|i| {
                format!(
                    "le={}: host {}, tshark {}",
                    common::rtt::bound_text(i),
                    got.buckets[i],
                    want.buckets[i]
                )
            })
            .collect();
        let extra = got.count as i64 - want.count as i64;
        let _ = writeln!(
            c.report,
            "  {name}: tshark {} values known and {k} unknown; host {} observations, sum {} s (not compared)",
            want.count,
            got.count,
            seconds(got.sum_ns)
        );
        if !short.is_empty() || extra < 0 || extra > k as i64 {
            c.mismatches.push(format!("{what} {name}: tshark's {} known values and up to {k} more, host {} observations; buckets short: {short:?}", want.count, got.count));
        }
    }
    c
}

// ------------------------------------------------------------------------------------------
// One capture

enum Verdict {
    /// Equal to tshark's values exactly.
    Exact,
    /// Equal under the rules, with what they changed.
    Ruled(Vec<String>),
    /// tshark does not read the whole file.
    Unread(String),
    /// Different, and no rule explains it.
    Differs(Vec<String>),
}

struct Checked {
    name: String,
    summary: String,
    report: String,
    verdict: Verdict,
}

fn check_capture(file: &Path, dir: &TempDir) -> Checked {
    let name = name(file);
    let checked = |summary: String, report: String, verdict| Checked {
        name: name.clone(),
        summary,
        report,
        verdict,
    };
    let frames = match tshark_tcp_frames(file, &DECODE_AS) {
        Ok(f) => f,
        Err(e) => return checked(String::new(), String::new(), Verdict::Unread(e)),
    };
    let rtts = match TsharkRtts::of(&frames) {
        Ok(r) => r,
        Err(e) => return checked(String::new(), String::new(), Verdict::Differs(vec![e])),
    };
    let summary = format!(
        "{} TCP frames, {} ack_rtt values on {} pairs, {} initial_rtt values on {} pairs",
        rtts.tcp_frames,
        rtts.ack_rtt_count(),
        rtts.ack_rtt.len(),
        rtts.initial_rtt_count(),
        rtts.initial_rtt.len()
    );
    if rtts.ack_rtt_count() + rtts.initial_rtt_count() == 0 {
        let why = "tshark shows no round-trip time in it: remove it from RTT_CAPTURES".to_string();
        return checked(summary, String::new(), Verdict::Differs(vec![why]));
    }
    let text = replay_to_text(file, &[], dir);
    let raw = compare_rtts(&rtts, &text, None);
    if raw.is_exact() {
        return checked(summary, raw.report, Verdict::Exact);
    }
    let host =
        |family| host_histograms(&text, family, None).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (host_ack, host_irtt) = (host(ACK_RTT), host(HANDSHAKE));
    // Rule 1: a link type the host does not decode, and no RTT series at all.
    let types = link_types(file).unwrap_or_default();
    if !types.is_empty() && types.iter().all(|t| !DECODED_LINK_TYPES.contains(t)) {
        let why = format!("rule 1: link type {types:?}, which the host does not decode");
        if host_ack.is_empty() && host_irtt.is_empty() {
            return checked(summary, String::new(), Verdict::Ruled(vec![why]));
        }
        let mut m = raw.mismatches;
        m.push(format!("{why}, but the host has RTT series"));
        return checked(summary, raw.report, Verdict::Differs(m));
    }
    // Rules 2 and 3.
    let ruled = apply_rules(&frames, &rtts, &mistimed_frames(file, &frames));
    if ruled.notes.is_empty() {
        return checked(summary, raw.report, Verdict::Differs(raw.mismatches));
    }
    let mut again = compare_ruled(
        &format!("{ACK_RTT} (tcp.analysis.ack_rtt)"),
        &ruled.rtts.ack_rtt,
        &host_ack,
        &ruled.unknown[0],
    );
    again.extend(compare_ruled(
        &format!("{HANDSHAKE} (tcp.analysis.initial_rtt)"),
        &ruled.rtts.initial_rtt,
        &host_irtt,
        &ruled.unknown[1],
    ));
    if again.is_exact() {
        return checked(summary, again.report, Verdict::Ruled(ruled.notes));
    }
    let mut m = raw.mismatches;
    m.push(format!("and under the rules ({}):", ruled.notes.join("; ")));
    m.extend(again.mismatches);
    checked(summary, raw.report, Verdict::Differs(m))
}

#[test]
fn every_rtt_capture_of_the_corpus_equals_tshark_per_pair() {
    let test = "every_rtt_capture_of_the_corpus_equals_tshark_per_pair";
    let Some(corpus) = corpus_dir_or_skip(test) else { return };
    require_tools(&["tshark"]);
    assert!(corpus.is_dir(), "WASMTAP_CORPUS={} is not a directory", corpus.display());
    let start = Instant::now();
    let dir = TempDir::new("corpus-rtt");
    let files: Vec<PathBuf> = RTT_CAPTURES.iter().map(|n| corpus.join(n)).collect();
    let missing: Vec<&PathBuf> = files.iter().filter(|f| !f.is_file()).collect();
    assert!(missing.is_empty(), "listed captures missing from the corpus: {missing:?}");
    let results = in_parallel(&files, |f| check_capture(f, &dir));

    let (mut exact, mut ruled, mut unread, mut failures) = (0, Vec::new(), Vec::new(), Vec::new());
    for c in &results {
        match &c.verdict {
            Verdict::Exact => {
                exact += 1;
                println!("exact     {:<42} {}", c.name, c.summary);
            }
            Verdict::Ruled(why) => {
                println!("ruled     {:<42} {}", c.name, c.summary);
                for w in why {
                    println!("            {w}");
                }
                print!("{}", c.report);
                ruled.push(c.name.clone());
            }
            Verdict::Unread(e) => {
                println!("unread    {:<42} {e}", c.name);
                unread.push(c.name.clone());
            }
            Verdict::Differs(m) => {
                println!("DIFFERS   {:<42} {}", c.name, c.summary);
                print!("{}", c.report);
                failures.push(format!("{}:\n  {}", c.name, m.join("\n  ")));
            }
        }
    }
    println!(
        "\nround-trip times in the corpus ({:.1?}): {exact} of {} captures equal tshark's values \
         exactly per pair (buckets, count, sum to the ns); {} equal under the rules \
         ({ruled:?}); {} not read by tshark; {} differ",
        start.elapsed(),
        RTT_CAPTURES.len(),
        ruled.len(),
        unread.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "the host differs from tshark:\n{}", failures.join("\n"));
    // The scan lists only captures tshark reads whole.
    assert!(unread.is_empty(), "tshark no longer reads {unread:?}: update RTT_CAPTURES");
    assert_eq!(exact + ruled.len(), RTT_CAPTURES.len());
    assert_eq!(
        exact,
        EXACT_CAPTURES,
        "{exact} of {} captures are exact, {EXACT_CAPTURES} expected",
        RTT_CAPTURES.len()
    );
}

#[test]
#[ignore = "reads every capture of the corpus with tshark (a minute or two)"]
fn every_rtt_capture_of_the_corpus_is_listed() {
    let test = "every_rtt_capture_of_the_corpus_is_listed";
    let Some(corpus) = corpus_dir_or_skip(test) else { return };
    require_tools(&["tshark"]);
    let start = Instant::now();
    let files = captures(&corpus);
    let found = in_parallel(&files, |file| {
        // A capture tshark reads only in part is not one "tshark reads".
        let frames = tshark_tcp_frames(file, &DECODE_AS).ok()?;
        let shows = frames.iter().any(|f| f.ack_rtt.is_some() || f.initial_rtt.is_some());
        shows.then(|| name(file))
    });
    let found: BTreeSet<String> = found.into_iter().flatten().collect();
    let listed: BTreeSet<String> = RTT_CAPTURES.iter().map(|s| s.to_string()).collect();
    println!(
        "{} of {} captures show a round-trip time in tshark ({:.1?}): {found:?}",
        found.len(),
        files.len(),
        start.elapsed()
    );
    let unlisted: Vec<&String> = found.difference(&listed).collect();
    let stale: Vec<&String> = listed.difference(&found).collect();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "RTT_CAPTURES is not the corpus's list: add {unlisted:?}, remove {stale:?}"
    );
}

// ------------------------------------------------------------------------------------------
// The readers themselves (no corpus needed)

#[test]
fn numbers_are_read_as_exact_nanoseconds() {
    for (text, ns) in [
        ("0.000025", 25_000),
        ("1000007.724456789", 1_000_007_724_456_789),
        ("-1", -1_000_000_000),
        ("0", 0),
        ("2.5e-5", 25_000),
        ("1e1", 10_000_000_000),
        // The f64 nearest to 0.1 + 0.2 s, printed in full: 0.3 s to the ns.
        ("0.30000000000000004", 300_000_000),
        ("123.45678900000001", 123_456_789_000),
    ] {
        assert_eq!(parse_decimal_ns(text), Ok(ns), "{text}");
    }
    for bad in ["0.0000000005", "1.2345678904", "", "abc", "1.2.3", "NaN", "+Inf"] {
        assert!(parse_decimal_ns(bad).is_err(), "{bad:?} read as {:?}", parse_decimal_ns(bad));
    }
    for (text, ns) in [
        ("0.000057000", 57_000),
        ("-0.000005000", -5_000),
        ("1.000000001", 1_000_000_001),
        // Unnormalised sub-second counts, as tshark prints them (`%d.%09d`).
        ("1418145370.1000000000", 1_418_145_371_000_000_000),
        ("-0.1000000000", -1_000_000_000),
        ("0.1147483648", 1_147_483_648),
    ] {
        assert_eq!(parse_tshark_ns(text), Ok(ns), "{text}");
    }
    assert_eq!(seconds(-5_000), "-0.000005000");
    assert_eq!(seconds(1_000_000_001), "1.000000001");
}

#[test]
fn host_histograms_are_read_per_pair_and_de_cumulated() {
    let family = "wasmtap_tcp_ack_rtt_seconds";
    let mut text = format!("# TYPE {family} histogram\n");
    // Two devices of one pair, one of another; values 20 µs, 30 µs, 2 s on eth0 and 11 s on
    // eth1 for the first pair.
    let series = [
        ("10.0.0.1", "10.0.0.2", "eth0", vec![20_000i64, 30_000, 2_000_000_000]),
        ("10.0.0.1", "10.0.0.2", "eth1", vec![11_000_000_000]),
        ("fd00::1", "fd00::2", "eth0", vec![-5_000]),
    ];
    for (src, dst, dev, values) in &series {
        let labels = format!("src_ip=\"{src}\",dst_ip=\"{dst}\",device=\"{dev}\"");
        for b in BOUNDS_NS {
            let n = values.iter().filter(|&&v| v <= b).count();
            let le = format!("{}", b as f64 / 1e9);
            text += &format!("{family}_bucket{{{labels},le=\"{le}\"}} {n}\n");
        }
        let sum: i64 = values.iter().sum();
        text += &format!("{family}_bucket{{{labels},le=\"+Inf\"}} {}\n", values.len());
        text += &format!("{family}_sum{{{labels}}} {}\n", sum as f64 / 1e9);
        text += &format!("{family}_count{{{labels}}} {}\n", values.len());
    }
    let all = host_histograms(&text, family, None).expect("read");
    let eth0 = host_histograms(&text, family, Some("eth0")).expect("read");
    let pair = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let v6 = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
    let want = |values: &[i64]| Histogram::of(values);
    assert_eq!(all[&pair], want(&[20_000, 30_000, 2_000_000_000, 11_000_000_000]));
    assert_eq!(eth0[&pair], want(&[20_000, 30_000, 2_000_000_000]));
    assert_eq!(all[&v6], want(&[-5_000]));
    assert_eq!(all[&pair].buckets[0], 1);
    assert_eq!(all[&pair].buckets[1], 1);
    assert_eq!(all[&pair].buckets[BOUNDS_NS.len()], 1, "11 s is above the last bound");
    // A comparison against the same values is exact; one value a ns off differs in the sum
    // alone (it stays in its bucket), and a pair the host has and tshark not in all three.
    let only = |p| -> BTreeMap<_, _> {
        all.iter().filter(|(q, _)| **q == p).map(|(q, h)| (*q, h.clone())).collect()
    };
    let values: Values = [(pair, vec![20_000, 30_000, 2_000_000_000, 11_000_000_000])].into();
    let c = compare_exact("t", &values, &only(pair));
    assert!(c.is_exact(), "{}", c.mismatches.join("\n"));
    let off: Values = [(pair, vec![20_000, 30_001, 2_000_000_000, 11_000_000_000])].into();
    let c = compare_exact("t", &off, &only(pair));
    assert_eq!(c.mismatches.len(), 1, "{}", c.mismatches.join("\n"));
    assert!(
        c.mismatches[0].contains("sum") && c.mismatches[0].contains("-1 ns"),
        "{:?}",
        c.mismatches
    );
    let c = compare_exact("t", &values, &all);
    assert_eq!(c.mismatches.len(), 3, "{}", c.mismatches.join("\n"));
}
