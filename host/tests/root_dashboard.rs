//! ROOT: the Grafana dashboard (`dashboard/wasmtap.json`) against a live host scraped by
//! Debian's Prometheus.
//!
//! Two namespaces joined by a veth pair, nftables dropping 2% of TCP segments in each
//! namespace's input hook (after the capture point, as in `root_tcp_analysis`). In namespace a:
//! `wasmtap run` capturing the veth, with two test analyzers beside the defaults, one that panics
//! on its third batch (traps, restarts, quarantine) and one that floods a family with label
//! values (the series cap, here 100 from a `--config` file, refuses them), and pod attribution
//! from a fixed pod table (`--pods`, the `/pods` JSON the test writes): namespace a's addresses
//! are a Deployment's pod in one Kubernetes namespace, namespace b's a StatefulSet's pod in
//! another, whose host-side interface is the captured veth; a static file of
//! kube-state-metrics series served by `python3 -m http.server` on loopback; Prometheus
//! scraping both every second. The traffic: `tests/traffic.py` over IPv4 and IPv6 (bulk
//! transfers, a slow reader, resets), then handcrafted connections sent with tcpreplay whose
//! segments come out of order and retransmit acknowledged data (out-of-order and spurious
//! retransmissions, which random loss after the capture point does not make), one between
//! addresses of no pod and one between the two pods' addresses.
//!
//! It then shows that:
//! - the variables are datasource, job, instance (node), namespace, workload and device, and
//!   each query variable's `label_values()` finds values through the Prometheus API (namespace
//!   and workload: the pod table's pod whose interface is captured);
//! - every panel's every query, with the variables substituted (both "All" and the concrete
//!   values), runs through `/api/v1/query_range` without error;
//! - every query returns data (a metric whose series are known in advance, such as the flows
//!   evicted from the tcp-analysis flow table, shows 0 until something happens);
//! - no panel names a metric the host does not export: every metric name in every query is in
//!   the live exposition, among the families `/analyzers` declares (with the `_bucket`, `_sum`
//!   and `_count` of histograms), or one of the kube-state-metrics series the join uses;
//! - a healthy host (the default analyzers alone, capturing the same veth beside the host under
//!   test) has every metric a panel names in its `/metrics`, failures and evictions included,
//!   though none happened on it;
//! - every metric of the default analyzers and every host self-metric has a panel;
//! - the pod-name join (`kube_pod_info{pod_ip}` of running, non-host-network pods) names both
//!   ends of the IPv4 pairs after their pods, leaves the IPv6 pairs (no `pod_ip`) with their
//!   addresses, and names nothing after a completed pod whose address was reused or after a
//!   host-network pod;
//! - the per-pair ACK RTT panels show the traffic's pairs both ways (data and SYNs one way,
//!   data and SYN/ACKs the other), and with the namespace and workload variables set to the
//!   captured pod's, exactly those pairs (the pods' addresses);
//! - the per-workload panels, built from the host's labels alone, show the pod table's names
//!   (which the kube-state-metrics file does not use): the captured interface's pod, the two
//!   workloads' pairs in both directions, and, with "All", the crafted connection between
//!   addresses of no pod (empty labels); with the namespace and workload variables set to the
//!   captured pod's, exactly the pairs that have it at one end. The round-trip panels by
//!   workload pair leave out the pairs with no pod at either end: the handshake's shows client
//!   to server alone (every connection is opened from namespace a), the ACK RTT's both ways.
//!
//! Skipped (loudly) without root, unless WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;

