//! Real TCP between the two namespaces of a [`NetnsPair`]: the `tests/traffic.py` server in
//! `b` and its client in `a` (bulk transfers, a slow reader, a refused connection, an abort
//! and a SO_LINGER-0 close; see the script's docstring), and nftables dropping a share of the
//! TCP segments a namespace receives, at random and counted ([`add_loss`]).
//!
//! The drop happens on the input hook, after the packet taps of the namespace's interfaces: a
//! capture on the path still holds every lost segment and its retransmission.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::process::{
    Spawned, fresh_capture, require_tools, run_ok, run_with_input, run_with_timeout,
};
use super::tcpdump::Tcpdump;
use super::topology::{NetnsPair, netns_exec};

/// The server's ports, from its base port: bulk sink at +0, slow reader +1, abort +2; nothing
/// listens on +3, so a connection there is refused.
pub const SLOW_PORT_OFFSET: u16 = 1;
pub const ABORT_PORT_OFFSET: u16 = 2;
pub const REFUSED_PORT_OFFSET: u16 = 3;

/// Bound on one client run on a clean link (a few MB on a veth take well under a second).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one client run on a lossy link: retransmission timeouts and the slow reader's
/// seconds of zero windows.
const LOSSY_CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the server lives at most, in seconds: longer than any test's traffic.
const SERVER_LIFETIME_SECS: &str = "240";

/// Name of the nftables table [`add_loss`] adds.
pub const LOSS_TABLE: &str = "wasmtap_loss";

/// The traffic script (see its docstring).
pub fn traffic_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traffic.py")
}

/// What one run of the traffic client did: its JSON summary line, parsed.
#[derive(Debug)]
pub struct ClientReport(pub Value);

impl ClientReport {
    /// Whether the connection to the closed port was refused.
    pub fn refused(&self) -> bool {
        self.0["refused"]["refused"] == true
    }

    /// Whether the client saw the reset of the abort scenario (a lost RST it does not see).
    pub fn reset_seen(&self) -> bool {
        self.0["abort"]["reset_seen"] == true
    }
}

impl std::fmt::Display for ClientReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Starts the traffic server in namespace `b` on each of its addresses (`v4_b`, and `v6_b`
/// unless empty), ports `port`..`port`+2; returns once it listens.
pub fn start_traffic_server(pair: &NetnsPair, port: u16) -> Spawned {
    require_tools(&["python3"]);
    let mut cmd = pair.exec(&pair.b, "python3");
    cmd.arg(traffic_script()).arg("serve");
    for addr in [&pair.v4_b, &pair.v6_b].into_iter().filter(|a| !a.is_empty()) {
        cmd.args(["--addr", addr]);
    }
    cmd.args(["--port", &port.to_string(), "--lifetime", SERVER_LIFETIME_SECS]);
    let mut server = Spawned::start("traffic server", &mut cmd);
    server.wait_for_output("READY", true, Duration::from_secs(20));
    server
}

/// Runs the client scenarios bulk (`bulk_bytes` up, half as much down), refused, abort and
/// linger0 from namespace `a` against `addr`, one of `b`'s addresses, on a link without loss.
/// Panics if a scenario misbehaved, including an abort whose reset the client did not see.
pub fn run_traffic_client(
    pair: &NetnsPair,
    addr: &str,
    port: u16,
    bulk_bytes: u64,
) -> ClientReport {
    let report = client(pair, addr, port, bulk_bytes, 0, CLIENT_TIMEOUT);
    assert!(
        report.refused() && report.reset_seen(),
        "traffic client did not see the expected refusal and reset: {report}"
    );
    report
}

/// Like [`run_traffic_client`] on a lossy link (see [`add_loss`]), with the slow-reader
/// scenario too (`slow_bytes` to a reader that keeps closing its window). Loss can hide the
/// abort's reset from the client, so that one is not checked.
pub fn run_lossy_traffic_client(
    pair: &NetnsPair,
    addr: &str,
    port: u16,
    bulk_bytes: u64,
    slow_bytes: u64,
) -> ClientReport {
    let report = client(pair, addr, port, bulk_bytes, slow_bytes, LOSSY_CLIENT_TIMEOUT);
    assert!(report.refused(), "traffic client was not refused: {report}");
    report
}

/// `traffic.py client` in namespace `a`; its parsed summary. Panics unless it exits 0 (a
/// transfer went wrong, or a scenario did not behave) within `timeout`.
fn client(
    pair: &NetnsPair,
    addr: &str,
    port: u16,
    bulk_bytes: u64,
    slow_bytes: u64,
    timeout: Duration,
) -> ClientReport {
    let mut cmd = pair.exec(&pair.a, "python3");
    cmd.arg(traffic_script()).args([
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
        &timeout.as_secs().to_string(),
    ]);
    let r = run_with_timeout(&mut cmd, timeout + Duration::from_secs(10));
    assert!(r.success(), "traffic client {addr} failed: {}", r.describe());
    let line = r.stdout.trim();
    let json = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("traffic client {addr}: its summary is not JSON ({e}): {line}"));
    ClientReport(json)
}

