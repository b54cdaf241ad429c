//! Registry stage, declarations: what an analyzer declares at load and sends per call, in the
//! registry's terms.
//!
//! Input: nothing; the runtime converts the ABI's types into these.
//! Output: [`FamilySpec`] and [`Kind`] (declared families), [`UpdateList`] (one call's
//! updates in reusable buffers, read as [`UpdateRef`]s), [`Update`], [`Label`] and [`Value`]
//! (one update, owned), and why either was refused ([`FamilyError`], [`UpdateError`]).

use std::sync::Arc;

use crate::pods::Owner;

/// The prefix the host puts before every analyzer's metric names.
pub const PREFIX: &str = "wasmtap_";

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The name the text format's `# TYPE` line and `/analyzers` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
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

/// Why a declared family was refused. Each message names the rule that was broken, so that
/// an analyzer's author knows what to change without reading the host's code.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FamilyError {
    #[error(
        "metric name {0:?} is not a valid Prometheus name: a metric name is lower snake case, \
         [a-z_][a-z0-9_]*"
    )]
    BadName(String),
    #[error("metric name {0:?} must not start with {PREFIX:?}: the host adds that prefix")]
    Prefixed(String),
    #[error("counter {0:?} must end in \"_total\": Prometheus names every counter so")]
    CounterSuffix(String),
    #[error(
        "metric {name:?}: label name {label:?} is not valid: a label name is lower snake case, \
         [a-z_][a-z0-9_]*"
    )]
    BadLabel { name: String, label: String },
    #[error("metric {name:?}: label name {label:?} is reserved: {}", .why.as_str())]
    ReservedLabel { name: String, label: String, why: Reserved },
    #[error(
        "metric {name:?}: label {label:?} is declared twice: a family's label names are unique"
    )]
    DuplicateLabel { name: String, label: String },
    #[error(
        "histogram {0:?}: buckets must be finite and strictly increasing (+Inf is implied, \
         not declared)"
    )]
    BadBuckets(String),
    #[error("metric {0:?}: only histograms declare buckets")]
    UnexpectedBuckets(String),
    #[error(
        "metric {name:?} is already exported by analyzer {owner:?}: a metric name belongs to one \
         analyzer (built-in analyzers included)"
    )]
    Collision { name: String, owner: String },
    #[error("metric {0:?} is declared twice: an analyzer's metric names are unique")]
    Duplicate(String),
    #[error("{what} is {got}, over the limit of {limit}")]
    TooLarge { what: String, got: usize, limit: usize },
}

/// Why a label name that matches the pattern is still refused: a name the exposition format
/// gives a meaning of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// `le`: the bucket bound label of a histogram's `_bucket` lines.
    BucketBound,
    /// `__*`: Prometheus's internal labels (`__name__`, `__address__`, …).
    Internal,
}

impl Reserved {
    /// The rule, as the error message states it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reserved::BucketBound => "Prometheus uses \"le\" for the bounds of histogram buckets",
            Reserved::Internal => {
                "names starting with \"__\" are reserved for Prometheus internals"
            }
        }
    }

    /// Whether `label` is reserved, and why.
    pub fn of(label: &str) -> Option<Reserved> {
        if label == "le" {
            Some(Reserved::BucketBound)
        } else if label.starts_with("__") {
            Some(Reserved::Internal)
        } else {
            None
        }
    }
}

/// Why an update was refused. Any of these is a fault of the analyzer that sent it; each
/// message names the rule that was broken.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UpdateError {
    #[error(
        "update names family index {0}, which was not declared: an update names one of the \
         families init declared"
    )]
    NoSuchFamily(u32),
    #[error(
        "update to {family} has {got} label values for {want} label names: an update has one \
         value per declared label"
    )]
    LabelCount { family: String, got: usize, want: usize },
    #[error(
        "update to {family} has the wrong kind of value for a {}: a counter takes counter-add, \
         a gauge gauge-set, a histogram histogram",
        .kind.as_str()
    )]
    WrongKind { family: String, kind: Kind },
    #[error("update to {family} adds {value}, which is negative, not finite or over 2^53")]
    BadCounterAdd { family: String, value: f64 },
    #[error(
        "update to {family} has {got} bucket counts; the family has {want} (with +Inf): an \
         update has one count per declared bucket and one for +Inf"
    )]
    BucketCount { family: String, got: usize, want: usize },
    #[error(
        "update to {family}: histogram count {count} is not the sum of its buckets ({sum}): \
         each observation counts in exactly one bucket"
    )]
    HistogramCount { family: String, count: u64, sum: u64 },
    #[error("update to {family}: {what} {value} is not finite or beyond ±1e20")]
    NotFinite { family: String, what: &'static str, value: f64 },
    #[error(
        "update to {family} would overflow its series: one update observes at most 2^40 values"
    )]
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
    /// The namespace, workload and pod that attribution adds: one value, three labels.
    Owner(Arc<Owner>),
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

