//! `wasmtap build [DIR]`: an analyzer crate's component, with no tool besides Rust.
//!
//! Input: the folder of an analyzer crate (its `Cargo.toml`), and `cargo` and `rustc` on
//! `PATH`. Steps: check that the `wasm32-unknown-unknown` target is installed; ask `cargo
//! metadata` for the target folder and the crate's `cdylib` library; run `cargo build
//! --release --lib --target wasm32-unknown-unknown` with cargo's own progress on stderr; wrap
//! the core module as a component with `wit-component` (validated), as the host's build script
//! does for the built-in analyzers. Output: `TARGET/wasmtap/<package>.wasm` (`TARGET` being
//! the crate's target folder, `target/` unless configured otherwise), whose path the caller
//! prints; or a [`BuildError`] naming the command or file and what to do.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use super::{ADD_TARGET, GUEST_TARGET, guest_target_installed};
use crate::runtime::ABI_VERSION;

/// The folder, inside the crate's target folder, that components are written to.
pub const OUT_DIR: &str = "wasmtap";

/// Why `wasmtap build` made no component.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "no Cargo.toml in {}: run wasmtap build in an analyzer crate's folder, or give that \
         folder (wasmtap new makes one)",
        .0.display()
    )]
    NoManifest(PathBuf),
    #[error("the {GUEST_TARGET} target is not installed: run {ADD_TARGET}")]
    TargetMissing,
    #[error("running {command}: {source} (is Rust installed? see https://rustup.rs)")]
    Spawn { command: String, source: io::Error },
    #[error("{command} failed ({status}){detail}")]
    Failed { command: String, status: ExitStatus, detail: String },
    #[error("cargo metadata on {}: {why}", manifest.display())]
    Metadata { manifest: PathBuf, why: String },
    #[error(
        "package {package:?} has no cdylib library: an analyzer crate declares crate-type = \
         [\"cdylib\", \"rlib\"] under [lib]"
    )]
    NoCdylib { package: String },
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{} cannot be made a component: {why:#}; an analyzer crate exports itself with \
         wasmtap_sdk::export_analyzer!(YourAnalyzer) and is built for {GUEST_TARGET}",
        path.display()
    )]
    Componentize { path: PathBuf, why: anyhow::Error },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// What `cargo metadata` says of the crate to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crate {
    /// The package's name: the component's file name.
    pub package: String,
    /// The name of its `cdylib` target: the core module's file name, with `_` for `-`.
    pub lib: String,
    /// The target folder cargo builds into.
    pub target_dir: PathBuf,
}

impl Crate {
    /// The core module `cargo build --release --target wasm32-unknown-unknown` leaves.
    pub fn module(&self) -> PathBuf {
        let file = format!("{}.wasm", self.lib.replace('-', "_"));
        self.target_dir.join(GUEST_TARGET).join("release").join(file)
    }

    /// The component `wasmtap build` writes.
    pub fn component(&self) -> PathBuf {
        self.target_dir.join(OUT_DIR).join(format!("{}.wasm", self.package))
    }
}

/// A component built.
#[derive(Debug, Clone)]
pub struct Built {
    pub module: PathBuf,
    pub component: PathBuf,
    pub bytes: usize,
}

/// Builds the crate in `dir` and writes its component.
pub fn build(dir: &Path) -> Result<Built, BuildError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NoManifest(dir.to_path_buf()));
    }
    if guest_target_installed(dir) == Some(false) {
        return Err(BuildError::TargetMissing);
    }
    let krate = metadata(&manifest)?;
    let mut cargo = Command::new("cargo");
    cargo
        .args(["build", "--release", "--lib", "--target", GUEST_TARGET, "--manifest-path"])
        .arg(&manifest)
        // cargo's progress goes to stderr; stdout carries the component's path alone.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let command = format!("cargo build --release --lib --target {GUEST_TARGET}");
    let status =
        cargo.status().map_err(|source| BuildError::Spawn { command: command.clone(), source })?;
    if !status.success() {
        // A target removed meanwhile, or one that rustup's proxy resolves for another
        // toolchain, shows only now.
        if guest_target_installed(dir) == Some(false) {
            return Err(BuildError::TargetMissing);
        }
        let detail = "; cargo's messages are above".to_owned();
        return Err(BuildError::Failed { command, status, detail });
    }
    let module = krate.module();
    let bytes = std::fs::read(&module)
        .map_err(|source| BuildError::Read { path: module.clone(), source })?;
    let component = componentize(&bytes)
        .map_err(|why| BuildError::Componentize { path: module.clone(), why })?;
    let path = krate.component();
    write(&path, &component)?;
    Ok(Built { module, component: path, bytes: component.len() })
}

/// The core module as a validated component that exports the analyzer interface and imports
/// nothing but the contract's own interfaces.
pub fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    let component =
        wit_component::ComponentEncoder::default().validate(true).module(module)?.encode()?;
    check_world(&component)?;
    Ok(component)
}

