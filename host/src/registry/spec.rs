//! Registry stage, declarations: what an analyzer declares at load and sends per call, in the
//! registry's terms.
//!
//! Input: nothing; the runtime converts the ABI's types into these.
//! Output: [`FamilySpec`] and [`Kind`] (declared families), [`Update`], [`Label`] and
//! [`Value`] (updates), and why either was refused ([`FamilyError`], [`UpdateError`]).

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
