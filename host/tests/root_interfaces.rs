//! ROOT: `wasmtap run` on interfaces the way a Kubernetes node has them: pod veths on a bridge,
//! captured through `any` and through name patterns; interfaces that come, go, come back and
//! are renamed; a host stalled under load; and what /readyz, /healthz and the per-interface
//! self-metrics say meanwhile. The host runs inside network namespaces the tests create.
//!
//! - `bridged_pods_match_tshark_per_port`: lossy TCP between two pods on a bridge, seen by a
//!   host on `-i any` and one on `-i 'veth*' -i 'cali*' -i 'lxc*'`. For each bridge port,
//!   frames and received packets equal tshark's frame count of that port's own capture, and
//!   the six tcp-analysis counters its counts per (src, dst): duplicate ACKs and zero windows
//!   exactly, the others within what two captures of the same frames can differ by (see
//!   [`timing_allowance`]). The same segment seen on two ports is never its own
//!   retransmission, so the sum over the ports is not inflated.
//! - `one_packet_on_an_idle_interface_shows_within_a_second`: 1, then 100 more packets.
//! - `churned_interfaces_are_followed_without_leaks`: 200 veths created, used and deleted in
//!   rounds, some names re-used and one renamed; exact per-interface counts, interface_up, the
//!   capture thread's CPU per packet (first vs last interface), threads and RSS afterwards.
//! - `readyz_follows_a_named_interface`: /readyz 503 within 2 s of the interface going,
//!   /healthz stays 200, and capture resumes when it comes back.
//! - `a_stalled_host_accounts_for_every_packet`: SIGSTOP during a 1M-packet burst; received
//!   plus drops equal what tcpreplay sent.
//!
//! Expected values come from tshark on tcpdump captures of the same interface, or from what
//! the test sent (tcpreplay's count of a capture made by `bench/synth_pcap.py` or with
//! `common::frames`). The namespaces have IPv6 off and, except the pods, no addresses, so
//! that nothing but the test's frames crosses their links. The tests run one at a time
//! (`serial`). Every test prints what it measured. Skipped (loudly) without root, unless
//! WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;
mod tcp_analysis;

use common::frames::{ACK, Pcap, TcpSegment};
use common::live::*;
use common::topology::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};
use tcp_analysis::{
    COUNTERS, NOT_ADVANCING_ALLOWANCE, ORDER_FREE, OUT_OF_ORDER, RETRANSMISSIONS, Row,
    format_table, timing_allowance,
};

/// The node-side bridge ports of the two pods; named like a bridge CNI's pod veths.
const PORTS: [&str; 2] = ["vethpa", "vethpb"];
/// The traffic server's base port in pod b (see `common::traffic`).
const LOSSY_PORT: u16 = 5001;
/// Share of TCP segments nftables drops in each pod's input hook, in percent.
const LOSS_PERCENT: u32 = 2;
/// Bulk upload (half as much comes back) and bytes to the slow reader: a few thousand frames
/// per port, dozens of retransmissions, small enough for a loss-free live capture.
const BULK_BYTES: u64 = 1_000_000;
const SLOW_BYTES: u64 = 200_000;
/// Packets per interface in the churn and health tests, and per CPU-measuring burst.
const SMALL_PACKETS: u32 = 50;
const BURST_PACKETS: u32 = 20_000;
/// Bursts per CPU measurement; the lowest cost counts (the least disturbed run).
const BURSTS: usize = 3;
/// 10 rounds of 20 veth pairs: 200 in all, about 3 s a round.
const ROUNDS: usize = 10;
const PER_ROUND: usize = 20;
/// Links per round (after the first) that re-use a name deleted in the round before.
const REUSED_PER_ROUND: usize = 2;
/// The link renamed in round 0, and its new name (still matching `tst*`).
const RENAMED: (&str, &str) = ("tst5", "tstren5");

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ------------------------------------------------------------------------------------------
// 1. Bridge

/// Frames showing a tshark field, per (src, dst).
type ByPair = BTreeMap<(IpAddr, IpAddr), u64>;

/// What tshark finds on one port's capture.
struct PortCapture {
    device: &'static str,
    frames: u64,
    /// Per tcp-analysis counter in [`COUNTERS`] order: frames per pair.
    counters: Vec<ByPair>,
}

