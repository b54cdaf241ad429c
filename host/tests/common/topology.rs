//! Network namespaces, the one place the tests set them up: a lone quiet namespace
//! ([`Netns`]); two namespaces joined by a veth pair, addressed over IPv4 and IPv6
//! ([`NetnsPair::new`]) or quiet and bare ([`quiet_pair`]); and a node-like topology, a bridge
//! whose veth ports lead to two pod namespaces ([`BridgeTopology`]). A quiet namespace holds
//! only the test's own frames: IPv6 off (no link-local addresses, so no neighbour discovery,
//! MLD or router solicitations), no addresses unless a test adds them.
//!
//! Every namespace is named `wasmtap-<pid>-…` and deleted on drop, with whatever still runs
//! inside, also when a test panics; namespaces of test processes that died are removed by the
//! next one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::process::{next_seq, require_tools, run_ok, run_with_timeout};

/// The prefix of every namespace the tests create.
const NETNS_PREFIX: &str = "wasmtap-";

/// `ip netns exec NS program` as a Command.
pub fn netns_exec(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// `ip ARGS...`, which must succeed within 10 s.
pub fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args), Duration::from_secs(10));
}

/// Turns IPv6 off in `ns` (no link-local addresses, so no neighbour discovery, MLD or router
/// solicitations on its links) and brings `lo` up. Run before the namespace gets interfaces:
/// `default` applies to the ones created later.
fn quieten(ns: &str) {
    require_tools(&["ip", "sysctl"]);
    run_ok(
        netns_exec(ns, "sysctl").args([
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]),
        Duration::from_secs(10),
    );
    ip(&["-n", ns, "link", "set", "lo", "up"]);
}

/// A unique namespace name, `wasmtap-<pid>-<tag><seq>`: the shared fixture removes it if this
/// process dies without cleaning up.
fn netns_name(tag: &str) -> String {
    format!("{NETNS_PREFIX}{}-{tag}{}", std::process::id(), next_seq())
}

/// Kills the processes inside a namespace that this test run created, then deletes it.
fn delete_netns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).stderr(Stdio::null()).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
}

/// Deletes namespaces left behind by earlier test processes that died without cleaning up
/// (named `wasmtap-<pid>-...`, where that pid no longer runs).
fn delete_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing stale namespace {name}");
            delete_netns(name);
        }
    }
}

/// One quiet network namespace, deleted on drop with whatever still runs inside.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        delete_stale_namespaces();
        let ns = Netns { name: netns_name(tag) };
        ip(&["netns", "add", &ns.name]);
        quieten(&ns.name);
        ns
    }

    pub fn exec(&self, program: &str) -> Command {
        netns_exec(&self.name, program)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

/// Two network namespaces, `a` and `b`, joined by a veth pair `veth_a` (in `a`) – `veth_b`
/// (in `b`). [`NetnsPair::new`] addresses them: `veth_a` has 10.77.n.1/24 and fd77:n::1/64,
/// `veth_b` 10.77.n.2/24 and fd77:n::2/64; [`quiet_pair`] leaves them bare (empty addresses).
/// Drop kills whatever still runs inside and deletes both namespaces.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    pub veth_a: String,
    pub veth_b: String,
    pub v4_a: String,
    pub v4_b: String,
    pub v6_a: String,
    pub v6_b: String,
}

