//! Build script of the test analyzers: compiles the good and hostile analyzers of
//! `guest-analyzers/testing/` and the example `examples/syn-no-answer` for the host's tests.
//!
//! Inputs: the guest workspace `guest-analyzers/` and the example's own workspace, the WIT
//! contract `wit/`, and the `wasm32-unknown-unknown` and `wasm32-wasip2` targets (one hostile
//! analyzer imports WASI on purpose). Steps: `build/analyzers.rs`, with the nested cargo and
//! the component checks the host's build script uses (`host/build/guest.rs`). Output:
//! `$OUT_DIR/test-analyzers/<name>.wasm` for every test analyzer, and
//! `cargo:rustc-env=WASMTAP_TEST_ANALYZERS_DIR` pointing at that folder (read by `src/lib.rs`).
//!
//! This crate is only a dev-dependency of `host`, so `cargo build -p host` never runs this.

use std::path::PathBuf;

use anyhow::{Context, Result};

// The host's build script uses the same helpers; not every one of them is used here.
#[allow(dead_code)]
#[path = "../build/guest.rs"]
mod guest;

#[path = "build/analyzers.rs"]
mod analyzers;

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(guest::env("CARGO_MANIFEST_DIR")?);
    let repo = manifest_dir
        .parent()
        .and_then(|host| host.parent())
        .context("host/test-analyzers/ is not two levels below the repository root")?
        .to_path_buf();
    let guests = repo.join("guest-analyzers");
    let out_dir = PathBuf::from(guest::env("OUT_DIR")?).join("test-analyzers");

    guest::rerun_if_changed(&repo.join("wit"));
    guest::watch_guest_sources(&guests)?;

    analyzers::write_all(&guests, &out_dir)?;
    analyzers::write_example(&repo.join(analyzers::EXAMPLE_DIR), &out_dir)?;
    println!("cargo:rustc-env=WASMTAP_TEST_ANALYZERS_DIR={}", guest::utf8(&out_dir)?);
    Ok(())
}
