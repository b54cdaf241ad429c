//! ROOT: the CRI harness (`common::cri`) itself, on Debian's containerd 1.6: what the pod
//! attribution tests build on. One test, in steps that each print what they measured:
//!
//! - two pods in two namespaces (a Deployment's and a StatefulSet's) and a host-network pod:
//!   each non-host pod gets its own address in the node's subnet, its own network namespace
//!   without a default route, and a host-side veth in the node namespace; PodSandboxStatus
//!   (verbose) returns their metadata, the kubelet's labels and theirs, the address, and the
//!   network namespace's path, which a process started with `ip netns exec NODE` (as the host
//!   under test is) can enter;
//! - real TCP between the two pods (`tests/traffic.py`), through the node: the byte counters
//!   of both host-side veths grow by at least the bulk transfer;
//! - with a `host-local` range of two addresses, a deleted pod's address goes to the next pod,
//!   and the deleted pod's network namespace and veth are gone;
//! - containerd stopped: CRI does not answer, the pods' pause processes go on; started again
//!   with the same config and state: it lists the same pods, ready, with the same addresses,
//!   and TCP between them works;
//! - dropped: no sandbox process, shim, cgroup, mount, pod network namespace, node namespace
//!   or directory is left.
//!
//! Expected values come from what the test asked for (names, labels), the configured range,
//! and the kernel (interfaces, byte counters, /proc), not from the runtime's word alone.
//! Skipped (loudly) without root, unless WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;

