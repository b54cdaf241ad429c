//! # wasmtap-sdk: writing a wasmtap analyzer
//!
//! An analyzer is a WebAssembly component that the wasmtap host feeds batches of decoded packet
//! headers; it answers with metric updates. This crate turns a plain Rust type into such a
//! component and lets the same crate build and test natively.
//!
//! Inputs: the calls of the `wasmtap:analyzer/analyzer@0.2.0` interface (`wit/analyzer.wit`).
//! Outputs: the analyzer's declared metric families and, per call, at most one update per series.
//!
//! ## 1. Implement [`Analyzer`]
//!
//! ```
//! use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Counter, Updates};
//!
//! pub struct Resets {
//!     resets: Counter,
//! }
//!
//! impl Analyzer for Resets {
//!     fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
//!         // Declare the families; the host adds the `wasmtap_` prefix.
//!         let mut info = AnalyzerInfo::new("resets", env!("CARGO_PKG_VERSION"));
//!         let resets = info.counter("tcp_resets_total", "TCP segments with RST set.", &["device"]);
//!         Ok((Resets { resets }, info))
//!     }
//!
//!     fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
//!         for p in batch {
//!             if p.has_tcp() && p.rst() {
//!                 out.inc(self.resets, &[p.device_label()]);
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! // In the analyzer crate: wasmtap_sdk::export_analyzer!(Resets);
//! ```
//!
//! ## 2. The batch view
//!
//! [`Batch`] checks the header of the packed record buffer; iterating it yields [`Packet`]s whose
//! accessors (`time_ns`, `flow_id`, `src_ip`, `src_port`, `syn`, `wscale`, `payload_len`, …) read
//! the little-endian record in place. [`Packet::src_label`], [`Packet::dst_label`] and
//! [`Packet::device_label`] give ready-made [`Label`]s.
//!
//! The record is layout version 1: the [`RECORD_LEN`] (96) bytes documented on `process` in
//! `wit/analyzer.wit`, at offsets [`offset`], in records of the batch's stride (at least 96;
//! readers skip what follows). In a batch that holds a tunnelled packet the host writes stride
//! [`EXTENDED_LEN`] (136): bytes 96..136 are the **tunnel extension** ([`tunnel_offset`]); a
//! batch without one keeps stride 96. When the host opens a tunnel (VXLAN, Geneve,
//! GRE, IPv4 or IPv6 in IP), every layout-1 field (addresses, ports, flags, IP and payload
//! lengths, TTL, …) describes the innermost packet, except the frame length
//! ([`Packet::wire_len`]), which stays the captured frame's; the flow id covers the tunnels'
//! kinds and outer addresses too (not the VNI, which Cilium sets per direction), so the same
//! inner addresses between other nodes are another flow. [`Packet::tunnel`] reads
//! the extension: the outermost tunnel's [`TunnelKind`] (an unknown code is carried, not
//! refused), its VNI or GRE key, the number of tunnel headers opened, and the outer addresses.
//! It is `None` for a packet that came through no tunnel, and for every packet of a batch whose
//! stride is below 136 (no tunnelled packet in it). An analyzer that ignores it
//! reads layout 1 alone, as before.
//!
//! ```
//! use wasmtap_sdk::{Batch, Label, TunnelKind, Updates};
//!
//! /// Per VXLAN VNI, the bytes of the frames that carried it.
//! fn vxlan_bytes(batch: &Batch<'_>, bytes: wasmtap_sdk::Counter, out: &mut Updates) {
//!     for p in batch {
//!         if let Some(t) = p.tunnel()
//!             && t.kind() == TunnelKind::Vxlan
//!             && let Some(vni) = t.id()
//!         {
//!             out.add(bytes, &[Label::Number(i64::from(vni))], f64::from(p.wire_len()));
//!         }
//!     }
//! }
//! ```
//!
//! ## 3. Emitting metrics
//!
//! [`Updates`] aggregates per series: [`Updates::inc`]/[`Updates::add`] sum counter adds,
//! [`Updates::observe`] bins histogram observations ([`Updates::observe_binned`] merges bins the
//! analyzer counted itself), [`Updates::set`] keeps the gauge value with the latest packet time.
//! Repeated series cost a hash lookup and no allocation. By default the updates go to the host at
//! the end of every call; an analyzer with [`Analyzer::HOLD_UPDATES`] lets the [`Runner`] hold
//! them over several batches while the host allows it, so a busy one costs less per packet.
//! An analyzer that updates several families with the same labels per packet can instead count
//! in its own [`LabelMap`] (one lookup per packet) and emit from [`Analyzer::flush`], which the
//! runner calls whenever it returns the updates.
//!
//! ## 4. Building
//!
//! `wasmtap new my-analyzer` starts a crate that builds as it is: `crate-type = ["cdylib",
//! "rlib"]`, its own workspace, this SDK as its one dependency (by path into a clone of the
//! repository, or `--sdk git+URL#REV`), a counter and a histogram, a native unit test, and a
//! README. The crate ends with `wasmtap_sdk::export_analyzer!(MyAnalyzer);`. In its folder,
//! `wasmtap build` runs `cargo build --release --target wasm32-unknown-unknown` and wraps the
//! module as a component with the `wit-component` crate (as the host's build script does for
//! the bundled analyzers), so no other tool is needed; it prints the component's path,
//! `target/wasmtap/my-analyzer.wasm`. Target `wasm32-unknown-unknown`, not `wasm32-wasip2`:
//! the latter pulls WASI imports in, and the host links none. Natively, `cargo test` runs the
//! analyzer against bytes from [`BatchBuilder`], through a [`Runner`] that behaves as the host
//! does.
//!
//! ```text
//! rustup target add wasm32-unknown-unknown   # once
//! wasmtap new my-analyzer && cd my-analyzer
//! cargo test
//! wasmtap build                              # prints target/wasmtap/my-analyzer.wasm
//! ```
//!
//! ## 5. Checking and loading
//!
//! `wasmtap check my-analyzer.wasm` is the conformance check: it validates the component (world,
//! WIT version, imports), runs `init`, checks the declared families, replays a sample capture
//! and prints the metrics produced, ns per packet and peak memory. It ends with `PASS`, or exits
//! non-zero with what to fix. Then load the analyzer with `wasmtap run --analyzer my-analyzer.wasm`
//! (or `wasmtap replay CAPTURE --analyzer …`), or drop it into the folder of
//! `wasmtap run --analyzer-dir DIR`, which loads, reloads and unloads analyzers without a restart.
//!
//! ## A worked example
//!
//! `examples/syn-no-answer` in the repository is a complete analyzer written the way a user
//! would write one: a crate of its own that depends on this SDK, counting failed TCP connection
//! attempts per destination. It keeps per-connection state in a bounded table expired in packet
//! time from [`Analyzer::tick`], keeps its label values bounded, unit-tests itself with
//! [`BatchBuilder`] and [`Runner`], and its README has the exact build and check commands.

