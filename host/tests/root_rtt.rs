//! ROOT: issue 20, acceptance 1 and 3: the host's round-trip times against tshark's on real
//! Linux TCP. `wasmtap_tcp_ack_rtt_seconds{src_ip,dst_ip,device}` holds one observation per
//! value tshark shows in `tcp.analysis.ack_rtt` (src_ip sent the data, dst_ip acknowledged it),
//! `wasmtap_tcp_handshake_seconds` one per connection for which tshark shows
//! `tcp.analysis.initial_rtt` (src_ip the client); the comparison is `common::rtt`'s.
//!
//! The traffic is `tests/traffic.py` between the two namespaces of a
//! `common::topology::NetnsPair` (bulk transfers of 4 MB up and 2 MB down, a slow reader with
//! zero windows and persist probes, a refused connection, an abort and a SO_LINGER-0 close,
//! over IPv4 and IPv6 each), captured by tcpdump on `a`'s veth. Three tests:
//!
//! - `lossy_capture_rtts_equal_tshark_per_pair`: with nftables dropping 1% of the TCP segments
//!   each namespace receives, after the capture point (as `root_tcp_analysis` records its lossy
//!   capture), so the capture holds losses, retransmissions, duplicate ACKs and RTTs measured
//!   across retransmissions. `wasmtap replay` of it equals tshark exactly: per pair, every
//!   bucket, the count and the sum to the nanosecond, for both histograms.
//! - `delayed_capture_rtts_equal_tshark_per_pair`: the same traffic through a token bucket
//!   (`tbf rate 20mbit burst 32kbit latency 400ms`) on both ends of the veth, so that segments
//!   queue for milliseconds, more or less as the queue fills; tcpdump records it with
//!   nanosecond timestamps. The replay equals tshark exactly, and the capture really has
//!   millisecond RTTs, in several buckets, in every direction.
//! - `live_host_rtts_agree_with_tshark_within_timestamp_error`: a host (`wasmtap run -i VETH`)
//!   captured that same delayed traffic on the same veth while tcpdump recorded it; its
//!   histograms agree with tshark's reading of the tcpdump capture within what two packet
//!   sockets' timestamps allow ([`live_allowance`] says how much and why).
//!
//! Where the token bucket sits: on a veth's egress the packet taps run after the qdisc (in
//! `dev_hard_start_xmit`), so a capture on the veth sees a segment only once it has left its
//! queue, and a queue there never shows in an RTT measured at that veth (tried: with `tbf` as
//! each end's root qdisc, 98% of tshark's values stayed under 100 µs). On ingress the taps run
//! before tc's ingress hook, so each end redirects what it receives to an `ifb` device whose
//! root qdisc is the token bucket: a segment is captured, then queues behind the others on its
//! way into the receiver, and its ACK comes back that much later. This kernel has no netem.
//!
//! The tests take the `serial` lock: the live comparison's timestamps are sharper without a
//! second recording loading the machine. Skipped (loudly) without root, unless
//! WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;

use common::live::{DeviceCounts, LiveHost, serial, wait_files_quiet};
use common::rtt::{
    ACK_RTT, BOUNDS_NS, HANDSHAKE, Histogram, Pair, SLOTS, TsharkRtts, Values, bound_text,
    bucket_of, compare_rtts, host_histograms_ok, seconds,
};
use common::topology::{ip, netns_exec};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

/// The traffic server's base port inside namespace b (see `common::traffic`).
const PORT: u16 = 5001;
/// Bytes uploaded per bulk transfer (half as much comes back).
const BULK_BYTES: u64 = 4_000_000;
/// Bytes sent to the slow reader.
const SLOW_BYTES: u64 = 400_000;
/// Share of TCP segments nftables drops in each namespace's input hook, in percent (the
/// issue's "1% loss each way").
const LOSS_PERCENT: u32 = 1;
/// The token bucket on each end's ingress: 20 Mbit/s, a 4 KB burst, and up to 400 ms of queue
/// (about 1 MB) before it drops.
const TBF: [&str; 6] = ["rate", "20mbit", "burst", "32kbit", "latency", "400ms"];
/// The ifb device each namespace of the delayed pair shapes its ingress through.
const IFB: &str = "ifbrtt0";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ------------------------------------------------------------------------------------------
// Recording