impl NetnsPair {
    /// Two namespaces joined by a veth pair with IPv4 and IPv6 addresses, offloads (TSO, GSO,
    /// GRO) off so that captures show real segments; returns once the IPv6 addresses are
    /// usable.
    pub fn new() -> NetnsPair {
        require_tools(&["ip", "ethtool"]);
        delete_stale_namespaces();
        let base = netns_name("pair");
        let seq = next_seq();
        // Only has to be unique per namespace pair (each pair has its own routing), but
        // distinct subnets make captures from parallel tests easy to tell apart.
        let n = (std::process::id().wrapping_mul(7).wrapping_add(seq) % 200) + 20;
        let pair = NetnsPair {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
            veth_a: format!("wta{seq}"),
            veth_b: format!("wtb{seq}"),
            v4_a: format!("10.77.{n}.1"),
            v4_b: format!("10.77.{n}.2"),
            v6_a: format!("fd77:{n}::1"),
            v6_b: format!("fd77:{n}::2"),
        };
        // From here on, Drop cleans up whatever was created, also if a step below fails.
        for ns in [&pair.a, &pair.b] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        add_veth(&pair.a, &pair.veth_a, &pair.b, &pair.veth_b);
        for (ns, dev, v4, v6) in [
            (&pair.a, &pair.veth_a, &pair.v4_a, &pair.v6_a),
            (&pair.b, &pair.veth_b, &pair.v4_b, &pair.v6_b),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            offloads_off(ns, dev);
        }
        pair.wait_ipv6_ready();
        pair
    }

