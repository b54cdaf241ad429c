//! Tools and processes: where the host binary, the sample capture and the test analyzers are;
//! root and tool checks; temporary directories; commands run to the end with a timeout
//! ([`run_with_timeout`]); background processes killed on drop ([`Spawned`]); free ports and
//! bounded polling ([`wait_for`]).
//!
//! Every helper that starts something stops it again in `Drop`, also when a test panics, and
//! every wait is bounded in time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary under test, `wasmtap` (of package `host`).
pub const HOST: &str = env!("CARGO_BIN_EXE_wasmtap");

/// How often [`wait_for`] asks: fine enough to time a reload against its 2 s promise.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Per-process counter that makes namespace, directory and file names unique.
static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn next_seq() -> u32 {
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

/// A test analyzer (`NAME.wasm`) or the example, from the folder the `wasmtap-test-analyzers`
/// crate's build script (`host/test-analyzers/build.rs`) writes; panics if it is missing.
pub fn test_analyzer(name: &str) -> PathBuf {
    let path = wasmtap_test_analyzers::path(name);
    assert!(
        path.is_file(),
        "{} is missing: host/test-analyzers/build.rs builds it",
        path.display()
    );
    path
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

// ------------------------------------------------------------------------------------------
// Commands run to the end

/// The outcome of [`run_with_timeout`].
#[derive(Debug)]
pub struct RunResult {
    /// `None` when the command timed out (it was killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
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
        self.stdout.clone()
    }
    pub fn stderr_text(&self) -> String {
        self.stderr.clone()
    }
    /// A description for assertion messages.
    pub fn describe(&self) -> String {
        let status = match self.status {
            None => format!("TIMED OUT after {:.1?}", self.elapsed),
            Some(s) => format!("{s} after {:.1?}", self.elapsed),
        };
        format!(
            "{status}\n--- stderr (end) ---\n{}\n--- stdout (first 2000 bytes) ---\n{}",
            tail(&self.stderr, 4000),
            self.stdout.chars().take(2000).collect::<String>()
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

fn drain<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` (stdin closed, stdout and stderr collected), killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> RunResult {
    run_with_input(cmd, None, timeout)
}

/// Like [`run_with_timeout`], with `input` written to the command's stdin. The command runs
/// in a process group of its own, killed whole at the timeout: a program started by a wrapper
/// (`/usr/bin/time`, `ip netns exec`) goes too.
pub fn run_with_input(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> RunResult {
    let start = Instant::now();
    cmd.process_group(0)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
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
                let group = format!("-{}", child.id());
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
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
    r.stdout
}

// ------------------------------------------------------------------------------------------
// Background processes

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

/// Asks `check` every 50 ms until it returns `Some`, for at most `timeout`; `None` then.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_EVERY);
    }
}
