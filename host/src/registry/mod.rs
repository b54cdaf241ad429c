//! Stage: registry.
//!
//! Inputs: metric families declared by analyzers at load ([`FamilySpec`]), and the metric
//! updates their calls return ([`Update`]), from any number of worker threads.
//! Outputs: Prometheus metric families (`prometheus::proto`) for the exporter, aggregated
//! across workers, with interned label values formatted only at scrape time.
//!
//! Each family has its own lock, taken once per update (never per packet: analyzers aggregate
//! within a batch). A per-family cardinality cap refuses new series beyond it and counts them.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use prometheus::proto;

/// The prefix the host puts before every analyzer's metric names.
pub const PREFIX: &str = "wasmtap_";

/// Series per family unless configured otherwise: enough for every (src, dst, device) of a busy
/// node's pod traffic, small enough that one family can't take the exporter's memory.
pub const DEFAULT_SERIES_CAP: usize = 10_000;

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A family as declared by an analyzer, names without the prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilySpec {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub label_names: Vec<String>,
    pub buckets: Vec<f64>,
}

/// Why a declared family was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FamilyError {
    #[error("metric name {0:?} is not a valid Prometheus name (use [a-z_][a-z0-9_]*)")]
    BadName(String),
    #[error("metric name {0:?} must not start with {PREFIX:?}: the host adds that prefix")]
    Prefixed(String),
    #[error("counter {0:?} must end in \"_total\"")]
    CounterSuffix(String),
    #[error("metric {name:?}: label name {label:?} is not valid (use [a-z_][a-z0-9_]*, not __*)")]
    BadLabel { name: String, label: String },
    #[error("metric {name:?}: label {label:?} is declared twice")]
    DuplicateLabel { name: String, label: String },
    #[error("histogram {0:?}: buckets must be finite and strictly increasing")]
    BadBuckets(String),
    #[error("metric {0:?}: only histograms declare buckets")]
    UnexpectedBuckets(String),
    #[error("metric {name:?} is already exported by analyzer {owner:?}")]
    Collision { name: String, owner: String },
    #[error("metric {0:?} is declared twice")]
    Duplicate(String),
}

/// Why an update was refused. Any of these is a fault of the analyzer that sent it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UpdateError {
    #[error("update names family index {0}, which was not declared")]
    NoSuchFamily(u32),
    #[error("update to {family} has {got} label values for {want} label names")]
    LabelCount { family: String, got: usize, want: usize },
    #[error("update to {family} has the wrong kind of value for a {kind:?}")]
    WrongKind { family: String, kind: Kind },
    #[error("update to {family} adds {value}, which is negative or not finite")]
    BadCounterAdd { family: String, value: f64 },
    #[error("update to {family} has {got} bucket counts; the family has {want} (with +Inf)")]
    BucketCount { family: String, got: usize, want: usize },
}

/// An interned label value; formatted only when scraped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Text(Arc<str>),
    Ipv4(u32),
    Ipv6(u128),
    Device(u16),
    Number(i64),
}

/// The value part of an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    CounterAdd(f64),
    /// Value and the packet time it was observed at; the latest time wins.
    GaugeSet(f64, u64),
    Histogram {
        buckets: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

/// One update, from the analyzer's point of view (family index into its declaration).
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub family: u32,
    pub labels: Vec<Label>,
    pub value: Value,
}

/// Interface and capture-file names behind `Label::Device` indices.
#[derive(Debug, Default)]
pub struct Devices {
    names: RwLock<Vec<Arc<str>>>,
}

impl Devices {
    /// The index of `name`, adding it if new. Called when a source opens, not per packet.
    pub fn intern(&self, name: &str) -> u16 {
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = names.iter().position(|n| &**n == name) {
            return u16::try_from(i).unwrap_or(u16::MAX);
        }
        names.push(Arc::from(name));
        u16::try_from(names.len() - 1).unwrap_or(u16::MAX)
    }

    /// The name behind an index, or the number itself for an unknown index.
    pub fn name(&self, index: u16) -> String {
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        names.get(usize::from(index)).map_or_else(|| index.to_string(), |n| n.to_string())
    }
}

