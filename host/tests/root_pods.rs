//! ROOT: pod attribution (issue 18, acceptance 1–4): `wasmtap run -i 'veth*' --cri-socket`
//! in the node namespace of a real container runtime, Debian's containerd driven through CRI
//! as the kubelet drives it (`common::cri`). One test per acceptance point:
//!
//! - `series_name_the_runtimes_pods_and_count_as_tshark` (1): two pods of a Deployment and a
//!   bare pod in one namespace and the node itself (a refused connection) send TCP to a
//!   StatefulSet's pod in another, while nftables drops 2% of the segments inside every pod
//!   (after the capture point, so retransmissions are captured). Every per-pair and
//!   per-device series names the namespace, workload and pod of its addresses and interface
//!   (the node's address: workload `node`), `/pods` lists what the runtime and the kernel say,
//!   and on the server pod's interface the frames and every per-pair counter equal tshark's on
//!   a tcpdump of it taken at the same time.
//! - `churned_pods_are_attributed_within_2s_and_expire` (2): 200 pods (a Deployment's and Jobs'),
//!   three alive at a time on four addresses, made and deleted while a long-lived pod streams
//!   to another. Each sends a SYN every 100 ms from the moment it is made: a scrape names it
//!   within 2 s, by its own address and interface only; a deleted pod's series never grow
//!   again (its reused address is its new holder's), the new holder's series and the old
//!   one's stand side by side (new series), and all expire with the TTL; the pod count,
//!   threads and RSS come back.
//! - `per_workload_series_stay_flat_across_a_rollout` (3): with `[labels.drop]` of the
//!   addresses, pods and device, a rollout that replaces the three pods of a Deployment leaves
//!   the family's per-workload series as they were, while a host without the policy gains
//!   series for every new pod's address and interface; both hosts' per-workload sums equal
//!   tshark's.
//! - `a_runtime_restart_loses_no_packet_and_attribution_returns` (4): containerd stopped for
//!   3 s and started again while a pod streams to another: every frame on the server pod's
//!   interface is counted (tshark's count of a tcpdump of it, no drop), the per-pair counts
//!   equal tshark's, `wasmtap_host_pod_source_up` goes 0 then 1, `/readyz` stays 200, the
//!   running pods stay attributed, one warning is logged, and a pod made after the restart is
//!   attributed within 2 s.
//!
//! Where counts are compared with a capture, offloads are off (real segments) and the pods'
//! neighbour entries are permanent (no ARP probe crosses an interface after the capture
//! stopped). A pod made while the host runs sends a few frames as its interface comes up,
//! before the runtime lists it: empty labels are right for those.
//!
//! Expected values come from the runtime's own answer (PodSandboxStatus: metadata and address),
//! the kernel (a pod's host-side interface by its peer index) and the names the test chose,
//! never from the host's; counts from tshark on tcpdump captures of the same interface, or from
//! how the traffic was built. Every test prints what it measured. Skipped (loudly) without
//! root, unless WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod attribution;
mod common;
mod tcp_analysis;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use attribution::*;
use common::cri::*;
use common::live::*;
use common::*;
use tcp_analysis::{RETRANSMISSIONS, Reference};

/// The traffic server's base port in the server pod (`tests/traffic.py`, or the sink).
const PORT: u16 = 5001;
/// A port of the server pod where nothing listens: a SYN is answered with a RST.
const CLOSED_PORT: u16 = 5009;
/// Share of TCP segments nftables drops in each pod's input hook (test 1), in percent.
const LOSS_PERCENT: u32 = 2;
/// Bulk upload per client in test 1 (half as much comes back): hundreds of segments each way,
/// so that 2% loss gives retransmissions on every pair.
const LOSSY_BULK_BYTES: u64 = 600_000;
/// Bulk upload per client in test 3: enough data segments to sum.
const BULK_BYTES: u64 = 200_000;
/// The promise: a new pod is attributed within this long of its first packet.
const ATTRIBUTION_LIMIT: Duration = Duration::from_secs(2);
/// How long a test waits for a pod to be named before calling it a failure.
const ATTRIBUTION_TIMEOUT: Duration = Duration::from_secs(5);
/// `--series-ttl` of the churn test: short, so that deleted pods' series go within the test.
const TTL: Duration = Duration::from_secs(5);
const TTL_FLAG: &str = "5s";
/// The churn: pods made and deleted, by this many workers (so this many alive at a time), on
/// a `host-local` range with two addresses for the long-lived pods and four for the churn,
/// so that every churn address is reused dozens of times.
const CHURN_PODS: usize = 200;
const CHURN_WORKERS: usize = 3;
const CHURN_ADDRESSES: u8 = 6;
/// After a pod's deletion returns, its last frames are in the series within a batch flush and
/// a render (each ≤ 100 ms); from then on its series must not grow.
const SETTLE: Duration = Duration::from_millis(500);
/// How long the runtime stays stopped in test 4: several of the host's 1 s polls fail.
const DOWN_FOR: Duration = Duration::from_secs(3);
/// How long the stream of test 4 runs: from before the stop to after the restart.
const STREAM_SECS: u64 = 8;