extern crate self as wasmtap_sdk;

mod batch;
mod builder;
mod family;
pub mod packed;
mod runner;
mod updates;

pub use batch::{Batch, BatchError, Direction, Packet, Packets, Tunnel, TunnelKind};
pub use builder::BatchBuilder;
pub use family::{AnalyzerInfo, Counter, Gauge, Histogram, Label, MAX_LABELS};
pub use runner::{HOLD_MAX_SERIES, Runner};
pub use updates::{LabelMap, Updates};
// The batch layout and the record's fields, from the crate the host writes batches with.
pub use wasmtap_record::{
    EXTENDED_LEN, HEADER_FLAGS, HEADER_LEN, LAYOUT_VERSION, PacketFields, RECORD_LEN, TUNNEL_LEN,
    TunnelFields, header_flags, offset, packet_bits, tcp_flags, tcp_options, tunnel_bits,
    tunnel_kind, tunnel_offset,
};

/// Bindings generated from the WIT contract (`wit/analyzer.wit`, world `analyzer-component`).
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "analyzer-component",
        pub_export_macro: true,
        export_macro_name: "__export_component",
        default_bindings_module: "wasmtap_sdk::bindings",
        runtime_path: "wasmtap_sdk::__private::wit_bindgen::rt",
        additional_derives: [PartialEq, Clone],
        // `metric-update` and what it holds describe the packed bytes `process` returns; no
        // function takes them, and analyzer tests read updates back into them.
        generate_unused_types: true,
    });
}

