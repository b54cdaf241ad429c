//! Stage: analyzers (the loaded set).
//!
//! Inputs: analyzers to add at start (built-in and `--analyzer`), and `.wasm` files that
//! appear, change or vanish in the watched directory. Outputs: the set every worker runs —
//! changes reach the workers between two batches, so no packet is lost to the other
//! analyzers — their families in the registry, and a description for `GET /analyzers`.
//!
//! A changed file is swapped in only once its new version has loaded and passed `init`;
//! until then the old version keeps running. A removed file's series go with it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use super::worker::{Control, Flush, Workers};
use super::{Analyzer, LoadError, Runtime};
use crate::registry::{Families, FamilyError, Kind};
use crate::telemetry::Shared;

/// Reads a watched file, refusing one larger than a component may be before reading it all.
fn read_bounded(path: &Path) -> Result<Vec<u8>, InstallError> {
    use std::io::Read;
    let limit = super::MAX_COMPONENT_BYTES;
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
    #[error("its analyzer name {name:?} is already taken by {owner}")]
    NameTaken { name: String, owner: String },
    #[error("not every worker took the change in time")]
    Workers,
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
    shared: Shared,
    workers: Workers,
    entries: Mutex<Vec<Entry>>,
}

impl Catalog {
    /// Starts `n` workers running `initial`.
    pub fn start(
        n: usize,
        runtime: Arc<Runtime>,
        shared: Shared,
        initial: Vec<(Arc<Analyzer>, Families)>,
        flush: Flush,
    ) -> std::io::Result<Self> {
        let workers = Workers::start(n, &runtime, &initial, &shared, flush)?;
        let entries = initial
            .into_iter()
            .map(|(analyzer, families)| Entry { analyzer, families, file: None })
            .collect();
        Ok(Self { runtime, shared, workers, entries: Mutex::new(entries) })
    }

    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    fn entries(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads `path`, or reloads it if it changed. Returns false if it was already loaded
    /// with the same contents.
    pub fn install(&self, path: &Path) -> Result<bool, InstallError> {
        let bytes = read_bounded(path)?;
        let source = path.display().to_string();
        let sha256 = super::sha256_hex(&bytes);
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
        let taken = entries.iter().find(|e| e.analyzer.name == analyzer.name);
        if let Some(e) = taken.filter(|e| e.file.as_deref() != Some(path)) {
            let (name, owner) = (analyzer.name.clone(), e.analyzer.source.clone());
            return Err(InstallError::NameTaken { name, owner });
        }
        let old_families = old.map(|i| &entries[i].families);
        let registry = &self.shared.registry;
        let families = registry.replace(old_families, &analyzer.name, &analyzer.families)?;
        // A reload under a new analyzer name retires the old name on the workers first.
        if let Some(i) = old.filter(|i| entries[*i].analyzer.name != analyzer.name) {
            let name = entries[i].analyzer.name.clone();
            self.workers.control(|| Control::Remove(name.clone()));
            self.shared.telemetry.forget(&name);
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
        self.shared.registry.unregister(&entry.families);
        self.shared.telemetry.forget(&name);
        Some(name)
    }

    /// The watched files currently loaded.
    pub fn files(&self) -> Vec<PathBuf> {
        self.entries().iter().filter_map(|e| e.file.clone()).collect()
    }

    /// Every loaded analyzer, for `GET /analyzers`.
    pub fn views(&self) -> Vec<View> {
        let t = &self.shared.telemetry;
        self.entries()
            .iter()
            .map(|e| {
                let a = &e.analyzer;
                View {
                    name: a.name.clone(),
                    version: a.version.clone(),
                    source: a.source.clone(),
                    sha256: a.sha256.clone(),
                    state: t.state(&a.name).unwrap_or("starting").to_owned(),
                    last_error: a.last_error(),
                    families: a
                        .families
                        .iter()
                        .map(|f| FamilyView {
                            name: format!("{}{}", crate::registry::PREFIX, f.name),
                            kind: match f.kind {
                                Kind::Counter => "counter",
                                Kind::Gauge => "gauge",
                                Kind::Histogram => "histogram",
                            },
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
