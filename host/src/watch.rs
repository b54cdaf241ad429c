//! Stage: control (the analyzer directory).
//!
//! Input: a directory of `.wasm` analyzer components, watched with `notify`.
//! Output: calls on the [`Catalog`]: a new file is loaded, a changed one reloaded, a removed one
//! unloaded. An invalid file is logged with its reason and the host carries on.
//!
//! Every burst of events on the directory's entries leads to one rescan once the directory has
//! been quiet for [`SETTLE`], so a file still being written is read only when the writer is
//! done; if it is read too early anyway, it fails to load and the writer's next event tries
//! again. A file is read again only when its size, modification time or inode changed since
//! the last attempt (loaded or refused): reading it raises events of its own, which must not
//! start another round. Names starting with `.` are skipped, so writers can write
//! `.name.wasm` and rename it into place.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

use crate::runtime::catalog::Catalog;

/// Quiet time before the directory is rescanned: long enough for a copy of a large `.wasm` to
/// finish, short enough that a change takes effect well within 2 s.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Keeps the watch alive; dropping it stops watching.
pub struct DirWatch {
    _debouncer: Debouncer<RecommendedWatcher>,
}

/// Why the directory cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("--analyzer-dir {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("--analyzer-dir {}: cannot watch it: {source}", dir.display())]
    Notify { dir: PathBuf, source: notify_debouncer_mini::notify::Error },
}

/// Loads what `dir` holds now, then follows its changes.
pub fn watch(dir: &Path, catalog: Arc<Catalog>) -> Result<DirWatch, WatchError> {
    let meta =
        std::fs::metadata(dir).map_err(|source| WatchError::Dir { dir: dir.into(), source })?;
    if !meta.is_dir() {
        let source = std::io::Error::other("not a directory");
        return Err(WatchError::Dir { dir: dir.into(), source });
    }
    let mut seen = Seen::new();
    sync(dir, &catalog, &mut seen);
    let owned = dir.to_owned();
    let notify_err = |source| WatchError::Notify { dir: dir.into(), source };
    let mut debouncer = new_debouncer(SETTLE, move |res: DebounceEventResult| match res {
        // Events on the directory itself (our own rescans open it) change nothing in it.
        Ok(events) if events.iter().any(|e| e.path != owned) => {
            sync(&owned, &catalog, &mut seen);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(dir = %owned.display(), "watch error: {e}"),
    })
    .map_err(notify_err)?;
    debouncer.watcher().watch(dir, RecursiveMode::NonRecursive).map_err(notify_err)?;
    tracing::info!(dir = %dir.display(), "watching for analyzers");
    Ok(DirWatch { _debouncer: debouncer })
}

fn wasm_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// What a file was when it was last tried: size, modification time (s, ns), device and inode
/// of what the name points at (a ConfigMap volume swaps a symlink, which changes the inode).
type Stamp = (u64, i64, i64, u64, u64);

/// The stamp of every file last tried.
type Seen = HashMap<PathBuf, Stamp>;

fn stamp(file: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(file).ok()?;
    Some((m.len(), m.mtime(), m.mtime_nsec(), m.dev(), m.ino()))
}

/// Brings the catalog in line with the directory.
fn sync(dir: &Path, catalog: &Catalog, seen: &mut Seen) {
    let present = wasm_files(dir);
    seen.retain(|f, _| present.contains(f));
    for gone in catalog.files().into_iter().filter(|f| !present.contains(f)) {
        if let Some(name) = catalog.remove(&gone) {
            tracing::info!(analyzer = %name, file = %gone.display(), "unloaded");
        }
    }
    for file in present {
        let now = stamp(&file);
        if now.is_some() && seen.get(&file) == now.as_ref() {
            continue;
        }
        if let Some(now) = now {
            seen.insert(file.clone(), now);
        }
        match catalog.install(&file) {
            Ok(true) => tracing::info!(file = %file.display(), "loaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(file = %file.display(), "not loaded: {e}"),
        }
    }
}
