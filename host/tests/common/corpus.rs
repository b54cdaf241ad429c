//! The capture corpus for the tests that replay it against tshark: where it is (or why the test
//! is skipped), and running one check per capture on every core.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// Captures checked at once: one per core of the 2-core CI machine.
pub const PARALLEL: usize = 2;

/// tshark reads UDP 4789 as VXLAN by itself, the Linux kernel's 8472 (the host's other default
/// port) only with Decode As (README, Tunnels: "To compare with Wireshark").
pub const DECODE_AS: [&str; 2] = ["-d", "udp.port==8472,vxlan"];

/// The corpus directory (WASMTAP_CORPUS), or `None` after saying on stderr that `test` is
/// skipped and why (a failure with WASMTAP_REQUIRE_CORPUS=1).
pub fn corpus_dir_or_skip(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("WASMTAP_CORPUS").filter(|v| !v.is_empty()).map(PathBuf::from);
    if dir.is_some() {
        return dir;
    }
    let msg = "WASMTAP_CORPUS is not set: point it at a folder of captures, such as tcpdump's \
               tests/ folder (the-tcpdump-group/tcpdump on GitHub)";
    if matches!(std::env::var("WASMTAP_REQUIRE_CORPUS").as_deref(), Ok("1")) {
        panic!("{msg} (WASMTAP_REQUIRE_CORPUS=1)");
    }
    // Straight to the process's stderr: libtest hides what a passing test prints.
    let _ = writeln!(std::io::stderr(), "\nSKIPPED {test}: {msg}\n");
    None
}

/// Every `.pcap` and `.pcapng` file in the corpus directory `dir`, sorted.
pub fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    files
}

/// Runs `work` on every item, [`PARALLEL`] at a time; the results in the items' order.
pub fn in_parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { return };
                    let r = work(item);
                    done.lock().expect("results").push((i, r));
                }
            });
        }
    });
    let mut done = done.into_inner().expect("results");
    done.sort_by_key(|d| d.0);
    done.into_iter().map(|d| d.1).collect()
}
