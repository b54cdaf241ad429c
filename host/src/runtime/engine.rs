//! Stage: analyzers (the engine).
//!
//! Inputs: `.wasm` component bytes (embedded defaults or user files) and the sandbox
//! [`Limits`].
//! Outputs: [`Analyzer`]s — validated, compiled components whose `init` has run once and whose
//! metric families are known — and, for each worker, instances of them ([`Session`]s).
//!
//! One wasmtime engine with epoch interruption, a thread that advances the epoch, and a
//! linker with one import, `host.log`: a component that asks for anything else (WASI
//! included) fails to load. Compiling runs on a thread of its own under a time budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::analyzer::{Analyzer, Backend, LoadError, sha256_hex};
use super::bindings::{
    self, ABI_VERSION, ALLOWED_IMPORTS, AnalyzerComponentPre, EARLIER_ABI_VERSIONS, EXPORT_NAME,
    PACKAGE_PREFIX,
};
use super::bounds::{self, COMPILE_BUDGET, EPOCH_TICK, Limits, MAX_COMPONENT_BYTES};
use super::cache;
use super::instance::{CallError, HostState, Instance, LogCounters, Session};
use crate::registry;

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
        let (name, version) = probe.name_and_version();
        bounds::check_info(&name, &version).map_err(LoadError::Bounds)?;
        // The count first: a declaration of 200 000 families is refused without copying it.
        registry::validate_count(probe.declared_families()).map_err(LoadError::Family)?;
        let families = probe.families();
        registry::validate(&families).map_err(LoadError::Family)?;
        let backend = Backend::Wasm(pre);
        Ok(Arc::new(Analyzer {
            name,
            version,
            source: source.to_owned(),
            sha256,
            families,
            backend,
            last_error: parking_lot::Mutex::default(),
        }))
    }

    /// Initializes a built-in analyzer as native code (benchmarks only; no sandbox).
    #[cfg(feature = "native-defaults")]
    pub fn load_native(&self, factory: super::native::Factory) -> Result<Arc<Analyzer>, LoadError> {
        let (name, version, families) =
            factory().init().map_err(|e| LoadError::Init(e.to_string()))?;
        registry::validate(&families).map_err(LoadError::Family)?;
        let source = format!("native:{name}");
        let sha256 = String::new();
        let backend = Backend::Native(factory);
        let last_error = parking_lot::Mutex::default();
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
            #[cfg(feature = "native-defaults")]
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
                return Err(if EARLIER_ABI_VERSIONS.contains(&found.as_str()) {
                    LoadError::EarlierVersion { found }
                } else {
                    LoadError::WrongVersion { found }
                });
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
