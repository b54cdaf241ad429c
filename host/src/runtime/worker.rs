//! Stage: analyzers (workers and the failure policy).
//!
//! Input: [`Batch`]es from the batch stage, one queue per worker.
//! Output: the analyzers' updates, applied to the registry; failure counts and states in the
//! self-metrics.
//!
//! Every worker thread owns one instance of every analyzer. A failed call (trap, timeout,
//! `Err`, too many or invalid updates) discards that call's updates, drops the instance and
//! re-instantiates it after an exponential backoff; after [`QUARANTINE_FAILURES`] failures
//! within [`QUARANTINE_WINDOW`] the analyzer is quarantined on that worker. Other analyzers
//! never see any of this.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use prometheus::{Histogram, IntCounter};

use super::instance::CallError;
use super::{Analyzer, Runtime, Session};
use crate::batch::{Batch, QUEUE_BATCHES};
use crate::registry::{Families, Update};
use crate::telemetry::Shared;

/// First wait before re-instantiating a failed analyzer; doubles on every failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait between attempts, so a transient fault heals within half a minute.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Failures within the window that quarantine an analyzer: a persistent fault, not a fluke.
pub const QUARANTINE_FAILURES: usize = 5;
/// The window over which failures are counted.
pub const QUARANTINE_WINDOW: Duration = Duration::from_secs(60);
/// Analyzers are ticked at least this often in packet time, to expire idle state.
const TICK_EVERY_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Backoff,
    Quarantined,
}

impl State {
    /// Index into [`crate::telemetry::STATES`].
    fn index(self) -> usize {
        match self {
            State::Running => 0,
            State::Backoff => 1,
            State::Quarantined => 2,
        }
    }
}

/// One analyzer on one worker: its instance and its failure history.
struct Slot {
    analyzer: Arc<Analyzer>,
    families: Families,
    instance: Option<Box<dyn Session>>,
    state: State,
    failures: VecDeque<Instant>,
    backoff: Duration,
    retry_at: Instant,
    batch_seconds: Histogram,
    skipped: IntCounter,
    log_dropped: IntCounter,
}

impl Slot {
    fn set_state(&mut self, shared: &Shared, state: State) {
        let t = &shared.telemetry;
        t.instance_state(&self.analyzer.name, Some(self.state.index()), state.index());
        self.state = state;
    }

    fn start(&mut self, runtime: &Runtime, shared: &Shared) {
        let started = runtime.start(&self.analyzer, self.log_dropped.clone());
        match started {
            Ok(instance) => {
                self.instance = Some(instance);
                self.set_state(shared, State::Running);
            }
            Err(e) => self.fail(shared, &e),
        }
    }

    /// Runs one call, applying its updates only if the whole call succeeded.
    fn call(
        &mut self,
        runtime: &Runtime,
        shared: &Shared,
        packets: usize,
        f: impl FnOnce(&mut dyn Session) -> Result<Vec<Update>, CallError>,
    ) {
        if self.instance.is_none()
            && self.state == State::Backoff
            && Instant::now() >= self.retry_at
        {
            let name = self.analyzer.name.as_str();
            shared.telemetry.analyzer_restarts.with_label_values(&[name]).inc();
            self.start(runtime, shared);
        }
        let Some(instance) = self.instance.as_mut() else {
            self.skipped.inc_by(packets as u64);
            return;
        };
        let t0 = Instant::now();
        let result = f(instance.as_mut());
        self.batch_seconds.observe(t0.elapsed().as_secs_f64());
        let applied = result.and_then(|u| Ok(shared.registry.apply(&self.families, u)?));
        if let Err(e) = applied {
            self.skipped.inc_by(packets as u64);
            self.fail(shared, &e);
        }
    }

