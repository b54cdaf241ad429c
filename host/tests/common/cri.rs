//! A Kubernetes node's container runtime for the tests ([`CriNode`]): Debian's containerd 1.6
//! with its CRI plugin, driven through CRI (`runtime.v1`, the `k8s-cri` crate over the unix
//! socket) the way the kubelet drives it: pod sandboxes created with the kubelet's metadata and
//! labels ([`PodSpec`], [`Pod`]), their status as the runtime answers it ([`SandboxStatus`]),
//! stopped and removed, and the runtime itself stopped and started again.
//!
//! Everything lives in places the test makes:
//! - a node network namespace (a [`Netns`]) in which containerd runs, entered with `nsenter
//!   --net` only, so that containerd stays in this process's mount namespace: the pods' network
//!   namespaces it bind-mounts under `/run/netns` (a shared mount) are visible to the test and to
//!   a host under test started later with `ip netns exec`, which `ip netns exec NODE containerd`
//!   (a mount namespace of its own, a slave of ours) would hide. The CNI `bridge` plugin runs in
//!   that namespace, so the bridge ([`BRIDGE`], made beforehand, quiet, with the node's address)
//!   and the pods' host-side veths are there, where a host under test captures `-i 'veth*'`
//!   and sees nothing else. The pods have no default route, the bridge is no gateway and
//!   nothing is masqueraded: traffic stays between the pods and the node. The pods' IPv6 goes
//!   off in their CNI ADD (the `tuning` plugin after `bridge`), so a pod sends nothing of its
//!   own after RunPodSandbox returns: the two or three IPv6 packets (MLD report, router
//!   solicitation) it sends while its interface comes up cross the bridge before that.
//! - a temporary directory `wasmtap-test-cri-<pid>-<seq>` holding containerd's config, root,
//!   state, sockets, `opt` directory and CNI config, the `host-local` address store (a range of
//!   [`CriOptions::pod_addresses`] addresses: a small one makes a deleted pod's address go to
//!   the next pod), and the sandbox image, made without a registry: the static `catatonit` in
//!   pause mode, `podman import`ed into a podman storage inside the directory, `podman save`d,
//!   and `ctr images import`ed. Its name is also the pods' cgroup parent and the CNI network's
//!   name, so that what a crashed run left behind can be found.
//!
//! Facts about these machines that the config follows: runc is in `/usr/sbin` (named as the
//! runtime's `BinaryName`), there is no systemd (`SystemdCgroup = false`), and root lacks
//! `CAP_SYS_RESOURCE`, so a sandbox fails to start ("can't get final child's PID from pipe")
//! unless `restrict_oom_score_adj = true`.
//!
//! As everywhere in `common`, what is started here is stopped on drop, also when a test panics
//! (every sandbox stopped and removed, containerd stopped, its shims and pods killed, every mount
//! under the directory and every pod network namespace unmounted, the directory removed, the
//! node namespace deleted), every wait is bounded, and what an earlier test process that died
//! left behind is removed by the next one. Outside the test's own places, containerd 1.6 writes
//! only its shims' sockets (`/run/containerd/s/`) and libcni its result cache
//! (`/var/lib/cni/results/`): both are removed when a sandbox is, and the cleanup of a crashed
//! run removes those of its sandboxes.

//!
//! In a test (the pods, their specs and the traffic helpers are in [`pods`], the making of the
//! node's pieces in `setup`, the teardown in `cleanup`):
//!
//! ```text
//! let node = CriNode::start_with(CriOptions { pod_addresses: 4, ..CriOptions::default() });
//! let web = node.run(&PodSpec::deployment("shop", "web", "7d9f8b6c4", "x2x9z"));
//! let db = node.run(&PodSpec::stateful_set("data", "db", 0));
//! let socket = node.socket().display().to_string();
//! let host = LiveHost::start("host", node.node(), &["-i", "veth*", "--cri-socket", &socket]);
//! let _server = serve_traffic(&db, 5001);
//! run_traffic(&web, &db, 5001, 100_000);
//! node.status(&web.id).labels();   // the runtime's own answer
//! node.stop_and_remove(&web.id);
//! ```

