//! Stage: analyzers (from the ABI's terms to the registry's).
//!
//! Input: a WIT `types` module's family declarations, as the wasmtime bindings (`instance`) or
//! the guest SDK's native bindings (`native`) generate them; and the packed updates a call
//! returns (the encoding of `wasmtap_record::updates`, specified in `wit/analyzer.wit`).
//! Output: the registry's [`crate::registry::FamilySpec`], and the updates in its
//! [`UpdateList`] (reused from call to call, so reading allocates nothing but text labels), or
//! why the whole call is refused ([`Refused`]): updates that do not parse, too many of them, or
//! too big ([`bounds`]).

use std::sync::Arc;

use wasmtap_record::updates::{DecodeError, Label as Packed, Reader, ValueView};

use super::bounds::{self, Exceeded};
use crate::registry::{Label, UpdateList};

/// Why a call's updates were refused as they were read; the call's error
/// (`instance::CallError`) says it.
#[derive(Debug)]
pub enum Refused {
    /// The bytes do not parse as the encoding.
    Malformed(DecodeError),
    /// More updates than the limit.
    TooMany { got: usize, limit: usize },
    /// A size bound exceeded.
    TooLarge(Exceeded),
}

/// Defines `family_spec`, converting a WIT `types` module's family declaration into the
/// registry's terms. Both the wasmtime bindings and the guest SDK's native bindings generate
/// the same shapes under different paths.
macro_rules! wit_conversions {
    ($t:ident) => {
        fn family_spec(f: &$t::MetricFamily) -> crate::registry::FamilySpec {
            use crate::registry::Kind;
            crate::registry::FamilySpec {
                name: f.name.clone(),
                help: f.help.clone(),
                kind: match f.kind {
                    $t::MetricKind::Counter => Kind::Counter,
                    $t::MetricKind::Gauge => Kind::Gauge,
                    $t::MetricKind::Histogram => Kind::Histogram,
                },
                label_names: f.label_names.clone(),
                buckets: f.buckets.clone(),
            }
        }
    };
}
pub(super) use wit_conversions;

/// Reads one call's packed updates into `out`, in the registry's terms. Checked, in order,
/// before anything of the call is kept: the header; the update count it gives, against
/// `max_updates`; the buffer's size, against [`bounds::MAX_CALL_BYTES`]; then each update as it
/// is read, and each text label's length against [`bounds::MAX_LABEL_VALUE`]. On an error
/// `out` holds part of the call: the caller discards it.
pub(super) fn updates(
    bytes: &[u8],
    max_updates: usize,
    out: &mut UpdateList,
) -> Result<(), Refused> {
    out.clear();
    let reader = Reader::new(bytes).map_err(Refused::Malformed)?;
    let got = reader.update_count() as usize;
    if got > max_updates {
        return Err(Refused::TooMany { got, limit: max_updates });
    }
    if bytes.len() > bounds::MAX_CALL_BYTES {
        return Err(Refused::TooLarge(Exceeded::CallBytes { got: bytes.len() }));
    }
    for u in reader {
        let u = u.map_err(Refused::Malformed)?;
        for l in u.labels() {
            out.label(match l {
                Packed::Text(s) if s.len() > bounds::MAX_LABEL_VALUE => {
                    return Err(Refused::TooLarge(Exceeded::LabelValue { got: s.len() }));
                }
                Packed::Text(s) => Label::Text(Arc::from(s)),
                Packed::Ipv4(a) => Label::Ipv4(a),
                Packed::Ipv6(hi, lo) => Label::Ipv6((u128::from(hi) << 64) | u128::from(lo)),
                Packed::Device(d) => Label::Device(d),
                Packed::Number(n) => Label::Number(n),
            });
        }
        match u.value {
            ValueView::CounterAdd(v) => out.counter_add(u.family, v),
            ValueView::GaugeSet(v, at) => out.gauge_set(u.family, v, at),
            ValueView::Histogram { counts, sum, count } => {
                out.histogram(u.family, counts.iter(), sum, count)
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use wasmtap_record::updates::{Label as Packed, Value as PackedValue, Writer};

    use super::*;
    use crate::registry::{Update, Value};

    /// The updates read from `bytes`, as owned updates, or why the call is refused.
    fn read(bytes: &[u8], max_updates: usize) -> Result<Vec<Update>, Refused> {
        let mut list = UpdateList::default();
        updates(bytes, max_updates, &mut list)?;
        Ok(list
            .iter()
            .map(|u| Update {
                family: u.family,
                labels: u.labels.to_vec(),
                value: match u.value {
                    crate::registry::ValueRef::CounterAdd(v) => Value::CounterAdd(v),
                    crate::registry::ValueRef::GaugeSet(v, at) => Value::GaugeSet(v, at),
                    crate::registry::ValueRef::Histogram { buckets, sum, count } => {
                        Value::Histogram { buckets: buckets.to_vec(), sum, count }
                    }
                },
            })
            .collect())
    }

    /// `n` counter updates, each with `labels`.
    fn packed(n: usize, labels: &[Packed<'_>]) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut w = Writer::new(&mut bytes);
        for _ in 0..n {
            w.update(0, labels.iter().copied(), PackedValue::CounterAdd(1.0));
        }
        w.finish();
        bytes
    }

    #[test]
    fn updates_read_into_the_registry_terms() {
        let mut bytes = Vec::new();
        let mut w = Writer::new(&mut bytes);
        let labels = [Packed::Text("rst"), Packed::Ipv6(1, 2), Packed::Device(3)];
        w.update(1, labels.into_iter(), PackedValue::GaugeSet(2.5, 7));
        w.update(0, [].into_iter(), PackedValue::Histogram { counts: &[1, 2], sum: 0.5, count: 3 });
        w.finish();
        let got = read(&bytes, 10).expect("valid updates");
        assert_eq!(
            got,
            [
                Update {
                    family: 1,
                    labels: vec![
                        Label::Text("rst".into()),
                        Label::Ipv6(1 << 64 | 2),
                        Label::Device(3)
                    ],
                    value: Value::GaugeSet(2.5, 7),
                },
                Update {
                    family: 0,
                    labels: vec![],
                    value: Value::Histogram { buckets: vec![1, 2], sum: 0.5, count: 3 },
                },
            ]
        );
    }

    #[test]
    fn update_counts_and_sizes_are_bounded() {
        let long = "x".repeat(bounds::MAX_LABEL_VALUE + 1);
        assert!(matches!(
            read(&packed(1, &[Packed::Text(&long)]), 10),
            Err(Refused::TooLarge(Exceeded::LabelValue { got })) if got == long.len()
        ));
        assert!(matches!(read(&packed(11, &[]), 10), Err(Refused::TooMany { got: 11, limit: 10 })));
        let ok = "x".repeat(bounds::MAX_LABEL_VALUE);
        let many = packed(20_000, &[Packed::Text(&ok)]);
        assert!(matches!(
            read(&many, 65_536),
            Err(Refused::TooLarge(Exceeded::CallBytes { got })) if got == many.len()
        ));
        assert_eq!(
            read(&packed(100, &[Packed::Text(&ok)]), 65_536).map(|u| u.len()).ok(),
            Some(100)
        );
    }

    #[test]
    fn bytes_that_do_not_parse_are_refused_with_the_reason() {
        let mut bytes = packed(2, &[Packed::Device(1)]);
        bytes.truncate(bytes.len() - 1);
        let e = read(&bytes, 10).expect_err("cut short");
        let Refused::Malformed(e) = e else { panic!("{e:?}") };
        assert!(e.to_string().contains("ends inside an update"), "{e}");
    }
}
