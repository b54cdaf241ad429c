//! The pods of a [`super::CriNode`]: what the kubelet asks the runtime for ([`PodSpec`], with
//! the labels its controllers give a Deployment's, StatefulSet's, DaemonSet's or Job's pod),
//! a running sandbox ([`Pod`]: its address, network namespace, pause process, commands run in
//! its network namespace, its host-side interface as the kernel names it), the runtime's
//! verbose answer about one ([`SandboxStatus`]), real TCP between two pods ([`serve_traffic`],
//! [`run_traffic`], [`run_lossy_traffic`], with `tests/traffic.py`), small traffic of known
//! shape ([`serve_sink`], [`stream_to_sink`], [`send_syns`]), and a pods' network fit for exact
//! captures ([`super::CriNode::offloads_off`], [`super::CriNode::pin_neighbours`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_cri::v1 as cri;
use serde_json::Value;

use super::COMMAND_TIMEOUT;
use crate::common::process::{Spawned, next_seq, run_ok, run_with_timeout};
use crate::common::topology::{netns_exec, offloads_off};
use crate::common::traffic::{ClientReport, traffic_script};

/// A pod as the kubelet describes it to the runtime: metadata and the pod's own labels (the
/// kubelet adds its `io.kubernetes.pod.*` labels when it creates the sandbox).
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub attempt: u32,
    /// The pod's labels, as in its manifest or as its controller set them.
    pub labels: BTreeMap<String, String>,
    /// `hostNetwork: true`: the sandbox shares the node's network namespace (NamespaceMode
    /// NODE) and gets no address of its own.
    pub host_network: bool,
}

impl PodSpec {
    /// A pod with the given labels, a fresh UID and attempt 0.
    pub fn new(namespace: &str, name: &str, labels: &[(&str, &str)]) -> PodSpec {
        PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            uid: new_uid(),
            attempt: 0,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            host_network: false,
        }
    }

    /// A bare pod as `kubectl run NAME` makes it (label `run=NAME`).
    pub fn bare(namespace: &str, name: &str) -> PodSpec {
        PodSpec::new(namespace, name, &[("run", name)])
    }

    /// A pod of Deployment `deployment` through its ReplicaSet `deployment-HASH`: named
    /// `deployment-HASH-SUFFIX`, labelled `app` and `pod-template-hash`.
    pub fn deployment(namespace: &str, deployment: &str, hash: &str, suffix: &str) -> PodSpec {
        let name = format!("{deployment}-{hash}-{suffix}");
        PodSpec::new(namespace, &name, &[("app", deployment), ("pod-template-hash", hash)])
    }

    /// Pod `ordinal` of StatefulSet `set`: named `set-ORDINAL`, labelled as the StatefulSet
    /// controller labels it.
    pub fn stateful_set(namespace: &str, set: &str, ordinal: u32) -> PodSpec {
        let name = format!("{set}-{ordinal}");
        let revision = format!("{set}-6c5b7d8f9");
        let index = ordinal.to_string();
        PodSpec::new(
            namespace,
            &name,
            &[
                ("app", set),
                ("apps.kubernetes.io/pod-index", &index),
                ("controller-revision-hash", &revision),
                ("statefulset.kubernetes.io/pod-name", &name),
            ],
        )
    }

    /// A pod of DaemonSet `set`: named `set-SUFFIX`, labelled as the DaemonSet controller
    /// labels it.
    pub fn daemon_set(namespace: &str, set: &str, suffix: &str) -> PodSpec {
        let name = format!("{set}-{suffix}");
        PodSpec::new(
            namespace,
            &name,
            &[
                ("app", set),
                ("controller-revision-hash", "7b9c6d5f4"),
                ("pod-template-generation", "1"),
            ],
        )
    }

    /// A pod of Job `job`: named `job-SUFFIX`, labelled as the Job controller labels it
    /// (both the old `job-name` and the `batch.kubernetes.io/` labels).
    pub fn job(namespace: &str, job: &str, suffix: &str) -> PodSpec {
        let name = format!("{job}-{suffix}");
        let controller = new_uid();
        PodSpec::new(
            namespace,
            &name,
            &[
                ("batch.kubernetes.io/controller-uid", &controller),
                ("batch.kubernetes.io/job-name", job),
                ("controller-uid", &controller),
                ("job-name", job),
            ],
        )
    }

    /// The same pod with `hostNetwork: true`.
    pub fn host_network(mut self) -> PodSpec {
        self.host_network = true;
        self
    }

    /// The sandbox's labels: the pod's own plus the three the kubelet adds.
    pub fn sandbox_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert("io.kubernetes.pod.name".into(), self.name.clone());
        labels.insert("io.kubernetes.pod.namespace".into(), self.namespace.clone());
        labels.insert("io.kubernetes.pod.uid".into(), self.uid.clone());
        labels
    }
}