/// The value part of an update, borrowed from an [`UpdateList`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    CounterAdd(f64),
    GaugeSet(f64, u64),
    Histogram { buckets: &'a [u64], sum: f64, count: u64 },
}

/// One update, borrowed from an [`UpdateList`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateRef<'a> {
    pub family: u32,
    pub labels: &'a [Label],
    pub value: ValueRef<'a>,
}

/// One call's updates, their label values and bucket counts side by side in buffers that keep
/// their capacity when cleared: a worker reads every call's updates into the same list, so
/// that past the first calls reading them allocates nothing but text labels.
#[derive(Debug, Default)]
pub struct UpdateList {
    entries: Vec<Entry>,
    labels: Vec<Label>,
    buckets: Vec<u64>,
    /// Where the labels of the update being built begin.
    open: usize,
}

/// One update of an [`UpdateList`]: its labels and buckets as ranges of the list's buffers.
#[derive(Debug, Clone, Copy)]
struct Entry {
    family: u32,
    labels: (usize, usize),
    value: Stored,
}

#[derive(Debug, Clone, Copy)]
enum Stored {
    CounterAdd(f64),
    GaugeSet(f64, u64),
    Histogram { buckets: (usize, usize), sum: f64, count: u64 },
}

/// Capacity an [`UpdateList`] keeps from one call to the next, in updates, label values and
/// bucket counts: what the busy calls of the built-in analyzers need between two flushes. A
/// call that needed more (a flush of tens of thousands of series, a hostile analyzer's 65 536
/// histograms) gives the rest back when the list is cleared, so that every worker's lists
/// together stay small.
const KEEP_UPDATES: usize = 4096;
const KEEP_LABELS: usize = 3 * KEEP_UPDATES;
const KEEP_BUCKETS: usize = 4 * KEEP_UPDATES;

impl UpdateList {
    /// Forgets every update, keeping the buffers up to a bound.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.labels.clear();
        self.buckets.clear();
        self.entries.shrink_to(KEEP_UPDATES);
        self.labels.shrink_to(KEEP_LABELS);
        self.buckets.shrink_to(KEEP_BUCKETS);
        self.open = 0;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a label value to the update being built.
    pub fn label(&mut self, label: Label) {
        self.labels.push(label);
    }

    /// Ends the update being built (its labels: those added since the last one ended).
    fn end(&mut self, family: u32, value: Stored) {
        let labels = (self.open, self.labels.len());
        self.entries.push(Entry { family, labels, value });
        self.open = self.labels.len();
    }

    /// Ends the update being built as a counter add.
    pub fn counter_add(&mut self, family: u32, value: f64) {
        self.end(family, Stored::CounterAdd(value));
    }

    /// Ends the update being built as a gauge set at packet time `at_ns`.
    pub fn gauge_set(&mut self, family: u32, value: f64, at_ns: u64) {
        self.end(family, Stored::GaugeSet(value, at_ns));
    }

    /// Ends the update being built as histogram observations.
    pub fn histogram(
        &mut self,
        family: u32,
        buckets: impl IntoIterator<Item = u64>,
        sum: f64,
        count: u64,
    ) {
        let first = self.buckets.len();
        self.buckets.extend(buckets);
        let buckets = (first, self.buckets.len());
        self.end(family, Stored::Histogram { buckets, sum, count });
    }

    /// Adds an owned update.
    pub fn push(&mut self, u: Update) {
        for l in u.labels {
            self.label(l);
        }
        match u.value {
            Value::CounterAdd(v) => self.counter_add(u.family, v),
            Value::GaugeSet(v, at) => self.gauge_set(u.family, v, at),
            Value::Histogram { buckets, sum, count } => {
                self.histogram(u.family, buckets, sum, count)
            }
        }
    }

    /// The updates, in order.
    pub fn iter(&self) -> impl Iterator<Item = UpdateRef<'_>> {
        self.entries.iter().map(|e| UpdateRef {
            family: e.family,
            labels: self.labels.get(e.labels.0..e.labels.1).unwrap_or_default(),
            value: match e.value {
                Stored::CounterAdd(v) => ValueRef::CounterAdd(v),
                Stored::GaugeSet(v, at) => ValueRef::GaugeSet(v, at),
                Stored::Histogram { buckets: (a, b), sum, count } => ValueRef::Histogram {
                    buckets: self.buckets.get(a..b).unwrap_or_default(),
                    sum,
                    count,
                },
            },
        })
    }
}

impl From<Vec<Update>> for UpdateList {
    fn from(updates: Vec<Update>) -> Self {
        let mut list = Self::default();
        for u in updates {
            list.push(u);
        }
        list
    }
}
