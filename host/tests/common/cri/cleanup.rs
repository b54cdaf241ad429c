//! Removing what a [`super::CriNode`] made: after a test (also one that panicked, or left the
//! runtime stopped) and after a test process that died without cleaning up (found by the pid
//! in the directory's name). Every step works whether or not the runtime still runs, and
//! every wait is bounded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{CGROUP_TIMEOUT, CNI_CACHE, COMMAND_TIMEOUT, K8S_NAMESPACE, PREFIX, SHIM_SOCKETS};
use crate::common::process::run_with_timeout;

/// Removes what the harnesses of test processes that no longer run left behind: their
/// directories `wasmtap-test-cri-<pid>-…` in the temp dir, with everything `clean_up` covers.
/// (Their node namespaces are removed by `topology`, as every stale test namespace.)
pub(super) fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing a stale CRI harness: {}", entry.path().display());
            clean_up(&entry.path());
        }
    }
}

/// Removes everything a harness with directory `dir` made, whether or not its runtime still
/// runs: processes that name the directory (containerd, its shims), the pods' processes and
/// cgroups, the pods' network namespaces, every mount under the directory, libcni's cached
/// results for its network, and the directory.
pub(super) fn clean_up(dir: &Path) {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.is_empty() || !name.starts_with(PREFIX) {
        return;
    }
    let ids = sandbox_ids(dir);
    kill_processes_naming(dir);
    remove_cgroups(&name);
    if let Ok(list) = std::fs::read_to_string(dir.join("netns.list")) {
        for path in list.lines().filter(|l| !l.is_empty()) {
            if Path::new(path).exists() {
                let _ = run_with_timeout(Command::new("umount").arg(path), COMMAND_TIMEOUT);
                let _ = std::fs::remove_file(path);
            }
        }
    }
    unmount_under(dir);
    if let Err(e) = std::fs::remove_dir_all(dir)
        && dir.exists()
    {
        eprintln!("CRI teardown: cannot remove {}: {e}", dir.display());
    }
    // What a sandbox that CRI did not remove leaves outside: libcni's cached results (of the
    // loopback network and of ours) and its shim's socket, which containerd 1.6 names by the
    // sha256 of "<grpc address>/<namespace>/<id>".
    if let Ok(entries) = std::fs::read_dir(CNI_CACHE) {
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let ours = |id: &String| {
                [name.as_str(), "cni-loopback"]
                    .iter()
                    .any(|n| file.starts_with(&format!("{n}-{id}-")))
            };
            if ids.iter().any(ours) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let socket = dir.join("containerd.sock");
    for id in &ids {
        let key = format!("{}/{K8S_NAMESPACE}/{id}", socket.display());
        let hash: String =
            Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let _ = std::fs::remove_file(Path::new(SHIM_SOCKETS).join(hash));
    }
}

/// The ids of the sandboxes in a harness's state: those the CRI plugin keeps and those with a
/// task (a shim) under the runtime's state.
pub(super) fn sandbox_ids(dir: &Path) -> BTreeSet<String> {
    [
        "root/io.containerd.grpc.v1.cri/sandboxes",
        "state/io.containerd.grpc.v1.cri/sandboxes",
        "state/io.containerd.runtime.v2.task/k8s.io",
    ]
    .iter()
    .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
    .flat_map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()))
    .collect()
}

/// SIGKILLs every process whose command line names `dir` (containerd's `--config`, the
/// shims' `-address`), this one excepted.
fn kill_processes_naming(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = Command::new("kill").args(["-KILL", &pid]).stderr(Stdio::null()).status();
        }
    }
}

/// Kills the processes in the cgroups under `/NAME` (the pods' cgroup parent) in every
/// hierarchy, then removes those cgroups, deepest first; bounded by [`CGROUP_TIMEOUT`].
fn remove_cgroups(name: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    // cgroup v1 (one directory per controller, and `unified`) or v2 (the root itself).
    let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|h| h.path().join(name)).collect();
    roots.push(Path::new("/sys/fs/cgroup").join(name));
    let deadline = Instant::now() + CGROUP_TIMEOUT;
    for root in roots.into_iter().filter(|r| r.is_dir()) {
        let mut dirs = Vec::new();
        collect_dirs(&root, &mut dirs);
        // Deepest first: a cgroup is removed after its children.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            while d.exists() && std::fs::remove_dir(&d).is_err() && Instant::now() < deadline {
                if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                    for pid in procs.split_whitespace() {
                        let _ = Command::new("kill")
                            .args(["-KILL", pid])
                            .stderr(Stdio::null())
                            .status();
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Unmounts (lazily, deepest first) every mount point at or under `dir`: the sandboxes'
/// rootfs and /dev/shm, and whatever else containerd mounted there.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = run_with_timeout(Command::new("umount").args(["-l", &p]), COMMAND_TIMEOUT);
    }
}