/// nftables in `ns`: drop `percent`% of incoming TCP segments at random, counted.
pub fn add_loss(ns: &str, percent: u32) {
    require_tools(&["nft"]);
    let rules = format!(
        "table inet {LOSS_TABLE} {{\n  chain input {{\n    type filter hook input priority 0; \
         policy accept;\n    meta l4proto tcp numgen random mod 100 < {percent} counter drop\n  \
         }}\n}}\n"
    );
    let r = run_with_input(
        netns_exec(ns, "nft").args(["-f", "-"]),
        Some(rules.as_bytes()),
        Duration::from_secs(10),
    );
    assert!(r.success(), "nft in {ns} failed: {}", r.describe());
}

/// Segments the [`add_loss`] rule in `ns` dropped so far.
pub fn loss_drops(ns: &str) -> u64 {
    let out = run_ok(
        netns_exec(ns, "nft").args(["list", "table", "inet", LOSS_TABLE]),
        Duration::from_secs(10),
    );
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop counter in:\n{out}"))
}

/// A lossy capture that [`record_lossy`] made.
pub struct LossyCapture {
    pub file: PathBuf,
    /// Frames tcpdump captured.
    pub captured: u64,
    /// Segments nftables dropped a → b (in b's input) and b → a (in a's input).
    pub dropped_ab: u64,
    pub dropped_ba: u64,
}

/// Records the traffic on a lossy link: a new [`NetnsPair`] with [`add_loss`] of `percent`% in
/// both namespaces, the server on `port`, and the lossy client (`bulk_bytes`, `slow_bytes`)
/// against each of b's addresses, IPv4 then IPv6, captured by tcpdump on a's veth into a fresh
/// file `prefix*` in the tests' target directory. Every lost segment and its retransmission are
/// in the capture.
pub fn record_lossy(
    prefix: &str,
    percent: u32,
    port: u16,
    bulk_bytes: u64,
    slow_bytes: u64,
) -> LossyCapture {
    require_tools(&["tcpdump", "python3", "ip", "nft", "ethtool"]);
    let file = fresh_capture(Path::new(env!("CARGO_TARGET_TMPDIR")), prefix);
    let pair = NetnsPair::new();
    for ns in [&pair.a, &pair.b] {
        add_loss(ns, percent);
    }
    let tcpdump = Tcpdump::start(&pair.a, &pair.veth_a, &file);
    let _server = start_traffic_server(&pair, port);
    for addr in [&pair.v4_b, &pair.v6_b] {
        let report = run_lossy_traffic_client(&pair, addr, port, bulk_bytes, slow_bytes);
        eprintln!("client {addr}: {report}");
    }
    let captured = tcpdump.stop();
    let (dropped_ab, dropped_ba) = (loss_drops(&pair.b), loss_drops(&pair.a));
    eprintln!(
        "captured {captured} packets into {}; nftables dropped {dropped_ab} segments a→b and \
         {dropped_ba} b→a",
        file.display()
    );
    LossyCapture { file, captured, dropped_ab, dropped_ba }
}