    fn fail(&mut self, shared: &Shared, e: &CallError) {
        let a = &self.analyzer;
        let t = &shared.telemetry;
        let reason = match e {
            CallError::Timeout(_) => "timeout",
            CallError::Trap(_) => "trap",
            CallError::Guest(_) => "error",
            CallError::TooManyUpdates { .. } => "too_many_updates",
            CallError::BadUpdate(_) => "bad_update",
        };
        if matches!(e, CallError::Timeout(_) | CallError::Trap(_)) {
            t.analyzer_traps.with_label_values(&[&a.name]).inc();
        }
        t.analyzer_failures.with_label_values(&[&a.name, reason]).inc();
        self.instance = None;
        let now = Instant::now();
        self.failures.push_back(now);
        while self.failures.front().is_some_and(|f| now.duration_since(*f) > QUARANTINE_WINDOW) {
            self.failures.pop_front();
        }
        if self.failures.len() >= QUARANTINE_FAILURES {
            tracing::error!(
                analyzer = %a.name, version = %a.version, source = %a.source,
                "quarantined after {} failures within {:?}; last: {e}",
                self.failures.len(), QUARANTINE_WINDOW
            );
            self.set_state(shared, State::Quarantined);
            return;
        }
        tracing::warn!(
            analyzer = %a.name, version = %a.version, source = %a.source,
            "analyzer {e}; restarting in {:?}", self.backoff
        );
        self.retry_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.set_state(shared, State::Backoff);
    }
}

/// The pool of worker threads.
pub struct Workers {
    queues: Vec<Sender<Batch>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers, each with its own instance of every analyzer.
    pub fn start(
        n: usize,
        runtime: &Arc<Runtime>,
        analyzers: &[(Arc<Analyzer>, Families)],
        shared: &Shared,
    ) -> std::io::Result<Self> {
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let (tx, rx) = crossbeam_channel::bounded(QUEUE_BATCHES);
            let (runtime, shared) = (runtime.clone(), shared.clone());
            let analyzers = analyzers.to_vec();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || work(&runtime, &shared, analyzers, &rx))?;
            queues.push(tx);
            threads.push(thread);
        }
        Ok(Self { queues, threads })
    }

    /// One sender per worker, for a source's batcher.
    pub fn queues(&self) -> Vec<Sender<Batch>> {
        self.queues.clone()
    }

    /// Closes the queues, waits for the workers to drain them and run their final tick.
    /// Every batcher must have been dropped first.
    pub fn finish(self) {
        drop(self.queues);
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

fn work(
    runtime: &Runtime,
    shared: &Shared,
    analyzers: Vec<(Arc<Analyzer>, Families)>,
    rx: &Receiver<Batch>,
) {
    let t = &shared.telemetry;
    let mut slots: Vec<Slot> = analyzers
        .into_iter()
        .map(|(analyzer, families)| {
            let name = analyzer.name.as_str();
            let batch_seconds = t.analyzer_batch_seconds.with_label_values(&[name]);
            let skipped = t.analyzer_skipped.with_label_values(&[name]);
            let log_dropped = t.analyzer_log_dropped.with_label_values(&[name]);
            t.instance_state(name, None, State::Backoff.index());
            Slot {
                analyzer,
                families,
                instance: None,
                state: State::Backoff,
                failures: VecDeque::new(),
                backoff: BACKOFF_START,
                retry_at: Instant::now(),
                batch_seconds,
                skipped,
                log_dropped,
            }
        })
        .collect();
    for slot in &mut slots {
        slot.start(runtime, shared);
    }
    let mut last_ts = 0u64;
    let mut next_tick = 0u64;
    for batch in rx {
        for slot in &mut slots {
            slot.call(runtime, shared, batch.len(), |i| i.process(batch.bytes()));
        }
        last_ts = last_ts.max(batch.max_ts());
        drop(batch);
        if last_ts >= next_tick {
            if next_tick != 0 {
                for slot in &mut slots {
                    slot.call(runtime, shared, 0, |i| i.tick(last_ts, false));
                }
            }
            next_tick = last_ts.saturating_add(TICK_EVERY_NS);
        }
    }
    for slot in &mut slots {
        slot.call(runtime, shared, 0, |i| i.tick(last_ts, true));
    }
}
