//! Scaffolding of the hostile test analyzers that implement the WIT export directly, because
//! the SDK would aggregate, check or refuse what they must send the host.
//!
//! Input: an analyzer's declaration and its `process` as plain functions. Output: the
//! component's export ([`export!`]: `init` returns the declaration, `process` calls the function
//! and packs its updates as the contract asks, or returns nothing, `tick` returns nothing) and
//! the WIT records of a declaration ([`info`], [`family`]). Not for real analyzers: they use
//! the SDK's `export_analyzer!`.

use wasmtap_sdk::wit::{AnalyzerInfo, MetricFamily, MetricKind, MetricUpdate};

/// A declaration named `name`, at the workspace's version, with `families`.
pub fn info(name: &str, families: Vec<MetricFamily>) -> AnalyzerInfo {
    AnalyzerInfo { name: name.to_owned(), version: env!("CARGO_PKG_VERSION").to_owned(), families }
}

/// A family without labels or buckets; set those with struct update syntax where needed.
pub fn family(name: impl Into<String>, help: impl Into<String>, kind: MetricKind) -> MetricFamily {
    MetricFamily {
        name: name.into(),
        help: help.into(),
        kind,
        label_names: Vec::new(),
        buckets: Vec::new(),
    }
}

/// What `process` returns when the analyzer gives it nothing to do: no update.
pub fn nothing(_batch: Vec<u8>) -> Result<Vec<MetricUpdate>, String> {
    Ok(Vec::new())
}

/// Exports the component: `export!(info = INFO_FN)` or `export!(info = INFO_FN, process =
/// PROCESS_FN)`, where `INFO_FN: fn() -> AnalyzerInfo` and
/// `PROCESS_FN: fn(Vec<u8>) -> Result<Vec<MetricUpdate>, String>` (default: [`nothing`]), whose
/// updates are packed as the contract asks; or `export!(info = INFO_FN, packed = PACKED_FN)`,
/// where `PACKED_FN: fn(Vec<u8>) -> Result<Vec<u8>, String>` returns the bytes itself, for an
/// analyzer whose bytes must not be what the SDK writes. Only on wasm32; natively the crate is
/// a library for its unit tests.
#[macro_export]
macro_rules! export {
    (info = $info:expr, packed = $packed:expr $(,)?) => {
        $crate::export!(@with $info, $packed);
    };
    (info = $info:expr $(, process = $process:expr)? $(,)?) => {
        $crate::export!(@with $info, |batch| {
            let process: fn(Vec<u8>) -> Result<Vec<wasmtap_sdk::wit::MetricUpdate>, String> =
                $crate::__or!($crate::nothing $(, $process)?);
            process(batch).map(|updates| wasmtap_sdk::packed::encode(&updates))
        });
    };
    (@with $info:expr, $packed:expr) => {
        // The export glue is `unsafe` (raw pointers across the ABI); it is generated, not
        // written here.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        mod raw_export {
            use wasmtap_sdk::bindings::exports::wasmtap::analyzer::analyzer::Guest;
            use wasmtap_sdk::wit;

            struct Export;

            impl Guest for Export {
                fn init(_config: wit::Config) -> Result<wit::AnalyzerInfo, String> {
                    #[allow(unused_imports)]
                    use super::*;
                    Ok(($info)())
                }

                fn process(batch: Vec<u8>) -> Result<Vec<u8>, String> {
                    #[allow(unused_imports)]
                    use super::*;
                    let packed: fn(Vec<u8>) -> Result<Vec<u8>, String> = $packed;
                    packed(batch)
                }

                fn tick(_now: u64, _end: bool) -> Result<Vec<u8>, String> {
                    Ok(wasmtap_sdk::packed::encode(&[]))
                }
            }

            wasmtap_sdk::bindings::__export_component!(Export with_types_in wasmtap_sdk::bindings);
        }
    };
}

/// The given expression, else the default (for [`export!`]'s optional `process`).
#[doc(hidden)]
#[macro_export]
macro_rules! __or {
    ($default:expr) => {
        $default
    };
    ($default:expr, $given:expr) => {
        $given
    };
}
