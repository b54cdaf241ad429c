//! The live part of the hostile-analyzer suite (and `root_slow_load`): a `host run` on `lo`
//! watching an analyzer directory ([`start_watching`]), loopback traffic against it, and a
//! watchdog on its HTTP endpoints.
//!
//! Inputs: a directory to watch. Outputs: the [`LiveHost`] to query (`/metrics`, `/analyzers`,
//! its log) and a [`Watchdog`] report of every moment `/metrics` or `/healthz` did not answer
//! 200 within [`ANSWER_WITHIN`]. The host and both threads are stopped on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::http;
use crate::common::live::LiveHost;

/// How fast `/metrics` and `/healthz` must answer, throughout.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// How often the watchdog asks: often enough to see a stall of a fraction of a second.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// Pause between the traffic thread's requests: about 100 requests (≈1,000 packets on `lo`)
/// per second keeps batches flowing to the analyzers without loading the two cores.
const TRAFFIC_EVERY: Duration = Duration::from_millis(10);
/// How long the host may take to become ready: it compiles the default analyzers first.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Starts `host run -i lo --no-cache --analyzer-dir DIR` in this process's namespace; returns
/// once `/readyz` answers 200.
pub fn start_watching(dir: &Path) -> LiveHost {
    let dir = dir.to_str().expect("a UTF-8 path");
    let mut host =
        LiveHost::start_here("host run", &["-i", "lo", "--no-cache", "--analyzer-dir", dir]);
    host.wait_ready(READY_WITHIN);
    host
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
                        let result = http::get(addr, path, ANSWER_WITHIN);
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
                    if http::get(addr, "/healthz", ANSWER_WITHIN).is_ok() {
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
