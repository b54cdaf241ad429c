//! Stage: control (wiring).
//!
//! Input: the parsed command line and, for `wasmtap run`, the control [`Signal`]s that the
//! caller (`main`: SIGHUP, SIGINT, SIGTERM) hands in. Output: a running pipeline — sources →
//! batchers → workers → registry → exporter (`wasmtap run`, until a stop signal) or
//! exposition text (`wasmtap replay`) — and the exit code.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::authoring;
use crate::batch::{Batcher, DEFAULT_MAX_AGE, FullQueue};
use crate::capture::links::Links;
use crate::capture::live::Context as CaptureContext;
use crate::capture::{self, CaptureMetrics};
use crate::cli::{Cli, Command};
use crate::config::{self, Pipeline, PodSource};
use crate::cri;
use crate::exporter::Exporter;
use crate::health::Health;
use crate::interfaces::{self, Options, Supervisor};
use crate::pods::{Attribution, Listing, Table};
use crate::registry::expiry::{Expiry, SeriesCounts};
use crate::registry::{Devices, Policy, Registry};
use crate::runtime::cache::Cache;
use crate::runtime::catalog::Catalog;
use crate::runtime::metrics::AnalyzerMetrics;
use crate::runtime::worker::{Flush, LIVE_FLUSH, Sinks};
use crate::runtime::{Analyzer, Runtime, defaults};
use crate::telemetry::SelfMetrics;
use crate::watch;

/// How long the first listing of the network interfaces may take (it takes milliseconds).
const LINKS_TIMEOUT: Duration = Duration::from_secs(10);

/// What `wasmtap run` is told while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Reload what can change without a restart (SIGHUP).
    Reload,
    /// Shut down; the name says why, for the log.
    Stop(&'static str),
}