#[derive(Debug)]
enum SeriesValue {
    Counter(f64),
    Gauge(f64, u64),
    /// `sum` in [`Nanos`], so that it does not depend on the order of additions.
    Histogram {
        buckets: Vec<u64>,
        sum: Nanos,
        count: u64,
    },
}

/// A sum kept exactly, in billionths: f64 additions round differently depending on their
/// order, and the order in which workers and batches report is not fixed, so float sums
/// would differ in their last digits between replays of the same capture. Observations are
/// kept to 1e-9 (a nanosecond, or a billionth of a byte), far below anything a histogram of
/// times or sizes resolves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Nanos(i128);

impl Nanos {
    const PER_UNIT: i128 = 1_000_000_000;

    fn from_f64(v: f64) -> Self {
        // `as` saturates on overflow and maps NaN to 0; sums are finite in practice.
        Nanos((v * Self::PER_UNIT as f64).round() as i128)
    }

    fn to_f64(self) -> f64 {
        // Whole and fractional parts apart, so that whole sums stay exact past 2^53 nanos.
        let (whole, frac) = (self.0 / Self::PER_UNIT, self.0 % Self::PER_UNIT);
        whole as f64 + frac as f64 / Self::PER_UNIT as f64
    }
}

#[derive(Debug)]
struct Family {
    spec: FamilySpec,
    full_name: String,
    owner: String,
    cap: usize,
    series: Mutex<FamilySeries>,
}

#[derive(Debug, Default)]
struct FamilySeries {
    /// foldhash, not SipHash: keys are label values chosen by analyzers, not by a network peer
    /// who could aim collisions at them, and lookups run for every update.
    map: HashMap<Box<[Label]>, SeriesValue, foldhash::fast::RandomState>,
    refused: u64,
}

/// Handles to one analyzer's families, in its declaration order.
#[derive(Debug, Clone)]
pub struct Families {
    owner: String,
    list: Arc<[Arc<Family>]>,
}

impl Families {
    /// The analyzer that owns these families.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

/// All families of all analyzers.
#[derive(Debug)]
pub struct Registry {
    families: RwLock<Vec<Arc<Family>>>,
    devices: Arc<Devices>,
    series_cap: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

/// Checks one analyzer's declared families on their own (not against other analyzers).
pub fn validate(specs: &[FamilySpec]) -> Result<(), FamilyError> {
    for (i, f) in specs.iter().enumerate() {
        if !valid_name(&f.name) {
            return Err(FamilyError::BadName(f.name.clone()));
        }
        if f.name.starts_with(PREFIX) {
            return Err(FamilyError::Prefixed(f.name.clone()));
        }
        if f.kind == Kind::Counter && !f.name.ends_with("_total") {
            return Err(FamilyError::CounterSuffix(f.name.clone()));
        }
        for (j, l) in f.label_names.iter().enumerate() {
            if !valid_name(l) || l.starts_with("__") || l == "le" {
                let (name, label) = (f.name.clone(), l.clone());
                return Err(FamilyError::BadLabel { name, label });
            }
            if f.label_names[..j].contains(l) {
                let (name, label) = (f.name.clone(), l.clone());
                return Err(FamilyError::DuplicateLabel { name, label });
            }
        }
        match f.kind {
            Kind::Histogram => {
                let finite = f.buckets.iter().all(|b| b.is_finite());
                if !finite || f.buckets.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(FamilyError::BadBuckets(f.name.clone()));
                }
            }
            _ if !f.buckets.is_empty() => {
                return Err(FamilyError::UnexpectedBuckets(f.name.clone()));
            }
            _ => {}
        }
        if specs[..i].iter().any(|g| g.name == f.name) {
            return Err(FamilyError::Duplicate(f.name.clone()));
        }
    }
    Ok(())
}

impl Registry {
    pub fn new(devices: Arc<Devices>, series_cap: usize) -> Self {
        Self { families: RwLock::default(), devices, series_cap }
    }

    pub fn devices(&self) -> &Arc<Devices> {
        &self.devices
    }