/// Fails unless `component` exports `wasmtap:analyzer/analyzer` and imports only
/// `wasmtap:analyzer/{host,types}`, at the version of the contract this host speaks.
fn check_world(component: &[u8]) -> anyhow::Result<()> {
    let wit_component::DecodedWasm::Component(resolve, world) = wit_component::decode(component)?
    else {
        anyhow::bail!("it encoded as a WIT package, not a component");
    };
    let world = &resolve.worlds[world];
    let exports: Vec<String> = world.exports.keys().map(|k| resolve.name_world_key(k)).collect();
    let imports: Vec<String> = world.imports.keys().map(|k| resolve.name_world_key(k)).collect();
    let export = format!("wasmtap:analyzer/analyzer@{ABI_VERSION}");
    if !exports.contains(&export) {
        anyhow::bail!("it exports {exports:?}, not {export}");
    }
    let allowed = ["host", "types"].map(|i| format!("wasmtap:analyzer/{i}@{ABI_VERSION}"));
    let foreign: Vec<&String> = imports.iter().filter(|i| !allowed.contains(i)).collect();
    if !foreign.is_empty() {
        anyhow::bail!(
            "it imports {foreign:?}, and an analyzer may import only {allowed:?} (is it built \
             for wasm32-wasip2, or does it use a crate that needs WASI?)"
        );
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file beside it, so that a reader (a watched
/// analyzer folder) never sees half a component.
fn write(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Write { path, source }
    };
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(err(parent))?;
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).map_err(err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(err(path))
}

/// `cargo metadata --no-deps` on `manifest`: the package it declares, its `cdylib` and the
/// target folder.
fn metadata(manifest: &Path) -> Result<Crate, BuildError> {
    let command = "cargo metadata --no-deps --format-version 1".to_owned();
    let out = Command::new("cargo")
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(manifest)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        let detail = format!(":\n{}", String::from_utf8_lossy(&out.stderr).trim_end());
        return Err(BuildError::Failed { command, status: out.status, detail });
    }
    let bad = |why: String| BuildError::Metadata { manifest: manifest.to_path_buf(), why };
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| bad(format!("unreadable output: {e}")))?;
    parse_metadata(&json, manifest).map_err(bad)
}

/// The [`Crate`] that `manifest` declares, from `cargo metadata`'s JSON.
fn parse_metadata(json: &serde_json::Value, manifest: &Path) -> Result<Crate, String> {
    let target_dir = json
        .get("target_directory")
        .and_then(|t| t.as_str())
        .ok_or("no target_directory in its output")?;
    let wanted = manifest.canonicalize().map_err(|e| format!("{}: {e}", manifest.display()))?;
    let packages = json.get("packages").and_then(|p| p.as_array()).ok_or("no packages")?;
    let package = packages
        .iter()
        .find(|p| {
            p.get("manifest_path")
                .and_then(|m| m.as_str())
                .and_then(|m| Path::new(m).canonicalize().ok())
                .is_some_and(|m| m == wanted)
        })
        .ok_or(
            "it declares no package (a workspace's root manifest?): run wasmtap build in the \
             analyzer crate's own folder",
        )?;
    let name = package.get("name").and_then(|n| n.as_str()).ok_or("a package without a name")?;
    let targets = package.get("targets").and_then(|t| t.as_array()).ok_or("no targets")?;
    let is_cdylib = |t: &&serde_json::Value| {
        t.get("kind")
            .and_then(|k| k.as_array())
            .is_some_and(|k| k.iter().any(|k| k.as_str() == Some("cdylib")))
    };
    let lib = targets
        .iter()
        .find(is_cdylib)
        .and_then(|t| t.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| BuildError::NoCdylib { package: name.to_owned() }.to_string())?;
    Ok(Crate {
        package: name.to_owned(),
        lib: lib.to_owned(),
        target_dir: PathBuf::from(target_dir),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_crate_from_cargo_metadata() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let manifest = dir.path().join("Cargo.toml");
        std::fs::write(&manifest, "").expect("a manifest");
        let json = serde_json::json!({
            "target_directory": "/t",
            "packages": [{
                "name": "synack-ports",
                "manifest_path": manifest,
                "targets": [{"name": "synack_ports", "kind": ["cdylib", "rlib"]}],
            }],
        });
        let krate = parse_metadata(&json, &manifest).expect("a crate");
        assert_eq!(
            krate.module(),
            Path::new("/t/wasm32-unknown-unknown/release/synack_ports.wasm")
        );
        assert_eq!(krate.component(), Path::new("/t/wasmtap/synack-ports.wasm"));

        let mut rlib_only = json.clone();
        rlib_only["packages"][0]["targets"][0]["kind"] = serde_json::json!(["rlib"]);
        let err = parse_metadata(&rlib_only, &manifest).expect_err("no cdylib");
        assert!(err.contains("crate-type = [\"cdylib\", \"rlib\"]"), "{err}");

        let mut other = json;
        other["packages"][0]["manifest_path"] = serde_json::json!("/elsewhere/Cargo.toml");
        let err = parse_metadata(&other, &manifest).expect_err("not this manifest");
        assert!(err.contains("declares no package"), "{err}");
    }

    #[test]
    fn a_core_module_without_a_component_type_is_refused_with_the_fix() {
        // The smallest valid module: no component-type section, as a crate without the SDK's
        // export macro gives.
        let err = componentize(b"\0asm\x01\0\0\0").expect_err("no world").to_string();
        assert!(!err.is_empty());
        let e = BuildError::Componentize { path: "m.wasm".into(), why: anyhow::anyhow!(err) };
        assert!(e.to_string().contains("wasmtap_sdk::export_analyzer!"), "{e}");
    }
}
