//! Stage: control (wiring).
//!
//! Input: the parsed command line. Output: a running pipeline — sources → batchers → workers
//! → registry → exporter (`host run`) or exposition text (`host replay`) — and the exit code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::batch::{Batcher, DEFAULT_MAX_AGE, FullQueue};
use crate::capture;
use crate::capture::live::Context as CaptureContext;
use crate::cli::{Cli, Command};
use crate::config::{self, Pipeline};
use crate::exporter::Exporter;
use crate::health::Health;
use crate::interfaces::{self, Links, Options, Supervisor};
use crate::registry::{Devices, Families, Policy, Registry};
use crate::runtime::cache::Cache;
use crate::runtime::catalog::Catalog;
use crate::runtime::worker::{Flush, LIVE_FLUSH};
use crate::runtime::{Analyzer, Runtime, defaults, native};
use crate::telemetry::{Shared, Telemetry};
use crate::watch;

/// How long the first listing of the network interfaces may take (it takes milliseconds).
const LINKS_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) if args.check_config => {
            let cfg = config::Run::from_args(args)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", cfg.summary()).context("writing to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => live(config::Run::from_args(args)?),
        Command::Replay(args) => replay(config::Replay::from_args(args)?),
        Command::Check(args) => {
            let mut out = std::io::stdout().lock();
            let outcome = crate::check::check(&args.analyzer, args.pcap.as_deref(), &mut out)?;
            Ok(if outcome.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// The runtime, the shared registry and the loaded analyzers.
struct Core {
    runtime: Arc<Runtime>,
    shared: Shared,
    analyzers: Vec<(Arc<Analyzer>, Families)>,
}

/// `policy` and `ttl` apply to the registry before any family registers.
fn core(p: &Pipeline, policy: &Policy, ttl: Option<Duration>) -> anyhow::Result<Core> {
    let cache = p.cache_dir.as_deref().and_then(Cache::open);
    let runtime =
        Arc::new(Runtime::new(p.limits.clone(), cache).context("starting the Wasm runtime")?);
    let registry = Arc::new(Registry::new(Arc::new(Devices::default()), p.series_cap));
    registry.set_limits(p.series_cap, ttl);
    // Before any family registers; what it says of them is logged once they have.
    registry.set_policy(policy.clone());
    let telemetry = Arc::new(Telemetry::new().context("registering self-metrics")?);
    let shared = Shared { registry, telemetry, health: Arc::new(Health::default()) };
    let mut loaded = Vec::new();
    if p.defaults && p.native_defaults {
        for (name, factory) in native::DEFAULTS {
            let a =
                runtime.load_native(*factory).with_context(|| format!("analyzer native:{name}"))?;
            loaded.push((format!("native:{name}"), a));
        }
    } else if p.defaults {
        for (name, bytes) in defaults::DEFAULT_ANALYZERS {
            let source = format!("builtin:{name}");
            let a = runtime.load(bytes, &source).with_context(|| format!("analyzer {source}"))?;
            loaded.push((source, a));
        }
    }
    for a in &p.analyzers {
        let analyzer =
            runtime.load(&a.bytes, &a.name).with_context(|| format!("analyzer {}", a.name))?;
        loaded.push((a.name.clone(), analyzer));
    }
    let mut analyzers: Vec<(Arc<Analyzer>, Families)> = Vec::new();
    for (source, analyzer) in loaded {
        // One name, one analyzer: its metrics, logs and failures are charged by name.
        if let Some((taken, _)) = analyzers.iter().find(|(a, _)| a.name == analyzer.name) {
            bail!(
                "analyzer {source}: its name {:?} is already taken by {}",
                analyzer.name,
                taken.source
            );
        }
        let families = shared
            .registry
            .register(&analyzer.name, &analyzer.families)
            .with_context(|| format!("analyzer {source} ({})", analyzer.name))?;
        tracing::info!(
            analyzer = %analyzer.name, version = %analyzer.version, source = %source,
            families = analyzer.families.len(), "loaded"
        );
        analyzers.push((analyzer, families));
    }
    Ok(Core { runtime, shared, analyzers })
}

fn replay(cfg: config::Replay) -> anyhow::Result<ExitCode> {
    let p = &cfg.pipeline;
    // A replay's series never expire: its output depends on the capture alone.
    let core = core(p, &Policy::new(), None)?;
    let catalog =
        Catalog::start(p.workers, core.runtime, core.shared.clone(), core.analyzers, Flush::Ticks)
            .context("starting worker threads")?;
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
    let t = &core.shared.telemetry;
    let mut failed = 0;
    let mut batcher =
        Batcher::new(catalog.workers().queues(), p.batch_size, DEFAULT_MAX_AGE, FullQueue::Wait);
    let devices = core.shared.registry.devices().clone();
    for path in &cfg.captures {
        let name = path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let received = t.packets_received.with_label_values(&[&name]);
        match capture::replay(path, &mut batcher, &devices, &received, &|n| bar.inc(n)) {
            Ok(n) => tracing::debug!(capture = %path.display(), packets = n, "replayed"),
            Err(e) => {
                bar.suspend(|| tracing::error!("{e}"));
                failed += 1;
            }
        }
    }
    drop(batcher);
    catalog.finish();
    bar.finish_and_clear();
    let text = core.shared.telemetry.exposition(&core.shared.registry, false);
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

fn live(mut cfg: config::Run) -> anyhow::Result<ExitCode> {
    let p = &cfg.pipeline;
    let core = core(p, &cfg.policy, cfg.series_ttl)?;
    for note in core.shared.registry.policy_notes() {
        tracing::warn!("{note}");
    }
    let shared = core.shared.clone();
    let catalog = Arc::new(
        Catalog::start(
            p.workers,
            core.runtime,
            shared.clone(),
            core.analyzers,
            Flush::Every(LIVE_FLUSH),
        )
        .context("starting worker threads")?,
    );
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
    match first_rx.recv_timeout(LINKS_TIMEOUT) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("cannot list the network interfaces: {e}"),
        Err(_) => bail!("listing the network interfaces took over {}s", LINKS_TIMEOUT.as_secs()),
    }
    let ctx = CaptureContext {
        links,
        devices: shared.registry.devices().clone(),
        telemetry: shared.telemetry.clone(),
        selection: Arc::new(cfg.selection.clone()),
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
    let supervisor = Supervisor::start(options, ctx, shared.health.clone(), batcher, changed_rx)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let mut rx = stop_rx.clone();
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let exporter = Exporter { shared: shared.clone(), catalog: catalog.clone() };
        tokio.spawn(exporter.serve(listener, shutdown))
    };
    let _watch = match &cfg.analyzer_dir {
        Some(dir) => Some(watch::watch(dir, catalog.clone())?),
        None => None,
    };
    tracing::info!(listen = %cfg.listen, "serving /metrics, /healthz, /readyz and /analyzers");
    shared.health.started();

    let expiry = Expiry::start(shared.registry.clone()).context("starting the expiry thread")?;
    let signal = loop {
        match tokio.block_on(signal()) {
            Signal::Reload => cfg = reload(cfg, &shared),
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

/// How often expired series are looked for: a series leaves within this after its TTL.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// How long an idle thread of the HTTP runtime's blocking pool stays: renders come in bursts.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Removes expired series on a thread of its own (it takes each family's lock in turn), so
/// the work neither waits on nor holds the HTTP runtime.
struct Expiry {
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Expiry {
    fn start(registry: Arc<Registry>) -> std::io::Result<Self> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new().name("expiry".into()).spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(EXPIRE_EVERY)
            {
                let n = registry.expire();
                if n > 0 {
                    tracing::debug!(series = n, "expired");
                }
            }
        })?;
        Ok(Self { stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the expiry thread panicked");
        }
    }
}

/// Applies what SIGHUP can change without a restart: the label policy, --series-cap and
/// --series-ttl from the configuration file (flags still win). Returns the configuration in
/// force; a file that fails to load changes nothing.
fn reload(cfg: config::Run, shared: &Shared) -> config::Run {
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
    shared.registry.set_limits(new.pipeline.series_cap, new.series_ttl);
    for note in shared.registry.set_policy(new.policy.clone()) {
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

enum Signal {
    Reload,
    Stop(&'static str),
}

async fn signal() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let wait = |kind| async move {
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Signal::Stop("interrupt"),
        () = wait(SignalKind::terminate()) => Signal::Stop("terminate"),
        () = wait(SignalKind::hangup()) => Signal::Reload,
    }
}
