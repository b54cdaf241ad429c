//! The live part of the hostile-analyzer suite (and `root_slow_load`): a `wasmtap run` on `lo`
//! watching an analyzer directory ([`start_watching`]), loopback traffic against it, and a
//! watchdog on its HTTP endpoints.
//!
//! Inputs: a directory to watch. Outputs: the [`LiveHost`] to query (`/metrics`, `/analyzers`,
//! its log) and a [`Watchdog`] [`Report`]: every moment `/metrics` or `/healthz` did not answer
//! 200 within its limit ([`METRICS_WITHIN`], [`HEALTHZ_WITHIN`]), and how fast each answered.
//! The host and both threads are stopped on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::http;
use crate::common::live::LiveHost;

/// How fast `/metrics` must answer, throughout. What it guards: a scrape is served from the
/// registry and never waits for an analyzer. A wait for a load takes 5 s or more
/// (`slow-compile` is refused at its 5 s compile budget, and its compile runs on for about
/// 12 s); a wait for the workers' calls adds up to seconds on a busy machine (the hostile ones
/// run up to the 200 ms CPU budget each, one after another on a worker, `infinite-loop` on
/// every call). What it must allow: one render of the whole exposition, over 32 MiB while the
/// exposition bomb's family holds its budget, and its transfer. That took up to 0.75 s on the
/// 2-core test machine with other tests beside it, 1.12 s with two `sha256sum /dev/zero` and a
/// `cargo build` beside it (failing the 1 s limit there was), and 1.39 s with four
/// `sha256sum`. 3 s is twice the slowest seen, and well under a wait for a load.
pub const METRICS_WITHIN: Duration = Duration::from_secs(3);
/// How fast `/healthz` must answer, throughout: it renders nothing, so only a stalled server
/// is slow; a busy machine delays it by milliseconds.
pub const HEALTHZ_WITHIN: Duration = Duration::from_secs(1);
/// How long the watchdog waits for an answer before it counts it as none: longer than the
/// limits, so that a slow answer is measured rather than only seen to be slow.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the watchdog asks: often enough to see a stall of a fraction of a second.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// Pause between the traffic thread's requests: about 100 requests (≈1,000 packets on `lo`)
/// per second keeps batches flowing to the analyzers without loading the two cores.
const TRAFFIC_EVERY: Duration = Duration::from_millis(10);
/// How long the host may take to become ready: it compiles the default analyzers first.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Starts `wasmtap run -i lo --no-cache --analyzer-dir DIR` in this process's namespace; returns
/// once `/readyz` answers 200.
pub fn start_watching(dir: &Path) -> LiveHost {
    let dir = dir.to_str().expect("a UTF-8 path");
    let mut host =
        LiveHost::start_here("wasmtap run", &["-i", "lo", "--no-cache", "--analyzer-dir", dir]);
    host.wait_ready(READY_WITHIN);
    host
}

/// What the watchdog saw.
pub struct Report {
    /// Every answer that was not a 200 within its limit, with when and how long it took.
    pub failures: Vec<String>,
    /// Endpoint checks made, and traffic requests that succeeded.
    pub checks: u64,
    pub requests: u64,
    /// Per path: (path, answers, median, worst), for the test to print.
    pub latencies: Vec<(&'static str, usize, Duration, Duration)>,
}

/// Background traffic and the endpoint watchdog.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    problems: Arc<Mutex<Vec<String>>>,
    took: Arc<Mutex<Vec<(&'static str, Duration)>>>,
    checks: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

/// The paths the watchdog asks, each with its limit.
const WATCHED: [(&str, Duration); 2] = [("/metrics", METRICS_WITHIN), ("/healthz", HEALTHZ_WITHIN)];

impl Watchdog {
    /// Starts loopback traffic (GET /healthz in a loop) and the watchdog on `addr`.
    pub fn start(addr: SocketAddr) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let took_all = Arc::new(Mutex::new(Vec::new()));
        let (checks, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let started = Instant::now();
        let watch = {
            let (stop, problems, checks) = (stop.clone(), problems.clone(), checks.clone());
            let took_all = took_all.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (path, within) in WATCHED {
                        let t0 = Instant::now();
                        let result = http::get(addr, path, PROBE_TIMEOUT);
                        let took = t0.elapsed();
                        took_all.lock().unwrap_or_else(|e| e.into_inner()).push((path, took));
                        let problem = match result {
                            Ok(r) if r.status == 200 && took <= within => None,
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
                    if http::get(addr, "/healthz", HEALTHZ_WITHIN).is_ok() {
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                    thread::sleep(TRAFFIC_EVERY);
                }
            })
        };
        let threads = vec![watch, traffic];
        Watchdog { stop, threads, problems, took: took_all, checks, requests }
    }

    /// Stops both threads; returns what the watchdog saw.
    pub fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let failures =
            std::mem::take(&mut *self.problems.lock().unwrap_or_else(|e| e.into_inner()));
        let took = std::mem::take(&mut *self.took.lock().unwrap_or_else(|e| e.into_inner()));
        let latencies = WATCHED
            .iter()
            .map(|&(path, _)| {
                let mut mine: Vec<Duration> =
                    took.iter().filter(|(p, _)| *p == path).map(|(_, t)| *t).collect();
                mine.sort();
                let median = mine.get(mine.len() / 2).copied().unwrap_or_default();
                let worst = mine.last().copied().unwrap_or_default();
                (path, mine.len(), median, worst)
            })
            .collect();
        Report {
            failures,
            checks: self.checks.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            latencies,
        }
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
