//! Registry stage, series values: what one series holds and how updates merge into it.
//!
//! Input: the [`ValueRef`] of one checked update.
//! Output: the [`SeriesValue`] kept per series (counters, gauges by packet time, histograms
//! with exact sums), merged the same way whatever the order of workers and batches.

use super::spec::ValueRef;

#[derive(Debug, Clone)]
pub(super) enum SeriesValue {
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
pub(super) struct Nanos(pub(super) i128);

impl Nanos {
    const PER_UNIT: i128 = 1_000_000_000;

    fn from_f64(v: f64) -> Self {
        // A whole sum (of sizes, say) exactly, whatever its size below 2^53: scaling it first
        // would round once it passes 2^53 billionths, differently for different groupings.
        if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
            return Nanos(v as i128 * Self::PER_UNIT);
        }
        // `as` saturates on overflow and maps NaN to 0; sums are finite in practice.
        Nanos((v * Self::PER_UNIT as f64).round() as i128)
    }

    pub(super) fn to_f64(self) -> f64 {
        // Whole and fractional parts apart, so that whole sums stay exact past 2^53 nanos.
        let (whole, frac) = (self.0 / Self::PER_UNIT, self.0 % Self::PER_UNIT);
        whole as f64 + frac as f64 / Self::PER_UNIT as f64
    }
}

pub(super) fn fresh(value: ValueRef<'_>) -> SeriesValue {
    match value {
        ValueRef::CounterAdd(v) => SeriesValue::Counter(v),
        ValueRef::GaugeSet(v, at) => SeriesValue::Gauge(v, at),
        ValueRef::Histogram { buckets, sum, count } => {
            SeriesValue::Histogram { buckets: buckets.to_vec(), sum: Nanos::from_f64(sum), count }
        }
    }
}

/// Merges `value` into a series. Returns false, leaving the series as it was, if a total
/// would overflow (a counter past 2^64-ish or to infinity, a histogram count or sum).
pub(super) fn merge(into: &mut SeriesValue, value: ValueRef<'_>) -> bool {
    match (into, value) {
        (SeriesValue::Counter(c), ValueRef::CounterAdd(v)) => {
            let total = *c + v;
            if !total.is_finite() {
                return false;
            }
            *c = total;
        }
        // The latest packet time wins; on a tie the larger value, so the result does not
        // depend on which worker reported first.
        (SeriesValue::Gauge(g, at), ValueRef::GaugeSet(v, t))
            if t > *at || (t == *at && v > *g) =>
        {
            (*g, *at) = (v, t);
        }
        (
            SeriesValue::Histogram { buckets, sum, count },
            ValueRef::Histogram { buckets: b, sum: s, count: n },
        ) => {
            // Bucket counts were checked against the family before merging; every total is
            // checked before any is changed.
            let new_count = count.checked_add(n);
            let new_sum = sum.0.checked_add(Nanos::from_f64(s).0);
            let fits = buckets.iter().zip(b).all(|(x, y)| x.checked_add(*y).is_some());
            let (Some(new_count), Some(new_sum), true) = (new_count, new_sum, fits) else {
                return false;
            };
            buckets.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            (sum.0, *count) = (new_sum, new_count);
        }
        // Kinds are checked before merging; a mismatch cannot reach here.
        _ => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::Nanos;

    #[test]
    fn whole_sums_convert_exactly_and_fractions_to_the_nearest_billionth() {
        // 123456789012 × 1e9 is not exact in f64; the whole number path never scales in f64.
        assert_eq!(Nanos::from_f64(123_456_789_012.0).0, 123_456_789_012 * Nanos::PER_UNIT);
        assert_eq!(Nanos::from_f64(0.000_076_5).0, 76_500);
        assert_eq!(Nanos::from_f64(-2.0).0, -2 * Nanos::PER_UNIT);
        assert_eq!(Nanos::from_f64(1.5).to_f64(), 1.5);
    }
}
