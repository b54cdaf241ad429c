//! Build script, test analyzers: the good and hostile `.wasm` files that only the host's tests
//! load (`host/tests/hostile.rs` documents what the host must do with each).
//!
//! Inputs: the guest workspace, whose test crates (and the default `traffic` crate, for the
//! core-module case) are built here by a nested cargo, and [`TEST_ANALYZERS`]. Outputs:
//! `<dir>/<name>.wasm` for every entry, each checked to be the artifact it claims to be — a
//! component of the right world and WIT version, a component that does import WASI, a core
//! module, or bytes that are not wasm — so that a test analyzer cannot fail the host's tests
//! for an accidental reason.
//!
//! Also the example analyzer ([`EXAMPLE_DIR`], loaded by `host/tests/example_analyzer.rs`):
//! a crate with its own workspace, lock file and target dir, as a user's would be, so it gets a
//! nested cargo of its own; its component is checked like a default analyzer's.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, ensure};

use super::guest::{
    ABI_VERSION, GUEST_TARGET, build_modules, check_interfaces, check_target_installed,
    component_world, componentize, encode_component, required_export, watch_guest_sources, write,
};

/// The target whose std turns file access into `wasi:filesystem` imports.
const WASI_TARGET: &str = "wasm32-wasip2";

/// A WIT package version the host does not speak, for the wrong-version analyzer.
const WRONG_ABI_VERSION: &str = "0.1.0";

/// The first bytes of every WebAssembly file, core module or component.
const WASM_MAGIC: &[u8] = b"\0asm";

/// The version and layout bytes that follow [`WASM_MAGIC`] in a core module.
const CORE_MODULE_VERSION: &[u8] = &[1, 0, 0, 0];