mod cleanup;
pub mod pods;
mod setup;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint, Uri};

use super::process::{Spawned, next_seq, run_ok};
use super::topology::Netns;
use cleanup::{clean_up, remove_stale, sandbox_ids};
pub use pods::*;
use setup::{check_installed, snapshotter};

/// Debian's containerd 1.6 (package `containerd`); its CRI plugin is built in and on.
pub const CONTAINERD: &str = "/usr/bin/containerd";
/// The OCI runtime, named in the config: not on containerd's default `PATH` here.
pub const RUNC: &str = "/usr/sbin/runc";
/// The CNI plugins of Debian's `containernetworking-plugins`.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The pause process of the sandbox image: static, so a rootfs of this one file is enough.
pub const CATATONIT: &str = "/usr/bin/catatonit";
/// The sandbox image, imported from an archive the harness makes (no registry is reachable).
pub const SANDBOX_IMAGE: &str = "localhost/wasmtap-test-pause:1";
/// The bridge in the node namespace that the CNI `bridge` plugin attaches the pods to.
pub const BRIDGE: &str = "wtbr0";
/// The containerd namespace of the CRI plugin.
const K8S_NAMESPACE: &str = "k8s.io";
/// The prefix of the temporary directory, the cgroup parent and the CNI network of a harness:
/// `<prefix><pid>-<seq>`, so that the leftovers of a dead test process can be told by its pid.
const PREFIX: &str = "wasmtap-test-cri-";
/// The first pod address's last octet: below it, the node's address (`.1`) and room for more.
const RANGE_START: u8 = 10;

/// Bound on one CRI call. RunPodSandbox (a netns, the CNI plugins, runc) takes well under a
/// second here; the margin covers a loaded machine.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on containerd's start until both CRI conditions (runtime, network) are ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd gets to exit on SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one helper command (ip, ctr, podman, mount).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long teardown keeps trying to empty and remove the pods' cgroups.
const CGROUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Where libcni caches its results (containerd 1.6 sets no cache dir of its own).
const CNI_CACHE: &str = "/var/lib/cni/results";
/// Where containerd 1.6's shims put their sockets, whatever the config says.
const SHIM_SOCKETS: &str = "/run/containerd/s";
/// Lines of containerd's log quoted in a failure message.
const LOG_TAIL_LINES: usize = 40;

/// Choices of a [`CriNode`].
#[derive(Debug, Clone)]
pub struct CriOptions {
    /// The first three octets of the pods' /24, e.g. "10.89.0": the node has `.1` on the
    /// bridge, the pods get addresses from `.10` on. Every node is in its own namespace, so
    /// two nodes may use the same subnet.
    pub subnet: String,
    /// How many addresses `host-local` hands out (1..=240). It hands them out in turn and
    /// wraps around, so with N addresses a deleted pod's address goes to a new pod once the N
    /// are used.
    pub pod_addresses: u8,
}

impl Default for CriOptions {
    fn default() -> CriOptions {
        CriOptions { subnet: "10.89.0".into(), pod_addresses: 100 }
    }
}

/// containerd with the CRI plugin in a node namespace of its own; see the module header.
pub struct CriNode {
    dir: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    options: CriOptions,
    snapshotter: &'static str,
    containerd: Option<Spawned>,
    /// The logs of containerd's earlier runs (before [`CriNode::stop_runtime`]).
    past_logs: String,
    rt: tokio::runtime::Runtime,
    // Last: dropped after `Drop::drop` has stopped everything that runs inside.
    node: Netns,
}

impl CriNode {
    /// A node with the default [`CriOptions`].
    pub fn start() -> CriNode {
        CriNode::start_with(CriOptions::default())
    }