/// The data segments family, the one test 3's policy makes per workload.
const DATA: &str = "wasmtap_tcp_data_segments_total";
/// The per-device frame count.
const PACKETS: &str = "wasmtap_packets_total";
/// The per-pair count of SYNs (Linux puts the window-scale option on SYNs only).
const WSCALE: &str = "wasmtap_tcp_window_scale_options_total";
/// Test 3's label policy: the data segments per workload at both ends and per workload of the
/// interface, the frames per workload of the interface.
const POLICY: &str = r#"[labels.drop]
tcp_data_segments_total = ["src_ip", "dst_ip", "src_pod", "dst_pod", "device", "pod"]
packets_total = ["device", "pod"]
"#;
/// The labels the policy leaves on the data segments family.
const WORKLOAD_LABELS: [&str; 6] =
    ["src_namespace", "src_workload", "dst_namespace", "dst_workload", "namespace", "workload"];

/// `wasmtap run`'s arguments: the pods' interfaces, attribution from the node's runtime, and
/// `more`.
fn host_args<'a>(socket: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["-i", "veth*", "--cri-socket", socket];
    args.extend_from_slice(more);
    args
}

// ------------------------------------------------------------------------------------------
// 1. Labels from the runtime, counts as tshark's

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn series_name_the_runtimes_pods_and_count_as_tshark() {
    if !require_root("series_name_the_runtimes_pods_and_count_as_tshark") {
        return;
    }
    require_tools(&["tcpdump", "tshark", "python3", "nft", "ethtool", "curl"]);
    let _serial = serial();
    let started = Instant::now();
    let node = CriNode::start();
    let chosen = [
        (PodSpec::deployment("shop", "web", "7d9f8b6c4", "x2x9z"), "web"),
        (PodSpec::deployment("shop", "web", "7d9f8b6c4", "b8k4q"), "web"),
        (PodSpec::bare("shop", "debug"), "debug"),
        (PodSpec::stateful_set("data", "db", 0), "db"),
    ];
    let pods: Vec<Pod> = chosen.iter().map(|(spec, _)| node.run(spec)).collect();
    let mut expected = Expected::new(&node);
    for ((spec, workload), pod) in chosen.iter().zip(&pods) {
        let owner = expected.add(&node, spec, pod, workload);
        eprintln!("{owner}: {} on {} (sandbox {})", pod.ip, pod.host_interface(), pod.id);
        node.offloads_off(pod);
        add_loss(&pod.netns_name(), LOSS_PERCENT);
    }
    let (clients, db) = (&pods[..3], &pods[3]);
    // A DaemonSet's pod on the host network: its traffic is the node's.
    let agent = node.run(&PodSpec::daemon_set("kube-system", "agent", "q8w7e").host_network());
    node.pin_neighbours(&pods.iter().collect::<Vec<_>>(), true);
    let devices: Vec<String> = pods.iter().map(Pod::host_interface).collect();
    let db_device = db.host_interface();

    let dir = TempDir::new("pods-tshark");
    let file = dir.join("db.pcap");
    let tcpdump = Tcpdump::start(node.node(), &db_device, &file);
    let socket = node.socket().display().to_string();
    let host = LiveHost::start("host", node.node(), &host_args(&socket, &[]));
    let refs: Vec<&Pod> = pods.iter().collect();
    let listed_in = wait_listed(&host, &refs);
    let names: Vec<&str> = devices.iter().map(String::as_str).collect();
    host.wait_interfaces(&names, true, "the pods' interfaces");

    // /pods: what the runtime and the kernel say.
    let l = listing(&host);
    assert_eq!(l["source"], format!("cri:{socket}").as_str(), "/pods source");
    assert_eq!(l["up"], true, "/pods up");
    let node_listed = l["node_addresses"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| *x == node.node_address().as_str()));
    assert!(node_listed, "/pods lacks the node's address {}: {l:#}", node.node_address());
    for ((spec, workload), pod) in chosen.iter().zip(&pods) {
        let e = listed(&l, pod).unwrap_or_else(|| panic!("/pods lacks {}: {l:#}", pod.name));
        let status = node.status(&pod.id);
        assert_eq!(e["uid"], status.metadata().uid.as_str(), "uid of {}", pod.name);
        assert_eq!(e["uid"], spec.uid.as_str(), "uid of {}", pod.name);
        assert_eq!(e["workload"], *workload, "workload of {}", pod.name);
        assert_eq!(e["addresses"], serde_json::json!([status.ip()]), "addresses of {}", pod.name);
        assert_eq!(e["interface"], pod.host_interface().as_str(), "interface of {}", pod.name);
    }
    let e = listed(&l, &agent).unwrap_or_else(|| panic!("/pods lacks {}: {l:#}", agent.name));
    assert_eq!(
        [&e["workload"], &e["addresses"], &e["interface"]],
        [&serde_json::json!("agent"), &serde_json::json!([]), &serde_json::Value::Null],
        "/pods entry of the host-network pod {}",
        agent.name
    );
    eprintln!(
        "/pods listed the 5 pods, the 4 with their interfaces {listed_in:.1?} after the host \
         answered"
    );

    // Lossy TCP from three pods, and a SYN from the node (the host-network pod), to the
    // StatefulSet's pod.
    let t = Instant::now();
    let server = serve_traffic(db, PORT);
    for client in clients {
        let report = run_lossy_traffic(client, db, PORT, LOSSY_BULK_BYTES);
        eprintln!("{} -> {}: {report}", client.name, db.name);
    }
    let mut from_the_node = send_syns(&agent, db, CLOSED_PORT, 0.0);
    let sent = from_the_node.wait(Duration::from_secs(10));
    assert!(
        sent.is_some_and(|s| s.success()),
        "SYN from {}: {}",
        agent.name,
        from_the_node.stderr()
    );
    drop(server);
    wait_files_quiet(&[&file], Duration::from_secs(2), Duration::from_secs(30));
    let captured = tcpdump.stop();
    let dropped: Vec<u64> = pods.iter().map(|p| loss_drops(&p.netns_name())).collect();
    eprintln!(
        "traffic in {:.1?}; tcpdump captured {captured} frames on {db_device}; nftables dropped \
         {dropped:?} segments in {:?}",
        t.elapsed(),
        pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()
    );

    let reference = Reference::read(&db_device, &file);
    assert!(reference.total(RETRANSMISSIONS) > 0, "tshark finds no retransmission");
    assert!(dropped.iter().all(|d| *d > 0), "nftables dropped nothing in a pod: {dropped:?}");
    let polled = host.poll(Duration::from_secs(10), |s| reference.mismatches(s).is_empty());
    let samples = &polled.samples;
    eprint!("{}", reference.report(samples));
    let wrong = reference.mismatches(samples);
    assert!(wrong.is_empty(), "the host's counts differ from tshark's:\n{}", wrong.join("\n"));

    // Every series names whom the runtime and the kernel say, and every pod is named.
    let wrong = expected.mismatches(samples);
    assert!(wrong.is_empty(), "series with the wrong pods:\n{}", wrong.join("\n"));
    let db_owner = expected.device(&db_device);
    for (pod, device) in pods.iter().zip(&devices) {
        let owner = expected.device(device);
        let on_its_device = samples.iter().any(|s| {
            is_analyzer(s)
                && s.labels.get("device") == Some(device)
                && Owner::of(s, "") == Some(owner.clone())
        });
        assert!(on_its_device, "no series of {device} names {owner}");
        if pod.id != db.id {
            let to_db = samples.iter().any(|s| {
                Owner::of(s, "src_") == Some(owner.clone())
                    && Owner::of(s, "dst_") == Some(db_owner.clone())
            });
            assert!(to_db, "no per-pair series names {owner} -> {db_owner}");
        }
    }
    let from_the_node = samples.iter().any(|s| {
        Owner::of(s, "src_") == Some(Owner::node())
            && Owner::of(s, "dst_") == Some(db_owner.clone())
    });
    assert!(from_the_node, "no per-pair series names the node -> {db_owner}");
    let series = samples.iter().filter(|s| is_analyzer(s) && !expected.ends(s).is_empty()).count();
    eprintln!(
        "{series} per-pair and per-device series, each naming the pods the runtime reports; \
         whole test {:.1?}",
        started.elapsed()
    );
}

