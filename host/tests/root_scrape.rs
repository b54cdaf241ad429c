//! ROOT: scrapes that cannot hurt the capture (issue 8). `wasmtap run` captures a veth inside a
//! network namespace the test creates and serves /metrics on 127.0.0.1 there; every client
//! runs in that namespace too.
//!
//! - `a_scrape_storm_costs_no_packets`: 1M generated frames replayed at 50 kpps (20 s) with
//!   tcpreplay, once without scrapers and once with 50 concurrent scrapers (two curl processes
//!   of 25 parallel keep-alive connections each, one of them asking for gzip) hammering
//!   /metrics the whole time. Loss (what tcpreplay sent minus
//!   `wasmtap_host_packets_received_total` of the veth once settled) with the storm stays
//!   within [`LOSS_TOLERANCE`] of sent above the loss without; the host's peak RSS stays under
//!   [`RSS_LIMIT_KIB`]; 20 scrapes taken during the storm (half gzip, decompressed here) pass
//!   `promtool check metrics`. 503 answers are allowed and counted.
//! - `bad_clients_cannot_hold_the_host`: with a ~3 MB exposition, a client that sends half a
//!   request is disconnected by the header-read timeout (5 s) and one that asks for /metrics
//!   and never reads by the write timeout (10 s), while the host carries on; then, with such
//!   clients and an idle keep-alive connection open, SIGTERM makes the host exit 0 within
//!   [`SHUTDOWN_LIMIT`].
//!
//! The bounds asserted are the ones `host/src/exporter/server.rs` documents. The tests run one
//! at a time (`serial`): one's load would skew the other's loss figures. Each prints what it
//! measured. Skipped (loudly) without root, unless WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;

use common::live::*;
use common::scrape::*;
use common::topology::*;
use common::*;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Frames per replay: 20 s at [`PPS`].
const PACKETS: u64 = 1_000_000;
/// The rate of issue 8's measurement, where 5 scrapers cost 60–68% of the packets.
const PPS: u64 = 50_000;
/// Concurrent scrapers in the storm, split over two curl processes.
const SCRAPERS: usize = 50;
/// Scrape bodies kept and checked with promtool, half of them gzip.
const SAMPLES: usize = 20;
/// Extra loss allowed with the storm, as a fraction of what was sent: 0.1% (1000 frames, 20 ms
/// of traffic) absorbs a scheduling hiccup on a 2-core test machine shared with the scrapers
/// and tcpreplay, while the unbounded exporter of issue 8 lost 60–93% under this load.
const LOSS_TOLERANCE: f64 = 0.001;
/// The host's peak RSS limit: the unbounded exporter reached 0.8–1 GiB under this storm; the
/// bounded one holds at most three renders (a few MiB each here) beside the ≈100 MiB of
/// wasmtime and the analyzers.
const RSS_LIMIT_KIB: u64 = 256 * 1024;
/// SIGTERM to exit: the HTTP server's 5 s shutdown grace plus time to stop the capture and
/// the workers, and well inside Kubernetes' 30 s termination grace period.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);
/// The HTTP server's header-read timeout (`LIMITS.header_read`).
const HEADER_READ_TIMEOUT: f64 = 5.0;
/// The HTTP server's write timeout (`LIMITS.write`).
const WRITE_TIMEOUT: f64 = 10.0;
/// How late a timeout may fire in the test's eyes: the client polls every 50 ms, and the
/// host's one tokio worker may be busy for a moment.
const TIMEOUT_SLACK: f64 = 1.5;
/// How early: none in truth (the client's clock starts before it connects), but timers and
/// clocks are read in different processes; a cut this much early is still the timeout's.
const EARLY_SLACK: f64 = 0.25;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `tcpreplay --pps PPS` of `pcap` out of `dev` in `ns`; returns the packets it sent.
fn replay_at_rate(ns: &str, dev: &str, pcap: &Path) -> u64 {
    let mut cmd = netns_exec(ns, "tcpreplay");
    cmd.args(["--pps", &PPS.to_string(), "--intf1", dev]).arg(pcap);
    tcpreplay_sent(&run_ok(&mut cmd, secs(120)))
}

