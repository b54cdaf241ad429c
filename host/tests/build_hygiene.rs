//! Build hygiene (issue 11): `cargo build --release -p host` builds only what the binary ships.
//! The test analyzers and the example are built by the `wasmtap-test-analyzers` crate, which
//! only the host's tests depend on, so a plain build compiles none of them and needs no
//! `wasm32-wasip2` target; and the built-in analyzers' Rust code is linked natively only with
//! the benchmark's `native-defaults` feature.
//!
//! Cheap evidence, instead of a cold build of the host in a scratch target dir (≈8 minutes on
//! 2 cores; the README gives the figures measured by hand):
//! - the dependency graph: `cargo tree -e normal,build -p host` (what a plain build compiles)
//!   lists no `wasmtap-test-analyzers`, while the graph with dev edges does, so the check can
//!   see it;
//! - what the host's build script actually asked the nested guest cargo to build
//!   (`guest-crates.txt` beside the default analyzers it wrote): the default analyzers' crates,
//!   for `wasm32-unknown-unknown`, and nothing else; and that it wrote no test analyzer;
//! - its source: `host/build.rs` includes only `build/guest.rs`, and neither names the WASI
//!   target as a string.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// The crate that builds the test analyzers.
const TEST_CRATE: &str = "wasmtap-test-analyzers";
/// The default analyzers' crates, which the host embeds (as in host/build.rs).
const DEFAULT_CRATES: [&str; 3] =
    ["wasmtap-analyzer-traffic", "wasmtap-analyzer-header-flags", "wasmtap-analyzer-tcp-analysis"];

/// `cargo tree -p host --prefix none -f {p} -e EDGES`: one package per line.
fn tree(edges: &str) -> String {
    tree_with(edges, &[])
}

/// [`tree`] with more arguments (`--features ...`).
fn tree_with(edges: &str, more: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run_ok(
        Command::new(cargo)
            .current_dir(repo_root())
            .args(["tree", "--locked", "-p", "host", "--prefix", "none", "-f", "{p}", "-e"])
            .arg(edges)
            .args(more),
        Duration::from_secs(120),
    )
}

fn lists(tree: &str, package: &str) -> bool {
    tree.lines().any(|l| l.split_whitespace().next() == Some(package))
}

#[test]
fn a_plain_build_of_host_depends_on_no_test_analyzer() {
    let plain = tree("normal,build");
    assert!(lists(&plain, "wit-component"), "the build graph looks wrong:\n{plain}");
    assert!(!lists(&plain, TEST_CRATE), "{TEST_CRATE} is in the plain build graph:\n{plain}");
    let with_dev = tree("normal,build,dev");
    assert!(lists(&with_dev, TEST_CRATE), "{TEST_CRATE} is not a dev-dependency:\n{with_dev}");
}

/// The product links no guest crate natively: the SDK and the analyzers' Rust code come in only
/// with the benchmark's `native-defaults` feature; the record layout they share is the one guest
/// crate the host links.
#[test]
fn the_product_links_no_guest_crate_natively() {
    let product = tree("normal");
    assert!(lists(&product, "wasmtap-record"), "the record layout is missing:\n{product}");
    let bench = tree_with("normal", &["--features", "native-defaults"]);
    for krate in DEFAULT_CRATES.iter().chain(&["wasmtap-sdk"]) {
        assert!(!lists(&product, krate), "{krate} is in the product's graph:\n{product}");
        assert!(lists(&bench, krate), "{krate} is not in the native-defaults graph:\n{bench}");
    }
}

#[test]
fn the_host_build_script_builds_only_the_default_analyzers() {
    let out = Path::new(env!("WASMTAP_DEFAULT_ANALYZERS_DIR"));
    let record = std::fs::read_to_string(out.join("guest-crates.txt")).expect("guest-crates.txt");
    let mut expected = String::from("target wasm32-unknown-unknown\n");
    for krate in DEFAULT_CRATES {
        expected.push_str(&format!("crate {krate}\n"));
    }
    assert_eq!(record, expected, "what host/build.rs had the nested cargo build");
    // The files this run of the build script wrote: OUT_DIR keeps those of earlier runs (of
    // earlier versions of the script too), and the record is written first.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).expect("mtime");
    let since = modified(&out.join("guest-crates.txt"));
    let mut files: Vec<String> = std::fs::read_dir(out)
        .expect("the build script's OUT_DIR")
        .map(|e| e.expect("entry").path())
        .filter(|p| modified(p) >= since)
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "default_analyzers.rs",
            "guest-crates.txt",
            "header-flags.component.wasm",
            "tcp-analysis.component.wasm",
            "traffic.component.wasm",
        ],
        "what host/build.rs wrote (in {})",
        out.display()
    );
}

#[test]
fn the_host_build_script_does_not_name_the_wasi_target_or_the_test_analyzers() {
    let host = repo_root().join("host");
    let script = std::fs::read_to_string(host.join("build.rs")).expect("host/build.rs");
    let included: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#[path = \""))
        .filter_map(|l| l.strip_suffix("\"]"))
        .collect();
    assert_eq!(included, ["build/guest.rs"], "modules host/build.rs includes");
    let guest = std::fs::read_to_string(host.join("build/guest.rs")).expect("build/guest.rs");
    for (file, text) in [("host/build.rs", &script), ("host/build/guest.rs", &guest)] {
        for needle in ["\"wasm32-wasip2\"", "testing/", "syn-no-answer"] {
            assert!(!text.contains(needle), "{file} mentions {needle}");
        }
    }
}
