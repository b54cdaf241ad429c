//! Build scripts, shared part: building guest analyzers with a nested cargo and checking the
//! components they become. Included with `#[path]` by `host/build.rs` (the default analyzers,
//! embedded in the binary) and by `host/test-analyzers/build.rs` (the test analyzers and the
//! example, built for the tests alone).
//!
//! Inputs: a guest workspace (own manifest, lock file and target dir) and the names of the
//! crates to build in it. Outputs: the crates' core modules as bytes, and components checked
//! to import nothing but `wasmtap:analyzer/{host,types}` and to export
//! `wasmtap:analyzer/analyzer` at the expected WIT package version.
//!
//! The nested cargo runs with the outer build's environment stripped, builds only the crates
//! asked for, and holds a file lock on its target dir until their modules are read: the host's
//! build script and the test analyzers' may run at the same time on the same guest workspace,
//! and cargo replaces the `.wasm` files it uplifts on every run.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// The guests are plain wasm modules made into components here: a std guest built for
/// `wasm32-wasip2` would import `wasi:cli`/`wasi:io` even when unused, and the host links no
/// WASI.
pub const GUEST_TARGET: &str = "wasm32-unknown-unknown";

/// The version of the WIT package `wit/` that the host speaks and analyzers are built against.
pub const ABI_VERSION: &str = "0.2.0";

/// The only interfaces an analyzer may import: the contract's own, so that the host can link
/// nothing else (no WASI). Qualified with the package version by [`allowed_imports`].
const ALLOWED_INTERFACES: &[&str] = &["wasmtap:analyzer/host", "wasmtap:analyzer/types"];

/// The interface every analyzer must export, likewise qualified by [`required_export`].
const REQUIRED_INTERFACE: &str = "wasmtap:analyzer/analyzer";

/// The lock file, in a nested cargo's target dir, that serializes the build scripts using it
/// (see the header for why cargo's own lock is not enough).
const LOCK_FILE: &str = ".wasmtap-build-script.lock";

/// Environment variables of the outer build that must not reach the nested cargo: flags,
/// wrappers, target selection and the build-script variables cargo sets for this script.
const STRIPPED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "RUSTC_LINKER",
    "RUSTDOC",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "OPT_LEVEL",
    "DEBUG",
    "PROFILE",
    "NUM_JOBS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO",
];

/// `CARGO_*` variables that configure cargo itself (home, network, registries, terminal) rather
/// than describe the outer build; all other `CARGO_*` variables are stripped.
const KEPT_CARGO_PREFIXES: &[&str] = &[
    "CARGO_HOME",
    "CARGO_NET_",
    "CARGO_HTTP_",
    "CARGO_REGISTRIES_",
    "CARGO_REGISTRY_",
    "CARGO_TERM_",
];

pub fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("cargo did not set {name} for the build script"))
}

pub fn utf8(path: &Path) -> Result<&str> {
    path.to_str().with_context(|| format!("path is not UTF-8: {}", path.display()))
}

pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

pub fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// Watches a guest workspace's manifests, lock file and sources, but never its target dir
/// (the nested build writes there, which would rerun this script every time).
pub fn watch_guest_sources(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let is_dir =
            entry.file_type().with_context(|| format!("inspecting {}", path.display()))?.is_dir();
        if is_dir {
            let hidden = name.to_string_lossy().starts_with('.');
            if name == OsStr::new("src")
                || name == OsStr::new(".cargo")
                || name == OsStr::new("wit")
            {
                // Cargo scans a watched directory recursively. (`wit/`: a crate's own copy of a
                // WIT package, as the wrong-version test analyzer has.)
                rerun_if_changed(&path);
            } else if name != OsStr::new("target") && !hidden {
                watch_guest_sources(&path)?;
            }
        } else if matches!(
            name.to_str(),
            Some("Cargo.toml" | "Cargo.lock" | "build.rs" | "rust-toolchain.toml")
        ) {
            rerun_if_changed(&path);
        }
    }
    Ok(())
}

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned())
}

/// Fails early, with the fix, if the standard library for `target` is missing.
pub fn check_target_installed(target: &str) -> Result<()> {
    let out = Command::new(rustc())
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .context("running rustc --print target-libdir")?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let installed = out.status.success()
        && std::fs::read_dir(&libdir)
            .map(|mut d| {
                d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
            })
            .unwrap_or(false);
    if !installed {
        bail!(
            "the {target} target is not installed (no core library in {}); the guest \
             analyzers need it: run `rustup target add {target}`",
            libdir.display()
        );
    }
    Ok(())
}

