//! ROOT: the series lifecycle of `wasmtap run`: the series cap and TTL, interfaces that come and
//! go by the thousand, and the configuration file with its label policy.
//!
//! Expected values come from how the traffic was built (a reset per source address, one
//! frame per interface) or from tshark on a parallel tcpdump. Skipped (loudly) without root,
//! unless WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::frames::{resets_from, write_pcap};
use common::live::*;
use common::topology::*;
use common::*;

const RESETS: &str = "wasmtap_tcp_resets_total";
const REFUSED: &str = "wasmtap_host_series_refused_total";

/// The series of `family` in a scrape.
fn series(samples: &[Sample], family: &str) -> Vec<Sample> {
    samples.iter().filter(|s| s.name == family).cloned().collect()
}

/// The source addresses of the reset series in a scrape.
fn reset_sources(samples: &[Sample]) -> Vec<String> {
    let mut v: Vec<String> =
        series(samples, RESETS).iter().map(|s| s.labels["src_ip"].clone()).collect();
    v.sort();
    v
}

fn refused(samples: &[Sample]) -> u64 {
    as_count(value_of(samples, REFUSED, &[("family", RESETS)]).unwrap_or(0.0), REFUSED)
}

/// `10.base.0.i` for i in `range`, as the host prints them.
fn addresses(base: u8, range: std::ops::Range<u32>) -> Vec<String> {
    let mut v: Vec<String> = range
        .map(|i| {
            let [_, _, hi, lo] = i.to_be_bytes();
            Ipv4Addr::new(10, base, hi, lo).to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn expired_series_free_the_cap_for_new_ones() {
    if !require_root("expired_series_free_the_cap_for_new_ones") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("series-ttl");
    let pair = quiet_pair("ttl", Some(("wts0", "wts1")));
    let dst = Ipv4Addr::new(10, 200, 0, 1);
    let waves = [("first", 1u8, 0..100), ("over", 2, 0..40), ("second", 3, 0..100)];
    let pcaps: Vec<_> = waves
        .iter()
        .map(|(name, base, range)| {
            let path = dir.join(&format!("{name}.pcap"));
            write_pcap(&path, &resets_from(*base, range.clone(), dst));
            path
        })
        .collect();
    let host = LiveHost::start(
        "host (cap 100, ttl 3s)",
        &pair.a,
        &["-i", "wts0", "--no-cache", "--series-cap", "100", "--series-ttl", "3s"],
    );
    let ttl = Duration::from_secs(3);

    // First wave: 100 pairs fill the cap.
    assert_eq!(tcpreplay(&pair.b, "wts1", &pcaps[0]), 100);
    let first = addresses(1, 0..100);
    let p = host.poll(Duration::from_secs(2), |s| reset_sources(s) == first);
    assert!(p.met, "the first 100 pairs were not all exported: {:?}", reset_sources(&p.samples));
    let filled = Instant::now();

    // 40 more pairs while the first are fresh: refused, counted, and said in the log.
    assert_eq!(tcpreplay(&pair.b, "wts1", &pcaps[1]), 40);
    let p = host.poll(Duration::from_secs(2), |s| refused(s) == 40);
    assert!(p.met, "refusals: {} of 40", refused(&p.samples));
    assert_eq!(reset_sources(&p.samples), first, "the cap let a new series in");
    assert!(filled.elapsed() < ttl, "too slow to test the cap within the TTL");
    let log = host.log();
    assert!(
        log.contains("series cap reached") && log.contains(RESETS),
        "no warning that {RESETS} is at its cap:\n{log}"
    );

    // After the TTL the first wave is gone, and a second wave of 100 is exported in full.
    let p = host.poll(ttl + Duration::from_secs(3), |s| series(s, RESETS).is_empty());
    assert!(
        p.met,
        "the first wave did not expire: {} series left",
        series(&p.samples, RESETS).len()
    );
    eprintln!("first wave expired {:.1} s after it filled the cap", filled.elapsed().as_secs_f64());
    assert_eq!(tcpreplay(&pair.b, "wts1", &pcaps[2]), 100);
    let second = addresses(3, 0..100);
    let p = host.poll(Duration::from_secs(2), |s| reset_sources(s) == second);
    assert!(p.met, "second wave: {:?}", reset_sources(&p.samples));
    assert_eq!(refused(&p.samples), 40, "refusals counted only while the cap was full");
    let kind = p.samples.iter().any(|s| s.name == REFUSED);
    assert!(kind, "{REFUSED} is exported");
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn a_new_interface_is_counted_after_thousands_came_and_went() {
    if !require_root("a_new_interface_is_counted_after_thousands_came_and_went") {
        return;
    }
    require_tools(&["python3"]);
    let _serial = serial();
    let ns = Netns::new("churn");
    // A cap far below the number of interfaces: without expiry, the new interface would find
    // wasmtap_packets_total full.
    let host = LiveHost::start(
        "host (-i any, cap 300, ttl 3s)",
        &ns.name,
        &[
            "-i",
            "any",
            "--exclude",
            "lo",
            "--no-cache",
            "--series-cap",
            "300",
            "--series-ttl",
            "3s",
        ],
    );
    // 1000 veth pairs, both ends in the namespace: 2000 interfaces, each sending or receiving
    // one frame, in rounds of 250 pairs.
    let (rounds, per_round) = (4, 250);
    let sender = "import socket,sys\n\
        frame=bytes.fromhex('020000000002020000000001'+'88b5'+'00'*46)\n\
        for name in sys.argv[1:]:\n s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n \
        s.bind((name,0)); s.send(frame); s.close()\n";
    for r in 0..rounds {
        let names: Vec<(String, String)> =
            (0..per_round).map(|i| (format!("ch{r}x{i}a"), format!("ch{r}x{i}b"))).collect();
        let mut batch = String::new();
        for (a, b) in &names {
            batch += &format!(
                "link add {a} type veth peer name {b}\nlink set {a} up\nlink set {b} up\n"
            );
        }
        let file = std::env::temp_dir().join(format!("wasmtap-churn-{}.ip", std::process::id()));
        std::fs::write(&file, batch).expect("writing the ip batch");
        run_ok(
            Command::new("ip").args(["-n", &ns.name, "-batch"]).arg(&file),
            Duration::from_secs(120),
        );
        // Wait until the host captures on them (it labels by name from its link table).
        std::thread::sleep(Duration::from_millis(500));
        let senders: Vec<&str> = names.iter().map(|(a, _)| a.as_str()).collect();
        run_ok(ns.exec("python3").arg("-c").arg(sender).args(&senders), Duration::from_secs(60));
        let mut del = String::new();
        for (a, _) in &names {
            del += &format!("link del {a}\n");
        }
        std::fs::write(&file, del).expect("writing the ip batch");
        run_ok(
            Command::new("ip").args(["-n", &ns.name, "-batch"]).arg(&file),
            Duration::from_secs(120),
        );
        let _ = std::fs::remove_file(&file);
    }
    let s = host.scrape().expect("scrape");
    let devices = series(&s, "wasmtap_packets_total").len();
    eprintln!(
        "after {} interfaces: {devices} device series, {} refused",
        rounds * per_round * 2,
        as_count(
            value_of(&s, REFUSED, &[("family", "wasmtap_packets_total")]).unwrap_or(0.0),
            REFUSED
        )
    );
    // After the TTL, a new interface's packets show under its own name.
    std::thread::sleep(Duration::from_secs(5));
    add_veth(&ns.name, "fresh0", &ns.name, "fresh1");
    std::thread::sleep(Duration::from_millis(500));
    run_ok(
        ns.exec("python3").arg("-c").arg(sender).args(["fresh0", "fresh0", "fresh0"]),
        Duration::from_secs(30),
    );
    let p = host.poll(Duration::from_secs(2), |s| {
        device_count(s, "wasmtap_packets_total", "fresh1") == 3
            && device_count(s, "wasmtap_packets_total", "fresh0") == 3
    });
    assert!(
        p.met,
        "the new interface's 3 frames are not counted under its name: fresh0 {}, fresh1 {}; \
         {} device series",
        device_count(&p.samples, "wasmtap_packets_total", "fresh0"),
        device_count(&p.samples, "wasmtap_packets_total", "fresh1"),
        series(&p.samples, "wasmtap_packets_total").len()
    );
    let gone = series(&p.samples, "wasmtap_host_packets_received_total")
        .iter()
        .filter(|s| s.labels["device"].starts_with("ch"))
        .count();
    assert_eq!(gone, 0, "self-metrics of gone interfaces are still exported after the TTL");
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn the_config_file_drops_labels_and_flags_win() {
    if !require_root("the_config_file_drops_labels_and_flags_win") {
        return;
    }
    require_tools(&["tcpdump", "tshark", "python3"]);
    let _serial = serial();
    let dir = TempDir::new("config");
    // An unknown key fails start-up and names the key.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "series-cap = 10\nseries-tll = \"3s\"\n").expect("config");
    let r = run_with_timeout(
        Command::new(HOST).args(["run", "-i", "lo", "--config"]).arg(&bad),
        Duration::from_secs(30),
    );
    assert!(!r.success() && r.stderr_text().contains("series-tll"), "{}", r.describe());

    // The file caps every family at 1 series and drops dst_ip from the resets; the flag lifts
    // the cap to 100, so every source shows.
    let good = dir.join("wasmtap.toml");
    std::fs::write(&good, "series-cap = 1\n[labels.drop]\ntcp_resets_total = [\"dst_ip\"]\n")
        .expect("config");
    let pair = NetnsPair::new();
    let capture = dir.join("a.pcap");
    let tcpdump = Tcpdump::start(&pair.a, &pair.veth_a, &capture);
    let config = good.to_str().expect("utf-8 path");
    let host = LiveHost::start(
        "host (--config)",
        &pair.a,
        &["-i", &pair.veth_a, "--no-cache", "--config", config, "--series-cap", "100"],
    );
    let server = start_traffic_server(&pair, 5001);
    for addr in [&pair.v4_b, &pair.v6_b] {
        run_traffic_client(&pair, addr, 5001, 20_000);
    }
    drop(server);
    let frames = tcpdump.stop();
    let want: BTreeMap<IpAddr, u64> = tshark_count_by_pair(&capture, "tcp.flags.reset==1")
        .into_iter()
        .fold(BTreeMap::new(), |mut m, ((src, _), n)| {
            *m.entry(src).or_insert(0) += n;
            m
        });
    let got = |s: &[Sample]| -> BTreeMap<IpAddr, u64> {
        series(s, RESETS)
            .iter()
            .map(|x| (x.labels["src_ip"].parse().expect("src_ip"), as_count(x.value, RESETS)))
            .collect()
    };
    let p = host.poll(Duration::from_secs(3), |s| got(s) == want);
    eprintln!("{frames} frames; resets per source: tshark {want:?}, host {:?}", got(&p.samples));
    assert!(want.len() >= 2, "the traffic should reset from both ends: {want:?}");
    assert_eq!(got(&p.samples), want, "per-source resets (dst_ip dropped) vs tshark");
    for s in series(&p.samples, RESETS) {
        assert!(!s.labels.contains_key("dst_ip"), "dst_ip still on {s:?}");
    }
}