// ------------------------------------------------------------------------------------------
// 2. Churn

/// Pod `i` of the churn and its workload: a Deployment's pod or a Job's, in turn.
fn churn_spec(i: usize) -> (PodSpec, String) {
    // Kubernetes' suffix alphabet (no vowels, no look-alikes); the odd multiplier, prime to
    // 27^5, gives every i below that its own suffix.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = (i * 2_654_435_761) % ALPHABET.len().pow(5);
    let suffix: String = (0..5)
        .map(|_| {
            let c = ALPHABET[n % ALPHABET.len()] as char;
            n /= ALPHABET.len();
            c
        })
        .collect();
    if i.is_multiple_of(2) {
        (PodSpec::deployment("shop", "cart", "6b7c8d9f5", &suffix), "cart".into())
    } else {
        let job = format!("report-{}", 29_000_000 + i);
        (PodSpec::job("batch", &job, &suffix), job)
    }
}

/// A pod of the churn, as the test made it and the runtime described it.
struct Churned {
    made: Made,
    /// How long after it began to send a scrape first named it in a per-pair series; `None`:
    /// not within [`ATTRIBUTION_TIMEOUT`].
    attributed_after: Option<Duration>,
    /// When its deletion returned.
    deleted_at: Instant,
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn churned_pods_are_attributed_within_2s_and_expire() {
    if !require_root("churned_pods_are_attributed_within_2s_and_expire") {
        return;
    }
    require_tools(&["python3", "curl"]);
    let _serial = serial();
    let started = Instant::now();
    let node =
        CriNode::start_with(CriOptions { pod_addresses: CHURN_ADDRESSES, ..CriOptions::default() });
    let db_spec = PodSpec::stateful_set("data", "db", 0);
    let api_spec = PodSpec::deployment("shop", "api", "5d8c7b6f4", "q2w3e");
    let (db, api) = (node.run(&db_spec), node.run(&api_spec));
    let mut expected = Expected::new(&node);
    expected.add(&node, &db_spec, &db, "db");
    expected.add(&node, &api_spec, &api, "api");
    let socket = node.socket().display().to_string();
    let host =
        LiveHost::start("host", node.node(), &host_args(&socket, &["--series-ttl", TTL_FLAG]));
    wait_listed(&host, &[&db, &api]);
    let _sink = serve_sink(&db, PORT);
    // The traffic that runs through the churn: api streams to db all along.
    let mut stream = stream_to_sink(&api, &db, PORT, 600);
    let streaming = host.poll(Duration::from_secs(5), |s| {
        s.iter().any(|x| x.name == DATA && pair_names(x, &api.name) && pair_names(x, &db.name))
    });
    assert!(streaming.met, "no data segments api -> db:\n{}", host.log_tail());
    thread::sleep(Duration::from_secs(1));
    let pid = host.pid();
    let (threads_before, rss_before) =
        (proc_status(pid, "Threads").expect("Threads"), proc_status(pid, "VmRSS").expect("VmRSS"));
    eprintln!("before the churn: {threads_before} threads, VmRSS {rss_before} kB");

    // Workers make, use and delete the pods; a scraper records what every scrape names.
    let stable = [db.name.clone(), api.name.clone()].into();
    let sightings = Sightings::new(stable, WSCALE, db.host_interface());
    let churn_one = |i: usize| -> Churned {
        let (spec, workload) = churn_spec(i);
        let pod = node.run(&spec);
        let device = pod.host_interface();
        let sent_at = Instant::now();
        let syns = send_syns(&pod, &db, CLOSED_PORT, ATTRIBUTION_TIMEOUT.as_secs_f64());
        let first = sightings.first_named(&pod.name, sent_at + ATTRIBUTION_TIMEOUT);
        drop(syns);
        node.stop_and_remove(&pod.id);
        Churned {
            made: Made {
                owner: Owner::new(&spec.namespace, &workload, &pod.name),
                ip: pod.ip,
                device,
            },
            attributed_after: first.map(|t| t.saturating_duration_since(sent_at)),
            deleted_at: Instant::now(),
        }
    };
    let churn_started = Instant::now();
    let (next, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
    let results: Vec<thread::Result<Vec<Churned>>> = thread::scope(|s| {
        let scraper = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                if let Some(samples) = host.scrape() {
                    sightings.record(start, Instant::now(), &samples);
                }
                thread::sleep(POLL_INTERVAL);
            }
        });
        let worker = || {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CHURN_PODS {
                    return made;
                }
                made.push(churn_one(i));
            }
        };
        let workers: Vec<_> = (0..CHURN_WORKERS).map(|_| s.spawn(worker)).collect();
        // The scraper stops also when a worker panicked.
        let results = workers.into_iter().map(|w| w.join()).collect();
        stop.store(true, Ordering::Relaxed);
        let _ = scraper.join();
        results
    });
    let churned: Vec<Churned> = results
        .into_iter()
        .flat_map(|r| r.unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect();
    let churn_took = churn_started.elapsed();
    let seen = sightings.into_seen();
    assert_eq!(churned.len(), CHURN_PODS);

    // Every pod named within 2 s of its first packet.
    let mut latencies: Vec<Duration> = churned.iter().filter_map(|c| c.attributed_after).collect();
    latencies.sort();
    let slow: Vec<String> = churned
        .iter()
        .filter(|c| c.attributed_after.is_none_or(|d| d > ATTRIBUTION_LIMIT))
        .map(|c| format!("{} ({}): {:?}", c.made.owner, c.made.ip, c.attributed_after))
        .collect();
    let (median, max) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    eprintln!(
        "{CHURN_PODS} pods made, attributed and deleted in {churn_took:.1?} ({CHURN_WORKERS} at a \
         time, {} scrapes): attributed after their first packet in median {median:.0?}, max \
         {max:.0?}",
        seen.scrapes
    );
    assert!(
        slow.is_empty(),
        "pods not attributed within {ATTRIBUTION_LIMIT:?}:\n{}",
        slow.join("\n")
    );

    // Named only by their own address, interface, namespace and workload; a deleted pod's
    // series never grow (the next holder of its address is not counted as it).
    let made: HashMap<&str, &Made> =
        churned.iter().map(|c| (c.made.owner.pod.as_str(), &c.made)).collect();
    let mut wrong = seen.mismatches(&made);
    let (mut watched, mut scrapes_after) = (0, 0);
    for c in &churned {
        let after = seen.counts_since(&c.made.owner.pod, c.deleted_at + SETTLE);
        if after.windows(2).any(|w| w[1] != w[0]) {
            wrong.push(format!("{}'s SYNs grew after its deletion: {after:?}", c.made.owner));
        }
        watched += usize::from(after.len() > 1);
        scrapes_after += after.len();
    }
    let by_device: BTreeSet<&String> = seen.devices.iter().map(|(pod, _)| pod).collect();
    eprintln!(
        "{} pods named by address, {} also by interface, all by their own; the SYNs of {watched} \
         deleted pods watched in {scrapes_after} scrapes after their deletion: none grew",
        seen.first.len(),
        by_device.len()
    );
    assert!(wrong.is_empty(), "churn pods named wrongly:\n{}", wrong.join("\n"));
    assert!(watched >= CHURN_PODS * 9 / 10, "only {watched} deleted pods' series were watched");
    let mut holders: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &churned {
        *holders.entry(c.made.ip.as_str()).or_default() += 1;
    }
    let beside: BTreeMap<&str, usize> =
        seen.shared.iter().map(|(a, pods)| (a.as_str(), pods.len())).collect();
    eprintln!(
        "pods per address: {holders:?}; pods whose series stood beside another pod's of the \
         same address in one scrape: {beside:?}"
    );
    assert!(holders.values().all(|n| *n > 1), "an address was not reused: {holders:?}");
    assert!(!seen.shared.is_empty(), "no reused address had a new series beside the old one");

    // The deleted pods' series expire with the TTL; the live ones stay.
    let last_deleted = churned.iter().map(|c| c.deleted_at).max().expect("pods");
    let ips: BTreeSet<&str> = churned.iter().map(|c| c.made.ip.as_str()).collect();
    let devices: BTreeSet<&str> = churned.iter().map(|c| c.made.device.as_str()).collect();
    let gone = |s: &[Sample]| {
        !s.iter().any(|x| {
            made.keys().any(|p| names(x, p))
                || x.labels.get("device").is_some_and(|d| devices.contains(d.as_str()))
                || ["src_ip", "dst_ip"]
                    .iter()
                    .any(|l| x.labels.get(*l).is_some_and(|a| ips.contains(a.as_str())))
        })
    };
    let polled_at = Instant::now();
    let expired = host.poll(TTL + Duration::from_secs(5), gone);
    let expired_in = (polled_at + expired.after).saturating_duration_since(last_deleted);
    eprintln!(
        "every series of the deleted pods gone {expired_in:.1?} after the last deletion (TTL \
         {TTL:?})"
    );
    assert!(expired.met, "series of deleted pods are left after {expired_in:.1?}");
    assert!(
        expired_in <= TTL + Duration::from_secs(3),
        "series of deleted pods expired {expired_in:.1?} after the last deletion, TTL {TTL:?}"
    );
    let samples = expired.samples;
    let wrong = expected.mismatches(&samples);
    assert!(wrong.is_empty(), "series of the long-lived pods:\n{}", wrong.join("\n"));
    let live = samples.iter().any(|x| x.name == DATA && pair_names(x, &api.name));
    assert!(live, "the stream's series went too");
    assert!(stream.try_status().is_none(), "the stream stopped:\n{}", stream.stderr());
    assert_eq!(gauge(&samples, "wasmtap_host_pods"), 2, "wasmtap_host_pods after the churn");

    // Threads and memory come back.
    let threads_back = wait_for(Duration::from_secs(10), || {
        (proc_status(pid, "Threads") == Some(threads_before)).then_some(())
    });
    let (threads_after, rss_after) =
        (proc_status(pid, "Threads").expect("Threads"), proc_status(pid, "VmRSS").expect("VmRSS"));
    eprintln!(
        "after the churn: {threads_after} threads (before: {threads_before}), VmRSS {rss_after} kB \
         (before: {rss_before} kB); whole test {:.1?}",
        started.elapsed()
    );
    assert!(threads_back.is_some(), "threads: {threads_before} before, now {:?}", threads(pid));
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "VmRSS grew from {rss_before} kB to {rss_after} kB (limit +16 MiB)"
    );
}

