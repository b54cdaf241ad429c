//! Build script: compiles the guest analyzers and embeds the default ones in the host.
//!
//! Input: the guest workspace `guest-analyzers/` (its own Cargo.lock and target dir) and the
//! WIT contract `wit/`. Steps: a nested `cargo build --release --target wasm32-unknown-unknown`
//! with the outer build's environment stripped; each core module becomes a component with
//! `wit-component` (validated); each component is checked to import nothing but
//! `wasmtap:analyzer/{host,types}@0.1.0` and to export `wasmtap:analyzer/analyzer@0.1.0`.
//! `wasm32-unknown-unknown` rather than `wasm32-wasip2`, because a std guest built for the latter
//! imports `wasi:cli`/`wasi:io` even when unused, and the host links no WASI.
//!
//! Outputs, in `$OUT_DIR`:
//! - `default_analyzers.rs`: `pub static DEFAULT_ANALYZERS: &[(&str, &[u8])]`, the default
//!   analyzers as (name, component bytes) via `include_bytes!`;
//! - `<name>.component.wasm`: each default analyzer's component, with
//!   `cargo:rustc-env=WASMTAP_DEFAULT_ANALYZERS_DIR` pointing at `$OUT_DIR` (for `host check`
//!   tests);
//! - `test-analyzers/<name>.wasm`: good and hostile analyzers for the host's tests only, with
//!   `cargo:rustc-env=WASMTAP_TEST_ANALYZERS_DIR` pointing at that folder (see
//!   `build/test_analyzers.rs`), and there too `syn-no-answer.wasm`, the example analyzer
//!   `examples/syn-no-answer` (a workspace of its own, so built by a nested cargo of its own).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

#[path = "build/test_analyzers.rs"]
mod test_analyzers;

/// The guests are plain wasm modules made into components here; see the header for why.
const GUEST_TARGET: &str = "wasm32-unknown-unknown";

/// Analyzers embedded in the host and loaded by default: (analyzer name, guest crate name).
const DEFAULT_ANALYZERS: &[(&str, &str)] = &[
    ("traffic", "wasmtap-analyzer-traffic"),
    ("header-flags", "wasmtap-analyzer-header-flags"),
    ("tcp-analysis", "wasmtap-analyzer-tcp-analysis"),
];

/// The version of the WIT package `wit/` that the host speaks and analyzers are built against.
const ABI_VERSION: &str = "0.1.0";

/// The only interfaces an analyzer may import: the contract's own, so that the host can link
/// nothing else (no WASI). Qualified with the package version by [`allowed_imports`].
const ALLOWED_INTERFACES: &[&str] = &["wasmtap:analyzer/host", "wasmtap:analyzer/types"];

/// The interface every analyzer must export, likewise qualified by [`required_export`].
const REQUIRED_INTERFACE: &str = "wasmtap:analyzer/analyzer";

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

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let repo = manifest_dir.parent().context("host/ has no parent directory")?.to_path_buf();
    let guests = repo.join("guest-analyzers");
    let out_dir = PathBuf::from(env("OUT_DIR")?);

    rerun_if_changed(&repo.join("wit"));
    watch_guest_sources(&guests)?;

    check_target_installed(GUEST_TARGET)?;
    let wasm_dir = build_guests(&guests)?;

    let mut entries = Vec::new();
    for (name, krate) in DEFAULT_ANALYZERS {
        let component = componentize(&wasm_dir, name, krate)?;
        let path = out_dir.join(format!("{name}.component.wasm"));
        write(&path, &component)?;
        entries.push((*name, path));
    }
    write(&out_dir.join("default_analyzers.rs"), default_analyzers_rs(&entries)?.as_bytes())?;
    println!("cargo:rustc-env=WASMTAP_DEFAULT_ANALYZERS_DIR={}", utf8(&out_dir)?);

    let test_dir = out_dir.join("test-analyzers");
    test_analyzers::write_all(&guests, &wasm_dir, &test_dir)?;
    test_analyzers::write_example(&repo.join(test_analyzers::EXAMPLE_DIR), &test_dir)?;
    println!("cargo:rustc-env=WASMTAP_TEST_ANALYZERS_DIR={}", utf8(&test_dir)?);
    Ok(())
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("cargo did not set {name} for the build script"))
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str().with_context(|| format!("path is not UTF-8: {}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// Watches the guest workspace's manifests, lock file and sources, but never its target dir
/// (the nested build writes there, which would rerun this script every time).
fn watch_guest_sources(dir: &Path) -> Result<()> {
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
fn check_target_installed(target: &str) -> Result<()> {
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

/// Builds the whole guest workspace for [`GUEST_TARGET`]; returns the folder holding the core
/// `.wasm` modules.
fn build_guests(guests: &Path) -> Result<PathBuf> {
    nested_cargo(guests, GUEST_TARGET, &["--workspace"])
}

/// Runs the nested cargo for `target` on the packages `selection` names (`--workspace`, or
/// `-p CRATE`); returns the folder holding the `.wasm` files.
fn nested_cargo(guests: &Path, target: &str, selection: &[&str]) -> Result<PathBuf> {
    let cargo = env("CARGO")?;
    let manifest = guests.join("Cargo.toml");
    let target_dir = guests.join("target");
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "--target", target])
        .args(selection)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    if guests.join("Cargo.lock").exists() {
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
            "building the guest analyzers ({}, {target}) failed:\n{stderr}{hint}",
            manifest.display()
        );
    }
    Ok(target_dir.join(target).join("release"))
}

/// Turns the core module of `krate` into a validated component and checks its imports/exports.
fn componentize(wasm_dir: &Path, name: &str, krate: &str) -> Result<Vec<u8>> {
    let component = encode_component(wasm_dir, name, krate)?;
    check_interfaces(name, &component, ABI_VERSION)?;
    Ok(component)
}

/// The path of the `.wasm` file cargo writes for `krate` into `wasm_dir`.
fn wasm_file(wasm_dir: &Path, krate: &str) -> PathBuf {
    wasm_dir.join(format!("{}.wasm", krate.replace('-', "_")))
}

/// Turns the core module of `krate` into a validated component, without checking its world.
fn encode_component(wasm_dir: &Path, name: &str, krate: &str) -> Result<Vec<u8>> {
    let module_path = wasm_file(wasm_dir, krate);
    let module = std::fs::read(&module_path)
        .with_context(|| format!("reading {}", module_path.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .with_context(|| format!("reading the component type of {}", module_path.display()))?
        .encode()
        .with_context(|| format!("encoding analyzer {name:?} as a component"))?;
    Ok(component)
}

/// [`ALLOWED_INTERFACES`] at WIT package version `abi`.
fn allowed_imports(abi: &str) -> Vec<String> {
    ALLOWED_INTERFACES.iter().map(|i| format!("{i}@{abi}")).collect()
}

/// [`REQUIRED_INTERFACE`] at WIT package version `abi`.
fn required_export(abi: &str) -> String {
    format!("{REQUIRED_INTERFACE}@{abi}")
}

/// The (imports, exports) of a component, as `package/interface@version` names.
fn component_world(name: &str, component: &[u8]) -> Result<(Vec<String>, Vec<String>)> {
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
fn check_interfaces(name: &str, component: &[u8], abi: &str) -> Result<()> {
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
