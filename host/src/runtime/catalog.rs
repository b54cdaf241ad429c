//! Stage: analyzers (the loaded set).
//!
//! Inputs: analyzers to add at start (built-in and `--analyzer`), and `.wasm` files that
//! appear, change or vanish in the watched directory. Outputs: the set every worker runs —
//! changes reach the workers between two batches, so no packet is lost to the other
//! analyzers — their families in the registry, and a description for `GET /analyzers`.
//!
//! Every analyzer, at start or from the directory, is admitted the same way: its name must be
//! free, and its families register all or none. A changed file is swapped in only once its
//! new version has loaded and passed `init`; until then the old version keeps running. A
//! removed file's series go with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;

use super::analyzer::{Analyzer, LoadError, sha256_hex};
use super::bounds::MAX_COMPONENT_BYTES;
use super::engine::Runtime;
use super::metrics::State;
use super::worker::{Control, Flush, Sinks, Workers};
use crate::registry::{Families, FamilyError, PREFIX, Registry};

/// Reads a watched file, refusing one larger than a component may be before reading it all.
fn read_bounded(path: &Path) -> Result<Vec<u8>, InstallError> {
    use std::io::Read;
    let limit = MAX_COMPONENT_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Err(InstallError::Load(LoadError::TooBig { limit }));
    }
    Ok(bytes)
}

/// Why a file in the watched directory was not (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Family(#[from] FamilyError),
    #[error("its name {name:?} is already taken by {owner}")]
    NameTaken { name: String, owner: String },
    #[error("not every worker took the change in time")]
    Workers,
}

/// Why the catalog could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("analyzer {origin}: {error}")]
    Analyzer { origin: String, error: InstallError },
    #[error("starting worker threads: {0}")]
    Threads(#[from] std::io::Error),
}

struct Entry {
    analyzer: Arc<Analyzer>,
    families: Families,
    /// The watched file it came from; `None` for built-in and `--analyzer` analyzers.
    file: Option<PathBuf>,
}

/// What `GET /analyzers` shows of one analyzer.
#[derive(Debug, Serialize)]
pub struct View {
    pub name: String,
    pub version: String,
    pub source: String,
    pub sha256: String,
    pub state: String,
    pub last_error: Option<String>,
    pub families: Vec<FamilyView>,
}

/// One declared family, as `GET /analyzers` shows it.
#[derive(Debug, Serialize)]
pub struct FamilyView {
    pub name: String,
    pub kind: &'static str,
    pub labels: Vec<String>,
}

/// The analyzers the workers run.
pub struct Catalog {
    runtime: Arc<Runtime>,
    sinks: Sinks,
    workers: Workers,
    entries: Mutex<Vec<Entry>>,
}

/// Admits `analyzer` beside `entries`, in place of entry `old` if given (a reloaded file):
/// its name must be free, and its families register all or none.
fn admit(
    entries: &[Entry],
    old: Option<usize>,
    registry: &Registry,
    analyzer: &Analyzer,
) -> Result<Families, InstallError> {
    let taken = entries
        .iter()
        .enumerate()
        .find(|(i, e)| Some(*i) != old && e.analyzer.name == analyzer.name);
    if let Some((_, e)) = taken {
        let (name, owner) = (analyzer.name.clone(), e.analyzer.source.clone());
        return Err(InstallError::NameTaken { name, owner });
    }
    let old_families = old.map(|i| &entries[i].families);
    Ok(registry.replace(old_families, &analyzer.name, &analyzer.families)?)
}

