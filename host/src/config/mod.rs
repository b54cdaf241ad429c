//! Stage: control (configuration).
//!
//! Input: the raw flags from `cli`. Output: a checked configuration ([`Run`], [`Replay`]) in
//! which every value is in range and every analyzer file has been read, or a [`ConfigError`]
//! naming the flag or file and what is wrong with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{AnalyzerArgs, PipelineArgs, ReplayArgs, RunArgs};
use crate::runtime::Limits;

/// More workers than this buys nothing on a node and multiplies analyzer memory.
const MAX_WORKERS: usize = 64;
/// Batches beyond this no longer amortize anything and only add latency and memory.
const MAX_BATCH_SIZE: usize = 65_536;
/// The smallest snaplen that still holds Ethernet + IPv4 + a bare TCP header.
const MIN_SNAPLEN: u32 = 54;
/// libpcap's own ceiling.
const MAX_SNAPLEN: u32 = 262_144;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--workers {0}: must be between 1 and {MAX_WORKERS}")]
    Workers(usize),
    #[error("--batch-size {0}: must be between 1 and {MAX_BATCH_SIZE}")]
    BatchSize(usize),
    #[error("--snaplen {0}: must be between {MIN_SNAPLEN} and {MAX_SNAPLEN}")]
    Snaplen(u32),
    #[error("--call-budget-ms {0}: must be between 1 and 60000")]
    CallBudget(u64),
    #[error("--memory-mib {0}: must be between 1 and 4096")]
    Memory(usize),
    #[error("--series-cap {0}: must be at least 1")]
    SeriesCap(usize),
    #[error("analyzer {path}: {source}")]
    AnalyzerFile { path: PathBuf, source: std::io::Error },
    #[error(
        "--no-default-analyzers with no --analyzer (or --analyzer-dir): there would be nothing \
         to compute"
    )]
    NoAnalyzers,
    #[error("interface name {0:?} is empty or too long")]
    Interface(String),
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
    pub workers: usize,
    pub batch_size: usize,
}

/// `host run`, checked.
#[derive(Debug, Clone)]
pub struct Run {
    pub interfaces: Vec<String>,
    pub filter: Option<String>,
    pub listen: SocketAddr,
    pub snaplen: u32,
    pub promisc: bool,
    pub analyzer_dir: Option<PathBuf>,
    pub pipeline: Pipeline,
}

/// `host replay`, checked.
#[derive(Debug, Clone)]
pub struct Replay {
    pub captures: Vec<PathBuf>,
    pub output: Option<PathBuf>,
    pub pipeline: Pipeline,
}

fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(1).max(1)
}

/// `dir`: analyzers may also come from a watched directory.
fn pipeline(a: AnalyzerArgs, p: PipelineArgs, dir: bool) -> Result<Pipeline, ConfigError> {
    let workers = p.workers.unwrap_or_else(default_workers);
    if !(1..=MAX_WORKERS).contains(&workers) {
        return Err(ConfigError::Workers(workers));
    }
    if !(1..=MAX_BATCH_SIZE).contains(&p.batch_size) {
        return Err(ConfigError::BatchSize(p.batch_size));
    }
    if !(1..=60_000).contains(&a.call_budget_ms) {
        return Err(ConfigError::CallBudget(a.call_budget_ms));
    }
    if !(1..=4096).contains(&a.memory_mib) {
        return Err(ConfigError::Memory(a.memory_mib));
    }
    if a.series_cap == 0 {
        return Err(ConfigError::SeriesCap(a.series_cap));
    }
    if a.no_default_analyzers && a.analyzers.is_empty() && !dir {
        return Err(ConfigError::NoAnalyzers);
    }
    let analyzers = a
        .analyzers
        .into_iter()
        .map(|path| match std::fs::read(&path) {
            Ok(bytes) => Ok(AnalyzerSource { name: path.display().to_string(), bytes }),
            Err(source) => Err(ConfigError::AnalyzerFile { path, source }),
        })
        .collect::<Result<_, _>>()?;
    let limits = Limits {
        call_budget: Duration::from_millis(a.call_budget_ms),
        memory_bytes: a.memory_mib << 20,
        ..Limits::default()
    };
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
        series_cap: a.series_cap,
        workers,
        batch_size: p.batch_size,
    })
}

impl Run {
    pub fn from_args(a: RunArgs) -> Result<Self, ConfigError> {
        if !(MIN_SNAPLEN..=MAX_SNAPLEN).contains(&a.snaplen) {
            return Err(ConfigError::Snaplen(a.snaplen));
        }
        // Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
        if let Some(bad) = a.interfaces.iter().find(|i| i.is_empty() || i.len() > 15) {
            return Err(ConfigError::Interface(bad.clone()));
        }
        let mut interfaces = a.interfaces;
        interfaces.dedup();
        Ok(Self {
            interfaces,
            filter: a.filter,
            listen: a.listen,
            snaplen: a.snaplen,
            promisc: a.promisc,
            pipeline: pipeline(a.analyzers, a.pipeline, a.analyzer_dir.is_some())?,
            analyzer_dir: a.analyzer_dir,
        })
    }
}

impl Replay {
    pub fn from_args(a: ReplayArgs) -> Result<Self, ConfigError> {
        let pipeline = Pipeline {
            native_defaults: a.native_defaults,
            ..pipeline(a.analyzers, a.pipeline, false)?
        };
        Ok(Self { captures: a.captures, output: a.output, pipeline })
    }
}
