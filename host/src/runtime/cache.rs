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
//!
//! Where entries go:
//! - in the directory given, if it is private: owned by this process's user and writable by
//!   nobody else;
//! - otherwise, as for a kubelet `emptyDir` (mode 0777) or `/tmp`, in a subdirectory
//!   [`SUBDIR_PREFIX`]`<uid>` of it, created mode 0700. That subdirectory is used only if it is
//!   a real directory (not a symlink), owned by this user, with no access for anyone else;
//!   anything else turns the cache off with the reason ([`Refused`]), never on unsafely.
//!
//! Each entry is written mode 0600 (to a temporary file, then renamed into place) and starts
//! with a line naming its key. It is read through an open handle whose type, owner and mode are
//! checked, and only if that line names the key asked for: a file swapped in, or a name
//! pointed at another entry, is ignored and compiled afresh.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The private subdirectory made inside a shared directory is this plus our uid, so that two
/// users sharing one directory (a `/tmp`) each get their own.
pub const SUBDIR_PREFIX: &str = "wasmtap-";

/// The permission bits of a private directory: the owner's only (0700).
const PRIVATE_DIR_MODE: u32 = 0o700;

/// The permission bits of an entry: read and write for the owner only (0600).
const ENTRY_MODE: u32 = 0o600;

/// Permission bits that let someone other than the owner write: group and other write.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Permission bits that give anyone but the owner any access: the private subdirectory has
/// none of them, so nobody else can even list which analyzers were compiled.
const ANY_ACCESS_BY_OTHERS: u32 = 0o077;

/// The first bytes of an entry's key line; the `v1` changes with the entry's layout, so that an
/// entry written by a host that laid them out otherwise is ignored, not misread.
const ENTRY_MAGIC: &str = "wasmtap-compile-cache-v1 ";

/// Why the cache is off. `Cache::open` logs it; tests branch on it.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("cannot tell this process's user id from /proc/self/status: {0}")]
    Uid(io::Error),
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot inspect {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error("{path} is a symbolic link, not a directory of ours")]
    Symlink { path: PathBuf },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("{path} is owned by uid {owner}, not by this process's uid {uid}")]
    WrongOwner { path: PathBuf, owner: u32, uid: u32 },
    #[error("{path} has mode {mode:04o}; it must give nobody but its owner access (0700)")]
    WrongMode { path: PathBuf, mode: u32 },
}

/// Where compiled analyzers are kept.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    uid: u32,
}

impl Cache {
    /// Uses `dir` (created mode 0700 if missing), or a private subdirectory of it when `dir` is
    /// shared (see the module header). Returns `None`, with a warning naming the reason, when
    /// neither is private to this user: the cache is then off, never unsafe.
    pub fn open(dir: &Path) -> Option<Self> {
        match Self::try_open(dir) {
            Ok(cache) => {
                tracing::info!(dir = %cache.dir.display(), "compile cache");
                Some(cache)
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "compile cache disabled: {e}");
                None
            }
        }
    }

    /// [`Cache::open`], with the reason for a refusal.
    pub fn try_open(dir: &Path) -> Result<Self, Refused> {
        let uid = fs_uid().map_err(Refused::Uid)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(dir)
            .map_err(|source| Refused::Create { path: dir.to_owned(), source })?;
        // Followed if a symlink: the path given may well be one (`~/.cache` on another disk),
        // and whoever chose it can write where it points anyway.
        let meta = std::fs::metadata(dir)
            .map_err(|source| Refused::Inspect { path: dir.to_owned(), source })?;
        if !meta.is_dir() {
            return Err(Refused::NotADirectory { path: dir.to_owned() });
        }
        if meta.uid() == uid && meta.permissions().mode() & WRITABLE_BY_OTHERS == 0 {
            return Ok(Self { dir: dir.to_owned(), uid });
        }
        // Shared: others can write here, so they could rename, replace or plant entries. Use
        // a subdirectory only we can enter, and check what we find under its name.
        let sub = dir.join(format!("{SUBDIR_PREFIX}{uid}"));
        match std::fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(&sub) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Refused::Create { path: sub, source }),
        }
        check_private_dir(&sub, uid)?;
        Ok(Self { dir: sub, uid })
    }

    /// The directory that holds the entries: the one given, or its private subdirectory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of `bytes` (digest `sha256`) for `engine`: also the entry's file stem.
    fn key(engine: &Engine, sha256: &str) -> String {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        format!("{sha256}-{:016x}", h.finish())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cwasm"))
    }

    /// The cached compilation of `bytes` (whose digest is `sha256`), or a fresh one.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<Component> {
        let key = Self::key(engine, sha256);
        let path = self.path(&key);
        match read_entry(&path, &key, self.uid) {
            Ok(Some(code)) => {
                // SAFETY: `read_entry` returned the bytes of a regular file, owned by this
                // user and writable by nobody else, in a directory private to this user
                // (checked in `try_open`), whose key line names this key: `store` below wrote
                // it from this host's own compilation of these bytes. wasmtime checks its
                // header against the engine before using it.
                #[allow(unsafe_code)]
                let cached = unsafe { Component::deserialize(engine, &code) };
                match cached {
                    Ok(c) => {
                        tracing::info!(entry = %path.display(), "loaded from the compile cache");
                        return Ok(c);
                    }
                    Err(e) => tracing::warn!(entry = %path.display(), "ignoring cache entry: {e}"),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(entry = %path.display(), "ignoring cache entry: {e}"),
        }
        let component = Component::new(engine, bytes)?;
        match store(&path, &key, &component) {
            Ok(()) => tracing::info!(entry = %path.display(), "compiled; stored in the cache"),
            Err(e) => tracing::warn!(entry = %path.display(), "cannot write cache entry: {e}"),
        }
        Ok(component)
    }
}