impl PortCapture {
    fn read(device: &'static str, file: &Path) -> PortCapture {
        let counters =
            COUNTERS.iter().map(|&(_, field)| tshark_count_by_pair(file, field)).collect();
        PortCapture { device, frames: tshark_count(file, None), counters }
    }

    fn by_pair(&self, metric: &str) -> &ByPair {
        let i = COUNTERS.iter().position(|c| c.0 == metric).expect("a tcp-analysis counter");
        &self.counters[i]
    }

    fn total(&self, metric: &str) -> u64 {
        self.by_pair(metric).values().sum()
    }
}

/// Every difference between a scrape and the captures, one line each (empty: they agree):
/// frames and received exactly; per (src, dst) pair, the [`ORDER_FREE`] counters exactly, the
/// sum of retransmissions and out-of-order segments within [`NOT_ADVANCING_ALLOWANCE`], the
/// others within [`timing_allowance`].
fn mismatches(samples: &[Sample], ports: &[PortCapture]) -> Vec<String> {
    let mut out = Vec::new();
    for p in ports {
        let dev = p.device;
        let c = DeviceCounts::of(samples, dev);
        if c.packets != p.frames || c.received != p.frames {
            out.push(format!("{dev}: tshark has {} frames, the host {c}", p.frames));
        }
        let on_device = device_samples(samples, dev);
        let host: Vec<ByPair> = COUNTERS.iter().map(|c| sum_by_pair(&on_device, c.0)).collect();
        let pairs: BTreeSet<_> = host.iter().chain(&p.counters).flat_map(|m| m.keys()).collect();
        for pair in pairs {
            let get = |m: &ByPair| m.get(pair).copied().unwrap_or(0);
            let slack =
                timing_allowance(get(p.by_pair(RETRANSMISSIONS)) + get(p.by_pair(OUT_OF_ORDER)));
            let index = |m: &str| COUNTERS.iter().position(|c| c.0 == m).expect("a counter");
            let [r, o] = [index(RETRANSMISSIONS), index(OUT_OF_ORDER)];
            let not_advancing = |counts: &[ByPair]| get(&counts[r]) + get(&counts[o]);
            let bad = not_advancing(&host).abs_diff(not_advancing(&p.counters))
                > NOT_ADVANCING_ALLOWANCE
                || COUNTERS.iter().enumerate().any(|(i, c)| {
                    let allowed = if ORDER_FREE.contains(&c.0) { 0 } else { slack };
                    get(&host[i]).abs_diff(get(&p.counters[i])) > allowed
                });
            if bad {
                let counts: Vec<String> = COUNTERS
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{} {}/{}", c.1, get(&host[i]), get(&p.counters[i])))
                    .collect();
                out.push(format!(
                    "{dev}: {} -> {} (host/tshark; retransmissions + out-of-order up to \
                     {NOT_ADVANCING_ALLOWANCE} apart, each up to {slack} apart where timing \
                     counts): {}",
                    pair.0,
                    pair.1,
                    counts.join(", ")
                ));
            }
        }
    }
    out
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn bridged_pods_match_tshark_per_port() {
    if !require_root("bridged_pods_match_tshark_per_port") {
        return;
    }
    let _serial = serial();
    require_tools(&["tcpdump", "tshark", "python3", "nft", "ethtool", "curl"]);
    let topo = BridgeTopology::new(PORTS);
    let (pods, node) = (&topo.pods, topo.node.name.as_str());
    for ns in [&pods.a, &pods.b] {
        add_loss(ns, LOSS_PERCENT);
    }
    // Two hosts side by side on the same traffic: the `any` pseudo-device and the chart's
    // default patterns (one capture per matching interface).
    let mut hosts = [
        LiveHost::start("host -i any", node, &["-i", "any"]),
        LiveHost::start(
            "host -i veth* -i cali* -i lxc*",
            node,
            &["-i", "veth*", "-i", "cali*", "-i", "lxc*"],
        ),
    ];
    for h in &mut hosts {
        h.wait_ready(secs(60));
    }
    let attached =
        hosts[1].poll(secs(10), |s| PORTS.iter().all(|d| interface_up(s, d) == Some(1.0)));
    assert!(
        attached.met,
        "{}: interface_up of {PORTS:?} not 1 within 10 s:\n{}",
        hosts[1].what,
        hosts[1].log()
    );

    let dir = TempDir::new("bridge");
    let files: [PathBuf; 2] = PORTS.map(|p| dir.join(&format!("{p}.pcap")));
    let dumps = [0, 1].map(|i| Tcpdump::start(node, PORTS[i], &files[i]));
    let server = start_traffic_server(pods, LOSSY_PORT);
    let client = run_lossy_traffic_client(pods, &pods.v4_b, LOSSY_PORT, BULK_BYTES, SLOW_BYTES);
    drop(server);
    // Late retransmissions and closes land in the captures too, before they stop.
    wait_files_quiet(&[&files[0], &files[1]], secs(3), secs(30));
    let captured = dumps.map(Tcpdump::stop);
    eprintln!(
        "\ntraffic client: {client}\ntcpdump captured {captured:?} frames on {PORTS:?}; nftables dropped {} \
         segments a->b, {} b->a",
        loss_drops(&pods.b),
        loss_drops(&pods.a)
    );
    let ports: Vec<PortCapture> = [0, 1].map(|i| PortCapture::read(PORTS[i], &files[i])).into();
    for p in &ports {
        assert!(p.total(RETRANSMISSIONS) > 0, "tshark finds no retransmission on {}", p.device);
    }

    let mut failures = Vec::new();
    for h in &mut hosts {
        h.assert_running();
        let polled = h.poll(secs(10), |s| mismatches(s, &ports).is_empty());
        let s = &polled.samples;
        for p in &ports {
            let on_device = device_samples(s, p.device);
            let rows: Vec<Row> = COUNTERS
                .iter()
                .map(|&(metric, field)| Row {
                    metric,
                    field,
                    tshark: p.total(metric),
                    host: as_count(sum_metric(&on_device, metric), metric),
                })
                .collect();
            eprint!(
                "{}",
                format_table(
                    &format!("{}, device {}: host vs tshark on its capture", h.what, p.device),
                    &rows,
                    |r| if ORDER_FREE.contains(&r.metric) {
                        0
                    } else {
                        timing_allowance(p.total(RETRANSMISSIONS) + p.total(OUT_OF_ORDER))
                    }
                )
            );
            eprintln!("  frames: tshark {}; host {}", p.frames, DeviceCounts::of(s, p.device));
        }
        // The same segments cross both ports: summed over the ports, the host's count equals
        // the sum of each capture's own, not more.
        let sum = |m: &str| -> (u64, u64) {
            let host = ports.iter().map(|p| device_count(s, m, p.device)).sum();
            (host, ports.iter().map(|p| p.total(m)).sum())
        };
        let ((hr, tr), (ho, to)) = (sum(RETRANSMISSIONS), sum(OUT_OF_ORDER));
        eprintln!(
            "  summed over the ports (host/tshark): retransmissions {hr}/{tr}, out-of-order \
             {ho}/{to}"
        );
        if (hr + ho).abs_diff(tr + to) > timing_allowance(tr + to) {
            failures.push(format!(
                "{}: retransmissions + out-of-order over both ports: host {}, tshark {}",
                h.what,
                hr + ho,
                tr + to
            ));
        }
        failures.extend(mismatches(s, &ports).into_iter().map(|m| format!("{}: {m}", h.what)));
    }
    assert!(failures.is_empty(), "live counts differ from tshark:\n{}", failures.join("\n"));
}

// ------------------------------------------------------------------------------------------
// 2. Trickle

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn one_packet_on_an_idle_interface_shows_within_a_second() {
    if !require_root("one_packet_on_an_idle_interface_shows_within_a_second") {
        return;
    }
    let _serial = serial();
    require_tools(&["tcpreplay", "tcpdump", "python3", "curl"]);
    let (dev, peer) = ("trk0", "trk1");
    let pair = quiet_pair("trickle", Some((dev, peer)));
    let dir = TempDir::new("trickle");
    let pcaps = [synth_pcap(dir.path(), "one", 1), synth_pcap(dir.path(), "hundred", 100)];
    let mut host = LiveHost::start("host -i trk0", &pair.a, &["-i", dev]);
    host.wait_ready(secs(60));
    let idle = host.poll(secs(5), |s| interface_up(s, dev) == Some(1.0));
    assert!(idle.met, "interface_up{{device={dev:?}}} not 1 within 5 s:\n{}", host.log());
    assert_eq!(DeviceCounts::of(&idle.samples, dev), DeviceCounts::default(), "{dev} is not idle");
    let dump = Tcpdump::start(&pair.a, dev, &dir.join("trk0.pcap"));

    let mut expected = 0;
    for pcap in &pcaps {
        let start = Instant::now();
        expected += tcpreplay(&pair.b, peer, pcap);
        let sent_in = start.elapsed();
        let seen = host.poll(secs(5), |s| {
            let c = DeviceCounts::of(s, dev);
            c.packets == expected && c.received == expected
        });
        // From the start of tcpreplay: an upper bound on packet-to-metric latency.
        let latency = sent_in + seen.after;
        eprintln!(
            "{expected} packets sent (tcpreplay took {sent_in:.1?}): in /metrics after {latency:.1?} ({})",
            DeviceCounts::of(&seen.samples, dev)
        );
        assert!(
            seen.met,
            "{dev}: expected {expected} packets, /metrics shows {} after 5 s",
            DeviceCounts::of(&seen.samples, dev)
        );
        assert!(
            latency <= secs(1),
            "{expected} packets took {latency:?} to show in /metrics (limit 1 s)"
        );
    }
    let captured = dump.stop();
    assert_eq!(
        captured, expected,
        "tcpdump on {dev} captured {captured}, tcpreplay sent {expected}"
    );
}

// ------------------------------------------------------------------------------------------
// 3. Churn

/// Writes `dir/NAME.pcap`: `packets` in-order 100-byte segments of one TCP connection. The
/// churn test sends it to every interface, so the host's state grows by one flow and one
/// address pair per interface, and its memory afterwards tells of the interfaces, not of the
/// traffic.
fn one_flow_pcap(dir: &Path, name: &str, packets: u32) -> PathBuf {
    let path = dir.join(format!("{name}.pcap"));
    let mut pcap = Pcap::create(&path);
    let flow =
        TcpSegment::new(IpAddr::from([10, 77, 1, 1]), 40_000, IpAddr::from([10, 77, 1, 2]), 5001);
    for i in 0..packets {
        let segment = TcpSegment {
            seq: 1 + i * 100,
            ack: 1,
            flags: ACK,
            window: 502,
            payload_len: 100,
            ip_id: i as u16,
            ..flow.clone()
        };
        pcap.write_segment(1_700_000_000_000_000 + u64::from(i) * 10, &segment);
    }
    assert_eq!(pcap.frames(), u64::from(packets));
    pcap.finish();
    path
}

/// The name of link `i` of round `round`: `tstN`, except that the first links of every round
/// after the first re-use names of links deleted in the round before.
fn churn_name(round: usize, i: usize) -> String {
    if round > 0 && i < REUSED_PER_ROUND {
        churn_name(round - 1, i + REUSED_PER_ROUND)
    } else {
        format!("tst{}", round * PER_ROUND + i)
    }
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn churned_interfaces_are_followed_without_leaks() {
    if !require_root("churned_interfaces_are_followed_without_leaks") {
        return;
    }
    let _serial = serial();
    require_tools(&["tcpreplay", "python3", "curl"]);
    let started = Instant::now();
    let pair = quiet_pair("churn", None);
    let dir = TempDir::new("churn");
    let small = one_flow_pcap(dir.path(), "small", SMALL_PACKETS);
    let burst = one_flow_pcap(dir.path(), "burst", BURST_PACKETS);
    let mut host = LiveHost::start("host -i tst*", &pair.a, &["-i", "tst*"]);
    host.wait_ready(secs(60));
    thread::sleep(secs(2));
    let pid = host.pid();
    let threads_idle = proc_status(pid, "Threads").expect("Threads");
    let rss_idle = proc_status(pid, "VmRSS").expect("VmRSS");
    eprintln!("idle host: {threads_idle} threads, VmRSS {rss_idle} kB");

    let (mut first_cost, mut last_cost, mut slowest_attach) = (0.0, 0.0, Duration::ZERO);
    let mut names_used = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut links: Vec<(String, String)> = (0..PER_ROUND)
            .map(|i| (churn_name(round, i), format!("tp{}", round * PER_ROUND + i)))
            .collect();
        for (name, peer) in &links {
            add_veth(&pair.a, name, &pair.b, peer);
            names_used.insert(name.clone());
        }
        let names: Vec<&str> = links.iter().map(|l| l.0.as_str()).collect();
        let attach = host.wait_interfaces(&names, true, &format!("round {round}, created"));
        slowest_attach = slowest_attach.max(attach);
        host.send_and_count(&pair.b, &links, &small, &format!("round {round}"));

        if round == 0 {
            first_cost =
                host.capture_cpu_per_packet(&pair.b, &links[0].0, &links[0].1, &burst, BURSTS);
            // Rename (a link must be down for that): counted under the new name from then on.
            let (old, new) = RENAMED;
            let at = links.iter().position(|l| l.0 == old).expect("renamed link");
            ip(&["-n", &pair.a, "link", "set", old, "down"]);
            ip(&["-n", &pair.a, "link", "set", old, "name", new]);
            ip(&["-n", &pair.a, "link", "set", new, "up"]);
            host.wait_interfaces(&[new], true, "renamed");
            host.wait_interfaces(&[old], false, "renamed away");
            let before_old =
                device_count(&host.scrape().expect("scrape"), "wasmtap_packets_total", old);
            links[at].0 = new.to_string();
            names_used.insert(new.to_string());
            host.send_and_count(&pair.b, &links[at..=at], &small, "after the rename");
            let after_old =
                device_count(&host.scrape().expect("scrape"), "wasmtap_packets_total", old);
            assert_eq!(
                after_old, before_old,
                "packets after the rename counted under the old name {old}"
            );
        }
        if round == ROUNDS - 1 {
            let (name, peer) = links.last().expect("links");
            last_cost = host.capture_cpu_per_packet(&pair.b, name, peer, &burst, BURSTS);
        }
        for (name, _) in &links {
            ip(&["-n", &pair.a, "link", "del", name]);
        }
        let names: Vec<&str> = links.iter().map(|l| l.0.as_str()).collect();
        host.wait_interfaces(&names, false, &format!("round {round}, deleted"));
        host.assert_running();
    }
    eprintln!(
        "{} veth pairs ({} names) created, used and deleted in {:.1?}; slowest attach {slowest_attach:.1?}",
        ROUNDS * PER_ROUND,
        names_used.len(),
        started.elapsed()
    );
    eprintln!(
        "capture thread CPU per packet: first interface {first_cost:.0} ns, last {last_cost:.0} ns"
    );
    assert!(
        last_cost <= 1.5 * first_cost,
        "capture CPU per packet grew: first {first_cost:.0} ns, last {last_cost:.0} ns (limit 1.5x)"
    );

    // Every capture thread gone, and the memory of 200 interfaces with it.
    let deadline = Instant::now() + secs(20);
    let mut now_threads = proc_status(pid, "Threads").expect("Threads");
    while now_threads != threads_idle && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        now_threads = proc_status(pid, "Threads").expect("Threads");
    }
    let rss = proc_status(pid, "VmRSS").expect("VmRSS");
    eprintln!(
        "after churn: {now_threads} threads (idle: {threads_idle}), VmRSS {rss} kB (idle: {rss_idle} kB)"
    );
    assert_eq!(
        now_threads,
        threads_idle,
        "thread count after every interface went; threads: {:?}",
        threads(pid)
    );
    assert!(
        rss <= rss_idle + 16 * 1024,
        "VmRSS grew from {rss_idle} kB to {rss} kB (limit +16 MiB)"
    );
}

