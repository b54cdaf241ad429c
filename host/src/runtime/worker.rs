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
//!
//! Updates may be held in the analyzers over several batches ([`Flush`]), so that a busy
//! analyzer returns one update per series every so often instead of every batch: the host
//! then lifts and applies far fewer. A failed call loses the held updates with its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select_biased};
use parking_lot::Mutex;

use super::analyzer::Analyzer;
use super::engine::Runtime;
use super::instance::{CallError, Session};
use super::metrics::{AnalyzerMetrics, SlotMetrics, State};
use crate::batch::{Batch, QUEUE_BATCHES, record};
use crate::health::{Health, Watched};
use crate::registry::{Families, Registry, UpdateList};

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

/// When the workers ask analyzers for the updates they hold (every tick does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// At ticks only, which come with packet time: a replay's output then depends on the
    /// capture alone, not on how fast it ran.
    Ticks,
    /// Also at least this often in wall time, and this long after the last batch when the
    /// traffic stops: live metrics trail the traffic by at most this (plus the batch age).
    Every(Duration),
}

/// A live worker's flush interval: with the batch age (50 ms) a packet shows in the metrics
/// within about a tenth of a second.
pub const LIVE_FLUSH: Duration = Duration::from_millis(50);

/// What the workers write to: the registry their updates go to, the analyzers' self-metrics
/// and states, and the health that a worker thread dying shows in.
#[derive(Clone)]
pub struct Sinks {
    pub registry: Arc<Registry>,
    pub metrics: Arc<AnalyzerMetrics>,
    pub health: Arc<Health>,
}

/// One analyzer on one worker: its instance and its failure history.
struct Slot {
    analyzer: Arc<Analyzer>,
    families: Families,
    instance: Option<Box<dyn Session>>,
    /// Each call's updates, read into the same buffers every call.
    updates: UpdateList,
    state: State,
    failures: VecDeque<Instant>,
    backoff: Duration,
    retry_at: Instant,
    metrics: SlotMetrics,
}

impl Slot {
    fn new(analyzer: Arc<Analyzer>, families: Families, sinks: &Sinks) -> Self {
        let metrics = sinks.metrics.slot(&analyzer.name);
        sinks.metrics.transition(&analyzer.name, None, Some(State::Backoff));
        Slot {
            analyzer,
            families,
            instance: None,
            updates: UpdateList::default(),
            state: State::Backoff,
            failures: VecDeque::new(),
            backoff: BACKOFF_START,
            retry_at: Instant::now(),
            metrics,
        }
    }

    fn set_state(&mut self, sinks: &Sinks, state: State) {
        sinks.metrics.transition(&self.analyzer.name, Some(self.state), Some(state));
        self.state = state;
    }

    /// Takes this instance out of the state counts, before the slot is dropped.
    fn retire(&self, sinks: &Sinks) {
        sinks.metrics.transition(&self.analyzer.name, Some(self.state), None);
    }

    fn start(&mut self, runtime: &Runtime, sinks: &Sinks) {
        let started = runtime.start(&self.analyzer, self.metrics.log.clone());
        match started {
            Ok(instance) => {
                self.instance = Some(instance);
                self.set_state(sinks, State::Running);
            }
            Err(e) => self.fail(sinks, &e),
        }
    }

    /// Runs one call, applying its updates only if the whole call succeeded.
    fn call(
        &mut self,
        runtime: &Runtime,
        sinks: &Sinks,
        packets: usize,
        f: impl FnOnce(&mut dyn Session, &mut UpdateList) -> Result<(), CallError>,
    ) {
        if self.instance.is_none()
            && self.state == State::Backoff
            && Instant::now() >= self.retry_at
        {
            self.metrics.restarts.inc();
            self.start(runtime, sinks);
        }
        let Some(instance) = self.instance.as_mut() else {
            self.metrics.skipped.inc_by(packets as u64);
            return;
        };
        let t0 = Instant::now();
        let result = f(instance.as_mut(), &mut self.updates);
        self.metrics.batch_seconds.observe(t0.elapsed().as_secs_f64());
        let applied = result.and_then(|()| {
            sinks.registry.apply_list(&self.families, &self.updates).map_err(CallError::BadUpdate)
        });
        // Now, not at the next call: what a large call needed goes back at once.
        self.updates.clear();
        if let Err(e) = applied {
            self.metrics.skipped.inc_by(packets as u64);
            self.fail(sinks, &e);
        }
    }

