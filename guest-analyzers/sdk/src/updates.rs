//! Aggregation of metric updates: at most one update per series per returned list.
//!
//! Input: counter adds, gauge sets and histogram observations that an analyzer emits while it
//! walks a batch (or on `tick`), each naming a family handle and its label values. Output, when
//! the runner drains it (at the end of a call, or of several calls while the host lets the
//! analyzer hold its updates): one update per series, in first-seen order, packed into the
//! bytes `process` returns (or read back as WIT `metric-update`s, for tests). Counter
//! adds are summed; histogram observations become non-cumulative bucket counts (`+Inf` last),
//! a sum and a count; a gauge keeps the value with the latest packet time.
//!
//! Histogram sums are kept exactly, in billionths (nanoseconds for times), as the host's
//! registry keeps them: the total does not depend on how observations were grouped into
//! updates, so holding updates over several calls changes no output.
//!
//! Cost: the series that a family updated last is checked first (runs of packets from one
//! device or connection); otherwise a series already seen is found by hashing the family
//! index and the [`Label`] values in place, and updated in place: no key is built and nothing
//! is allocated. All buffers keep their capacity from one drain to the next.

use core::hash::{Hash, Hasher};

use hashbrown::HashTable;

use crate::bindings::wasmtap::analyzer::types as wit;
use wasmtap_record::updates as packed;

use crate::family::{AnalyzerInfo, Counter, Gauge, Histogram, Label, MAX_LABELS};

mod map;
pub use map::LabelMap;

/// Marks an empty entry of `Updates::last`.
const NONE: usize = usize::MAX;

/// Fills the unused label slots of a key; never compared (only `len` slots are).
const NO_LABEL: Label = Label::Number(0);

/// A series key: family index and its label values, inline.
#[derive(Clone, Copy)]
struct SeriesKey {
    family: u32,
    len: u8,
    labels: [Label; MAX_LABELS],
}

impl SeriesKey {
    #[inline]
    fn labels(&self) -> &[Label] {
        &self.labels[..usize::from(self.len)]
    }
}

/// The hash of a series: its family index and its labels (no length prefix: the family fixes
/// the number of labels).
#[inline]
fn series_hash(family: u32, labels: &[Label]) -> u64 {
    let mut h = SeriesHasher::default();
    h.write_u32(family);
    for label in labels {
        label.hash(&mut h);
    }
    h.finish()
}

/// A small multiply-rotate hasher with a final avalanche. The keys are addresses and small
/// integers from one batch; SipHash would dominate the per-packet cost, and wasm has no source
/// of random seeds anyway.
#[derive(Default)]
struct SeriesHasher(u64);

/// Odd 64-bit multiplier (from FxHash) that spreads input bits upward.
const MIX: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for SeriesHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(MIX);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // MurmurHash3's fmix64: every input bit affects the low bits hashbrown indexes with.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// Billionths in one unit of an observation.
const PER_UNIT: i128 = 1_000_000_000;

/// An observation (finite) in billionths of its unit, rounded to the nearest: a nanosecond for
/// times; sizes and counts are whole and stay exact.
#[inline]
fn billionths(value: f64) -> i128 {
    let b = (value * 1e9).round_ties_even();
    // The common case in one native conversion; past ±9e18 (9e9 units) the wide one.
    if b.abs() < 9.0e18 { i128::from(b as i64) } else { b as i128 }
}

/// An exact sum in billionths as the f64 of the update: whole sums as integers (exact below
/// 2^53), others divided out (the host rounds back to the same billionths below ~2^51).
fn sum_to_f64(sum: i128) -> f64 {
    if sum % PER_UNIT == 0 { (sum / PER_UNIT) as f64 } else { sum as f64 / 1e9 }
}

/// The running value of one series until the updates are drained.
#[derive(Clone, Copy)]
enum Acc {
    Counter(f64),
    Gauge {
        value: f64,
        at_ns: u64,
    },
    /// Bucket counts live in `Updates::buckets[first..first + bounds + 1]`; `sum` is in
    /// billionths ([`billionths`]).
    Histogram {
        first: usize,
        sum: i128,
        count: u64,
    },
}

/// What `Updates` needs to know about a family.
struct Shape {
    name: String,
    labels: usize,
    bounds: Vec<f64>,
}

/// The metric updates of one call, aggregated per series. Handed to
/// [`crate::Analyzer::process`] and [`crate::Analyzer::tick`]; the runner drains it.
///
/// Misuse (a handle from another analyzer, the wrong number of labels, a negative or
/// non-finite counter add or observation) does not panic: the first such error is kept and the
/// call returns it to the host instead of any update.
pub struct Updates {
    shapes: Vec<Shape>,
    /// Indices into `series`, hashed by [`series_hash`].
    index: HashTable<usize>,
    series: Vec<(SeriesKey, Acc)>,
    /// Per family, the series last updated (`NONE` if none): packets in a row often hit the
    /// same series (one device, one connection), and this skips the hash for them.
    last: Vec<usize>,
    buckets: Vec<u64>,
    error: Option<String>,
}