use common::frames::{ACK, PSH, Pcap, SYN, TcpSegment};
use common::live::LiveHost;
use common::promql::{Prometheus, ScrapeJob, metric_names, url_encode};
use common::topology::netns_exec;
use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// The traffic server's base port in namespace b (see `common::traffic`).
const PORT: u16 = 5001;
/// Bulk bytes per family: enough segments for retransmissions and duplicate ACKs at 2% loss.
const BULK_BYTES: u64 = 1_000_000;
/// Bytes to the slow reader: a second or so of zero windows.
const SLOW_BYTES: u64 = 150_000;
/// Series cap for the host under test: far above what the defaults make here (a few pairs),
/// far below the cardinality bomb's million values.
const SERIES_CAP: u32 = 100;
/// What `$__rate_interval` becomes: a few scrape intervals (Prometheus scrapes every second).
const RATE_INTERVAL: &str = "15s";
/// Panels that may legitimately return nothing here, and why: none, since every series whose
/// labels are known in advance is exported at 0 from the start.
const MAY_BE_EMPTY: [(&str, &str); 0] = [];
/// kube-state-metrics series the dashboard may name (its pod-name join).
const KSM_METRICS: [&str; 2] = ["kube_pod_info", "kube_pod_status_phase"];
/// Every metric of the default analyzers and every self-metric: each must have a panel.
const MUST_HAVE_A_PANEL: [&str; 37] = [
    "wasmtap_packets_total",
    "wasmtap_ip_packet_size_bytes",
    "wasmtap_tcp_payload_size_bytes",
    "wasmtap_tcp_resets_total",
    "wasmtap_ip_dont_fragment_total",
    "wasmtap_tcp_window_scale_options_total",
    "wasmtap_tcp_window_scale_shift",
    "wasmtap_tcp_data_segments_total",
    "wasmtap_tcp_retransmissions_total",
    "wasmtap_tcp_fast_retransmissions_total",
    "wasmtap_tcp_spurious_retransmissions_total",
    "wasmtap_tcp_out_of_order_total",
    "wasmtap_tcp_duplicate_acks_total",
    "wasmtap_tcp_zero_window_total",
    "wasmtap_tcp_handshake_seconds",
    "wasmtap_tcp_connection_duration_seconds",
    "wasmtap_tcp_analysis_flows_evicted_total",
    "wasmtap_tcp_ack_rtt_seconds",
    "wasmtap_tcp_analysis_rtt_segments_untimed_total",
    "wasmtap_host_packets_received_total",
    "wasmtap_host_packets_dropped_total",
    "wasmtap_host_interface_up",
    "wasmtap_host_series",
    "wasmtap_host_series_refused_total",
    "wasmtap_analyzer_state",
    "wasmtap_analyzer_traps_total",
    "wasmtap_analyzer_failures_total",
    "wasmtap_analyzer_restarts_total",
    "wasmtap_analyzer_skipped_packets_total",
    "wasmtap_analyzer_batch_duration_seconds",
    "wasmtap_host_pods",
    "wasmtap_host_pod_source_up",
    "wasmtap_host_pod_polls_total",
    "wasmtap_host_pod_poll_errors_total",
    "wasmtap_host_tunnel_packets_total",
    "wasmtap_host_tunnel_undecoded_total",
    "wasmtap_host_thread_cpu_seconds_total",
];

/// A pod of the table the hosts get with `--pods`.
struct TestPod {
    namespace: &'static str,
    name: &'static str,
    workload: &'static str,
}

/// Namespace a's addresses (the traffic's client): a Deployment's pod. Named unlike the
/// kube-state-metrics file's pods, so that a panel showing these names got them from the host.
const CLIENT_POD: TestPod =
    TestPod { namespace: "storefront", name: "web-7d9f8b6c4-x2x9z", workload: "web" };
/// Namespace b's addresses (the server): a StatefulSet's pod in another namespace, behind the
/// captured veth (its peer is in b), so the veth is this pod's host-side interface.
const SERVER_POD: TestPod =
    TestPod { namespace: "catalog", name: "catalog-db-0", workload: "catalog-db" };

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"topk(10, sum by (src_ip, dst_ip) (rate(wasmtap_a_total{job=~"$job", x="a{b}"}[$__rate_interval])) / (sum by (src_ip) (rate(wasmtap_b_total[5m])) > 0))"#
        ),
        ["wasmtap_a_total", "wasmtap_b_total"]
    );
    assert_eq!(
        names(
            r#"label_replace(m1, "pod_ip", "$1", "src_ip", "(.*)") * on (pod_ip) group_left (namespace, pod) (m2 == 1) or on(a) m3 > 1e-05"#
        ),
        ["m1", "m2", "m3"]
    );
    assert_eq!(names("histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m])))"), ["h_bucket"]);
    assert_eq!(names("sum without (a, b) (up) + vector(1) and bool_metric"), ["bool_metric", "up"]);
    assert_eq!(
        names("topk by (pod_ip) (1, max by (a) (kube_x)) * on (a) group_left () y"),
        ["kube_x", "y"]
    );
    assert_eq!(names("byte_count + bytes"), ["byte_count", "bytes"]);
}

// ------------------------------------------------------------------------------------------
// The dashboard

/// One query of one panel.
struct Query {
    panel: String,
    expr: String,
}

