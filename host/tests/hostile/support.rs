//! Helpers of the hostile-analyzer suite: where the analyzers are, running the host with a
//! timeout, a bare HTTP GET, parsing the Prometheus text exposition and counting with tshark.
//!
//! Inputs: the host binary and the folders `host/build.rs` writes (compile-time environment).
//! Outputs: plain values for the tests to assert on. Every wait is bounded; every temporary
//! directory goes away on drop (kept, with its path printed, when the test panicked).
//! Self-contained on purpose: `host/tests/common/` belongs to the other integration tests.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The host binary under test.
pub const HOST: &str = env!("CARGO_BIN_EXE_host");

/// The test analyzers' folder, written by `host/build.rs`.
pub fn test_analyzer(file: &str) -> PathBuf {
    let path = Path::new(env!("WASMTAP_TEST_ANALYZERS_DIR")).join(format!("{file}.wasm"));
    assert!(path.is_file(), "{} is missing: host/build.rs writes it", path.display());
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

/// `examples/captures/sample.pcap`, the capture `host check` replays by default.
pub fn sample_capture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/captures/sample.pcap")
}

/// Makes temporary names unique within this test process.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh directory, removed on drop unless the test is panicking.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join(format!("wasmtap-hostile-{tag}-{}-{seq}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        TempDir(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("keeping {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
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

/// Runs `cmd` (stdin closed), killing it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Ran {
    let start = Instant::now();
    let mut child = cmd
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

/// One sample line of the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of an exposition (comments skipped).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| parse_sample(l).unwrap_or_else(|| panic!("unparsable exposition line {l:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

fn parse_labels(mut rest: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
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

/// Relative difference allowed between two histogram `_sum`s: the registry adds the workers'
/// f64 sums in whatever order they arrive, which moves the last bits.
const SUM_TOLERANCE: f64 = 1e-12;

/// The differences between the samples of `families` in `text` and in `reference`: every
/// series must be in both, with the same value — exactly, except histogram `_sum`s, which may
/// differ by [`SUM_TOLERANCE`] (relative). Empty when they agree.
pub fn family_differences(text: &str, reference: &str, families: &[String]) -> Vec<String> {
    let (got, want) = (sample_lines(text, families), sample_lines(reference, families));
    let mut diffs = Vec::new();
    if got.len() != want.len() {
        diffs.push(format!("{} sample lines, expected {}", got.len(), want.len()));
    }
    for (g, w) in got.iter().zip(&want) {
        let (Some(gs), Some(ws)) = (parse_sample(g), parse_sample(w)) else {
            diffs.push(format!("unparsable: {g:?} or {w:?}"));
            continue;
        };
        let close = gs.name.ends_with("_sum")
            && (gs.value - ws.value).abs() <= SUM_TOLERANCE * ws.value.abs().max(1.0);
        if (gs.name, &gs.labels) != (ws.name, &ws.labels) || (gs.value != ws.value && !close) {
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

/// The counts that tshark and the default analyzers must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub frames: u64,
    pub resets: u64,
    pub dont_fragment: u64,
    pub wscale_options: u64,
}

impl Totals {
    /// The default analyzers' counts, summed over all their series.
    pub fn from_exposition(samples: &[Sample]) -> Totals {
        let count = |name: &str| {
            let v = value(samples, name, &[]).unwrap_or_else(|| panic!("no {name} sample"));
            assert!(v.fract() == 0.0 && v >= 0.0, "{name} = {v} is not a count");
            v as u64
        };
        Totals {
            frames: count("wasmtap_packets_total"),
            resets: count("wasmtap_tcp_resets_total"),
            dont_fragment: count("wasmtap_ip_dont_fragment_total"),
            wscale_options: count("wasmtap_tcp_window_scale_options_total"),
        }
    }

    /// tshark's counts for the same things in `file`.
    pub fn from_tshark(file: &Path) -> Totals {
        Totals {
            frames: tshark_count(file, None),
            resets: tshark_count(file, Some("tcp.flags.reset==1")),
            dont_fragment: tshark_count(file, Some("ip.flags.df==1")),
            wscale_options: tshark_count(file, Some("tcp.options.wscale.shift")),
        }
    }
}

/// Frames of `file` that match the display `filter` (all frames without one).
pub fn tshark_count(file: &Path, filter: Option<&str>) -> u64 {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file).args(["-T", "fields", "-e", "frame.number"]);
    if let Some(f) = filter {
        cmd.args(["-Y", f]);
    }
    let r = run(&mut cmd, Duration::from_secs(120));
    assert!(r.success(), "tshark {filter:?} on {} failed: {}", file.display(), r.describe());
    r.stdout.lines().filter(|l| !l.trim().is_empty()).count() as u64
}

/// True when running as root (capture on `lo` needs it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// For root-only tests: false, after a loud message, when not root, unless
/// `WASMTAP_REQUIRE_ROOT=1` (CI), which makes a missing root a failure.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let required = matches!(std::env::var("WASMTAP_REQUIRE_ROOT").as_deref(), Ok("1" | "true"));
    assert!(!required, "{test}: needs root (WASMTAP_REQUIRE_ROOT=1 makes this a failure)");
    eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPED {test}: needs root (live capture on lo).");
    eprintln!("!!! Run as root, or set WASMTAP_REQUIRE_ROOT=1 to make this a failure.");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
    false
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
