//! ROOT: wasmtap's container image (issue 11), built with `scripts/image` and run by podman
//! the way the Helm chart runs it.
//!
//! The image is built from the host binary under test on a Debian 12 base made here with
//! mmdebstrap (no image registry is reachable; the base's tarball is cached under target/).
//! The container then runs with the chart's security settings — every capability dropped but
//! `NET_RAW` (capture needs no `NET_ADMIN`: this test passes without it), a read-only root
//! file system, no new privileges, podman's default seccomp profile — inside a network
//! namespace of the test's own, capturing one end of a veth pair that carries real TCP
//! traffic between two namespaces. Its compile cache is a host directory of mode 0777, as
//! kubelet makes an `emptyDir`; its `--analyzer-dir` is laid out and updated as kubelet does a
//! ConfigMap volume (`common::container::ConfigMapDir`).
//!
//! Checked: the settings are in force inside the container; `/metrics` equals tshark on a
//! tcpdump capture of the same interface (resets, DF and window-scale options per address
//! pair; frames as a lower bound, since the container captured before tcpdump started); the
//! drop-in analyzer (the example `syn-no-answer`) loads, counts the refused connections tshark
//! shows, and unloads with its series when `..data` is swapped to a payload without it; SIGTERM
//! stops the container with exit code 0; the second start compiles nothing (the log says every
//! analyzer came from the compile cache), and the analyzer put back into the volume loads from
//! the cache too.
//!
//! Skipped (loudly) without root, unless WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::container::{ConfigMapDir, Container, Podman};
use common::*;

/// The traffic server's base port (see `common::traffic`).
const TRAFFIC_PORT: u16 = 5001;
/// Small bursts: exact live counts must not depend on the capture buffer's size.
const BURST_BYTES: u64 = 200_000;
/// The image's default `--listen` port, which the test leaves as it is.
const METRICS_PORT: u16 = 9725;
/// Where the chart mounts the cache (an emptyDir) and the analyzers' ConfigMap.
const CACHE_MOUNT: &str = "/var/cache/wasmtap";
const ANALYZER_MOUNT: &str = "/etc/wasmtap/analyzers";
/// The drop-in analyzer, its file name in the volume and its refused-attempts family.
const EXAMPLE: &str = "syn-no-answer";
const EXAMPLE_FILE: &str = "syn-no-answer.wasm";
const REFUSED: &str = "wasmtap_tcp_syn_refused_total";
/// The README's promise for changes in the watched directory.
const RELOAD_LIMIT: Duration = Duration::from_secs(2);
/// Start-up includes compiling every analyzer on a cold cache: generous for a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the counts may take to catch up with the capture: batches flush within ~150 ms.
const CATCH_UP: Duration = Duration::from_secs(10);
/// `CAP_NET_RAW` (bit 13) alone, as /proc/PID/status shows a capability set.
const NET_RAW_ONLY: &str = "0000000000002000";
/// The log lines of `host/src/runtime/cache.rs` for a compilation and for a cache hit.
const COMPILED: &str = "compiled; stored in the cache";
const FROM_CACHE: &str = "loaded from the compile cache";
/// The log line once the HTTP server is up (`host/src/app.rs`).
const SERVING: &str = "serving /metrics";

/// The chart's security settings (k8s/wasmtap/templates/daemonset.yaml) as podman options,
/// with the cache and analyzer volumes. `--read-only-tmpfs=false`: Kubernetes mounts no
/// writable /tmp on a read-only root file system either.
fn chart_options(cache: &Path, analyzers: &Path) -> Vec<String> {
    vec![
        "--cap-drop=ALL".into(),
        "--cap-add=NET_RAW".into(),
        "--read-only".into(),
        "--read-only-tmpfs=false".into(),
        "--security-opt=no-new-privileges".into(),
        format!("--volume={}:{CACHE_MOUNT}", cache.display()),
        format!("--volume={}:{ANALYZER_MOUNT}:ro", analyzers.display()),
    ]
}

/// A field of the container's /proc/1/status (the host is its pid 1).
fn proc_status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in /proc/1/status:\n{status}"))
}

