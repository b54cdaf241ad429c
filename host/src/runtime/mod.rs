//! Stage: analyzers.
//!
//! Inputs: `.wasm` component bytes (embedded defaults or user files), the sandbox limits, and
//! [`crate::batch::Batch`]es from the batch stage, one queue per worker.
//! Outputs: the analyzers' updates, applied to the registry; their self-metrics and states.
//!
//! - `engine`: the wasmtime engine that validates, compiles and initializes components into
//!   [`Analyzer`]s (`analyzer`), with the ABI's names (`bindings`) and the bounds every
//!   analyzer is held to ([`bounds`]); compiled components are cached ([`cache`]);
//! - [`instance`]: one sandboxed instance in its own `Store`, with an epoch deadline on every
//!   call and a cap on linear memory, tables and instances;
//! - [`worker`]: the worker threads, each running an instance of every analyzer under the
//!   failure policy; [`metrics`]: what they decide, as self-metrics and states;
//! - [`catalog`]: the loaded set, changed at run time by the analyzer directory.

mod analyzer;
mod bindings;
pub mod bounds;
pub mod cache;
pub mod catalog;
mod convert;
pub mod defaults;
mod engine;
pub mod instance;
pub mod metrics;
#[cfg(feature = "native-defaults")]
pub mod native;
pub mod worker;

pub use analyzer::{Analyzer, LoadError, sha256_hex};
pub use bindings::ABI_VERSION;
pub use bounds::Limits;
pub use engine::Runtime;
pub use instance::Session;
