//! Stage: control (command line).
//!
//! Input: the process arguments. Output: the raw, unchecked flags ([`Cli`]); `config` turns
//! them into a checked configuration. Every flag of the host is declared here and only here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// wasmtap: TCP/IP metrics for Prometheus, computed by sandboxed WebAssembly analyzers.
///
/// The host captures packets with libpcap (or reads capture files), decodes their TCP/IP
/// headers and feeds them in batches to analyzer components running under wasmtime. The
/// analyzers' metrics are served to Prometheus (`wasmtap run`) or printed (`wasmtap replay`).
#[derive(Debug, Parser)]
#[command(name = "wasmtap", version, propagate_version = true, max_term_width = 100)]
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
    /// Serves GET /metrics (Prometheus text format), /healthz, /readyz and /analyzers.
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
    /// Start an analyzer crate in a new folder: a Cargo.toml on the guest SDK (its own
    /// workspace), a src/lib.rs with one counter, one histogram and a native unit test, and a
    /// README. It builds as it is: `cd NAME && wasmtap build`.
    New(NewArgs),
    /// Build the analyzer crate in DIR as a component, with no tool besides Rust: `cargo build
    /// --release --target wasm32-unknown-unknown`, then the module wrapped as a component.
    ///
    /// Prints the component's path, TARGET/wasmtap/PACKAGE.wasm (TARGET is the crate's target
    /// folder, `target/` by default), for `wasmtap check` and `--analyzer`.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The analyzer's name: `[a-z][a-z0-9_-]*`, at most 64 bytes. It names the crate, the
    /// analyzer (unique among those a host loads) and, in snake case, its metrics.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The folder to create the crate in (it must not exist, or be empty). Default: ./NAME.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Where the guest SDK is: a path to the SDK crate (the guest-analyzers/sdk folder of a
    /// wasmtap clone), or `git+URL` / `git+URL#REV` for the wasmtap repository at a commit, tag
    /// or branch. Default: the SDK in the source tree this wasmtap was built from.
    #[arg(long, value_name = "SPEC")]
    pub sdk: Option<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The analyzer crate's folder (the one holding its Cargo.toml).
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The analyzer component to check.
    #[arg(value_name = "ANALYZER.wasm")]
    pub analyzer: PathBuf,

    /// Replay this capture instead of the built-in sample.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `wasmtap run`'s flags. Those that a configuration file can also set are `Option`s here, so
