//! Stage: registry.
//!
//! Inputs: metric families declared by analyzers at load ([`FamilySpec`]), and the metric
//! updates their calls return ([`Update`]), from any number of worker threads.
//! Outputs: Prometheus metric families (`prometheus::proto`) for the exporter, aggregated
//! across workers, with interned label values formatted only at scrape time.
//!
//! Each family has its own lock, taken once per update (never per packet: analyzers aggregate
//! within a batch). A per-family cardinality cap refuses new series beyond it and counts them;
//! a series not updated for the TTL leaves ([`Registry::expire`]) and frees its place. A label
//! policy can drop labels from a family: series that differ only in them are added up, and
//! the cap and TTL apply after that.

mod expose;
mod series;
mod validate;

use validate::check;
pub use validate::{valid_name, validate};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use series::{SeriesValue, fresh, merge};

/// The prefix the host puts before every analyzer's metric names.
pub const PREFIX: &str = "wasmtap_";

/// Series per family unless configured otherwise: enough for every (src, dst, device) of a busy
/// node's pod traffic, small enough that one family can't take the exporter's memory.
pub const DEFAULT_SERIES_CAP: usize = 10_000;

/// How long a series may go without an update before it leaves the exposition, unless
/// configured otherwise: well past Prometheus' staleness window (5 minutes) and any scrape
/// interval, so a quiet series is not lost between scrapes, yet short enough that the series of
/// gone pods and flows free their places under the cap within minutes.
pub const DEFAULT_SERIES_TTL: Duration = Duration::from_secs(600);

/// The least time between two warnings that a family is at its cap: one per family per
/// minute says it, a warning per refused update would flood the log.
const CAP_WARN_EVERY: Duration = Duration::from_secs(60);

/// Bytes of exposition one analyzer's series may take, estimated per series as its lines
/// times their length: about 200 000 per-pair counter series, so every family of an analyzer
/// at the default cap fits, and a scrape stays bounded whatever an analyzer labels.
pub const MAX_ANALYZER_EXPOSITION: usize = 32 << 20;

/// Label policy: family name (with the prefix) → label names dropped from it.
pub type Policy = BTreeMap<String, Vec<String>>;

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
    #[error("{what} is {got}, over the limit of {limit}")]
    TooLarge { what: String, got: usize, limit: usize },
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
    #[error("update to {family} adds {value}, which is negative, not finite or over 2^53")]
    BadCounterAdd { family: String, value: f64 },
    #[error("update to {family} has {got} bucket counts; the family has {want} (with +Inf)")]
    BucketCount { family: String, got: usize, want: usize },
    #[error("update to {family}: histogram count {count} is not the sum of its buckets ({sum})")]
    HistogramCount { family: String, count: u64, sum: u64 },
    #[error("update to {family}: {what} {value} is not finite or beyond ±1e20")]
    NotFinite { family: String, what: &'static str, value: f64 },
    #[error("update to {family} would overflow its series")]
    Overflow { family: String },
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
    names: RwLock<DeviceNames>,
}

#[derive(Debug, Default)]
struct DeviceNames {
    by_index: Vec<Arc<str>>,
    by_name: HashMap<Arc<str>, u16>,
}

/// The last device index: once every index is taken, further names share it.
const LAST_DEVICE: u16 = u16::MAX;

impl Devices {
    /// The index of `name`, adding it if new. Called when a source opens or a capture thread
    /// first sees an interface, not per packet.
    pub fn intern(&self, name: &str) -> u16 {
        if let Some(i) = self.names.read().unwrap_or_else(PoisonError::into_inner).by_name.get(name)
        {
            return *i;
        }
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = names.by_name.get(name) {
            return *i;
        }
        let Ok(i) = u16::try_from(names.by_index.len()) else {
            return LAST_DEVICE;
        };
        let name: Arc<str> = Arc::from(name);
        names.by_index.push(name.clone());
        names.by_name.insert(name, i);
        i
    }

    /// Every name, by index: one lock for a whole render.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.names.read().unwrap_or_else(PoisonError::into_inner).by_index.clone()
    }

    /// The name behind an index, or the number itself for an unknown index.
    pub fn name(&self, index: u16) -> String {
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        names.by_index.get(usize::from(index)).map_or_else(|| index.to_string(), |n| n.to_string())
    }
}

