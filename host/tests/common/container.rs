//! Helpers for the image test (`root_image`): building wasmtap's image with `scripts/image`,
//! running it with podman inside a test network namespace, reading its HTTP endpoints there,
//! and a directory laid out and updated the way kubelet lays out a ConfigMap volume.
//!
//! Podman runs with Debian's `runc` and a `containers.conf` of the test's own
//! ([`Podman::new`]): `crun` fails on hosts with hybrid cgroups, and podman's default ulimits
//! can exceed a machine's hard limits. As everywhere in `common`, what is started here is
//! stopped on drop, also when a test panics, and every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::http::{self, Response};
use super::{
    HOST, Sample, Spawned, TempDir, next_seq, parse_exposition, repo_root, require_tools, run_ok,
    run_with_timeout,
};

/// The OCI runtime: Debian's runc (see the header for why not podman's default, crun).
pub const RUNC: &str = "/usr/sbin/runc";

/// `containers.conf` for the tests: no default ulimits (podman's exceed the hard limits of
/// some machines) and runc for `podman build`'s RUN steps too.
const CONTAINERS_CONF: &str =
    "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n";

/// Bound on one request to the container's endpoints.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the polling helpers ask: fine enough to time a reload against its 2 s promise.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Bound for `scripts/image`: making the base with mmdebstrap takes about a minute the first
/// time (then its tarball is cached under target/), the build itself seconds.
const IMAGE_BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// How podman is run: with the test's `containers.conf` and runc.
pub struct Podman {
    conf: PathBuf,
    _dir: TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        require_tools(&["podman", "runc"]);
        assert!(Path::new(RUNC).is_file(), "{RUNC} missing: apt-get install runc");
        let dir = TempDir::new("podman");
        let conf = dir.join("containers.conf");
        std::fs::write(&conf, CONTAINERS_CONF).expect("write containers.conf");
        Podman { conf, _dir: dir }
    }

    /// The environment every podman invocation (and `scripts/image`) gets.
    fn env(&self, cmd: &mut Command) {
        cmd.env("CONTAINERS_CONF", &self.conf);
    }

    /// `podman --runtime RUNC ARGS...` as a Command.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        self.env(&mut c);
        c.args(["--runtime", RUNC]);
        c
    }

    /// `podman ARGS...`, which must succeed within `timeout`; returns stdout.
    pub fn ok(&self, args: &[&str], timeout: Duration) -> String {
        run_ok(self.cmd().args(args), timeout)
    }

    /// Builds the image `tag` from the host binary under test with `scripts/image
    /// --local-base` (no registry is reachable: the base is made with mmdebstrap).
    pub fn build_image(&self, tag: &str) -> Image<'_> {
        require_tools(&["mmdebstrap", "strip"]);
        let mut cmd = Command::new(repo_root().join("scripts/image"));
        self.env(&mut cmd);
        cmd.args(["--local-base", "--binary", HOST, "--tag", tag]);
        let r = run_with_timeout(&mut cmd, IMAGE_BUILD_TIMEOUT);
        assert!(r.success(), "scripts/image failed: {}", r.describe());
        Image { podman: self, tag: tag.to_string() }
    }
}

/// A built image, removed on drop.
pub struct Image<'a> {
    podman: &'a Podman,
    pub tag: String,
}

impl Image<'_> {
    /// The image's size in bytes, as podman reports it.
    pub fn size(&self) -> u64 {
        let out = self
            .podman
            .ok(&["image", "inspect", "--format", "{{.Size}}", &self.tag], Duration::from_secs(30));
        out.trim().parse().unwrap_or_else(|e| panic!("image size {out:?}: {e}"))
    }
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        let _ = self.podman.cmd().args(["rmi", "-f", &self.tag]).output();
    }
}

/// A container of the image, run in the foreground by `podman run` (so that its log and exit
/// code are podman's), inside network namespace `ns`; removed on drop.
pub struct Container<'a> {
    podman: &'a Podman,
    pub name: String,
    pub ns: String,
    /// Where it serves HTTP, inside `ns`.
    pub port: u16,
    proc: Spawned,
    /// When `podman run` was started.
    pub started: Instant,
}

