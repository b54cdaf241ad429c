//! Stage: analyzers (from the ABI's types to the registry's).
//!
//! Input: a WIT `types` module's declarations and updates, as the wasmtime bindings
//! (`instance`) or the guest SDK's native bindings (`native`) generate them.
//! Output: the registry's [`crate::registry::FamilySpec`] and [`crate::registry::Update`].

/// Defines `family_spec` and `update`, converting a WIT `types` module's declarations and
/// updates into the registry's terms. Both the wasmtime bindings and the guest SDK's native
/// bindings generate the same shapes under different paths.
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

        fn update(u: $t::MetricUpdate) -> crate::registry::Update {
            use crate::registry::{Label, Value};
            let labels = u
                .labels
                .into_iter()
                .map(|l| match l {
                    $t::LabelValue::Text(s) => Label::Text(std::sync::Arc::from(s)),
                    $t::LabelValue::Ipv4(a) => Label::Ipv4(a),
                    $t::LabelValue::Ipv6((hi, lo)) => {
                        Label::Ipv6((u128::from(hi) << 64) | u128::from(lo))
                    }
                    $t::LabelValue::Device(d) => Label::Device(d),
                    $t::LabelValue::Number(n) => Label::Number(n),
                })
                .collect();
            let value = match u.value {
                $t::UpdateValue::CounterAdd(v) => Value::CounterAdd(v),
                $t::UpdateValue::GaugeSet((v, at)) => Value::GaugeSet(v, at),
                $t::UpdateValue::Histogram(h) => {
                    Value::Histogram { buckets: h.bucket_counts, sum: h.sum, count: h.count }
                }
            };
            crate::registry::Update { family: u.family, labels, value }
        }
    };
}
pub(super) use wit_conversions;
