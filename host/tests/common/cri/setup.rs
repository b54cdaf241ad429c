//! Making a [`super::CriNode`]'s pieces before containerd starts: the checks that the runtime,
//! runc, the CNI plugins and catatonit are installed, the choice of snapshotter, the node's
//! bridge, containerd's config and the CNI network config, and the sandbox image (catatonit,
//! through podman into a `docker-archive`, without a registry). See the parent module's
//! header for why each setting is what it is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{
    BRIDGE, CATATONIT, CNI_BIN_DIR, COMMAND_TIMEOUT, CONTAINERD, CriNode, PREFIX, RANGE_START,
    RUNC, SANDBOX_IMAGE,
};
use crate::common::process::{next_seq, require_tools, run_ok, run_with_timeout};
use crate::common::topology::{add_quiet_bridge, ip};

impl CriNode {
    /// The pods' cgroup parent (under the root of every hierarchy): the directory's name.
    pub(super) fn cgroup_name(&self) -> String {
        self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The bridge in the node namespace, quiet (no STP, no multicast snooping: see
    /// `topology::BridgeTopology`), with the node's address. The CNI plugin finds it and
    /// attaches the pods' veths to it.
    pub(super) fn make_bridge(&self) {
        let node = self.node.name.as_str();
        add_quiet_bridge(node, BRIDGE);
        ip(&["-n", node, "addr", "add", &format!("{}/24", self.node_address()), "dev", BRIDGE]);
    }

    /// containerd's config and the CNI network config (named `network`).
    pub(super) fn write_config(&self, network: &str) {
        let d = self.dir.display();
        let subnet = &self.options.subnet;
        let last = u32::from(RANGE_START) + u32::from(self.options.pod_addresses) - 1;
        let cni_dir = self.dir.join("cni");
        std::fs::create_dir_all(&cni_dir).expect("create the CNI config dir");
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [{
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": false,
                "isDefaultGateway": false,
                "ipMasq": false,
                "hairpinMode": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{
                        "subnet": self.subnet(),
                        "rangeStart": format!("{subnet}.{RANGE_START}"),
                        "rangeEnd": format!("{subnet}.{last}"),
                    }]],
                    "dataDir": self.dir.join("ipam"),
                },
            }, {
                "type": "tuning",
                "sysctl": {
                    "net.ipv6.conf.all.disable_ipv6": "1",
                    "net.ipv6.conf.default.disable_ipv6": "1",
                },
            }],
        });
        std::fs::write(cni_dir.join("10-wasmtap.conflist"), conflist.to_string())
            .expect("write the CNI config");
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
oom_score = 0
# Snapshotters that cannot work here: they would only log their failure at every start.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: without this runc fails to start any sandbox.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # The pods' namespaces under /var/run/netns (a shared mount): seen by every mount namespace.
  netns_mounts_under_state_dir = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        # runc's state, by default under /run/containerd/runc.
        Root = "{d}/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni}"
    max_conf_num = 1
"#,
            snapshotter = self.snapshotter,
            cni = cni_dir.display(),
        );
        std::fs::write(&self.config, config).expect("write containerd's config");
    }

    /// The sandbox image as a `docker-archive` in the directory: a rootfs of `catatonit`,
    /// imported by podman (its storage in the directory too) with catatonit in pause mode as
    /// the entrypoint, and saved. Returns the archive's path.
    pub(super) fn make_sandbox_image(&self) -> PathBuf {
        let dir = self.dir.join("image");
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).expect("create the image's rootfs");
        std::fs::copy(CATATONIT, rootfs.join("catatonit")).expect("copy catatonit");
        let layer = dir.join("rootfs.tar");
        run_ok(
            Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&layer).arg("."),
            COMMAND_TIMEOUT,
        );
        let podman = |args: &[&str]| {
            let mut c = Command::new("podman");
            c.arg("--root")
                .arg(dir.join("podman/root"))
                .arg("--runroot")
                .arg(dir.join("podman/run"))
                .arg("--tmpdir")
                .arg(dir.join("podman/tmp"))
                .args(["--storage-driver", "vfs", "--events-backend", "none"])
                .args(args);
            run_ok(&mut c, COMMAND_TIMEOUT);
        };
        let archive = dir.join("pause.tar");
        let (layer, archive_arg) = (layer.to_string_lossy(), archive.to_string_lossy());
        podman(&[
            "import",
            "--change",
            r#"ENTRYPOINT ["/catatonit", "-P"]"#,
            &layer,
            SANDBOX_IMAGE,
        ]);
        podman(&["save", "--format", "docker-archive", "-o", &archive_arg, SANDBOX_IMAGE]);
        archive
    }
}

/// Panics with an install hint unless the runtime, its tools, the CNI plugins and the pause
/// binary are there.
pub(super) fn check_installed() {
    require_tools(&["ip", "nsenter", "ctr", "podman", "tar", "mount", "umount"]);
    let shim = "/usr/bin/containerd-shim-runc-v2";
    for file in [CONTAINERD, RUNC, CATATONIT, shim] {
        assert!(
            Path::new(file).is_file(),
            "{file} is missing: apt-get install containerd runc catatonit (see scripts/setup)"
        );
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        let path = Path::new(CNI_BIN_DIR).join(plugin);
        assert!(
            path.is_file(),
            "{} is missing: apt-get install containernetworking-plugins",
            path.display()
        );
    }
}

/// `overlayfs` if an overlay mounts in the temporary directory's filesystem (it does on ext4,
/// not on every filesystem a temp dir can be on), else `native`. Tried once per process.
pub(super) fn snapshotter() -> &'static str {
    static CHOSEN: OnceLock<&'static str> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "{PREFIX}{}-overlay-probe-{}",
            std::process::id(),
            next_seq()
        ));
        let [lower, upper, work, merged] =
            ["lower", "upper", "work", "merged"].map(|d| dir.join(d));
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir_all(d).expect("create the overlay probe's dirs");
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let mounted = run_with_timeout(
            Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(&merged),
            COMMAND_TIMEOUT,
        )
        .success();
        if mounted {
            let _ = run_with_timeout(Command::new("umount").arg(&merged), COMMAND_TIMEOUT);
        }
        let _ = std::fs::remove_dir_all(&dir);
        if mounted { "overlayfs" } else { "native" }
    })
}
