//! Helpers of the hostile-analyzer suite: where the analyzers are, running the host with a
//! timeout, a bare HTTP GET, parsing the Prometheus text exposition and counting with tshark.
//!
//! Inputs: the host binary and the folders `host/build.rs` (default analyzers) and
//! `host/test-analyzers/build.rs` (test analyzers) write.
//! Outputs: plain values for the tests to assert on. Every wait is bounded; every temporary
//! directory goes away on drop (kept, with its path printed, when the test panicked).
//! Self-contained on purpose: `host/tests/common/` belongs to the other integration tests.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

// The shared test helpers that serve here unchanged.
pub use crate::common::{
    Sample, TempDir, Totals, parse_exposition, parse_sample, require_root, sample_capture,
};

/// The host binary under test.
pub const HOST: &str = env!("CARGO_BIN_EXE_host");

/// A test analyzer, from the folder the `wasmtap-test-analyzers` crate's build script writes.
pub fn test_analyzer(file: &str) -> PathBuf {
    let path = wasmtap_test_analyzers::path(file);
    assert!(
        path.is_file(),
        "{} is missing: host/test-analyzers/build.rs writes it",
        path.display()
    );
    path
}

/// The default analyzers' components (`<name>.component.wasm`), written by `host/build.rs`.
pub fn default_components() -> BTreeMap<String, PathBuf> {
    let dir = Path::new(env!("WASMTAP_DEFAULT_ANALYZERS_DIR"));
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .map(|e| e.expect("reading the default analyzers' folder").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_suffix(".component.wasm")?.to_owned();
            Some((name, p))
        })
        .collect()
}

/// What a finished (or killed) command left behind.
pub struct Ran {
    /// `None`: killed at the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The command's outcome and output, for assertion messages.
    pub fn describe(&self) -> String {
        let status = match self.status {
            None => format!("KILLED after the timeout ({:.1?})", self.elapsed),
            Some(s) => format!("{s} after {:.1?}", self.elapsed),
        };
        let tail = |s: &str| s.chars().rev().take(4000).collect::<Vec<_>>().into_iter().rev();
        format!(
            "{status}\n--- stderr (end) ---\n{}\n--- stdout (end) ---\n{}",
            tail(&self.stderr).collect::<String>(),
            tail(&self.stdout).collect::<String>()
        )
    }

    /// Fails the test if the host itself panicked. A guest's panic is only a log line of the
    /// host (`analyzer panicked: panicked at …`), which does not count.
    pub fn assert_no_host_panic(&self, what: &str) {
        let host_panic = self
            .stderr
            .lines()
            .find(|l| l.contains("panicked at") && !l.contains("analyzer panicked"));
        assert!(
            host_panic.is_none(),
            "{what}: the host panicked: {host_panic:?}\n{}",
            self.describe()
        );
    }
}

/// Runs `cmd` (stdin closed), killing it after `timeout` — with its whole process group, so
/// that a host started by a wrapper (`/usr/bin/time`) goes too.
pub fn run(cmd: &mut Command, timeout: Duration) -> Ran {
    use std::os::unix::process::CommandExt;
    let start = Instant::now();
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for the command") {
            break Some(s);
        }
        if start.elapsed() > timeout {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let text = |h: thread::JoinHandle<Vec<u8>>| {
        String::from_utf8_lossy(&h.join().expect("output reader")).into_owned()
    };
    Ran { status, stdout: text(out), stderr: text(err), elapsed: start.elapsed() }
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// `host` with `args`, run to the end (bounded by `timeout`).
pub fn host(args: &[&std::ffi::OsStr], timeout: Duration) -> Ran {
    run(Command::new(HOST).args(args).env("WASMTAP_LOG", "info"), timeout)
}

/// GNU time, for a command's peak RSS.
const GNU_TIME: &str = "/usr/bin/time";

/// `host` with `args` under GNU time (bounded by `timeout`): the run, and the host's peak RSS
/// ("Maximum resident set size") in KiB, `None` if the host was killed.
pub fn host_measured(args: &[&std::ffi::OsStr], timeout: Duration) -> (Ran, Option<u64>) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    assert!(Path::new(GNU_TIME).is_file(), "{GNU_TIME} is missing (Debian: apt-get install time)");
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let report =
        std::env::temp_dir().join(format!("wasmtap-hostile-time-{}-{seq}", std::process::id()));
    let mut cmd = Command::new(GNU_TIME);
    cmd.arg("-v").arg("-o").arg(&report).arg(HOST).args(args).env("WASMTAP_LOG", "info");
    let r = run(&mut cmd, timeout);
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    let rss = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok());
    let finished = r.status.is_some();
    (r, rss.filter(|_| finished))
}

