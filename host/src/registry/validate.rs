//! Registry stage, checks: what an analyzer declares at load and what it updates per call.
//!
//! Input: [`FamilySpec`]s from `init`, [`Update`]s from a call.
//! Output: a verdict before anything is kept. Declarations are checked in time linear in
//! their size, and bounded in count and bytes (families, names, help, labels, buckets); updates
//! are checked for their family's shape and for sane values (finite, histogram counts that
//! add up).

use std::collections::HashSet;

use super::spec::{
    FamilyError, FamilySpec, Kind, PREFIX, Reserved, UpdateError, UpdateRef, ValueRef,
};

/// Families one analyzer may declare: the built-in ones declare 3 to 9.
pub const MAX_FAMILIES: usize = 256;
/// Bytes of a family name (without the prefix): long names repeat on every exposition line.
pub const MAX_FAMILY_NAME: usize = 128;
/// Bytes of a family's help text.
pub const MAX_HELP: usize = 1024;
/// Labels per family: a per-pair family has 3 (`src_ip`, `dst_ip`, `device`).
pub const MAX_LABELS: usize = 16;
/// Bytes of a label name.
pub const MAX_LABEL_NAME: usize = 64;
/// Buckets per histogram: the built-in ones have 10 to 16; each bucket is a line per series.
pub const MAX_BUCKETS: usize = 64;
/// The largest counter increment in one update: integers up to 2^53 are exact in an f64, and
/// no batch counts more of anything; a counter then cannot reach infinity in any lifetime.
pub const MAX_COUNTER_ADD: f64 = 9_007_199_254_740_992.0;
/// The largest histogram count in one update: no batch or tick observes more; series totals
/// then take over 2^24 updates to reach u64's range, and a sum that would overflow is refused.
pub const MAX_HISTOGRAM_COUNT: u64 = 1 << 40;
/// The largest magnitude of a gauge value or a histogram sum in one update: far beyond any
/// size or time, and small enough that exact sums in billionths cannot overflow.
pub const MAX_VALUE: f64 = 1e20;

/// Whether `s` is a valid metric or label name in the house style (lower snake case).
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

fn too_large(what: String, got: usize, limit: usize) -> Result<(), FamilyError> {
    if got > limit { Err(FamilyError::TooLarge { what, got, limit }) } else { Ok(()) }
}

/// Checks how many families an analyzer declares: cheap, so it can come before anything is
/// done with them.
pub fn validate_count(count: usize) -> Result<(), FamilyError> {
    too_large("the number of families".into(), count, MAX_FAMILIES)
}

/// Checks one analyzer's declared families on their own (not against other analyzers).
pub fn validate(specs: &[FamilySpec]) -> Result<(), FamilyError> {
    validate_count(specs.len())?;
    let mut names = HashSet::with_capacity(specs.len());
    for f in specs {
        // Sizes first, so that nothing below works on a huge string.
        let short = |s: &str| s.chars().take(40).collect::<String>();
        too_large(
            format!("the name of family {:?}…", short(&f.name)),
            f.name.len(),
            MAX_FAMILY_NAME,
        )?;
        too_large(format!("the help of {:?}", f.name), f.help.len(), MAX_HELP)?;
        too_large(format!("the labels of {:?}", f.name), f.label_names.len(), MAX_LABELS)?;
        too_large(format!("the buckets of {:?}", f.name), f.buckets.len(), MAX_BUCKETS)?;
        for l in &f.label_names {
            too_large(format!("a label name of {:?}", f.name), l.len(), MAX_LABEL_NAME)?;
        }
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
            if !valid_name(l) {
                let (name, label) = (f.name.clone(), l.clone());
                return Err(FamilyError::BadLabel { name, label });
            }
            if let Some(why) = Reserved::of(l) {
                let (name, label) = (f.name.clone(), l.clone());
                return Err(FamilyError::ReservedLabel { name, label, why });
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
        if !names.insert(f.name.as_str()) {
            return Err(FamilyError::Duplicate(f.name.clone()));
        }
    }
    Ok(())
}

/// Checks one update against its family's declaration.
pub(super) fn check(spec: &FamilySpec, u: &UpdateRef<'_>) -> Result<(), UpdateError> {
    let family = || format!("{PREFIX}{}", spec.name);
    let (got, want) = (u.labels.len(), spec.label_names.len());
    if got != want {
        return Err(UpdateError::LabelCount { family: family(), got, want });
    }
    match (u.value, spec.kind) {
        (ValueRef::CounterAdd(v), Kind::Counter)
            if !v.is_finite() || !(0.0..=MAX_COUNTER_ADD).contains(&v) =>
        {
            Err(UpdateError::BadCounterAdd { family: family(), value: v })
        }
        (ValueRef::Histogram { buckets, .. }, Kind::Histogram)
            if buckets.len() != spec.buckets.len() + 1 =>
        {
            let (got, want) = (buckets.len(), spec.buckets.len() + 1);
            Err(UpdateError::BucketCount { family: family(), got, want })
        }
        (ValueRef::GaugeSet(v, _), Kind::Gauge) if !v.is_finite() || v.abs() > MAX_VALUE => {
            Err(UpdateError::NotFinite { family: family(), what: "gauge value", value: v })
        }
        (ValueRef::Histogram { sum, .. }, Kind::Histogram)
            if !sum.is_finite() || sum.abs() > MAX_VALUE =>
        {
            Err(UpdateError::NotFinite { family: family(), what: "histogram sum", value: sum })
        }
        (ValueRef::Histogram { buckets, count, .. }, Kind::Histogram) => {
            let sum = buckets.iter().try_fold(0u64, |a, b| a.checked_add(*b));
            match sum {
                Some(sum) if sum == count && sum <= MAX_HISTOGRAM_COUNT => Ok(()),
                Some(sum) if sum == count => Err(UpdateError::Overflow { family: family() }),
                Some(sum) => Err(UpdateError::HistogramCount { family: family(), count, sum }),
                None => Err(UpdateError::Overflow { family: family() }),
            }
        }
        (ValueRef::CounterAdd(_), Kind::Counter) | (ValueRef::GaugeSet(..), Kind::Gauge) => Ok(()),
        (_, kind) => Err(UpdateError::WrongKind { family: family(), kind }),
    }
}
