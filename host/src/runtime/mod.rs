//! Stage: analyzers (loading).
//!
//! Inputs: `.wasm` component bytes (embedded defaults or user files) and the sandbox limits.
//! Outputs: [`Analyzer`]s — validated, compiled components whose `init` has run once and whose
//! metric families are known — ready to be instantiated by each worker ([`instance`]) and run
//! under the failure policy ([`worker`]).
//!
//! Every analyzer runs in its own wasmtime `Store` with an epoch deadline on every call and a
//! cap on linear memory, tables and instances. The only import linked is the `host.log`
//! function, so a component that asks for anything else (WASI included) fails to load.

mod bindings;
pub mod bounds;
pub mod cache;
pub mod catalog;
pub mod instance;
pub mod native;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::registry::{FamilySpec, Update};
use bindings::AnalyzerComponentPre;
use instance::{CallError, HostState, Instance, LogCounters};

/// The WIT package version this host speaks.
pub const ABI_VERSION: &str = "0.1.0";
/// The interface every analyzer must export.
const EXPORT_NAME: &str = "wasmtap:analyzer/analyzer@0.1.0";
/// The only imports an analyzer may have: our host interface and the types it uses.
const ALLOWED_IMPORTS: [&str; 2] = ["wasmtap:analyzer/host@0.1.0", "wasmtap:analyzer/types@0.1.0"];
/// The WIT package prefix, to tell a wrong version from a foreign import.
const PACKAGE_PREFIX: &str = "wasmtap:analyzer/";

/// The largest component loaded: the built-in analyzers are about 100 KiB each, and
/// compiling takes time in proportion to size, so this bounds load time too.
pub const MAX_COMPONENT_BYTES: usize = 16 << 20;

/// The longest a component may take to compile: the built-in ones take about 50 ms each (a
/// few hundred on a loaded machine), so this is room for large analyzers, and keeps `host
/// check` and a reload from hanging on a component built to be slow to compile.
pub const COMPILE_BUDGET: Duration = Duration::from_secs(5);

/// How often the epoch advances. Deadlines are counted in these ticks, so this is the
/// resolution of the CPU budget; 10 ms costs nothing measurable and keeps overruns short.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Sandbox limits for every analyzer instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// CPU time one call (`init`, `process` or `tick`) may use, on its worker thread.
    pub call_budget: Duration,
    /// Cap on an instance's linear memory, in bytes.
    pub memory_bytes: usize,
    /// Cap on the number of updates one call may return.
    pub max_updates: usize,
    /// Log lines an instance may write per second; the rest are counted and dropped.
    pub log_lines_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A batch of 1024 packets takes ~0.1 ms; 200 ms is far beyond any honest analyzer
            // yet short enough that a runaway one stalls its worker only briefly.
            call_budget: Duration::from_millis(200),
            // Flow tables for 100k flows fit in well under 64 MiB.
            memory_bytes: 64 << 20,
            // One update per series per batch: far more than any batch of 1024 packets needs.
            max_updates: 65_536,
            // Enough to explain a failure, too few to flood the host's log.
            log_lines_per_second: 10,
        }
    }
}

/// Why an analyzer could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component: wrap it with `wasm-tools component new` \
         or build it with wit-bindgen against wasmtap:analyzer@{ABI_VERSION}"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "built for wasmtap:analyzer@{found}, but this host speaks wasmtap:analyzer@{ABI_VERSION}; \
         rebuild it against wit/ of this host"
    )]
    WrongVersion { found: String },
    #[error(
        "imports {}, which analyzers may not use: the only import is \
         wasmtap:analyzer/host@{ABI_VERSION} (build for wasm32-unknown-unknown, not wasip2)",
        .0.join(", ")
    )]
    ForbiddenImport(Vec<String>),
    #[error("does not export {EXPORT_NAME}: is it built for the analyzer-component world?")]
    MissingExport,
    #[error("init failed: {0}")]
    Init(String),
    #[error("declares an invalid metric family: {0}")]
    Family(crate::registry::FamilyError),
    #[error("{0}")]
    Bounds(bounds::Exceeded),
    #[error("is larger than {limit} bytes, the limit for a component")]
    TooBig { limit: usize },
    #[error("took over {0:?} to compile")]
    TooSlow(Duration),
}

