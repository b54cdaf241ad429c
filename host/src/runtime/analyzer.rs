//! Stage: analyzers (a loaded analyzer).
//!
//! Input: a component that [`super::Runtime::load`] validated, compiled and initialized (or a
//! built-in's native code, in a benchmark build).
//! Output: an [`Analyzer`]: its name, version, source, sha256 and declared families, shared
//! by all workers, each of which starts its own instances of it; or a [`LoadError`] saying
//! why it could not be loaded.

use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::bindings::{ABI_VERSION, AnalyzerComponentPre, EXPORT_NAME};
use super::bounds;
use super::instance::HostState;
use crate::registry::{FamilyError, FamilySpec};

/// Why an analyzer could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component: the host loads components of \
         wasmtap:analyzer@{ABI_VERSION}; `wasmtap build` in the analyzer's crate builds one"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "built for wasmtap:analyzer@{found}, which this host no longer runs: it speaks \
         wasmtap:analyzer@{ABI_VERSION}, in which updates cross as packed bytes; rebuild the \
         analyzer with the wasmtap SDK of this host (its code needs no change)"
    )]
    EarlierVersion { found: String },
    #[error(
        "built for wasmtap:analyzer@{found}, but this host speaks wasmtap:analyzer@{ABI_VERSION}; \
         run it on a host of that version, or rebuild it with the wasmtap SDK of this host"
    )]
    WrongVersion { found: String },
    #[error(
        "imports {}, which analyzers may not use: the only import is \
         wasmtap:analyzer/host@{ABI_VERSION} (build for wasm32-unknown-unknown, not wasip2)",
        .0.join(", ")
    )]
    ForbiddenImport(Vec<String>),
    #[error("does not export {EXPORT_NAME}: is it built for the analyzer-component world?")]
    MissingExport,
    #[error("init failed: {0}")]
    Init(String),
    #[error("declares an invalid metric family: {0}")]
    Family(FamilyError),
    #[error("{0}")]
    Bounds(bounds::Exceeded),
    #[error("is larger than {limit} bytes, the limit for a component")]
    TooBig { limit: usize },
    #[error("took over {0:?} to compile, the limit for compiling a component")]
    TooSlow(Duration),
}

/// A loaded analyzer, shared by all workers.
pub struct Analyzer {
    pub name: String,
    pub version: String,
    /// Where it came from: a path, or `builtin:NAME`.
    pub source: String,
    pub sha256: String,
    pub families: Vec<FamilySpec>,
    pub(super) backend: Backend,
    pub(super) last_error: Mutex<Option<String>>,
}

impl Analyzer {
    /// The reason of the latest failed call, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    pub(super) fn set_last_error(&self, e: String) {
        *self.last_error.lock() = Some(e);
    }
}

/// How an analyzer's instances are made.
pub(super) enum Backend {
    /// A sandboxed Wasm component.
    Wasm(AnalyzerComponentPre<HostState>),
    /// A built-in analyzer's native code (benchmarks only).
    #[cfg(feature = "native-defaults")]
    Native(super::native::Factory),
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The sha256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
