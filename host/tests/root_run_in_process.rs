//! ROOT: `wasmtap run` started and stopped inside the test process, through the library.
//!
//! `app::run` takes its control signals from the caller (the binary turns SIGHUP, SIGINT and
//! SIGTERM into them), so a test can run the whole live host on `lo` on a thread of its own,
//! scrape it, reload it, and stop it, then see that it returned success and stopped serving.
//!
//! Skipped (loudly) without root, unless WASMTAP_REQUIRE_ROOT=1 makes that a failure.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ::host::app::Signal;
use ::host::cli::Cli;
use clap::Parser;
use common::{free_port, require_root};

/// How long the host may take to become ready: it compiles the built-in analyzers (a few
/// hundred ms, more on a loaded machine) before it serves.
const READY_WITHIN: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn root_run_starts_reloads_and_stops_on_the_callers_signals() {
    if !require_root("root_run_starts_reloads_and_stops_on_the_callers_signals") {
        return;
    }
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listen = addr.to_string();
    let cli =
        Cli::try_parse_from(["wasmtap", "run", "-i", "lo", "--listen", &listen, "--no-cache"])
            .expect("valid flags");
    let (tx, rx) = tokio::sync::watch::channel(None::<Signal>);
    let host = std::thread::spawn(move || {
        // Each call waits for the next signal the test sends.
        let signals = move || {
            let mut rx = rx.clone();
            async move {
                let changed = rx.changed().await;
                match *rx.borrow_and_update() {
                    Some(s) if changed.is_ok() => s,
                    _ => Signal::Stop("the test is gone"),
                }
            }
        };
        ::host::app::run(cli, signals).map_err(|e| format!("{e:#}"))
    });

    let deadline = Instant::now() + READY_WITHIN;
    let ready = || common::http::get(addr, "/readyz", Duration::from_secs(5));
    while !ready().is_ok_and(|r| r.status == 200) {
        assert!(!host.is_finished(), "the host ended before it was ready");
        assert!(Instant::now() < deadline, "not ready within {READY_WITHIN:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = common::http::get(addr, "/metrics", Duration::from_secs(10))
        .ok()
        .and_then(common::http::Response::ok)
        .expect("/metrics answers 200");
    assert!(metrics.contains("wasmtap_host_interface_up{device=\"lo\"} 1"), "{metrics}");

    // A reload without --config changes nothing, and the host goes on serving.
    tx.send(Some(Signal::Reload)).expect("the host listens");
    std::thread::sleep(Duration::from_millis(300));
    assert!(ready().is_ok_and(|r| r.status == 200), "still ready after a reload");

    tx.send(Some(Signal::Stop("test"))).expect("the host listens");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !host.is_finished() {
        assert!(Instant::now() < deadline, "the host did not stop within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = host.join().expect("the host thread did not panic");
    assert_eq!(code, Ok(ExitCode::SUCCESS));
    assert!(ready().is_err(), "nothing listens on {addr} once run has returned");
}
