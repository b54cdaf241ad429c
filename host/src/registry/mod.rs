//! Stage: registry.
//!
//! Inputs: metric families declared by analyzers at load ([`FamilySpec`]), and the metric
//! updates their calls return ([`Update`]), from any number of worker threads.
//! Outputs: the exposition text for the exporter, replay and check ([`Registry::exposition`]),
//! aggregated across workers, with interned label values formatted only at scrape time; and
//! the series counts as self-metrics ([`expiry::SeriesCounts`]), computed at every render.
//!
//! Each family has its own lock, taken once per update (never per packet: analyzers aggregate
//! within a batch). A per-family cardinality cap refuses new series beyond it and counts them;
//! a series not updated for the TTL leaves (the [`expiry::Expiry`] thread) and frees its place. A
//! label-less counter's one series is known in advance: it is exported at 0 from the start
//! and never expires. A label policy can drop labels from a family: series that differ only
//! in them are added up, and the cap and TTL apply after that.
//!
//! With pod attribution on ([`Registry::with_attribution`]), a family that declares `src_ip`
//! and `dst_ip` gains the namespace, workload and pod of each end ([`PAIR_LABELS`]), and one
//! that declares `device` those of the pod behind the interface ([`DEVICE_LABELS`]). Their
//! values are looked up when an update is applied, in the table in force then, so a series
//! keeps the pod that held its address when it was made.

mod attribute;
mod devices;
pub mod expiry;
mod expose;
mod series;
mod spec;
mod validate;

pub use attribute::{DEVICE_LABELS, PAIR_LABELS};
pub use devices::Devices;
pub use spec::{
    FamilyError, FamilySpec, Kind, Label, PREFIX, Reserved, Update, UpdateError, UpdateList,
    UpdateRef, Value, ValueRef,
};

use validate::check;
pub use validate::{valid_name, validate, validate_count};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use attribute::{Attributed, Column, Owners};
use parking_lot::{Mutex, RwLock};
use series::{SeriesValue, fresh, merge};

use crate::pods::{Attribution, Owner};
use crate::telemetry::Throttle;

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

/// Bytes of exposition one analyzer's series may take unless configured otherwise, estimated
/// per series as its lines times their length: about 200 000 per-pair counter series (every
/// counter family of an analyzer at the default cap fits) or 11 000 per-pair histograms of 18
/// buckets, and a scrape stays bounded whatever an analyzer labels.
pub const DEFAULT_ANALYZER_EXPOSITION: usize = 32 << 20;

/// Label policy: family name (with the prefix) → label names dropped from it.
pub type Policy = BTreeMap<String, Vec<String>>;

#[derive(Debug)]
struct Family {
    spec: FamilySpec,
    full_name: String,
    owner: String,
    /// The declared labels and those attribution adds, as an update's values come.
    columns: Vec<Column>,
    /// Every label name it may expose: the declared ones and those attribution adds.
    label_names: Vec<String>,
    /// Where the attributed values come from; `None` when attribution adds nothing.
    attributed: Option<Attributed>,
    series: Mutex<FamilySeries>,
    /// Exposition bytes held by all series of the owner's families (shared among them).
    budget: Arc<AtomicUsize>,
}

impl Family {
    /// Exports a label-less counter's one series at 0 if it has none: its labels are known in
    /// advance, so it shows from the start.
    fn seed(&self, series: &mut FamilySeries, now_ms: u64) {
        if self.spec.kind != Kind::Counter
            || !series.label_names.is_empty()
            || !series.map.is_empty()
        {
            return;
        }
        let cost = self.cost(&[], &[], &[]);
        self.budget.fetch_add(cost, Ordering::Relaxed);
        let s = Series { value: fresh(ValueRef::CounterAdd(0.0)), touched_ms: now_ms, cost };
        series.map.insert(Box::default(), vec![Owned { owners: Box::default(), series: s }]);
        series.len += 1;
    }