impl<'a> Container<'a> {
    /// `podman run --rm --name NAME --network ns:/run/netns/NS OPTIONS... IMAGE ARGS...`.
    /// Returns at once; see [`Container::wait_ready`].
    pub fn start(
        podman: &'a Podman,
        image: &Image<'_>,
        ns: &str,
        port: u16,
        options: &[String],
        args: &[&str],
    ) -> Container<'a> {
        let name = format!("wasmtap-test-{}-{}", std::process::id(), next_seq());
        let mut cmd = podman.cmd();
        cmd.args(["run", "--rm", "--name", &name])
            .arg(format!("--network=ns:/run/netns/{ns}"))
            .args(options)
            .arg(&image.tag)
            .args(args);
        let started = Instant::now();
        let proc = Spawned::start(&name, &mut cmd);
        Container { podman, name, ns: ns.to_string(), port, proc, started }
    }

    /// Everything the container logged (podman relays its stderr) so far.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// Panics, with the log, if the container has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.proc.try_status() {
            panic!("container {} exited ({status}):\n{}", self.name, self.log());
        }
    }

    /// Waits (≤ `timeout`) for /readyz to answer 200; returns the time since `podman run`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        while self.status("/readyz") != Some(200) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "container {}: /readyz not 200 within {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(POLL_INTERVAL);
        }
        self.started.elapsed()
    }

    /// `podman exec NAME ARGS...`; returns stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        self.podman.ok(&all, Duration::from_secs(30))
    }

    /// `podman inspect --format FORMAT NAME`, trimmed.
    pub fn inspect(&self, format: &str) -> String {
        self.podman
            .ok(&["inspect", "--format", format, &self.name], Duration::from_secs(30))
            .trim()
            .to_string()
    }

    /// The body of a 2xx answer to GET `path`; `None` otherwise.
    pub fn get(&self, path: &str) -> Option<String> {
        self.request(path).ok()?.ok()
    }

    /// The HTTP status of GET `path`; `None` if nothing answered.
    pub fn status(&self, path: &str) -> Option<u16> {
        self.request(path).ok().map(|r| r.status)
    }

    /// GET `path` from inside the test namespace, whatever the status.
    fn request(&self, path: &str) -> Result<Response, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        http::get_in(&self.ns, addr, path, REQUEST_TIMEOUT)
    }

    /// Scrapes /metrics every [`POLL_INTERVAL`] until `done(samples)` holds or `timeout`
    /// passes; returns whether it held, and the last scrape.
    pub fn poll(&self, timeout: Duration, done: impl Fn(&[Sample]) -> bool) -> (bool, Vec<Sample>) {
        let scrape = || self.get("/metrics").map(|t| parse_exposition(&t));
        let polled = super::live::poll_scrapes(scrape, timeout, done);
        (polled.met, polled.samples)
    }

    /// Polls GET `path` until `done(body)` holds; returns how long that took, `None` on
    /// timeout.
    pub fn poll_body(
        &self,
        path: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if self.get(path).is_some_and(|b| done(&b)) {
                return Some(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return None;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// `podman stop` (SIGTERM, SIGKILL after `grace`); returns the container's exit code as
    /// `podman run` reports it, `None` if that did not end in time.
    pub fn stop(mut self, grace: Duration) -> Option<i32> {
        let secs = grace.as_secs().max(1).to_string();
        let _ = run_with_timeout(
            self.podman.cmd().args(["stop", "-t", &secs, &self.name]),
            grace + Duration::from_secs(30),
        );
        self.proc.wait(Duration::from_secs(30)).and_then(|s| s.code())
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.podman.cmd().args(["rm", "-f", "-t", "0", &self.name]).output();
    }
}

/// A directory laid out as kubelet lays out a ConfigMap volume, and updated as it updates one
/// (its `AtomicWriter`): the payload is in a timestamped directory `..<stamp>`, `..data` is a
/// symlink to it, and each key is a symlink `KEY -> ..data/KEY`. An update writes a new
/// timestamped directory, points `..data_tmp` at it and renames that over `..data` (the atomic
/// swap), adds the links of new keys, removes those of keys no longer there, then the old
/// directory.
pub struct ConfigMapDir {
    pub path: PathBuf,
    current: Option<String>,
    keys: Vec<String>,
    /// Makes each timestamped name unique, as kubelet's time stamps are.
    generation: u32,
}

impl ConfigMapDir {
    /// An empty volume at `path` (created), holding `payload`.
    pub fn new(path: &Path, payload: &[(&str, &[u8])]) -> ConfigMapDir {
        std::fs::create_dir_all(path).expect("create the volume directory");
        let mut dir = ConfigMapDir {
            path: path.to_path_buf(),
            current: None,
            keys: Vec::new(),
            generation: 0,
        };
        dir.update(payload);
        dir
    }

    /// Replaces the volume's content with `payload`, step by step as kubelet does.
    pub fn update(&mut self, payload: &[(&str, &[u8])]) {
        self.generation += 1;
        let stamp = format!("..2026_01_01_00_00_{:02}.{:09}", self.generation % 60, next_seq());
        let new_dir = self.path.join(&stamp);
        std::fs::create_dir(&new_dir).expect("create the timestamped directory");
        for (key, bytes) in payload {
            std::fs::write(new_dir.join(key), bytes).expect("write a key");
        }
        let tmp = self.path.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&stamp, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.path.join("..data")).expect("rename ..data_tmp to ..data");
        let new_keys: Vec<String> = payload.iter().map(|(k, _)| k.to_string()).collect();
        for key in new_keys.iter().filter(|k| !self.keys.contains(k)) {
            std::os::unix::fs::symlink(format!("..data/{key}"), self.path.join(key))
                .expect("symlink a key");
        }
        for key in self.keys.iter().filter(|k| !new_keys.contains(k)) {
            std::fs::remove_file(self.path.join(key)).expect("remove a key's link");
        }
        if let Some(old) = self.current.replace(stamp) {
            std::fs::remove_dir_all(self.path.join(old)).expect("remove the old directory");
        }
        self.keys = new_keys;
    }
}
