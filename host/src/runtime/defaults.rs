//! Stage: analyzers (the built-in ones).
//!
//! Input: the default analyzers, compiled from `guest-analyzers/` and made components by the
//! build script. Output: `DEFAULT_ANALYZERS`, each as (name, component bytes), embedded in the
//! binary.

include!(concat!(env!("OUT_DIR"), "/default_analyzers.rs"));
