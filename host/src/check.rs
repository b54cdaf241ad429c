//! Stage: control (`wasmtap check`, the conformance check for analyzer authors).
//!
//! Input: one `.wasm` analyzer, a capture (the built-in sample unless `--pcap`) and the limits
//! it will run under (`--call-budget-ms`, `--memory-mib`, `--series-cap`, as for `run`).
//! Output: a report on stdout — the component's world, version and imports, its declared
//! families, then a replay: the metrics it produced, ns per packet, peak memory and any
//! failure — and a verdict. Every problem is reported with what to do about it.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::batch::{Batch, Batcher, DEFAULT_MAX_AGE, FullQueue};
use crate::capture::{self, CaptureMetrics};
use crate::config;
use crate::decode::VxlanPorts;
use crate::registry::{Devices, Registry, UpdateList};
use crate::runtime::instance::{CallError, LogCounters};
use crate::runtime::{ABI_VERSION, Runtime, Session, defaults};
use crate::telemetry::SelfMetrics;

/// The sample capture checked against when no `--pcap` is given: real IPv4 and IPv6 TCP
/// traffic with handshakes, bulk data and resets.
const SAMPLE: &[u8] = include_bytes!("../../examples/captures/sample.pcap");

/// Packets per batch in a check: small, so that even the sample capture makes a few dozen
/// calls and faults that appear only from a later call on (leaks, the Nth-batch panic) show.
const CHECK_BATCH_SIZE: usize = 8;

/// What `wasmtap check` found.
pub struct Outcome {
    pub passed: bool,
}

