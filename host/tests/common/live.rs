//! `wasmtap run` under test ([`LiveHost`]: started in a test namespace or in this process's own,
//! its HTTP endpoints, polling its metrics, its log), reading its per-device metrics, sending
//! generated captures with tcpreplay and checking what arrived, and a process's RSS, threads
//! and one thread's CPU time from /proc. The namespaces come from [`super::topology`].
//!
//! As everywhere in `common`, what is started here is stopped on drop, also when a test
//! panics, and every wait is bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::exposition::{Sample, as_count, parse_exposition, value_of};
use super::http::{self, Response};
use super::process::{HOST, Spawned, free_port, repo_root, require_tools, run_ok};
use super::topology::netns_exec;

/// How often the polling helpers scrape: fine enough to measure sub-second latencies.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The reasons of `wasmtap_host_packets_dropped_total`.
pub const DROP_REASONS: [&str; 3] = ["kernel", "interface", "queue_full"];
/// Bound on one request to the host (a scrape of a large exposition included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the host may take to answer at start: it compiles its analyzers first.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the host's log quoted in a failure message: enough to see the last events.
const LOG_TAIL_LINES: usize = 40;

/// Serializes the tests of one test binary that measure latency or CPU, or need a loss-free
/// live capture: the harness runs tests in parallel, and one test's load would skew another's
/// numbers. A test that panicked does not block the others.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ------------------------------------------------------------------------------------------
// The host under test

/// `wasmtap run` listening on 127.0.0.1:`port`, inside a test namespace or in this process's own;
/// killed on drop.
pub struct LiveHost {
    pub what: String,
    /// The namespace it runs in; `None`: this process's own.
    pub ns: Option<String>,
    pub addr: SocketAddr,
    pub port: u16,
    proc: Spawned,
}

/// The outcome of [`LiveHost::poll`].
pub struct Polled {
    /// Whether the condition held before the timeout.
    pub met: bool,
    /// The last scrape (empty if none succeeded).
    pub samples: Vec<Sample>,
    /// When the condition was first seen to hold (or the timeout), from the start of polling.
    pub after: Duration,
}

/// Calls `scrape` every [`POLL_INTERVAL`] until `done(samples)` holds of what it returns or
/// `timeout` passes.
pub fn poll_scrapes(
    scrape: impl Fn() -> Option<Vec<Sample>>,
    timeout: Duration,
    done: impl Fn(&[Sample]) -> bool,
) -> Polled {
    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        if let Some(s) = scrape() {
            samples = s;
            if done(&samples) {
                return Polled { met: true, samples, after: start.elapsed() };
            }
        }
        if start.elapsed() >= timeout {
            return Polled { met: false, samples, after: start.elapsed() };
        }
        thread::sleep(POLL_INTERVAL);
    }
}

impl LiveHost {
    /// Starts `wasmtap run --listen 127.0.0.1:PORT ARGS...` in namespace `ns` and returns once
    /// /metrics answers (≤ 60 s: the host compiles its analyzers at start).
    pub fn start(what: &str, ns: &str, args: &[&str]) -> LiveHost {
        LiveHost::spawn(what, Some(ns), args)
    }

    /// Like [`LiveHost::start`], in this process's network namespace (capturing on `lo`, say).
    pub fn start_here(what: &str, args: &[&str]) -> LiveHost {
        LiveHost::spawn(what, None, args)
    }