// ------------------------------------------------------------------------------------------
// 3. Per-workload policy

/// The samples of `family` summed by the labels in `keep` (the others dropped).
fn by_labels(
    samples: &[Sample],
    family: &str,
    keep: &[&str],
) -> BTreeMap<BTreeMap<String, String>, u64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == family) {
        let key = s
            .labels
            .iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        *out.entry(key).or_default() += as_count(s.value, family);
    }
    out
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn per_workload_series_stay_flat_across_a_rollout() {
    if !require_root("per_workload_series_stay_flat_across_a_rollout") {
        return;
    }
    require_tools(&["tcpdump", "tshark", "python3", "ethtool", "curl"]);
    let _serial = serial();
    let started = Instant::now();
    let node = CriNode::start();
    let mut expected = Expected::new(&node);
    let db_spec = PodSpec::stateful_set("data", "db", 0);
    let db = node.run(&db_spec);
    expected.add(&node, &db_spec, &db, "db");
    let old: Vec<Pod> = ["x2x9z", "b8k4q", "m7n6p"]
        .iter()
        .map(|suffix| {
            let spec = PodSpec::deployment("shop", "web", "7d9f8b6c4", suffix);
            let pod = node.run(&spec);
            expected.add(&node, &spec, &pod, "web");
            pod
        })
        .collect();
    let first: Vec<&Pod> = old.iter().chain([&db]).collect();
    for pod in &first {
        node.offloads_off(pod);
    }
    node.pin_neighbours(&first, false);
    let db_device = db.host_interface();
    let dir = TempDir::new("pods-policy");
    let file = dir.join("db.pcap");
    let tcpdump = Tcpdump::start(node.node(), &db_device, &file);
    let config = dir.join("policy.toml");
    std::fs::write(&config, POLICY).expect("write the policy");
    let config = config.display().to_string();
    let socket = node.socket().display().to_string();
    let hosts = [
        LiveHost::start(
            "host with the policy",
            node.node(),
            &host_args(&socket, &["--config", &config]),
        ),
        LiveHost::start("host without a policy", node.node(), &host_args(&socket, &[])),
    ];
    let wait_for_pods = |pods: &[&Pod]| {
        let devices: Vec<String> = pods.iter().map(|p| p.host_interface()).collect();
        let devices: Vec<&str> = devices.iter().map(String::as_str).collect();
        for h in &hosts {
            wait_listed(h, pods);
            h.wait_interfaces(&devices, true, "the pods' interfaces");
        }
    };
    wait_for_pods(&first);

    // Traffic from the Deployment's pods, then a rollout that replaces them, then traffic again.
    let server = serve_traffic(&db, PORT);
    let traffic = |clients: &[Pod]| {
        for c in clients {
            run_traffic(c, &db, PORT, BULK_BYTES);
        }
        wait_files_quiet(&[&file], Duration::from_secs(1), Duration::from_secs(30));
        // The last frames in the series: a flush and a render.
        thread::sleep(Duration::from_millis(300));
        hosts.each_ref().map(|h| h.metrics())
    };
    let before = traffic(&old);
    let t = Instant::now();
    let new: Vec<Pod> = old
        .iter()
        .zip(["q4w8r", "z6t2v", "k9h5j"])
        .map(|(old, suffix)| {
            let spec = PodSpec::deployment("shop", "web", "5f6b7c8d9", suffix);
            let pod = node.run(&spec);
            expected.add(&node, &spec, &pod, "web");
            node.offloads_off(&pod);
            node.pin_neighbours(&[&pod, &db], false);
            node.stop_and_remove(&old.id);
            pod
        })
        .collect();
    let rolled_in = t.elapsed();
    wait_for_pods(&new.iter().collect::<Vec<_>>());
    let after = traffic(&new);
    drop(server);
    let frames = tcpdump.stop();
    eprintln!(
        "rollout: {:?} replaced by {:?} in {rolled_in:.1?}; tcpdump captured {frames} frames on \
         {db_device}",
        old.iter().map(|p| format!("{} ({})", p.name, p.ip)).collect::<Vec<_>>(),
        new.iter().map(|p| format!("{} ({})", p.name, p.ip)).collect::<Vec<_>>()
    );

    // The per-workload series tshark's capture calls for: every data segment between the
    // Deployment and the server crosses the sending pod's interface and the receiving one's.
    let mut want: BTreeMap<BTreeMap<String, String>, u64> = BTreeMap::new();
    for ((src, dst), n) in tshark_count_by_pair(&file, "tcp.len > 0") {
        let (s, d) = (expected.address(&src.to_string()), expected.address(&dst.to_string()));
        for device in [&s, &d] {
            let key = WORKLOAD_LABELS
                .iter()
                .zip([
                    &s.namespace,
                    &s.workload,
                    &d.namespace,
                    &d.workload,
                    &device.namespace,
                    &device.workload,
                ])
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            *want.entry(key).or_default() += n;
        }
    }
    let db_frames = tshark_count(&file, None);
    let [policy, plain] = &hosts;
    let p = policy.poll(Duration::from_secs(10), |s| by_labels(s, DATA, &WORKLOAD_LABELS) == want);
    let q = plain.poll(Duration::from_secs(10), |s| by_labels(s, DATA, &WORKLOAD_LABELS) == want);
    let got = [&p, &q].map(|polled| by_labels(&polled.samples, DATA, &WORKLOAD_LABELS));
    let mut table = format!(
        "\n{DATA} per workload (source -> destination on interface): tshark, {}, {}\n",
        policy.what, plain.what
    );
    for k in want.keys().chain(got[0].keys()).chain(got[1].keys()).collect::<BTreeSet<_>>() {
        let l = |n: &str| k.get(n).map_or("", String::as_str);
        let [t, a, b] = [&want, &got[0], &got[1]].map(|m| m.get(k).copied().unwrap_or(0));
        table += &format!(
            "  {}/{} -> {}/{} on {}/{}: {t} {a} {b}\n",
            l("src_namespace"),
            l("src_workload"),
            l("dst_namespace"),
            l("dst_workload"),
            l("namespace"),
            l("workload")
        );
    }
    eprint!("{table}");
    assert_eq!(want.len(), 4, "tshark: data segments both ways, seen on both interfaces");
    assert!(p.met, "{}: per-workload sums differ from tshark's", policy.what);
    assert!(q.met, "{}: per-workload sums differ from tshark's", plain.what);

    // With the policy the series are the same before and after the rollout; without, each
    // pod's address and interface made new ones.
    let series = |s: &[Sample], family: &str| -> BTreeSet<BTreeMap<String, String>> {
        s.iter().filter(|x| x.name == family).map(|x| x.labels.clone()).collect()
    };
    let counts = |i: usize, family: &str| {
        (series(&before[i], family).len(), series(&after[i], family).len())
    };
    eprintln!(
        "{DATA} series before/after the rollout: {} {:?}, {} {:?}; {PACKETS}: {:?}, {:?}",
        policy.what,
        counts(0, DATA),
        plain.what,
        counts(1, DATA),
        counts(0, PACKETS),
        counts(1, PACKETS)
    );
    assert_eq!(
        series(&before[0], DATA),
        series(&p.samples, DATA),
        "{DATA} series across the rollout"
    );
    let kept: BTreeSet<&str> = WORKLOAD_LABELS.into_iter().collect();
    for s in series(&p.samples, DATA) {
        assert_eq!(
            s.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            kept,
            "labels left by the policy"
        );
    }
    assert!(counts(1, DATA).1 > counts(1, DATA).0, "without the policy the rollout adds series");
    // A new pod's interface sends a few frames as it comes up, before the runtime lists the
    // pod: those make a series of no workload; the workloads' own series stay as they were.
    let named = |s: &[Sample]| {
        let mut named = series(s, PACKETS);
        named.retain(|labels| labels.get("workload").is_some_and(|w| !w.is_empty()));
        named
    };
    assert_eq!(named(&before[0]), named(&p.samples), "{PACKETS} series across the rollout");
    let db_owner = expected.device(&db_device);
    let db_packets = value_of(
        &p.samples,
        PACKETS,
        &[("namespace", &db_owner.namespace), ("workload", &db_owner.workload)],
    );
    assert_eq!(
        db_packets,
        Some(db_frames as f64),
        "{PACKETS} of {db_owner} vs tshark's frames on {db_device}"
    );
    eprintln!("whole test {:.1?}", started.elapsed());
}