    /// Registers an analyzer's families, all or none.
    pub fn register(&self, owner: &str, specs: &[FamilySpec]) -> Result<Families, FamilyError> {
        self.replace(None, owner, specs)
    }

    /// Registers an analyzer's new families in place of `old` (a reloaded version), all or
    /// none: on an error `old` stays registered. The old series go; counters start afresh.
    pub fn replace(
        &self,
        old: Option<&Families>,
        owner: &str,
        specs: &[FamilySpec],
    ) -> Result<Families, FamilyError> {
        validate(specs)?;
        let is_old =
            |f: &Arc<Family>| old.is_some_and(|o| o.list.iter().any(|g| Arc::ptr_eq(f, g)));
        let mut families = self.families.write().unwrap_or_else(PoisonError::into_inner);
        for spec in specs {
            let full_name = format!("{PREFIX}{}", spec.name);
            if let Some(f) = families.iter().find(|f| f.full_name == full_name && !is_old(f)) {
                let owner = f.owner.clone();
                return Err(FamilyError::Collision { name: full_name, owner });
            }
        }
        families.retain(|f| !is_old(f));
        let list: Vec<Arc<Family>> = specs
            .iter()
            .map(|spec| {
                Arc::new(Family {
                    spec: spec.clone(),
                    full_name: format!("{PREFIX}{}", spec.name),
                    owner: owner.to_owned(),
                    cap: self.series_cap,
                    series: Mutex::default(),
                })
            })
            .collect();
        families.extend(list.iter().cloned());
        Ok(Families { owner: owner.to_owned(), list: list.into() })
    }

    /// Removes an analyzer's families and all their series.
    pub fn unregister(&self, families: &Families) {
        let mut all = self.families.write().unwrap_or_else(PoisonError::into_inner);
        all.retain(|f| !families.list.iter().any(|g| Arc::ptr_eq(f, g)));
    }

    /// Applies one call's updates. They are all checked first, so a bad update applies nothing.
    pub fn apply(&self, families: &Families, updates: Vec<Update>) -> Result<(), UpdateError> {
        for u in &updates {
            check(families, u)?;
        }
        for u in updates {
            let Some(family) = families.list.get(u.family as usize) else { continue };
            let mut series = lock(&family.series);
            let at_cap = series.map.len() >= family.cap;
            match series.map.get_mut(u.labels.as_slice()) {
                Some(v) => merge(v, u.value),
                None if at_cap => series.refused += 1,
                None => {
                    let v = fresh(u.value);
                    series.map.insert(u.labels.into_boxed_slice(), v);
                }
            }
        }
        Ok(())
    }

    /// (family, live series, refused series) for the host's self-metrics.
    pub fn series_counts(&self) -> Vec<(String, usize, u64)> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        families
            .iter()
            .map(|f| {
                let s = lock(&f.series);
                (f.full_name.clone(), s.map.len(), s.refused)
            })
            .collect()
    }

