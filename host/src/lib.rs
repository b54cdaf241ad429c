//! wasmtap: a TCP/IP metrics exporter whose analysis runs in sandboxed WebAssembly.
//!
//! ```text
//!  interfaces (libpcap, one thread each)  or  pcap/pcapng files      capture
//!         │ raw frames + link type
//!         ▼
//!  decode   etherparse (lax) → PacketMeta: fixed size, Copy           decode
//!         │ PacketMeta, flow id, direction
//!         ▼
//!  batch    packed records, flushed at N packets or T ms;             batch
//!           sharded by flow id onto worker queues
//!         │ &[u8]
//!         ▼
//!  analyzers  one wasmtime Store per analyzer per worker; epoch       runtime
//!             deadline, memory cap, no WASI; trap → restart/backoff/quarantine
//!         │ metric updates
//!         ▼
//!  registry   declared families, aggregation across workers,          registry
//!             series cap and expiry; the one exposition
//!         ▼
//!  exporter   tokio/axum: /metrics, /healthz, /readyz, /analyzers     exporter
//! ```
//!
//! Imports run one way, down this pipeline (capture → decode and batch; runtime → batch and
//! registry; exporter → registry and runtime), with control above it: `cli` declares the
//! flags, `config` checks them and `app` wires the stages together; `interfaces` follows the
//! kernel's links and attaches captures to the selected ones; `watch` follows the analyzer
//! directory; `cri` follows the node's pods through the container runtime; `check` is
//! `wasmtap check`, and `authoring` is `wasmtap new` and `wasmtap build`. `pods` is the
//! attribution table the registry reads when it applies an update: which pod of the node holds
//! an address or an interface. Below every stage, `telemetry` is where each stage registers
//! the self-metrics it decides (and the throttle for repeated warnings), and `health` collects
//! what `/healthz` and `/readyz` answer.

pub mod app;
pub mod authoring;
pub mod batch;
pub mod capture;
pub mod check;
pub mod cli;
pub mod config;
pub mod cri;
pub mod decode;
pub mod exporter;
pub mod health;
pub mod interfaces;
pub mod pods;
pub mod registry;
pub mod runtime;
pub mod telemetry;
pub mod watch;
