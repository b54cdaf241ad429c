//! The live part of the hostile-analyzer suite: a `host run` on `lo` with a watched analyzer
//! directory, loopback traffic against it, and a watchdog on its HTTP endpoints.
//!
//! Inputs: the host binary, a directory to watch. Outputs: a [`LiveHost`] to query (`/metrics`,
//! `/analyzers`, its log) and a [`Watchdog`] report of every moment `/metrics` or `/healthz`
//! did not answer 200 within [`ANSWER_WITHIN`]. The host and both threads are stopped on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::support::{HOST, Sample, http_get, parse_exposition};

/// How fast `/metrics` and `/healthz` must answer, throughout.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// How often the watchdog asks: often enough to see a stall of a fraction of a second.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// Pause between the traffic thread's requests: about 100 requests (≈1,000 packets on `lo`)
/// per second keeps batches flowing to the analyzers without loading the two cores.
const TRAFFIC_EVERY: Duration = Duration::from_millis(10);

/// Lines of the host's log quoted in a failure message: enough to see the last events.
const LOG_TAIL_LINES: usize = 40;

/// A running `host run`.
pub struct LiveHost {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl LiveHost {
    /// Starts `host run -i lo` serving on a free port and watching `dir`; returns once `/readyz`
    /// answers 200.
    pub fn start(dir: &Path, log: PathBuf) -> LiveHost {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("finding a free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_file = File::create(&log).expect("creating the host's log file");
        let child = Command::new(HOST)
            .args(["run", "-i", "lo", "--no-cache", "--listen", &addr.to_string()])
            .arg("--analyzer-dir")
            .arg(dir)
            .env("WASMTAP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("starting host run");
        let mut host = LiveHost { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http_get(addr, "/readyz", ANSWER_WITHIN)
                && r.status == 200
            {
                return host;
            }
            assert!(host.alive(), "host run exited at start:\n{}", host.log_tail());
            let waited = Instant::now() < deadline;
            assert!(waited, "host run not ready after 60 s:\n{}", host.log_tail());
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The host's process id.
    #[allow(dead_code)] // used by root_slow_load.rs, not by the hostile suite
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The host's log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// The samples of `/metrics`.
    pub fn metrics(&self) -> Vec<Sample> {
        let r = http_get(self.addr, "/metrics", ANSWER_WITHIN).expect("GET /metrics");
        assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
        parse_exposition(&r.body)
    }

    /// The entries of `GET /analyzers`.
    pub fn analyzers(&self) -> Vec<serde_json::Value> {
        let r = http_get(self.addr, "/analyzers", ANSWER_WITHIN).expect("GET /analyzers");
        assert_eq!(r.status, 200, "GET /analyzers: {}", r.body);
        let json: serde_json::Value = serde_json::from_str(&r.body).expect("/analyzers is JSON");
        json.as_array().cloned().expect("/analyzers is a JSON array")
    }

    /// The `/analyzers` entry of analyzer `name`.
    pub fn analyzer(&self, name: &str) -> Option<serde_json::Value> {
        self.analyzers().into_iter().find(|a| a["name"] == name)
    }

    /// Sends SIGTERM and waits for the exit (at most `timeout`); the exit status's success.
    pub fn stop(&mut self, timeout: Duration) -> Option<bool> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.success());
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for LiveHost {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls until `check` returns `Some`, at most `timeout`; `None` at the timeout.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Background traffic and the endpoint watchdog.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    problems: Arc<Mutex<Vec<String>>>,
    checks: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl Watchdog {
    /// Starts loopback traffic (GET /healthz in a loop) and the watchdog on `addr`.
    pub fn start(addr: SocketAddr) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let (checks, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let started = Instant::now();
        let watch = {
            let (stop, problems, checks) = (stop.clone(), problems.clone(), checks.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for path in ["/metrics", "/healthz"] {
                        let t0 = Instant::now();
                        let result = http_get(addr, path, ANSWER_WITHIN);
                        let took = t0.elapsed();
                        let problem = match result {
                            Ok(r) if r.status == 200 && took <= ANSWER_WITHIN => None,
                            Ok(r) => Some(format!("HTTP {} in {took:.2?}", r.status)),
                            Err(e) => Some(format!("{e} after {took:.2?}")),
                        };
                        if let Some(p) = problem {
                            let at = started.elapsed();
                            let mut list = problems.lock().unwrap_or_else(|e| e.into_inner());
                            list.push(format!("at {at:.1?}: GET {path}: {p}"));
                        }
                        checks.fetch_add(1, Ordering::Relaxed);
                    }
                    thread::sleep(WATCH_EVERY);
                }
            })
        };
        let traffic = {
            let (stop, requests) = (stop.clone(), requests.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if http_get(addr, "/healthz", ANSWER_WITHIN).is_ok() {
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                    thread::sleep(TRAFFIC_EVERY);
                }
            })
        };
        Watchdog { stop, threads: vec![watch, traffic], problems, checks, requests }
    }

    /// Stops both threads; returns (the watchdog's problems, checks made, traffic requests).
    pub fn finish(mut self) -> (Vec<String>, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let problems =
            std::mem::take(&mut *self.problems.lock().unwrap_or_else(|e| e.into_inner()));
        (problems, self.checks.load(Ordering::Relaxed), self.requests.load(Ordering::Relaxed))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
