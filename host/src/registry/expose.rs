//! Registry stage, exposition: the one place the text that `/metrics`, `wasmtap replay` and
//! `wasmtap check` print is assembled.
//!
//! Input: the registered families and their series; the host's self-metrics.
//! Output: each family with series as its text (HELP, TYPE, then one line per sample, series
//! sorted by labels), by name; byte for byte what the `prometheus` crate's `TextEncoder`
//! writes for the same family (the tests hold it to that). [`Registry::exposition`] merges
//! them with the self-metrics into one text sorted by family name. Each family's series are copied
//! under its lock, which is held only for the copy; sorting and formatting happen after, so a
//! scrape delays the analyzers' updates by a copy, not by a render. The text is written
//! directly, without building `prometheus::proto` messages first: a node with many address
//! pairs renders tens of thousands of series per scrape.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::series::SeriesValue;
use super::{Family, Label, Registry};
use crate::telemetry::SelfMetrics;

impl Registry {
    /// The whole exposition: the analyzers' families and, if given, the host's self-metrics,
    /// sorted by name. `timing` includes wall-clock histograms; a replay leaves them out so
    /// that its output depends on the capture alone.
    pub fn exposition(&self, own: Option<&SelfMetrics>, timing: bool) -> String {
        let mut parts = self.render();
        if let Some(own) = own {
            parts.extend(own.encode(timing));
        }
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::with_capacity(parts.iter().map(|p| p.1.len()).sum());
        for (_, text) in &parts {
            out.push_str(text);
        }
        out
    }

    /// Every family with series as `(name, text)`, sorted by name: the text format has no way
    /// to show a family without series, so one appears with its first series.
    pub fn render(&self) -> Vec<(String, String)> {
        // Device names escaped once, not once per series.
        let devices: Vec<String> = self
            .devices
            .names()
            .iter()
            .map(|name| {
                let mut escaped = String::with_capacity(name.len());
                escape(&mut escaped, name, true);
                escaped
            })
            .collect();
        let families = self.families.read();
        let mut out: Vec<(String, String)> = families
            .iter()
            .filter_map(|f| Some((f.full_name.clone(), render_family(f, &devices)?)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// One family's text, or `None` if it has no series.
fn render_family(f: &Family, devices: &[String]) -> Option<String> {
    let (names, shape, mut entries) = {
        let series = f.series.lock();
        let entries: Vec<(Box<[Label]>, SeriesValue)> =
            series.entries().map(|(k, s)| (k, s.value.clone())).collect();
        (series.label_names.clone(), series.shape.clone(), entries)
    };
    if entries.is_empty() {
        return None;
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let name = f.full_name.as_str();
    let mut text = String::with_capacity(entries.len() * 96);
    if !f.spec.help.is_empty() {
        text.push_str("# HELP ");
        text.push_str(name);
        text.push(' ');
        escape(&mut text, &f.spec.help, false);
        text.push('\n');
    }
    let _ = writeln!(text, "# TYPE {name} {}", f.spec.kind.as_str());
    // The buckets' bounds, formatted once for all series; each series' labels, once for all
    // of its lines.
    let bounds: Vec<String> = f.spec.buckets.iter().map(|b| b.to_string()).collect();
    let mut labels = String::new();
    for (key, value) in &entries {
        labels.clear();
        let mut names = names.iter();
        let mut pair = |labels: &mut String, write: &dyn Fn(&mut String)| {
            let Some(label_name) = names.next() else { return };
            labels.push(if labels.is_empty() { '{' } else { ',' });
            labels.push_str(label_name);
            labels.push_str("=\"");
            write(labels);
            labels.push('"');
        };
        for (label, fields) in key.iter().zip(shape.iter()) {
            match (label, fields) {
                // An owner's kept fields, each a label of its own.
                (Label::Owner(o), Some(fields)) => {
                    for (value, kept) in o.fields().into_iter().zip(fields) {
                        if *kept {
                            pair(&mut labels, &|t| escape(t, value, true));
                        }
                    }
                }
                _ => pair(&mut labels, &|t| label_value(t, label, devices)),
            }
        }
        match value {
            SeriesValue::Counter(v) | SeriesValue::Gauge(v, _) => {
                sample(&mut text, name, "", &labels, None, *v);
            }
            SeriesValue::Histogram { buckets, sum, count } => {
                let mut cumulative = 0u64;
                for (bound, n) in bounds.iter().zip(buckets) {
                    cumulative += n;
                    sample(&mut text, name, "_bucket", &labels, Some(bound), cumulative as f64);
                }
                sample(&mut text, name, "_bucket", &labels, Some("+Inf"), *count as f64);
                sample(&mut text, name, "_sum", &labels, None, sum.to_f64());
                sample(&mut text, name, "_count", &labels, None, *count as f64);
            }
        }
    }
    Some(text)
}

/// One sample line: `labels` is `{a="x",b="y"` (unclosed) or empty; `le` a bucket's bound.
fn sample(text: &mut String, name: &str, suffix: &str, labels: &str, le: Option<&str>, v: f64) {
    text.push_str(name);
    text.push_str(suffix);
    match (labels.is_empty(), le) {
        (true, None) => {}
        (true, Some(le)) => {
            let _ = write!(text, "{{le=\"{le}\"}}");
        }
        (false, None) => {
            text.push_str(labels);
            text.push('}');
        }
        (false, Some(le)) => {
            let _ = write!(text, "{labels},le=\"{le}\"}}");
        }
    }
    let _ = writeln!(text, " {v}");
}

/// A label value, escaped as the text format wants it.
fn label_value(text: &mut String, label: &Label, devices: &[String]) {
    // `devices` are escaped already.
    match label {
        Label::Text(s) => escape(text, s, true),
        Label::Ipv4(a) => {
            let _ = write!(text, "{}", Ipv4Addr::from(*a));
        }
        Label::Ipv6(a) => {
            let _ = write!(text, "{}", Ipv6Addr::from(*a));
        }
        Label::Device(d) => match devices.get(usize::from(*d)) {
            Some(name) => text.push_str(name),
            None => {
                let _ = write!(text, "{d}");
            }
        },
        Label::Number(n) => {
            let _ = write!(text, "{n}");
        }
        // Written field by field by the caller; never reached.
        Label::Owner(o) => escape(text, o.pod(), true),
    }
}

/// Appends `v` with backslash and newline escaped, and double quotes too in a label value.
fn escape(text: &mut String, v: &str, quotes: bool) {
    if !v.bytes().any(|b| b == b'\\' || b == b'\n' || (quotes && b == b'"')) {
        text.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '\n' => text.push_str("\\n"),
            '"' if quotes => text.push_str("\\\""),
            c => text.push(c),
        }
    }
}