impl Catalog {
    /// Admits `initial`, each with the source it is named by in errors, and starts `n`
    /// workers running them.
    pub fn start(
        n: usize,
        runtime: Arc<Runtime>,
        sinks: Sinks,
        initial: Vec<(String, Arc<Analyzer>)>,
        flush: Flush,
    ) -> Result<Self, StartError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (origin, analyzer) in initial {
            let families = admit(&entries, None, &sinks.registry, &analyzer)
                .map_err(|error| StartError::Analyzer { origin: origin.clone(), error })?;
            tracing::info!(
                analyzer = %analyzer.name, version = %analyzer.version, source = %origin,
                families = analyzer.families.len(), "loaded"
            );
            entries.push(Entry { analyzer, families, file: None });
        }
        let running: Vec<_> =
            entries.iter().map(|e| (e.analyzer.clone(), e.families.clone())).collect();
        let workers = Workers::start(n, &runtime, &running, &sinks, flush)?;
        Ok(Self { runtime, sinks, workers, entries: Mutex::new(entries) })
    }

    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    fn entries(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock()
    }

    /// Analyzers with at least one instance running.
    pub fn running(&self) -> usize {
        self.sinks.metrics.running()
    }

    /// Loads `path`, or reloads it if it changed. Returns false if it was already loaded
    /// with the same contents.
    pub fn install(&self, path: &Path) -> Result<bool, InstallError> {
        let bytes = read_bounded(path)?;
        let source = path.display().to_string();
        let sha256 = sha256_hex(&bytes);
        let unchanged = |entries: &[Entry]| {
            entries.iter().any(|e| e.file.as_deref() == Some(path) && e.analyzer.sha256 == sha256)
        };
        if unchanged(&self.entries()) {
            return Ok(false);
        }
        // Compiling and `init` take time: not under the lock that `/analyzers` reads through.
        // Only the watcher installs, so nothing changes the entries meanwhile.
        let analyzer = self.runtime.load(&bytes, &source)?;
        let mut entries = self.entries();
        let old = entries.iter().position(|e| e.file.as_deref() == Some(path));
        let families = admit(&entries, old, &self.sinks.registry, &analyzer)?;
        // A reload under a new analyzer name retires the old name on the workers first.
        if let Some(i) = old.filter(|i| entries[*i].analyzer.name != analyzer.name) {
            let name = entries[i].analyzer.name.clone();
            self.workers.control(|| Control::Remove(name.clone()));
            self.sinks.metrics.forget(&name);
        }
        let applied = self.workers.control(|| Control::Install(analyzer.clone(), families.clone()));
        let entry = Entry { analyzer, families, file: Some(path.to_owned()) };
        match old {
            Some(i) => entries[i] = entry,
            None => entries.push(entry),
        }
        if applied { Ok(true) } else { Err(InstallError::Workers) }
    }

    /// Unloads the analyzer that came from `path`, with its series. Returns its name.
    pub fn remove(&self, path: &Path) -> Option<String> {
        let mut entries = self.entries();
        let i = entries.iter().position(|e| e.file.as_deref() == Some(path))?;
        let entry = entries.remove(i);
        let name = entry.analyzer.name.clone();
        self.workers.control(|| Control::Remove(name.clone()));
        self.sinks.registry.unregister(&entry.families);
        self.sinks.metrics.forget(&name);
        Some(name)
    }

    /// The watched files currently loaded.
    pub fn files(&self) -> Vec<PathBuf> {
        self.entries().iter().filter_map(|e| e.file.clone()).collect()
    }

    /// Every loaded analyzer, for `GET /analyzers`.
    pub fn views(&self) -> Vec<View> {
        let metrics = &self.sinks.metrics;
        self.entries()
            .iter()
            .map(|e| {
                let a = &e.analyzer;
                View {
                    name: a.name.clone(),
                    version: a.version.clone(),
                    source: a.source.clone(),
                    sha256: a.sha256.clone(),
                    state: metrics.state(&a.name).map_or("starting", State::as_str).to_owned(),
                    last_error: a.last_error(),
                    families: a
                        .families
                        .iter()
                        .map(|f| FamilyView {
                            name: format!("{PREFIX}{}", f.name),
                            kind: f.kind.as_str(),
                            labels: f.label_names.clone(),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Stops the workers after they drain their queues. Every batcher must be gone.
    pub fn finish(&self) {
        self.workers.finish();
    }
}