// ------------------------------------------------------------------------------------------
// 4. The runtime restarts

/// Sets its flag when dropped, also in a panic's unwinding.
struct StoreOnDrop<'a>(&'a AtomicBool);

impl Drop for StoreOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn a_runtime_restart_loses_no_packet_and_attribution_returns() {
    if !require_root("a_runtime_restart_loses_no_packet_and_attribution_returns") {
        return;
    }
    require_tools(&["tcpdump", "tshark", "python3", "ethtool", "curl"]);
    let _serial = serial();
    let started = Instant::now();
    let mut node = CriNode::start();
    let mut expected = Expected::new(&node);
    let db_spec = PodSpec::stateful_set("data", "db", 0);
    let web_spec = PodSpec::deployment("shop", "web", "7d9f8b6c4", "x2x9z");
    let (db, web) = (node.run(&db_spec), node.run(&web_spec));
    expected.add(&node, &db_spec, &db, "db");
    expected.add(&node, &web_spec, &web, "web");
    for pod in [&db, &web] {
        node.offloads_off(pod);
    }
    node.pin_neighbours(&[&db, &web], false);
    let devices = [db.host_interface(), web.host_interface()];
    let dir = TempDir::new("pods-restart");
    let file = dir.join("db.pcap");
    let tcpdump = Tcpdump::start(node.node(), &devices[0], &file);
    let socket = node.socket().display().to_string();
    let host = LiveHost::start("host", node.node(), &host_args(&socket, &[]));
    wait_listed(&host, &[&db, &web]);
    host.wait_interfaces(&[&devices[0], &devices[1]], true, "the pods' interfaces");
    let _sink = serve_sink(&db, PORT);
    let before = host.metrics();
    assert_eq!(source_up(&before), Some(1.0), "wasmtap_host_pod_source_up before the stop");
    let counts_before = devices.each_ref().map(|d| DeviceCounts::of(&before, d));
    let errors_before = count_metric(&before, "wasmtap_host_pod_poll_errors_total");
    let polls_before = gauge(&before, "wasmtap_host_pod_polls_total");