impl Updates {
    /// An empty accumulator for the families in `info`.
    pub fn new(info: &AnalyzerInfo) -> Self {
        Self {
            shapes: info
                .families
                .iter()
                .map(|f| Shape {
                    name: f.name.clone(),
                    labels: f.label_names.len(),
                    bounds: f.buckets.clone(),
                })
                .collect(),
            index: HashTable::new(),
            series: Vec::new(),
            last: vec![NONE; info.families.len()],
            buckets: Vec::new(),
            error: None,
        }
    }

    /// Number of distinct series updated since the updates were last drained.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True if nothing was emitted since the updates were last drained.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// True if a misuse was recorded: the next drain returns it as the call's error.
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Adds `value` (finite, not negative) to a counter series.
    #[inline]
    pub fn add(&mut self, counter: Counter, labels: &[Label], value: f64) {
        if !(value.is_finite() && value >= 0.0) {
            return self
                .fail(counter.0, format_args!("counter add {value} is negative or not finite"));
        }
        if let Some(i) = self.slot(counter.0, labels, Acc::Counter(0.0))
            && let Acc::Counter(total) = &mut self.series[i].1
        {
            *total += value;
        }
    }

    /// Adds one to a counter series.
    #[inline]
    pub fn inc(&mut self, counter: Counter, labels: &[Label]) {
        self.add(counter, labels, 1.0);
    }

    /// Sets a gauge series; of several sets in one call, the one with the latest `at_ns` (packet
    /// time) wins, and on a tie the later call.
    #[inline]
    pub fn set(&mut self, gauge: Gauge, labels: &[Label], value: f64, at_ns: u64) {
        if let Some(i) = self.slot(gauge.0, labels, Acc::Gauge { value, at_ns })
            && let Acc::Gauge { value: v, at_ns: t } = &mut self.series[i].1
            && at_ns >= *t
        {
            *v = value;
            *t = at_ns;
        }
    }

    /// Records one observation (finite) in a histogram series.
    #[inline]
    pub fn observe(&mut self, histogram: Histogram, labels: &[Label], value: f64) {
        if !value.is_finite() {
            return self.fail(histogram.0, format_args!("observation {value} is not finite"));
        }
        // Prometheus buckets are `le`: the first bound >= value; past the last is +Inf.
        let bucket = self
            .shapes
            .get(histogram.0 as usize)
            .map_or(0, |s| s.bounds.partition_point(|b| *b < value));
        self.add_to_histogram(histogram, labels, |buckets, sum, count| {
            if let Some(c) = buckets.get_mut(bucket) {
                *c += 1;
            }
            *sum = sum.saturating_add(billionths(value));
            *count += 1;
        });
    }

    /// Merges observations the analyzer binned itself into a histogram series: `counts` has
    /// one count per declared bucket plus a last one for `+Inf`, not cumulative (each
    /// observation in exactly one), and `sum` is their sum (finite). For an analyzer that
    /// aggregates a run of packets in its own arrays, then emits once per run.
    pub fn observe_binned(
        &mut self,
        histogram: Histogram,
        labels: &[Label],
        counts: &[u64],
        sum: f64,
    ) {
        if let Some(shape) = self.shapes.get(histogram.0 as usize)
            && shape.bounds.len() + 1 != counts.len()
        {
            let (got, want) = (counts.len(), shape.bounds.len() + 1);
            return self.fail(histogram.0, format_args!("{got} bucket counts, not {want}"));
        }
        if !sum.is_finite() {
            return self.fail(histogram.0, format_args!("observation sum {sum} is not finite"));
        }
        self.add_to_histogram(histogram, labels, |buckets, total, count| {
            for (c, n) in buckets.iter_mut().zip(counts) {
                *c = c.saturating_add(*n);
            }
            *total = total.saturating_add(billionths(sum));
            *count = count.saturating_add(counts.iter().fold(0u64, |a, n| a.saturating_add(*n)));
        });
    }

