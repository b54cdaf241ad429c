//! Build script: compiles the default guest analyzers and embeds them in the host.
//!
//! Input: the guest workspace `guest-analyzers/` (its own Cargo.lock and target dir) and the
//! WIT contract `wit/`. Steps (see `build/guest.rs`): a nested `cargo build --release --target
//! wasm32-unknown-unknown -p CRATE...` of the default analyzers' crates alone, with the outer
//! build's environment stripped; each core module becomes a component with `wit-component`
//! (validated); each component is checked to import nothing but
//! `wasmtap:analyzer/{host,types}@0.2.0` and to export `wasmtap:analyzer/analyzer@0.2.0`.
//!
//! Builds only what the binary ships: the test analyzers and the example are built by the
//! `wasmtap-test-analyzers` crate (`host/test-analyzers/`), a dev-dependency, so for tests
//! alone; a release build of the host needs neither them nor the `wasm32-wasip2` target.
//!
//! Outputs, in `$OUT_DIR`:
//! - `default_analyzers.rs`: `pub static DEFAULT_ANALYZERS: &[(&str, &[u8])]`, the default
//!   analyzers as (name, component bytes) via `include_bytes!`;
//! - `<name>.component.wasm`: each default analyzer's component, with
//!   `cargo:rustc-env=WASMTAP_DEFAULT_ANALYZERS_DIR` pointing at `$OUT_DIR` (for `wasmtap check`
//!   tests);
//! - `guest-crates.txt`: the target and the guest crates the nested cargo was asked to build,
//!   one per line, for the build-hygiene test (`host/tests/build_hygiene.rs`); written before
//!   the rest, so that the files this run wrote are those at least as new as it.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};

// The test analyzers' build script uses more of it than this one does.
#[allow(dead_code)]
#[path = "build/guest.rs"]
mod guest;

use guest::{GUEST_TARGET, env, utf8, write};

/// Analyzers embedded in the host and loaded by default: (analyzer name, guest crate name).
const DEFAULT_ANALYZERS: &[(&str, &str)] = &[
    ("traffic", "wasmtap-analyzer-traffic"),
    ("header-flags", "wasmtap-analyzer-header-flags"),
    ("tcp-analysis", "wasmtap-analyzer-tcp-analysis"),
];

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let repo = manifest_dir.parent().context("host/ has no parent directory")?.to_path_buf();
    let guests = repo.join("guest-analyzers");
    let out_dir = PathBuf::from(env("OUT_DIR")?);

    guest::rerun_if_changed(&repo.join("wit"));
    guest::watch_guest_sources(&guests)?;

    guest::check_target_installed(GUEST_TARGET)?;
    let crates: Vec<&str> = DEFAULT_ANALYZERS.iter().map(|(_, krate)| *krate).collect();
    // Written first: what this run writes after it is newer (OUT_DIR keeps older runs' files).
    write(&out_dir.join("guest-crates.txt"), guest_crates_txt(&crates).as_bytes())?;
    let modules = guest::build_modules(&guests, GUEST_TARGET, &crates)?;

    let mut entries = Vec::new();
    for (name, krate) in DEFAULT_ANALYZERS {
        let module = modules.get(*krate).with_context(|| format!("{krate} was not built"))?;
        let component = guest::componentize(name, module)?;
        let path = out_dir.join(format!("{name}.component.wasm"));
        write(&path, &component)?;
        entries.push((*name, path));
    }
    write(&out_dir.join("default_analyzers.rs"), default_analyzers_rs(&entries)?.as_bytes())?;
    println!("cargo:rustc-env=WASMTAP_DEFAULT_ANALYZERS_DIR={}", utf8(&out_dir)?);
    Ok(())
}

/// The Rust source of `default_analyzers.rs`.
fn default_analyzers_rs(entries: &[(&str, PathBuf)]) -> Result<String> {
    let mut items = Vec::new();
    for (name, path) in entries {
        // `{:?}` of a str is a valid Rust string literal (quotes and escapes included).
        items.push(format!("({name:?}, include_bytes!({:?}))", utf8(path)?));
    }
    let mut src = String::new();
    writeln!(
        src,
        "/// The default analyzers, as (name, component bytes), embedded at build time."
    )?;
    writeln!(src, "pub static DEFAULT_ANALYZERS: &[(&str, &[u8])] = &[{}];", items.join(", "))?;
    Ok(src)
}

/// The contents of `guest-crates.txt`: `target TARGET`, then `crate NAME` per crate built.
fn guest_crates_txt(crates: &[&str]) -> String {
    let mut txt = format!("target {GUEST_TARGET}\n");
    for krate in crates {
        txt.push_str(&format!("crate {krate}\n"));
    }
    txt
}