/// Checks `wasm` and writes the report to `out`.
pub fn check(cfg: &config::Check, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let (wasm, pcap) = (cfg.analyzer.as_path(), cfg.pcap.as_deref());
    let fail = |out: &mut dyn Write, what: &str, e: &dyn std::fmt::Display| {
        let _ = writeln!(out, "FAIL {what}: {e}");
        Ok(Outcome { passed: false })
    };
    let bytes = match std::fs::read(wasm) {
        Ok(b) => b,
        Err(e) => return fail(out, &format!("reading {}", wasm.display()), &e),
    };
    writeln!(out, "checking {} ({} bytes)", wasm.display(), bytes.len())?;
    let runtime = Runtime::new(cfg.limits.clone(), None)?;
    let analyzer = match runtime.load(&bytes, &wasm.display().to_string()) {
        Ok(a) => a,
        Err(e) => return fail(out, "loading", &e),
    };
    writeln!(
        out,
        "ok   component: world analyzer-component of wasmtap:analyzer@{ABI_VERSION}; imports only host.log"
    )?;
    writeln!(
        out,
        "ok   init: {} {} (sha256 {})",
        analyzer.name, analyzer.version, analyzer.sha256
    )?;

    // Its families must be valid and clear of the built-in analyzers' names.
    let registry = Registry::new(Arc::new(Devices::default()), cfg.series_cap);
    registry.set_exposition_budget(cfg.exposition_budget);
    let registry = Arc::new(registry);
    // Every built-in family counts, whatever the analyzer calls itself; so does the name. Only
    // a built-in's own component (the same bytes) is checked on its own.
    for (name, builtin) in defaults::DEFAULT_ANALYZERS {
        let a = runtime.load(builtin, name).with_context(|| format!("built-in analyzer {name}"))?;
        if a.sha256 == analyzer.sha256 {
            continue;
        }
        if a.name == analyzer.name {
            let taken = format!("{:?} is the name of a built-in analyzer", a.name);
            return fail(out, "analyzer name", &taken);
        }
        registry.register(&a.name, &a.families)?;
    }
    let families = match registry.register(&analyzer.name, &analyzer.families) {
        Ok(f) => f,
        Err(e) => return fail(out, "metric families", &e),
    };
    writeln!(out, "ok   {} metric families:", analyzer.families.len())?;
    for f in &analyzer.families {
        let labels = f.label_names.join(", ");
        let kind = f.kind.as_str();
        writeln!(out, "       {}{} {kind} [{labels}]", crate::registry::PREFIX, f.name)?;
    }

    let (capture, _tmp) = match pcap {
        Some(p) => (p.to_owned(), None),
        None => {
            // A private directory of our own, at a name nobody can guess or plant a link at
            // beforehand; the file keeps the sample's name, which labels its `device`.
            let dir = tempfile::Builder::new()
                .prefix("wasmtap-check-")
                .tempdir()
                .context("creating a temporary directory for the sample capture")?;
            let path = dir.path().join("sample.pcap");
            std::fs::write(&path, SAMPLE).context("writing the sample capture")?;
            (path, Some(dir))
        }
    };
    let mut session = match runtime.start(&analyzer, LogCounters::unused()) {
        Ok(s) => s,
        Err(e) => return fail(out, "instantiating", &e),
    };
    let (tx, rx) = crossbeam_channel::bounded::<Batch>(crate::batch::QUEUE_BATCHES);
    // Counted by the report itself; no self-metrics are shown.
    let unshown = SelfMetrics::default();
    let capture_metrics = CaptureMetrics::new(&unshown)?;
    let devices = registry.devices().clone();
    let report = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut batcher =
                Batcher::new(vec![tx], CHECK_BATCH_SIZE, DEFAULT_MAX_AGE, FullQueue::Wait);
            let vxlan = VxlanPorts::default();
            capture::replay(&capture, &mut batcher, &devices, &vxlan, &capture_metrics, &|_| {})
        });
        let report = run(session.as_mut(), &rx, &registry, &families);
        (reader.join(), report)
    });
    let (read, (packets, busy, failure)) = report;
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return fail(out, "reading the capture", &e),
        Err(_) => anyhow::bail!("the capture reader panicked"),
    }
    if let Some(e) = failure {
        return fail(out, "running", &format!("the analyzer {e} (after {packets} packets)"));
    }
    let ns = if packets == 0 { 0.0 } else { busy.as_nanos() as f64 / packets as f64 };
    writeln!(out, "ok   replayed {packets} packets: {ns:.0} ns/packet in the analyzer")?;
    if let Some(peak) = session.peak_memory() {
        let cap = cfg.limits.memory_bytes >> 20;
        writeln!(out, "ok   peak linear memory: {} KiB (cap {cap} MiB)", peak >> 10)?;
    }
    for (family, live, refused) in registry.series_counts() {
        if refused > 0 {
            // The registry refuses at the series cap, at the analyzer's exposition budget and
            // where a total would overflow; the series count tells the cap apart.
            let why = if live >= cfg.series_cap {
                format!(
                    "{family}: {refused} updates refused over the cap of {} \
                     series; keep label values to a bounded set (addresses, devices, small enums)",
                    cfg.series_cap
                )
            } else {
                format!(
                    "{family}: {refused} updates refused with {live} series: over the analyzer's \
                     exposition budget of {} MiB (keep names, labels and buckets short and few) \
                     or where a total would overflow",
                    registry.exposition_budget() >> 20
                )
            };
            return fail(out, "cardinality", &why);
        }
    }
    writeln!(out, "metrics produced:")?;
    // Only this analyzer ran, but the built-in families registered above show their
    // label-less series at 0: keep this analyzer's own.
    let text = registry.exposition(None, false);
    let own: Vec<String> = analyzer
        .families
        .iter()
        .map(|f| format!("{}{}", crate::registry::PREFIX, f.name))
        .collect();
    let is_own = |line: &str| {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        own.iter().any(|f| {
            name.strip_prefix(f.as_str())
                .is_some_and(|rest| matches!(rest, "" | "_bucket" | "_sum" | "_count"))
        })
    };
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && is_own(l)).collect();
    if samples.is_empty() {
        writeln!(out, "       (none for this capture)")?;
    }
    for l in samples {
        writeln!(out, "       {l}")?;
    }
    writeln!(out, "PASS")?;
    Ok(Outcome { passed: true })
}

/// Runs every batch through the session; returns packets, time inside the analyzer and the
/// first failure.
fn run(
    session: &mut dyn Session,
    rx: &crossbeam_channel::Receiver<Batch>,
    registry: &Registry,
    families: &crate::registry::Families,
) -> (u64, Duration, Option<String>) {
    let (mut packets, mut busy, mut last_ts) = (0u64, Duration::ZERO, 0u64);
    let mut updates = UpdateList::default();
    let apply =
        |updates: &UpdateList| registry.apply_list(families, updates).map_err(CallError::BadUpdate);
    for batch in rx {
        packets += batch.len() as u64;
        last_ts = last_ts.max(batch.max_ts());
        let t0 = Instant::now();
        let result = session.process(batch.bytes(), &mut updates);
        busy += t0.elapsed();
        if let Err(e) = result.and_then(|()| apply(&updates)) {
            return (packets, busy, Some(e.to_string()));
        }
    }
    let result = session.tick(last_ts, true, &mut updates);
    match result.and_then(|()| apply(&updates)) {
        Ok(()) => (packets, busy, None),
        Err(e) => (packets, busy, Some(e.to_string())),
    }
}
