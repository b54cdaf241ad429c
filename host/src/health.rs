//! Stage: control (health).
//!
//! Inputs: the interface supervisor (which explicitly named interfaces are not being
//! captured, and capture threads that failed), the worker threads (one that ends other than
//! at shutdown) and, when asked, how many analyzers are running.
//! Output: what `/healthz` and `/readyz` answer, with the reasons in their bodies.
//!
//! `/healthz` fails only for what a restart can mend: a capture or worker thread that died for
//! a reason other than its interface going away. `/readyz` fails while the host is not doing
//! what it was asked: an interface named with `-i` (not a pattern) is not captured, or no
//! analyzer is running.
//!
//! It imports nothing from the rest of the host: every stage may report to it.

use parking_lot::Mutex;

/// The host's own view of its health.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once start-up is done (analyzers loaded, captures attached).
    started: Mutex<bool>,
    /// Threads that died, with why.
    failures: Mutex<Vec<String>>,
    /// Explicitly named interfaces that are not captured right now.
    missing: Mutex<Vec<String>>,
}

/// Failures kept for `/healthz`: the first few say what went wrong; more add nothing.
const MAX_FAILURES: usize = 16;

impl Health {
    pub fn started(&self) {
        *self.started.lock() = true;
    }

    /// A thread that should still run has ended.
    pub fn failed(&self, what: String) {
        let mut f = self.failures.lock();
        if f.len() < MAX_FAILURES {
            f.push(what);
        }
    }

    /// The explicitly named interfaces not captured now.
    pub fn set_missing(&self, names: Vec<String>) {
        *self.missing.lock() = names;
    }

    /// `Ok` if alive, else why not.
    pub fn live(&self) -> Result<(), String> {
        let f = self.failures.lock();
        if f.is_empty() { Ok(()) } else { Err(f.join("\n")) }
    }

    /// `Ok` if ready with `running_analyzers` analyzers running, else why not.
    pub fn ready(&self, running_analyzers: usize) -> Result<(), String> {
        if !*self.started.lock() {
            return Err("starting".into());
        }
        let missing = self.missing.lock();
        if !missing.is_empty() {
            return Err(format!("not capturing on {}", missing.join(", ")));
        }
        if running_analyzers == 0 {
            return Err("no analyzer is running".into());
        }
        Ok(())
    }
}

/// Marks a thread as failed in [`Health`] if it ends, by return or panic, before
/// [`Watched::done`] is called.
pub struct Watched<'a> {
    health: &'a Health,
    name: &'a str,
    done: bool,
}

impl<'a> Watched<'a> {
    pub fn new(health: &'a Health, name: &'a str) -> Self {
        Self { health, name, done: false }
    }

    /// The thread ends as intended.
    pub fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        if !self.done {
            let why = if std::thread::panicking() { "panicked" } else { "stopped" };
            tracing::error!(thread = self.name, "thread {why} unexpectedly");
            self.health.failed(format!("thread {} {why}", self.name));
        }
    }
}