#[derive(Debug)]
struct Family {
    spec: FamilySpec,
    full_name: String,
    owner: String,
    series: Mutex<FamilySeries>,
    /// Exposition bytes held by all series of the owner's families (shared among them).
    budget: Arc<AtomicUsize>,
}

impl Family {
    /// The estimated exposition bytes of one series: its lines times their length.
    fn cost(&self, names: &[String], key: &[Label]) -> usize {
        let value_len = |l: &Label| match l {
            Label::Text(s) => s.len(),
            Label::Ipv4(_) => 15,
            Label::Ipv6(_) => 39,
            Label::Device(_) => 16,
            Label::Number(_) => 20,
        };
        let labels: usize = names.iter().zip(key).map(|(n, v)| n.len() + value_len(v) + 4).sum();
        let lines = match self.spec.kind {
            Kind::Histogram => self.spec.buckets.len() + 3,
            Kind::Counter | Kind::Gauge => 1,
        };
        lines * (self.full_name.len() + labels + 32)
    }
}

#[derive(Debug)]
struct FamilySeries {
    /// foldhash, not SipHash: keys are label values chosen by analyzers, not by a network peer
    /// who could aim collisions at them, and lookups run for every update.
    map: HashMap<Box<[Label]>, Series, foldhash::fast::RandomState>,
    /// Updates refused by the cap, ever.
    refused: u64,
    /// Positions of the declared labels the policy keeps; `None`: all of them.
    keep: Option<Box<[usize]>>,
    /// The label names exposed: the declared ones the policy keeps.
    label_names: Vec<String>,
    /// When the cap was last reported in the log.
    warned: Option<Instant>,
}

/// One series: its value and when it was last updated, in ms since the registry started.
#[derive(Debug)]
struct Series {
    value: SeriesValue,
    touched_ms: u64,
    /// Its share of the owner's exposition budget.
    cost: usize,
}

impl FamilySeries {
    fn new(spec: &FamilySpec, drop: &[String]) -> Self {
        let keep: Vec<usize> =
            (0..spec.label_names.len()).filter(|i| !drop.contains(&spec.label_names[*i])).collect();
        let label_names = keep.iter().map(|i| spec.label_names[*i].clone()).collect();
        let keep = (keep.len() < spec.label_names.len()).then(|| keep.into_boxed_slice());
        Self { map: HashMap::default(), refused: 0, keep, label_names, warned: None }
    }

    /// The series key of an update's label values, after the policy.
    fn key(&self, labels: Vec<Label>) -> Box<[Label]> {
        match &self.keep {
            None => labels.into_boxed_slice(),
            Some(keep) => keep.iter().filter_map(|i| labels.get(*i).cloned()).collect(),
        }
    }
}