/// `tc ARGS...` in `ns`, which must succeed.
fn tc(ns: &str, args: &[&str]) {
    run_ok(netns_exec(ns, "tc").args(args), secs(10));
}

/// Everything `dev` (in `ns`) receives goes through [`IFB`], whose root qdisc is the [`TBF`]
/// token bucket: after the packet taps of `dev`, before the namespace's stack.
fn shape_ingress(ns: &str, dev: &str) {
    ip(&["-n", ns, "link", "add", IFB, "type", "ifb"]);
    ip(&["-n", ns, "link", "set", IFB, "up"]);
    tc(ns, &["qdisc", "add", "dev", dev, "handle", "ffff:", "ingress"]);
    tc(
        ns,
        &[
            "filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", IFB,
        ],
    );
    let mut root = vec!["qdisc", "add", "dev", IFB, "root", "tbf"];
    root.extend(TBF);
    tc(ns, &root);
}

/// Runs the traffic client against b's IPv4 and IPv6 addresses, with the slow reader (the
/// "lossy" client only skips the check that the abort's reset reached the client).
fn run_traffic(pair: &NetnsPair) {
    let _server = start_traffic_server(pair, PORT);
    for addr in [&pair.v4_b, &pair.v6_b] {
        let report = run_lossy_traffic_client(pair, addr, PORT, BULK_BYTES, SLOW_BYTES);
        eprintln!("client {addr}: {report}");
    }
}

/// The lossy capture: [`LOSS_PERCENT`]% loss each way, recorded as `root_tcp_analysis` does.
fn record_lossy_capture() -> PathBuf {
    require_tools(&["tshark"]);
    record_lossy("rtt-lossy-", LOSS_PERCENT, PORT, BULK_BYTES, SLOW_BYTES).file
}

/// The delayed traffic: its tcpdump capture, and what a live host on the same veth made of it.
struct Delayed {
    file: PathBuf,
    device: String,
    /// The live host's /metrics once it had accounted for every captured frame.
    live: String,
    /// Its packet accounting on the device then.
    counts: DeviceCounts,
    captured: u64,
}

/// Records the delayed traffic once per test process (the two tests that use it share it).
fn delayed(test: &str) -> Option<&'static Delayed> {
    if !require_root(test) {
        return None;
    }
    static DELAYED: OnceLock<Delayed> = OnceLock::new();
    Some(DELAYED.get_or_init(record_delayed))
}

fn record_delayed() -> Delayed {
    require_tools(&["tcpdump", "tshark", "python3", "ip", "tc", "ethtool", "curl"]);
    let file = fresh_capture(Path::new(env!("CARGO_TARGET_TMPDIR")), "rtt-delayed-");
    let pair = NetnsPair::new();
    shape_ingress(&pair.a, &pair.veth_a);
    shape_ingress(&pair.b, &pair.veth_b);
    let device = pair.veth_a.clone();
    let mut host = LiveHost::start(&format!("host -i {device}"), &pair.a, &["-i", &device]);
    host.wait_ready(secs(60));
    let tcpdump = Tcpdump::start_nano(&pair.a, &device, &file);
    run_traffic(&pair);
    // Late retransmissions and closes land in the capture too, before it stops.
    wait_files_quiet(&[&file], secs(3), secs(60));
    let captured = tcpdump.stop();
    // The host started before tcpdump and stops after it: it has every captured frame once it
    // accounts for as many (a few more: neighbour discovery before tcpdump started).
    let polled = host.poll(secs(10), |s| DeviceCounts::of(s, &device).accounted() >= captured);
    let counts = DeviceCounts::of(&polled.samples, &device);
    assert!(polled.met, "the host accounts for {counts}, tcpdump captured {captured}");
    assert_eq!(counts.dropped_total(), 0, "the live host dropped packets: {counts}");
    // Workers flush at least every 50 ms; give the last batch time to land.
    thread::sleep(Duration::from_millis(500));
    let live = host.get("/metrics").unwrap_or_else(|| panic!("/metrics:\n{}", host.log_tail()));
    host.assert_running();
    eprintln!("captured {captured} packets into {}; live host: {counts}", file.display());
    Delayed { file, device, live, counts, captured }
}

