//! Stage: control (wiring).
//!
//! Input: the parsed command line. Output: a running pipeline — sources → batchers → workers
//! → registry → exporter (`host run`) or exposition text (`host replay`) — and the exit code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::batch::{Batcher, DEFAULT_MAX_AGE, FullQueue};
use crate::capture;
use crate::cli::{Cli, Command};
use crate::config::{self, Pipeline};
use crate::exporter::Exporter;
use crate::registry::{Devices, Families, Registry};
use crate::runtime::cache::Cache;
use crate::runtime::catalog::Catalog;
use crate::runtime::{Analyzer, Runtime, defaults, native};
use crate::telemetry::{Shared, Telemetry};
use crate::watch;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
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

fn core(p: &Pipeline) -> anyhow::Result<Core> {
    let cache = p.cache_dir.as_deref().and_then(Cache::open);
    let runtime =
        Arc::new(Runtime::new(p.limits.clone(), cache).context("starting the Wasm runtime")?);
    let registry = Arc::new(Registry::new(Arc::new(Devices::default()), p.series_cap));
    let telemetry = Arc::new(Telemetry::new().context("registering self-metrics")?);
    let shared = Shared { registry, telemetry };
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
    let mut analyzers = Vec::new();
    for (source, analyzer) in loaded {
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
    let core = core(p)?;
    let catalog = Catalog::start(p.workers, core.runtime, core.shared.clone(), core.analyzers)
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
    let mut batcher = Batcher::new(
        catalog.workers().queues(),
        p.batch_size,
        DEFAULT_MAX_AGE,
        FullQueue::Wait,
        t.packets_dropped.with_label_values(&["replay", "queue_full"]),
    );
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

fn live(cfg: config::Run) -> anyhow::Result<ExitCode> {
    let p = &cfg.pipeline;
    let core = core(p)?;
    let shared = core.shared.clone();
    let catalog = Arc::new(
        Catalog::start(p.workers, core.runtime, shared.clone(), core.analyzers)
            .context("starting worker threads")?,
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        // HTTP and signals only; the packet path never touches tokio.
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let listener = tokio
        .block_on(tokio::net::TcpListener::bind(cfg.listen))
        .with_context(|| format!("--listen {}: cannot listen there", cfg.listen))?;
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let mut rx = stop_rx.clone();
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let exporter =
            Exporter { shared: shared.clone(), ready: ready.clone(), catalog: catalog.clone() };
        tokio.spawn(exporter.serve(listener, shutdown))
    };
    tracing::info!(listen = %cfg.listen, "serving /metrics, /healthz, /readyz and /analyzers");
    let _watch = match &cfg.analyzer_dir {
        Some(dir) => Some(watch::watch(dir, catalog.clone())?),
        None => None,
    };

    let mut captures = Vec::new();
    for iface in &cfg.interfaces {
        let live = capture::Live::open(iface, cfg.snaplen, cfg.promisc, cfg.filter.as_deref())?;
        let dropped = shared.telemetry.packets_dropped.with_label_values(&[iface, "queue_full"]);
        let queues = catalog.workers().queues();
        let batcher = Batcher::new(queues, p.batch_size, DEFAULT_MAX_AGE, FullQueue::Drop, dropped);
        let devices = shared.registry.devices().clone();
        let handle = live
            .spawn(batcher, devices, shared.telemetry.clone())
            .with_context(|| format!("starting the capture thread for {iface}"))?;
        tracing::info!(iface, "capturing");
        captures.push(handle);
    }
    ready.store(true, Ordering::Release);

    let signal = tokio.block_on(shutdown_signal());
    tracing::info!("{signal}: shutting down");
    for c in captures {
        c.stop();
    }
    catalog.finish();
    let _ = stop_tx.send(true);
    match tokio.block_on(server) {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => bail!("HTTP server failed: {e}"),
        Err(e) => bail!("HTTP server task failed: {e}"),
    }
}

async fn shutdown_signal() -> &'static str {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupt",
        () = term => "terminate",
    }
}
