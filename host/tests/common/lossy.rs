//! Lossy real TCP for the tests that compare tcp-analysis with tshark (`root_tcp_analysis`,
//! `root_interfaces`): nftables dropping a share of the TCP segments a namespace receives, at
//! random and counted, and the `tcp_analysis/lossy.py` traffic (see its docstring).
//!
//! The drop happens on the input hook, after the packet taps of the namespace's interfaces: a
//! capture on the path still holds every lost segment and its retransmission.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{NetnsPair, Spawned, run_ok, run_with_input, run_with_timeout};

/// Name of the nftables table [`add_loss`] adds.
pub const LOSS_TABLE: &str = "wasmtap_loss";

/// The traffic script.
pub fn lossy_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tcp_analysis/lossy.py")
}

/// nftables in `ns`: drop `percent`% of incoming TCP segments at random, counted.
pub fn add_loss(pair: &NetnsPair, ns: &str, percent: u32) {
    let rules = format!(
        "table inet {LOSS_TABLE} {{\n  chain input {{\n    type filter hook input priority 0; \
         policy accept;\n    meta l4proto tcp numgen random mod 100 < {percent} counter drop\n  \
         }}\n}}\n"
    );
    let r = run_with_input(
        pair.exec(ns, "nft").args(["-f", "-"]),
        Some(rules.as_bytes()),
        Duration::from_secs(10),
    );
    assert!(r.success(), "nft in {ns} failed: {}", r.describe());
}

/// Segments the [`add_loss`] rule in `ns` dropped so far.
pub fn loss_drops(pair: &NetnsPair, ns: &str) -> u64 {
    let out = run_ok(
        pair.exec(ns, "nft").args(["list", "table", "inet", LOSS_TABLE]),
        Duration::from_secs(10),
    );
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop counter in:\n{out}"))
}

/// Starts `lossy.py serve` in `ns` on every address of `addrs` (ports `port`..`port`+2);
/// returns once it listens.
pub fn start_lossy_server(pair: &NetnsPair, ns: &str, addrs: &[&str], port: u16) -> Spawned {
    let mut cmd = pair.exec(ns, "python3");
    cmd.arg(lossy_script()).arg("serve");
    for addr in addrs {
        cmd.args(["--addr", addr]);
    }
    cmd.args(["--port", &port.to_string(), "--lifetime", "240"]);
    let mut server = Spawned::start("lossy.py server", &mut cmd);
    server.wait_for_output("READY", true, Duration::from_secs(20));
    server
}

/// Runs every `lossy.py client` scenario from `ns` against `addr` (bulk: `bulk_bytes` up and
/// half as much down; `slow_bytes` to the slow reader). Panics if the client fails or takes
/// longer than `timeout_secs`; returns its JSON summary line.
pub fn run_lossy_client(
    pair: &NetnsPair,
    ns: &str,
    addr: &str,
    port: u16,
    bulk_bytes: u64,
    slow_bytes: u64,
    timeout_secs: u64,
) -> String {
    let r = run_with_timeout(
        pair.exec(ns, "python3").arg(lossy_script()).args([
            "client",
            "--addr",
            addr,
            "--port",
            &port.to_string(),
            "--bulk-bytes",
            &bulk_bytes.to_string(),
            "--slow-bytes",
            &slow_bytes.to_string(),
            "--timeout",
            &timeout_secs.to_string(),
        ]),
        Duration::from_secs(timeout_secs + 10),
    );
    assert!(r.success(), "lossy.py client {addr} failed: {}", r.describe());
    r.stdout_text().trim().to_string()
}
