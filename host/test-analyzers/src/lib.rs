//! The test analyzers: good and hostile `.wasm` files, and the example analyzer
//! `syn-no-answer`, that only the host's tests load (`host/tests/hostile.rs` documents what the
//! host must do with each).
//!
//! Input: the folder this crate's build script fills (`build.rs`). Output: its path, and the
//! path of one analyzer in it. A dev-dependency of `host`: the test analyzers (and the
//! `wasm32-wasip2` target one of them needs) are built for tests alone, never by
//! `cargo build -p host`.

use std::path::PathBuf;

/// The folder holding `<name>.wasm` for every test analyzer, written by the build script.
pub const DIR: &str = env!("WASMTAP_TEST_ANALYZERS_DIR");

/// The path of test analyzer `name` (`trap-first-batch`, `syn-no-answer`, ...): `DIR/name.wasm`.
/// It exists once the build script has run, for every name it knows.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(DIR).join(format!("{name}.wasm"))
}