/// `wasmtap_host_packets_received_total` of `dev` once it has stopped growing for a second
/// (≤ 15 s); with the drop counters, for the record.
fn settled(host: &LiveHost, dev: &str) -> DeviceCounts {
    let deadline = Instant::now() + secs(15);
    let mut last: Option<(DeviceCounts, Instant)> = None;
    loop {
        if let Some(samples) = host.scrape() {
            let now = DeviceCounts::of(&samples, dev);
            match last {
                Some((prev, since)) if prev == now => {
                    if since.elapsed() >= secs(1) {
                        return now;
                    }
                }
                _ => last = Some((now, Instant::now())),
            }
        }
        assert!(Instant::now() < deadline, "{dev}: counts still moving after 15 s: {last:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// What one replay measured.
struct Run {
    sent: u64,
    counts: DeviceCounts,
    loss: u64,
    peak_rss_kib: u64,
    hwm_kib: u64,
    codes: Codes,
    kept: Vec<Kept>,
}

/// Starts a host capturing `dev` in namespace a, replays `pcap` at [`PPS`] out of `peer` in
/// namespace b, with the storm of scrapers if `storm`, and measures.
fn replay_run(
    pair: &NetnsPair,
    (dev, peer): (&str, &str),
    pcap: &Path,
    storm: bool,
    dir: &Path,
) -> Run {
    let what = if storm { "host (storm)" } else { "host (baseline)" };
    let mut host = LiveHost::start(what, &pair.a, &["-i", dev, "--no-cache"]);
    host.wait_ready(secs(30));
    let before = settled(&host, dev);
    let rss = RssMonitor::start(host.pid());

    let mut curls = Vec::new();
    let mut sampler = None;
    if storm {
        curls.push(hammer(&pair.a, host.port, SCRAPERS / 2, false));
        curls.push(hammer(&pair.a, host.port, SCRAPERS - SCRAPERS / 2, true));
        let (ns, port, dir) = (pair.a.clone(), host.port, dir.to_path_buf());
        let span = Duration::from_secs_f64(PACKETS as f64 / PPS as f64 * 0.9);
        sampler = Some(thread::spawn(move || sample_scrapes(&ns, port, &dir, SAMPLES, span)));
    }
    let started = Instant::now();
    let sent = replay_at_rate(&pair.b, peer, pcap);
    let took = started.elapsed();
    let mut codes = Codes::default();
    for mut c in curls {
        c.signal("INT");
        let _ = c.wait(secs(5));
        codes.add_lines(&c.stdout());
    }
    let kept = match sampler {
        Some(s) => {
            let (kept, c) = s.join().expect("sampler thread");
            codes.ok += c.ok;
            codes.busy += c.busy;
            codes.other += c.other;
            kept
        }
        None => Vec::new(),
    };
    let counts = settled(&host, dev).since(&before);
    let peak_rss_kib = rss.stop();
    let hwm_kib = proc_status(host.pid(), "VmHWM").unwrap_or(0);
    host.assert_running();
    let loss = sent.saturating_sub(counts.received);
    eprintln!(
        "{what}: tcpreplay sent {sent} in {took:.1?}; {counts}; loss {loss} ({:.3}%); \
         peak VmRSS {} MiB, VmHWM {} MiB",
        100.0 * loss as f64 / sent.max(1) as f64,
        peak_rss_kib / 1024,
        hwm_kib / 1024
    );
    if storm {
        eprintln!(
            "{what}: scrapes answered 200: {}, 503: {}, errors: {}",
            codes.ok, codes.busy, codes.other
        );
    }
    Run { sent, counts, loss, peak_rss_kib, hwm_kib, codes, kept }
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn a_scrape_storm_costs_no_packets() {
    if !require_root("a_scrape_storm_costs_no_packets") {
        return;
    }
    require_tools(&["tcpreplay", "python3", "curl", "stdbuf", "promtool"]);
    let _serial = serial();
    let (dev, peer) = ("wscrape0", "wscrape1");
    let pair = quiet_pair("storm", Some((dev, peer)));
    let dir = TempDir::new("scrape-storm");
    let pcap = synth_pcap(dir.path(), "storm", PACKETS);

    let base = replay_run(&pair, (dev, peer), &pcap, false, dir.path());
    let storm = replay_run(&pair, (dev, peer), &pcap, true, dir.path());

    let allowed = base.loss + (LOSS_TOLERANCE * storm.sent as f64).ceil() as u64;
    eprintln!(
        "loss without scrapers {} of {}, with {SCRAPERS} scrapers {} of {} (allowed {allowed})",
        base.loss, base.sent, storm.loss, storm.sent
    );
    assert!(
        storm.loss <= allowed,
        "the scrape storm cost packets: loss {} with it, {} without (allowed {allowed}); {}",
        storm.loss,
        base.loss,
        storm.counts
    );
    for (what, run) in [("baseline", &base), ("storm", &storm)] {
        let peak = run.peak_rss_kib.max(run.hwm_kib);
        assert!(
            peak < RSS_LIMIT_KIB,
            "{what}: host peak RSS {} MiB, limit {} MiB",
            peak / 1024,
            RSS_LIMIT_KIB / 1024
        );
    }
    assert!(storm.codes.ok >= SAMPLES as u64, "too few scrapes succeeded: {:?}", storm.codes);

    // Every kept scrape is a valid exposition, gzip exactly when asked for.
    assert_eq!(storm.kept.len(), SAMPLES, "scrapes kept for checking (200 within 200 tries)");
    for k in &storm.kept {
        assert_eq!(k.gzip_sent, k.gzip_asked, "{}: Content-Encoding", k.body.display());
        let text = exposition_of(k);
        assert!(
            text.contains("# TYPE wasmtap_analyzer_"),
            "{}: no self-metrics in the scrape",
            k.body.display()
        );
        let check = run_with_input(
            Command::new("promtool").args(["check", "metrics"]),
            Some(text.as_bytes()),
            secs(30),
        );
        assert!(check.success(), "{}: promtool: {}", k.body.display(), check.describe());
    }
    eprintln!("{} scrapes taken during the storm pass promtool check metrics", storm.kept.len());
}

/// The bad clients, run inside the host's namespace, where its listener is (and where a
/// script can set a socket's receive buffer before connecting, which std cannot).
/// - `timeouts PORT`: a half request and a non-reader; prints `half_closed SECS` and
///   `non_reader_cut SECS` as the host disconnects each (the non-reader by its server-side
///   socket leaving ESTABLISHED: reading to notice would drain it).
/// - `hold PORT`: a half request, a non-reader and an idle keep-alive connection, then prints
///   READY and holds them.
const BAD_CLIENTS: &str = r#"
import socket, subprocess, sys, time

mode, port = sys.argv[1], int(sys.argv[2])

def connect(rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    return s

def half():
    s = connect()
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: wasmtap\r\nAccept-")
    return s

def non_reader():
    s = connect(rcvbuf=1024)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: wasmtap\r\n\r\n")
    return s

def idle():
    s = connect()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: wasmtap\r\n\r\n")
    got = b""
    while b"\r\n\r\nok\n" not in got:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("idle client: closed before the answer")
        got += chunk
    return s

def closed(s):
    s.settimeout(0.05)
    try:
        return s.recv(65536) == b""
    except socket.timeout:
        return False
    except OSError:
        return True

def server_side_open(s):
    out = subprocess.run(
        ["ss", "-tnH", "state", "established", "( sport = :%d and dport = :%d )"
         % (port, s.getsockname()[1])],
        capture_output=True, text=True, check=True).stdout
    return out.strip() != ""

if mode == "timeouts":
    t0 = time.monotonic()
    h, n = half(), non_reader()
    pending = {"half_closed", "non_reader_cut"}
    while pending and time.monotonic() - t0 < 30:
        if "half_closed" in pending and closed(h):
            print("half_closed %.2f" % (time.monotonic() - t0), flush=True)
            pending.discard("half_closed")
        if "non_reader_cut" in pending and not server_side_open(n):
            print("non_reader_cut %.2f" % (time.monotonic() - t0), flush=True)
            pending.discard("non_reader_cut")
        time.sleep(0.05)
    print("DONE", flush=True)
else:
    held = [half(), non_reader(), idle()]
    print("READY", flush=True)
    time.sleep(120)
"#;

/// Asserts that `who` was disconnected `after` seconds from connecting: by a timeout of
/// `timeout` seconds, not earlier and not much later.
fn assert_fired(who: &str, after: f64, timeout: f64) {
    assert!(
        (timeout - EARLY_SLACK..=timeout + TIMEOUT_SLACK).contains(&after),
        "{who} was disconnected after {after} s; the timeout is {timeout} s"
    );
}

/// The seconds printed after `name` by the bad-clients script, if it printed them.
fn seconds_of(out: &str, name: &str) -> Option<f64> {
    out.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn bad_clients_cannot_hold_the_host() {
    if !require_root("bad_clients_cannot_hold_the_host") {
        return;
    }
    require_tools(&["tcpreplay", "python3", "curl", "ss"]);
    let _serial = serial();
    let (dev, peer) = ("wbad0", "wbad1");
    let pair = quiet_pair("badcli", Some((dev, peer)));
    let dir = TempDir::new("scrape-bad");
    let mut host = LiveHost::start("wasmtap run", &pair.a, &["-i", dev, "--no-cache"]);
    host.wait_ready(secs(60));
    let port = host.port;

    // Series enough for a ~3 MB exposition: more than a non-reader's socket buffers hold,
    // so the host is still writing to it when it stops reading.
    let pcap = synth_pcap(dir.path(), "flows", PACKETS);
    tcpreplay(&pair.b, peer, &pcap);
    let text = host.get("/metrics").expect("scrape");
    eprintln!("exposition: {} bytes", text.len());
    assert!(text.len() > 2 << 20, "exposition of {} bytes: too small to stall a write", text.len());

    // Timeouts, while the host carries on.
    let r = run_with_timeout(
        netns_exec(&pair.a, "python3").args(["-c", BAD_CLIENTS, "timeouts", &port.to_string()]),
        secs(60),
    );
    let out = r.stdout_text();
    assert!(r.success() && out.contains("DONE"), "bad clients: {}", r.describe());
    let half = seconds_of(&out, "half_closed");
    let cut = seconds_of(&out, "non_reader_cut");
    eprintln!("half request disconnected after {half:?} s, non-reader after {cut:?} s");
    let half = half.unwrap_or_else(|| panic!("the half request was never disconnected:\n{out}"));
    assert_fired("the half request", half, HEADER_READ_TIMEOUT);
    let cut = cut.unwrap_or_else(|| panic!("the non-reader was never disconnected:\n{out}"));
    assert_fired("the non-reader", cut, WRITE_TIMEOUT);
    assert!(host.alive(), "host exited after the timeouts:\n{}", host.log());
    let health = host.get("/healthz");
    assert_eq!(health.as_deref(), Some("ok\n"), "/healthz after the timeouts");

    // SIGTERM with bad clients holding connections.
    let mut holder = Spawned::start(
        "bad clients",
        netns_exec(&pair.a, "python3").args(["-c", BAD_CLIENTS, "hold", &port.to_string()]),
    );
    holder.wait_for_output("READY", true, secs(20));
    // Let the host start writing to the non-reader.
    thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let exited = host.stop("TERM", secs(60));
    let took = start.elapsed();
    eprintln!("SIGTERM to exit with bad clients connected: {took:.2?} (success: {exited:?})");
    let log = host.log();
    assert_eq!(exited, Some(true), "host exit:\n{log}");
    assert!(took <= SHUTDOWN_LIMIT, "SIGTERM to exit took {took:?}, limit {SHUTDOWN_LIMIT:?}");
    drop(holder);
}