    /// The estimated exposition bytes of one series: its lines times their length.
    fn cost(&self, names: &[String], key: &[Label], owners: &[&Arc<Owner>]) -> usize {
        let value_len = |l: &Label| match l {
            Label::Text(s) => s.len(),
            Label::Ipv4(_) => 15,
            Label::Ipv6(_) => 39,
            Label::Device(_) => 16,
            Label::Number(_) => 20,
            Label::Owner(o) => o.fields().iter().map(|f| f.len()).sum(),
        };
        let names: usize = names.iter().map(|n| n.len() + 4).sum();
        let owners: usize = owners.iter().flat_map(|o| o.fields()).map(str::len).sum();
        let labels = names + owners + key.iter().map(value_len).sum::<usize>();
        let lines = match self.spec.kind {
            Kind::Histogram => self.spec.buckets.len() + 3,
            Kind::Counter | Kind::Gauge => 1,
        };
        lines * (self.full_name.len() + labels + 32)
    }
}

#[derive(Debug)]
struct FamilySeries {
    /// The series by their declared label values (after the policy), and for each, one per
    /// owners that attribution gave them (one with no owners when the family has none):
    /// an update looks up its declared values as it would without attribution, then compares
    /// its owners by pointer.
    /// foldhash, not SipHash: keys are label values chosen by analyzers, not by a network peer
    /// who could aim collisions at them, and lookups run for every update.
    map: HashMap<Box<[Label]>, Vec<Owned>, foldhash::fast::RandomState>,
    /// Series in `map`, counting each owners apart.
    len: usize,
    /// Updates refused by the cap, ever.
    refused: u64,
    /// Positions of the declared labels the policy keeps; `None`: all of them.
    keep: Option<Box<[usize]>>,
    /// Per owner column, the fields (namespace, workload, pod) the policy keeps; a column with
    /// none kept is left out.
    owner_fields: Box<[[bool; 3]]>,
    /// The label names exposed: those the policy keeps, in order.
    label_names: Vec<String>,
    /// Per column of a key, the owner fields it exposes (`None`: a declared label, one name).
    shape: Box<[Option<[bool; 3]>]>,
    /// Lets the cap be reported in the log once per [`CAP_WARN_EVERY`].
    warnings: Throttle,
}

/// A series of a declared key, and the owners that tell it from the key's other series.
#[derive(Debug)]
struct Owned {
    owners: Box<[Arc<Owner>]>,
    series: Series,
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
    /// The series of a family with these columns (declared and attributed), with the
    /// policy's `drop` applied.
    fn new(columns: &[Column], drop: &[String]) -> Self {
        let dropped = |n: &str| drop.iter().any(|d| d == n);
        let (mut keep, mut label_names, mut shape) = (Vec::new(), Vec::new(), Vec::new());
        let mut owner_fields = Vec::new();
        let mut declared = 0;
        for (at, c) in columns.iter().enumerate() {
            match c {
                Column::Declared(n) => {
                    declared += 1;
                    if !dropped(n) {
                        keep.push(at);
                        label_names.push(n.clone());
                        shape.push(None);
                    }
                }
                Column::Owner(names) => {
                    let fields = names.map(|n| !dropped(n));
                    owner_fields.push(fields);
                    if fields.contains(&true) {
                        let kept = names.iter().zip(fields).filter(|(_, k)| *k);
                        label_names.extend(kept.map(|(n, _)| n.to_string()));
                        shape.push(Some(fields));
                    }
                }
            }
        }
        let keep = (keep.len() < declared).then(|| keep.into_boxed_slice());
        Self {
            map: HashMap::default(),
            len: 0,
            refused: 0,
            keep,
            owner_fields: owner_fields.into_boxed_slice(),
            label_names,
            shape: shape.into_boxed_slice(),
            warnings: Throttle::new(CAP_WARN_EVERY),
        }
    }