/// How a test analyzer is made, and so what it is checked to be.
pub enum Make {
    /// A guest crate's core module made into a component whose imports and exports are those
    /// of the contract at WIT package version `abi` (the current one, or a deliberately wrong
    /// one from the crate's own `wit/`).
    Component { krate: &'static str, abi: &'static str },
    /// A guest crate built for [`WASI_TARGET`] by a second nested cargo; rustc makes the
    /// component, which must import `wasi:filesystem` and export the current contract.
    Wasi { krate: &'static str },
    /// A guest crate's core module as is, not a component.
    CoreModule { krate: &'static str },
    /// `len` pseudo-random bytes from a fixed `seed` (the same file on every build).
    RandomBytes { len: usize, seed: u64 },
}

/// Every test analyzer: (file name without `.wasm`, how it is made).
pub const TEST_ANALYZERS: &[(&str, Make)] = &[
    // Behaves except for a trap on every instance's first batch.
    (
        "trap-first-batch",
        Make::Component { krate: "wasmtap-analyzer-trap-first-batch", abi: ABI_VERSION },
    ),
    // Fail at run time: the host must contain them and quarantine (or cap) them.
    (
        "infinite-loop",
        Make::Component { krate: "wasmtap-analyzer-infinite-loop", abi: ABI_VERSION },
    ),
    ("memory-bomb", Make::Component { krate: "wasmtap-analyzer-memory-bomb", abi: ABI_VERSION }),
    (
        "stack-overflow",
        Make::Component { krate: "wasmtap-analyzer-stack-overflow", abi: ABI_VERSION },
    ),
    (
        "panic-nth-batch",
        Make::Component { krate: "wasmtap-analyzer-panic-nth-batch", abi: ABI_VERSION },
    ),
    (
        "huge-update-list",
        Make::Component { krate: "wasmtap-analyzer-huge-update-list", abi: ABI_VERSION },
    ),
    (
        "cardinality-bomb",
        Make::Component { krate: "wasmtap-analyzer-cardinality-bomb", abi: ABI_VERSION },
    ),
    // Refused at load: the host must say why.
    (
        "invalid-metric-name",
        Make::Component { krate: "wasmtap-analyzer-invalid-metric-name", abi: ABI_VERSION },
    ),
    (
        "metric-collision",
        Make::Component { krate: "wasmtap-analyzer-metric-collision", abi: ABI_VERSION },
    ),
    (
        "wrong-wit-version",
        Make::Component { krate: "wasmtap-analyzer-wrong-wit-version", abi: WRONG_ABI_VERSION },
    ),
    // A good analyzer (the default `traffic`) that its author forgot to make a component.
    ("core-module", Make::CoreModule { krate: "wasmtap-analyzer-traffic" }),
    // 4 KiB is plenty to be nothing like wasm; the seed is arbitrary but fixed.
    ("random-bytes", Make::RandomBytes { len: 4096, seed: 0x5eed_0f7e_57ed }),
    ("wasi-filesystem", Make::Wasi { krate: "wasmtap-analyzer-wasi-filesystem" }),
    // Issue 9: every size an analyzer hands the host is bounded. These fail at run time:
    // quarantined, capped by the exposition budget, refused at a series total's overflow, or
    // running with their log lines cut and counted (`host/tests/hostile.rs`).
    (
        "huge-label-value",
        Make::Component { krate: "wasmtap-analyzer-huge-label-value", abi: ABI_VERSION },
    ),
    (
        "long-label-value",
        Make::Component { krate: "wasmtap-analyzer-long-label-value", abi: ABI_VERSION },
    ),
    (
        "huge-call-bytes",
        Make::Component { krate: "wasmtap-analyzer-huge-call-bytes", abi: ABI_VERSION },
    ),
    ("huge-error", Make::Component { krate: "wasmtap-analyzer-huge-error", abi: ABI_VERSION }),
    (
        "garbled-updates",
        Make::Component { krate: "wasmtap-analyzer-garbled-updates", abi: ABI_VERSION },
    ),
    (
        "histogram-count-mismatch",
        Make::Component { krate: "wasmtap-analyzer-histogram-count-mismatch", abi: ABI_VERSION },
    ),
    (
        "counter-infinity",
        Make::Component { krate: "wasmtap-analyzer-counter-infinity", abi: ABI_VERSION },
    ),
    (
        "histogram-sum-infinity",
        Make::Component { krate: "wasmtap-analyzer-histogram-sum-infinity", abi: ABI_VERSION },
    ),
    (
        "histogram-huge-count",
        Make::Component { krate: "wasmtap-analyzer-histogram-huge-count", abi: ABI_VERSION },
    ),
    (
        "histogram-overflow",
        Make::Component { krate: "wasmtap-analyzer-histogram-overflow", abi: ABI_VERSION },
    ),
    (
        "exposition-bomb",
        Make::Component { krate: "wasmtap-analyzer-exposition-bomb", abi: ABI_VERSION },
    ),
    ("log-flood", Make::Component { krate: "wasmtap-analyzer-log-flood", abi: ABI_VERSION }),
    ("log-newline", Make::Component { krate: "wasmtap-analyzer-log-newline", abi: ABI_VERSION }),
    // Issue 9, refused at load: names, versions and declarations over their bounds.
    ("name-traffic", Make::Component { krate: "wasmtap-analyzer-name-traffic", abi: ABI_VERSION }),
    ("name-newline", Make::Component { krate: "wasmtap-analyzer-name-newline", abi: ABI_VERSION }),
    (
        "version-newline",
        Make::Component { krate: "wasmtap-analyzer-version-newline", abi: ABI_VERSION },
    ),
    (
        "family-name-16mib",
        Make::Component { krate: "wasmtap-analyzer-family-name-16mib", abi: ABI_VERSION },
    ),
    (
        "many-families",
        Make::Component { krate: "wasmtap-analyzer-many-families", abi: ABI_VERSION },
    ),
    (
        "too-many-labels",
        Make::Component { krate: "wasmtap-analyzer-too-many-labels", abi: ABI_VERSION },
    ),
    (
        "too-many-buckets",
        Make::Component { krate: "wasmtap-analyzer-too-many-buckets", abi: ABI_VERSION },
    ),
    ("long-help", Make::Component { krate: "wasmtap-analyzer-long-help", abi: ABI_VERSION }),
    (
        "long-label-name",
        Make::Component { krate: "wasmtap-analyzer-long-label-name", abi: ABI_VERSION },
    ),
];

/// The example analyzer's crate, relative to the repository root.
pub const EXAMPLE_DIR: &str = "examples/syn-no-answer";

/// The example's file (and analyzer) name, and its crate name.
const EXAMPLE: (&str, &str) = ("syn-no-answer", "syn-no-answer");

/// Builds the example analyzer in `example` (its own manifest, lock file and target dir) and
/// writes its checked component to `<dir>/syn-no-answer.wasm`.
pub fn write_example(example: &Path, dir: &Path) -> Result<()> {
    watch_guest_sources(example)?;
    let (name, krate) = EXAMPLE;
    let modules = build_modules(example, GUEST_TARGET, &[krate])?;
    let component = componentize(name, module(&modules, krate)?)?;
    write(&dir.join(format!("{name}.wasm")), &component)
}

/// The module of `krate` in what [`build_modules`] returned.
fn module<'a>(modules: &'a BTreeMap<String, Vec<u8>>, krate: &str) -> Result<&'a [u8]> {
    modules.get(krate).map(Vec::as_slice).with_context(|| format!("{krate} was not built"))
}