    /// Every family with its series, sorted by name and labels so output is deterministic.
    pub fn gather(&self) -> Vec<proto::MetricFamily> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        // The text format has no way to show a family without series; it appears with its
        // first series.
        let mut out: Vec<proto::MetricFamily> = families
            .iter()
            .map(|f| self.family(f))
            .filter(|f| !f.get_metric().is_empty())
            .collect();
        out.sort_by(|a, b| a.name().cmp(b.name()));
        out
    }

    fn family(&self, f: &Family) -> proto::MetricFamily {
        let mut mf = proto::MetricFamily::default();
        mf.set_name(f.full_name.clone());
        mf.set_help(f.spec.help.clone());
        mf.set_field_type(match f.spec.kind {
            Kind::Counter => proto::MetricType::COUNTER,
            Kind::Gauge => proto::MetricType::GAUGE,
            Kind::Histogram => proto::MetricType::HISTOGRAM,
        });
        let series = lock(&f.series);
        let mut entries: Vec<_> = series.map.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let metrics = entries
            .into_iter()
            .map(|(labels, value)| self.metric(&f.spec, labels, value))
            .collect();
        mf.set_metric(metrics);
        mf
    }

    fn metric(&self, spec: &FamilySpec, labels: &[Label], value: &SeriesValue) -> proto::Metric {
        let pairs = spec
            .label_names
            .iter()
            .zip(labels)
            .map(|(name, value)| {
                let mut p = proto::LabelPair::default();
                p.set_name(name.clone());
                p.set_value(self.format(value));
                p
            })
            .collect();
        let mut m = proto::Metric::from_label(pairs);
        match value {
            SeriesValue::Counter(v) => {
                let mut c = proto::Counter::default();
                c.set_value(*v);
                m.set_counter(c);
            }
            SeriesValue::Gauge(v, _) => {
                let mut g = proto::Gauge::default();
                g.set_value(*v);
                m.set_gauge(g);
            }
            SeriesValue::Histogram { buckets, sum, count } => {
                let mut h = proto::Histogram::default();
                let mut cumulative = 0;
                let bounds = spec.buckets.iter().zip(buckets);
                let list = bounds
                    .map(|(bound, n)| {
                        cumulative += n;
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(*bound);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect();
                h.set_bucket(list);
                h.set_sample_sum(sum.to_f64());
                h.set_sample_count(*count);
                m.set_histogram(h);
            }
        }
        m
    }

    fn format(&self, label: &Label) -> String {
        match label {
            Label::Text(s) => s.to_string(),
            Label::Ipv4(a) => Ipv4Addr::from(*a).to_string(),
            Label::Ipv6(a) => Ipv6Addr::from(*a).to_string(),
            Label::Device(d) => self.devices.name(*d),
            Label::Number(n) => n.to_string(),
        }
    }
}

fn check(families: &Families, u: &Update) -> Result<(), UpdateError> {
    let f = families.list.get(u.family as usize).ok_or(UpdateError::NoSuchFamily(u.family))?;
    let family = || f.full_name.clone();
    let (got, want) = (u.labels.len(), f.spec.label_names.len());
    if got != want {
        return Err(UpdateError::LabelCount { family: family(), got, want });
    }
    match (&u.value, f.spec.kind) {
        (Value::CounterAdd(v), Kind::Counter) if !v.is_finite() || *v < 0.0 => {
            Err(UpdateError::BadCounterAdd { family: family(), value: *v })
        }
        (Value::Histogram { buckets, .. }, Kind::Histogram)
            if buckets.len() != f.spec.buckets.len() + 1 =>
        {
            let (got, want) = (buckets.len(), f.spec.buckets.len() + 1);
            Err(UpdateError::BucketCount { family: family(), got, want })
        }
        (Value::CounterAdd(_), Kind::Counter)
        | (Value::GaugeSet(..), Kind::Gauge)
        | (Value::Histogram { .. }, Kind::Histogram) => Ok(()),
        (_, kind) => Err(UpdateError::WrongKind { family: family(), kind }),
    }
}

fn fresh(value: Value) -> SeriesValue {
    match value {
        Value::CounterAdd(v) => SeriesValue::Counter(v),
        Value::GaugeSet(v, at) => SeriesValue::Gauge(v, at),
        Value::Histogram { buckets, sum, count } => {
            SeriesValue::Histogram { buckets, sum: Nanos::from_f64(sum), count }
        }
    }
}

fn merge(into: &mut SeriesValue, value: Value) {
    match (into, value) {
        (SeriesValue::Counter(c), Value::CounterAdd(v)) => *c += v,
        // The latest packet time wins; on a tie the larger value, so the result does not
        // depend on which worker reported first.
        (SeriesValue::Gauge(g, at), Value::GaugeSet(v, t)) if t > *at || (t == *at && v > *g) => {
            (*g, *at) = (v, t);
        }
        (
            SeriesValue::Histogram { buckets, sum, count },
            Value::Histogram { buckets: b, sum: s, count: n },
        ) => {
            // Bucket counts were checked against the family before merging.
            buckets.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            sum.0 += Nanos::from_f64(s).0;
            *count += n;
        }
        // Kinds are checked before merging; a mismatch cannot reach here.
        _ => {}
    }
}

#[cfg(test)]
mod tests;