    /// The key of an update's declared label values, after the policy: the labels
    /// themselves, or those the policy keeps, gathered in `kept`.
    fn key<'a>(&self, labels: &'a [Label], kept: &'a mut Vec<Label>) -> &'a [Label] {
        match &self.keep {
            None => labels,
            Some(keep) => {
                kept.clear();
                kept.extend(keep.iter().filter_map(|i| labels.get(*i).cloned()));
                kept
            }
        }
    }

    /// An update's owners as this family keeps them: the policy's fields, and no column it
    /// drops whole.
    fn kept<'a>(&self, owners: &Owners<'a>) -> Owners<'a> {
        let mut out = Owners { list: owners.list, len: 0 };
        for (o, fields) in owners.as_slice().iter().zip(self.owner_fields.iter()) {
            if fields.contains(&true) {
                out.list[out.len] = o.reduced(*fields);
                out.len += 1;
            }
        }
        out
    }

    /// Every series with its whole key (declared values, then owners) for a render.
    fn entries(&self) -> impl Iterator<Item = (Box<[Label]>, &Series)> {
        self.map.iter().flat_map(|(key, list)| {
            list.iter().map(move |o| {
                let owners = o.owners.iter().map(|a| Label::Owner(a.clone()));
                (key.iter().cloned().chain(owners).collect(), &o.series)
            })
        })
    }
}

