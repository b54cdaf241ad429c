//! Registry stage, exposition: families as `prometheus::proto` for the exporter.
//!
//! Input: the registered families and their series.
//! Output: sorted `proto::MetricFamily`s with label values formatted. Each family's series are
//! copied under its lock, which is held only for the copy; sorting and formatting happen
//! after, so a scrape delays the analyzers' updates by a copy, not by a render.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::PoisonError;

use prometheus::proto;

use super::series::SeriesValue;
use super::{Family, FamilySpec, Kind, Label, Registry, lock};

impl Registry {
    /// Every family with its series, sorted by name and labels so output is deterministic.
    pub fn gather(&self) -> Vec<proto::MetricFamily> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        // The text format has no way to show a family without series; it appears with its
        // first series.
        let mut out: Vec<proto::MetricFamily> = families
            .iter()
            .map(|f| self.family(f))
            .filter(|f| !f.get_metric().is_empty())
            .collect();
        out.sort_by(|a, b| a.name().cmp(b.name()));
        out
    }

    fn family(&self, f: &Family) -> proto::MetricFamily {
        let mut mf = proto::MetricFamily::default();
        mf.set_name(f.full_name.clone());
        mf.set_help(f.spec.help.clone());
        mf.set_field_type(match f.spec.kind {
            Kind::Counter => proto::MetricType::COUNTER,
            Kind::Gauge => proto::MetricType::GAUGE,
            Kind::Histogram => proto::MetricType::HISTOGRAM,
        });
        let (names, mut entries) = {
            let series = lock(&f.series);
            let entries: Vec<(Box<[Label]>, SeriesValue)> =
                series.map.iter().map(|(k, s)| (k.clone(), s.value.clone())).collect();
            (series.label_names.clone(), entries)
        };
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let metrics = entries
            .iter()
            .map(|(labels, value)| self.metric(&f.spec, &names, labels, value))
            .collect();
        mf.set_metric(metrics);
        mf
    }

    fn metric(
        &self,
        spec: &FamilySpec,
        names: &[String],
        labels: &[Label],
        value: &SeriesValue,
    ) -> proto::Metric {
        let pairs = names
            .iter()
            .zip(labels)
            .map(|(name, value)| {
                let mut p = proto::LabelPair::default();
                p.set_name(name.clone());
                p.set_value(self.format(value));
                p
            })
            .collect();
        let mut m = proto::Metric::from_label(pairs);
        match value {
            SeriesValue::Counter(v) => {
                let mut c = proto::Counter::default();
                c.set_value(*v);
                m.set_counter(c);
            }
            SeriesValue::Gauge(v, _) => {
                let mut g = proto::Gauge::default();
                g.set_value(*v);
                m.set_gauge(g);
            }
            SeriesValue::Histogram { buckets, sum, count } => {
                let mut h = proto::Histogram::default();
                let mut cumulative = 0;
                let bounds = spec.buckets.iter().zip(buckets);
                let list = bounds
                    .map(|(bound, n)| {
                        cumulative += n;
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(*bound);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect();
                h.set_bucket(list);
                h.set_sample_sum(sum.to_f64());
                h.set_sample_count(*count);
                m.set_histogram(h);
            }
        }
        m
    }

    fn format(&self, label: &Label) -> String {
        match label {
            Label::Text(s) => s.to_string(),
            Label::Ipv4(a) => Ipv4Addr::from(*a).to_string(),
            Label::Ipv6(a) => Ipv6Addr::from(*a).to_string(),
            Label::Device(d) => self.devices.name(*d),
            Label::Number(n) => n.to_string(),
        }
    }
}