/// A loaded analyzer, shared by all workers.
pub struct Analyzer {
    pub name: String,
    pub version: String,
    /// Where it came from: a path, or `builtin:NAME`.
    pub source: String,
    pub sha256: String,
    pub families: Vec<FamilySpec>,
    backend: Backend,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Analyzer {
    /// The reason of the latest failed call, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_last_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
    }
}

/// How an analyzer's instances are made.
enum Backend {
    /// A sandboxed Wasm component.
    Wasm(AnalyzerComponentPre<HostState>),
    /// A built-in analyzer's native code (benchmarks only).
    Native(native::Factory),
}

/// One running instance of an analyzer, Wasm or native.
pub trait Session {
    /// Runs one packed batch.
    fn process(&mut self, batch: &[u8]) -> Result<Vec<Update>, CallError>;
    /// Advances packet time; `end` marks the end of a replay.
    fn tick(&mut self, now_ns: u64, end: bool) -> Result<Vec<Update>, CallError>;
    /// The largest linear memory the instance has had, in bytes, where that is known.
    fn peak_memory(&self) -> Option<usize> {
        None
    }
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The sha256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The wasmtime engine, the linker with our one import, and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    cache: Option<cache::Cache>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Runtime {
    pub fn new(limits: Limits, cache: Option<cache::Cache>) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        bindings::AnalyzerComponent::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::Builder::new().name("epoch".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?
        };
        Ok(Self { engine, linker, limits, cache, stop, ticker: Some(ticker) })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validates, compiles and initializes a component; `source` names it in messages.
    pub fn load(&self, bytes: &[u8], source: &str) -> Result<Arc<Analyzer>, LoadError> {
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(LoadError::TooBig { limit: MAX_COMPONENT_BYTES });
        }
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(LoadError::CoreModule),
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(LoadError::NotWasm),
        }
        let sha256 = sha256_hex(bytes);
        let component = self.compile(bytes, &sha256)?;
        self.check_world(&component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let pre =
            AnalyzerComponentPre::new(pre).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let probe =
            Instance::start(&self.engine, &pre, &self.limits, source, LogCounters::unused())
                .map_err(|e| LoadError::Init(e.to_string()))?;
        let (name, version, families) = probe.info();
        bounds::check_info(&name, &version).map_err(LoadError::Bounds)?;
        crate::registry::validate(&families).map_err(LoadError::Family)?;
        let backend = Backend::Wasm(pre);
        Ok(Arc::new(Analyzer {
            name,
            version,
            source: source.to_owned(),
            sha256,
            families,
            backend,
            last_error: std::sync::Mutex::default(),
        }))
    }

    /// Initializes a built-in analyzer as native code (benchmarks only; no sandbox).
    pub fn load_native(&self, factory: native::Factory) -> Result<Arc<Analyzer>, LoadError> {
        let (name, version, families) =
            factory().init().map_err(|e| LoadError::Init(e.to_string()))?;
        crate::registry::validate(&families).map_err(LoadError::Family)?;
        let source = format!("native:{name}");
        let sha256 = String::new();
        let backend = Backend::Native(factory);
        let last_error = std::sync::Mutex::default();
        Ok(Arc::new(Analyzer { name, version, source, sha256, families, backend, last_error }))
    }

    /// Starts an instance of `analyzer`; `log` counts its log lines dropped and cut.
    pub fn start(
        &self,
        analyzer: &Analyzer,
        log: LogCounters,
    ) -> Result<Box<dyn Session>, CallError> {
        match &analyzer.backend {
            Backend::Wasm(pre) => {
                let instance =
                    Instance::start(&self.engine, pre, &self.limits, &analyzer.name, log)?;
                Ok(Box::new(instance))
            }
            Backend::Native(factory) => {
                let mut native = factory();
                native.init()?;
                Ok(Box::new(native))
            }
        }
    }

