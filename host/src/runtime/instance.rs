//! Stage: analyzers (one sandboxed instance).
//!
//! Inputs: a pre-linked component, the sandbox limits, packed batches (`&[u8]`) and packet-time
//! ticks. Outputs: metric updates in the registry's terms, read into an [`UpdateList`], or a
//! [`CallError`] saying why the call failed. An instance owns its `Store`; after any error the caller drops
//! it and starts a fresh one.

use std::sync::Arc;
use std::time::Instant;

use prometheus::IntCounter;
use wasmtime::{
    Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};

use super::bindings::wasmtap::analyzer::{host, types};
use super::bindings::{AnalyzerComponent, AnalyzerComponentPre};
use super::bounds::{self, EPOCH_TICK, Limits};
use super::convert;
use crate::registry::{FamilySpec, UpdateList};
use crate::telemetry::thread_cpu_ns;

/// One running instance of an analyzer, Wasm or native.
pub trait Session {
    /// Runs one packed batch; its updates replace what `out` held.
    fn process(&mut self, batch: &[u8], out: &mut UpdateList) -> Result<(), CallError>;
    /// Advances packet time; `end` marks the end of a replay. Its updates replace `out`'s.
    fn tick(&mut self, now_ns: u64, end: bool, out: &mut UpdateList) -> Result<(), CallError>;
    /// The largest linear memory the instance has had, in bytes, where that is known.
    fn peak_memory(&self) -> Option<usize> {
        None
    }
}

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
    #[error("returned updates that do not parse: {0}")]
    Malformed(wasmtap_record::updates::DecodeError),
    #[error("returned {0}")]
    TooLarge(bounds::Exceeded),
}

impl From<convert::Refused> for CallError {
    fn from(r: convert::Refused) -> Self {
        match r {
            convert::Refused::Malformed(e) => CallError::Malformed(e),
            convert::Refused::TooMany { got, limit } => CallError::TooManyUpdates { got, limit },
            convert::Refused::TooLarge(e) => CallError::TooLarge(e),
        }
    }
}

/// Why a call failed, as the `reason` label of `wasmtap_analyzer_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Trap,
    Timeout,
    Error,
    TooManyUpdates,
    BadUpdate,
    Memory,
    TooLarge,
}

impl Reason {
    /// Every reason, each exported from the moment an analyzer loads.
    pub const ALL: [Reason; 7] = [
        Reason::Trap,
        Reason::Timeout,
        Reason::Error,
        Reason::TooManyUpdates,
        Reason::BadUpdate,
        Reason::Memory,
        Reason::TooLarge,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Trap => "trap",
            Reason::Timeout => "timeout",
            Reason::Error => "error",
            Reason::TooManyUpdates => "too_many_updates",
            Reason::BadUpdate => "bad_update",
            Reason::Memory => "memory",
            Reason::TooLarge => "too_large",
        }
    }
}