/// Seconds from the first log line containing `from` to the first containing `to`, by the
/// log's own time stamps (`2026-01-01T10:00:00.123456Z ...`).
fn log_span(log: &str, from: &str, to: &str) -> Option<f64> {
    let at = |needle: &str| -> Option<f64> {
        let line = log.lines().find(|l| l.contains(needle))?;
        let time = line.split_whitespace().next()?.split('T').nth(1)?.trim_end_matches('Z');
        let mut parts = time.split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        Some(
            h.parse::<f64>().ok()? * 3600.0
                + m.parse::<f64>().ok()? * 60.0
                + s.parse::<f64>().ok()?,
        )
    };
    Some(at(to)? - at(from)?)
}

/// Whether `GET /analyzers` lists the example.
fn lists_example(body: &str) -> bool {
    let list: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("/analyzers is not JSON ({e}): {body}"));
    list.as_array().is_some_and(|l| l.iter().any(|a| a["name"] == EXAMPLE))
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn image_captures_serves_reloads_and_caches_as_the_chart_runs_it() {
    if !require_root("image_captures_serves_reloads_and_caches_as_the_chart_runs_it") {
        return;
    }
    require_tools(&["podman", "runc", "mmdebstrap", "tcpdump", "tshark", "python3", "curl"]);
    let podman = Podman::new();
    let image = podman.build_image(&format!("localhost/wasmtap-test:{}", std::process::id()));
    eprintln!("image {}: {:.1} MB", image.tag, image.size() as f64 / 1e6);

    let pair = NetnsPair::new();
    let dir = TempDir::new("image");
    let cache = dir.join("cache");
    std::fs::create_dir(&cache).expect("mkdir cache");
    // As kubelet makes an emptyDir.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let example = std::fs::read(test_analyzer(EXAMPLE)).expect("read example");
    let mut volume = ConfigMapDir::new(&dir.join("analyzers"), &[(EXAMPLE_FILE, &example)]);
    let options = chart_options(&cache, &volume.path);
    let args =
        ["run", "-i", &pair.veth_a, "--cache-dir", CACHE_MOUNT, "--analyzer-dir", ANALYZER_MOUNT];

    // ---- First start: a cold cache.
    let mut first = Container::start(&podman, &image, &pair.a, METRICS_PORT, &options, &args);
    let first_ready = first.wait_ready(READY_TIMEOUT);

    // The chart's settings are in force.
    let status = first.exec(&["cat", "/proc/1/status"]);
    assert_eq!(proc_status_field(&status, "CapEff"), NET_RAW_ONLY, "effective capabilities");
    assert_eq!(proc_status_field(&status, "CapBnd"), NET_RAW_ONLY, "bounding capabilities");
    assert_eq!(proc_status_field(&status, "NoNewPrivs"), "1", "no-new-privileges");
    assert_eq!(proc_status_field(&status, "Seccomp"), "2", "a seccomp filter");
    assert_eq!(first.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true", "read-only root fs");

    // Every analyzer was compiled and stored in a private subdirectory of the shared one.
    let log = first.log();
    assert_eq!(log.matches(COMPILED).count(), 4, "3 defaults + the example compiled:\n{log}");
    assert_eq!(log.matches(FROM_CACHE).count(), 0, "the cache was empty:\n{log}");
    let private = cache.join("wasmtap-0");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&private), 0o700, "{}", private.display());
    let entries: Vec<_> =
        std::fs::read_dir(&private).expect("ls cache").map(|e| e.expect("entry").path()).collect();
    assert_eq!(entries.len(), 4, "{entries:?}");
    for e in &entries {
        assert_eq!(mode(e), 0o600, "{}", e.display());
    }
    assert!(first.get("/analyzers").is_some_and(|b| lists_example(&b)), "{}", first.log());

    // Real traffic, with a reference capture of the same interface.
    let reference = dir.join("reference.pcap");
    let tcpdump = Tcpdump::start(&pair.a, &pair.veth_a, &reference);
    let server = start_traffic_server(&pair, TRAFFIC_PORT);
    run_traffic_client(&pair, &pair.v4_b, TRAFFIC_PORT, BURST_BYTES);
    run_traffic_client(&pair, &pair.v6_b, TRAFFIC_PORT, BURST_BYTES);
    tcpdump.stop();
    drop(server);

    let resets = tshark_count_by_pair(&reference, "tcp.flags.reset==1");
    let df = tshark_count_by_pair(&reference, "ip.flags.df==1");
    let wscale = tshark_count_by_pair(&reference, "tcp.options.wscale.shift");
    let frames = tshark_count(&reference, None);
    // One RST/ACK from the closed port per refused attempt.
    let refused = tshark_count(
        &reference,
        Some(&format!(
            "tcp.flags.reset==1 && tcp.flags.ack==1 && tcp.srcport=={}",
            TRAFFIC_PORT + REFUSED_PORT_OFFSET
        )),
    );
    assert!(!resets.is_empty() && !df.is_empty() && !wscale.is_empty() && refused > 0);
    let (matched, samples) = first.poll(CATCH_UP, |s| {
        sum_by_pair(s, "wasmtap_tcp_resets_total") == resets
            && sum_by_pair(s, "wasmtap_ip_dont_fragment_total") == df
            && sum_by_pair(s, "wasmtap_tcp_window_scale_options_total") == wscale
            && has_metric(s, REFUSED)
            && count_metric(s, REFUSED) == refused
            && count_metric(s, "wasmtap_packets_total") >= frames
    });
    assert!(
        matched,
        "/metrics never matched tshark: resets {:?} vs {resets:?}, DF {:?} vs {df:?}, wscale \
         {:?} vs {wscale:?}, refused {} vs {refused}, packets {} vs ≥ {frames}\n{}",
        sum_by_pair(&samples, "wasmtap_tcp_resets_total"),
        sum_by_pair(&samples, "wasmtap_ip_dont_fragment_total"),
        sum_by_pair(&samples, "wasmtap_tcp_window_scale_options_total"),
        count_metric(&samples, REFUSED),
        count_metric(&samples, "wasmtap_packets_total"),
        first.log()
    );
    let devices: Vec<&String> = samples
        .iter()
        .filter(|s| s.name == "wasmtap_packets_total" || s.name == REFUSED)
        .filter_map(|s| s.labels.get("device"))
        .collect();
    assert!(devices.iter().all(|d| **d == pair.veth_a), "device labels {devices:?}");
    eprintln!(
        "container /metrics = tshark: resets {resets:?}, DF {df:?}, wscale {wscale:?}, \
         refused {refused}, packets {} ≥ {frames}",
        count_metric(&samples, "wasmtap_packets_total")
    );

    // The ConfigMap is edited: `..data` swaps to a payload without the analyzer.
    volume.update(&[]);
    let unloaded = first.poll_body("/analyzers", RELOAD_LIMIT, |b| !lists_example(b));
    assert!(unloaded.is_some(), "still loaded {RELOAD_LIMIT:?} after the swap:\n{}", first.log());
    let (gone, _) = first.poll(RELOAD_LIMIT, |s| !has_metric(s, REFUSED));
    assert!(gone, "{REFUSED} still in /metrics after the unload");
    eprintln!("analyzer unloaded {unloaded:?} after the ..data swap");

    let first_log = first.log();
    let code = first.stop(Duration::from_secs(15));
    assert_eq!(code, Some(0), "exit code after SIGTERM:\n{first_log}");

    // ---- Second start: the cache is warm.
    let mut second = Container::start(&podman, &image, &pair.a, METRICS_PORT, &options, &args);
    let second_ready = second.wait_ready(READY_TIMEOUT);
    let log = second.log();
    assert_eq!(log.matches(FROM_CACHE).count(), 3, "the defaults from the cache:\n{log}");
    assert_eq!(log.matches(COMPILED).count(), 0, "nothing compiled:\n{log}");

    // The analyzer comes back: loaded, from the cache too.
    volume.update(&[(EXAMPLE_FILE, &example)]);
    let loaded = second.poll_body("/analyzers", RELOAD_LIMIT, lists_example);
    assert!(loaded.is_some(), "not loaded {RELOAD_LIMIT:?} after the swap:\n{}", second.log());
    let log = second.log();
    assert_eq!(log.matches(FROM_CACHE).count(), 4, "the example from the cache:\n{log}");

    let cold = log_span(&first_log, "compile cache", SERVING);
    let warm = log_span(&log, "compile cache", SERVING);
    eprintln!(
        "start-up, podman run to /readyz 200: first (cold cache) {first_ready:.2?}, second \
         (warm) {second_ready:.2?}; cache opened to serving, by the log: cold {cold:.3?} s, \
         warm {warm:.3?} s"
    );
    let second_log = second.log();
    let code = second.stop(Duration::from_secs(15));
    assert_eq!(code, Some(0), "exit code after SIGTERM:\n{second_log}");
}
