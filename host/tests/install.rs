//! First use (issue 11): the README's install step, `scripts/install --prefix DIR`, puts the
//! binary on PATH as `wasmtap`, and the commands work as typed — found through PATH, not by
//! their path: `wasmtap check` on the example analyzer, and (root) `wasmtap run -i lo`, whose
//! /readyz answers 200 and which exits 0 on SIGTERM.
//!
//! The install is given the binary under test (`--binary`) instead of building one: this runs
//! inside `cargo test`, whose build of the same binary is what should be checked, and a nested
//! `cargo build` here would wait on the outer cargo's lock and could relink
//! `target/release/wasmtap` under the other tests. Without `--binary` the script runs
//! `cargo build --release -p host` (a no-op when target/ is fresh) and installs its output.
//!
//! Inputs: `scripts/install`, the `wasmtap` binary, the example analyzer (built by the
//! `wasmtap-test-analyzers` dev-dependency), curl and `ip` for the root test.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::topology::Netns;
use common::*;

/// Bound for the install script (a copy) and for `wasmtap check` (compiles one analyzer and
/// replays the built-in sample).
const QUICK: Duration = Duration::from_secs(120);
/// The default `--listen` port, used as typed (`wasmtap run -i lo`): the test's own network
/// namespace has it free.
const METRICS_PORT: u16 = 9725;

/// `PREFIX/bin` first, then the test's own PATH: what a user gets after the install step.
fn path_with(bin: &Path) -> OsString {
    let mut dirs = vec![bin.to_path_buf()];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).expect("PATH")
}

/// Runs the install step into a fresh prefix; returns the prefix (a temp dir) and its `bin`.
fn install() -> (TempDir, PathBuf) {
    let prefix = TempDir::new("install");
    let r = run_with_timeout(
        Command::new(repo_root().join("scripts/install"))
            .arg("--prefix")
            .arg(prefix.path())
            .args(["--binary", HOST]),
        QUICK,
    );
    assert!(r.success(), "scripts/install failed: {}", r.describe());
    let bin = prefix.join("bin");
    let installed: Vec<String> = std::fs::read_dir(&bin)
        .expect("PREFIX/bin")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    // Only `wasmtap`: that one file is the whole install.
    assert_eq!(installed, ["wasmtap"], "what the install put in {}", bin.display());
    (prefix, bin)
}

#[test]
fn installed_wasmtap_checks_the_example_analyzer() {
    let (_prefix, bin) = install();
    let example = test_analyzer("syn-no-answer");
    let r = run_with_timeout(
        Command::new("wasmtap").env("PATH", path_with(&bin)).arg("check").arg(&example),
        QUICK,
    );
    assert!(r.success(), "wasmtap check {}: {}", example.display(), r.describe());
    let out = format!("{}{}", r.stdout_text(), r.stderr_text());
    assert!(out.contains("syn-no-answer"), "check names the analyzer: {}", r.describe());
    let version = run_ok(
        Command::new("wasmtap").env("PATH", path_with(&bin)).arg("--version"),
        Duration::from_secs(10),
    );
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "wasmtap --version: {version}");
}

#[test]
#[ignore = "needs root: run as root with --include-ignored (scripts/test does)"]
fn root_installed_wasmtap_runs_on_lo() {
    if !require_root("root_installed_wasmtap_runs_on_lo") {
        return;
    }
    require_tools(&["ip", "curl"]);
    let (_prefix, bin) = install();
    // Its own namespace: its `lo` carries nothing but this test's requests, and the default
    // port is free there.
    let ns = Netns::new("install");
    let mut cmd = ns.exec("wasmtap");
    cmd.env("PATH", path_with(&bin)).args(["run", "-i", "lo"]);
    let mut proc = Spawned::start("wasmtap run -i lo", &mut cmd);
    let readyz = format!("http://127.0.0.1:{METRICS_PORT}/readyz");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = run_with_timeout(
            ns.exec("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &readyz]),
            Duration::from_secs(10),
        );
        if r.stdout_text() == "200" {
            break;
        }
        if let Some(status) = proc.try_status() {
            panic!("wasmtap run exited ({status}):\n{}", proc.stderr());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz not 200 within 60 s (last {:?}):\n{}",
            r.stdout_text(),
            proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    proc.signal("TERM");
    let status = proc.wait(Duration::from_secs(15));
    let log = proc.stderr();
    assert!(
        status.is_some_and(|s| s.success()),
        "wasmtap run did not exit 0 within 15 s of SIGTERM ({status:?}):\n{log}"
    );
}
