//! `wasmtap new NAME`: a ready analyzer crate.
//!
//! Input: the analyzer's name, the folder to create (default `./NAME`) and where the guest
//! SDK is (`--sdk`: a path to the SDK crate, or `git+URL[#REV]`; by default the SDK in the
//! source tree this binary was built from). Output: a crate that builds as it is — a
//! `Cargo.toml` that is its own workspace and depends on the SDK, a `src/lib.rs` with one
//! counter, one histogram and a native unit test, a `README.md` and a `.gitignore` — from the
//! templates in `template/`; or a [`NewError`] naming what is wrong.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::NewArgs;
use crate::runtime::bounds;
use crate::runtime::defaults::DEFAULT_ANALYZERS;

/// Where the guest SDK is in the source tree this binary was built from.
const BUILT_FROM_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-analyzers/sdk");

/// The SDK's package name, which a path given to `--sdk` must hold.
const SDK_PACKAGE: &str = "wasmtap-sdk";

/// The prefix of a `--sdk` that names a git repository rather than a path.
const GIT_PREFIX: &str = "git+";

/// The files of a new crate: (path in the crate, template).
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("template/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("template/lib.rs.tmpl")),
    ("README.md", include_str!("template/README.md.tmpl")),
    (".gitignore", include_str!("template/gitignore.tmpl")),
];

/// Names a crate cannot have: Rust's keywords (a library is named after its package) and the
/// crates of the standard library.
const RESERVED_CRATE_NAMES: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// Type names the template's code uses (from the SDK, std's prelude and its tests): the
/// analyzer's type gets an `Analyzer` suffix rather than one of these names.
const TAKEN_TYPE_NAMES: &[&str] = &[
    "Analyzer",
    "AnalyzerInfo",
    "Batch",
    "BatchBuilder",
    "Box",
    "Config",
    "Counter",
    "Err",
    "Histogram",
    "Ipv4Addr",
    "None",
    "Ok",
    "Option",
    "PacketFields",
    "Result",
    "Runner",
    "Some",
    "String",
    "UpdateValue",
    "Updates",
    "Vec",
];

/// Where the new crate's SDK dependency points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// A folder holding the SDK crate (`guest-analyzers/sdk` of a wasmtap clone).
    Path(PathBuf),
    /// A git repository holding the SDK (cargo finds the crate in it by name), at `rev` if
    /// given (a commit, tag or branch).
    Git { url: String, rev: Option<String> },
}

/// Why `wasmtap new` made nothing.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error(
        "analyzer name {0:?} is not valid: an analyzer's name is [a-z][a-z0-9_-]* of at most \
         {max} bytes (it names the crate, the analyzer and the prefix of its metrics)",
        max = bounds::MAX_NAME
    )]
    BadName(String),
    #[error(
        "analyzer name {0:?} is reserved: Rust keywords and the standard library's crates \
         cannot name a crate"
    )]
    ReservedCrate(String),
    #[error(
        "analyzer name {0:?} is taken by a built-in analyzer: an analyzer's name is unique among \
         those a host loads"
    )]
    Builtin(String),
    #[error("{} exists and is not an empty folder: choose another NAME or --dir", .0.display())]
    NotEmpty(PathBuf),
    #[error(
        "the guest SDK this wasmtap was built from is not at {}: pass --sdk PATH (the \
         guest-analyzers/sdk folder of a wasmtap clone) or --sdk git+URL#REV (the wasmtap \
         repository, at a commit or tag)",
        .0.display()
    )]
    NoSdk(PathBuf),
    #[error("--sdk {spec}: {why}")]
    BadSdk { spec: String, why: String },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// A checked `wasmtap new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct New {
    pub name: String,
    pub dir: PathBuf,
    pub sdk: Sdk,
}

impl New {
    /// Checks the name and resolves where the crate goes and where the SDK is.
    pub fn from_args(a: NewArgs) -> Result<Self, NewError> {
        check_name(&a.name)?;
        let dir = a.dir.unwrap_or_else(|| PathBuf::from(&a.name));
        let sdk = match a.sdk {
            Some(spec) => parse_sdk(&spec)?,
            None => {
                let path = Path::new(BUILT_FROM_SDK);
                if !path.join("Cargo.toml").is_file() {
                    return Err(NewError::NoSdk(path.to_path_buf()));
                }
                sdk_path(path, BUILT_FROM_SDK)?
            }
        };
        Ok(Self { name: a.name, dir, sdk })
    }
}