/// that `config` can tell a flag given (it wins) from one left out (the file's value, else the
/// default the help text names).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A TOML file with any of these settings under the flags' long names (`series-cap = 100`)
    /// and the label policy (`[labels.drop]`). Flags win over it. SIGHUP reloads the label
    /// policy, --series-cap and --series-ttl from it; other changes need a restart.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the flags and the configuration file, print the settings in force, and exit
    /// (0 if they are valid) without capturing.
    #[arg(long)]
    pub check_config: bool,

    /// Interface to capture on: a name or a glob pattern (`veth*`, `cali*`); repeat for
    /// several. Matching interfaces are followed as they come, go and come back; each is
    /// captured once, however many patterns match it. `any` is one capture of every interface
    /// (Linux), labelling each packet with the interface it was seen on. /readyz fails while
    /// an interface given by name (not pattern) is not captured. Default: any.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,

    /// Leave out interfaces matching this glob pattern (also from `any`); repeat for several.
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,

    /// BPF capture filter (tcpdump syntax), applied in the kernel, e.g. `tcp port 443`.
    #[arg(short = 'f', long = "filter", value_name = "BPF")]
    pub filter: Option<String>,

    /// Address to serve metrics on, HOST:PORT; the host may be a name (`localhost:9725`).
    /// 9725 avoids node_exporter (9100) and Prometheus (9090). Default: 0.0.0.0:9725.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Bytes captured per packet. The default holds Ethernet, VLAN tags, three tunnels of IPv6,
    /// UDP and VXLAN, and an inner IPv6 and TCP header with full options; payload is never
    /// needed. Default: 384.
    #[arg(long, value_name = "BYTES")]
    pub snaplen: Option<u32>,

    /// Put the interfaces into promiscuous mode.
    #[arg(long)]
    pub promisc: bool,

    /// Watch this directory for `.wasm` analyzers: new files are loaded, changed ones
    /// reloaded, removed ones unloaded, without a restart.
    #[arg(long, value_name = "DIR")]
    pub analyzer_dir: Option<PathBuf>,

    /// A series not updated for this long leaves /metrics and frees its place under
    /// --series-cap; a counter that comes back starts from 0. `0s` keeps series for ever.
    /// Default: 10m.
    #[arg(long, value_name = "DURATION")]
    pub series_ttl: Option<String>,

    /// The container runtime's CRI socket, read for the node's pods: per-pair series gain
    /// the namespace, workload and pod of each end, per-device series those of the pod behind
    /// the interface. Only the read calls ListPodSandbox and PodSandboxStatus are made.
    /// `none` turns attribution off. Default: the first of /run/containerd/containerd.sock,
    /// /run/crio/crio.sock and /run/cri-dockerd.sock that exists, else none.
    #[arg(long, value_name = "PATH", conflicts_with = "pods")]
    pub cri_socket: Option<String>,

    /// Attribute from a fixed pod table instead of the runtime: a file in the JSON of GET
    /// /pods.
    #[arg(long, value_name = "FILE")]
    pub pods: Option<PathBuf>,

    #[command(flatten)]
    pub analyzers: AnalyzerArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Capture files to read, in order (pcap or pcapng).
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,

    /// Write the exposition text to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Run the built-in analyzers as native code, outside the sandbox. For benchmarks that
    /// compare the Wasm pipeline with native; user analyzers still run in Wasm. Only in a
    /// build with the `native-defaults` feature.
    #[cfg(feature = "native-defaults")]
    #[arg(long, hide = true)]
    pub native_defaults: bool,

    /// Read, decode and batch the packets but run no analyzer: the capture stage alone, for
    /// measuring it. The output then has the host's self-metrics only.
    #[cfg_attr(
        feature = "native-defaults",
        arg(long, conflicts_with_all = ["native_defaults", "analyzers", "no_default_analyzers"])
    )]
    #[cfg_attr(
        not(feature = "native-defaults"),
        arg(long, conflicts_with_all = ["analyzers", "no_default_analyzers"])
    )]
    pub decode_only: bool,

    /// Attribute addresses and interfaces to pods from this file, the JSON of a node's GET
    /// /pods, as `wasmtap run` does live. Without it the output has no pod labels.
    #[arg(long, value_name = "FILE")]
    pub pods: Option<PathBuf>,

    /// Add the self-metrics that differ from run to run to the output, as `/metrics` has them:
    /// call durations and the CPU time of each packet thread (workers, capture). Without it
    /// the output depends on the captures alone.
    #[arg(long)]
    pub timings: bool,

    #[command(flatten)]
    pub analyzers: AnalyzerArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Analyzers")]
pub struct AnalyzerArgs {
    /// A WebAssembly analyzer component to load besides the built-in ones; repeat for several.
    #[arg(long = "analyzer", value_name = "PATH")]
    pub analyzers: Vec<PathBuf>,

    /// Do not load the built-in analyzers.
    #[arg(long)]
    pub no_default_analyzers: bool,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Directory for compiled analyzers, so later starts skip compilation.
    /// Default: $XDG_CACHE_HOME/wasmtap, else ~/.cache/wasmtap.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile analyzers afresh on every start; read and write no cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

/// The bounds analyzers run under: `run` and `replay` apply them, and `check` checks an
/// analyzer against them.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// CPU budget of one analyzer call, in milliseconds (epoch deadline). Default: 200.
    #[arg(long, value_name = "MS")]
    pub call_budget_ms: Option<u64>,

    /// Linear-memory cap of one analyzer instance, in MiB. Default: 64.
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<usize>,

    /// Series one metric family may hold; updates for new series beyond it are refused (and
    /// counted) until old series expire. Default: 10000.
    #[arg(long, value_name = "N")]
    pub series_cap: Option<usize>,

    /// Bytes of exposition, in MiB, that the series of one analyzer may take (default 32),
    /// estimated per series as its lines times their length; past it the analyzer's new series
    /// are refused and counted, as at the series cap.
    #[arg(long, value_name = "MIB")]
    pub exposition_budget_mib: Option<usize>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Pipeline")]
pub struct PipelineArgs {
    /// Worker threads running analyzers (each has its own instance of every analyzer).
    /// Default: one per core, less one for capture, at least one.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Packets per batch handed to the analyzers. Default: 1024.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// UDP port whose datagrams are opened as VXLAN, so that the analyzers see the TCP inside
    /// (repeat it, or separate ports with commas; at most 8). `none` opens no VXLAN. Geneve is
    /// always opened on 6081. Default: 4789,8472 (the standard port and the Linux kernel's,
    /// which flannel and Cilium use).
    #[arg(long = "vxlan-port", value_name = "PORT", value_delimiter = ',')]
    pub vxlan_ports: Vec<String>,
}