fn policy_notes(families: &[Arc<Family>], policy: &Policy) -> Vec<String> {
    let mut notes = Vec::new();
    for (name, labels) in policy {
        match families.iter().find(|f| &f.full_name == name) {
            None => notes.push(format!("label policy: no family {name} is loaded (yet)")),
            Some(f) => {
                for l in labels.iter().filter(|l| !f.label_names.contains(l)) {
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
    /// Bytes of exposition each analyzer's series may take.
    exposition_budget: AtomicUsize,
    /// Series TTL in ms; 0 keeps series for ever (replay: its output must not depend on
    /// how long it ran).
    ttl_ms: AtomicU64,
    policy: RwLock<Policy>,
    epoch: Instant,
    /// The pod table updates are attributed from; `None`: no attribution labels.
    attribution: Option<Arc<Attribution>>,
    /// The owner of an address or device that no pod holds: empty values.
    nobody: Arc<Owner>,
}

/// A TTL in ms as the registry keeps it: 0 for none, else at least 1.
fn ttl_ms(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
}

impl Registry {
    /// A registry whose series never expire.
    pub fn new(devices: Arc<Devices>, series_cap: usize) -> Self {
        Self::with_limits(devices, series_cap, None)
    }

    /// A registry with a series cap and TTL (`None`: series never expire).
    pub fn with_limits(devices: Arc<Devices>, series_cap: usize, ttl: Option<Duration>) -> Self {
        Self {
            families: RwLock::default(),
            devices,
            series_cap: AtomicUsize::new(series_cap),
            exposition_budget: AtomicUsize::new(DEFAULT_ANALYZER_EXPOSITION),
            ttl_ms: AtomicU64::new(ttl_ms(ttl)),
            policy: RwLock::default(),
            epoch: Instant::now(),
            attribution: None,
            nobody: Owner::new("", "", ""),
        }
    }

    /// Attributes updates from `attribution`'s table: families registered from now on gain
    /// the namespace, workload and pod labels.
    pub fn with_attribution(mut self, attribution: Arc<Attribution>) -> Self {
        self.attribution = Some(attribution);
        self
    }

    /// The pod table in use, if attribution is on.
    pub fn attribution(&self) -> Option<&Arc<Attribution>> {
        self.attribution.as_ref()
    }

    pub fn devices(&self) -> &Arc<Devices> {
        &self.devices
    }

    /// Sets the series cap and TTL (`None`: series never expire). A lower cap refuses new
    /// series until enough old ones expire; none is removed for it.
    pub fn set_limits(&self, series_cap: usize, ttl: Option<Duration>) {
        self.series_cap.store(series_cap, Ordering::Relaxed);
        self.ttl_ms.store(ttl_ms(ttl), Ordering::Relaxed);
    }

    /// Sets the bytes of exposition each analyzer's series may take. A lower budget refuses
    /// new series until enough old ones expire; none is removed for it.
    pub fn set_exposition_budget(&self, bytes: usize) {
        self.exposition_budget.store(bytes, Ordering::Relaxed);
    }

    /// The bytes of exposition each analyzer's series may take.
    pub fn exposition_budget(&self) -> usize {
        self.exposition_budget.load(Ordering::Relaxed)
    }

    /// Sets the label policy. A family whose dropped labels change starts afresh (its series
    /// go; counters restart from 0). Returns a note for each policy entry that names no
    /// registered family or a label the family does not have.
    pub fn set_policy(&self, policy: Policy) -> Vec<String> {
        let families = self.families.read();
        let notes = policy_notes(&families, &policy);
        for f in families.iter() {
            let drop = policy.get(&f.full_name).map_or(&[][..], Vec::as_slice);
            let fresh = FamilySeries::new(&f.columns, drop);
            let mut series = f.series.lock();
            if fresh.keep != series.keep || fresh.owner_fields != series.owner_fields {
                let freed: usize = series.map.values().flatten().map(|o| o.series.cost).sum();
                f.budget.fetch_sub(freed, Ordering::Relaxed);
                tracing::info!(family = %f.full_name, labels = ?fresh.label_names, "label policy applied; the family starts afresh");
                *series = fresh;
                f.seed(&mut series, self.now_ms());
            }
        }
        *self.policy.write() = policy;
        notes
    }

    /// A note for each entry of the policy in force that names no registered family or a
    /// label the family does not have (for the log, once every analyzer is loaded).
    pub fn policy_notes(&self) -> Vec<String> {
        let families = self.families.read();
        policy_notes(&families, &self.policy.read())
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
        let families = self.families.read();
        let mut gone = 0;
        for f in families.iter() {
            // A label-less counter's series is known in advance: it stays.
            let known = f.spec.kind == Kind::Counter;
            let mut series = f.series.lock();
            let before = series.len;
            let mut freed = 0;
            series.map.retain(|key, list| {
                list.retain(|o| {
                    let s = &o.series;
                    let keep = (known && key.is_empty()) || now.saturating_sub(s.touched_ms) <= ttl;
                    if !keep {
                        freed += s.cost;
                    }
                    keep
                });
                !list.is_empty()
            });
            series.len = series.map.values().map(Vec::len).sum();
            f.budget.fetch_sub(freed, Ordering::Relaxed);
            gone += before - series.len;
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
        let mut families = self.families.write();
        for spec in specs {
            let full_name = format!("{PREFIX}{}", spec.name);
            if let Some(f) = families.iter().find(|f| f.full_name == full_name && !is_old(f)) {
                let owner = f.owner.clone();
                return Err(FamilyError::Collision { name: full_name, owner });
            }
        }
        families.retain(|f| !is_old(f));
        let policy = self.policy.read();
        let budget = Arc::new(AtomicUsize::new(0));
        let list: Vec<Arc<Family>> = specs
            .iter()
            .map(|spec| {
                let full_name = format!("{PREFIX}{}", spec.name);
                let drop = policy.get(&full_name).map_or(&[][..], Vec::as_slice);
                let attributed =
                    self.attribution.as_ref().and_then(|_| Attributed::of(&spec.label_names));
                let mut columns: Vec<Column> =
                    spec.label_names.iter().cloned().map(Column::Declared).collect();
                columns.extend(attributed.iter().flat_map(|a| a.columns()));
                let label_names = columns
                    .iter()
                    .flat_map(|c| match c {
                        Column::Declared(n) => vec![n.clone()],
                        Column::Owner(names) => names.map(String::from).to_vec(),
                    })
                    .collect();
                Arc::new(Family {
                    spec: spec.clone(),
                    series: Mutex::new(FamilySeries::new(&columns, drop)),
                    columns,
                    label_names,
                    attributed,
                    full_name,
                    owner: owner.to_owned(),
                    budget: budget.clone(),
                })
            })
            .collect();
        let now = self.now_ms();
        for f in &list {
            f.seed(&mut f.series.lock(), now);
        }
        families.extend(list.iter().cloned());
        Ok(Families { owner: owner.to_owned(), list: list.into() })
    }

    /// Removes an analyzer's families and all their series.
    pub fn unregister(&self, families: &Families) {
        let mut all = self.families.write();
        all.retain(|f| !families.list.iter().any(|g| Arc::ptr_eq(f, g)));
    }

    /// Applies one call's updates, owned (tests and tools; workers use [`Registry::apply_list`]).
    pub fn apply(&self, families: &Families, updates: Vec<Update>) -> Result<(), UpdateError> {
        self.apply_list(families, &UpdateList::from(updates))
    }

    /// Applies one call's updates. They are all checked first, so a bad update applies nothing.
    /// An update to a series that exists allocates nothing.
    pub fn apply_list(&self, families: &Families, updates: &UpdateList) -> Result<(), UpdateError> {
        for u in updates.iter() {
            let f = families.list.get(u.family as usize);
            check(&f.ok_or(UpdateError::NoSuchFamily(u.family))?.spec, &u)?;
        }
        let (now, cap) = (self.now_ms(), self.series_cap.load(Ordering::Relaxed));
        let budget = self.exposition_budget();
        // One load of the pod table for the whole call.
        let table = self.attribution.as_ref().map(|a| a.load());
        let mut memo = None;
        // The declared labels a label policy keeps, for the updates of families with one.
        let mut kept = Vec::new();
        for u in updates.iter() {
            let Some(family) = families.list.get(u.family as usize) else { continue };
            let owners = match (&family.attributed, &table) {
                (Some(a), Some(table)) => {
                    a.owners(u.labels, table, &self.devices, &self.nobody, &mut memo)
                }
                _ => Owners { list: [&self.nobody; 3], len: 0 },
            };
            let mut series = family.series.lock();
            let owners = series.kept(&owners);
            let owners = owners.as_slice();
            let key = series.key(u.labels, &mut kept);
            let at_cap = series.len >= cap;
            let same = |o: &Owned| {
                o.owners.len() == owners.len()
                    && o.owners.iter().zip(owners).all(|(a, b)| Arc::ptr_eq(a, b) || a == *b)
            };
            let found = series.map.get_mut(key).and_then(|list| list.iter_mut().find(|o| same(o)));
            match found {
                Some(Owned { series: s, .. }) => {
                    if merge(&mut s.value, u.value) {
                        s.touched_ms = now;
                    } else {
                        // The series' total would overflow: refused, never wrapped.
                        series.refused += 1;
                    }
                }
                None => {
                    let cost = family.cost(&series.label_names, key, owners);
                    let used = family.budget.load(Ordering::Relaxed);
                    let why = if at_cap {
                        "series cap reached"
                    } else if used + cost > budget {
                        "analyzer's exposition budget reached"
                    } else {
                        family.budget.fetch_add(cost, Ordering::Relaxed);
                        let s = Series { value: fresh(u.value), touched_ms: now, cost };
                        let owners = owners.iter().map(|o| Arc::clone(o)).collect();
                        series.map.entry(key.into()).or_default().push(Owned { owners, series: s });
                        series.len += 1;
                        continue;
                    };
                    series.refused += 1;
                    if series.warnings.ready() {
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
        let families = self.families.read();
        families
            .iter()
            .map(|f| {
                let s = f.series.lock();
                (f.full_name.clone(), s.len, s.refused)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