use common::cri::*;
use common::topology::{link_stat, netns_exec};
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The range of pod addresses: two, so that the third pod gets the first one's back.
const POD_ADDRESSES: u8 = 2;
/// The traffic server's base port in the server pod.
const PORT: u16 = 5001;
/// Bulk upload per traffic run (half as much comes back): enough to show in byte counters.
const BULK_BYTES: u64 = 1_000_000;
/// Bound on a command in a namespace.
const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn containerd_runs_pods_as_the_kubelet_asks() {
    if !require_root("containerd_runs_pods_as_the_kubelet_asks") {
        return;
    }
    require_tools(&["python3", "nsenter"]);
    let started = Instant::now();
    let mut node =
        CriNode::start_with(CriOptions { pod_addresses: POD_ADDRESSES, ..CriOptions::default() });
    eprintln!(
        "containerd ready in {:.1?} (snapshotter {}, node namespace {}, socket {})",
        started.elapsed(),
        node.snapshotter(),
        node.node(),
        node.socket().display()
    );

    // 1. Pods in two namespaces, and one on the host network.
    let t = Instant::now();
    let web_spec = PodSpec::deployment("shop", "web", "7d9f8b6c4", "x2x9z");
    let db_spec = PodSpec::stateful_set("data", "db", 0);
    let web = node.run(&web_spec);
    let db = node.run(&db_spec);
    let agent_spec = PodSpec::daemon_set("kube-system", "agent", "q8w7e").host_network();
    let agent = node.run(&agent_spec);
    eprintln!(
        "3 pods in {:.1?}: {} {} ({}), {} {} ({}), {} (host network)",
        t.elapsed(),
        web.name,
        web.ip,
        web.id,
        db.name,
        db.ip,
        db.id,
        agent.name
    );
    let addresses = pod_addresses();
    for (spec, pod) in [(&web_spec, &web), (&db_spec, &db)] {
        assert!(addresses.contains(&pod.ip), "{}: {} is outside {addresses:?}", pod.name, pod.ip);
        check_status(&node, spec, pod);
        check_network(&node, pod);
    }
    assert_ne!(web.ip, db.ip, "two pods got the same address");
    assert_ne!(web.netns_path, db.netns_path, "two pods share a network namespace");
    check_status(&node, &agent_spec, &agent);
    assert!(agent.ip.is_empty() && agent.netns_path.is_none(), "host-network pod: {agent:?}");
    let agent_addr = run_ok(agent.exec("ip").args(["-o", "-4", "addr", "show"]), TIMEOUT);
    assert!(
        agent_addr.contains(&format!("{}/24", node.node_address())),
        "a host-network pod should see the node's address:\n{agent_addr}"
    );
    let listed: Vec<String> = node.list().into_iter().map(|s| s.id).collect();
    for pod in [&web, &db, &agent] {
        assert!(listed.contains(&pod.id), "ListPodSandbox lacks {}: {listed:?}", pod.name);
    }

    // 2. Real TCP between the pods, through the node namespace.
    let ports = [web.host_interface(), db.host_interface()];
    eprintln!("host-side interfaces: {} -> {}, {} -> {}", web.name, ports[0], db.name, ports[1]);
    assert!(ports.iter().all(|p| p.starts_with("veth")), "bridge CNI veths: {ports:?}");
    traffic_through_node(&node, &web, &db, &ports, "first");

    // 3. A deleted pod's address goes to the next pod.
    let t = Instant::now();
    let (old_ip, old_netns, old_port) = (web.ip.clone(), web.netns_path.clone(), ports[0].clone());
    node.stop_and_remove(&web.id);
    let deleted_in = t.elapsed();
    let old_netns = old_netns.expect("a pod's network namespace");
    assert!(!old_netns.exists(), "{} outlived its pod", old_netns.display());
    let links = run_ok(Command::new("ip").args(["-n", node.node(), "-o", "link"]), TIMEOUT);
    assert!(!links.contains(&format!(" {old_port}@")), "{old_port} outlived its pod:\n{links}");
    let listed: Vec<String> = node.list().into_iter().map(|s| s.id).collect();
    assert!(!listed.contains(&web.id), "ListPodSandbox still has the deleted pod: {listed:?}");
    let t = Instant::now();
    let web2_spec = PodSpec::deployment("shop", "web", "5f6b7c8d9", "k4m2n");
    let web2 = node.run(&web2_spec);
    eprintln!(
        "deleted {} ({old_ip}) in {deleted_in:.1?}; {} got {} in {:.1?}",
        web.name,
        web2.name,
        web2.ip,
        t.elapsed()
    );
    assert_eq!(web2.ip, old_ip, "with {POD_ADDRESSES} addresses the new pod reuses the old one's");
    assert_ne!(web2.uid, web.uid);
    check_status(&node, &web2_spec, &web2);
    check_network(&node, &web2);

    // 4. The runtime stopped, then started again.
    let t = Instant::now();
    node.stop_runtime();
    let stopped_in = t.elapsed();
    assert!(
        node.rpc(|mut c| async move { c.version(k8s_cri::v1::VersionRequest::default()).await })
            .is_err()
    );
    for pod in [&web2, &db, &agent] {
        assert!(
            Path::new(&format!("/proc/{}", pod.pid)).exists(),
            "{}'s pause process {} died with the runtime",
            pod.name,
            pod.pid
        );
    }
    let t = Instant::now();
    node.start_runtime();
    eprintln!("containerd stopped in {stopped_in:.1?}, ready again in {:.1?}", t.elapsed());
    let listed: BTreeMap<String, bool> = node
        .list()
        .into_iter()
        .map(|s| (s.id, s.state == k8s_cri::v1::PodSandboxState::SandboxReady as i32))
        .collect();
    for pod in [&web2, &db, &agent] {
        assert_eq!(listed.get(&pod.id), Some(&true), "after the restart: {listed:?}");
    }
    assert_eq!(listed.len(), 3, "after the restart: {listed:?}");
    check_status(&node, &web2_spec, &web2);
    check_status(&node, &db_spec, &db);
    check_status(&node, &agent_spec, &agent);
    let ports = [web2.host_interface(), db.host_interface()];
    traffic_through_node(&node, &web2, &db, &ports, "after the restart");

    // 5. Teardown leaves nothing behind.
    let dir = node.dir().to_path_buf();
    let node_ns = node.node().to_string();
    let netns: Vec<_> = [&web2, &db].iter().filter_map(|p| p.netns_path.clone()).collect();
    let pids: Vec<u32> = [&web2, &db, &agent].iter().map(|p| p.pid).collect();
    let t = Instant::now();
    drop(node);
    eprintln!("torn down in {:.1?}", t.elapsed());
    assert!(!dir.exists(), "{} is left", dir.display());
    for path in &netns {
        assert!(!path.exists(), "{} is left", path.display());
    }
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pause process {pid} is left");
    }
    let namespaces = run_ok(Command::new("ip").args(["netns", "list"]), TIMEOUT);
    assert!(!namespaces.contains(&node_ns), "{node_ns} is left:\n{namespaces}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&dir.to_string_lossy().into_owned()), "mounts are left:\n{mounts}");
    let left = processes_naming(&dir.to_string_lossy());
    assert!(left.is_empty(), "processes are left: {left:?}");
    let name = dir.file_name().expect("a name").to_string_lossy().into_owned();
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|h| h.path().join(&name)).filter(|p| p.exists()).collect())
        .unwrap_or_default();
    assert!(cgroups.is_empty(), "cgroups are left: {cgroups:?}");
    eprintln!("whole test: {:.1?}", started.elapsed());
}