/// A UID in the form Kubernetes gives them (a random UUID), from the clock, the pid and a
/// sequence number: unique within and across test processes.
fn new_uid() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let pid = u128::from(std::process::id());
    let seq = u128::from(next_seq());
    // A multiplicative mix, so that consecutive UIDs differ in every group.
    let x =
        (nanos ^ (pid << 64) ^ (seq << 96)).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    let h = format!("{x:032x}");
    format!("{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// A running pod sandbox, as the runtime described it right after creating it.
#[derive(Debug, Clone)]
pub struct Pod {
    /// The sandbox id.
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The sandbox's labels (the pod's and the kubelet's), as the runtime returned them.
    pub labels: BTreeMap<String, String>,
    /// The pod's address from PodSandboxStatus; empty for a host-network pod.
    pub ip: String,
    /// The pod's network namespace (`/var/run/netns/cni-…`) from the verbose status's runtime
    /// spec; `None` for a host-network pod.
    pub netns_path: Option<PathBuf>,
    /// The sandbox's pause process.
    pub pid: u32,
    /// The node namespace (a host-network pod's own).
    pub(super) node_ns: String,
}

impl Pod {
    /// `program` in the pod's network namespace (`nsenter --net=PATH`; the node's for a
    /// host-network pod), in this process's mount namespace.
    pub fn exec(&self, program: &str) -> Command {
        let path = match &self.netns_path {
            Some(p) => p.clone(),
            None => Path::new("/run/netns").join(&self.node_ns),
        };
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", path.display())).arg("--").arg(program);
        c
    }

    /// The pod's host-side interface in the node namespace, found by the kernel's word alone:
    /// the interface whose index is the peer index (`@ifN`) of the pod's `eth0`. Panics for a
    /// host-network pod, or when there is no such interface.
    pub fn host_interface(&self) -> String {
        assert!(self.netns_path.is_some(), "{}: a host-network pod has no interface", self.name);
        let eth0 = run_ok(self.exec("ip").args(["-o", "link", "show", "eth0"]), COMMAND_TIMEOUT);
        // "2: eth0@if7: <BROADCAST,...": the peer's index follows "@if".
        let peer = eth0
            .split_once("@if")
            .and_then(|(_, rest)| rest.split(':').next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("{}: no peer index in {eth0:?}", self.name));
        let links = run_ok(
            Command::new("ip").args(["-n", &self.node_ns, "-o", "link", "show"]),
            COMMAND_TIMEOUT,
        );
        links
            .lines()
            .find_map(|l| {
                let (index, rest) = l.split_once(": ")?;
                (index.trim().parse::<u32>().ok()? == peer)
                    .then(|| rest.split(['@', ':']).next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| {
                panic!("{}: no interface {peer} in {}:\n{links}", self.name, self.node_ns)
            })
    }
}

/// PodSandboxStatus (verbose), as the runtime answered it.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    pub status: cri::PodSandboxStatus,
    /// The verbose `info` entry, parsed (containerd: pid, runtimeSpec, cniResult, config, …).
    pub info: Value,
}

impl SandboxStatus {
    pub fn metadata(&self) -> cri::PodSandboxMetadata {
        self.status.metadata.clone().unwrap_or_default()
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.status.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The pod's address; empty for a host-network pod.
    pub fn ip(&self) -> String {
        self.status.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default()
    }

    pub fn ready(&self) -> bool {
        self.status.state == cri::PodSandboxState::SandboxReady as i32
    }

    /// The path of the sandbox's network namespace, from the runtime spec in the verbose info;
    /// `None` when it joins the node's (host network).
    pub fn netns_path(&self) -> Option<PathBuf> {
        self.info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()?
            .iter()
            .find(|ns| ns["type"] == "network")?["path"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }

    /// The pause process's pid from the verbose info.
    pub fn pid(&self) -> Option<u32> {
        self.info["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    }
}

// ------------------------------------------------------------------------------------------
// Traffic between pods

/// The traffic server (`tests/traffic.py serve`, see `common::traffic`) in `pod`, on its
/// address, ports `port`..`port`+2; returns once it listens. Killed on drop.
pub fn serve_traffic(pod: &Pod, port: u16) -> Spawned {
    let mut cmd = pod.exec("python3");
    cmd.arg(traffic_script()).args([
        "serve",
        "--addr",
        &pod.ip,
        "--port",
        &port.to_string(),
        "--lifetime",
        "240",
    ]);
    let mut server = Spawned::start(&format!("traffic server in {}", pod.name), &mut cmd);
    server.wait_for_output("READY", true, Duration::from_secs(20));
    server
}

/// The traffic client's scenarios (bulk: `bulk_bytes` up, half as much down; refused; abort;
/// linger0) from `client` to `server`'s address, where [`serve_traffic`] listens on `port`.
/// Panics unless every transfer went right and the refusal and the reset were seen.
pub fn run_traffic(client: &Pod, server: &Pod, port: u16, bulk_bytes: u64) -> ClientReport {
    let report = traffic_client(client, server, port, bulk_bytes, Duration::from_secs(60));
    assert!(
        report.refused() && report.reset_seen(),
        "traffic {} -> {}: the refusal or the reset was not seen: {report}",
        client.name,
        server.name
    );
    report
}

/// Like [`run_traffic`] where nftables drops segments at random in the pods' network
/// namespaces (`common::traffic::add_loss`): loss can hide the abort's reset from the client,
/// so only the transfers and the refusal are checked, and retransmission timeouts get time.
pub fn run_lossy_traffic(client: &Pod, server: &Pod, port: u16, bulk_bytes: u64) -> ClientReport {
    let report = traffic_client(client, server, port, bulk_bytes, Duration::from_secs(120));
    assert!(
        report.refused(),
        "traffic {} -> {}: the refusal was not seen: {report}",
        client.name,
        server.name
    );
    report
}

/// `traffic.py client` in `client` against `server`; its parsed summary. Panics unless it
/// exits 0 (every transfer went right) within `timeout`.
fn traffic_client(
    client: &Pod,
    server: &Pod,
    port: u16,
    bulk_bytes: u64,
    timeout: Duration,
) -> ClientReport {
    let mut cmd = client.exec("python3");
    cmd.arg(traffic_script()).args([
        "client",
        "--addr",
        &server.ip,
        "--port",
        &port.to_string(),
        "--bulk-bytes",
        &bulk_bytes.to_string(),
        "--slow-bytes",
        "0",
        "--timeout",
        &timeout.as_secs().to_string(),
    ]);
    let r = run_with_timeout(&mut cmd, timeout + Duration::from_secs(10));
    let what = format!("traffic {} -> {} ({})", client.name, server.name, server.ip);
    assert!(r.success(), "{what} failed: {}", r.describe());
    let line = r.stdout.trim();
    ClientReport(
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{what}: the summary is not JSON ({e}): {line}")),
    )
}

// ------------------------------------------------------------------------------------------
// Small traffic from a pod, and a network fit for exact captures

/// A TCP sink: `SINK ADDR PORT` reads every connection to its end, then closes it.
const SINK: &str = "import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
print('READY', flush=True)
def drain(c):
    while c.recv(65536):
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
";
/// A steady stream: `STREAM ADDR PORT SECONDS` sends 1000 bytes every 10 ms for SECONDS on
/// one connection, closes it cleanly (FIN both ways) and prints DONE.
const STREAM: &str = "import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    c.sendall(b'x' * 1000)
    time.sleep(0.01)
c.shutdown(socket.SHUT_WR)
c.recv(1)
c.close()
print('DONE', flush=True)
";
/// SYNs to a port where nothing listens: `SYNS ADDR PORT SECONDS` connects at once, then
/// every 100 ms until SECONDS have passed (0: once), printing `refused` for each refusal.
const SYNS: &str = "import socket, sys, time
end = time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
    except ConnectionRefusedError:
        print('refused', flush=True)
    except OSError:
        pass
    if time.monotonic() >= end:
        break
    time.sleep(0.1)
";

impl Pod {
    /// The name of the pod's network namespace under `/run/netns` (`cni-…`), for `ip netns
    /// exec` (`common::traffic::add_loss`, `topology::offloads_off`). Panics for a
    /// host-network pod.
    pub fn netns_name(&self) -> String {
        self.netns_path
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| {
                panic!("{}: a host-network pod has no namespace of its own", self.name)
            })
    }

    /// Python `script` with `args` in the pod's network namespace, in the background.
    fn python(&self, what: &str, script: &str, args: &[&str]) -> Spawned {
        let mut cmd = self.exec("python3");
        cmd.arg("-c").arg(script).args(args);
        Spawned::start(&format!("{what} in {}", self.name), &mut cmd)
    }
}

/// A TCP sink in `server`, on its address and `port`: it reads every connection to its end.
/// Returns once it listens; killed on drop.
pub fn serve_sink(server: &Pod, port: u16) -> Spawned {
    let mut sink = server.python("sink", SINK, &[&server.ip, &port.to_string()]);
    sink.wait_for_output("READY", true, Duration::from_secs(20));
    sink
}

/// A steady stream from `client` to [`serve_sink`] in `server` on `port`: 1000 bytes every
/// 10 ms for `seconds` on one connection, then a clean close and `DONE` on stdout.
pub fn stream_to_sink(client: &Pod, server: &Pod, port: u16, seconds: u64) -> Spawned {
    let args = [server.ip.as_str(), &port.to_string(), &seconds.to_string()];
    client.python("stream", STREAM, &args)
}

/// SYNs from `client` to `server`'s `port`, where nothing may listen: one at once, then one
/// every 100 ms until `seconds` have passed; `refused` on stdout for each refusal.
pub fn send_syns(client: &Pod, server: &Pod, port: u16, seconds: f64) -> Spawned {
    let args = [server.ip.as_str(), &port.to_string(), &seconds.to_string()];
    client.python("SYNs", SYNS, &args)
}

impl super::CriNode {
    /// TSO, GSO and GRO off on the pod's `eth0` and on its host-side interface, so that
    /// captures hold the segments as TCP sent them.
    pub fn offloads_off(&self, pod: &Pod) {
        offloads_off(&pod.netns_name(), "eth0");
        offloads_off(self.node(), &pod.host_interface());
    }

    /// Permanent neighbour entries between `pods` (and the node's bridge address, with
    /// `with_node`): no ARP at all, so no frame crosses an interface seconds after the traffic
    /// (a stale entry's probes would, and a capture stopped before them would miss them).
    pub fn pin_neighbours(&self, pods: &[&Pod], with_node: bool) {
        // The MAC address in `ip -o link show dev DEV` (not /sys: nsenter keeps this process's).
        let mac = |mut ip: Command, dev: &str| {
            let out = run_ok(ip.args(["-o", "link", "show", "dev", dev]), COMMAND_TIMEOUT);
            let mut words = out.split_whitespace().skip_while(|w| *w != "link/ether");
            words.nth(1).unwrap_or_else(|| panic!("no MAC address in {out:?}")).to_string()
        };
        let node_ip = || netns_exec(self.node(), "ip");
        // Each end: `ip` run where it is, its interface, its address and its MAC address.
        type IpThere<'a> = Box<dyn Fn() -> Command + 'a>;
        let mut ends: Vec<(IpThere, &str, String, String)> = Vec::new();
        for p in pods {
            ends.push((Box::new(|| p.exec("ip")), "eth0", p.ip.clone(), mac(p.exec("ip"), "eth0")));
        }
        if with_node {
            let bridge = mac(node_ip(), super::BRIDGE);
            ends.push((Box::new(node_ip), super::BRIDGE, self.node_address(), bridge));
        }
        for (i, (ip, dev, _, _)) in ends.iter().enumerate() {
            for (_, _, address, mac) in ends.iter().enumerate().filter(|e| e.0 != i).map(|e| e.1) {
                let args =
                    ["neigh", "replace", address, "lladdr", mac, "dev", dev, "nud", "permanent"];
                run_ok(ip().args(args), COMMAND_TIMEOUT);
            }
        }
    }
}
