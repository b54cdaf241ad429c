//! PromQL and Prometheus: the metric names a PromQL expression reads ([`metric_names`]), and
//! Debian's Prometheus server run in a test namespace, scraping the jobs a test gives it every
//! second, asked through its HTTP API ([`Prometheus`]; `root_live_prometheus`,
//! `root_dashboard`).
//!
//! As everywhere in `common`, what is started here is stopped on drop, also when a test
//! panics, and every wait is bounded.

use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::http;
use super::process::{Spawned, TempDir, free_port, require_tools};
use super::topology::netns_exec;

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
// Prometheus

/// How long Prometheus may take to start answering.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one API request (a range query over minutes of data included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// One scrape job: Prometheus reads `http://TARGET PATH` every second as `job="NAME"`.
pub struct ScrapeJob<'a> {
    pub name: &'a str,
    /// `host:port`, as seen from the namespace.
    pub target: &'a str,
    pub path: &'a str,
    /// Keep the labels of the scraped series (as a kube-state-metrics scrape does) instead of
    /// Prometheus's own `job` and `instance`.
    pub honor_labels: bool,
}

impl<'a> ScrapeJob<'a> {
    /// A plain `/metrics` scrape of `target`.
    pub fn metrics(name: &'a str, target: &'a str) -> ScrapeJob<'a> {
        ScrapeJob { name, target, path: "/metrics", honor_labels: false }
    }
}

/// Debian's Prometheus in a namespace, with its own config and storage, scraping `jobs` every
/// second; killed on drop.
pub struct Prometheus {
    proc: Spawned,
    ns: String,
    pub port: u16,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus in `ns`, listening on 127.0.0.1; returns once it answers /-/ready.
    pub fn start(ns: &str, jobs: &[ScrapeJob]) -> Prometheus {
        require_tools(&["prometheus", "curl"]);
        let dir = TempDir::new("prometheus");
        let port = free_port();
        let config = dir.join("prometheus.yml");
        let mut yml = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n",
        );
        for j in jobs {
            let _ = write!(
                yml,
                "  - job_name: {}\n    honor_labels: {}\n    metrics_path: {}\n    \
                 static_configs:\n      - targets: ['{}']\n",
                j.name, j.honor_labels, j.path, j.target
            );
        }
        std::fs::write(&config, yml).expect("write prometheus.yml");
        let mut cmd = netns_exec(ns, "prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut p = Prometheus {
            proc: Spawned::start("prometheus", &mut cmd),
            ns: ns.into(),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while p.get("/-/ready").is_none() {
            if let Some(status) = p.proc.try_status() {
                panic!("prometheus exited ({status}):\n{}", p.proc.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in {READY_TIMEOUT:?}:\n{}",
                p.proc.stderr()
            );
            thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// GET `path` from inside the namespace: the body (2xx or 4xx: the API's errors are JSON).
    pub fn get(&self, path: &str) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let r = http::get_in(&self.ns, addr, path, REQUEST_TIMEOUT).ok()?;
        (r.status < 500).then_some(r.body)
    }

    /// An API call; the parsed answer (panics if nothing answered).
    pub fn api(&self, path: &str) -> Value {
        let body = self.get(path).unwrap_or_else(|| panic!("prometheus did not answer {path}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    pub fn instant(&self, promql: &str) -> Value {
        self.api(&format!("/api/v1/query?query={}", url_encode(promql)))
    }

    /// The value of the first result of an instant query, if there is one.
    pub fn value(&self, promql: &str) -> Option<f64> {
        query_value(&self.instant(promql))
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

    /// Polls `promql` until its value is non-zero (≤ `timeout`); returns the last value seen.
    pub fn poll_nonzero(&self, promql: &str, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        let mut last = 0.0;
        while Instant::now() < deadline {
            if let Some(v) = self.value(promql) {
                last = v;
                if v != 0.0 {
                    return v;
                }
            }
            thread::sleep(Duration::from_millis(250));
        }
        last
    }

    /// What Prometheus logged so far.
    pub fn logs(&self) -> String {
        self.proc.stderr()
    }
}

/// Percent-encodes a query parameter.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the first result of a Prometheus instant-query answer:
/// `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[T,"V"]}]}}`.
pub fn query_value(answer: &Value) -> Option<f64> {
    if answer["status"] != "success" {
        return None;
    }
    answer["data"]["result"].get(0)?["value"].get(1)?.as_str()?.parse().ok()
}

/// [`query_value`] of an answer's text; `None` for anything but a successful answer with a
/// result.
pub fn parse_query_value(body: &str) -> Option<f64> {
    query_value(&serde_json::from_str(body).ok()?)
}