/// The addresses the configured `host-local` range hands out.
fn pod_addresses() -> Vec<String> {
    let subnet = CriOptions::default().subnet;
    (0..POD_ADDRESSES).map(|i| format!("{subnet}.{}", 10 + i)).collect()
}

/// PodSandboxStatus of `pod` against what was asked for (`spec`) and what `run` returned.
fn check_status(node: &CriNode, spec: &PodSpec, pod: &Pod) {
    let status = node.status(&pod.id);
    let meta = status.metadata();
    assert_eq!(
        (meta.namespace.as_str(), meta.name.as_str(), meta.uid.as_str(), meta.attempt),
        (spec.namespace.as_str(), spec.name.as_str(), spec.uid.as_str(), spec.attempt),
        "metadata of {}",
        pod.name
    );
    assert!(status.ready(), "{} is not ready: {status:?}", pod.name);
    assert_eq!(status.labels(), spec.sandbox_labels(), "labels of {}", pod.name);
    assert_eq!(status.labels()["io.kubernetes.pod.namespace"], spec.namespace);
    assert_eq!(status.ip(), pod.ip, "address of {}", pod.name);
    assert_eq!(status.netns_path(), pod.netns_path, "network namespace of {}", pod.name);
    assert_eq!(status.pid(), Some(pod.pid), "pause process of {}", pod.name);
}

/// The pod's network as the kernel shows it: its address on `eth0`, no default route, and its
/// network namespace reachable by path from a process started with `ip netns exec NODE`.
fn check_network(node: &CriNode, pod: &Pod) {
    let addr = run_ok(pod.exec("ip").args(["-o", "-4", "addr", "show", "eth0"]), TIMEOUT);
    assert!(addr.contains(&format!("inet {}/24", pod.ip)), "{}'s eth0: {addr}", pod.name);
    let routes = run_ok(pod.exec("ip").args(["route", "show", "default"]), TIMEOUT);
    assert!(routes.trim().is_empty(), "{} has a default route: {routes}", pod.name);
    let path = pod.netns_path.as_ref().expect("a pod's network namespace");
    let mut cmd = netns_exec(node.node(), "nsenter");
    cmd.arg(format!("--net={}", path.display())).args(["ip", "-o", "-4", "addr", "show", "eth0"]);
    let seen = run_ok(&mut cmd, TIMEOUT);
    assert!(seen.contains(&pod.ip), "from `ip netns exec {}`: {seen}", node.node());
}

/// TCP from `client` to `server` (bulk, refused, abort, linger0); the node-side veths of both
/// (`ports`) carry at least the bulk bytes each way.
fn traffic_through_node(
    node: &CriNode,
    client: &Pod,
    server: &Pod,
    ports: &[String; 2],
    when: &str,
) {
    let bytes = |dev: &str| {
        link_stat(node.node(), dev, "rx_bytes") + link_stat(node.node(), dev, "tx_bytes")
    };
    let before = [bytes(&ports[0]), bytes(&ports[1])];
    let t = Instant::now();
    let _server = serve_traffic(server, PORT);
    let report = run_traffic(client, server, PORT, BULK_BYTES);
    let grown = [bytes(&ports[0]) - before[0], bytes(&ports[1]) - before[1]];
    eprintln!(
        "TCP {when}: {} -> {} in {:.1?}, bytes through {}: {}, {}: {}; {report}",
        client.name,
        server.name,
        t.elapsed(),
        ports[0],
        grown[0],
        ports[1],
        grown[1]
    );
    for (port, grown) in ports.iter().zip(grown) {
        assert!(grown >= BULK_BYTES * 3 / 2, "{when}: only {grown} bytes through {port}");
    }
}

/// The pids of processes whose command line contains `needle`, this one excepted.
fn processes_naming(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .map(|p| p.file_name().to_string_lossy().into_owned())
                .filter(|pid| *pid != me && pid.bytes().all(|b| b.is_ascii_digit()))
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                })
                .collect()
        })
        .unwrap_or_default()
}
