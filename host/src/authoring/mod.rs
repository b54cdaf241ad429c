//! Stage: control (`wasmtap new` and `wasmtap build`, for analyzer authors).
//!
//! Input: the flags of `new` (a name, a folder, where the guest SDK is) and of `build` (a
//! crate's folder), and the Rust toolchain on `PATH`. Output: a new analyzer crate that builds
//! as it is ([`new`]), or the component of an analyzer crate, wrapped from its core module
//! with `wit-component` as the host's build script does ([`build`]), so that writing an
//! analyzer needs no tool besides `wasmtap` and Rust. Errors name the file or command and
//! what to do about it.

pub mod build;
pub mod new;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target analyzers are built for: `wasm32-wasip2` would import WASI interfaces, which
/// the host refuses; a plain module made into a component imports only the WIT package.
pub const GUEST_TARGET: &str = "wasm32-unknown-unknown";

/// The one command that installs [`GUEST_TARGET`], as errors state it.
pub const ADD_TARGET: &str = "rustup target add wasm32-unknown-unknown";

/// Whether the standard library for [`GUEST_TARGET`] is installed for the toolchain that
/// `rustc` runs in `dir` (a `rust-toolchain.toml` there applies): the target's library folder
/// holds `libcore-*`. `None` if `rustc` could not be run at all.
pub fn guest_target_installed(dir: &Path) -> Option<bool> {
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return Some(false);
    }
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let has_core = std::fs::read_dir(&libdir).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
    });
    Some(has_core)
}