    fn spawn(what: &str, ns: Option<&str>, args: &[&str]) -> LiveHost {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = match ns {
            Some(ns) => netns_exec(ns, HOST),
            None => Command::new(HOST),
        };
        cmd.args(["run", "--listen", &addr.to_string()]).args(args).env("WASMTAP_LOG", "info");
        let mut host = LiveHost {
            what: what.to_string(),
            ns: ns.map(str::to_owned),
            addr,
            port,
            proc: Spawned::start(what, &mut cmd),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while host.get("/metrics").is_none() {
            host.assert_running();
            assert!(
                Instant::now() < deadline,
                "{what}: no /metrics within {START_TIMEOUT:?}:\n{}",
                host.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        host
    }

    /// The process id (`ip netns exec` execs the host, so this is the host itself).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Everything the host logged so far.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// The last lines of the log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Sends a signal ("STOP", "CONT", ...) to the host.
    pub fn signal(&self, sig: &str) {
        self.proc.signal(sig);
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.proc.try_status().is_none()
    }

    /// Panics, with the log, if the host has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.proc.try_status() {
            panic!("{}: exited ({status}):\n{}", self.what, self.log());
        }
    }

    /// Sends `signal` ("TERM", "INT"), then waits (at most `timeout`, then kills it); whether
    /// it exited with success, `None` if it had to be killed.
    pub fn stop(&mut self, signal: &str, timeout: Duration) -> Option<bool> {
        self.proc.signal(signal);
        self.proc.wait(timeout).map(|s| s.success())
    }

    /// GET `path` from the host, whatever the status.
    pub fn request(&self, path: &str) -> Result<Response, String> {
        match &self.ns {
            Some(ns) => http::get_in(ns, self.addr, path, REQUEST_TIMEOUT),
            None => http::get(self.addr, path, REQUEST_TIMEOUT),
        }
    }

    /// The body of a 2xx answer to GET `path`; `None` otherwise.
    pub fn get(&self, path: &str) -> Option<String> {
        self.request(path).ok()?.ok()
    }

    /// The HTTP status of GET `path`; `None` if nothing answered.
    pub fn status(&self, path: &str) -> Option<u16> {
        self.request(path).ok().map(|r| r.status)
    }

    /// /metrics, parsed; `None` if it did not answer.
    pub fn scrape(&self) -> Option<Vec<Sample>> {
        self.get("/metrics").map(|t| parse_exposition(&t))
    }

    /// /metrics, parsed; panics if it does not answer 200.
    pub fn metrics(&self) -> Vec<Sample> {
        self.scrape()
            .unwrap_or_else(|| panic!("{}: GET /metrics failed:\n{}", self.what, self.log_tail()))
    }

    /// The entries of `GET /analyzers` (JSON); panics if it does not answer 200 with a list.
    pub fn analyzers(&self) -> Vec<Value> {
        let body = self.get("/analyzers").unwrap_or_else(|| {
            panic!("{}: GET /analyzers failed:\n{}", self.what, self.log_tail())
        });
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/analyzers is not JSON ({e}): {body}"));
        json.as_array().cloned().unwrap_or_else(|| panic!("/analyzers is not a list: {body}"))
    }

    /// The `/analyzers` entry of the analyzer named `name`.
    pub fn analyzer(&self, name: &str) -> Option<Value> {
        self.analyzers().into_iter().find(|a| a["name"] == name)
    }

    /// The names in `/analyzers`.
    pub fn analyzer_names(&self) -> Vec<String> {
        self.analyzers().iter().filter_map(|a| a["name"].as_str().map(str::to_owned)).collect()
    }

    /// Scrapes every [`POLL_INTERVAL`] until `done(samples)` holds or `timeout` passes.
    pub fn poll(&self, timeout: Duration, done: impl Fn(&[Sample]) -> bool) -> Polled {
        poll_scrapes(|| self.scrape(), timeout, done)
    }

    /// Polls GET `path` until it answers `code`; returns how long that took, `None` on timeout.
    pub fn poll_status(&self, path: &str, code: u16, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if self.status(path) == Some(code) {
                return Some(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return None;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits (≤ `timeout`) for /readyz to answer 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.status("/readyz") != Some(200) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "{}: /readyz not 200 within {timeout:?} (last: {:?}):\n{}",
                self.what,
                self.status("/readyz"),
                self.log()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Reading the per-device metrics

/// The counter `name` of `device` (summed over its other labels), 0 when absent.
pub fn device_count(samples: &[Sample], name: &str, device: &str) -> u64 {
    let v = value_of(samples, name, &[("device", device)]).unwrap_or(0.0);
    as_count(v, &format!("{name}{{device={device:?}}}"))
}

/// `wasmtap_host_interface_up{device}`, `None` when the series is absent.
pub fn interface_up(samples: &[Sample], device: &str) -> Option<f64> {
    value_of(samples, "wasmtap_host_interface_up", &[("device", device)])
}

/// The samples labelled `device`.
pub fn device_samples(samples: &[Sample], device: &str) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.labels.get("device").is_some_and(|d| d == device))
        .cloned()
        .collect()
}

/// The packet accounting of one device in one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    /// `wasmtap_packets_total`: frames the analyzers saw.
    pub packets: u64,
    /// `wasmtap_host_packets_received_total`.
    pub received: u64,
    /// `wasmtap_host_packets_dropped_total` by reason, in [`DROP_REASONS`] order.
    pub dropped: [u64; 3],
}

impl DeviceCounts {
    pub fn of(samples: &[Sample], device: &str) -> DeviceCounts {
        let drop = |reason: &str| {
            let v = value_of(
                samples,
                "wasmtap_host_packets_dropped_total",
                &[("device", device), ("reason", reason)],
            );
            as_count(v.unwrap_or(0.0), &format!("dropped{{{device},{reason}}}"))
        };
        DeviceCounts {
            packets: device_count(samples, "wasmtap_packets_total", device),
            received: device_count(samples, "wasmtap_host_packets_received_total", device),
            dropped: DROP_REASONS.map(drop),
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// What this scrape accounts for: received plus every drop.
    pub fn accounted(&self) -> u64 {
        self.received + self.dropped_total()
    }

    /// The increase since `before`, field by field (saturating: a reset shows as 0).
    pub fn since(&self, before: &DeviceCounts) -> DeviceCounts {
        DeviceCounts {
            packets: self.packets.saturating_sub(before.packets),
            received: self.received.saturating_sub(before.received),
            dropped: [0, 1, 2].map(|i| self.dropped[i].saturating_sub(before.dropped[i])),
        }
    }
}

impl std::fmt::Display for DeviceCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "packets_total {}, received {}, dropped kernel {} interface {} queue_full {}",
            self.packets, self.received, self.dropped[0], self.dropped[1], self.dropped[2]
        )
    }
}

// ------------------------------------------------------------------------------------------
// Checks of the host's per-interface metrics

impl LiveHost {
    /// Polls (≤ 10 s) until every name in `names` has `interface_up` 1 (`up`) or 0 or no
    /// series (`!up`); returns how long that took. Panics with the stragglers and the log.
    pub fn wait_interfaces(&self, names: &[&str], up: bool, what: &str) -> Duration {
        let is = |s: &[Sample], n: &str| match interface_up(s, n) {
            Some(v) => v == if up { 1.0 } else { 0.0 },
            None => !up,
        };
        let polled = self.poll(Duration::from_secs(10), |s| names.iter().all(|n| is(s, n)));
        let wrong: Vec<String> = names
            .iter()
            .filter(|n| !is(&polled.samples, n))
            .map(|n| format!("{n}: interface_up {:?}", interface_up(&polled.samples, n)))
            .collect();
        assert!(
            wrong.is_empty(),
            "{what}: expected interface_up {} within 10 s:\n{}\nhost log:\n{}",
            if up { "1" } else { "0 or absent" },
            wrong.join("\n"),
            self.log()
        );
        polled.after
    }