// ------------------------------------------------------------------------------------------
// Checks of the captures themselves

/// What tshark finds, per pair: values, the share above 1 ms, and exact-end ACKs with a
/// zero difference.
fn describe(t: &TsharkRtts) -> String {
    let mut out = format!(
        "\ntshark: {} TCP frames; {} ack_rtt values on {} pairs, {} initial_rtt values on {} pairs\n",
        t.tcp_frames,
        t.ack_rtt_count(),
        t.ack_rtt.len(),
        t.initial_rtt_count(),
        t.initial_rtt.len()
    );
    for (pair, values) in &t.ack_rtt {
        let ms = values.iter().filter(|&&v| v > 1_000_000).count();
        let max = values.iter().max().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "  ack_rtt {} -> {}: {} values, {ms} above 1 ms, largest {} s, {} exact-end ACKs \
             with a zero difference",
            pair.0,
            pair.1,
            values.len(),
            seconds(max.into()),
            t.zero_deltas.get(pair).copied().unwrap_or(0)
        );
    }
    out
}

/// Asserts that the replay of `file` equals tshark's values exactly, both histograms, per pair;
/// returns tshark's values.
fn assert_replay_exact(file: &Path, what: &str) -> TsharkRtts {
    let dir = TempDir::new("rtt-replay");
    let tshark = TsharkRtts::read(file, &[]);
    let text = replay_to_text(file, &[], &dir);
    let c = compare_rtts(&tshark, &text, None);
    eprintln!("{}{}", describe(&tshark), c.report);
    assert!(
        c.is_exact(),
        "{what}: wasmtap replay differs from tshark:\n{}",
        c.mismatches.join("\n")
    );
    tshark
}

