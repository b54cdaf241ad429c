//! Helpers for the scrape tests (`root_scrape`): a storm of curl scrapers and their status
//! counts, scrapes kept for checking (gzip or not) and a process's peak RSS.
//!
//! As everywhere in `common`, what is started here is stopped on drop, also when a test
//! panics, and every wait is bounded.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::live::proc_status;
use super::topology::netns_exec;
use super::{Spawned, run_with_timeout};

/// Polls VmRSS of `pid` every 100 ms until stopped (or dropped); [`RssMonitor::stop`] returns
/// the peak in KiB.
pub struct RssMonitor {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssMonitor {
    pub fn start(pid: u32) -> RssMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = proc_status(pid, "VmRSS") {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        RssMonitor { stop, peak, thread: Some(thread) }
    }

    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// HTTP status counts of the storm.
#[derive(Debug, Default, Clone, Copy)]
pub struct Codes {
    pub ok: u64,
    pub busy: u64,
    pub other: u64,
}

impl Codes {
    /// Counts curl's `%{http_code}` lines (000 is a transfer that failed).
    pub fn add_lines(&mut self, text: &str) {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line {
                "200" => self.ok += 1,
                "503" => self.busy += 1,
                _ => self.other += 1,
            }
        }
    }
}

/// One curl process keeping `parallel` connections busy with GET /metrics, printing each
/// answer's status on its own line (line-buffered, so stopping it loses none).
pub fn hammer(ns: &str, port: u16, parallel: usize, gzip: bool) -> Spawned {
    let mut cmd = netns_exec(ns, "stdbuf");
    cmd.args(["-oL", "curl", "-s", "-Z", "--parallel-max", &parallel.to_string()]);
    if gzip {
        cmd.args(["-H", "Accept-Encoding: gzip"]);
    }
    // A glob far longer than the storm: curl runs until stopped.
    cmd.args(["-o", "/dev/null", "-w", "%{http_code}\\n"])
        .arg(format!("http://127.0.0.1:{port}/metrics?n=[1-100000000]"));
    Spawned::start(if gzip { "curl (gzip)" } else { "curl" }, &mut cmd)
}

/// One scrape kept for checking: the body as received and whether it came gzip-encoded.
pub struct Kept {
    pub body: PathBuf,
    pub gzip_asked: bool,
    pub gzip_sent: bool,
}

/// Takes `samples` successful scrapes, alternately asking for gzip, spread over `span`
/// (retrying 503s); returns them and the status counts of every attempt.
pub fn sample_scrapes(
    ns: &str,
    port: u16,
    dir: &Path,
    samples: usize,
    span: Duration,
) -> (Vec<Kept>, Codes) {
    let mut kept = Vec::new();
    let mut codes = Codes::default();
    let start = Instant::now();
    for i in 0..samples {
        let due = start + span.mul_f64(i as f64 / samples as f64);
        thread::sleep(due.saturating_duration_since(Instant::now()));
        let gzip_asked = i % 2 == 0;
        let body = dir.join(format!("scrape-{i}.body"));
        let headers = dir.join(format!("scrape-{i}.headers"));
        for _ in 0..200 {
            let mut cmd = netns_exec(ns, "curl");
            cmd.args(["-s", "--max-time", "10", "-w", "%{http_code}", "-o"]).arg(&body);
            cmd.arg("-D").arg(&headers);
            if gzip_asked {
                cmd.args(["-H", "Accept-Encoding: gzip"]);
            }
            cmd.arg(format!("http://127.0.0.1:{port}/metrics"));
            let r = run_with_timeout(&mut cmd, Duration::from_secs(15));
            let code = r.stdout_text();
            codes.add_lines(&code);
            if code.trim() == "200" {
                let h = std::fs::read_to_string(&headers).unwrap_or_default().to_lowercase();
                let gzip_sent = h.lines().any(|l| l.trim() == "content-encoding: gzip");
                kept.push(Kept { body, gzip_asked, gzip_sent });
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    (kept, codes)
}

/// The exposition text of a kept scrape, decompressed if it came gzip-encoded.
pub fn exposition_of(k: &Kept) -> String {
    let raw = std::fs::read(&k.body).unwrap_or_else(|e| panic!("{}: {e}", k.body.display()));
    if !k.gzip_sent {
        return String::from_utf8(raw).expect("identity exposition is UTF-8");
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{}: not valid gzip: {e}", k.body.display()));
    text
}
