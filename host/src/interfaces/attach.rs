//! Stage: capture (control): attaching captures to the selected interfaces.
//!
//! Input: the interface table and selection (`interfaces`), a signal on every change of the
//! table, and how to open captures ([`Options`]).
//! Output: a capture thread per selected link that is up ([`Supervisor`]), attached, detached
//! and attached again as links come and go; `wasmtap_host_interface_up{device}`; the names
//! `/readyz` waits for; failed captures in `/healthz`; and the self-metrics of interfaces gone
//! for longer than the series TTL dropped.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use prometheus::IntGaugeVec;

use crate::batch::Batcher;
use crate::capture::Error;
use crate::capture::links::Selection;
use crate::capture::live::{Context, Exit, Live, Running, Source};
use crate::health::Health;
use crate::telemetry::SelfMetrics;

/// How often the supervisor looks at its captures without an event: a capture that ended on
/// its own is noticed, and a failed attach tried again, within this.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// First and longest wait before attaching again to a link whose capture could not be opened.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How captures are opened.
#[derive(Debug, Clone)]
pub struct Options {
    pub snaplen: u32,
    pub promisc: bool,
    pub filter: Option<String>,
    /// How long a gone interface's self-metrics stay (the series TTL); `None`: for ever.
    pub forget_after: Option<Duration>,
}

/// One attached capture.
struct Attached {
    running: Running,
    /// The name its `interface_up` series carries now.
    label: String,
}

/// Attaches and detaches captures as links come and go, on a thread of its own.
pub struct Supervisor {
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

struct State {
    selection: Arc<Selection>,
    options: Options,
    ctx: Context,
    health: Arc<Health>,
    /// `wasmtap_host_interface_up{device}`.
    up: IntGaugeVec,
    batcher: Box<dyn Fn() -> Batcher + Send>,
    captures: HashMap<u32, Attached>,
    /// Links whose capture could not be opened: when to try again, and the wait after that.
    retry: HashMap<u32, (Instant, Duration)>,
    /// Interface names seen, and since when the gone ones are gone.
    seen: HashMap<Arc<str>, Option<Instant>>,
}

impl Supervisor {
    /// Attaches what the selection matches now, then follows `changed`. Fails if a capture
    /// cannot be opened at start for a reason other than the link going away meanwhile
    /// (permissions, most often): the host should not run blind.
    pub fn start(
        options: Options,
        ctx: Context,
        health: Arc<Health>,
        metrics: &SelfMetrics,
        batcher: Box<dyn Fn() -> Batcher + Send>,
        changed: Receiver<()>,
    ) -> Result<Self, Error> {
        let selection = ctx.selection.clone();
        let up = metrics
            .gauge(
                "wasmtap_host_interface_up",
                "1 while the interface is captured; 0 while an interface named with -i is not.",
                &["device"],
            )
            .map_err(|e| Error::Open { iface: "(supervisor)".into(), reason: e.to_string() })?;
        let mut state = State {
            selection,
            options,
            ctx,
            health,
            up,
            batcher,
            captures: HashMap::new(),
            retry: HashMap::new(),
            seen: HashMap::new(),
        };
        state.reconcile(true)?;
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("interfaces".into())
            .spawn(move || state.run(&changed, &stopped))
            .map_err(|e| Error::Open { iface: "(supervisor)".into(), reason: e.to_string() })?;
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Detaches every capture; each flushes its last batches.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the interface supervisor panicked");
        }
    }
}

impl State {
    fn run(mut self, changed: &Receiver<()>, stop: &Receiver<()>) {
        loop {
            crossbeam_channel::select! {
                recv(stop) -> _ => break,
                recv(changed) -> msg => {
                    if msg.is_err() {
                        // The link follower is gone (shutdown): keep what is attached.
                        let _ = stop.recv();
                        break;
                    }
                    // A burst of events is one reconciliation.
                    while changed.try_recv().is_ok() {}
                }
                default(RECONCILE_EVERY) => {}
            }
            if let Err(e) = self.reconcile(false) {
                tracing::error!("{e}");
            }
        }
        for (_, a) in self.captures.drain() {
            let label = a.label.clone();
            Self::ended(&self.health, &label, a.running.stop());
        }
    }

    fn ended(health: &Health, label: &str, exit: Exit) {
        match exit {
            Exit::Stopped => tracing::info!(iface = label, "capture detached"),
            Exit::Gone(why) => tracing::info!(iface = label, "capture ended: {why}"),
            Exit::Failed(why) => {
                tracing::error!(iface = label, "capture failed: {why}");
                health.failed(format!("capture on {label} failed: {why}"));
            }
        }
    }

    /// What should be captured: `(ifindex or 0 for any, name)`.
    fn wanted(&self) -> Vec<(u32, String)> {
        if self.selection.any {
            return vec![(0, "any".to_owned())];
        }
        self.ctx
            .links
            .snapshot()
            .into_iter()
            .filter(|(_, l)| l.up && self.selection.matches(&l.name))
            .map(|(i, l)| (i, l.name.to_string()))
            .collect()
    }

