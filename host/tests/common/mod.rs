//! Shared helpers for the host's integration tests: running commands with a timeout,
//! network-namespace pairs, test traffic, tcpdump captures, tshark counts and parsing the
//! Prometheus text exposition.
//!
//! Every helper that starts something stops it again in `Drop`, also when a test panics,
//! and every wait is bounded in time.
#![allow(dead_code)] // each test crate uses its own subset

pub mod chart;
pub mod container;
pub mod frames;
pub mod live;
pub mod lossy;
pub mod promql;
pub mod scrape;
pub mod topology;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The host binary under test.
pub const HOST: &str = env!("CARGO_BIN_EXE_host");

/// Per-process counter that makes namespace, directory and file names unique.
static SEQ: AtomicU32 = AtomicU32::new(0);

fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The repository root (the parent of `host/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

/// `examples/captures/sample.pcap`: a small real capture committed with the repository.
pub fn sample_capture() -> PathBuf {
    repo_root().join("examples/captures/sample.pcap")
}

/// The test-traffic script (see its docstring).
pub fn traffic_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traffic.py")
}

fn env_flag(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

fn is_root() -> bool {
    // std has no geteuid; `id -u` is in coreutils everywhere these tests run.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// For tests that need root (network namespaces, live capture). Returns false, after a loud
/// message, when not root, so the test can return early; with `WASMTAP_REQUIRE_ROOT=1`
/// (set by scripts/test and so CI) a missing root is a failure instead.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if env_flag("WASMTAP_REQUIRE_ROOT") {
        panic!("{test}: needs root (WASMTAP_REQUIRE_ROOT=1 is set, so this is a failure)");
    }
    // Straight to the process's stderr: libtest hides what a passing test prints with
    // eprintln!, and a skip must not look like a pass.
    let _ = writeln!(
        std::io::stderr(),
        "\nSKIPPED {test}: needs root (network namespaces / live capture); run as root, or \
         set WASMTAP_REQUIRE_ROOT=1 to make this a failure"
    );
    false
}

/// Panics with an install hint when one of the external tools is missing.
pub fn require_tools(tools: &[&str]) {
    for tool in tools {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "`{tool}` is not installed; run scripts/setup (Debian: tshark tcpdump prometheus iproute2 curl)"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Temporary directories

/// A fresh directory under the system temp dir, removed on drop unless the test panicked
/// (then it is kept and its path printed, for post-mortems) or `WASMTAP_KEEP_TMP=1`.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "wasmtap-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            next_seq()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() || env_flag("WASMTAP_KEEP_TMP") {
            eprintln!("keeping {} for inspection", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ------------------------------------------------------------------------------------------
// Running commands

/// A path for this run's capture in `dir`, named `PREFIX<pid>.pcap`. Earlier runs' captures
/// with the same prefix are removed, so they are replaced, not accumulated; this one stays for
/// inspection.
pub fn fresh_capture(dir: &Path, prefix: &str) -> PathBuf {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    dir.join(format!("{prefix}{}.pcap", std::process::id()))
}

/// The outcome of [`run_with_timeout`].
#[derive(Debug)]
pub struct RunResult {
    /// `None` when the command timed out (it was killed).
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl RunResult {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
    pub fn success(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }
    /// The exit code; `None` for a timeout or a death by signal.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// A description for assertion messages.
    pub fn describe(&self) -> String {
        let status = match self.status {
            None => format!("TIMED OUT after {:.1?}", self.elapsed),
            Some(s) => format!("{s} after {:.1?}", self.elapsed),
        };
        format!(
            "{status}\n--- stderr ---\n{}\n--- stdout (first 2000 bytes) ---\n{}",
            tail(&self.stderr_text(), 4000),
            self.stdout_text().chars().take(2000).collect::<String>()
        )
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn drain<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Runs `cmd` (stdin closed, stdout and stderr collected), killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> RunResult {
    run_with_input(cmd, None, timeout)
}

/// Like [`run_with_timeout`], with `input` written to the command's stdin.
pub fn run_with_input(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> RunResult {
    let start = Instant::now();
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        let data = data.to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    RunResult {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// Runs a command that must succeed within `timeout`; returns its stdout.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> String {
    let desc = format!("{cmd:?}");
    let r = run_with_timeout(cmd, timeout);
    assert!(r.success(), "{desc} failed: {}", r.describe());
    r.stdout_text()
}

/// A background process (stdin closed) that is killed on drop. Its stdout and stderr are
/// collected by threads, so it never blocks on a full pipe, and can be searched while it runs.
pub struct Spawned {
    name: String,
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn collect_lines<R: Read + Send + 'static>(
    r: R,
    sink: Arc<Mutex<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&line));
                    }
                }
            }
        }
    })
}

impl Spawned {
    pub fn start(name: &str, cmd: &mut Command) -> Spawned {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child =
            cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect_lines(child.stdout.take().expect("piped"), stdout.clone()),
            collect_lines(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        Spawned { name: name.to_string(), child: Some(child), stdout, stderr, readers }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits until stdout (`on_stdout`) or stderr contains `needle`. Panics, with the
    /// output so far, on timeout or when the process exits first.
    pub fn wait_for_output(&mut self, needle: &str, on_stdout: bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = if on_stdout { self.stdout() } else { self.stderr() };
            if text.contains(needle) {
                return;
            }
            if let Some(status) = self.try_status() {
                // The readers may still hold the last lines; give them a moment.
                thread::sleep(Duration::from_millis(100));
                let text = if on_stdout { self.stdout() } else { self.stderr() };
                if text.contains(needle) {
                    return;
                }
                panic!(
                    "{} exited ({status}) before printing {needle:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not print {needle:?} within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. "INT", "TERM") to the process by its pid.
    pub fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Waits up to `timeout` for the process to exit; kills it after that. Returns the exit
    /// status (`None` if it had to be killed) once the output readers are done.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take()?;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }

    /// SIGINT, then wait (SIGKILL after `timeout`).
    pub fn interrupt_and_wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal("INT");
        self.wait(timeout)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

// ------------------------------------------------------------------------------------------
// Network namespaces

const NETNS_PREFIX: &str = "wasmtap-";

fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args), Duration::from_secs(10));
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

/// Two network namespaces, `a` and `b`, joined by a veth pair: `veth_a` (in `a`) has
/// 10.77.n.1/24 and fd77:n::1/64, `veth_b` (in `b`) has 10.77.n.2/24 and fd77:n::2/64.
/// Offloads (TSO/GSO/GRO) are off when ethtool is there, so captures show real segments.
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
    pub fn new() -> NetnsPair {
        require_tools(&["ip"]);
        delete_stale_namespaces();
        let pid = std::process::id();
        let seq = next_seq();
        // Only has to be unique per namespace pair (each pair has its own routing), but
        // distinct subnets make captures from parallel tests easy to tell apart.
        let n = (pid.wrapping_mul(7).wrapping_add(seq) % 200) + 20;
        let pair = NetnsPair {
            a: format!("{NETNS_PREFIX}{pid}-{seq}-a"),
            b: format!("{NETNS_PREFIX}{pid}-{seq}-b"),
            veth_a: format!("wta{seq}"),
            veth_b: format!("wtb{seq}"),
            v4_a: format!("10.77.{n}.1"),
            v4_b: format!("10.77.{n}.2"),
            v6_a: format!("fd77:{n}::1"),
            v6_b: format!("fd77:{n}::2"),
        };
        // From here on, Drop cleans up whatever was created, also if a step below fails.
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        // Created directly inside the namespaces, so the names never clash in the root one.
        ip(&[
            "link",
            "add",
            &pair.veth_a,
            "netns",
            &pair.a,
            "type",
            "veth",
            "peer",
            "name",
            &pair.veth_b,
            "netns",
            &pair.b,
        ]);
        for (ns, dev, v4, v6) in [
            (&pair.a, &pair.veth_a, &pair.v4_a, &pair.v6_a),
            (&pair.b, &pair.veth_b, &pair.v4_b, &pair.v6_b),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            pair.disable_offloads(ns, dev);
        }
        pair.wait_ipv6_ready();
        pair
    }

    fn disable_offloads(&self, ns: &str, dev: &str) {
        let r = run_with_timeout(
            Command::new("ip").args([
                "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
            ]),
            Duration::from_secs(10),
        );
        if !r.success() {
            eprintln!(
                "note: could not turn offloads off on {dev} (is ethtool installed?); \
                 captures may hold GSO super-frames: {}",
                r.stderr_text().trim()
            );
        }
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

    /// `ip netns exec NS program args...` as a Command.
    pub fn exec(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        delete_netns(&self.a);
        delete_netns(&self.b);
    }
}

// ------------------------------------------------------------------------------------------
// Traffic and captures

/// What one run of the traffic client did (its JSON summary line).
pub struct ClientReport(pub String);

/// Starts the traffic server in namespace `b` on both of its addresses; returns once it is
/// listening (it prints READY after binding every socket).
pub fn start_traffic_server(pair: &NetnsPair, port: u16) -> Spawned {
    require_tools(&["python3"]);
    let script = traffic_script();
    let mut cmd = pair.exec(&pair.b, "python3");
    cmd.arg(&script).args([
        "serve",
        "--addr",
        &pair.v4_b,
        "--addr",
        &pair.v6_b,
        "--port",
        &port.to_string(),
        "--lifetime",
        "240",
    ]);
    let mut server = Spawned::start("traffic server", &mut cmd);
    server.wait_for_output("READY", true, Duration::from_secs(20));
    server
}

/// Runs every client scenario (bulk, refused, abort, linger0) from namespace `a` against
/// `addr`, which must be one of `b`'s addresses. Panics if a scenario misbehaved.
pub fn run_traffic_client(
    pair: &NetnsPair,
    addr: &str,
    port: u16,
    bulk_bytes: u64,
) -> ClientReport {
    let mut cmd = pair.exec(&pair.a, "python3");
    cmd.arg(traffic_script()).args([
        "client",
        "--addr",
        addr,
        "--port",
        &port.to_string(),
        "--bulk-bytes",
        &bulk_bytes.to_string(),
        "--timeout",
        "60",
    ]);
    let out = run_ok(&mut cmd, Duration::from_secs(70));
    assert!(
        out.contains("\"refused\": true") && out.contains("\"reset_seen\": true"),
        "traffic client did not see the expected refusal and reset: {out}"
    );
    ClientReport(out)
}

/// tcpdump writing a pcap, inside a namespace.
pub struct Tcpdump {
    proc: Spawned,
    pub file: PathBuf,
}

impl Tcpdump {
    /// Starts `tcpdump -i dev -w file` in `ns` and returns once it is capturing.
    pub fn start(pair: &NetnsPair, ns: &str, dev: &str, file: &Path) -> Tcpdump {
        require_tools(&["tcpdump"]);
        let mut cmd = pair.exec(ns, "tcpdump");
        cmd.args([
            "-n",
            "-i",
            dev,
            // Packet-buffered output, no kernel-side batching (else the last packets can
            // still sit in the ring when we stop), a 64 MiB ring so bursts are not dropped,
            // and no privilege drop (the file is in root's temp dir).
            "-U",
            "--immediate-mode",
            "-B",
            "65536",
            "-Z",
            "root",
            "-w",
        ])
        .arg(file);
        let mut proc = Spawned::start("tcpdump", &mut cmd);
        // Printed after the capture handle is activated.
        proc.wait_for_output("listening on", false, Duration::from_secs(20));
        Tcpdump { proc, file: file.to_path_buf() }
    }

    /// Stops tcpdump (SIGINT), waits for it, and asserts the kernel dropped nothing.
    /// Returns the number of packets tcpdump says it captured.
    pub fn stop(mut self) -> u64 {
        // Let the last packets of the traffic reach the capture first.
        thread::sleep(Duration::from_millis(300));
        let status = self.proc.interrupt_and_wait(Duration::from_secs(20));
        let stderr = self.proc.stderr();
        assert!(status.is_some(), "tcpdump did not stop on SIGINT:\n{stderr}");
        let count = |what: &str| -> Option<u64> {
            stderr
                .lines()
                .find(|l| l.ends_with(what))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        };
        let dropped = count("packets dropped by kernel");
        assert_eq!(
            dropped,
            Some(0),
            "tcpdump dropped packets, the capture is incomplete:\n{stderr}"
        );
        count("packets captured").unwrap_or_else(|| panic!("no tcpdump summary:\n{stderr}"))
    }
}

// ------------------------------------------------------------------------------------------
// tshark

/// `tshark -r FILE [-Y FILTER] -T fields -e f1 -e f2 ...`, one Vec per matching frame.
pub fn tshark_fields(file: &Path, filter: Option<&str>, fields: &[&str]) -> Vec<Vec<String>> {
    require_tools(&["tshark"]);
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file);
    if let Some(f) = filter {
        cmd.args(["-Y", f]);
    }
    cmd.args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = run_ok(&mut cmd, Duration::from_secs(120));
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The number of frames in `file` matching the display filter (all frames for `None`).
pub fn tshark_count(file: &Path, filter: Option<&str>) -> u64 {
    tshark_fields(file, filter, &["frame.number"]).len() as u64
}

/// Frames matching `filter`, counted per (source, destination) address (IPv4 or IPv6).
pub fn tshark_count_by_pair(file: &Path, filter: &str) -> BTreeMap<(IpAddr, IpAddr), u64> {
    let rows = tshark_fields(file, Some(filter), &["ip.src", "ipv6.src", "ip.dst", "ipv6.dst"]);
    let mut out = BTreeMap::new();
    for row in rows {
        let get = |i: usize| row.get(i).map(String::as_str).unwrap_or("");
        let pick = |v4: &str, v6: &str| -> IpAddr {
            let s = if v4.is_empty() { v6 } else { v4 };
            s.parse().unwrap_or_else(|e| panic!("tshark address {s:?} in {row:?}: {e}"))
        };
        let key = (pick(get(0), get(1)), pick(get(2), get(3)));
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

// ------------------------------------------------------------------------------------------
// The Prometheus text exposition

/// One sample line of the text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text exposition format (0.0.4) into samples; comments are skipped.
/// Panics with the offending line on malformed input.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(
            parse_sample(line)
                .unwrap_or_else(|e| panic!("exposition line {}: {e}: {line:?}", i + 1)),
        );
    }
    out
}

/// Parses one sample line of the exposition.
pub fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("empty metric name".into());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        loop {
            // skip separators
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some(&(i, '}')) => {
                    end = Some(i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            match chars.next() {
                Some((_, '"')) => {}
                _ => return Err(format!("label {key:?} value is not quoted")),
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("unterminated value of label {key:?}"));
            }
            labels.insert(key.trim().to_string(), value);
        }
        let end = end.ok_or("unterminated label set")?;
        rest = &body[end + 1..];
    }
    let value_text = rest.split_whitespace().next().ok_or("missing sample value")?;
    let value = value_text.parse::<f64>().map_err(|e| format!("value {value_text:?}: {e}"))?;
    Ok(Sample { name: name.to_string(), labels, value })
}

/// The sum of every sample named exactly `name` (across all label sets).
pub fn sum_metric(samples: &[Sample], name: &str) -> f64 {
    samples.iter().filter(|s| s.name == name).map(|s| s.value).sum()
}

/// Whether any sample is named `name`.
pub fn has_metric(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}

/// Sums `name` per (src_ip, dst_ip) label pair; addresses are parsed so that textual forms
/// (e.g. IPv6 compression) do not matter.
pub fn sum_by_pair(samples: &[Sample], name: &str) -> BTreeMap<(IpAddr, IpAddr), u64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        let addr = |label: &str| -> IpAddr {
            let v = s
                .labels
                .get(label)
                .unwrap_or_else(|| panic!("{name} sample without {label}: {s:?}"));
            v.parse().unwrap_or_else(|e| panic!("{name}{{{label}={v:?}}} is not an address: {e}"))
        };
        *out.entry((addr("src_ip"), addr("dst_ip"))).or_insert(0) += as_count(s.value, name);
    }
    out
}

/// A counter value as an exact integer (panics if it is not one).
pub fn as_count(v: f64, what: &str) -> u64 {
    assert!(v >= 0.0 && v.fract() == 0.0 && v < 9.0e15, "{what} = {v} is not a whole count");
    v as u64
}

/// Drops the host's own families (`wasmtap_host_*`, `wasmtap_analyzer_*`: timings, batch
/// counts) from an exposition, keeping the analyzers' metrics and their HELP/TYPE lines.
pub fn without_self_metrics(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let name = l.strip_prefix("# HELP ").or_else(|| l.strip_prefix("# TYPE ")).unwrap_or(l);
            !(name.starts_with("wasmtap_host_") || name.starts_with("wasmtap_analyzer_"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

// ------------------------------------------------------------------------------------------
// The host binary

/// Limit for one replay of a test capture (≤ ~10k packets, well under a second normally);
/// generous for a loaded CI machine, short enough that a hung host fails the suite quickly.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);

/// `host replay ARGS...` with a timeout.
pub fn host_replay(args: &[&std::ffi::OsStr], timeout: Duration) -> RunResult {
    run_with_timeout(Command::new(HOST).arg("replay").args(args), timeout)
}

/// Asserts that a run of the host did not hang, die by a signal or panic: no exit code 101
/// and no "panicked" anywhere on stderr (so a default analyzer's guest panic counts too).
pub fn assert_no_panic(r: &RunResult, what: &str) {
    assert_no_host_panic(r, what);
    assert!(!r.stderr_text().contains("panicked"), "{what}: something panicked: {}", r.describe());
}

/// Like [`assert_no_panic`], but allows a guest's panic message in the log (an analyzer
/// that traps on purpose): only a panic of the host itself (std's `thread '…' panicked at`
/// line, exit code 101) fails.
pub fn assert_no_host_panic(r: &RunResult, what: &str) {
    assert!(!r.timed_out(), "{what}: hung: {}", r.describe());
    assert!(r.code().is_some(), "{what}: killed by a signal: {}", r.describe());
    assert_ne!(r.code(), Some(101), "{what}: panicked: {}", r.describe());
    let host_panic =
        r.stderr_text().lines().any(|l| l.starts_with("thread '") && l.contains("panicked at"));
    assert!(!host_panic, "{what}: the host panicked: {}", r.describe());
}

/// Replays `capture` to a file with the default analyzers (plus `extra` arguments) and
/// returns the exposition text; panics unless the host exits 0.
pub fn replay_to_text(capture: &Path, extra: &[&str], dir: &TempDir) -> String {
    replay_to_text_checked(capture, extra, dir, assert_no_panic)
}

/// [`replay_to_text`] with the panic check of the caller's choice.
pub fn replay_to_text_checked(
    capture: &Path,
    extra: &[&str],
    dir: &TempDir,
    no_panic: fn(&RunResult, &str),
) -> String {
    let out = dir.join(&format!("replay-{}.prom", next_seq()));
    let mut args: Vec<&std::ffi::OsStr> = vec![capture.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.push("--output".as_ref());
    args.push(out.as_os_str());
    let r = host_replay(&args, REPLAY_TIMEOUT);
    no_panic(&r, "host replay");
    assert!(r.success(), "host replay {} {extra:?} failed: {}", capture.display(), r.describe());
    std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("reading {}: {e}", out.display()))
}

/// The counts that tshark and the default analyzers must agree on, read from an exposition.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Totals {
    pub frames: u64,
    pub resets: u64,
    pub dont_fragment: u64,
    pub wscale_options: u64,
}

impl Totals {
    pub fn from_exposition(samples: &[Sample]) -> Totals {
        for name in [
            "wasmtap_packets_total",
            "wasmtap_tcp_resets_total",
            "wasmtap_ip_dont_fragment_total",
            "wasmtap_tcp_window_scale_options_total",
        ] {
            assert!(has_metric(samples, name), "the exposition has no {name} sample");
        }
        let count = |name: &str| as_count(sum_metric(samples, name), name);
        Totals {
            frames: count("wasmtap_packets_total"),
            resets: count("wasmtap_tcp_resets_total"),
            dont_fragment: count("wasmtap_ip_dont_fragment_total"),
            wscale_options: count("wasmtap_tcp_window_scale_options_total"),
        }
    }

    pub fn from_tshark(file: &Path) -> Totals {
        Totals {
            frames: tshark_count(file, None),
            resets: tshark_count(file, Some("tcp.flags.reset==1")),
            dont_fragment: tshark_count(file, Some("ip.flags.df==1")),
            wscale_options: tshark_count(file, Some("tcp.options.wscale.shift")),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Prometheus (the server) for the live test

/// Fetches a URL from inside namespace `ns` with curl; `None` on any failure.
pub fn curl_in(pair: &NetnsPair, ns: &str, url: &str) -> Option<String> {
    let r = run_with_timeout(
        pair.exec(ns, "curl").args(["-sf", "--max-time", "5", url]),
        Duration::from_secs(10),
    );
    r.success().then(|| r.stdout_text())
}

/// Debian's `prometheus`, run inside a namespace with its own config and storage.
pub struct PrometheusServer {
    proc: Spawned,
    pub port: u16,
    _dir: TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus in `ns`, listening on 127.0.0.1:`port`, scraping `target`
    /// (host:port, plain /metrics) every second; returns once it answers /-/ready.
    pub fn start(pair: &NetnsPair, ns: &str, port: u16, target: &str) -> PrometheusServer {
        require_tools(&["prometheus", "curl"]);
        let dir = TempDir::new("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: wasmtap\n    scrape_interval: 1s\n    \
                 scrape_timeout: 900ms\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let mut cmd = pair.exec(ns, "prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut proc = Spawned::start("prometheus", &mut cmd);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if curl_in(pair, ns, &format!("http://127.0.0.1:{port}/-/ready")).is_some() {
                break;
            }
            if let Some(status) = proc.try_status() {
                panic!("prometheus exited ({status}):\n{}", proc.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s:\n{}",
                proc.stderr()
            );
            thread::sleep(Duration::from_millis(200));
        }
        PrometheusServer { proc, port, _dir: dir }
    }

    /// Runs an instant query; returns the value of the first result, if there is one.
    pub fn query(&self, pair: &NetnsPair, ns: &str, promql: &str) -> Option<f64> {
        let url =
            format!("http://127.0.0.1:{}/api/v1/query?query={}", self.port, url_encode(promql));
        let body = curl_in(pair, ns, &url)?;
        parse_query_value(&body)
    }

    /// Polls `promql` until it is non-zero (bounded); returns the last value seen.
    pub fn poll_nonzero(&self, pair: &NetnsPair, ns: &str, promql: &str, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        let mut last = 0.0;
        while Instant::now() < deadline {
            if let Some(v) = self.query(pair, ns, promql) {
                last = v;
                if v != 0.0 {
                    return v;
                }
            }
            thread::sleep(Duration::from_millis(250));
        }
        last
    }

    pub fn logs(&self) -> String {
        self.proc.stderr()
    }
}

/// Percent-encodes a query parameter.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Extracts the value of the first result of a Prometheus instant-query JSON answer:
/// `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[T,"V"]}]}}`.
pub fn parse_query_value(body: &str) -> Option<f64> {
    if !body.contains("\"status\":\"success\"") {
        return None;
    }
    let at = body.find("\"value\":[")? + "\"value\":[".len();
    let rest = &body[at..];
    let comma = rest.find(',')?;
    let rest = rest[comma + 1..].trim_start().strip_prefix('"')?;
    let end = rest.find('"')?;
    rest[..end].parse().ok()
}
