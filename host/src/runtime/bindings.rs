//! Stage: analyzers (the ABI).
//!
//! Input: `wit/analyzer.wit`, the `wasmtap:analyzer@0.2.0` package.
//! Output: Rust types and call stubs for the `analyzer-component` world, and the names a
//! component must import and export. This is the one `bindgen!` in the host; its types do
//! not leave `runtime/`.

/// The WIT package version this host speaks.
pub const ABI_VERSION: &str = "0.2.0";
/// The versions before this one, whose components a rebuild with this host's SDK moves over
/// without a change to their code.
pub const EARLIER_ABI_VERSIONS: [&str; 1] = ["0.1.0"];
/// The interface every analyzer must export.
pub const EXPORT_NAME: &str = "wasmtap:analyzer/analyzer@0.2.0";
/// The only imports an analyzer may have: our host interface and the types it uses.
pub const ALLOWED_IMPORTS: [&str; 2] =
    ["wasmtap:analyzer/host@0.2.0", "wasmtap:analyzer/types@0.2.0"];
/// The WIT package prefix, to tell a wrong version from a foreign import.
pub const PACKAGE_PREFIX: &str = "wasmtap:analyzer/";

wasmtime::component::bindgen!({
    path: "../wit",
    world: "analyzer-component",
});