    /// Sends `pcap` out of every `(device, peer)` of `links` (the peers in `ns`), and checks
    /// (≤ 5 s) that each device's `wasmtap_packets_total` and received count grow by exactly
    /// what tcpreplay sent.
    pub fn send_and_count(&self, ns: &str, links: &[(String, String)], pcap: &Path, what: &str) {
        let before = self.scrape().expect("scrape /metrics");
        let sent: Vec<u64> = links.iter().map(|(_, peer)| tcpreplay(ns, peer, pcap)).collect();
        let grown = |s: &[Sample], i: usize| {
            let d = DeviceCounts::of(s, &links[i].0).since(&DeviceCounts::of(&before, &links[i].0));
            d.packets == sent[i] && d.received == sent[i]
        };
        let counted = self.poll(Duration::from_secs(5), |s| (0..links.len()).all(|i| grown(s, i)));
        let wrong: Vec<String> = (0..links.len())
            .filter(|&i| !grown(&counted.samples, i))
            .map(|i| {
                let name = &links[i].0;
                let (then, now) =
                    (DeviceCounts::of(&before, name), DeviceCounts::of(&counted.samples, name));
                format!("{name}: sent {}; before: {then}; now: {now}", sent[i])
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{what}: the counts did not grow by what was sent within 5 s:\n{}",
            wrong.join("\n")
        );
    }

    /// The CPU time of the capture thread of `dev` per packet it received: `bursts` times,
    /// `pcap` is sent out of `peer` (in `ns`) and the thread's schedstat read before and once
    /// the host accounts for every packet. Returns the lowest cost (the least disturbed run).
    pub fn capture_cpu_per_packet(
        &self,
        ns: &str,
        dev: &str,
        peer: &str,
        pcap: &Path,
        bursts: usize,
    ) -> f64 {
        let pid = self.pid();
        let name = capture_thread_name(dev);
        let tid = find_thread(pid, &name).unwrap_or_else(|| {
            panic!("no single thread named {name:?} in the host: {:?}", threads(pid))
        });
        let mut lowest = f64::INFINITY;
        for _ in 0..bursts {
            let before = DeviceCounts::of(&self.scrape().expect("scrape /metrics"), dev);
            let cpu = thread_cpu_ns(pid, tid).expect("schedstat of the capture thread");
            let sent = tcpreplay(ns, peer, pcap);
            let done = self.poll(Duration::from_secs(10), |s| {
                DeviceCounts::of(s, dev).since(&before).accounted() == sent
            });
            let used = thread_cpu_ns(pid, tid).expect("schedstat of the capture thread") - cpu;
            let got = DeviceCounts::of(&done.samples, dev).since(&before);
            assert!(done.met, "{dev}: burst of {sent} packets, the host accounts for {got}");
            let cost = used as f64 / got.received.max(1) as f64;
            eprintln!(
                "  {dev}: burst of {sent}: {got}; {name} ran {:.1} ms, {cost:.0} ns/packet",
                used as f64 / 1e6
            );
            lowest = lowest.min(cost);
        }
        lowest
    }
}

// ------------------------------------------------------------------------------------------
// Generated captures and tcpreplay

/// Writes `dir/NAME.pcap` with `packets` TCP frames from `bench/synth_pcap.py` (Ethernet,
/// IPv4 and IPv6 in 10.77.0.0/16 and fd77::/64, locally administered MACs that no test
/// interface has, so a receiving stack drops them without answering).
pub fn synth_pcap(dir: &Path, name: &str, packets: u64) -> PathBuf {
    require_tools(&["python3"]);
    let out = dir.join(format!("{name}.pcap"));
    run_ok(
        Command::new("python3")
            .arg(repo_root().join("bench/synth_pcap.py"))
            .arg(&out)
            .args(["--packets", &packets.to_string()]),
        Duration::from_secs(300),
    );
    out
}

/// `tcpreplay --topspeed` of `pcap` out of `dev` in `ns`, as a Command (for a caller that
/// runs it in the background).
pub fn tcpreplay_cmd(ns: &str, dev: &str, pcap: &Path) -> Command {
    require_tools(&["tcpreplay"]);
    let mut cmd = netns_exec(ns, "tcpreplay");
    cmd.args(["--topspeed", "--intf1", dev]).arg(pcap);
    cmd
}

/// tcpreplay's "Successful packets" count, from its stdout.
pub fn tcpreplay_sent(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Successful packets:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no \"Successful packets\" in tcpreplay's output:\n{stdout}"))
}