/// Fails unless `path` itself (not what a symlink points at) is a directory owned by `uid`
/// that gives nobody else any access.
fn check_private_dir(path: &Path, uid: u32) -> Result<(), Refused> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|source| Refused::Inspect { path: path.to_owned(), source })?;
    let path = path.to_owned();
    if meta.file_type().is_symlink() {
        return Err(Refused::Symlink { path });
    }
    if !meta.is_dir() {
        return Err(Refused::NotADirectory { path });
    }
    if meta.uid() != uid {
        return Err(Refused::WrongOwner { path, owner: meta.uid(), uid });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & ANY_ACCESS_BY_OTHERS != 0 {
        return Err(Refused::WrongMode { path, mode });
    }
    Ok(())
}

/// The user id that owns the files this process creates (the fsuid, the fourth `Uid:` field
/// of `/proc/self/status`). Read there because std has no getuid, and a probe file would have
/// to be created in a directory not yet known to be safe.
fn fs_uid() -> io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(3))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no fsuid in the Uid: line"))
}

/// The line an entry starts with.
fn key_line(key: &str) -> String {
    format!("{ENTRY_MAGIC}{key}\n")
}

/// The compiled code of entry `path` for `key`; `None` if there is no entry. An error when
/// something is there that this host did not write for `key`.
fn read_entry(path: &Path, key: &str, uid: u32) -> io::Result<Option<Vec<u8>>> {
    // Checked before opening, so that a FIFO or device is never opened (it could block); and
    // after, on the open handle, so that a file swapped in meanwhile is caught.
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check_entry(&meta, uid)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut file = std::fs::File::open(path)?;
    check_entry(&file.metadata()?, uid)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let line = key_line(key);
    match bytes.strip_prefix(line.as_bytes()) {
        Some(code) => Ok(Some(code.to_vec())),
        None => Err(io::Error::new(io::ErrorKind::InvalidData, "its key line is not this key's")),
    }
}

/// Fails unless `meta` is a regular file owned by `uid` that nobody else can write.
fn check_entry(meta: &std::fs::Metadata, uid: u32) -> io::Result<()> {
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_file() || meta.uid() != uid || mode & WRITABLE_BY_OTHERS != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "not a regular file of ours that only we can write (owner {}, mode {mode:04o})",
                meta.uid()
            ),
        ));
    }
    Ok(())
}

fn store(path: &Path, key: &str, component: &Component) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    // Write then rename, so a concurrent reader never sees half a file. The temporary name is
    // unique to this process and moment: a pid alone repeats (every container's host is pid 1)
    // and a crash can leave a file behind under it.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = path.with_extension(format!("tmp{}-{nanos}", std::process::id()));
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(ENTRY_MODE).open(&tmp)?;
    let written = f
        .write_all(key_line(key).as_bytes())
        .and_then(|()| f.write_all(&bytes))
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(written?)
}

