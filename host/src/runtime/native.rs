//! Stage: analyzers (native built-ins, for benchmarks).
//!
//! Input: packed batches and packet-time ticks, like a Wasm instance. Output: the same updates,
//! packed and read back as a Wasm instance's are.
//! The default analyzers' Rust code, linked into the host and run directly through the guest
//! SDK's `Runner`, with no sandbox. It exists so that a benchmark can put the Wasm pipeline
//! beside the very same analyzers compiled natively, in the same run. User analyzers never run
//! this way.

use std::panic::{AssertUnwindSafe, catch_unwind};

use wasmtap_sdk::{Analyzer, Config, Runner, wit};

use super::convert;
use super::instance::{CallError, Session};
use crate::registry::{FamilySpec, UpdateList};

/// Makes a fresh, un-initialized instance of one built-in analyzer.
pub type Factory = fn() -> Box<dyn Native>;

/// A native analyzer instance.
pub trait Native {
    /// Runs `init`; returns the name, version and families.
    fn init(&mut self) -> Result<(String, String, Vec<FamilySpec>), CallError>;
    fn process(&mut self, batch: &[u8], out: &mut UpdateList) -> Result<(), CallError>;
    fn tick(&mut self, now_ns: u64, end: bool, out: &mut UpdateList) -> Result<(), CallError>;
}

super::convert::wit_conversions!(wit);

/// A native panic is reported as a trap, as the same panic in Wasm would be.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, CallError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(CallError::Guest),
        Err(_) => Err(CallError::Trap("panicked (native)".into())),
    }
}

impl<A: Analyzer> Native for Runner<A> {
    fn init(&mut self) -> Result<(String, String, Vec<FamilySpec>), CallError> {
        let info = guarded(|| Runner::init(self, Config::default()))?;
        let families = info.families.iter().map(family_spec).collect();
        Ok((info.name, info.version, families))
    }

    fn process(&mut self, batch: &[u8], out: &mut UpdateList) -> Result<(), CallError> {
        let bytes = guarded(|| Runner::process_packed(self, batch))?;
        Ok(convert::updates(&bytes, usize::MAX, out)?)
    }

    fn tick(&mut self, now_ns: u64, end: bool, out: &mut UpdateList) -> Result<(), CallError> {
        let bytes = guarded(|| Runner::tick_packed(self, now_ns, end))?;
        Ok(convert::updates(&bytes, usize::MAX, out)?)
    }
}

impl Session for Box<dyn Native> {
    fn process(&mut self, batch: &[u8], out: &mut UpdateList) -> Result<(), CallError> {
        self.as_mut().process(batch, out)
    }

    fn tick(&mut self, now_ns: u64, end: bool, out: &mut UpdateList) -> Result<(), CallError> {
        self.as_mut().tick(now_ns, end, out)
    }
}

fn boxed<A: Analyzer + 'static>() -> Box<dyn Native> {
    Box::new(Runner::<A>::new())
}

/// The built-in analyzers as native code, in the same order as the embedded components.
pub const DEFAULTS: &[(&str, Factory)] = &[
    ("traffic", boxed::<wasmtap_analyzer_traffic::Traffic>),
    ("header-flags", boxed::<wasmtap_analyzer_header_flags::HeaderFlags>),
    ("tcp-analysis", boxed::<wasmtap_analyzer_tcp_analysis::TcpAnalysis>),
];
