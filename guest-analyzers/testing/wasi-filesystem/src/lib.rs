//! The `wasi-filesystem` hostile test analyzer: reads a host file with `std::fs`.
//!
//! Input: batches. Output: `test_wasi_file_bytes{device}`, the size of [`TARGET_FILE`] as read
//! through WASI — if a host ever linked WASI. The host's build script builds this crate for
//! `wasm32-wasip2`, where std's file access becomes `wasi:filesystem` imports (beside
//! `wasi:io`, `wasi:cli`, …); the host links no WASI and must refuse it at load, naming the
//! import. (In the guest workspace's usual `wasm32-unknown-unknown` build `std::fs` is a stub
//! that always fails; that build is not used.) Not a default analyzer.

use wasmtap_sdk::{Analyzer, AnalyzerInfo, Batch, Config, Gauge, Updates};

/// A file an analyzer has no business reading.
pub const TARGET_FILE: &str = "/etc/passwd";

/// Reports the size of a host file.
pub struct WasiFilesystem {
    bytes: Gauge,
}

impl Analyzer for WasiFilesystem {
    fn init(_config: &Config) -> Result<(Self, AnalyzerInfo), String> {
        let mut info = AnalyzerInfo::new("wasi-filesystem", env!("CARGO_PKG_VERSION"));
        let bytes = info.gauge(
            "test_wasi_file_bytes",
            "Size of a host file read through WASI (test analyzer).",
            &["device"],
        );
        Ok((Self { bytes }, info))
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Updates) -> Result<(), String> {
        let size = std::fs::read(TARGET_FILE).map_err(|e| format!("{TARGET_FILE}: {e}"))?.len();
        if let Some(p) = batch.get(0) {
            out.set(self.bytes, &[p.device_label()], size as f64, p.time_ns());
        }
        Ok(())
    }
}

wasmtap_sdk::export_analyzer!(WasiFilesystem);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtap_sdk::Runner;

    #[test]
    fn init_declares_one_gauge() {
        let info = Runner::<WasiFilesystem>::new().init(Config::default()).expect("init");
        assert_eq!(info.name, "wasi-filesystem");
        assert_eq!(info.families[0].name, "test_wasi_file_bytes");
    }
}