/// The default cache directory: `$XDG_CACHE_HOME/wasmtap`, else `~/.cache/wasmtap`.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasmtap"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: the preamble alone (magic, version 0x0d, layer 1).
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    /// A stand-in digest: the cache never computes it, it keys by what it is given.
    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn uid() -> u32 {
        fs_uid().expect("fs uid")
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    /// A shared directory as kubelet makes an emptyDir: mode 0777.
    fn shared(parent: &tempfile::TempDir) -> PathBuf {
        let dir = parent.path().join("emptydir");
        std::fs::create_dir(&dir).expect("mkdir");
        chmod(&dir, 0o777);
        dir
    }

    fn sub(dir: &Path) -> PathBuf {
        dir.join(format!("{SUBDIR_PREFIX}{}", uid()))
    }

    #[test]
    fn fs_uid_matches_the_owner_of_a_new_file() {
        let t = tempdir();
        let f = t.path().join("probe");
        std::fs::write(&f, b"").expect("write");
        assert_eq!(std::fs::metadata(&f).expect("stat").uid(), uid());
    }

    #[test]
    fn a_private_directory_is_used_as_is() {
        let t = tempdir();
        chmod(t.path(), 0o700);
        let cache = Cache::try_open(t.path()).expect("private dir accepted");
        assert_eq!(cache.dir(), t.path());
    }

    #[test]
    fn a_missing_directory_is_created_private_and_used() {
        let t = tempdir();
        let dir = t.path().join("a/b/cache");
        let cache = Cache::try_open(&dir).expect("created");
        assert_eq!(cache.dir(), dir);
        assert_eq!(mode_of(&dir) & ANY_ACCESS_BY_OTHERS, 0, "{:o}", mode_of(&dir));
    }

    #[test]
    fn a_shared_directory_gets_a_private_subdirectory() {
        let t = tempdir();
        let dir = shared(&t);
        let cache = Cache::try_open(&dir).expect("subdirectory used");
        assert_eq!(cache.dir(), sub(&dir));
        assert_eq!(mode_of(&sub(&dir)), PRIVATE_DIR_MODE);
        // The second start finds it and uses it again.
        let again = Cache::try_open(&dir).expect("subdirectory used again");
        assert_eq!(again.dir(), sub(&dir));
    }

    #[test]
    fn a_sticky_shared_directory_gets_a_private_subdirectory() {
        let t = tempdir();
        let dir = shared(&t);
        chmod(&dir, 0o1777);
        assert_eq!(Cache::try_open(&dir).expect("subdirectory used").dir(), sub(&dir));
    }

    #[test]
    fn a_group_writable_directory_counts_as_shared() {
        let t = tempdir();
        let dir = shared(&t);
        chmod(&dir, 0o770);
        assert_eq!(Cache::try_open(&dir).expect("subdirectory used").dir(), sub(&dir));
    }

    #[test]
    fn a_symlink_in_place_of_the_subdirectory_is_refused() {
        let t = tempdir();
        let dir = shared(&t);
        // Even one to a private directory of ours: whoever could plant the link chose it.
        let target = t.path().join("elsewhere");
        std::fs::DirBuilder::new().mode(0o700).create(&target).expect("mkdir");
        std::os::unix::fs::symlink(&target, sub(&dir)).expect("symlink");
        let refused = Cache::try_open(&dir).expect_err("symlink refused");
        assert!(matches!(refused, Refused::Symlink { .. }), "{refused}");
        assert!(Cache::open(&dir).is_none());
    }

    #[test]
    fn a_file_in_place_of_the_subdirectory_is_refused() {
        let t = tempdir();
        let dir = shared(&t);
        std::fs::write(sub(&dir), b"not a directory").expect("write");
        let refused = Cache::try_open(&dir).expect_err("file refused");
        assert!(matches!(refused, Refused::NotADirectory { .. }), "{refused}");
    }

    #[test]
    fn a_subdirectory_open_to_others_is_refused() {
        for mode in [0o755, 0o710, 0o701, 0o777] {
            let t = tempdir();
            let dir = shared(&t);
            std::fs::create_dir(sub(&dir)).expect("mkdir");
            chmod(&sub(&dir), mode);
            let refused = Cache::try_open(&dir).expect_err("open subdirectory refused");
            assert!(
                matches!(refused, Refused::WrongMode { mode: m, .. } if m == mode),
                "mode {mode:o}: {refused}"
            );
        }
    }

    #[test]
    fn a_subdirectory_owned_by_someone_else_is_refused() {
        if uid() != 0 {
            eprintln!(
                "SKIPPED a_subdirectory_owned_by_someone_else_is_refused: needs root (chown)"
            );
            return;
        }
        let t = tempdir();
        let dir = shared(&t);
        std::fs::DirBuilder::new().mode(0o700).create(sub(&dir)).expect("mkdir");
        // 65534: `nobody`, as an attacker who made the name first would own it.
        std::os::unix::fs::chown(sub(&dir), Some(65534), Some(65534)).expect("chown");
        let refused = Cache::try_open(&dir).expect_err("foreign subdirectory refused");
        assert!(matches!(refused, Refused::WrongOwner { owner: 65534, .. }), "{refused}");
    }

    #[test]
    fn a_path_that_is_a_file_is_refused() {
        let t = tempdir();
        let file = t.path().join("file");
        std::fs::write(&file, b"").expect("write");
        assert!(Cache::try_open(&file).is_err());
    }

    fn engine() -> Engine {
        Engine::default()
    }

    fn entry(cache: &Cache, engine: &Engine) -> PathBuf {
        cache.path(&Cache::key(engine, SHA))
    }

    #[test]
    fn an_entry_is_stored_private_and_read_back() {
        let t = tempdir();
        let dir = shared(&t);
        let cache = Cache::try_open(&dir).expect("cache");
        let engine = engine();
        cache.component(&engine, EMPTY_COMPONENT, SHA).expect("compiled");
        let path = entry(&cache, &engine);
        assert_eq!(mode_of(&path), ENTRY_MODE);
        let key = Cache::key(&engine, SHA);
        let code = read_entry(&path, &key, uid()).expect("readable").expect("present");
        assert!(code.starts_with(b"\x7fELF"), "compiled code follows the key line");
        let inode = std::fs::metadata(&path).expect("stat").ino();
        cache.component(&engine, EMPTY_COMPONENT, SHA).expect("from the cache");
        // Read, not compiled and stored again (which renames a new file into place).
        assert_eq!(std::fs::metadata(&path).expect("stat").ino(), inode);
        // No temporary file left behind.
        let files = std::fs::read_dir(cache.dir()).expect("ls").count();
        assert_eq!(files, 1);
    }

    #[test]
    fn an_entry_others_can_write_is_not_read() {
        let t = tempdir();
        let cache = Cache::try_open(t.path()).expect("cache");
        let engine = engine();
        cache.component(&engine, EMPTY_COMPONENT, SHA).expect("compiled");
        let path = entry(&cache, &engine);
        chmod(&path, 0o666);
        let key = Cache::key(&engine, SHA);
        let err = read_entry(&path, &key, uid()).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        // Still compiles (afresh) and replaces the entry with a private one.
        cache.component(&engine, EMPTY_COMPONENT, SHA).expect("compiled again");
        assert_eq!(mode_of(&path), ENTRY_MODE);
    }

    #[test]
    fn an_entry_under_another_key_is_not_read() {
        let t = tempdir();
        let cache = Cache::try_open(t.path()).expect("cache");
        let engine = engine();
        cache.component(&engine, EMPTY_COMPONENT, SHA).expect("compiled");
        // Another key's name pointing at this entry, as a redirecting symlink would.
        let other = SHA.replace('0', "f");
        let other_key = Cache::key(&engine, &other);
        std::os::unix::fs::symlink(entry(&cache, &engine), cache.path(&other_key))
            .expect("symlink");
        let err = read_entry(&cache.path(&other_key), &other_key, uid()).expect_err("refused");
        assert!(matches!(err.kind(), io::ErrorKind::PermissionDenied), "{err}");
        // A copy (a regular file of ours) under the other name: its key line gives it away.
        std::fs::remove_file(cache.path(&other_key)).expect("rm");
        std::fs::copy(entry(&cache, &engine), cache.path(&other_key)).expect("cp");
        chmod(&cache.path(&other_key), ENTRY_MODE);
        let err = read_entry(&cache.path(&other_key), &other_key, uid()).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn a_missing_entry_is_none() {
        let t = tempdir();
        let path = t.path().join("absent.cwasm");
        assert!(read_entry(&path, "k", uid()).expect("no error").is_none());
    }
}