fn policy_notes(families: &[Arc<Family>], policy: &Policy) -> Vec<String> {
    let mut notes = Vec::new();
    for (name, labels) in policy {
        match families.iter().find(|f| &f.full_name == name) {
            None => notes.push(format!("label policy: no family {name} is loaded (yet)")),
            Some(f) => {
                for l in labels.iter().filter(|l| !f.spec.label_names.contains(l)) {
                    notes.push(format!("label policy: {name} has no label {l:?}"));
                }
            }
        }
    }
    notes
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
    series_cap: AtomicUsize,
    /// Series TTL in ms; 0 keeps series for ever (replay: its output must not depend on
    /// how long it ran).
    ttl_ms: AtomicU64,
    policy: RwLock<Policy>,
    epoch: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// A registry whose series never expire.
    pub fn new(devices: Arc<Devices>, series_cap: usize) -> Self {
        Self {
            families: RwLock::default(),
            devices,
            series_cap: AtomicUsize::new(series_cap),
            ttl_ms: AtomicU64::new(0),
            policy: RwLock::default(),
            epoch: Instant::now(),
        }
    }

    pub fn devices(&self) -> &Arc<Devices> {
        &self.devices
    }

    /// Sets the series cap and TTL (`None`: series never expire). A lower cap refuses new
    /// series until enough old ones expire; none is removed for it.
    pub fn set_limits(&self, series_cap: usize, ttl: Option<Duration>) {
        self.series_cap.store(series_cap, Ordering::Relaxed);
        let ms = ttl.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        self.ttl_ms.store(ms, Ordering::Relaxed);
    }

    /// Sets the label policy. A family whose dropped labels change starts afresh (its series
    /// go; counters restart from 0). Returns a note for each policy entry that names no
    /// registered family or a label the family does not have.
    pub fn set_policy(&self, policy: Policy) -> Vec<String> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let notes = policy_notes(&families, &policy);
        for f in families.iter() {
            let drop = policy.get(&f.full_name).map_or(&[][..], Vec::as_slice);
            let fresh = FamilySeries::new(&f.spec, drop);
            let mut series = lock(&f.series);
            if fresh.keep != series.keep {
                let freed: usize = series.map.values().map(|s| s.cost).sum();
                f.budget.fetch_sub(freed, Ordering::Relaxed);
                tracing::info!(family = %f.full_name, labels = ?fresh.label_names, "label policy applied; the family starts afresh");
                *series = fresh;
            }
        }
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = policy;
        notes
    }

    /// A note for each entry of the policy in force that names no registered family or a
    /// label the family does not have (for the log, once every analyzer is loaded).
    pub fn policy_notes(&self) -> Vec<String> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        policy_notes(&families, &self.policy.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Removes every series not updated within the TTL. Returns how many went.
    pub fn expire(&self) -> usize {
        let ttl = self.ttl_ms.load(Ordering::Relaxed);
        if ttl == 0 {
            return 0;
        }
        let now = self.now_ms();
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let mut gone = 0;
        for f in families.iter() {
            let mut series = lock(&f.series);
            let before = series.map.len();
            let mut freed = 0;
            series.map.retain(|_, s| {
                let keep = now.saturating_sub(s.touched_ms) <= ttl;
                if !keep {
                    freed += s.cost;
                }
                keep
            });
            f.budget.fetch_sub(freed, Ordering::Relaxed);
            gone += before - series.map.len();
        }
        gone
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
        let policy = self.policy.read().unwrap_or_else(PoisonError::into_inner);
        let budget = Arc::new(AtomicUsize::new(0));
        let list: Vec<Arc<Family>> = specs
            .iter()
            .map(|spec| {
                let full_name = format!("{PREFIX}{}", spec.name);
                let drop = policy.get(&full_name).map_or(&[][..], Vec::as_slice);
                Arc::new(Family {
                    spec: spec.clone(),
                    series: Mutex::new(FamilySeries::new(spec, drop)),
                    full_name,
                    owner: owner.to_owned(),
                    budget: budget.clone(),
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
        let (now, cap) = (self.now_ms(), self.series_cap.load(Ordering::Relaxed));
        for u in updates {
            let Some(family) = families.list.get(u.family as usize) else { continue };
            let mut series = lock(&family.series);
            let key = series.key(u.labels);
            let at_cap = series.map.len() >= cap;
            match series.map.get_mut(&key) {
                Some(s) => {
                    if merge(&mut s.value, u.value) {
                        s.touched_ms = now;
                    } else {
                        // The series' total would overflow: refused, never wrapped.
                        series.refused += 1;
                    }
                }
                None => {
                    let cost = family.cost(&series.label_names, &key);
                    let used = family.budget.load(Ordering::Relaxed);
                    let why = if at_cap {
                        "series cap reached"
                    } else if used + cost > MAX_ANALYZER_EXPOSITION {
                        "analyzer's exposition budget reached"
                    } else {
                        family.budget.fetch_add(cost, Ordering::Relaxed);
                        let s = Series { value: fresh(u.value), touched_ms: now, cost };
                        series.map.insert(key, s);
                        continue;
                    };
                    series.refused += 1;
                    if series.warned.is_none_or(|t| t.elapsed() >= CAP_WARN_EVERY) {
                        series.warned = Some(Instant::now());
                        tracing::warn!(
                            family = %family.full_name, analyzer = %family.owner, cap, used,
                            refused = series.refused,
                            "{why}: new series are refused until old ones expire"
                        );
                    }
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
}

#[cfg(test)]
mod tests;
