//! Helpers for the chart tests (`chart`, `root_chart_capture`): the Helm chart rendered with
//! `k8s/chart_check.py` (the real Helm library, from the virtualenv `scripts/setup` makes of
//! `k8s/requirements.txt`), and the rendered objects' parts the tests look at.
//!
//! As everywhere in `common`, every command runs with a timeout.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{TempDir, repo_root, run_ok};

pub fn chart_dir() -> PathBuf {
    repo_root().join("k8s/wasmtap")
}

pub fn all_options_values() -> PathBuf {
    chart_dir().join("ci/all-options-values.yaml")
}

/// The chart tests' virtualenv python; panics with the setup hint when it is missing or was
/// made from other requirements.
pub fn venv_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = std::env::var_os("WASMTAP_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| {
            let cache =
                std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
                });
            cache.join("wasmtap-test-venv")
        });
        let python = venv.join("bin/python3");
        assert!(
            python.is_file(),
            "no chart-test virtualenv at {}: run scripts/setup (it installs k8s/requirements.txt)",
            venv.display()
        );
        let wanted = std::fs::read(repo_root().join("k8s/requirements.txt")).expect("requirements");
        let installed = std::fs::read(venv.join("requirements.txt")).unwrap_or_default();
        assert!(
            wanted == installed,
            "the virtualenv at {} was made from other requirements: run scripts/setup again",
            venv.display()
        );
        python
    })
}

/// `chart_check.py ARGS...`, which must succeed; its JSON answer.
pub fn chart_check(args: &[&str]) -> Value {
    let mut cmd = Command::new(venv_python());
    cmd.arg(repo_root().join("k8s/chart_check.py")).args(args);
    let out = run_ok(&mut cmd, Duration::from_secs(120));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("chart_check.py {args:?}: {e}:\n{out}"))
}

/// The rendered objects for a values file (`None`: the defaults), in template order.
pub fn render(values: Option<&Path>) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec!["render", chart.to_str().expect("utf-8 path")];
    if let Some(v) = values {
        args.extend(["--values", v.to_str().expect("utf-8 path")]);
    }
    let answer = chart_check(&args);
    answer["objects"].as_array().expect("objects").iter().map(|o| o["object"].clone()).collect()
}

/// Renders with `values` (JSON, written to a file) as the overrides.
pub fn render_with(values: &Value, dir: &TempDir) -> Vec<Value> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let file = dir.join(&format!("values-{}.yaml", SEQ.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&file, values.to_string()).expect("write values");
    render(Some(&file))
}

/// The one object of `kind` (panics if there is not exactly one).
pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")).to_string())
        .collect()
}

pub fn container(objects: &[Value]) -> &Value {
    let ds = one(objects, "DaemonSet");
    let containers = ds["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// The value of `--name=VALUE` in the container's arguments.
pub fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter().find_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
}