    /// Makes the node namespace, the bridge, the config and the sandbox image, starts
    /// containerd and returns once its CRI plugin reports the runtime and the network ready.
    pub fn start_with(options: CriOptions) -> CriNode {
        check_installed();
        assert!(
            (1..=240).contains(&options.pod_addresses),
            "pod_addresses must be 1..=240, not {}",
            options.pod_addresses
        );
        remove_stale();
        let node = Netns::new("crinode");
        let name = format!("{PREFIX}{}-{}", std::process::id(), next_seq());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the CRI client");
        let mut node = CriNode {
            config: dir.join("config.toml"),
            socket: dir.join("containerd.sock"),
            dir,
            options,
            snapshotter: snapshotter(),
            containerd: None,
            past_logs: String::new(),
            rt,
            node,
        };
        // From here on, Drop removes whatever was made, also if a step below fails.
        node.make_bridge();
        node.write_config(&name);
        let image = node.make_sandbox_image();
        node.start_runtime();
        run_ok(
            Command::new("ctr")
                .arg("--address")
                .arg(&node.socket)
                .args(["--namespace", K8S_NAMESPACE, "images", "import", "--snapshotter"])
                .arg(node.snapshotter)
                .arg(&image),
            COMMAND_TIMEOUT,
        );
        node
    }

    /// The CRI socket (also containerd's API socket).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The node network namespace's name (for `ip netns exec`, `LiveHost::start`).
    pub fn node(&self) -> &str {
        &self.node.name
    }

    /// The node's address on the bridge, in the pods' subnet.
    pub fn node_address(&self) -> String {
        format!("{}.1", self.options.subnet)
    }

    /// The pods' subnet, e.g. "10.89.0.0/24".
    pub fn subnet(&self) -> String {
        format!("{}.0/24", self.options.subnet)
    }

    /// The snapshotter in use: `overlayfs` where an overlay mounts in the temporary directory,
    /// else `native`.
    pub fn snapshotter(&self) -> &str {
        self.snapshotter
    }

    /// The temporary directory that holds the runtime's config, state and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's log: its earlier runs', then the current one's.
    pub fn log(&self) -> String {
        let current = self.containerd.as_ref().map(Spawned::stderr).unwrap_or_default();
        format!("{}{current}", self.past_logs)
    }

    /// The last lines of [`CriNode::log`], for assertion messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    // --------------------------------------------------------------------------------------
    // CRI calls