    /// Finds or creates a histogram series and hands `add` its bucket counts (with `+Inf`), its
    /// sum in billionths and its count.
    #[inline]
    fn add_to_histogram(
        &mut self,
        histogram: Histogram,
        labels: &[Label],
        add: impl FnOnce(&mut [u64], &mut i128, &mut u64),
    ) {
        let first = self.buckets.len();
        let Some(i) = self.slot(histogram.0, labels, Acc::Histogram { first, sum: 0, count: 0 })
        else {
            return;
        };
        let slots = self.shapes.get(histogram.0 as usize).map_or(0, |s| s.bounds.len() + 1);
        if let Acc::Histogram { first, sum, count } = &mut self.series[i].1
            && let Some(buckets) = self.buckets.get_mut(*first..*first + slots)
        {
            add(buckets, sum, count);
        }
    }

    /// Finds or creates the series; `None` (and an error kept) on misuse.
    #[inline]
    fn slot(&mut self, family: u32, labels: &[Label], init: Acc) -> Option<usize> {
        let f = family as usize;
        let (Some(shape), Some(last)) = (self.shapes.get(f), self.last.get(f).copied()) else {
            self.misuse(family, labels);
            return None;
        };
        if labels.len() != shape.labels {
            self.misuse(family, labels);
            return None;
        }
        if let Some((key, _)) = self.series.get(last)
            && key.labels() == labels
        {
            return Some(last);
        }
        let hash = series_hash(family, labels);
        let series = &self.series;
        let found = self.index.find(hash, |&i| {
            series.get(i).is_some_and(|(k, _)| k.family == family && k.labels() == labels)
        });
        let i = match found {
            Some(&i) => i,
            None => {
                let mut key =
                    SeriesKey { family, len: labels.len() as u8, labels: [NO_LABEL; MAX_LABELS] };
                key.labels[..labels.len()].copy_from_slice(labels);
                if let Acc::Histogram { .. } = init {
                    let slots = shape.bounds.len() + 1;
                    self.buckets.resize(self.buckets.len() + slots, 0);
                }
                let i = self.series.len();
                self.series.push((key, init));
                let series = &self.series;
                self.index.insert_unique(hash, i, |&j| {
                    series.get(j).map_or(0, |(k, _)| series_hash(k.family, k.labels()))
                });
                i
            }
        };
        self.last[f] = i;
        Some(i)
    }

    /// Keeps the first misuse error: an undeclared family or a wrong number of labels.
    #[cold]
    fn misuse(&mut self, family: u32, labels: &[Label]) {
        if self.error.is_some() {
            return;
        }
        self.error = Some(match self.shapes.get(family as usize) {
            None => format!("metric family index {family} was not declared by this analyzer"),
            Some(shape) => format!(
                "metric {:?} takes {} label values, got {}",
                shape.name,
                shape.labels,
                labels.len()
            ),
        });
    }

    #[cold]
    fn fail(&mut self, family: u32, what: core::fmt::Arguments<'_>) {
        if self.error.is_none() {
            let name = self.shapes.get(family as usize).map_or("?", |s| s.name.as_str());
            self.error = Some(format!("metric {name:?}: {what}"));
        }
    }

    /// Forgets everything emitted in this call (keeps capacity).
    pub fn clear(&mut self) {
        self.index.clear();
        self.series.clear();
        self.last.fill(NONE);
        self.buckets.clear();
        self.error = None;
    }

    /// Drains the updates, one per series in first-seen order, packed as `process` returns
    /// them (see `wasmtap_record::updates`), or the first misuse error. Leaves the accumulator
    /// empty.
    pub fn finish_packed(&mut self) -> Result<Vec<u8>, String> {
        if let Some(e) = self.error.take() {
            self.clear();
            return Err(e);
        }
        let mut bytes = Vec::with_capacity(packed::HEADER_LEN + self.series.len() * 32);
        let mut w = packed::Writer::new(&mut bytes);
        for (key, acc) in &self.series {
            let value = match *acc {
                Acc::Counter(v) => packed::Value::CounterAdd(v),
                Acc::Gauge { value, at_ns } => packed::Value::GaugeSet(value, at_ns),
                Acc::Histogram { first, sum, count } => {
                    let slots =
                        self.shapes.get(key.family as usize).map_or(0, |s| s.bounds.len() + 1);
                    let counts = self.buckets.get(first..first + slots).unwrap_or_default();
                    packed::Value::Histogram { counts, sum: sum_to_f64(sum), count }
                }
            };
            w.update(key.family, key.labels().iter().map(|l| l.to_packed()), value);
        }
        w.finish();
        self.clear();
        Ok(bytes)
    }

    /// Drains the updates as WIT records, one per series in first-seen order, or the first
    /// misuse error: [`Updates::finish_packed`] read back, for tests. Leaves the accumulator
    /// empty.
    pub fn finish(&mut self) -> Result<Vec<wit::MetricUpdate>, String> {
        crate::packed::decode(&self.finish_packed()?)
    }
}

#[cfg(test)]
mod tests;