    fn reconcile(&mut self, at_start: bool) -> Result<(), Error> {
        let up = self.up.clone();
        // Captures that ended on their own.
        let finished: Vec<u32> = self
            .captures
            .iter()
            .filter(|(_, a)| a.running.is_finished())
            .map(|(i, _)| *i)
            .collect();
        for i in finished {
            if let Some(a) = self.captures.remove(&i) {
                Self::ended(&self.health, &a.label, a.running.join());
                self.unlabel(&a.label);
                self.retry.insert(i, (Instant::now() + RETRY_FIRST, RETRY_FIRST));
            }
        }
        let wanted = self.wanted();
        let keep: BTreeSet<u32> = wanted.iter().map(|(i, _)| *i).collect();
        // Detach what no longer matches (gone, down, renamed away, excluded).
        let gone: Vec<u32> = self.captures.keys().filter(|i| !keep.contains(i)).copied().collect();
        for i in gone {
            if let Some(a) = self.captures.remove(&i) {
                Self::ended(&self.health, &a.label, a.running.stop());
                self.unlabel(&a.label);
            }
        }
        self.retry.retain(|i, _| keep.contains(i));
        for (i, name) in wanted {
            if let Some(a) = self.captures.get_mut(&i) {
                if a.label != name {
                    // Renamed, still selected: the thread labels packets by the new name.
                    let old = std::mem::replace(&mut a.label, name.clone());
                    self.unlabel(&old);
                    up.with_label_values(&[&name]).set(1);
                }
                continue;
            }
            if self.retry.get(&i).is_some_and(|(at, _)| Instant::now() < *at) {
                continue;
            }
            match self.attach(i, &name) {
                Ok(running) => {
                    self.retry.remove(&i);
                    up.with_label_values(&[&name]).set(1);
                    tracing::info!(iface = %name, "capturing");
                    self.captures.insert(i, Attached { running, label: name });
                }
                Err(e @ (Error::PermissionDenied(_) | Error::Filter { .. })) if at_start => {
                    return Err(e);
                }
                Err(e) => {
                    let wait = self.retry.get(&i).map_or(RETRY_FIRST, |(_, w)| *w);
                    tracing::warn!(iface = %name, "{e}; trying again in {}s", wait.as_secs());
                    self.retry.insert(i, (Instant::now() + wait, (wait * 2).min(RETRY_MAX)));
                }
            }
        }
        self.report();
        self.forget_gone();
        Ok(())
    }

    /// Drops the self-metric series of interfaces gone for longer than the series TTL, as
    /// the registry drops the analyzers' series that no packet updates any more.
    fn forget_gone(&mut self) {
        let Some(ttl) = self.options.forget_after else { return };
        let now = Instant::now();
        let present: BTreeSet<Arc<str>> =
            self.ctx.links.snapshot().into_iter().map(|(_, l)| l.name).collect();
        for name in &present {
            self.seen.insert(name.clone(), None);
        }
        let metrics = &self.ctx.metrics;
        self.seen.retain(|name, gone| {
            if present.contains(name) {
                return true;
            }
            let since = *gone.get_or_insert(now);
            let keep = now.duration_since(since) < ttl;
            if !keep {
                metrics.forget(name);
            }
            keep
        });
    }

    fn attach(&self, ifindex: u32, name: &str) -> Result<Running, Error> {
        let source = if self.selection.any { Source::Any } else { Source::Interface(ifindex) };
        let o = &self.options;
        let live = Live::open(name, source, o.snaplen, o.promisc, o.filter.as_deref())?;
        live.spawn((self.batcher)(), self.ctx.clone())
            .map_err(|e| Error::Open { iface: name.to_owned(), reason: e.to_string() })
    }

    /// An interface is no longer captured under `label`: a named one shows 0, a pattern's
    /// match leaves the exposition.
    fn unlabel(&self, label: &str) {
        let up = &self.up;
        if self.selection.is_explicit(label) || label == "any" {
            up.with_label_values(&[label]).set(0);
        } else {
            let _ = up.remove_label_values(&[label]);
        }
    }

    /// Named interfaces not captured: `interface_up` 0 and `/readyz` waits for them.
    fn report(&self) {
        let captured: BTreeSet<&str> = self.captures.values().map(|a| a.label.as_str()).collect();
        let missing: Vec<String> = self
            .selection
            .explicit()
            .iter()
            .filter(|n| !self.selection.any && !captured.contains(n.as_str()))
            .cloned()
            .collect();
        for n in &missing {
            self.up.with_label_values(&[n]).set(0);
        }
        let any_down = self.selection.any && self.captures.is_empty();
        let mut not_captured = missing;
        if any_down {
            not_captured.push("any".to_owned());
        }
        self.health.set_missing(not_captured);
    }
}