/// Builds `crates` (and only those) of the workspace in `dir` for `target` and returns each
/// crate's `.wasm` file as bytes, read while the lock on the target dir is still held.
pub fn build_modules(
    dir: &Path,
    target: &str,
    crates: &[&str],
) -> Result<BTreeMap<String, Vec<u8>>> {
    ensure!(!crates.is_empty(), "no guest crate to build in {}", dir.display());
    let target_dir = dir.join("target");
    std::fs::create_dir_all(&target_dir)
        .with_context(|| format!("creating {}", target_dir.display()))?;
    let lock_path = target_dir.join(LOCK_FILE);
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    let wasm_dir = nested_cargo(dir, &target_dir, target, crates)?;
    let mut modules = BTreeMap::new();
    for krate in crates {
        modules.insert((*krate).to_owned(), read(&wasm_file(&wasm_dir, krate))?);
    }
    // Dropping the file releases the lock.
    drop(lock);
    Ok(modules)
}

/// Runs the nested cargo for `target` on `crates` (`-p` each); returns the folder holding the
/// `.wasm` files.
fn nested_cargo(dir: &Path, target_dir: &Path, target: &str, crates: &[&str]) -> Result<PathBuf> {
    let cargo = env("CARGO")?;
    let manifest = dir.join("Cargo.toml");
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "--target", target])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    for krate in crates {
        cmd.args(["-p", krate]);
    }
    if dir.join("Cargo.lock").exists() {
        cmd.arg("--locked");
    }
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let cargo_var =
            key.starts_with("CARGO_") && !KEPT_CARGO_PREFIXES.iter().any(|p| key.starts_with(p));
        if cargo_var
            || key.starts_with("__CARGO")
            || key.starts_with("DEP_")
            || STRIPPED_VARS.contains(&key)
        {
            cmd.env_remove(key);
        }
    }
    // Cargo reads build-script stdout as directives: keep the nested cargo's output off it.
    let out = cmd
        .output()
        .with_context(|| format!("running {cargo} build for {}", manifest.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            format!("\nhint: run `rustup target add {target}`")
        } else {
            String::new()
        };
        bail!(
            "building the guest analyzers {crates:?} ({}, {target}) failed:\n{stderr}{hint}",
            manifest.display()
        );
    }
    Ok(target_dir.join(target).join("release"))
}

/// The path of the `.wasm` file cargo writes for `krate` into `wasm_dir`.
fn wasm_file(wasm_dir: &Path, krate: &str) -> PathBuf {
    wasm_dir.join(format!("{}.wasm", krate.replace('-', "_")))
}

/// Turns a core module into a validated component and checks its imports and exports against
/// the contract at [`ABI_VERSION`].
pub fn componentize(name: &str, module: &[u8]) -> Result<Vec<u8>> {
    let component = encode_component(name, module)?;
    check_interfaces(name, &component, ABI_VERSION)?;
    Ok(component)
}

/// Turns a core module into a validated component, without checking its world.
pub fn encode_component(name: &str, module: &[u8]) -> Result<Vec<u8>> {
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .with_context(|| format!("reading the component type of analyzer {name:?}"))?
        .encode()
        .with_context(|| format!("encoding analyzer {name:?} as a component"))?;
    Ok(component)
}

/// [`ALLOWED_INTERFACES`] at WIT package version `abi`.
fn allowed_imports(abi: &str) -> Vec<String> {
    ALLOWED_INTERFACES.iter().map(|i| format!("{i}@{abi}")).collect()
}

/// [`REQUIRED_INTERFACE`] at WIT package version `abi`.
pub fn required_export(abi: &str) -> String {
    format!("{REQUIRED_INTERFACE}@{abi}")
}

/// The (imports, exports) of a component, as `package/interface@version` names.
pub fn component_world(name: &str, component: &[u8]) -> Result<(Vec<String>, Vec<String>)> {
    let decoded =
        wit_component::decode(component).with_context(|| format!("decoding analyzer {name:?}"))?;
    let wit_component::DecodedWasm::Component(resolve, world) = decoded else {
        bail!("analyzer {name:?} did not encode as a component");
    };
    let world = &resolve.worlds[world];
    let imports = world.imports.keys().map(|k| resolve.name_world_key(k)).collect();
    let exports = world.exports.keys().map(|k| resolve.name_world_key(k)).collect();
    Ok((imports, exports))
}

/// Fails unless the component imports only [`allowed_imports`] and exports
/// [`required_export`], both at WIT package version `abi`.
pub fn check_interfaces(name: &str, component: &[u8], abi: &str) -> Result<()> {
    let (imports, exports) = component_world(name, component)?;
    let allowed = allowed_imports(abi);
    let foreign: Vec<&String> = imports.iter().filter(|i| !allowed.contains(i)).collect();
    ensure!(
        foreign.is_empty(),
        "analyzer {name:?} imports {foreign:?}; an analyzer may import only {allowed:?} \
         (was it built for wasm32-wasip2, or does it use a crate that needs WASI?)"
    );
    let export = required_export(abi);
    ensure!(
        exports == [export.as_str()],
        "analyzer {name:?} exports {exports:?}; expected exactly [{export:?}]"
    );
    Ok(())
}