fn dashboard() -> Value {
    let path = repo_root().join("dashboard/wasmtap.json");
    let text = std::fs::read_to_string(&path).expect("dashboard");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every query of every panel, rows' nested panels included.
fn queries(dash: &Value) -> Vec<Query> {
    fn walk(panels: &Value, out: &mut Vec<Query>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr =
                    t["expr"].as_str().unwrap_or_else(|| panic!("{title}: a target without expr"));
                out.push(Query { panel: title.clone(), expr: expr.to_string() });
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// The dashboard has the variables the README promises, and every panel is well formed.
#[test]
fn dashboard_has_its_variables_and_a_panel_for_every_metric() {
    let dash = dashboard();
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    assert_eq!(vars, ["datasource", "job", "instance", "namespace", "workload", "device"]);
    let queries = queries(&dash);
    assert!(queries.len() > 20, "{} queries", queries.len());
    let mut ids = BTreeSet::new();
    let mut walk = vec![&dash["panels"]];
    while let Some(panels) = walk.pop() {
        for p in panels.as_array().into_iter().flatten() {
            assert!(ids.insert(p["id"].as_u64().expect("id")), "duplicate panel id {}", p["id"]);
            if p["type"] != "row" {
                assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
                assert!(p["targets"].as_array().is_some_and(|t| !t.is_empty()), "{}", p["title"]);
            }
            walk.push(&p["panels"]);
        }
    }
    let named: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(&q.expr)).collect();
    for metric in MUST_HAVE_A_PANEL {
        let covered = named.iter().any(|n| {
            n == metric
                || [format!("{metric}_bucket"), format!("{metric}_sum"), format!("{metric}_count")]
                    .contains(n)
        });
        assert!(covered, "no panel shows {metric}");
    }
    // Counters are shown as rates, never raw.
    for q in &queries {
        for name in metric_names(&q.expr) {
            if name.ends_with("_total") || name.ends_with("_bucket") {
                assert!(
                    q.expr.contains(&format!("rate({name}")),
                    "{}: {name} is not under rate(): {}",
                    q.panel,
                    q.expr
                );
            }
        }
    }
}

/// The query with Grafana's variables replaced; `all` picks "All" (the `.*` allValue) for the
/// query variables, else the concrete values.
fn substitute(expr: &str, vars: &BTreeMap<&str, String>, all: bool) -> String {
    substitute_with(expr, vars, all, RATE_INTERVAL)
}

/// [`substitute`] with `$__rate_interval` set to `rate_interval`.
fn substitute_with(
    expr: &str,
    vars: &BTreeMap<&str, String>,
    all: bool,
    rate_interval: &str,
) -> String {
    let mut out = expr.replace("$__rate_interval", rate_interval).replace("$__interval", "2s");
    for (name, value) in vars {
        let v = if all { ".*".to_string() } else { regex_escape(value) };
        out = out.replace(&format!("${name}"), &v);
    }
    assert!(!out.contains('$') || out.contains("\"$1\""), "unsubstituted variable in {out}");
    out
}

/// A value as an RE2 literal inside a PromQL string, the way Grafana formats a single value
/// for `=~`: the regex's backslash is itself escaped in the string (`127\\.0\\.0\\.1`).
fn regex_escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push_str(r"\\");
        }
        out.push(c);
    }
    out
}

// ------------------------------------------------------------------------------------------
// Inputs

/// The `--pods` table (the `/pods` JSON): [`CLIENT_POD`] with namespace a's addresses and no
/// known interface, [`SERVER_POD`] with namespace b's and the captured veth. No node address:
/// namespace a, where the host runs, stands for the node, but its addresses here stand for a
/// pod's.
fn pods_table(pair: &NetnsPair) -> Value {
    json!({
        "node_addresses": [],
        "pods": [
            {
                "namespace": CLIENT_POD.namespace,
                "name": CLIENT_POD.name,
                "uid": "6b3f0c52-9d1e-4a7b-8f20-3c5d7e9a1b24",
                "workload": CLIENT_POD.workload,
                "addresses": [pair.v4_a, pair.v6_a],
                "interface": null,
            },
            {
                "namespace": SERVER_POD.namespace,
                "name": SERVER_POD.name,
                "uid": "0e8d4a61-27c3-4f95-b1d8-5a6c9e2f7d13",
                "workload": SERVER_POD.workload,
                "addresses": [pair.v4_b, pair.v6_b],
                "interface": pair.veth_a,
            },
        ],
    })
}

/// Two ARP frames (a request and its reply, between MACs no test interface has, so that no
/// stack answers them), each wrapped in VXLAN on 4789.
fn vxlan_arp_capture(dir: &TempDir) -> std::path::PathBuf {
    let arp = |op: u8, from: u8, to: u8| -> Vec<u8> {
        let (mac, peer) = ([2, 0, 0, 0, 0, from], [2, 0, 0, 0, 0, to]);
        let mut f = [peer, mac].concat();
        f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, op]);
        f.extend(mac);
        f.extend([192, 0, 2, from]);
        f.extend(if op == 1 { [0; 6] } else { peer });
        f.extend([192, 0, 2, to]);
        f
    };
    let plain = dir.join("arp.pcap");
    common::frames::write_pcap(&plain, &[arp(1, 1, 2), arp(2, 2, 1)]);
    let wrapped = dir.join("arp-in-vxlan.pcap");
    let vxlan = common::tunnel::Layer::Vxlan {
        underlay: common::tunnel::Underlay::v4(9),
        port: 4789,
        vni: 9,
    };
    common::tunnel::wrap_capture(&plain, &wrapped, common::tunnel::Frames::All, &[vxlan]);
    wrapped
}