    let mut stream = stream_to_sink(&web, &db, PORT, STREAM_SECS);
    let done = AtomicBool::new(false);
    let (readyz, late) = thread::scope(|s| {
        // Stops the watcher below also when a step here panics: the scope waits for it.
        let _stop = StoreOnDrop(&done);
        // /readyz, asked all along.
        let readyz = s.spawn(|| {
            let mut answers: BTreeMap<Option<u16>, usize> = BTreeMap::new();
            while !done.load(Ordering::Relaxed) {
                *answers.entry(host.status("/readyz")).or_default() += 1;
                thread::sleep(Duration::from_millis(100));
            }
            answers
        });
        thread::sleep(Duration::from_secs(1));
        let stopping = Instant::now();
        node.stop_runtime();
        let stopped_in = stopping.elapsed();
        let down = host.poll(Duration::from_secs(5), |s| source_up(s) == Some(0.0));
        let down_after = stopping.elapsed();
        assert!(down.met, "wasmtap_host_pod_source_up not 0 within 5 s of the stop");
        let l = listing(&host);
        assert_eq!(l["up"], false, "/pods up while the runtime is stopped");
        for pod in [&db, &web] {
            assert!(
                listed(&l, pod).is_some(),
                "/pods dropped {} while the runtime is down",
                pod.name
            );
        }
        thread::sleep(DOWN_FOR.saturating_sub(stopping.elapsed()));
        let starting = Instant::now();
        node.start_runtime();
        let ready_in = starting.elapsed();
        let up = host.poll(Duration::from_secs(5), |s| source_up(s) == Some(1.0));
        let up_after = starting.elapsed();
        assert!(up.met, "wasmtap_host_pod_source_up not 1 within 5 s of the start");
        eprintln!(
            "containerd stopped in {stopped_in:.1?}; source_up 0 {down_after:.1?} after the stop; \
             started again after {:.1?}, ready in {ready_in:.1?}; source_up 1 {up_after:.1?} \
             after the start",
            starting.duration_since(stopping)
        );

        // A pod made after the restart is attributed.
        let spec = PodSpec::job("batch", "report-29000001", "x7k2p");
        let pod = node.run(&spec);
        expected.add_late(&node, &spec, &pod, "report-29000001");
        node.pin_neighbours(&[&pod, &db], false);
        let sent_at = Instant::now();
        let syns = send_syns(&pod, &db, CLOSED_PORT, ATTRIBUTION_TIMEOUT.as_secs_f64());
        let named = host.poll(ATTRIBUTION_TIMEOUT, |s| s.iter().any(|x| pair_names(x, &pod.name)));
        let attributed_after = sent_at.elapsed();
        drop(syns);
        eprintln!(
            "{} made after the restart: attributed {attributed_after:.0?} after its first packet",
            pod.name
        );
        assert!(
            named.met && attributed_after <= ATTRIBUTION_LIMIT,
            "{} not attributed within {ATTRIBUTION_LIMIT:?}: {attributed_after:.1?}",
            pod.name
        );
        done.store(true, Ordering::Relaxed);
        (readyz.join().expect("the /readyz watcher"), pod)
    });
    let finished = stream.wait(Duration::from_secs(STREAM_SECS + 30));
    assert!(
        finished.is_some_and(|s| s.success()) && stream.stdout().contains("DONE"),
        "the stream: {}",
        stream.stderr()
    );
    wait_files_quiet(&[&file], Duration::from_secs(1), Duration::from_secs(30));
    let captured = tcpdump.stop();
    let frames = tshark_count(&file, None);
    let data = tshark_count_by_pair(&file, "tcp.len > 0");

