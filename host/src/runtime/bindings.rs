//! Stage: analyzers (the ABI).
//!
//! Input: `wit/analyzer.wit`, the `wasmtap:analyzer@0.1.0` package.
//! Output: Rust types and call stubs for the `analyzer-component` world. This is the one
//! `bindgen!` in the host; its types do not leave `runtime/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "analyzer-component",
});
