//! Stage: control (configuration file).
//!
//! Input: a TOML file given with `wasmtap run --config FILE`.
//! Output: a [`File`]: every `wasmtap run` setting it names, under the flag's long name, and the
//! label policy; or a [`FileError`] naming the file, the key and what is wrong. `config` puts
//! the flags over it (a flag wins) and checks the result like flags.
//!
//! ```toml
//! interface = ["veth*", "cali*"]
//! exclude = ["lxc_health"]
//! listen = "0.0.0.0:9725"
//! series-cap = 10000
//! series-ttl = "10m"
//!
//! [labels.drop]
//! # Per family (with or without the wasmtap_ prefix): labels to drop. Series that differ
//! # only in them are added up.
//! tcp_resets_total = ["dst_ip"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The largest configuration file read: far beyond any real one, and small enough that a
/// wrong path (a capture, a log) fails fast instead of being parsed.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// What a configuration file can say: the `wasmtap run` flags, by their long names.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct File {
    pub interface: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub filter: Option<String>,
    pub listen: Option<String>,
    pub snaplen: Option<u32>,
    pub promisc: Option<bool>,
    pub analyzer_dir: Option<PathBuf>,
    pub analyzer: Option<Vec<PathBuf>>,
    pub no_default_analyzers: Option<bool>,
    pub call_budget_ms: Option<u64>,
    pub memory_mib: Option<usize>,
    pub cache_dir: Option<PathBuf>,
    pub no_cache: Option<bool>,
    pub series_cap: Option<usize>,
    pub exposition_budget_mib: Option<usize>,
    pub series_ttl: Option<String>,
    pub cri_socket: Option<String>,
    pub pods: Option<PathBuf>,
    pub workers: Option<usize>,
    pub batch_size: Option<usize>,
    pub vxlan_port: Option<Vec<u16>>,
    #[serde(default)]
    pub labels: Labels,
}

/// The `[labels]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    /// Family name → label names to drop from it.
    #[serde(default)]
    pub drop: BTreeMap<String, Vec<String>>,
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    // `reason`, not `source`: see `ConfigError::AnalyzerFile`.
    #[error("--config {}: {reason}", path.display())]
    Read { path: PathBuf, reason: std::io::Error },
    #[error("--config {}: larger than {MAX_FILE_BYTES} bytes; is it the right file?", path.display())]
    TooLarge { path: PathBuf },
    #[error("--config {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

impl File {
    /// Reads and parses `path`. Unknown keys and values of the wrong type are errors that
    /// name the key.
    pub fn read(path: &Path) -> Result<File, FileError> {
        let read_err = |reason| FileError::Read { path: path.to_owned(), reason };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(FileError::TooLarge { path: path.to_owned() });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::parse(&text).map_err(|reason| FileError::Parse { path: path.to_owned(), reason })
    }

    fn parse(text: &str) -> Result<File, String> {
        // toml's message names the key and its line: "unknown field `x`, expected one of …".
        toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_and_flags_use_their_long_names() {
        let f = File::parse(
            r#"
            interface = ["veth*"]
            exclude = ["lxc_health"]
            filter = "tcp"
            listen = "localhost:9725"
            snaplen = 128
            promisc = true
            analyzer-dir = "/a"
            analyzer = ["/x.wasm"]
            no-default-analyzers = false
            call-budget-ms = 100
            memory-mib = 32
            cache-dir = "/c"
            no-cache = true
            series-cap = 100
            series-ttl = "3s"
            workers = 2
            batch-size = 64
            [labels.drop]
            tcp_resets_total = ["dst_ip"]
            "#,
        )
        .unwrap();
        assert_eq!(f.interface, Some(vec!["veth*".to_owned()]));
        assert_eq!(f.series_ttl.as_deref(), Some("3s"));
        assert_eq!(f.labels.drop["tcp_resets_total"], vec!["dst_ip".to_owned()]);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = File::parse("series-cap = 1\nserie-ttl = \"1s\"\n").unwrap_err();
        assert!(e.contains("serie-ttl"), "{e}");
        let e = File::parse("[labels]\nkeep = {}\n").unwrap_err();
        assert!(e.contains("keep"), "{e}");
    }

    #[test]
    fn a_wrong_type_is_named() {
        let e = File::parse("series-cap = \"many\"\n").unwrap_err();
        assert!(e.contains("series-cap"), "{e}");
    }
}
