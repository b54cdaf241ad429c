//! The Prometheus text exposition, as the host writes it: parsing it into [`Sample`]s, sums and
//! counts over samples (in total, per label set, per address pair), the families it declares,
//! and comparisons of two expositions (the default analyzers' families, line by line).

use std::collections::BTreeMap;
use std::net::IpAddr;

/// One sample line of the text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text exposition format (0.0.4) into samples; comments are skipped.
/// Panics with the offending line on malformed input.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(
            parse_sample(line)
                .unwrap_or_else(|e| panic!("exposition line {}: {e}: {line:?}", i + 1)),
        );
    }
    out
}

/// Parses one sample line of the exposition.
pub fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("empty metric name".into());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        loop {
            // skip separators
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some(&(i, '}')) => {
                    end = Some(i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            match chars.next() {
                Some((_, '"')) => {}
                _ => return Err(format!("label {key:?} value is not quoted")),
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("unterminated value of label {key:?}"));
            }
            labels.insert(key.trim().to_string(), value);
        }
        let end = end.ok_or("unterminated label set")?;
        rest = &body[end + 1..];
    }
    let value_text = rest.split_whitespace().next().ok_or("missing sample value")?;
    let value = value_text.parse::<f64>().map_err(|e| format!("value {value_text:?}: {e}"))?;
    Ok(Sample { name: name.to_string(), labels, value })
}

// ------------------------------------------------------------------------------------------
// Sums and counts

/// The sum of every sample named exactly `name` (across all label sets).
pub fn sum_metric(samples: &[Sample], name: &str) -> f64 {
    samples.iter().filter(|s| s.name == name).map(|s| s.value).sum()
}

/// [`sum_metric`] of a counter, as an exact integer (panics if it is not one).
pub fn count_metric(samples: &[Sample], name: &str) -> u64 {
    as_count(sum_metric(samples, name), name)
}

/// Whether any sample is named `name`.
pub fn has_metric(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}

/// The sum of the samples named `name` whose labels include every `(key, value)` of
/// `labels`; `None` when there is no such sample.
pub fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for s in samples.iter().filter(|s| s.name == name) {
        if labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)) {
            *found.get_or_insert(0.0) += s.value;
        }
    }
    found
}

/// Sums `name` per (src_ip, dst_ip) label pair; addresses are parsed so that textual forms
/// (e.g. IPv6 compression) do not matter.
pub fn sum_by_pair(samples: &[Sample], name: &str) -> BTreeMap<(IpAddr, IpAddr), u64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        let addr = |label: &str| -> IpAddr {
            let v = s
                .labels
                .get(label)
                .unwrap_or_else(|| panic!("{name} sample without {label}: {s:?}"));
            v.parse().unwrap_or_else(|e| panic!("{name}{{{label}={v:?}}} is not an address: {e}"))
        };
        *out.entry((addr("src_ip"), addr("dst_ip"))).or_insert(0) += as_count(s.value, name);
    }
    out
}

/// A counter value as an exact integer (panics if it is not one).
pub fn as_count(v: f64, what: &str) -> u64 {
    assert!(v >= 0.0 && v.fract() == 0.0 && v < 9.0e15, "{what} = {v} is not a whole count");
    v as u64
}

// ------------------------------------------------------------------------------------------
// Families and comparisons

/// Whether `family` is one of the host's own (`wasmtap_host_*`, `wasmtap_analyzer_*`: timings,
/// batch counts, analyzer states), not an analyzer's.
fn is_self_metric(family: &str) -> bool {
    family.starts_with("wasmtap_host_") || family.starts_with("wasmtap_analyzer_")
}

/// Drops the host's own families from an exposition, keeping the analyzers' metrics and their
/// HELP/TYPE lines.
pub fn without_self_metrics(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let name = l.strip_prefix("# HELP ").or_else(|| l.strip_prefix("# TYPE ")).unwrap_or(l);
            !is_self_metric(name)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The families the analyzers export (`# TYPE` lines), without the host's self-metrics.
pub fn analyzer_families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !is_self_metric(n))
        .map(str::to_owned)
        .collect()
}

/// The family a line of the exposition belongs to: the name in a comment, or the sample's
/// name with a histogram suffix removed when that gives one of `known`.
pub fn family_of<'a>(line: &'a str, known: &[String]) -> &'a str {
    if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
        return rest.split_whitespace().next().unwrap_or("");
    }
    let name = line.split(['{', ' ']).next().unwrap_or("");
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && known.iter().any(|k| k == base)
        {
            return base;
        }
    }
    name
}

/// Every line of `text` (HELP, TYPE and samples) that belongs to one of `families`, in order.
fn family_lines<'a>(text: &'a str, families: &[String]) -> Vec<&'a str> {
    text.lines().filter(|l| families.iter().any(|f| f == family_of(l, families))).collect()
}

/// The differences between the lines of `families` in `text` and in `reference`: the same
/// HELP and TYPE lines, and every series in both, with the same value, exactly (histogram sums
/// included: the registry keeps them in exact billionths, whatever the order of the workers).
/// Empty when they agree.
pub fn family_differences(text: &str, reference: &str, families: &[String]) -> Vec<String> {
    let (got, want) = (family_lines(text, families), family_lines(reference, families));
    let mut diffs = Vec::new();
    if got.len() != want.len() {
        diffs.push(format!("{} lines, expected {}", got.len(), want.len()));
    }
    for (g, w) in got.iter().zip(&want) {
        if g.starts_with('#') || w.starts_with('#') {
            if g != w {
                diffs.push(format!("got {g}\n   expected {w}"));
            }
            continue;
        }
        let (Ok(gs), Ok(ws)) = (parse_sample(g), parse_sample(w)) else {
            diffs.push(format!("unparsable: {g:?} or {w:?}"));
            continue;
        };
        if (gs.name, &gs.labels) != (ws.name, &ws.labels) || gs.value != ws.value {
            diffs.push(format!("got {g}\n   expected {w}"));
        }
    }
    diffs
}

/// The analyzer families of `baseline`, a run of the default analyzers alone.
pub fn default_families(baseline: &str) -> Vec<String> {
    let families = analyzer_families(baseline);
    assert!(families.iter().any(|f| f == "wasmtap_packets_total"), "baseline:\n{baseline}");
    families
}

/// How the default analyzers' series in `text` (a run with more analyzers) differ from
/// `baseline` (a run of the same input with the defaults alone); empty when they are the same.
pub fn default_differences(text: &str, baseline: &str) -> Vec<String> {
    family_differences(text, baseline, &default_families(baseline))
}

/// The lines of `a` and `b` that differ, for assertion messages.
pub fn line_diff(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i), lb.get(i));
        if x != y {
            out.push_str(&format!("line {}:\n  - {x:?}\n  + {y:?}\n", i + 1));
        }
    }
    out
}