/// The guest crates built for [`GUEST_TARGET`]: every component's and core module's.
fn guest_target_crates() -> Vec<&'static str> {
    let mut crates: Vec<&str> = TEST_ANALYZERS
        .iter()
        .filter_map(|(_, make)| match make {
            Make::Component { krate, .. } | Make::CoreModule { krate } => Some(*krate),
            Make::Wasi { .. } | Make::RandomBytes { .. } => None,
        })
        .collect();
    crates.sort_unstable();
    crates.dedup();
    crates
}

/// Builds, makes, checks and writes every [`TEST_ANALYZERS`] entry into `dir`.
pub fn write_all(guests: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    check_target_installed(GUEST_TARGET)?;
    let modules = build_modules(guests, GUEST_TARGET, &guest_target_crates())?;
    for (name, make) in TEST_ANALYZERS {
        let bytes = match make {
            Make::Component { krate, abi } => {
                let component = encode_component(name, module(&modules, krate)?)?;
                check_interfaces(name, &component, abi)?;
                component
            }
            Make::Wasi { krate } => wasi_component(guests, name, krate)?,
            Make::CoreModule { krate } => core_module(name, module(&modules, krate)?)?,
            Make::RandomBytes { len, seed } => random_bytes(name, *len, *seed)?,
        };
        write(&dir.join(format!("{name}.wasm")), &bytes)?;
    }
    Ok(())
}

/// Builds `krate` for [`WASI_TARGET`] and checks that the component imports `wasi:filesystem`.
fn wasi_component(guests: &Path, name: &str, krate: &str) -> Result<Vec<u8>> {
    check_target_installed(WASI_TARGET)?;
    let component = build_modules(guests, WASI_TARGET, &[krate])?
        .remove(krate)
        .with_context(|| format!("{krate} was not built"))?;
    let (imports, exports) = component_world(name, &component)?;
    ensure!(
        imports.iter().any(|i| i.starts_with("wasi:filesystem/")),
        "test analyzer {name:?} was meant to import wasi:filesystem but imports {imports:?}"
    );
    let export = required_export(ABI_VERSION);
    ensure!(
        exports.contains(&export),
        "test analyzer {name:?} exports {exports:?}, not {export:?}: the host would refuse it \
         for that before it got to its WASI imports"
    );
    Ok(component)
}

/// A crate's core module as is, checked to be one.
fn core_module(name: &str, module: &[u8]) -> Result<Vec<u8>> {
    ensure!(
        module.starts_with(WASM_MAGIC) && module.get(4..8) == Some(CORE_MODULE_VERSION),
        "test analyzer {name:?}: its crate's output is not a core WebAssembly module"
    );
    Ok(module.to_vec())
}

/// `len` bytes of splitmix64 output from `seed`, checked not to look like wasm.
fn random_bytes(name: &str, len: usize, seed: u64) -> Result<Vec<u8>> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        // splitmix64 (Steele, Lea, Flood): simple, and good enough to be nothing like wasm.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(len);
    ensure!(!bytes.starts_with(WASM_MAGIC), "test analyzer {name:?}: the seed made a wasm header");
    Ok(bytes)
}
