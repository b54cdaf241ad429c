//! Stage: control (command line).
//!
//! Input: the process arguments. Output: the raw, unchecked flags ([`Cli`]); `config` turns
//! them into a checked configuration. Every flag of the host is declared here and only here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// wasmtap: TCP/IP metrics for Prometheus, computed by sandboxed WebAssembly analyzers.
///
/// The host captures packets with libpcap (or reads capture files), decodes their TCP/IP
/// headers and feeds them in batches to analyzer components running under wasmtime. The
/// analyzers' metrics are served to Prometheus (`host run`) or printed (`host replay`).
#[derive(Debug, Parser)]
#[command(name = "host", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log filter, e.g. `info`, `debug` or `host=debug,warn`. Logs go to stderr.
    #[arg(long, global = true, env = "WASMTAP_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture live from network interfaces and serve the metrics over HTTP.
    ///
    /// Serves GET /metrics (Prometheus text format), /healthz and /readyz.
    /// Capturing needs root, or the CAP_NET_RAW and CAP_NET_ADMIN capabilities.
    Run(RunArgs),
    /// Run capture files (pcap or pcapng) through the same pipeline and print the metrics.
    ///
    /// Prints the final exposition text, as /metrics would show it after the capture, to
    /// stdout or --output. Exits non-zero if any capture could not be read (the metrics of
    /// what was read are still printed).
    Replay(ReplayArgs),
    /// Check an analyzer component before deploying it: its world, WIT version and imports,
    /// its `init` and metric families, then a replay of a capture (a built-in sample by
    /// default) showing the metrics it produced, ns per packet, peak memory and any trap.
    ///
    /// Exits non-zero on any problem.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The analyzer component to check.
    #[arg(value_name = "ANALYZER.wasm")]
    pub analyzer: PathBuf,

    /// Replay this capture instead of the built-in sample.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Interface to capture on; repeat for several. `any` captures on all interfaces at once
    /// (Linux), labelling each packet with the interface it was seen on.
    #[arg(short = 'i', long = "interface", value_name = "IFACE", default_value = "any")]
    pub interfaces: Vec<String>,

    /// BPF capture filter (tcpdump syntax), applied in the kernel, e.g. `tcp port 443`.
    #[arg(short = 'f', long = "filter", value_name = "BPF")]
    pub filter: Option<String>,

    /// Address to serve metrics on. 9725 avoids node_exporter (9100) and Prometheus (9090).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9725")]
    pub listen: SocketAddr,

    /// Bytes captured per packet. The default holds Ethernet, VLAN tags, IPv6 with extension
    /// headers and TCP with options; payload is never needed.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub snaplen: u32,

    /// Put the interfaces into promiscuous mode.
    #[arg(long)]
    pub promisc: bool,

    /// Watch this directory for `.wasm` analyzers: new files are loaded, changed ones
    /// reloaded, removed ones unloaded, without a restart.
    #[arg(long, value_name = "DIR")]
    pub analyzer_dir: Option<PathBuf>,

    #[command(flatten)]
    pub analyzers: AnalyzerArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Capture files to read, in order (pcap or pcapng).
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,

    /// Write the exposition text to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Run the built-in analyzers as native code, outside the sandbox. For benchmarks that
    /// compare the Wasm pipeline with native; user analyzers still run in Wasm.
    #[arg(long, hide = true)]
    pub native_defaults: bool,

    #[command(flatten)]
    pub analyzers: AnalyzerArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Analyzers")]
pub struct AnalyzerArgs {
    /// A WebAssembly analyzer component to load besides the built-in ones; repeat for several.
    #[arg(long = "analyzer", value_name = "PATH")]
    pub analyzers: Vec<PathBuf>,

    /// Do not load the built-in analyzers.
    #[arg(long)]
    pub no_default_analyzers: bool,

    /// CPU budget of one analyzer call, in milliseconds (epoch deadline).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub call_budget_ms: u64,

    /// Linear-memory cap of one analyzer instance, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub memory_mib: usize,

    /// Directory for compiled analyzers, so later starts skip compilation.
    /// Default: $XDG_CACHE_HOME/wasmtap, else ~/.cache/wasmtap.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile analyzers afresh on every start; read and write no cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,

    /// Series one metric family may hold; updates for new series beyond it are refused.
    #[arg(long, value_name = "N", default_value_t = crate::registry::DEFAULT_SERIES_CAP)]
    pub series_cap: usize,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Pipeline")]
pub struct PipelineArgs {
    /// Worker threads running analyzers (each has its own instance of every analyzer).
    /// Default: one per core, less one for capture, at least one.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Packets per batch handed to the analyzers.
    #[arg(long, value_name = "N", default_value_t = crate::batch::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
}
