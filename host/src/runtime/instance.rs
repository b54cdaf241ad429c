//! Stage: analyzers (one sandboxed instance).
//!
//! Inputs: a pre-linked component, the sandbox limits, packed batches (`&[u8]`) and packet-time
//! ticks. Outputs: metric updates in the registry's terms ([`Update`]), or a [`CallError`]
//! saying why the call failed. An instance owns its `Store`; after any error the caller drops
//! it and starts a fresh one.

use std::sync::Arc;
use std::time::Instant;

use prometheus::IntCounter;
use wasmtime::{Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};

use super::bindings::wasmtap::analyzer::{host, types};
use super::bindings::{AnalyzerComponent, AnalyzerComponentPre};
use super::{EPOCH_TICK, Limits};
use crate::registry::{FamilySpec, Update};

/// Why a call into an analyzer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("exceeded its CPU budget of {0:?} per call")]
    Timeout(std::time::Duration),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("tried to grow its memory past the cap of {} MiB", .0 >> 20)]
    Memory(usize),
    #[error("returned an error: {0}")]
    Guest(String),
    #[error("returned {got} updates, over the limit of {limit}")]
    TooManyUpdates { got: usize, limit: usize },
    #[error("sent an invalid update: {0}")]
    BadUpdate(crate::registry::UpdateError),
}

impl CallError {
    /// Every value [`CallError::reason`] can return.
    pub const REASONS: [&str; 6] =
        ["trap", "timeout", "error", "too_many_updates", "bad_update", "memory"];

    /// A short label value for the metrics.
    pub fn reason(&self) -> &'static str {
        let i = match self {
            CallError::Trap(_) => 0,
            CallError::Timeout(_) => 1,
            CallError::Guest(_) => 2,
            CallError::TooManyUpdates { .. } => 3,
            CallError::BadUpdate(_) => 4,
            CallError::Memory(_) => 5,
        };
        Self::REASONS[i]
    }
}

/// The store's resource limits, remembering the largest linear memory asked for.
struct Limiter {
    limits: StoreLimits,
    peak_memory: usize,
    grow_failed: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, max);
        if matches!(allowed, Ok(true)) {
            self.peak_memory = self.peak_memory.max(desired);
        } else {
            self.grow_failed = true;
        }
        allowed
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, max)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Per-store host data: the memory limiter and the log rate limiter.
pub struct HostState {
    limiter: Limiter,
    name: Arc<str>,
    log_window: Instant,
    log_lines: u32,
    log_per_second: u32,
    /// Lines dropped by the rate limit.
    log_dropped: IntCounter,
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        let now = Instant::now();
        if now.duration_since(self.log_window).as_secs() >= 1 {
            (self.log_window, self.log_lines) = (now, 0);
        }
        if self.log_lines >= self.log_per_second {
            self.log_dropped.inc();
            return;
        }
        self.log_lines += 1;
        // Guest text goes to the log as a value, never as a format string.
        let analyzer = &*self.name;
        match level {
            types::LogLevel::Error => tracing::error!(analyzer, "{message}"),
            types::LogLevel::Warn => tracing::warn!(analyzer, "{message}"),
            types::LogLevel::Info => tracing::info!(analyzer, "{message}"),
            types::LogLevel::Debug => tracing::debug!(analyzer, "{message}"),
        }
    }
}

/// One live instance of an analyzer in its own store.
pub struct Instance {
    store: Store<HostState>,
    bindings: AnalyzerComponent,
    info: types::AnalyzerInfo,
    deadline_ticks: u64,
    limits: Limits,
}

impl Instance {
    /// Instantiates the component and runs `init`.
    pub fn start(
        engine: &Engine,
        pre: &AnalyzerComponentPre<HostState>,
        limits: &Limits,
        name: &str,
        log_dropped: IntCounter,
    ) -> Result<Self, CallError> {
        let limits_builder = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            // One component of ours needs a handful of each; these stop a component from
            // building a forest of instances or tables inside one store.
            .instances(16)
            .tables(16)
            .memories(4)
            .table_elements(100_000)
            // A failed grow traps at once, so the reason is clear; a guest allocator that
            // handles the failure itself would only abort later with less to say.
            .trap_on_grow_failure(true);
        let limiter =
            Limiter { limits: limits_builder.build(), peak_memory: 0, grow_failed: false };
        let state = HostState {
            limiter,
            name: Arc::from(name),
            log_window: Instant::now(),
            log_lines: 0,
            log_per_second: limits.log_lines_per_second,
            log_dropped,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = limits.call_budget.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1);
        let deadline_ticks = u64::try_from(ticks).unwrap_or(u64::MAX);
        store.set_epoch_deadline(deadline_ticks);
        let bindings = pre.instantiate(&mut store).map_err(|e| classify(e, limits, false))?;
        let config = types::Config { entries: Vec::new() };
        store.set_epoch_deadline(deadline_ticks);
        let info = bindings
            .wasmtap_analyzer_analyzer()
            .call_init(&mut store, &config)
            .map_err(|e| classify(e, limits, store.data().limiter.grow_failed))?
            .map_err(CallError::Guest)?;
        Ok(Self { store, bindings, info, deadline_ticks, limits: limits.clone() })
    }

    /// The name, version and families the analyzer declared in `init`.
    pub fn info(&self) -> (String, String, Vec<FamilySpec>) {
        let families = self.info.families.iter().map(family_spec).collect();
        (self.info.name.clone(), self.info.version.clone(), families)
    }
}

impl super::Session for Instance {
    fn peak_memory(&self) -> Option<usize> {
        Some(self.store.data().limiter.peak_memory)
    }

    fn process(&mut self, batch: &[u8]) -> Result<Vec<Update>, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = self.bindings.wasmtap_analyzer_analyzer().call_process(&mut self.store, batch);
        self.finish(result)
    }

    fn tick(&mut self, now_ns: u64, end: bool) -> Result<Vec<Update>, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result =
            self.bindings.wasmtap_analyzer_analyzer().call_tick(&mut self.store, now_ns, end);
        self.finish(result)
    }
}

impl Instance {
    fn finish(
        &mut self,
        result: wasmtime::Result<Result<Vec<types::MetricUpdate>, String>>,
    ) -> Result<Vec<Update>, CallError> {
        let grow_failed = std::mem::take(&mut self.store.data_mut().limiter.grow_failed);
        let updates = result
            .map_err(|e| classify(e, &self.limits, grow_failed))?
            .map_err(CallError::Guest)?;
        if updates.len() > self.limits.max_updates {
            let (got, limit) = (updates.len(), self.limits.max_updates);
            return Err(CallError::TooManyUpdates { got, limit });
        }
        Ok(updates.into_iter().map(update).collect())
    }
}

fn classify(e: wasmtime::Error, limits: &Limits, grow_failed: bool) -> CallError {
    if grow_failed {
        return CallError::Memory(limits.memory_bytes);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout(limits.call_budget),
        // The trap itself is the message; the wasm backtrace goes to the debug log.
        Some(trap) => {
            tracing::debug!("{e:?}");
            CallError::Trap(trap.to_string())
        }
        None => CallError::Trap(format!("{e:#}")),
    }
}

super::wit_conversions!(types);
