//! Helpers for the dashboard test (`root_dashboard`): the metric names a PromQL expression
//! reads, and Debian's Prometheus scraping the host and a kube-state-metrics file in a
//! namespace, asked through its HTTP API.
//!
//! As everywhere in `common`, what is started here is stopped on drop, also when a test
//! panics, and every wait is bounded.

use serde_json::Value;
use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Spawned, TempDir, free_port, require_tools, run_with_timeout, url_encode};

/// The metric names in a PromQL expression: identifiers that are not functions, keywords,
/// label names (in `{...}`, `by (...)`, `on (...)` and the like), strings, numbers or
/// durations. Grafana's `$variables` count as neither.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 12] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
    ];
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut after_label_list_keyword = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            i += if chars[i] == '\\' { 2 } else { 1 };
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if after_label_list_keyword => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                after_label_list_keyword = false;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    // 1e-05: the exponent's sign belongs to the number
                    if matches!(chars[i], 'e' | 'E') && matches!(chars.get(i + 1), Some('-' | '+'))
                    {
                        i += 1;
                    }
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                // `sum by (a) (x)`: an aggregation whose modifier comes before its arguments.
                let rest: String = chars[j..].iter().take(8).collect();
                let modifier = ["by", "without"].iter().any(|m| {
                    rest.strip_prefix(m)
                        .is_some_and(|r| r.starts_with(|c: char| c == '(' || c.is_whitespace()))
                });
                let call = chars.get(j) == Some(&'(')
                    || (modifier && !LABEL_LISTS.contains(&word.as_str()));
                if LABEL_LISTS.contains(&word.as_str()) {
                    after_label_list_keyword = call;
                } else if !call
                    && !KEYWORDS.contains(&word.as_str())
                    && !matches!(word.to_ascii_lowercase().as_str(), "inf" | "nan")
                {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

// ------------------------------------------------------------------------------------------
// Prometheus with two scrape jobs

/// Debian's Prometheus in a namespace, scraping the host (`job="wasmtap"`, plain /metrics) and
/// a kube-state-metrics text file (`job="kube-state-metrics"`, path /metrics.txt, honouring its
/// labels as a kube-state-metrics scrape does) every second.
pub struct Prometheus {
    proc: Spawned,
    ns: String,
    pub port: u16,
    _dir: TempDir,
}

impl Prometheus {
    pub fn start(ns: &str, wasmtap: &str, ksm: &str) -> Prometheus {
        require_tools(&["prometheus", "curl"]);
        let dir = TempDir::new("dash-prometheus");
        let port = free_port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 scrape_configs:\n\
                 \x20 - job_name: wasmtap\n    static_configs:\n      - targets: ['{wasmtap}']\n\
                 \x20 - job_name: kube-state-metrics\n    honor_labels: true\n    metrics_path: /metrics.txt\n    \
                 static_configs:\n      - targets: ['{ksm}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let mut cmd = netns(ns, "prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut p = Prometheus {
            proc: Spawned::start("prometheus", &mut cmd),
            ns: ns.into(),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while p.get("/-/ready").is_none() {
            if let Some(status) = p.proc.try_status() {
                panic!("prometheus exited ({status}):\n{}", p.proc.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 60 s:\n{}",
                p.proc.stderr()
            );
            thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// GET `path` from inside the namespace: the body (2xx or 4xx: the API's errors are JSON).
    pub fn get(&self, path: &str) -> Option<String> {
        let r = run_with_timeout(
            netns(&self.ns, "curl").args([
                "-s",
                "--max-time",
                "20",
                &format!("http://127.0.0.1:{}{path}", self.port),
            ]),
            Duration::from_secs(30),
        );
        r.success().then(|| r.stdout_text())
    }

    /// An API call; the parsed answer (panics if nothing answered).
    pub fn api(&self, path: &str) -> Value {
        let body = self.get(path).unwrap_or_else(|| panic!("prometheus did not answer {path}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    pub fn instant(&self, promql: &str) -> Value {
        self.api(&format!("/api/v1/query?query={}", url_encode(promql)))
    }

    /// `/api/v1/query_range` over the last `span`, one point every 2 s.
    pub fn range(&self, promql: &str, span: Duration) -> Value {
        let end = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64();
        let start = end - span.as_secs_f64();
        self.api(&format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step=2",
            url_encode(promql)
        ))
    }

    /// Polls `promql` until it returns a non-empty result (≤ `timeout`).
    pub fn wait_for(&self, promql: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let v = self.instant(promql);
            if v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
                return true;
            }
            thread::sleep(Duration::from_millis(500));
        }
        false
    }
}

pub fn netns(ns: &str, program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}