    /// Compiles a component (or loads our own earlier compilation of it from the cache) on a
    /// thread of its own, waiting at most [`COMPILE_BUDGET`]. Compiling cannot be
    /// interrupted: past the budget the thread is left to finish and its result dropped, and
    /// the component is refused.
    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<Component, LoadError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (engine, cache) = (self.engine.clone(), self.cache.clone());
        let (bytes, sha256) = (bytes.to_vec(), sha256.to_owned());
        std::thread::Builder::new()
            .name("compile".into())
            .spawn(move || {
                let c = match &cache {
                    Some(cache) => cache.component(&engine, &bytes, &sha256),
                    None => Component::new(&engine, &bytes),
                };
                let _ = tx.send(c.map_err(|e| format!("{e:#}")));
            })
            .map_err(|e| LoadError::Invalid(format!("cannot start a compile thread: {e}")))?;
        match rx.recv_timeout(COMPILE_BUDGET) {
            Ok(result) => result.map_err(LoadError::Invalid),
            Err(_) => Err(LoadError::TooSlow(COMPILE_BUDGET)),
        }
    }

    fn check_world(&self, component: &Component) -> Result<(), LoadError> {
        let ty = component.component_type();
        let versioned = |name: &str| -> Option<String> {
            let rest = name.strip_prefix(PACKAGE_PREFIX)?;
            Some(rest.split_once('@').map_or("(none)", |(_, v)| v).to_owned())
        };
        let names = ty
            .imports(&self.engine)
            .map(|(n, _)| n)
            .chain(ty.exports(&self.engine).map(|(n, _)| n));
        for name in names {
            if let Some(found) = versioned(name).filter(|v| v != ABI_VERSION) {
                return Err(LoadError::WrongVersion { found });
            }
        }
        let forbidden: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n)
            .filter(|n| !ALLOWED_IMPORTS.contains(n))
            .map(str::to_owned)
            .collect();
        if !forbidden.is_empty() {
            return Err(LoadError::ForbiddenImport(forbidden));
        }
        if ty.get_export(&self.engine, EXPORT_NAME).is_none() {
            return Err(LoadError::MissingExport);
        }
        Ok(())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// Defines `family_spec` and `update`, converting a WIT `types` module's declarations and
/// updates into the registry's terms. Both the wasmtime bindings and the guest SDK's native
/// bindings generate the same shapes under different paths.
macro_rules! wit_conversions {
    ($t:ident) => {
        fn family_spec(f: &$t::MetricFamily) -> crate::registry::FamilySpec {
            use crate::registry::Kind;
            crate::registry::FamilySpec {
                name: f.name.clone(),
                help: f.help.clone(),
                kind: match f.kind {
                    $t::MetricKind::Counter => Kind::Counter,
                    $t::MetricKind::Gauge => Kind::Gauge,
                    $t::MetricKind::Histogram => Kind::Histogram,
                },
                label_names: f.label_names.clone(),
                buckets: f.buckets.clone(),
            }
        }

        fn update(u: $t::MetricUpdate) -> crate::registry::Update {
            use crate::registry::{Label, Value};
            let labels = u
                .labels
                .into_iter()
                .map(|l| match l {
                    $t::LabelValue::Text(s) => Label::Text(std::sync::Arc::from(s)),
                    $t::LabelValue::Ipv4(a) => Label::Ipv4(a),
                    $t::LabelValue::Ipv6((hi, lo)) => {
                        Label::Ipv6((u128::from(hi) << 64) | u128::from(lo))
                    }
                    $t::LabelValue::Device(d) => Label::Device(d),
                    $t::LabelValue::Number(n) => Label::Number(n),
                })
                .collect();
            let value = match u.value {
                $t::UpdateValue::CounterAdd(v) => Value::CounterAdd(v),
                $t::UpdateValue::GaugeSet((v, at)) => Value::GaugeSet(v, at),
                $t::UpdateValue::Histogram(h) => {
                    Value::Histogram { buckets: h.bucket_counts, sum: h.sum, count: h.count }
                }
            };
            crate::registry::Update { family: u.family, labels, value }
        }
    };
}
use wit_conversions;

/// The default analyzers, compiled from `guest-analyzers/` by the build script.
pub mod defaults {
    include!(concat!(env!("OUT_DIR"), "/default_analyzers.rs"));
}
