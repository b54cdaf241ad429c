//! Stage: control (configuration).
//!
//! Input: the raw flags from `cli`, and for `wasmtap run` the configuration file they name
//! (`file`). Output: a checked configuration ([`Run`], [`Replay`]) in which every value is in
//! range and every analyzer file has been read, or a [`ConfigError`] naming the flag, key or
//! file and what is wrong with it. A flag wins over the file; the file wins over the default.

pub mod file;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::capture::links::{Selection, is_pattern};
use crate::cli::{AnalyzerArgs, CheckArgs, LimitArgs, PipelineArgs, ReplayArgs, RunArgs};
use crate::decode::{GENEVE_PORT, MAX_VXLAN_PORTS, VxlanPorts};
use crate::pods::{FileError as PodsFileError, Listing};
use crate::registry::{
    DEFAULT_ANALYZER_EXPOSITION, DEFAULT_SERIES_CAP, DEFAULT_SERIES_TTL, PREFIX, Policy,
};
use crate::runtime::Limits;

/// More workers than this buys nothing on a node and multiplies analyzer memory.
const MAX_WORKERS: usize = 64;
/// Batches beyond this no longer amortize anything and only add latency and memory.
const MAX_BATCH_SIZE: usize = 65_536;
/// The smallest snaplen that still holds Ethernet + IPv4 + a bare TCP header.
const MIN_SNAPLEN: u32 = 54;
/// libpcap's own ceiling.
const MAX_SNAPLEN: u32 = 262_144;
/// Defaults of the settings a file may also give (the flags' help texts name them).
const DEFAULT_LISTEN: &str = "0.0.0.0:9725";
/// Holds the headers of the deepest tunnelled packet decode reads whole
/// (`decode::DEEPEST_HEADERS`, 332 bytes) with room for Geneve options or IPv6 extension
/// headers; payload is never needed.
const DEFAULT_SNAPLEN: u32 = 384;
const _: () = assert!(DEFAULT_SNAPLEN >= crate::decode::DEEPEST_HEADERS, "see DEFAULT_SNAPLEN");
const DEFAULT_CALL_BUDGET_MS: u64 = 200;
const DEFAULT_MEMORY_MIB: usize = 64;
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1); a pattern may be longer only
/// by its wildcards, so this is generous.
const MAX_PATTERN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--workers {0}: must be between 1 and {MAX_WORKERS}")]
    Workers(usize),
    #[error("--batch-size {0}: must be between 1 and {MAX_BATCH_SIZE}")]
    BatchSize(usize),
    #[error("--snaplen {0}: must be between {MIN_SNAPLEN} and {MAX_SNAPLEN}")]
    Snaplen(u32),
    #[error("--vxlan-port {value}: {reason}")]
    VxlanPort { value: String, reason: String },
    #[error("--call-budget-ms {0}: must be between 1 and 60000")]
    CallBudget(u64),
    #[error("--memory-mib {0}: must be between 1 and 4096")]
    Memory(usize),
    #[error("--series-cap {0}: must be at least 1")]
    SeriesCap(usize),
    #[error("--exposition-budget-mib {0}: must be between 1 and 4096")]
    ExpositionBudget(usize),
    // `reason`, not `source`: the message already says it, and a source would repeat it in
    // the error chain printed at exit.
    #[error("--analyzer {path}: {reason}")]
    AnalyzerFile { path: PathBuf, reason: std::io::Error },
    #[error(
        "--no-default-analyzers with no --analyzer (or --analyzer-dir): there would be nothing \
         to compute"
    )]
    NoAnalyzers,
    #[error("-i {0:?}: an interface name is 1 to 15 bytes (IFNAMSIZ)")]
    Interface(String),
    #[error("{flag} {pattern:?}: not a valid glob pattern: {reason}")]
    Pattern { flag: &'static str, pattern: String, reason: String },
    #[error("-f {filter:?}: not a valid capture filter: {reason}")]
    Filter { filter: String, reason: String },
    #[error("--listen {addr:?}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("--series-ttl {0:?}: not a duration (like 90s, 10m or 1h)")]
    SeriesTtl(String),
    #[error("label policy: {family:?}: {reason}")]
    Policy { family: String, reason: String },
    #[error("--cri-socket {0:?}: not a socket path (or `none`)")]
    CriSocket(String),
    #[error("--cri-socket and --pods: attribute from one or the other")]
    PodsTwice,
    #[error("--pods: {0}")]
    Pods(#[from] PodsFileError),
    #[error(transparent)]
    File(#[from] file::FileError),
}

/// Where pods come from.
#[derive(Debug, Clone)]
pub enum PodSource {
    /// No attribution labels, and why.
    Off(&'static str),
    /// The container runtime on this CRI socket.
    Cri(PathBuf),
    /// A fixed table from a `--pods` file.
    File(Listing),
}

impl PodSource {
    fn describe(&self) -> String {
        match self {
            PodSource::Off(why) => format!("pods: not attributed ({why})"),
            PodSource::Cri(socket) => format!("pods: from the CRI socket {}", socket.display()),
            PodSource::File(l) => format!("pods: {} pods from {}", l.pods.len(), l.source),
        }
    }
}

/// The pod source of `--pods` or `--cri-socket`, else of the first default socket there is.
fn pod_source(cri_socket: Option<&str>, pods: Option<&PathBuf>) -> Result<PodSource, ConfigError> {
    match (cri_socket, pods) {
        (Some(_), Some(_)) => Err(ConfigError::PodsTwice),
        (None, Some(path)) => Ok(PodSource::File(Listing::from_file(path)?)),
        (Some("none"), None) => Ok(PodSource::Off("--cri-socket none")),
        (Some(s), None) if s.trim().is_empty() || s.contains('\0') => {
            Err(ConfigError::CriSocket(s.to_owned()))
        }
        (Some(s), None) => Ok(PodSource::Cri(PathBuf::from(s))),
        (None, None) => Ok(crate::cri::default_socket()
            .map_or(PodSource::Off("no CRI socket found at the usual paths"), PodSource::Cri)),
    }
}

/// An analyzer to load: its source name and its bytes.
#[derive(Debug, Clone)]
pub struct AnalyzerSource {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// What every pipeline needs.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub defaults: bool,
    /// Run the built-in analyzers natively (benchmarks only).
    pub native_defaults: bool,
    pub analyzers: Vec<AnalyzerSource>,
    pub limits: Limits,
    /// Where compiled analyzers are cached; `None` turns the cache off.
    pub cache_dir: Option<PathBuf>,
    pub series_cap: usize,
    /// Bytes of exposition each analyzer's series may take.
    pub exposition_budget: usize,
    pub workers: usize,
    pub batch_size: usize,
    /// UDP ports opened as VXLAN.
    pub vxlan: VxlanPorts,
}

/// `wasmtap run`, checked.
#[derive(Debug, Clone)]
pub struct Run {
    /// The flags as given, to read the configuration file again on SIGHUP.
    pub args: RunArgs,
    /// What `-i` and `--exclude` select.
    pub selection: Selection,
    pub filter: Option<String>,
    pub listen: SocketAddr,
    /// `None`: series never expire.
    pub series_ttl: Option<Duration>,
    pub policy: Policy,
    pub snaplen: u32,
    pub promisc: bool,
    pub analyzer_dir: Option<PathBuf>,
    pub pods: PodSource,
    pub pipeline: Pipeline,
}

/// `wasmtap replay`, checked.
#[derive(Debug, Clone)]
pub struct Replay {
    pub captures: Vec<PathBuf>,
    pub output: Option<PathBuf>,
    /// A fixed pod table (`--pods`); `None`: no attribution labels.
    pub pods: Option<Listing>,
    /// Whether the output has the timings and CPU times (`--timings`).
    pub timings: bool,
    pub pipeline: Pipeline,
}

fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(1).max(1)
}

/// The sandbox limits, the series cap and the exposition budget in bytes, checked.
fn limits(a: &LimitArgs) -> Result<(Limits, usize, usize), ConfigError> {
    let call_budget_ms = a.call_budget_ms.unwrap_or(DEFAULT_CALL_BUDGET_MS);
    if !(1..=60_000).contains(&call_budget_ms) {
        return Err(ConfigError::CallBudget(call_budget_ms));
    }
    let memory_mib = a.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
    if !(1..=4096).contains(&memory_mib) {
        return Err(ConfigError::Memory(memory_mib));
    }
    let series_cap = a.series_cap.unwrap_or(DEFAULT_SERIES_CAP);
    if series_cap == 0 {
        return Err(ConfigError::SeriesCap(series_cap));
    }
    let budget_mib = a.exposition_budget_mib.unwrap_or(DEFAULT_ANALYZER_EXPOSITION >> 20);
    if !(1..=4096).contains(&budget_mib) {
        return Err(ConfigError::ExpositionBudget(budget_mib));
    }
    let limits = Limits {
        call_budget: Duration::from_millis(call_budget_ms),
        memory_bytes: memory_mib << 20,
        ..Limits::default()
    };
    Ok((limits, series_cap, budget_mib << 20))
}

/// `wasmtap check`, checked.
#[derive(Debug, Clone)]
pub struct Check {
    pub analyzer: PathBuf,
    pub pcap: Option<PathBuf>,
    pub limits: Limits,
    pub series_cap: usize,
    pub exposition_budget: usize,
}

impl Check {
    pub fn from_args(a: CheckArgs) -> Result<Self, ConfigError> {
        let (limits, series_cap, exposition_budget) = limits(&a.limits)?;
        Ok(Self { analyzer: a.analyzer, pcap: a.pcap, limits, series_cap, exposition_budget })
    }
}

/// `dir`: analyzers may also come from a watched directory.
fn pipeline(a: AnalyzerArgs, p: PipelineArgs, dir: bool) -> Result<Pipeline, ConfigError> {
    let workers = p.workers.unwrap_or_else(default_workers);
    if !(1..=MAX_WORKERS).contains(&workers) {
        return Err(ConfigError::Workers(workers));
    }
    let batch_size = p.batch_size.unwrap_or(crate::batch::DEFAULT_BATCH_SIZE);
    if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
        return Err(ConfigError::BatchSize(batch_size));
    }
    let vxlan = vxlan_ports(&p.vxlan_ports)?;
    let (limits, series_cap, exposition_budget) = limits(&a.limits)?;
    if a.no_default_analyzers && a.analyzers.is_empty() && !dir {
        return Err(ConfigError::NoAnalyzers);
    }
    let analyzers = a
        .analyzers
        .into_iter()
        .map(|path| match std::fs::read(&path) {
            Ok(bytes) => Ok(AnalyzerSource { name: path.display().to_string(), bytes }),
            Err(reason) => Err(ConfigError::AnalyzerFile { path, reason }),
        })
        .collect::<Result<_, _>>()?;
    Ok(Pipeline {
        defaults: !a.no_default_analyzers,
        native_defaults: false,
        analyzers,
        limits,
        cache_dir: if a.no_cache {
            None
        } else {
            a.cache_dir.or_else(crate::runtime::cache::default_dir)
        },
        series_cap,
        exposition_budget,
        workers,
        batch_size,
        vxlan,
    })
}

/// `a`, with what it leaves out taken from `f`.
fn merged(mut a: RunArgs, f: file::File) -> RunArgs {
    fn or<T>(flag: &mut Option<T>, file: Option<T>) {
        if flag.is_none() {
            *flag = file;
        }
    }
    fn or_list<T>(flag: &mut Vec<T>, file: Option<Vec<T>>) {
        if flag.is_empty() {
            *flag = file.unwrap_or_default();
        }
    }
    or_list(&mut a.interfaces, f.interface);
    or_list(&mut a.exclude, f.exclude);
    or(&mut a.filter, f.filter);
    or(&mut a.listen, f.listen);
    or(&mut a.snaplen, f.snaplen);
    a.promisc |= f.promisc.unwrap_or(false);
    or(&mut a.analyzer_dir, f.analyzer_dir);
    or(&mut a.series_ttl, f.series_ttl);
    // `--cri-socket` and `--pods` exclude each other: a flag for either overrides the file.
    if a.cri_socket.is_none() && a.pods.is_none() {
        a.cri_socket = f.cri_socket;
        a.pods = f.pods;
    }
    let (an, pl) = (&mut a.analyzers, &mut a.pipeline);
    or_list(&mut an.analyzers, f.analyzer);
    an.no_default_analyzers |= f.no_default_analyzers.unwrap_or(false);
    or(&mut an.limits.call_budget_ms, f.call_budget_ms);
    or(&mut an.limits.memory_mib, f.memory_mib);
    // `--no-cache` and `--cache-dir` exclude each other: a flag for either overrides the file.
    if an.cache_dir.is_none() && !an.no_cache {
        an.cache_dir = f.cache_dir;
        an.no_cache = f.no_cache.unwrap_or(false);
    }
    or(&mut an.limits.series_cap, f.series_cap);
    or(&mut an.limits.exposition_budget_mib, f.exposition_budget_mib);
    or(&mut pl.workers, f.workers);
    or(&mut pl.batch_size, f.batch_size);
    if pl.vxlan_ports.is_empty() {
        pl.vxlan_ports = match f.vxlan_port {
            Some(ports) if ports.is_empty() => vec![NO_VXLAN.to_owned()],
            Some(ports) => ports.iter().map(u16::to_string).collect(),
            None => Vec::new(),
        };
    }
    a
}

/// The `--vxlan-port` value that opens no VXLAN.
const NO_VXLAN: &str = "none";

/// The VXLAN ports from `--vxlan-port`, checked: numbers from 1 to 65535 other than Geneve's,
/// at most [`MAX_VXLAN_PORTS`]; or `none`; or the defaults when not given.
fn vxlan_ports(given: &[String]) -> Result<VxlanPorts, ConfigError> {
    if given.is_empty() {
        return Ok(VxlanPorts::default());
    }
    if given.len() == 1 && given[0] == NO_VXLAN {
        return Ok(VxlanPorts::NONE);
    }
    let mut ports = Vec::with_capacity(given.len());
    for text in given {
        let port = match text.trim().parse::<u16>() {
            Ok(0) | Err(_) => {
                let reason = "not a UDP port (1 to 65535) or `none`".to_owned();
                return Err(ConfigError::VxlanPort { value: text.clone(), reason });
            }
            Ok(GENEVE_PORT) => {
                let reason = format!("{GENEVE_PORT} is Geneve's port, always opened as Geneve");
                return Err(ConfigError::VxlanPort { value: text.clone(), reason });
            }
            Ok(port) => port,
        };
        ports.push(port);
    }
    VxlanPorts::new(&ports).ok_or_else(|| ConfigError::VxlanPort {
        value: given.join(","),
        reason: format!("at most {MAX_VXLAN_PORTS} ports"),
    })
}

/// The label policy from the file, with family names prefixed as exposed.
fn policy(f: &file::File) -> Result<Policy, ConfigError> {
    let mut out = Policy::new();
    for (family, labels) in &f.labels.drop {
        let full =
            if family.starts_with(PREFIX) { family.clone() } else { format!("{PREFIX}{family}") };
        if let Some(bad) = labels.iter().find(|l| !crate::registry::valid_name(l)) {
            let reason = format!("{bad:?} is not a label name");
            return Err(ConfigError::Policy { family: family.clone(), reason });
        }
        out.insert(full, labels.clone());
    }
    Ok(out)
}

fn duration(s: &str) -> Result<Option<Duration>, ConfigError> {
    let d = humantime::parse_duration(s.trim()).map_err(|_| ConfigError::SeriesTtl(s.into()))?;
    Ok((!d.is_zero()).then_some(d))
}

fn listen(addr: &str) -> Result<SocketAddr, ConfigError> {
    let err = |reason: String| ConfigError::Listen { addr: addr.to_owned(), reason };
    let mut addrs = addr.to_socket_addrs().map_err(|e| err(e.to_string()))?;
    addrs.next().ok_or_else(|| err("the name has no address".into()))
}

impl Run {
    pub fn from_args(given: RunArgs) -> Result<Self, ConfigError> {
        let file = match &given.config {
            Some(path) => file::File::read(path)?,
            None => file::File::default(),
        };
        let policy = policy(&file)?;
        let a = merged(given.clone(), file);
        let snaplen = a.snaplen.unwrap_or(DEFAULT_SNAPLEN);
        if !(MIN_SNAPLEN..=MAX_SNAPLEN).contains(&snaplen) {
            return Err(ConfigError::Snaplen(snaplen));
        }
        let interfaces =
            if a.interfaces.is_empty() { vec!["any".to_owned()] } else { a.interfaces.clone() };
        let bad_name = |i: &String| {
            let limit = if is_pattern(i) { MAX_PATTERN } else { 15 };
            i.is_empty() || i.len() > limit
        };
        if let Some(bad) = interfaces.iter().find(|i| bad_name(i)) {
            return Err(ConfigError::Interface(bad.clone()));
        }
        for (flag, list) in [("-i", &interfaces), ("--exclude", &a.exclude)] {
            for p in list {
                if let Err(e) = glob::Pattern::new(p) {
                    let (pattern, reason) = (p.clone(), e.to_string());
                    return Err(ConfigError::Pattern { flag, pattern, reason });
                }
            }
        }
        let selection = Selection::new(&interfaces, &a.exclude).map_err(|e| {
            let reason = e.to_string();
            ConfigError::Pattern { flag: "-i", pattern: interfaces.join(" "), reason }
        })?;
        if let Some(f) = &a.filter {
            // Checked now, not when the first interface appears: a pattern may match nothing
            // yet.
            let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET)
                .map_err(|e| ConfigError::Filter { filter: f.clone(), reason: e.to_string() })?;
            dead.compile(f, true)
                .map_err(|e| ConfigError::Filter { filter: f.clone(), reason: e.to_string() })?;
        }
        let series_ttl = match &a.series_ttl {
            Some(s) => duration(s)?,
            None => Some(DEFAULT_SERIES_TTL),
        };
        Ok(Self {
            selection,
            filter: a.filter.clone(),
            listen: listen(a.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?,
            series_ttl,
            policy,
            snaplen,
            promisc: a.promisc,
            pods: pod_source(a.cri_socket.as_deref(), a.pods.as_ref())?,
            pipeline: pipeline(a.analyzers.clone(), a.pipeline.clone(), a.analyzer_dir.is_some())?,
            analyzer_dir: a.analyzer_dir,
            args: given,
        })
    }

    /// The settings in force, one per line, for `--check-config`.
    pub fn summary(&self) -> String {
        let p = &self.pipeline;
        let analyzers: Vec<&str> = p.analyzers.iter().map(|a| a.name.as_str()).collect();
        let lines = [
            self.selection.describe(),
            format!("filter: {:?}", self.filter),
            format!("listen: {}", self.listen),
            format!("snaplen: {}", self.snaplen),
            format!("promisc: {}", self.promisc),
            format!("analyzer-dir: {:?}", self.analyzer_dir),
            self.pods.describe(),
            format!("default analyzers: {}", p.defaults),
            format!("analyzers: {analyzers:?}"),
            format!("limits: {:?}", p.limits),
            format!("cache-dir: {:?}", p.cache_dir),
            format!("series-cap: {}", p.series_cap),
            format!("exposition-budget: {} MiB", p.exposition_budget >> 20),
            format!("series-ttl: {:?}", self.series_ttl),
            format!("label policy: {:?}", self.policy),
            format!("workers: {}", p.workers),
            format!("batch-size: {}", p.batch_size),
            format!("vxlan-port: {:?}", p.vxlan.as_slice()),
        ];
        lines.join("\n")
    }

    /// The settings that differ between `self` and `new` but only take effect on a restart
    /// (everything but the label policy, --series-cap, --exposition-budget-mib and
    /// --series-ttl).
    pub fn restart_needed(&self, new: &Run) -> Vec<&'static str> {
        let (a, b) = (&self.pipeline, &new.pipeline);
        let names = |p: &Pipeline| p.analyzers.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
        [
            (
                "interface/exclude",
                format!("{:?}", self.selection) != format!("{:?}", new.selection),
            ),
            ("filter", self.filter != new.filter),
            ("listen", self.listen != new.listen),
            ("snaplen", self.snaplen != new.snaplen),
            ("promisc", self.promisc != new.promisc),
            ("analyzer-dir", self.analyzer_dir != new.analyzer_dir),
            ("cri-socket/pods", self.pods.describe() != new.pods.describe()),
            ("analyzer", names(a) != names(b) || a.defaults != b.defaults),
            ("call-budget-ms/memory-mib", format!("{:?}", a.limits) != format!("{:?}", b.limits)),
            ("cache-dir/no-cache", a.cache_dir != b.cache_dir),
            ("workers", a.workers != b.workers),
            ("batch-size", a.batch_size != b.batch_size),
            ("vxlan-port", a.vxlan != b.vxlan),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
    }
}

impl Replay {
    pub fn from_args(a: ReplayArgs) -> Result<Self, ConfigError> {
        let pipeline = pipeline(a.analyzers, a.pipeline, false)?;
        #[cfg(feature = "native-defaults")]
        let pipeline = Pipeline { native_defaults: a.native_defaults, ..pipeline };
        // Checked with the defaults on, so that only this flag runs no analyzer at all.
        let pipeline = Pipeline { defaults: pipeline.defaults && !a.decode_only, ..pipeline };
        let pods = a.pods.as_deref().map(Listing::from_file).transpose()?;
        Ok(Self { captures: a.captures, output: a.output, pods, timings: a.timings, pipeline })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn run(args: &[&str]) -> Result<Run, ConfigError> {
        let cli = Cli::try_parse_from([&["host", "run"][..], args].concat()).unwrap();
        let Command::Run(a) = cli.command else { unreachable!() };
        Run::from_args(a)
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let f =
            file("series-cap = 5\nsnaplen = 128\nseries-ttl = \"3s\"\ninterface = [\"veth*\"]\n");
        let path = f.path().to_str().unwrap();
        let r = run(&["--config", path, "--series-cap", "7"]).unwrap();
        assert_eq!(r.pipeline.series_cap, 7, "flag");
        assert_eq!(r.snaplen, 128, "file");
        assert_eq!(r.series_ttl, Some(Duration::from_secs(3)), "file");
        assert!(r.selection.matches("veth0") && !r.selection.matches("eth0"));
        assert_eq!(r.pipeline.batch_size, crate::batch::DEFAULT_BATCH_SIZE, "default");
        let r = run(&["--config", path, "-i", "eth0"]).unwrap();
        assert!(
            r.selection.matches("eth0") && !r.selection.matches("veth0"),
            "-i replaces the list"
        );
    }

    #[test]
    fn the_exposition_budget_comes_from_the_flag_or_the_file_in_mib() {
        assert_eq!(run(&[]).unwrap().pipeline.exposition_budget, DEFAULT_ANALYZER_EXPOSITION);
        let f = file("exposition-budget-mib = 64\n");
        let path = f.path().to_str().unwrap();
        assert_eq!(run(&["--config", path]).unwrap().pipeline.exposition_budget, 64 << 20);
        let r = run(&["--config", path, "--exposition-budget-mib", "8"]).unwrap();
        assert_eq!(r.pipeline.exposition_budget, 8 << 20, "the flag wins");
        for bad in ["0", "4097"] {
            let e = run(&["--exposition-budget-mib", bad]).unwrap_err().to_string();
            assert!(e.contains("--exposition-budget-mib") && e.contains("4096"), "{e}");
        }
    }

    #[test]
    fn defaults_without_a_file() {
        let r = run(&[]).unwrap();
        assert!(r.selection.any);
        assert_eq!(r.series_ttl, Some(DEFAULT_SERIES_TTL));
        assert_eq!(r.listen, "0.0.0.0:9725".parse::<SocketAddr>().unwrap());
        assert_eq!(run(&["--series-ttl", "0s"]).unwrap().series_ttl, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        let f = file("series-cap = 5\nbogus-key = 1\n");
        let e = run(&["--config", f.path().to_str().unwrap()]).unwrap_err().to_string();
        assert!(e.contains("bogus-key"), "{e}");
        let e = run(&["--series-ttl", "soon"]).unwrap_err().to_string();
        assert!(e.contains("--series-ttl"), "{e}");
        let e = run(&["--listen", "no-such-host.invalid:1"]).unwrap_err().to_string();
        assert!(e.contains("--listen"), "{e}");
        let f = file("[labels.drop]\ntcp_resets_total = [\"Dst-IP\"]\n");
        let e = run(&["--config", f.path().to_str().unwrap()]).unwrap_err().to_string();
        assert!(e.contains("tcp_resets_total") && e.contains("Dst-IP"), "{e}");
    }

    #[test]
    fn vxlan_ports_from_flags_file_and_default() {
        let ports = |args: &[&str]| run(args).map(|r| r.pipeline.vxlan.as_slice().to_vec());
        assert_eq!(ports(&[]).unwrap(), [4789, 8472], "default");
        assert_eq!(ports(&["--vxlan-port", "8472"]).unwrap(), [8472]);
        assert_eq!(
            ports(&["--vxlan-port", "4789,9000", "--vxlan-port", "9001"]).unwrap(),
            [4789, 9000, 9001]
        );
        assert_eq!(ports(&["--vxlan-port", "none"]).unwrap(), Vec::<u16>::new());
        let f = file("vxlan-port = [8472]\n");
        let path = f.path().to_str().unwrap();
        assert_eq!(ports(&["--config", path]).unwrap(), [8472], "file");
        assert_eq!(ports(&["--config", path, "--vxlan-port", "4789"]).unwrap(), [4789], "flag");
        let f = file("vxlan-port = []\n");
        assert_eq!(ports(&["--config", f.path().to_str().unwrap()]).unwrap(), Vec::<u16>::new());
        for (bad, says) in [
            ("0", "not a UDP port"),
            ("65536", "not a UDP port"),
            ("vxlan", "not a UDP port"),
            ("6081", "Geneve"),
            ("1,2,3,4,5,6,7,8,9", "at most 8"),
        ] {
            let e = ports(&["--vxlan-port", bad]).unwrap_err().to_string();
            assert!(e.starts_with("--vxlan-port") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_policy_names_families_as_exposed() {
        let f = file("[labels.drop]\ntcp_resets_total = [\"dst_ip\"]\nwasmtap_x_total = [\"a\"]\n");
        let r = run(&["--config", f.path().to_str().unwrap()]).unwrap();
        let names: Vec<&str> = r.policy.keys().map(String::as_str).collect();
        assert_eq!(names, ["wasmtap_tcp_resets_total", "wasmtap_x_total"]);
    }

    #[test]
    fn a_listen_name_resolves() {
        let r = run(&["--listen", "localhost:9725"]).unwrap();
        assert!(r.listen.ip().is_loopback());
    }
}