    /// Runs `call` on a client connected afresh to the socket (a runtime that restarted is
    /// simply connected again), bounded by [`RPC_TIMEOUT`]; a connection failure or the
    /// timeout comes back as a `Status` (`unavailable`, `deadline_exceeded`).
    pub fn rpc<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let socket = self.socket.clone();
        self.rt.block_on(async move {
            let work = async move {
                let client = connect(socket).await?;
                call(client).await.map(tonic::Response::into_inner)
            };
            match tokio::time::timeout(RPC_TIMEOUT, work).await {
                Ok(result) => result,
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {RPC_TIMEOUT:?}"
                ))),
            }
        })
    }

    /// Like [`CriNode::rpc`], panicking (with containerd's log) on an error.
    fn rpc_ok<T, F, Fut>(&self, what: &str, call: F) -> T
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.rpc(call).unwrap_or_else(|e| {
            panic!("CRI {what} failed: {e}\ncontainerd log (end):\n{}", self.log_tail())
        })
    }

    /// RunPodSandbox for `namespace/name` with the pod's own `labels`, as the kubelet makes a
    /// sandbox (see [`PodSpec::new`]).
    pub fn run_pod(&self, namespace: &str, name: &str, labels: &[(&str, &str)]) -> Pod {
        self.run(&PodSpec::new(namespace, name, labels))
    }

    /// RunPodSandbox as the kubelet calls it for `spec`: its metadata, its labels plus the
    /// kubelet's, the kubelet's annotations, hostname, cgroup parent, and namespace options
    /// (network POD, or NODE with host network; pid CONTAINER; ipc POD). Returns the pod as
    /// PodSandboxStatus then describes it; panics unless it is ready (with an address unless
    /// host-network).
    pub fn run(&self, spec: &PodSpec) -> Pod {
        let network =
            if spec.host_network { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod };
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: spec.name.clone(),
                uid: spec.uid.clone(),
                namespace: spec.namespace.clone(),
                attempt: spec.attempt,
            }),
            // The kubelet names only a pod with a UTS namespace of its own.
            hostname: if spec.host_network { String::new() } else { spec.name.clone() },
            labels: spec.sandbox_labels().into_iter().collect(),
            annotations: [
                ("kubernetes.io/config.seen", "2026-01-01T00:00:00.000000000Z"),
                ("kubernetes.io/config.source", "api"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}", self.cgroup_name()),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: network as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let what = format!("RunPodSandbox {}/{}", spec.namespace, spec.name);
        let started = self.rpc_ok(&what, |mut c| async move {
            c.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
        });
        let id = started.pod_sandbox_id;
        let status = self.status(&id);
        let netns_path = status.netns_path();
        if let Some(path) = &netns_path {
            // For the cleanup of a run that dies before it removes this pod.
            self.record_netns(path);
        }
        let pod = Pod {
            id: id.clone(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            uid: spec.uid.clone(),
            labels: status.labels(),
            ip: status.ip(),
            netns_path,
            pid: status.pid().unwrap_or(0),
            node_ns: self.node.name.clone(),
        };
        assert!(status.ready(), "{what}: sandbox {id} is not ready: {status:?}");
        assert!(
            spec.host_network || (!pod.ip.is_empty() && pod.netns_path.is_some()),
            "{what}: sandbox {id} has no address or network namespace: {status:?}"
        );
        pod
    }

    /// StopPodSandbox then RemovePodSandbox, as the kubelet deletes a pod: its pause process,
    /// network (CNI DEL: the address goes back to `host-local`) and network namespace go.
    pub fn stop_and_remove(&self, id: &str) {
        let sandbox = id.to_string();
        self.rpc_ok(&format!("StopPodSandbox {id}"), |mut c| async move {
            c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sandbox }).await
        });
        let sandbox = id.to_string();
        self.rpc_ok(&format!("RemovePodSandbox {id}"), |mut c| async move {
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sandbox }).await
        });
    }

    /// PodSandboxStatus with `verbose`, as the runtime answers it.
    pub fn status(&self, id: &str) -> SandboxStatus {
        let sandbox = id.to_string();
        let resp = self.rpc_ok(&format!("PodSandboxStatus {id}"), |mut c| async move {
            c.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox,
                verbose: true,
            })
            .await
        });
        let info = resp.info.get("info").map_or(Value::Null, |text| {
            serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: info is not JSON ({e}): {text}"))
        });
        let status =
            resp.status.unwrap_or_else(|| panic!("PodSandboxStatus {id}: no status in the answer"));
        SandboxStatus { status, info }
    }

    /// ListPodSandbox, unfiltered: every sandbox the runtime knows, ready or not.
    pub fn list(&self) -> Vec<cri::PodSandbox> {
        self.rpc_ok("ListPodSandbox", |mut c| async move {
            c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await
        })
        .items
    }

    /// Whether the CRI plugin reports both the runtime and the network ready; `Err` when it
    /// does not answer.
    pub fn cri_ready(&self) -> Result<bool, tonic::Status> {
        let status =
            self.rpc(|mut c| async move { c.status(cri::StatusRequest { verbose: false }).await })?;
        let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
        let ready = |kind: &str| conditions.iter().any(|c| c.r#type == kind && c.status);
        Ok(ready("RuntimeReady") && ready("NetworkReady"))
    }

    // --------------------------------------------------------------------------------------
    // The runtime's process

    /// Whether containerd is running.
    pub fn runtime_running(&mut self) -> bool {
        self.containerd.as_mut().is_some_and(|c| c.try_status().is_none())
    }

    /// Starts containerd (again, with the same config and state: it recovers its sandboxes)
    /// in the node namespace; returns once CRI reports the runtime and the network ready.
    pub fn start_runtime(&mut self) {
        assert!(self.containerd.is_none(), "containerd is already running");
        if let Err(e) = self.spawn_runtime() {
            panic!("{e}:\n{}", self.log_tail());
        }
    }

    /// [`CriNode::start_runtime`], with an error instead of a panic (for Drop).
    fn spawn_runtime(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.node.name))
            .arg("--")
            .arg(CONTAINERD)
            .arg("--config")
            .arg(&self.config);
        self.containerd = Some(Spawned::start("containerd", &mut cmd));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let answer = self.cri_ready();
            if matches!(answer, Ok(true)) {
                return Ok(());
            }
            if let Some(status) = self.containerd.as_mut().and_then(Spawned::try_status) {
                return Err(format!("containerd exited ({status}) at start"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "containerd's CRI not ready within {START_TIMEOUT:?} (last: {answer:?})"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops containerd (SIGTERM; SIGKILL after [`STOP_TIMEOUT`]). The pods go on running:
    /// their shims outlive it, as on a node whose runtime restarts. Panics if it had to be
    /// killed.
    pub fn stop_runtime(&mut self) {
        let graceful = self.stop_containerd();
        assert!(graceful, "containerd did not exit within {STOP_TIMEOUT:?} of SIGTERM");
    }

    /// Stops containerd if it runs; false if it had to be killed.
    fn stop_containerd(&mut self) -> bool {
        let Some(mut containerd) = self.containerd.take() else {
            return true;
        };
        containerd.signal("TERM");
        let status = containerd.wait(STOP_TIMEOUT);
        self.past_logs.push_str(&containerd.stderr());
        status.is_some()
    }

    /// Appends a pod's network namespace to the list the cleanup of a crashed run reads.
    fn record_netns(&self, path: &Path) {
        use std::io::Write;
        let list = self.dir.join("netns.list");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&list)
            .unwrap_or_else(|e| panic!("open {}: {e}", list.display()));
        let _ = writeln!(f, "{}", path.display());
    }

    /// Stops and removes every sandbox the runtime knows, as the kubelet would (CNI DEL
    /// included), starting the runtime again if the test left it stopped with sandboxes in its
    /// state. Errors are reported, not raised: this runs in Drop, also after a panic.
    fn remove_all_sandboxes(&mut self) {
        if !self.runtime_running() {
            if sandbox_ids(&self.dir).is_empty() {
                return;
            }
            if let Some(dead) = self.containerd.take() {
                self.past_logs.push_str(&dead.stderr());
            }
            if let Err(e) = self.spawn_runtime() {
                eprintln!("CRI teardown: cannot start containerd to remove the sandboxes: {e}");
                return;
            }
        }
        let listed = self.rpc(|mut c| async move {
            c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await
        });
        let listed = match listed {
            Ok(listed) => listed,
            Err(e) => {
                eprintln!("CRI teardown: ListPodSandbox failed: {e}");
                return;
            }
        };
        for sandbox in listed.items {
            let id = sandbox.id.clone();
            let stopped = self.rpc(|mut c| async move {
                c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id }).await
            });
            let id = sandbox.id.clone();
            let removed = self.rpc(|mut c| async move {
                c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }).await
            });
            if let Err(e) = stopped.and(removed) {
                eprintln!("CRI teardown: removing sandbox {}: {e}", sandbox.id);
            }
        }
    }
}

impl Drop for CriNode {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("containerd log (end):\n{}", self.log_tail());
        }
        self.remove_all_sandboxes();
        if !self.stop_containerd() {
            eprintln!("CRI teardown: containerd had to be killed");
        }
        clean_up(&self.dir);
    }
}

/// A client of the runtime service over the unix socket at `socket`.
async fn connect(socket: PathBuf) -> Result<RuntimeServiceClient<Channel>, tonic::Status> {
    let unavailable = |e: &dyn std::fmt::Display| tonic::Status::unavailable(e.to_string());
    // The URI is a placeholder: the connector below opens the socket whatever it says.
    let channel = Endpoint::try_from("http://[::]:50051")
        .map_err(|e| unavailable(&e))?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| unavailable(&format!("{e}: {e:?}")))?;
    Ok(RuntimeServiceClient::new(channel))
}
