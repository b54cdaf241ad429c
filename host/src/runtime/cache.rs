//! Stage: analyzers (compilation cache).
//!
//! Input: validated `.wasm` component bytes. Output: a compiled `Component`, from the on-disk
//! cache when this host compiled the same bytes with a compatible engine before, otherwise
//! compiled now and stored.
//!
//! Entries are keyed by the sha256 of the `.wasm` and a hash of the engine's compatibility
//! settings, so a wasmtime upgrade or a config change never reads a stale artifact. The cache
//! only ever holds what this host compiled itself, in a directory only its user can write:
//! precompiled bytes are native code, and bytes from anywhere else are never loaded.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled analyzers are kept.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Uses (and creates, mode 0700) `dir`. Returns `None`, with a warning, if the directory
    /// cannot be made private to this user: the cache is then off, never unsafe.
    pub fn open(dir: &Path) -> Option<Self> {
        let made = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
        let private = std::fs::metadata(dir).is_ok_and(|m| {
            m.is_dir() && m.uid() == current_uid(dir) && m.permissions().mode() & 0o022 == 0
        });
        if made.is_err() || !private {
            tracing::warn!(dir = %dir.display(), "compile cache disabled: directory is not private");
            return None;
        }
        Some(Self { dir: dir.to_owned() })
    }

    fn path(&self, engine: &Engine, sha256: &str) -> PathBuf {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
    }

    /// The cached compilation of `bytes` (whose digest is `sha256`), or a fresh one.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<Component> {
        let path = self.path(engine, sha256);
        if path.exists() {
            // SAFETY: the file is in a directory private to this user (checked in `open`) and
            // was written by `store` below from this host's own compilation; wasmtime checks
            // its header against the engine before using it.
            #[allow(unsafe_code)]
            let cached = unsafe { Component::deserialize_file(engine, &path) };
            match cached {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(path = %path.display(), "ignoring cache entry: {e}"),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = store(&path, &component) {
            tracing::warn!(path = %path.display(), "cannot write cache entry: {e}");
        }
        Ok(component)
    }
}

fn current_uid(dir: &Path) -> u32 {
    // The owner of a directory we just created is our effective uid; for one that already
    // existed, compare with a file we create now.
    let probe = dir.join(format!(".uid-probe-{}", std::process::id()));
    let uid = std::fs::File::create(&probe).and_then(|f| f.metadata()).map(|m| m.uid());
    let _ = std::fs::remove_file(&probe);
    uid.unwrap_or(u32::MAX)
}

fn store(path: &Path, component: &Component) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The default cache directory: `$XDG_CACHE_HOME/wasmtap`, else `~/.cache/wasmtap`.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasmtap"))
}