// ------------------------------------------------------------------------------------------
// 4. Health

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn readyz_follows_a_named_interface() {
    if !require_root("readyz_follows_a_named_interface") {
        return;
    }
    let _serial = serial();
    require_tools(&["tcpreplay", "python3", "curl"]);
    let (dev, peer) = ("vethx0", "vethx1");
    let pair = quiet_pair("health", Some((dev, peer)));
    let dir = TempDir::new("health");
    let small = synth_pcap(dir.path(), "small", u64::from(SMALL_PACKETS));
    let mut host = LiveHost::start("host -i vethx0", &pair.a, &["-i", dev]);
    host.wait_ready(secs(60));
    assert_eq!(host.status("/healthz"), Some(200), "/healthz at start");
    host.wait_interfaces(&[dev], true, "at start");

    let gone = Instant::now();
    ip(&["-n", &pair.a, "link", "del", dev]);
    let unready = host.poll_status("/readyz", 503, secs(10)).map(|_| gone.elapsed());
    let unready = unready
        .unwrap_or_else(|| panic!("/readyz not 503 within 10 s of {dev} going:\n{}", host.log()));
    eprintln!("{dev} deleted: /readyz 503 after {unready:.1?}");
    assert!(unready <= secs(2), "/readyz took {unready:?} to turn 503 (limit 2 s)");
    for _ in 0..5 {
        assert_eq!(
            host.status("/healthz"),
            Some(200),
            "/healthz while {dev} is gone:\n{}",
            host.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    let down = host.poll(secs(2), |s| interface_up(s, dev) == Some(0.0));
    assert!(
        down.met,
        "interface_up{{device={dev:?}}} = {:?}, not 0, while it is gone",
        interface_up(&down.samples, dev)
    );

    let back = Instant::now();
    add_veth(&pair.a, dev, &pair.b, peer);
    let ready = host.poll_status("/readyz", 200, secs(10)).map(|_| back.elapsed());
    let ready = ready.unwrap_or_else(|| {
        panic!("/readyz not 200 within 10 s of {dev} coming back:\n{}", host.log())
    });
    eprintln!("{dev} re-created: /readyz 200 after {ready:.1?}");
    assert!(ready <= secs(5), "/readyz took {ready:?} to turn 200 again (limit 5 s)");
    host.wait_interfaces(&[dev], true, "re-created");
    host.send_and_count(
        &pair.b,
        &[(dev.to_string(), peer.to_string())],
        &small,
        "after re-creation",
    );
    assert_eq!(host.status("/healthz"), Some(200), "/healthz at the end:\n{}", host.log());
}

// ------------------------------------------------------------------------------------------
// 5. Stall

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn a_stalled_host_accounts_for_every_packet() {
    if !require_root("a_stalled_host_accounts_for_every_packet") {
        return;
    }
    let _serial = serial();
    require_tools(&["tcpreplay", "python3", "curl"]);
    let (dev, peer) = ("stl0", "stl1");
    let pair = quiet_pair("stall", Some((dev, peer)));
    let dir = TempDir::new("stall");
    let pcap = synth_pcap(dir.path(), "million", 1_000_000);
    let mut host = LiveHost::start("host -i stl0", &pair.a, &["-i", dev]);
    host.wait_ready(secs(60));
    let attached = host.poll(secs(5), |s| interface_up(s, dev) == Some(1.0));
    assert!(attached.met, "interface_up{{device={dev:?}}} not 1 within 5 s");
    let before = DeviceCounts::of(&attached.samples, dev);
    let rx_dropped = link_stat(&pair.a, dev, "rx_dropped");

    let mut replay = Spawned::start("tcpreplay", &mut tcpreplay_cmd(&pair.b, peer, &pcap));
    host.signal("STOP");
    thread::sleep(secs(2));
    host.signal("CONT");
    let status = replay.wait(secs(120));
    assert!(
        status.is_some_and(|s| s.success()),
        "tcpreplay failed ({status:?}):\n{}\n{}",
        replay.stdout(),
        replay.stderr()
    );
    let sent = tcpreplay_sent(&replay.stdout());

    let settled = host.poll(secs(5), |s| {
        let c = DeviceCounts::of(s, dev).since(&before);
        c.accounted() == sent && c.packets == c.received
    });
    let got = DeviceCounts::of(&settled.samples, dev).since(&before);
    // Frames the veth dropped before any packet tap (a full backlog): no capture sees them.
    let lost_early = link_stat(&pair.a, dev, "rx_dropped") - rx_dropped;
    eprintln!(
        "tcpreplay sent {sent}; host, {:.1?} later: {got}; received + dropped = {}; the \
         kernel dropped {lost_early} before the capture point",
        settled.after,
        got.accounted()
    );
    host.assert_running();
    assert_eq!(
        got.accounted(),
        sent,
        "received + dropped (kernel, interface, queue_full) vs tcpreplay's count: {got}"
    );
    assert_eq!(got.packets, got.received, "wasmtap_packets_total vs received: {got}");
}