/// The capture covers both families, both directions of each, and a handshake per connection.
fn assert_covers_both_families(t: &TsharkRtts, what: &str) {
    let pairs: BTreeSet<Pair> = t.ack_rtt.keys().copied().collect();
    let v6 = pairs.iter().filter(|p| p.0.is_ipv6()).count();
    assert!(pairs.len() >= 4 && v6 >= 2, "{what}: ack_rtt values on too few pairs: {pairs:?}");
    // bulk, slow, abort and linger0 over each family.
    assert!(
        t.initial_rtt_count() >= 8,
        "{what}: tshark shows {} initial RTTs, expected ≥ 8",
        t.initial_rtt_count()
    );
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn lossy_capture_rtts_equal_tshark_per_pair() {
    if !require_root("lossy_capture_rtts_equal_tshark_per_pair") {
        return;
    }
    let _serial = serial();
    let file = record_lossy_capture();
    let t = assert_replay_exact(&file, "lossy capture");
    assert_covers_both_families(&t, "lossy capture");
    assert!(t.ack_rtt_count() >= 1000, "only {} ack_rtt values", t.ack_rtt_count());
    let retransmissions = tshark_count(&file, Some("tcp.analysis.retransmission"));
    assert!(retransmissions > 0, "the lossy capture has no retransmission");
    eprintln!(
        "lossy capture: {} ack_rtt and {} initial_rtt values equal tshark's exactly \
         ({retransmissions} retransmissions in it)",
        t.ack_rtt_count(),
        t.initial_rtt_count()
    );
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn delayed_capture_rtts_equal_tshark_per_pair() {
    let _serial = serial();
    let Some(d) = delayed("delayed_capture_rtts_equal_tshark_per_pair") else { return };
    let t = assert_replay_exact(&d.file, "delayed capture");
    assert_covers_both_families(&t, "delayed capture");
    // Millisecond RTTs, in every direction, spread over several buckets: the queue varies.
    let above_ms: Vec<i64> =
        t.ack_rtt.values().flatten().copied().filter(|&v| v > 1_000_000).collect();
    let buckets: BTreeSet<usize> = above_ms.iter().map(|&v| bucket_of(v)).collect();
    let thin: Vec<String> = t
        .ack_rtt
        .iter()
        .filter(|(_, v)| v.iter().filter(|&&x| x > 1_000_000).count() < 20)
        .map(|(p, _)| format!("{} -> {}", p.0, p.1))
        .collect();
    eprintln!(
        "delayed capture: {} of {} ack_rtt values above 1 ms, in buckets {:?}",
        above_ms.len(),
        t.ack_rtt_count(),
        buckets.iter().map(|&i| bound_text(i)).collect::<Vec<_>>()
    );
    assert!(
        above_ms.len() * 4 >= t.ack_rtt_count(),
        "fewer than a quarter of the RTTs are above 1 ms: the token bucket did not queue"
    );
    assert!(buckets.len() >= 3, "the RTTs above 1 ms fill only buckets {buckets:?}");
    assert!(thin.is_empty(), "fewer than 20 RTTs above 1 ms on {thin:?}");
}

// ------------------------------------------------------------------------------------------
// Live

/// How far one value may be from tshark's: 200 µs. The host and tcpdump read the same frames
/// through two packet sockets on the same veth, and each socket stamps a frame with its own
/// clock reading when the kernel hands it over (TCP's skb carries a monotonic departure time,
/// which af_packet does not report), so one frame's two stamps differ by the time between the
/// two deliveries, and an RTT, the difference of two stamps, by the difference of two such
/// delays. Two tcpdumps on this very traffic stamped frames up to 92 µs apart (99% within
/// 25 µs), and their RTTs differed by up to 92 µs; twice that is the window.
const WINDOW_NS: i64 = 200_000;

/// How many samples one side may have that the other has not, per pair: 2, plus the pair's
/// segments that tshark marks as sending sequence space again (retransmissions, out-of-order
/// segments, keep-alives, zero-window probes), plus its exact-end ACKs with a zero difference.
/// The two sockets see each direction's frames in the same order, and an ACK always after the
/// segment it times; but a segment sent again and an ACK of the other direction that cross on
/// the wire can be seen in either order, and which of them an ACK times (or whether it times
/// one again) depends on that order. A zero difference (tshark shows no value) is a
/// microsecond-capture artefact that one side may not share. The 2 covers such a crossing of
/// a segment tshark does not mark.
fn count_slack(resent: u64, zero_deltas: u64) -> u64 {
    2 + resent + zero_deltas
}

/// The live comparison of one family, per pair, with tshark's values `t`; `slack` per pair as
/// [`count_slack`] (0 where absent). For each pair, with C its slack and n its tshark values:
/// - the count within C;
/// - every cumulative bucket (`le` = b) within C plus the number of tshark's values within
///   [`WINDOW_NS`] of b (each may land on the other side of b);
/// - the sum within n × [`WINDOW_NS`] (each value moves at most that) plus C × M, with M the
///   largest value either side can hold: tshark's largest, or the bound of the host's highest
///   non-empty bucket if that is more (10 s for `+Inf`).
///
/// Returns the report and the differences beyond that.
fn live_allowance(
    what: &str,
    t: &Values,
    host: &BTreeMap<Pair, Histogram>,
    slack: &BTreeMap<Pair, u64>,
) -> (String, Vec<String>) {
    let mut report = format!("\n{what}: live host vs tshark on tcpdump's capture, per pair\n");
    let mut bad = Vec::new();
    let pairs: BTreeSet<Pair> = t.keys().chain(host.keys()).copied().collect();
    let empty = Histogram::default();
    for pair in pairs {
        let values = t.get(&pair).map(Vec::as_slice).unwrap_or(&[]);
        let want = Histogram::of(values);
        let got = host.get(&pair).unwrap_or(&empty);
        let c = slack.get(&pair).copied().unwrap_or(0);
        let name = format!("{} -> {}", pair.0, pair.1);
        let _ = writeln!(report, "  {name} (slack {c})");
        let mut check = |label: String, host_v: i128, tshark_v: i128, allowed: i128| {
            let ok = host_v.abs_diff(tshark_v) <= allowed.unsigned_abs();
            let _ = writeln!(
                report,
                "    {label:<26} tshark {tshark_v:>14} host {host_v:>14} allowed ±{allowed:<12} {}",
                if ok { "ok" } else { "BEYOND" }
            );
            if !ok {
                bad.push(format!(
                    "{what} {name}: {label}: host {host_v}, tshark {tshark_v}, allowed ±{allowed}"
                ));
            }
        };
        check("count".into(), got.count.into(), want.count.into(), c.into());
        for (i, &b) in BOUNDS_NS.iter().enumerate() {
            let (h, w) = (got.cumulative(i), want.cumulative(i));
            let near = values.iter().filter(|&&v| (v - b).abs() <= WINDOW_NS).count() as u64;
            if h == 0 && w == 0 || h == got.count && w == want.count && near == 0 {
                continue;
            }
            check(format!("le={}", bound_text(i)), h.into(), w.into(), (c + near).into());
        }
        let top = (0..SLOTS).rev().find(|&i| got.buckets[i] > 0);
        let host_max = top.map_or(0, |i| BOUNDS_NS.get(i).copied().unwrap_or(10_000_000_000));
        let m = values.iter().map(|v| v.abs()).max().unwrap_or(0).max(host_max);
        let allowed = i128::from(WINDOW_NS) * values.len() as i128 + i128::from(m) * i128::from(c);
        check("sum (ns)".into(), got.sum_ns, want.sum_ns, allowed);
        let mean = |h: &Histogram| seconds(h.sum_ns / i128::from(h.count.max(1)));
        let _ = writeln!(report, "    mean: tshark {} s, host {} s", mean(&want), mean(got));
    }
    (report, bad)
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn live_host_rtts_agree_with_tshark_within_timestamp_error() {
    let _serial = serial();
    let Some(d) = delayed("live_host_rtts_agree_with_tshark_within_timestamp_error") else {
        return;
    };
    let t = TsharkRtts::read(&d.file, &[]);
    eprintln!("{}", describe(&t));
    eprintln!(
        "live host on {}: {}; tcpdump captured {} frames, tshark reads {} TCP frames",
        d.device, d.counts, d.captured, t.tcp_frames
    );
    let resent = tcp_analysis_resent(&d.file);
    let slack: BTreeMap<Pair, u64> = t
        .ack_rtt
        .keys()
        .chain(t.zero_deltas.keys())
        .map(|p| {
            let zero = t.zero_deltas.get(p).copied().unwrap_or(0);
            (*p, count_slack(resent.get(p).copied().unwrap_or(0), zero))
        })
        .collect();
    let (r1, mut bad) = live_allowance(
        ACK_RTT,
        &t.ack_rtt,
        &host_histograms_ok(&d.live, ACK_RTT, Some(&d.device)),
        &slack,
    );
    // A handshake's three frames cannot cross: every connection counts, each time within the
    // window.
    let (r2, bad2) = live_allowance(
        HANDSHAKE,
        &t.initial_rtt,
        &host_histograms_ok(&d.live, HANDSHAKE, Some(&d.device)),
        &BTreeMap::new(),
    );
    bad.extend(bad2);
    eprintln!("{r1}{r2}");
    assert!(t.ack_rtt_count() >= 1000, "only {} ack_rtt values", t.ack_rtt_count());
    assert!(bad.is_empty(), "the live host's RTTs differ from tshark's:\n{}", bad.join("\n"));
}

/// Segments per (src, dst) that tshark marks as sending sequence space again.
fn tcp_analysis_resent(file: &Path) -> BTreeMap<Pair, u64> {
    tshark_count_by_pair(
        file,
        "tcp.analysis.retransmission || tcp.analysis.fast_retransmission \
         || tcp.analysis.spurious_retransmission || tcp.analysis.out_of_order \
         || tcp.analysis.keep_alive || tcp.analysis.zero_window_probe",
    )
}