/// The longest line a host's log may have: guest text is cut to 1024 bytes wherever the host
/// prints it, and the rest of a line (time, level, target, the analyzer's name, version and
/// source path) is a few hundred bytes at most.
pub const MAX_LOG_LINE: usize = 4096;

/// The lines of `log` longer than [`MAX_LOG_LINE`], shortened for a message.
pub fn overlong_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.len() > MAX_LOG_LINE)
        .map(|l| format!("{} bytes: {}…", l.len(), l.chars().take(200).collect::<String>()))
        .collect()
}

/// The samples whose value is not finite (`+Inf`, `-Inf`, `NaN`).
pub fn not_finite(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter(|s| !s.value.is_finite())
        .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
        .collect()
}

/// Bytes of the exposition lines of `family` in `text` (`# HELP`, `# TYPE`, its samples and,
/// for a histogram, its `_bucket`, `_sum` and `_count` samples), newlines included.
pub fn family_bytes(text: &str, family: &str) -> usize {
    let known = [family.to_owned()];
    text.lines().filter(|l| family_of(l, &known) == family).map(|l| l.len() + 1).sum()
}

/// An HTTP response: status code and body.
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` from `addr` over HTTP/1.1, the whole exchange bounded by `timeout`.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let mut s = TcpStream::connect_timeout(&addr, left()).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        s.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read after {} bytes: {e}", raw.len())),
        }
        if Instant::now() >= deadline {
            return Err(format!("no complete answer within {timeout:?}"));
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(body)? } else { body.to_owned() };
    Ok(Response { status, body })
}

/// Decodes a chunked HTTP/1.1 body.
fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("truncated chunk size")?;
        let size =
            usize::from_str_radix(size.trim(), 16).map_err(|e| format!("chunk size: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(after.get(..size).ok_or("truncated chunk")?);
        rest = after.get(size + 2..).ok_or("truncated chunk end")?;
    }
}

/// The value of the sample `name` whose labels include every pair of `labels`, if exactly one
/// matches; the sum if several do; `None` if none does.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// The families the analyzers export (`# TYPE` lines), without the host's self-metrics.
fn analyzer_families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !n.starts_with("wasmtap_host_") && !n.starts_with("wasmtap_analyzer_"))
        .map(str::to_owned)
        .collect()
}

/// The family a line of the exposition belongs to.
fn family_of<'a>(line: &'a str, known: &[String]) -> &'a str {
    if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
        return rest.split_whitespace().next().unwrap_or("");
    }
    let name = line.split(['{', ' ']).next().unwrap_or("");
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && known.iter().any(|k| k == base)
        {
            return base;
        }
    }
    name
}

/// Every sample line of `text` that belongs to one of `families`, in order.
fn sample_lines<'a>(text: &'a str, families: &[String]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| families.iter().any(|f| f == family_of(l, families)))
        .collect()
}

/// The differences between the samples of `families` in `text` and in `reference`: every
/// series must be in both, with the same value, exactly (histogram sums included: the registry
/// keeps them in exact billionths, whatever the order of the workers). Empty when they agree.
pub fn family_differences(text: &str, reference: &str, families: &[String]) -> Vec<String> {
    let (got, want) = (sample_lines(text, families), sample_lines(reference, families));
    let mut diffs = Vec::new();
    if got.len() != want.len() {
        diffs.push(format!("{} sample lines, expected {}", got.len(), want.len()));
    }
    for (g, w) in got.iter().zip(&want) {
        let (Ok(gs), Ok(ws)) = (parse_sample(g), parse_sample(w)) else {
            diffs.push(format!("unparsable: {g:?} or {w:?}"));
            continue;
        };
        if (gs.name, &gs.labels) != (ws.name, &ws.labels) || gs.value != ws.value {
            diffs.push(format!("got {g}\n   expected {w}"));
        }
    }
    diffs
}

/// The analyzer families of a run of the default analyzers alone.
pub fn default_families(baseline: &str) -> Vec<String> {
    let families = analyzer_families(baseline);
    assert!(families.iter().any(|f| f == "wasmtap_packets_total"), "baseline:\n{baseline}");
    families
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let r = run(Command::new("mkfifo").arg(path), Duration::from_secs(10));
    assert!(r.success(), "mkfifo {}: {}", path.display(), r.describe());
}

/// Lets a writer blocked on (or writing to) `fifo` go, once its reader is gone.
pub fn release_fifo_writer(fifo: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    /// Linux's O_NONBLOCK: opening a FIFO's read end this way never blocks.
    const O_NONBLOCK: i32 = 0o4000;
    let _ = std::fs::OpenOptions::new().read(true).custom_flags(O_NONBLOCK).open(fifo);
}

/// The words of `words` that `text` lacks.
pub fn missing_words<'a>(text: &str, words: &[&'a str]) -> Vec<&'a str> {
    words.iter().copied().filter(|w| !text.contains(w)).collect()
}