    // Every frame counted, nothing dropped, the pods named all along.
    let late_device = late.host_interface();
    let counted = |s: &[Sample]| {
        let c = DeviceCounts::of(s, &devices[0]).since(&counts_before[0]);
        c.received == frames && c.packets == frames
    };
    let p = host.poll(Duration::from_secs(5), counted);
    let s = &p.samples;
    let grown = devices
        .each_ref()
        .map(|d| DeviceCounts::of(s, d))
        .iter()
        .zip(&counts_before)
        .map(|(a, b)| a.since(b))
        .collect::<Vec<_>>();
    let late_counts = DeviceCounts::of(s, &late_device);
    let errors = count_metric(s, "wasmtap_host_pod_poll_errors_total") - errors_before;
    let polls = gauge(s, "wasmtap_host_pod_polls_total") - polls_before;
    eprintln!(
        "{frames} frames on {} (tcpdump: {captured}); the host since before the stop: {} {}, \
         {} {}; {late_device} {late_counts}; {polls} polls, {errors} failed; /readyz answers \
         {readyz:?}",
        devices[0], devices[0], grown[0], devices[1], grown[1]
    );
    assert!(p.met, "{}: the host counted {}, tshark {frames} frames", devices[0], grown[0]);
    for (d, c) in devices.iter().zip(&grown).chain([(&late_device, &late_counts)]) {
        assert_eq!(c.dropped_total(), 0, "{d}: drops {c}");
    }
    let host_data = sum_by_pair(&device_samples(s, &devices[0]), DATA);
    assert_eq!(host_data, data, "{DATA} per pair on {}: host vs tshark", devices[0]);
    assert_eq!(readyz.keys().collect::<Vec<_>>(), [&Some(200)], "/readyz answers: {readyz:?}");
    assert!(errors > 0, "no failed poll counted while the runtime was stopped");
    let wrong = expected.mismatches(s);
    assert!(wrong.is_empty(), "series with the wrong pods:\n{}", wrong.join("\n"));
    let log = host.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    eprintln!(
        "series of the late pod that name no one (its frames before the host knew it):\n  {}\n\
         the host warned:\n{}",
        Some(expected.late_unnamed(s).join("\n  "))
            .filter(|l| !l.is_empty())
            .unwrap_or("none".into()),
        warnings.join("\n")
    );
    assert_eq!(warnings.len(), 1, "one warning while the runtime is down");
    eprintln!("whole test {:.1?}", started.elapsed());
}