    fn fail(&mut self, sinks: &Sinks, e: &CallError) {
        let a = &self.analyzer;
        if matches!(e, CallError::Timeout(_) | CallError::Trap(_)) {
            self.metrics.traps.inc();
        }
        self.metrics.failed(&a.name, e.reason());
        a.set_last_error(e.to_string());
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
            self.set_state(sinks, State::Quarantined);
            return;
        }
        tracing::warn!(
            analyzer = %a.name, version = %a.version, source = %a.source,
            "analyzer {e}; restarting in {:?}", self.backoff
        );
        self.retry_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.set_state(sinks, State::Backoff);
    }
}

/// A change to the set of analyzers, applied by every worker between two batches.
pub enum Control {
    /// Add an analyzer, or replace the running one of the same name.
    Install(Arc<Analyzer>, Families),
    /// Remove the analyzer of this name.
    Remove(String),
}

/// What the workers share to end a capture together: the latest packet time any of them saw,
/// and a barrier that all pass once their queues are drained. The final tick then uses the
/// same time on every worker, so what expires at the end does not depend on the sharding.
struct End {
    latest: AtomicU64,
    drained: Barrier,
}

/// A change and where to say it was applied.
type Acked = (Control, Sender<()>);

/// How long a change waits for every worker to apply it. A worker applies changes between
/// batches, and a batch takes milliseconds, so this only trips on a worker that is stuck.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// The pool of worker threads.
pub struct Workers {
    queues: Mutex<Vec<Sender<Batch>>>,
    controls: Mutex<Vec<Sender<Acked>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` workers, each with its own instance of every analyzer.
    pub fn start(
        n: usize,
        runtime: &Arc<Runtime>,
        analyzers: &[(Arc<Analyzer>, Families)],
        sinks: &Sinks,
        flush: Flush,
    ) -> std::io::Result<Self> {
        let (mut queues, mut controls, mut threads) = (Vec::new(), Vec::new(), Vec::new());
        let n = n.max(1);
        let end = Arc::new(End { latest: AtomicU64::new(0), drained: Barrier::new(n) });
        for i in 0..n {
            let (tx, rx) = crossbeam_channel::bounded(QUEUE_BATCHES);
            let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
            let (runtime, sinks, end) = (runtime.clone(), sinks.clone(), end.clone());
            let analyzers = analyzers.to_vec();
            let name = format!("worker-{i}");
            let thread = std::thread::Builder::new().name(name.clone()).spawn(move || {
                // A worker only ends when its queue closes at shutdown; anything else is
                // reported by /healthz.
                let watched = Watched::new(&sinks.health, &name);
                work(&runtime, &sinks, analyzers, &rx, &ctl_rx, &end, flush);
                watched.done();
            })?;
            queues.push(tx);
            controls.push(ctl_tx);
            threads.push(thread);
        }
        Ok(Self {
            queues: Mutex::new(queues),
            controls: Mutex::new(controls),
            threads: Mutex::new(threads),
        })
    }

    /// One sender per worker, for a source's batcher.
    pub fn queues(&self) -> Vec<Sender<Batch>> {
        self.queues.lock().clone()
    }

    /// Applies a change on every worker and waits until all have applied it.
    /// Returns false if some worker did not answer in time.
    pub fn control(&self, make: impl Fn() -> Control) -> bool {
        let (ack_tx, ack_rx) = crossbeam_channel::unbounded();
        let sent = self
            .controls
            .lock()
            .iter()
            .filter(|c| c.send((make(), ack_tx.clone())).is_ok())
            .count();
        drop(ack_tx);
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        (0..sent).all(|_| ack_rx.recv_deadline(deadline).is_ok())
    }

    /// Closes the queues, waits for the workers to drain them and run their final tick.
    /// Every batcher must have been dropped first.
    pub fn finish(&self) {
        self.queues.lock().clear();
        self.controls.lock().clear();
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

fn apply(control: Control, slots: &mut Vec<Slot>, runtime: &Runtime, sinks: &Sinks) {
    match control {
        Control::Install(analyzer, families) => {
            let mut slot = Slot::new(analyzer, families, sinks);
            slot.start(runtime, sinks);
            match slots.iter_mut().find(|s| s.analyzer.name == slot.analyzer.name) {
                Some(old) => std::mem::replace(old, slot).retire(sinks),
                None => slots.push(slot),
            }
        }
        Control::Remove(name) => slots.retain(|s| {
            let keep = s.analyzer.name != name;
            if !keep {
                s.retire(sinks);
            }
            keep
        }),
    }
}

fn work(
    runtime: &Runtime,
    sinks: &Sinks,
    analyzers: Vec<(Arc<Analyzer>, Families)>,
    rx: &Receiver<Batch>,
    controls: &Receiver<Acked>,
    end: &End,
    flush: Flush,
) {
    // This thread's CPU time, counted at every tick and flush, and at the end.
    let mut cpu = sinks.metrics.cpu.clock(std::thread::current().name().unwrap_or("worker"));
    let mut slots: Vec<Slot> =
        analyzers.into_iter().map(|(a, families)| Slot::new(a, families, sinks)).collect();
    for slot in &mut slots {
        slot.start(runtime, sinks);
    }
    let mut last_ts = 0u64;
    let mut next_tick = 0u64;
    // Whether analyzers may hold updates from a call since the last flush, and when that was.
    let mut held = false;
    let mut flushed = Instant::now();
    let empty = record::empty_batch();
    // Once the control side hangs up, wait on batches alone: a closed channel is always ready.
    let mut controls = controls.clone();
    loop {
        // How long until held updates are due (an hour: nothing is held).
        let due = match flush {
            Flush::Every(every) if held => every.saturating_sub(flushed.elapsed()),
            _ => Duration::from_secs(3600),
        };
        // Changes first: a reload takes effect before the next batch.
        let mut batch = select_biased! {
            recv(controls) -> msg => {
                match msg {
                    Ok((control, ack)) => {
                        apply(control, &mut slots, runtime, sinks);
                        let _ = ack.send(());
                    }
                    Err(_) => controls = crossbeam_channel::never(),
                }
                continue;
            }
            recv(rx) -> batch => match batch {
                Ok(b) => b,
                Err(_) => break,
            },
            default(due) => {
                if held {
                    for slot in &mut slots {
                        slot.call(runtime, sinks, 0, |i, u| i.process(&empty, u));
                    }
                    (held, flushed) = (false, Instant::now());
                }
                cpu.update();
                continue;
            }
        };
        let hold = match flush {
            Flush::Ticks => true,
            Flush::Every(every) => flushed.elapsed() < every,
        };
        batch.set_hold(hold);
        for slot in &mut slots {
            slot.call(runtime, sinks, batch.len(), |i, u| i.process(batch.bytes(), u));
        }
        (held, flushed) = if hold { (true, flushed) } else { (false, Instant::now()) };
        last_ts = last_ts.max(batch.max_ts());
        end.latest.fetch_max(batch.max_ts(), Ordering::Relaxed);
        drop(batch);
        if last_ts >= next_tick {
            if next_tick != 0 {
                for slot in &mut slots {
                    slot.call(runtime, sinks, 0, |i, u| i.tick(last_ts, false, u));
                }
                (held, flushed) = (false, Instant::now());
                cpu.update();
            }
            next_tick = last_ts.saturating_add(TICK_EVERY_NS);
        }
    }
    end.drained.wait();
    let last_ts = end.latest.load(Ordering::Relaxed);
    for slot in &mut slots {
        slot.call(runtime, sinks, 0, |i, u| i.tick(last_ts, true, u));
    }
    cpu.update();
}
