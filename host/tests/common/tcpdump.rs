//! tcpdump writing a reference capture of one interface inside a test namespace, for tshark
//! to read: started once it captures, stopped with a check that the kernel dropped nothing.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use super::process::{Spawned, require_tools};
use super::topology::netns_exec;

/// tcpdump writing a pcap, inside a namespace; killed on drop.
pub struct Tcpdump {
    proc: Spawned,
    pub file: PathBuf,
}

impl Tcpdump {
    /// Starts `tcpdump -i dev -w file` in namespace `ns` and returns once it is capturing.
    pub fn start(ns: &str, dev: &str, file: &Path) -> Tcpdump {
        Tcpdump::start_with(ns, dev, file, &[])
    }

    /// As [`Tcpdump::start`], writing nanosecond timestamps: at microseconds some ACKs get
    /// the same stamp as the segment they time, for which tshark then shows no round-trip time.
    pub fn start_nano(ns: &str, dev: &str, file: &Path) -> Tcpdump {
        Tcpdump::start_with(ns, dev, file, &["--time-stamp-precision=nano"])
    }

    fn start_with(ns: &str, dev: &str, file: &Path, extra: &[&str]) -> Tcpdump {
        require_tools(&["tcpdump"]);
        let mut cmd = netns_exec(ns, "tcpdump");
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
        ])
        .args(extra)
        .arg("-w")
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