/// Checks that `name` can name the analyzer (as the host checks it at load), its crate and,
/// in snake case, its metrics.
pub fn check_name(name: &str) -> Result<(), NewError> {
    if bounds::check_info(name, "0.1.0").is_err() {
        return Err(NewError::BadName(name.to_owned()));
    }
    if RESERVED_CRATE_NAMES.contains(&snake(name).as_str()) {
        return Err(NewError::ReservedCrate(name.to_owned()));
    }
    if DEFAULT_ANALYZERS.iter().any(|(builtin, _)| *builtin == name) {
        return Err(NewError::Builtin(name.to_owned()));
    }
    Ok(())
}

/// Parses `--sdk`: `git+URL[#REV]`, else a path to the SDK crate.
pub fn parse_sdk(spec: &str) -> Result<Sdk, NewError> {
    let bad = |why: &str| NewError::BadSdk { spec: spec.to_owned(), why: why.to_owned() };
    if let Some(rest) = spec.strip_prefix(GIT_PREFIX) {
        let (url, rev) = match rest.split_once('#') {
            Some((url, rev)) => (url, Some(rev)),
            None => (rest, None),
        };
        if url.is_empty() {
            return Err(bad("no URL after git+ (the form is git+URL or git+URL#REV)"));
        }
        if rev.is_some_and(str::is_empty) {
            return Err(bad("nothing after # (a commit, tag or branch)"));
        }
        let rev = rev.map(str::to_owned);
        return Ok(Sdk::Git { url: url.to_owned(), rev });
    }
    sdk_path(Path::new(spec), spec)
}

/// The SDK crate at `path`, made absolute, if its `Cargo.toml` names the SDK package.
fn sdk_path(path: &Path, spec: &str) -> Result<Sdk, NewError> {
    let bad = |why: String| NewError::BadSdk { spec: spec.to_owned(), why };
    let dir = path.canonicalize().map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| bad(format!("no SDK crate there: reading {}: {e}", manifest.display())))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| bad(format!("{}: {e}", manifest.display())))?;
    let name = table.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str());
    if name != Some(SDK_PACKAGE) {
        return Err(bad(format!(
            "{} is not the SDK's manifest (package {name:?}, not {SDK_PACKAGE:?}): give the \
             guest-analyzers/sdk folder of a wasmtap clone",
            manifest.display()
        )));
    }
    Ok(Sdk::Path(dir))
}

impl Sdk {
    /// The dependency line of the crate's `Cargo.toml`, and how the comment above it reads.
    fn dependency(&self) -> Result<(String, &'static str), NewError> {
        let quoted = |s: &str| {
            toml_string(s).ok_or_else(|| NewError::BadSdk {
                spec: s.to_owned(),
                why: "it has control characters".to_owned(),
            })
        };
        Ok(match self {
            Sdk::Path(p) => {
                let path = p.to_str().ok_or_else(|| NewError::BadSdk {
                    spec: p.display().to_string(),
                    why: "the path is not UTF-8".to_owned(),
                })?;
                let line = format!("{SDK_PACKAGE} = {{ path = {} }}", quoted(path)?);
                (line, "by path into a wasmtap clone (or `git = URL, rev = REV` of the repository)")
            }
            Sdk::Git { url, rev } => {
                let rev = match rev {
                    Some(r) => format!(", rev = {}", quoted(r)?),
                    None => String::new(),
                };
                let line = format!("{SDK_PACKAGE} = {{ git = {}{rev} }}", quoted(url)?);
                (line, "from the wasmtap repository (cargo finds the crate in it by name)")
            }
        })
    }
}