/// The WIT types (`metric-update`, `label-value`, `log-level`, …) as generated.
pub use bindings::wasmtap::analyzer::types as wit;
/// Severity of a [`log`] line.
pub use wit::LogLevel;

/// The logic of one analyzer. One instance lives per component instance (per host worker).
pub trait Analyzer: Sized + 'static {
    /// Whether the runner may hold this analyzer's updates over several batches while the host
    /// allows it (the batch header's `hold` flag): far fewer updates cross into the host, so
    /// a busy analyzer costs less per packet, but a failed call then loses every update held
    /// since the last one returned (up to a second of packet time), not only its own. Off by
    /// default; the built-in analyzers turn it on.
    const HOLD_UPDATES: bool = false;

    /// Called once before any packet: builds the analyzer and declares its metric families.
    fn init(config: &Config) -> Result<(Self, AnalyzerInfo), String>;

    /// Analyzes one batch, emitting updates into `out`. An error fails the whole call (the
    /// updates emitted so far are dropped).
    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String>;

    /// Called as packet time advances (at least once per second of packet time) and once with
    /// `end_of_capture` at the end of a replay: expire idle state here. Does nothing by default.
    fn tick(&mut self, now_ns: u64, end_of_capture: bool, out: &mut Updates) -> Result<(), String> {
        let _ = (now_ns, end_of_capture, out);
        Ok(())
    }

    /// Emits what the analyzer aggregated itself since its last flush (in a [`LabelMap`], say).
    /// The runner calls it whenever it hands the updates to the host: after every `tick`, and
    /// after every `process` call whose updates it does not hold. Such state is the analyzer's
    /// own: a failed call does not discard it, so it must stay bounded in between (emit into
    /// `out` from `process` when it grows large). Does nothing by default.
    fn flush(&mut self, out: &mut Updates) -> Result<(), String> {
        let _ = out;
        Ok(())
    }
}

/// Key/value settings from the host's configuration, handed to [`Analyzer::init`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// A config with these entries.
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Self { entries }
    }

    /// The value of the first entry named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// All entries, in the host's order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}

impl From<wit::Config> for Config {
    fn from(c: wit::Config) -> Self {
        Self::new(c.entries)
    }
}

/// Writes a line to the host's log (rate-limited there). Natively, writes to stderr.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::wasmtap::analyzer::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Exports an [`Analyzer`] as the component's `wasmtap:analyzer/analyzer@0.2.0` implementation.
///
/// Use it once, at the root of the analyzer crate: `wasmtap_sdk::export_analyzer!(MyAnalyzer);`.
/// It expands to nothing when not compiling for `wasm32`, so the crate also builds natively.
#[macro_export]
macro_rules! export_analyzer {
    ($analyzer:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            struct WasmtapAnalyzerExport;

            ::std::thread_local! {
                static RUNNER: ::core::cell::RefCell<$crate::Runner<$analyzer>> =
                    const { ::core::cell::RefCell::new($crate::Runner::new()) };
            }

            impl $crate::bindings::exports::wasmtap::analyzer::analyzer::Guest for WasmtapAnalyzerExport {
                fn init(config: $crate::wit::Config) -> ::core::result::Result<$crate::wit::AnalyzerInfo, ::std::string::String> {
                    $crate::__private::install_panic_hook();
                    RUNNER.with_borrow_mut(|r| r.init(config.into()))
                }

                fn process(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    RUNNER.with_borrow_mut(|r| r.process_packed(&batch))
                }

                fn tick(
                    now_ns: u64,
                    end_of_capture: bool,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    RUNNER.with_borrow_mut(|r| r.tick_packed(now_ns, end_of_capture))
                }
            }

            $crate::bindings::__export_component!(WasmtapAnalyzerExport with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    //! Re-exports for the generated bindings and [`crate::export_analyzer!`]; not an API.
    pub use wit_bindgen;

    /// Sends panic messages to the host's log before the trap: on `wasm32-unknown-unknown` a
    /// panic is otherwise a bare `unreachable` with no message.
    #[cfg(target_arch = "wasm32")]
    pub fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log(crate::LogLevel::Error, &format!("analyzer panicked: {info}"));
            }));
        });
    }
}