/// kube-state-metrics series in its documented format (docs/pod-metrics.md): the two test
/// pods (client in namespace a, server in b), a completed job pod whose address the server
/// reused, and a host-network pod on the node's address.
fn ksm_text(client: &str, server: &str) -> String {
    let info = |ns: &str, pod: &str, ip: &str, host_network: bool| {
        format!(
            "kube_pod_info{{namespace=\"{ns}\",pod=\"{pod}\",uid=\"{pod}-uid\",host_ip=\"192.0.2.10\",\
             pod_ip=\"{ip}\",node=\"node-a\",created_by_kind=\"ReplicaSet\",created_by_name=\"{pod}\",\
             priority_class=\"\",host_network=\"{host_network}\"}} 1\n"
        )
    };
    let phases = |ns: &str, pod: &str, current: &str| -> String {
        ["Pending", "Succeeded", "Failed", "Unknown", "Running"]
            .iter()
            .map(|p| {
                format!(
                    "kube_pod_status_phase{{namespace=\"{ns}\",pod=\"{pod}\",uid=\"{pod}-uid\",phase=\"{p}\"}} {}\n",
                    u8::from(*p == current)
                )
            })
            .collect()
    };
    let mut t = String::from(
        "# HELP kube_pod_info [STABLE] Information about pod.\n# TYPE kube_pod_info gauge\n",
    );
    t += &info("demo", "client-7d9f", client, false);
    t += &info("demo", "server-5c6b", server, false);
    t += &info("demo", "old-job-x2k", server, false);
    t += &info("kube-system", "kube-proxy-q8z", "192.0.2.10", true);
    t += "# HELP kube_pod_status_phase [STABLE] The pods current phase.\n# TYPE kube_pod_status_phase gauge\n";
    t += &phases("demo", "client-7d9f", "Running");
    t += &phases("demo", "server-5c6b", "Running");
    t += &phases("demo", "old-job-x2k", "Succeeded");
    t += &phases("kube-system", "kube-proxy-q8z", "Running");
    t
}

/// One connection whose segments come out of order and retransmit acknowledged data, as
/// tcpreplay will send it: a handshake 20 ms per step (iRTT about 40 ms), segments d1, d3, d2
/// of 100 bytes 1 ms apart (d2 fills the hole well within the iRTT: out of order), the ACK of
/// all three, then d1 again (a spurious retransmission: already acknowledged). The frames' MACs
/// are no interface's, so the receiving namespace drops them unanswered, whatever the
/// addresses.
fn reordered_connection(path: &Path, client: IpAddr, server: IpAddr, cport: u16) {
    let (sport, isn_c, isn_s) = (80u16, 1_000u32, 5_000u32);
    let up = TcpSegment::new(client, cport, server, sport);
    let down = TcpSegment::new(server, sport, client, cport);
    let data = |seq: u32| TcpSegment {
        seq,
        ack: isn_s + 1,
        flags: PSH | ACK,
        payload_len: 100,
        ..up.clone()
    };
    let steps: [(u64, TcpSegment); 8] = [
        (0, TcpSegment { seq: isn_c, flags: SYN, ..up.clone() }),
        (20_000, TcpSegment { seq: isn_s, ack: isn_c + 1, flags: SYN | ACK, ..down.clone() }),
        (40_000, TcpSegment { seq: isn_c + 1, ack: isn_s + 1, flags: ACK, ..up.clone() }),
        (41_000, data(isn_c + 1)),
        (42_000, data(isn_c + 201)),
        (43_000, data(isn_c + 101)),
        (63_000, TcpSegment { seq: isn_s + 1, ack: isn_c + 301, flags: ACK, ..down }),
        (83_000, data(isn_c + 1)),
    ];
    let mut pcap = Pcap::create(path);
    for (us, segment) in &steps {
        pcap.write_segment(1_700_000_000_000_000 + us, segment);
    }
    pcap.finish();
}

// ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn root_every_panel_query_runs_and_shows_live_data() {
    if !require_root("root_every_panel_query_runs_and_shows_live_data") {
        return;
    }
    require_tools(&[
        "ip",
        "nft",
        "ethtool",
        "python3",
        "tcpreplay",
        "prometheus",
        "curl",
        "tshark",
    ]);
    let dir = TempDir::new("dashboard");
    let pair = NetnsPair::new();
    for ns in [&pair.a, &pair.b] {
        add_loss(ns, 2);
    }

    // The host, as a node would run it, plus the two misbehaving test analyzers.
    let config = dir.join("wasmtap.toml");
    std::fs::write(&config, format!("series-cap = {SERIES_CAP}\nseries-ttl = \"10m\"\n"))
        .expect("config");
    let panic_nth = test_analyzer("panic-nth-batch");
    let bomb = test_analyzer("cardinality-bomb");
    let pods = dir.join("pods.json");
    std::fs::write(&pods, pods_table(&pair).to_string()).expect("pods file");
    let pods = pods.display().to_string();
    let args: Vec<String> = vec![
        "-i".into(),
        pair.veth_a.clone(),
        "--config".into(),
        config.display().to_string(),
        "--analyzer".into(),
        panic_nth.display().to_string(),
        "--analyzer".into(),
        bomb.display().to_string(),
        "--pods".into(),
        pods.clone(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut host = LiveHost::start("dashboard host", &pair.a, &args);
    host.wait_ready(Duration::from_secs(30));
    // A healthy host beside it: the defaults alone, on the same veth, attributing from the same
    // table (the pod attribution's self-metrics exist only where attribution is on).
    let mut healthy =
        LiveHost::start("healthy host", &pair.a, &["-i", &pair.veth_a, "--pods", &pods]);
    healthy.wait_ready(Duration::from_secs(30));

    // kube-state-metrics' series, from a file.
    let ksm_dir = dir.join("ksm");
    std::fs::create_dir_all(&ksm_dir).expect("mkdir");
    std::fs::write(ksm_dir.join("metrics.txt"), ksm_text(&pair.v4_a, &pair.v4_b))
        .expect("ksm file");
    let ksm_port = free_port();
    let mut http = netns_exec(&pair.a, "python3");
    http.args(["-m", "http.server", &ksm_port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(&ksm_dir);
    let mut ksm = Spawned::start("kube-state-metrics file server", &mut http);
    let deadline = Instant::now() + Duration::from_secs(20);
    let ksm_addr = SocketAddr::from(([127, 0, 0, 1], ksm_port));
    let served = || common::http::get_in(&pair.a, ksm_addr, "/metrics.txt", Duration::from_secs(5));
    while !served().is_ok_and(|r| r.status == 200) {
        assert!(ksm.try_status().is_none(), "http.server exited: {}", ksm.stderr());
        assert!(Instant::now() < deadline, "http.server not serving: {}", ksm.stderr());
        thread::sleep(Duration::from_millis(100));
    }
    let (wasmtap, ksm_target) = (host.addr.to_string(), ksm_addr.to_string());
    let prom = Prometheus::start(
        &pair.a,
        &[
            ScrapeJob::metrics("wasmtap", &wasmtap),
            ScrapeJob {
                name: "kube-state-metrics",
                target: &ksm_target,
                path: "/metrics.txt",
                honor_labels: true,
            },
        ],
    );

    // Traffic, in two rounds a few scrapes apart: a series that first shows up with its count
    // already made has no earlier sample for rate() to compare with (Prometheus counts the
    // increases it sees), so the first round creates the series and the second increases them.
    // Each round: lossy TCP over both families, then two reordered connections (their own
    // client port each round, so new connections between the same addresses): one between
    // addresses of no pod (TEST-NET-1: empty attribution labels), one between the two pods'
    // IPv4 addresses (so that the panels have out-of-order and spurious retransmissions also
    // with the namespace and workload variables set).
    let started = Instant::now();
    let _server = start_traffic_server(&pair, PORT);
    let pods_v4 = |a: &str| a.parse::<IpAddr>().expect("an IPv4 address");
    let crafted = [
        ("off-node", IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2])),
        ("pods", pods_v4(&pair.v4_a), pods_v4(&pair.v4_b)),
    ];
    let vxlan_arp = vxlan_arp_capture(&dir);
    for round in 0..2u16 {
        for addr in [&pair.v4_b, &pair.v6_b] {
            let summary = run_lossy_traffic_client(&pair, addr, PORT, BULK_BYTES, SLOW_BYTES);
            eprintln!("round {round}: traffic client {addr}: {summary}");
        }
        for (what, client, server) in crafted {
            let pcap = dir.join(&format!("reordered-{what}-{round}.pcap"));
            reordered_connection(&pcap, client, server, 40_001 + round);
            assert_eq!(
                tshark_count(&pcap, Some("tcp.analysis.out_of_order")),
                1,
                "the crafted capture's d2 should be tshark's out-of-order segment"
            );
            assert_eq!(tshark_count(&pcap, Some("tcp.analysis.spurious_retransmission")), 1);
            let sent = common::live::tcpreplay(&pair.b, &pair.veth_b, &pcap);
            assert_eq!(sent, 8, "tcpreplay sent {sent} of 8 frames ({what})");
        }
        // Two ARP frames in VXLAN, for the tunnel panel: a tunnel's series appear on the
        // device that carries it. Not IP inside, so no pair and no other panel changes.
        let sent = common::live::tcpreplay(&pair.b, &pair.veth_b, &vxlan_arp);
        assert_eq!(sent, 2, "tcpreplay sent {sent} of 2 VXLAN frames");
        // Three scrapes of this round's counts before the next one.
        thread::sleep(Duration::from_secs(3));
    }
    eprintln!(
        "traffic done after {:.1?}; nftables dropped a->b {} b->a {}",
        started.elapsed(),
        loss_drops(&pair.b),
        loss_drops(&pair.a)
    );

    // Until Prometheus has seen what the panels need: each of these appears late.
    for q in [
        "wasmtap_tcp_out_of_order_total",
        "wasmtap_tcp_spurious_retransmissions_total",
        "wasmtap_tcp_zero_window_total",
        "wasmtap_analyzer_state{analyzer=\"panic-nth-batch\",state=\"quarantined\"} == 1",
        "wasmtap_host_series_refused_total > 0",
        "wasmtap_host_tunnel_packets_total{kind=\"vxlan\"} > 2",
        "kube_pod_info",
    ] {
        assert!(
            prom.wait_for(q, Duration::from_secs(60)),
            "Prometheus never saw {q}:\nhost log:\n{}",
            host.log()
        );
    }
    // Two more scrapes of the last values, so that every rate() window holds two samples.
    thread::sleep(Duration::from_secs(3));
    let span = started.elapsed() + Duration::from_secs(10);

    // What the host exports: the live exposition and the families /analyzers declares.
    let exposition = host.get("/metrics").expect("/metrics");
    let mut known: BTreeSet<String> = BTreeSet::new();
    for line in exposition.lines() {
        let name = line
            .strip_prefix("# TYPE ")
            .or_else(|| line.strip_prefix("# HELP "))
            .unwrap_or(line)
            .split(|c: char| c == '{' || c.is_whitespace())
            .next()
            .unwrap_or("");
        known.insert(name.to_string());
    }
    let analyzers: Value =
        serde_json::from_str(&host.get("/analyzers").expect("/analyzers")).expect("json");
    for a in analyzers.as_array().expect("analyzers") {
        for f in a["families"].as_array().into_iter().flatten() {
            let name = f["name"].as_str().expect("family name");
            known.insert(name.to_string());
            if f["kind"] == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    known.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    known.extend(KSM_METRICS.iter().map(|s| s.to_string()));

    // The variables: label_values() through the label-values API, then their values.
    let dash = dashboard();
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    for v in dash["templating"]["list"].as_array().expect("variables") {
        let name = v["name"].as_str().expect("name");
        if v["type"] == "datasource" {
            assert_eq!(v["query"], "prometheus");
            continue;
        }
        let def = v["definition"].as_str().expect("definition");
        let inner = def.strip_prefix("label_values(").and_then(|d| d.strip_suffix(')')).expect(def);
        let (selector, label) = inner.rsplit_once(',').expect("label_values(selector, label)");
        let selector = substitute(selector.trim(), &vars, true);
        let answer = prom.api(&format!(
            "/api/v1/label/{}/values?match[]={}",
            label.trim(),
            url_encode(&selector)
        ));
        assert_eq!(answer["status"], "success", "variable {name}: {answer}");
        let values = answer["data"].as_array().cloned().unwrap_or_default();
        eprintln!("variable {name}: {def} -> {values:?}");
        assert!(!values.is_empty(), "variable {name} finds no value: {def}");
        let value = values[0].as_str().expect("value").to_string();
        vars.insert(name, value);
    }
    assert_eq!(vars["job"], "wasmtap");
    // The one pod whose interface is captured: the variables list per-device labels.
    assert_eq!(vars["namespace"], SERVER_POD.namespace);
    assert_eq!(vars["workload"], SERVER_POD.workload);
    assert_eq!(vars["device"], pair.veth_a);

    // Every query of every panel.
    let mut problems = Vec::new();
    let mut empty_ok = Vec::new();
    for q in queries(&dash) {
        for name in metric_names(&q.expr) {
            if !known.contains(&name) {
                problems.push(format!("{}: names {name}, which the host does not export", q.panel));
            }
        }
        let may_be_empty =
            metric_names(&q.expr).iter().any(|n| MAY_BE_EMPTY.iter().any(|(m, _)| m == n));
        for all in [true, false] {
            let promql = substitute(&q.expr, &vars, all);
            let answer = prom.range(&promql, span);
            let series = answer["data"]["result"].as_array().map(Vec::len);
            eprintln!(
                "{:<55} {:<8} {}",
                q.panel,
                if all { "All" } else { "values" },
                match (&answer["status"], series) {
                    (s, Some(n)) if s == "success" => format!("{n} series"),
                    _ => format!("ERROR {}", answer["error"]),
                }
            );
            if answer["status"] != "success" {
                problems.push(format!("{}: query failed: {}: {promql}", q.panel, answer["error"]));
            } else if series == Some(0) {
                if may_be_empty {
                    empty_ok.push(q.panel.clone());
                } else {
                    problems.push(format!(
                        "{} ({}): no data: {promql}",
                        q.panel,
                        if all { "All" } else { "values" }
                    ));
                }
            }
        }
    }
    for (metric, why) in MAY_BE_EMPTY {
        eprintln!("allowed to be empty: panels on {metric} ({why}); empty here: {empty_ok:?}");
    }
    assert!(problems.is_empty(), "dashboard problems:\n{}", problems.join("\n"));

    // A healthy host's own /metrics holds every metric a panel names: no analyzer failed on
    // it and no flow was evicted, yet those panels show 0 rather than "No data".
    let healthy_text = healthy.get("/metrics").expect("the healthy host's /metrics");
    let exported: BTreeSet<&str> = healthy_text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: BTreeSet<String> = queries(&dash)
        .iter()
        .flat_map(|q| metric_names(&q.expr))
        .filter(|n| !KSM_METRICS.contains(&n.as_str()) && !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "a healthy host does not export {missing:?}, which panels name:\n{healthy_text}"
    );
    healthy.assert_running();

    // The pod-name join, with kube-state-metrics' series.
    let join = queries(&dash)
        .into_iter()
        .find(|q| q.expr.contains("kube_pod_info"))
        .expect("a panel joining kube_pod_info");
    // At one instant, over a window that holds the whole traffic (a dashboard whose time range
    // ended now would show the last minutes the same way).
    let window = format!("{}s", span.as_secs() + 5);
    let answer = prom.instant(&substitute_with(&join.expr, &vars, true, &window));
    assert_eq!(answer["status"], "success", "{answer}");
    let rows: Vec<(String, String, String, String)> = answer["data"]["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|r| {
            let l = |k: &str| r["metric"][k].as_str().unwrap_or("").to_string();
            (l("src_ip"), l("dst_ip"), l("src_pod"), l("dst_pod"))
        })
        .collect();
    eprintln!("join: {rows:#?}");
    let find = |src: &str, dst: &str| rows.iter().find(|r| r.0 == src && r.1 == dst);
    let v4 = find(&pair.v4_a, &pair.v4_b).expect("the IPv4 client -> server pair in the join");
    assert_eq!((v4.2.as_str(), v4.3.as_str()), ("demo/client-7d9f", "demo/server-5c6b"));
    let back = find(&pair.v4_b, &pair.v4_a).expect("the IPv4 server -> client pair");
    assert_eq!((back.2.as_str(), back.3.as_str()), ("demo/server-5c6b", "demo/client-7d9f"));
    for r in &rows {
        assert!(
            !r.2.contains("old-job") && !r.3.contains("old-job"),
            "a completed pod named: {r:?}"
        );
        assert!(
            !r.2.contains("kube-proxy") && !r.3.contains("kube-proxy"),
            "a host-network pod named: {r:?}"
        );
        if r.0.contains(':') {
            assert_eq!(
                (&r.2, &r.3),
                (&r.0, &r.1),
                "IPv6 addresses have no pod_ip: kept as they are"
            );
        }
    }

    // The per-workload panels: names from the pod table, through the host's labels alone.
    let panel_rows = |title: &str, all: bool, labels: &[&str]| -> BTreeSet<Vec<String>> {
        let q = queries(&dash)
            .into_iter()
            .find(|q| q.panel == title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        let answer = prom.instant(&substitute_with(&q.expr, &vars, all, &window));
        assert_eq!(answer["status"], "success", "{title}: {answer}");
        let rows: BTreeSet<Vec<String>> = answer["data"]["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|r| {
                labels.iter().map(|k| r["metric"][*k].as_str().unwrap_or("").to_string()).collect()
            })
            .collect();
        eprintln!("{title} ({}): {rows:?}", if all { "All" } else { "values" });
        rows
    };
    let row = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let pod_interface =
        panel_rows("Packets per second by pod interface", true, &["namespace", "workload", "pod"]);
    assert_eq!(
        pod_interface,
        BTreeSet::from([row(&[SERVER_POD.namespace, SERVER_POD.workload, SERVER_POD.name])]),
        "the captured veth is the server pod's interface, and no other interface is a pod's"
    );
    // ACK RTT per pair: the traffic's pairs both ways; with "All" also the crafted pair of no
    // pod's addresses (either way, if its replay at top speed gave a nonzero sample), nothing
    // else. Addresses as Prometheus labels show them (the host's canonical text).
    let ip = |a: &str| a.parse::<IpAddr>().expect("an address").to_string();
    let both_ways = |a: String, b: String| [row(&[&a, &b]), row(&[&b, &a])];
    let traffic: BTreeSet<Vec<String>> = [(&pair.v4_a, &pair.v4_b), (&pair.v6_a, &pair.v6_b)]
        .into_iter()
        .flat_map(|(a, b)| both_ways(ip(a), ip(b)))
        .collect();
    let off_node_pairs = both_ways(crafted[0].1.to_string(), crafted[0].2.to_string());
    for title in ["ACK RTT p50 per pair (top 10)", "ACK RTT p99 per pair (top 10)"] {
        let rows = panel_rows(title, true, &["src_ip", "dst_ip"]);
        let unexpected: Vec<_> =
            rows.iter().filter(|r| !traffic.contains(*r) && !off_node_pairs.contains(r)).collect();
        assert!(unexpected.is_empty(), "{title}: pairs the traffic did not make: {unexpected:?}");
        assert!(rows.is_superset(&traffic), "{title}: not every pair of {traffic:?} in {rows:?}");
        assert_eq!(
            panel_rows(title, false, &["src_ip", "dst_ip"]),
            traffic,
            "{title}, namespace {} and workload {}",
            vars["namespace"],
            vars["workload"]
        );
    }
    let pair_labels = ["src_namespace", "src_workload", "dst_namespace", "dst_workload"];
    let forward = row(&[
        CLIENT_POD.namespace,
        CLIENT_POD.workload,
        SERVER_POD.namespace,
        SERVER_POD.workload,
    ]);
    let backward = row(&[
        SERVER_POD.namespace,
        SERVER_POD.workload,
        CLIENT_POD.namespace,
        CLIENT_POD.workload,
    ]);
    // The crafted connection (TEST-NET-1, no pod's addresses): every attribution label empty.
    let off_node = row(&["", "", "", ""]);
    for title in [
        "Data segments per second by workload pair (top 10)",
        "Retransmissions per second by workload pair (top 10)",
        "Retransmission ratio by workload pair (top 10)",
        "Resets per second by workload pair (top 10)",
    ] {
        let rows = panel_rows(title, true, &pair_labels);
        let unexpected: Vec<_> =
            rows.iter().filter(|r| ![&forward, &backward, &off_node].contains(r)).collect();
        assert!(
            unexpected.is_empty(),
            "{title}: workload pairs not in the pod table: {unexpected:?}"
        );
        assert!(rows.contains(&forward), "{title}: no {forward:?} in {rows:?}");
    }
    // Round trips by workload pair, with "All" and with the captured pod's namespace and
    // workload alike (it is at one end of both pairs); the crafted pair of no pod's addresses
    // is left out.
    for all in [true, false] {
        let handshakes = "Handshake time p99 by workload pair (top 10)";
        let rows = panel_rows(handshakes, all, &pair_labels);
        assert_eq!(rows, BTreeSet::from([forward.clone()]), "{handshakes}: client to server alone");
        let ack_rtt = "ACK RTT p99 by workload pair (top 10)";
        let rows = panel_rows(ack_rtt, all, &pair_labels);
        assert_eq!(rows, BTreeSet::from([forward.clone(), backward.clone()]), "{ack_rtt}");
    }
    // Data both ways (uploads and downloads), and with "All" the pair of no pod's addresses
    // too; with the captured pod's namespace and workload, the pairs with it at either end.
    let segments = "Data segments per second by workload pair (top 10)";
    assert_eq!(
        panel_rows(segments, true, &pair_labels),
        BTreeSet::from([forward.clone(), backward.clone(), off_node.clone()]),
        "{segments}, All"
    );
    assert_eq!(
        panel_rows(segments, false, &pair_labels),
        BTreeSet::from([forward, backward]),
        "{segments}, namespace {} and workload {}",
        vars["namespace"],
        vars["workload"]
    );
    host.assert_running();
}
