//! The WIT `metric-update` records and the packed bytes that `process` and `tick` return.
//!
//! Input: a list of WIT `metric-update`s, or a returned buffer. Output: the buffer (the
//! encoding of `wasmtap_record::updates`, as the `process` comment in `wit/analyzer.wit`
//! specifies), or the list read back from it. The runner returns [`crate::Updates`] packed
//! straight from its accumulators; these conversions are for what works with the records: the
//! runner's typed view for analyzer tests, and test analyzers that hand-build their updates.

use wasmtap_record::updates::{HEADER_LEN, Label, Reader, Value, ValueView, Writer};

use crate::bindings::wasmtap::analyzer::types as wit;

/// Packs `updates` as `process` returns them, into a buffer of exactly their size.
pub fn encode(updates: &[wit::MetricUpdate]) -> Vec<u8> {
    let len = updates
        .iter()
        .fold(HEADER_LEN, |n, u| n + value(u).packed_len(labels(u).map(|l| l.packed_len()).sum()));
    let mut bytes = Vec::with_capacity(len);
    let mut w = Writer::new(&mut bytes);
    for u in updates {
        w.update(u.family, labels(u), value(u));
    }
    w.finish();
    bytes
}

/// An update's label values, to pack.
fn labels(u: &wit::MetricUpdate) -> impl ExactSizeIterator<Item = Label<'_>> {
    u.labels.iter().map(|l| match l {
        wit::LabelValue::Text(s) => Label::Text(s),
        wit::LabelValue::Ipv4(a) => Label::Ipv4(*a),
        wit::LabelValue::Ipv6((hi, lo)) => Label::Ipv6(*hi, *lo),
        wit::LabelValue::Device(d) => Label::Device(*d),
        wit::LabelValue::Number(n) => Label::Number(*n),
    })
}

/// An update's value, to pack.
fn value(u: &wit::MetricUpdate) -> Value<'_> {
    match &u.value {
        wit::UpdateValue::CounterAdd(v) => Value::CounterAdd(*v),
        wit::UpdateValue::GaugeSet((v, at)) => Value::GaugeSet(*v, *at),
        wit::UpdateValue::Histogram(h) => {
            Value::Histogram { counts: &h.bucket_counts, sum: h.sum, count: h.count }
        }
    }
}

/// Reads packed updates back as WIT records, or says why they do not parse.
pub fn decode(bytes: &[u8]) -> Result<Vec<wit::MetricUpdate>, String> {
    let reader = Reader::new(bytes).map_err(|e| format!("packed updates: {e}"))?;
    let mut out = Vec::with_capacity(reader.update_count() as usize);
    for u in reader {
        let u = u.map_err(|e| format!("packed updates: {e}"))?;
        let labels = u
            .labels()
            .map(|l| match l {
                Label::Text(s) => wit::LabelValue::Text(s.to_owned()),
                Label::Ipv4(a) => wit::LabelValue::Ipv4(a),
                Label::Ipv6(hi, lo) => wit::LabelValue::Ipv6((hi, lo)),
                Label::Device(d) => wit::LabelValue::Device(d),
                Label::Number(n) => wit::LabelValue::Number(n),
            })
            .collect();
        let value = match u.value {
            ValueView::CounterAdd(v) => wit::UpdateValue::CounterAdd(v),
            ValueView::GaugeSet(v, at) => wit::UpdateValue::GaugeSet((v, at)),
            ValueView::Histogram { counts, sum, count } => {
                let bucket_counts = counts.iter().collect();
                wit::UpdateValue::Histogram(wit::HistogramDelta { bucket_counts, sum, count })
            }
        };
        out.push(wit::MetricUpdate { family: u.family, labels, value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_the_bytes() {
        let updates = vec![
            wit::MetricUpdate {
                family: 2,
                labels: vec![
                    wit::LabelValue::Text("rst".to_owned()),
                    wit::LabelValue::Ipv4(0x0a00_0001),
                    wit::LabelValue::Ipv6((u64::MAX, 1)),
                    wit::LabelValue::Device(4),
                    wit::LabelValue::Number(-3),
                ],
                value: wit::UpdateValue::GaugeSet((0.25, 17)),
            },
            wit::MetricUpdate {
                family: 0,
                labels: vec![],
                value: wit::UpdateValue::Histogram(wit::HistogramDelta {
                    bucket_counts: vec![0, 3, 1],
                    sum: 12.5,
                    count: 4,
                }),
            },
            wit::MetricUpdate {
                family: 1,
                labels: vec![],
                value: wit::UpdateValue::CounterAdd(9.0),
            },
        ];
        assert_eq!(decode(&encode(&updates)), Ok(updates));
        assert_eq!(decode(&encode(&[])), Ok(vec![]));
        assert!(decode(&[1, 0]).expect_err("short").contains("8-byte header"));
    }
}