/// Sends `pcap` out of `dev` in `ns` at top speed; returns tcpreplay's count of packets sent.
pub fn tcpreplay(ns: &str, dev: &str, pcap: &Path) -> u64 {
    tcpreplay_sent(&run_ok(&mut tcpreplay_cmd(ns, dev, pcap), Duration::from_secs(120)))
}

/// Waits until none of `files` has grown for `quiet` (≤ `timeout`): the traffic a capture
/// records has stopped. tcpdump -U writes each packet as it comes.
pub fn wait_files_quiet(files: &[&Path], quiet: Duration, timeout: Duration) {
    let size = || -> Vec<u64> {
        files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).collect()
    };
    let deadline = Instant::now() + timeout;
    let (mut last, mut since) = (size(), Instant::now());
    while since.elapsed() < quiet {
        assert!(Instant::now() < deadline, "captures still growing after {timeout:?}: {files:?}");
        thread::sleep(Duration::from_millis(100));
        let now = size();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

// ------------------------------------------------------------------------------------------
// /proc

/// The name of the host's capture thread for `ifname`: `cap-IFNAME`, cut to the 15 bytes a
/// Linux thread name holds.
pub fn capture_thread_name(ifname: &str) -> String {
    let mut name = format!("cap-{ifname}");
    name.truncate(15);
    name
}

/// Every thread of `pid`: thread id → name.
pub fn threads(pid: u32) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
            out.insert(tid, comm.trim_end().to_string());
        }
    }
    out
}

/// The id of the thread of `pid` named `name`, if exactly one is.
pub fn find_thread(pid: u32, name: &str) -> Option<u32> {
    let found: Vec<u32> =
        threads(pid).into_iter().filter(|(_, n)| n == name).map(|(t, _)| t).collect();
    (found.len() == 1).then(|| found[0])
}

/// CPU time a thread has run, in ns (the first field of /proc/PID/task/TID/schedstat).
pub fn thread_cpu_ns(pid: u32, tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A numeric field of /proc/PID/status (`VmRSS` in kB, `Threads`), `None` if absent.
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