/// `s` as a TOML basic string, or `None` if it has control characters.
fn toml_string(s: &str) -> Option<String> {
    if s.chars().any(char::is_control) {
        return None;
    }
    Some(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

/// `name` in snake case: the crate's library name and the prefix of its metrics.
fn snake(name: &str) -> String {
    name.replace('-', "_")
}

/// The prefix of the crate's metric names: the name in snake case, without a leading
/// `wasmtap` (the host adds `wasmtap_` to every metric and refuses a name that has it).
fn metric_prefix(name: &str) -> String {
    let snake = snake(name);
    let rest = snake.strip_prefix("wasmtap").map(|r| r.trim_start_matches('_'));
    match rest {
        Some("") => "analyzer".to_owned(),
        Some(rest) => rest.to_owned(),
        None => snake,
    }
}

/// The analyzer's type name: `name` in upper camel case, with an `Analyzer` suffix if that
/// is a name the code uses already.
fn type_name(name: &str) -> String {
    let mut out = String::new();
    for part in name.split(['-', '_']).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if TAKEN_TYPE_NAMES.contains(&out.as_str()) {
        out.push_str("Analyzer");
    }
    out
}

/// The template with its placeholders filled in.
fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

/// The crate's files: (path in the crate, contents).
pub fn files(new: &New) -> Result<Vec<(&'static str, String)>, NewError> {
    let (sdk, sdk_how) = new.sdk.dependency()?;
    let (metric, ty) = (metric_prefix(&new.name), type_name(&new.name));
    let values = [
        ("name", new.name.as_str()),
        ("metric", metric.as_str()),
        ("type", ty.as_str()),
        ("sdk", sdk.as_str()),
        ("sdk_how", sdk_how),
    ];
    Ok(FILES.iter().map(|(path, template)| (*path, render(template, &values))).collect())
}

/// Creates the crate and says on `out` what was made and what to do next.
pub fn create(new: &New, out: &mut dyn Write) -> Result<(), NewError> {
    let dir = &new.dir;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NewError::Write { path, source }
    };
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty {
            return Err(NewError::NotEmpty(dir.clone()));
        }
    }
    let files = files(new)?;
    for (rel, contents) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        // `create_new`: never overwrite what appeared in the folder meanwhile.
        let mut file = std::fs::File::create_new(&path).map_err(write_err(&path))?;
        file.write_all(contents.as_bytes()).map_err(write_err(&path))?;
    }
    let sdk = match &new.sdk {
        Sdk::Path(p) => p.display().to_string(),
        Sdk::Git { url, rev: Some(rev) } => format!("{url} at {rev}"),
        Sdk::Git { url, rev: None } => url.clone(),
    };
    let d = dir.display();
    let name = &new.name;
    let report = format!(
        "created analyzer crate {name:?} in {d} (guest SDK: {sdk})\n\
         next:\n  cd {d}\n  cargo test\n  wasmtap build\n  wasmtap check target/wasmtap/{name}.wasm\n"
    );
    out.write_all(report.as_bytes()).map_err(write_err(Path::new("stdout")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_analyzer_rule_and_avoid_keywords_and_builtins() {
        for good in ["synack-ports", "a", "my_analyzer2", "x-1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Upper", "1abc", "-a", "a.b", "a b", &"a".repeat(65)] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(err.contains("[a-z][a-z0-9_-]* of at most 64 bytes"), "{err}");
        }
        let err = check_name("fn").expect_err("keyword").to_string();
        assert!(err.contains("Rust keywords"), "{err}");
        let err = check_name("traffic").expect_err("built-in").to_string();
        assert!(err.contains("unique among those a host loads"), "{err}");
    }

    #[test]
    fn derived_names() {
        assert_eq!(type_name("synack-ports"), "SynackPorts");
        assert_eq!(type_name("a_b-c"), "ABC");
        assert_eq!(type_name("batch"), "BatchAnalyzer");
        assert_eq!(type_name("runner"), "RunnerAnalyzer");
        assert_eq!(metric_prefix("synack-ports"), "synack_ports");
        assert_eq!(metric_prefix("wasmtap-extra"), "extra");
        assert_eq!(metric_prefix("wasmtap"), "analyzer");
    }

    #[test]
    fn sdk_specs() {
        let git = |url: &str, rev: Option<&str>| Sdk::Git {
            url: url.to_owned(),
            rev: rev.map(str::to_owned),
        };
        assert_eq!(
            parse_sdk("git+https://example.com/wasmtap.git#v0.1.0").ok(),
            Some(git("https://example.com/wasmtap.git", Some("v0.1.0")))
        );
        assert_eq!(parse_sdk("git+file:///x").ok(), Some(git("file:///x", None)));
        for bad in ["git+", "git+https://x#", "/nonexistent/sdk", "."] {
            assert!(matches!(parse_sdk(bad), Err(NewError::BadSdk { .. })), "{bad}");
        }
        let built_from = parse_sdk(BUILT_FROM_SDK).expect("this tree's SDK");
        assert!(matches!(built_from, Sdk::Path(p) if p.is_absolute()));
    }

    #[test]
    fn the_dependency_is_written_as_toml() {
        let path = Sdk::Path(PathBuf::from("/a \"b\"\\c"));
        let (line, _) = path.dependency().expect("a path");
        assert_eq!(line, r#"wasmtap-sdk = { path = "/a \"b\"\\c" }"#);
        let git = Sdk::Git { url: "https://e.com/w.git".into(), rev: Some("abc".into()) };
        let (line, _) = git.dependency().expect("a git URL");
        assert_eq!(line, r#"wasmtap-sdk = { git = "https://e.com/w.git", rev = "abc" }"#);
        let parsed: toml::Table = toml::from_str(&line).expect("valid TOML");
        assert!(parsed.contains_key("wasmtap-sdk"));
    }

    #[test]
    fn every_placeholder_is_filled() {
        let new = New {
            name: "synack-ports".into(),
            dir: PathBuf::from("x"),
            sdk: Sdk::Git { url: "https://e.com/w.git".into(), rev: None },
        };
        for (path, text) in files(&new).expect("files") {
            assert!(!text.contains("{{"), "{path} has a placeholder left:\n{text}");
        }
    }
}