impl CallError {
    /// Why the call failed, for the metrics.
    pub fn reason(&self) -> Reason {
        match self {
            CallError::Trap(_) => Reason::Trap,
            CallError::Timeout(_) => Reason::Timeout,
            CallError::Guest(_) => Reason::Error,
            CallError::TooManyUpdates { .. } => Reason::TooManyUpdates,
            CallError::BadUpdate(_) | CallError::Malformed(_) => Reason::BadUpdate,
            CallError::Memory(_) => Reason::Memory,
            CallError::TooLarge(_) => Reason::TooLarge,
        }
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

/// Per-store host data: the memory limiter, the CPU budget of the call under way and the log
/// rate limiter.
pub struct HostState {
    limiter: Limiter,
    /// The worker thread's CPU time when the current call began, in ns.
    call_cpu_start: u64,
    /// CPU time one call may use, in ns.
    cpu_budget: u64,
    name: Arc<str>,
    log_window: Instant,
    log_lines: u32,
    log_per_second: u32,
    log: LogCounters,
}

/// An instance's counters of log lines dropped by the rate limit and cut to length.
#[derive(Clone)]
pub struct LogCounters {
    pub dropped: IntCounter,
    pub cut: IntCounter,
}

impl LogCounters {
    /// Counters that count for nobody (a probe instance at load).
    pub fn unused() -> Self {
        // An IntCounter with a fixed, valid name and help cannot fail to build.
        let c = || IntCounter::new("unused", "unused").unwrap_or_else(|_| unreachable!());
        Self { dropped: c(), cut: c() }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        let now = Instant::now();
        if now.duration_since(self.log_window).as_secs() >= 1 {
            (self.log_window, self.log_lines) = (now, 0);
        }
        if self.log_lines >= self.log_per_second {
            self.log.dropped.inc();
            return;
        }
        self.log_lines += 1;
        if bounds::is_cut(&message, bounds::MAX_GUEST_TEXT) {
            self.log.cut.inc();
        }
        // One line, whatever the guest wrote: no newline or escape sequence reaches the log.
        let message = bounds::guest_text(&message, bounds::MAX_GUEST_TEXT);
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
        log: LogCounters,
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
        let cpu_budget = u64::try_from(limits.call_budget.as_nanos()).unwrap_or(u64::MAX);
        let state = HostState {
            limiter,
            call_cpu_start: thread_cpu_ns(),
            cpu_budget,
            name: Arc::from(name),
            log_window: Instant::now(),
            log_lines: 0,
            log_per_second: limits.log_lines_per_second,
            log,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|ctx| Ok(over_budget(ctx.data())));
        let deadline_ticks = ticks(limits.call_budget.as_nanos());
        begin_call(&mut store, deadline_ticks);
        let bindings = pre.instantiate(&mut store).map_err(|e| classify(e, limits, false))?;
        let config = types::Config { entries: Vec::new() };
        begin_call(&mut store, deadline_ticks);
        let info = bindings
            .wasmtap_analyzer_analyzer()
            .call_init(&mut store, &config)
            .map_err(|e| classify(e, limits, store.data().limiter.grow_failed))?
            .map_err(guest_error)?;
        Ok(Self { store, bindings, info, deadline_ticks, limits: limits.clone() })
    }

    /// The name and version the analyzer declared in `init`.
    pub fn name_and_version(&self) -> (String, String) {
        (self.info.name.clone(), self.info.version.clone())
    }

    /// How many families the analyzer declared in `init`: counted before they are copied.
    pub fn declared_families(&self) -> usize {
        self.info.families.len()
    }

    /// The families the analyzer declared in `init`, in the registry's terms.
    pub fn families(&self) -> Vec<FamilySpec> {
        self.info.families.iter().map(family_spec).collect()
    }
}

impl Session for Instance {
    fn peak_memory(&self) -> Option<usize> {
        Some(self.store.data().limiter.peak_memory)
    }

    fn process(&mut self, batch: &[u8], out: &mut UpdateList) -> Result<(), CallError> {
        begin_call(&mut self.store, self.deadline_ticks);
        let result = self.bindings.wasmtap_analyzer_analyzer().call_process(&mut self.store, batch);
        self.finish(result, out)
    }

    fn tick(&mut self, now_ns: u64, end: bool, out: &mut UpdateList) -> Result<(), CallError> {
        begin_call(&mut self.store, self.deadline_ticks);
        let result =
            self.bindings.wasmtap_analyzer_analyzer().call_tick(&mut self.store, now_ns, end);
        self.finish(result, out)
    }
}

impl Instance {
    fn finish(
        &mut self,
        result: wasmtime::Result<Result<Vec<u8>, String>>,
        out: &mut UpdateList,
    ) -> Result<(), CallError> {
        let grow_failed = std::mem::take(&mut self.store.data_mut().limiter.grow_failed);
        let bytes =
            result.map_err(|e| classify(e, &self.limits, grow_failed))?.map_err(guest_error)?;
        Ok(convert::updates(&bytes, self.limits.max_updates, out)?)
    }
}

/// A guest's `Err` string, cut and escaped: it goes into logs, reports and `/analyzers`.
fn guest_error(e: String) -> CallError {
    CallError::Guest(bounds::guest_text(&e, bounds::MAX_GUEST_TEXT))
}

/// Epoch ticks in `ns`, rounded up, at least one.
fn ticks(ns: u128) -> u64 {
    u64::try_from(ns.div_ceil(EPOCH_TICK.as_nanos()).max(1)).unwrap_or(u64::MAX)
}

/// Starts the CPU budget of a call: notes the thread's CPU time, and arms the epoch deadline
/// for when the budget would be spent if the call had the CPU to itself.
fn begin_call(store: &mut Store<HostState>, deadline_ticks: u64) {
    store.data_mut().call_cpu_start = thread_cpu_ns();
    store.set_epoch_deadline(deadline_ticks);
}

/// Called on the worker thread when a call reaches its epoch deadline. The epoch counts wall
/// time, but the budget is CPU time: on a busy or CPU-limited node a thread may get a fraction
/// of the wall time, and an honest call must not time out for that. So the call goes on, with
/// a deadline as far away as the CPU budget it has left, until the thread's own CPU time for
/// the call reaches the budget.
fn over_budget(state: &HostState) -> UpdateDeadline {
    let used = thread_cpu_ns().saturating_sub(state.call_cpu_start);
    if used >= state.cpu_budget {
        UpdateDeadline::Interrupt
    } else {
        UpdateDeadline::Continue(ticks(u128::from(state.cpu_budget - used)))
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

super::convert::wit_conversions!(types);