/// Runs the command. `signals` gives the next control signal each time it is called; only
/// `run` waits on it, on the HTTP runtime.
pub fn run<F>(cli: Cli, signals: impl FnMut() -> F) -> anyhow::Result<ExitCode>
where
    F: Future<Output = Signal>,
{
    match cli.command {
        Command::Run(args) if args.check_config => {
            let cfg = config::Run::from_args(args)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", cfg.summary()).context("writing to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => live(config::Run::from_args(args)?, signals),
        Command::Replay(args) => replay(config::Replay::from_args(args)?),
        Command::Check(args) => {
            let cfg = config::Check::from_args(args)?;
            let mut out = std::io::stdout().lock();
            let outcome = crate::check::check(&cfg, &mut out)?;
            Ok(if outcome.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::New(args) => {
            let new = authoring::new::New::from_args(args)?;
            authoring::new::create(&new, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Build(args) => {
            let built = authoring::build::build(&args.dir)?;
            eprintln!(
                "wasmtap build: {} made a component ({} bytes); check it with `wasmtap check {}`",
                built.module.display(),
                built.bytes,
                built.component.display()
            );
            writeln!(std::io::stdout().lock(), "{}", built.component.display())
                .context("writing to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The runtime, the self-metrics, what the workers write to (the registry among it) and the
/// loaded analyzers.
struct Core {
    runtime: Arc<Runtime>,
    metrics: Arc<SelfMetrics>,
    sinks: Sinks,
    analyzers: Vec<(String, Arc<Analyzer>)>,
}

/// `policy`, `ttl` and the pod table apply to the registry before any family registers.
fn core(
    p: &Pipeline,
    policy: &Policy,
    ttl: Option<Duration>,
    attribution: Option<Arc<Attribution>>,
) -> anyhow::Result<Core> {
    let cache = p.cache_dir.as_deref().and_then(Cache::open);
    let runtime =
        Arc::new(Runtime::new(p.limits.clone(), cache).context("starting the Wasm runtime")?);
    let mut registry = Registry::with_limits(Arc::new(Devices::default()), p.series_cap, ttl);
    if let Some(a) = attribution {
        registry = registry.with_attribution(a);
    }
    registry.set_exposition_budget(p.exposition_budget);
    let registry = Arc::new(registry);
    // Before any family registers; what it says of them is logged once they have.
    registry.set_policy(policy.clone());
    let metrics = Arc::new(SelfMetrics::default());
    let series = SeriesCounts::new(registry.clone()).context("registering self-metrics")?;
    metrics.collector(Box::new(series)).context("registering self-metrics")?;
    let analyzer_metrics = AnalyzerMetrics::new(&metrics).context("registering self-metrics")?;
    let health = Arc::new(Health::default());
    let sinks = Sinks { registry, metrics: Arc::new(analyzer_metrics), health };
    let mut analyzers = Vec::new();
    #[cfg(feature = "native-defaults")]
    if p.defaults && p.native_defaults {
        for (name, factory) in crate::runtime::native::DEFAULTS {
            let a =
                runtime.load_native(*factory).with_context(|| format!("analyzer native:{name}"))?;
            analyzers.push((format!("native:{name}"), a));
        }
    }
    if p.defaults && !p.native_defaults {
        for (name, bytes) in defaults::DEFAULT_ANALYZERS {
            let source = format!("builtin:{name}");
            let a = runtime.load(bytes, &source).with_context(|| format!("analyzer {source}"))?;
            analyzers.push((source, a));
        }
    }
    for a in &p.analyzers {
        let analyzer =
            runtime.load(&a.bytes, &a.name).with_context(|| format!("analyzer {}", a.name))?;
        analyzers.push((a.name.clone(), analyzer));
    }
    Ok(Core { runtime, metrics, sinks, analyzers })
}

fn replay(cfg: config::Replay) -> anyhow::Result<ExitCode> {
    let p = &cfg.pipeline;
    // A replay's series never expire: its output depends on the capture alone.
    let attribution = cfg.pods.clone().map(|l| Arc::new(Attribution::new(Table::new(l))));
    let core = core(p, &Policy::new(), None, attribution)?;
    let registry = core.sinks.registry.clone();
    let catalog =
        Catalog::start(p.workers, core.runtime, core.sinks, core.analyzers, Flush::Ticks)?;
    let capture_metrics = CaptureMetrics::new(&core.metrics).context("registering self-metrics")?;
    let total: u64 =
        cfg.captures.iter().filter_map(|c| std::fs::metadata(c).ok()).map(|m| m.len()).sum();
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut failed = 0;
    let mut batcher =
        Batcher::new(catalog.workers().queues(), p.batch_size, DEFAULT_MAX_AGE, FullQueue::Wait);
    let devices = registry.devices().clone();
    let mut cpu = capture_metrics.cpu.clock("cap-replay");
    for path in &cfg.captures {
        let read =
            capture::replay(path, &mut batcher, &devices, &p.vxlan, &capture_metrics, &|n| {
                bar.inc(n)
            });
        match read {
            Ok(n) => tracing::debug!(capture = %path.display(), packets = n, "replayed"),
            Err(e) => {
                bar.suspend(|| tracing::error!("{e}"));
                failed += 1;
            }
        }
    }
    drop(batcher);
    cpu.update();
    catalog.finish();
    bar.finish_and_clear();
    let text = registry.exposition(Some(&core.metrics), cfg.timings);
    match &cfg.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("writing to stdout")?;
        }
    }
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} captures could not be read completely",
            cfg.captures.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn live<F>(mut cfg: config::Run, mut signals: impl FnMut() -> F) -> anyhow::Result<ExitCode>
where
    F: Future<Output = Signal>,
{
    let p = &cfg.pipeline;
    let attribution = match &cfg.pods {
        PodSource::Off(why) => {
            tracing::info!("pods are not attributed: {why}");
            None
        }
        PodSource::Cri(socket) => {
            let source = format!("cri:{}", socket.display());
            let listing = Listing { source, ..Listing::default() };
            Some(Arc::new(Attribution::new(Table::new(listing))))
        }
        PodSource::File(listing) => Some(Arc::new(Attribution::new(Table::new(listing.clone())))),
    };
    let core = core(p, &cfg.policy, cfg.series_ttl, attribution.clone())?;
    let (registry, metrics, health) =
        (core.sinks.registry.clone(), core.metrics.clone(), core.sinks.health.clone());
    let flush = Flush::Every(LIVE_FLUSH);
    let catalog =
        Arc::new(Catalog::start(p.workers, core.runtime, core.sinks, core.analyzers, flush)?);
    for note in registry.policy_notes() {
        tracing::warn!("{note}");
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        // HTTP, link events and signals only; the packet path never touches tokio.
        .worker_threads(1)
        // Threads for blocking work (renders) go after a second idle rather than ten.
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let listener = tokio
        .block_on(tokio::net::TcpListener::bind(cfg.listen))
        .with_context(|| format!("--listen {}: cannot listen there", cfg.listen))?;

    // The interface table first: capture threads label packets from it.
    let links = Arc::new(Links::default());
    let (changed_tx, changed_rx) = crossbeam_channel::bounded(1);
    let (first_tx, first_rx) = crossbeam_channel::bounded(1);
    tokio.spawn(interfaces::follow(links.clone(), changed_tx, first_tx));
    if let Some(attribution) = &attribution {
        let pod_metrics = cri::Metrics::register(&metrics).context("registering self-metrics")?;
        match &cfg.pods {
            PodSource::Cri(socket) => {
                tracing::info!(socket = %socket.display(), "attributing pods from the container runtime");
                tokio.spawn(cri::follow(socket.clone(), attribution.clone(), pod_metrics));
            }
            PodSource::File(listing) => {
                pod_metrics.fixed(listing.pods.len());
                tracing::info!(
                    pods = listing.pods.len(),
                    "attributing pods from {}",
                    listing.source
                );
            }
            PodSource::Off(_) => {}
        }
    }
    match first_rx.recv_timeout(LINKS_TIMEOUT) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("cannot list the network interfaces: {e}"),
        Err(_) => bail!("listing the network interfaces took over {}s", LINKS_TIMEOUT.as_secs()),
    }
    let ctx = CaptureContext {
        links,
        devices: registry.devices().clone(),
        metrics: Arc::new(CaptureMetrics::new(&metrics).context("registering self-metrics")?),
        selection: Arc::new(cfg.selection.clone()),
        vxlan: p.vxlan,
    };
    let options = Options {
        snaplen: cfg.snaplen,
        promisc: cfg.promisc,
        filter: cfg.filter.clone(),
        forget_after: cfg.series_ttl,
    };
    let batcher = {
        let (catalog, batch_size) = (catalog.clone(), p.batch_size);
        Box::new(move || {
            Batcher::new(catalog.workers().queues(), batch_size, DEFAULT_MAX_AGE, FullQueue::Drop)
        })
    };
    let supervisor =
        Supervisor::start(options, ctx, health.clone(), &metrics, batcher, changed_rx)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let mut rx = stop_rx.clone();
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let exporter = Exporter {
            registry: registry.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            catalog: catalog.clone(),
        };
        tokio.spawn(exporter.serve(listener, shutdown))
    };
    let _watch = match &cfg.analyzer_dir {
        Some(dir) => Some(watch::watch(dir, catalog.clone())?),
        None => None,
    };
    tracing::info!(listen = %cfg.listen, "serving /metrics, /healthz, /readyz and /analyzers");
    health.started();

    let expiry = Expiry::start(registry.clone()).context("starting the expiry thread")?;
    let signal = loop {
        match tokio.block_on(signals()) {
            Signal::Reload => cfg = reload(cfg, &registry),
            Signal::Stop(name) => break name,
        }
    };
    tracing::info!("{signal}: shutting down");
    expiry.stop();
    supervisor.stop();
    catalog.finish();
    let _ = stop_tx.send(true);
    match tokio.block_on(server) {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => bail!("HTTP server failed: {e}"),
        Err(e) => bail!("HTTP server task failed: {e}"),
    }
}

/// How long an idle thread of the HTTP runtime's blocking pool stays: renders come in bursts.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Applies what SIGHUP can change without a restart: the label policy, --series-cap,
/// --exposition-budget-mib and --series-ttl from the configuration file (flags still win). Returns the configuration in
/// force; a file that fails to load changes nothing.
fn reload(cfg: config::Run, registry: &Registry) -> config::Run {
    let Some(path) = cfg.args.config.clone() else {
        tracing::info!("SIGHUP: no --config file to reload; nothing changed");
        return cfg;
    };
    let new = match config::Run::from_args(cfg.args.clone()) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!("SIGHUP: {e:#}; keeping the configuration in force");
            return cfg;
        }
    };
    registry.set_limits(new.pipeline.series_cap, new.series_ttl);
    registry.set_exposition_budget(new.pipeline.exposition_budget);
    for note in registry.set_policy(new.policy.clone()) {
        tracing::warn!("{note}");
    }
    let ignored = cfg.restart_needed(&new);
    tracing::info!(
        config = %path.display(), series_cap = new.pipeline.series_cap,
        series_ttl = ?new.series_ttl, "SIGHUP: label policy and series limits reloaded"
    );
    if !ignored.is_empty() {
        tracing::warn!("SIGHUP: changes to {} take effect on restart", ignored.join(", "));
    }
    // Only the reloaded settings are in force; keep the rest as started.
    config::Run { series_ttl: new.series_ttl, policy: new.policy, ..cfg }
}