    /// Waits (≤ 5 s) until our IPv6 addresses have left the tentative state.
    fn wait_ipv6_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for (ns, dev) in [(&self.a, &self.veth_a), (&self.b, &self.veth_b)] {
            loop {
                let out = run_ok(
                    Command::new("ip").args(["-n", ns, "-6", "addr", "show", "dev", dev]),
                    Duration::from_secs(10),
                );
                let ours_ready = out
                    .lines()
                    .filter(|l| l.contains("inet6 fd77:"))
                    .all(|l| !l.contains("tentative"));
                if ours_ready && out.contains("inet6 fd77:") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "IPv6 address on {dev} in {ns} still tentative after 5 s:\n{out}"
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `ip netns exec NS program` as a Command.
    pub fn exec(&self, ns: &str, program: &str) -> Command {
        netns_exec(ns, program)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        delete_netns(&self.a);
        delete_netns(&self.b);
    }
}

/// Two quiet namespaces `a` and `b` (see [`quieten`]) without addresses, joined by a veth
/// pair `names.0` (in `a`) – `names.1` (in `b`) when `names` is given, its addresses empty. A
/// [`NetnsPair`], so that the shared helpers (tcpdump) work with it.
pub fn quiet_pair(tag: &str, names: Option<(&str, &str)>) -> NetnsPair {
    delete_stale_namespaces();
    let base = netns_name(tag);
    let (veth_a, veth_b) = names.unwrap_or(("", ""));
    let pair = NetnsPair {
        a: format!("{base}-a"),
        b: format!("{base}-b"),
        veth_a: veth_a.to_string(),
        veth_b: veth_b.to_string(),
        v4_a: String::new(),
        v4_b: String::new(),
        v6_a: String::new(),
        v6_b: String::new(),
    };
    // From here on, Drop removes whatever was created.
    for ns in [&pair.a, &pair.b] {
        ip(&["netns", "add", ns]);
        quieten(ns);
    }
    if names.is_some() {
        add_veth(&pair.a, veth_a, &pair.b, veth_b);
    }
    pair
}

/// Creates the veth pair `name_a` (in `ns_a`) – `name_b` (in `ns_b`) and brings both up.
pub fn add_veth(ns_a: &str, name_a: &str, ns_b: &str, name_b: &str) {
    ip(&["-n", ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b]);
    ip(&["-n", ns_a, "link", "set", name_a, "up"]);
    ip(&["-n", ns_b, "link", "set", name_b, "up"]);
}

/// A counter of `dev` in `ns` from /sys/class/net/DEV/statistics (`rx_dropped`, ...).
pub fn link_stat(ns: &str, dev: &str, stat: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/{stat}");
    let text = run_ok(netns_exec(ns, "cat").arg(&path), Duration::from_secs(10));
    text.trim().parse().unwrap_or_else(|e| panic!("{path} in {ns}: {text:?}: {e}"))
}

/// Makes bridge `name` in namespace `ns` and sets it up, quiet: no STP, no multicast snooping
/// (see [`BridgeTopology`]).
pub fn add_quiet_bridge(ns: &str, name: &str) {
    let quiet = ["stp_state", "0", "mcast_snooping", "0"];
    let mut args = vec!["-n", ns, "link", "add", name, "type", "bridge"];
    args.extend(quiet);
    ip(&args);
    ip(&["-n", ns, "link", "set", name, "up"]);
}

/// TSO, GSO and GRO off, so that captures hold the real segments.
pub fn offloads_off(ns: &str, dev: &str) {
    run_ok(
        netns_exec(ns, "ethtool").args(["-K", dev, "tso", "off", "gso", "off", "gro", "off"]),
        Duration::from_secs(10),
    );
}

/// A Kubernetes node in miniature: a `node` namespace holding bridge `br0` with two veth
/// ports, whose peers are `eth0` in two pod namespaces (`pods.a`, `pods.b`) addressed
/// `pods.v4_a` and `pods.v4_b` in one /24. Offloads are off, and nothing is sent but what the
/// pods send to each other: IPv6 is off, the bridge runs neither STP nor multicast snooping
/// (whose IGMP report for the all-snoopers group would cross both ports), and the pods know
/// each other's MAC address (permanent neighbour entries: no ARP, which could otherwise probe
/// a stale entry seconds after the traffic). Dropping it deletes the three namespaces.
pub struct BridgeTopology {
    pub node: Netns,
    pub pods: NetnsPair,
    /// The node-side port of pod a, then of pod b.
    pub ports: [String; 2],
}

impl BridgeTopology {
    pub fn new(ports: [&str; 2]) -> BridgeTopology {
        require_tools(&["ip", "ethtool", "python3"]);
        let node = Netns::new("node");
        let mut pods = quiet_pair("pod", None);
        let n = std::process::id() % 200 + 20;
        pods.veth_a = "eth0".into();
        pods.veth_b = "eth0".into();
        pods.v4_a = format!("10.77.{n}.1");
        pods.v4_b = format!("10.77.{n}.2");
        let topo = BridgeTopology { node, pods, ports: ports.map(str::to_string) };
        let node = topo.node.name.as_str();
        add_quiet_bridge(node, "br0");
        for (port, pod, addr) in
            [(ports[0], &topo.pods.a, &topo.pods.v4_a), (ports[1], &topo.pods.b, &topo.pods.v4_b)]
        {
            add_veth(node, port, pod, "eth0");
            ip(&["-n", node, "link", "set", port, "master", "br0"]);
            ip(&["-n", pod, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            offloads_off(node, port);
            offloads_off(pod, "eth0");
        }
        let (pa, pb) = (&topo.pods.a, &topo.pods.b);
        for (ns, peer_ns, peer_addr) in [(pa, pb, &topo.pods.v4_b), (pb, pa, &topo.pods.v4_a)] {
            let mac = run_ok(
                netns_exec(peer_ns, "cat").arg("/sys/class/net/eth0/address"),
                Duration::from_secs(10),
            );
            let mac = mac.trim();
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                peer_addr,
                "lladdr",
                mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ]);
        }
        // The bridge forwards once its ports are up (no STP, so no listening/learning delay):
        // a connection to a closed port of pod b is refused (SYN, RST) within the timeout.
        let probe = format!(
            "import socket\ntry:\n socket.create_connection(('{}', 9), timeout=5)\n\
             except ConnectionRefusedError:\n print('refused')",
            topo.pods.v4_b
        );
        let r = run_with_timeout(
            topo.pods.exec(&topo.pods.a, "python3").args(["-c", &probe]),
            Duration::from_secs(10),
        );
        assert!(
            r.stdout_text().contains("refused"),
            "pod a cannot reach pod b over the bridge: {}",
            r.describe()
        );
        topo
    }
}
