//! Declaring metric families: what an analyzer's `init` returns.
//!
//! Input: the analyzer's name, version and its families (name without the `wasmtap_` prefix,
//! help, kind, label names, buckets). Output: an [`AnalyzerInfo`] that the runner hands to the
//! host as the WIT `analyzer-info`, and typed handles ([`Counter`], [`Gauge`], [`Histogram`])
//! that the analyzer keeps and passes to [`crate::Updates`]. Also the fixed-size [`Label`] value
//! that keys series without allocating.

use crate::bindings::wasmtap::analyzer::types as wit;

/// Most label names a family may declare. Series keys hold their labels inline (no heap), so
/// this bounds the key size; wasmtap's metrics use at most three (`src_ip`, `dst_ip`, `device`).
pub const MAX_LABELS: usize = 6;

/// A label value, fixed-size and `Copy` so that keying a series costs no allocation. The host
/// formats and interns it (see `label-value` in the WIT contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// Static text, e.g. a reason from a fixed set.
    Text(&'static str),
    /// An IPv4 address as a big-endian number (10.0.0.1 is 0x0a000001).
    Ipv4(u32),
    /// An IPv6 address: high and low 64 bits, big-endian.
    Ipv6(u64, u64),
    /// A device index from the packet record.
    Device(u16),
    /// An integer, printed in decimal.
    Number(i64),
}

impl core::hash::Hash for Label {
    /// One or two word writes per label (a tag in the high bits of the first), so that keying a
    /// series stays cheap with the SDK's word-at-a-time hasher.
    #[inline]
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        match *self {
            Self::Text(s) => {
                h.write_u64(1 << 60 | s.len() as u64);
                h.write(s.as_bytes());
            }
            Self::Ipv4(a) => h.write_u64(2 << 60 | u64::from(a)),
            Self::Ipv6(hi, lo) => {
                h.write_u64(3 << 60);
                h.write_u64(hi);
                h.write_u64(lo);
            }
            Self::Device(d) => h.write_u64(4 << 60 | u64::from(d)),
            Self::Number(n) => {
                h.write_u64(5 << 60);
                h.write_u64(n as u64);
            }
        }
    }
}

impl Label {
    /// The label as the packed update encoding writes it.
    #[inline]
    pub(crate) fn to_packed(self) -> wasmtap_record::updates::Label<'static> {
        use wasmtap_record::updates::Label as Packed;
        match self {
            Self::Text(s) => Packed::Text(s),
            Self::Ipv4(a) => Packed::Ipv4(a),
            Self::Ipv6(hi, lo) => Packed::Ipv6(hi, lo),
            Self::Device(d) => Packed::Device(d),
            Self::Number(n) => Packed::Number(n),
        }
    }

    /// The WIT `label-value` for this label.
    pub fn to_wit(self) -> wit::LabelValue {
        match self {
            Self::Text(s) => wit::LabelValue::Text(s.to_owned()),
            Self::Ipv4(a) => wit::LabelValue::Ipv4(a),
            Self::Ipv6(hi, lo) => wit::LabelValue::Ipv6((hi, lo)),
            Self::Device(d) => wit::LabelValue::Device(d),
            Self::Number(n) => wit::LabelValue::Number(n),
        }
    }
}

impl From<Label> for wit::LabelValue {
    fn from(l: Label) -> Self {
        l.to_wit()
    }
}

impl From<core::net::IpAddr> for Label {
    fn from(ip: core::net::IpAddr) -> Self {
        match ip {
            core::net::IpAddr::V4(v4) => Self::Ipv4(u32::from(v4)),
            core::net::IpAddr::V6(v6) => {
                let n = u128::from(v6);
                Self::Ipv6((n >> 64) as u64, n as u64)
            }
        }
    }
}

/// Handle of a declared counter family; pass it to [`crate::Updates::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Counter(pub(crate) u32);

/// Handle of a declared gauge family; pass it to [`crate::Updates::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gauge(pub(crate) u32);

/// Handle of a declared histogram family; pass it to [`crate::Updates::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Histogram(pub(crate) u32);

/// One declared family, as the SDK keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FamilySpec {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) kind: wit::MetricKind,
    pub(crate) label_names: Vec<String>,
    pub(crate) buckets: Vec<f64>,
}

/// Who the analyzer is and which families it exports; built in [`crate::Analyzer::init`].
///
/// ```
/// use wasmtap_sdk::AnalyzerInfo;
/// let mut info = AnalyzerInfo::new("example", "0.1.0");
/// let resets = info.counter("tcp_resets_total", "TCP segments with RST set.", &["device"]);
/// let sizes = info.histogram("ip_packet_size_bytes", "IP total length.", &["device"], &[64.0, 1500.0]);
/// # let _ = (resets, sizes);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzerInfo {
    name: String,
    version: String,
    pub(crate) families: Vec<FamilySpec>,
}

impl AnalyzerInfo {
    /// An analyzer with no families yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self { name: name.into(), version: version.into(), families: Vec::new() }
    }

    /// The analyzer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn push(
        &mut self,
        name: &str,
        help: &str,
        kind: wit::MetricKind,
        labels: &[&str],
        buckets: &[f64],
    ) -> u32 {
        let index = u32::try_from(self.families.len()).unwrap_or(u32::MAX);
        self.families.push(FamilySpec {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            label_names: labels.iter().map(|l| (*l).to_owned()).collect(),
            buckets: buckets.to_vec(),
        });
        index
    }

    /// Declares a counter (`name` ends in `_total`, without the `wasmtap_` prefix).
    pub fn counter(&mut self, name: &str, help: &str, labels: &[&str]) -> Counter {
        Counter(self.push(name, help, wit::MetricKind::Counter, labels, &[]))
    }

    /// Declares a gauge.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[&str]) -> Gauge {
        Gauge(self.push(name, help, wit::MetricKind::Gauge, labels, &[]))
    }

    /// Declares a histogram with the given bucket upper bounds (strictly increasing, finite,
    /// without `+Inf`).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Histogram {
        Histogram(self.push(name, help, wit::MetricKind::Histogram, labels, buckets))
    }

    /// Checks what the SDK relies on: at most [`MAX_LABELS`] labels, histogram buckets
    /// non-empty, finite and strictly increasing, no buckets on other kinds, unique names.
    /// (The host checks Prometheus naming itself.) Each error names the rule that was broken.
    /// A family may declare no labels at all: it then has one series.
    pub fn validate(&self) -> Result<(), String> {
        if u32::try_from(self.families.len()).is_err() {
            return Err(format!(
                "{} metric families: a family's index is a u32, so at most {} families",
                self.families.len(),
                u32::MAX
            ));
        }
        for (i, f) in self.families.iter().enumerate() {
            if self.families[..i].iter().any(|g| g.name == f.name) {
                return Err(format!(
                    "metric family {:?} is declared twice: an analyzer's metric names are unique",
                    f.name
                ));
            }
            if f.label_names.len() > MAX_LABELS {
                return Err(format!(
                    "metric family {:?} has {} labels; the SDK supports at most {MAX_LABELS}",
                    f.name,
                    f.label_names.len()
                ));
            }
            let is_histogram = f.kind == wit::MetricKind::Histogram;
            if is_histogram && f.buckets.is_empty() {
                return Err(format!(
                    "histogram {:?} declares no buckets: a histogram declares at least one bucket \
                     bound (+Inf is implied)",
                    f.name
                ));
            }
            if !is_histogram && !f.buckets.is_empty() {
                return Err(format!(
                    "{:?} is not a histogram but declares buckets: only histograms declare buckets",
                    f.name
                ));
            }
            if f.buckets.iter().any(|b| !b.is_finite())
                || f.buckets.windows(2).any(|w| w[0] >= w[1])
            {
                return Err(format!(
                    "histogram {:?}: buckets must be finite and strictly increasing (+Inf is \
                     implied, not declared)",
                    f.name
                ));
            }
        }
        Ok(())
    }

    /// The WIT `analyzer-info` record handed to the host.
    pub fn to_wit(&self) -> wit::AnalyzerInfo {
        wit::AnalyzerInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            families: self
                .families
                .iter()
                .map(|f| wit::MetricFamily {
                    name: f.name.clone(),
                    help: f.help.clone(),
                    kind: f.kind,
                    label_names: f.label_names.clone(),
                    buckets: f.buckets.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn ip_labels_are_big_endian_numbers() {
        assert_eq!(Label::from(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), Label::Ipv4(0x0a00_0001));
        let v6: Ipv6Addr = "2001:db8::1".parse().expect("valid address");
        assert_eq!(Label::from(IpAddr::V6(v6)), Label::Ipv6(0x2001_0db8_0000_0000, 1));
        assert_eq!(Label::Device(3).to_wit(), wit::LabelValue::Device(3));
        assert_eq!(Label::Text("x").to_wit(), wit::LabelValue::Text("x".to_owned()));
    }

    /// Every rule `validate` checks, with a declaration that breaks it and the words of the
    /// rule that its error must state.
    #[test]
    fn validate_names_the_rule_it_enforces() {
        let mut ok = AnalyzerInfo::new("a", "1");
        ok.counter("a_total", "h", &["device"]);
        ok.histogram("b_bytes", "h", &[], &[0.0, 1.0]);
        // A family without labels is fine: it has one series.
        ok.counter("c_total", "h", &[]);
        assert_eq!(ok.validate(), Ok(()));

        let mut twice = ok.clone();
        twice.gauge("a_total", "h", &[]);
        let mut unsorted = AnalyzerInfo::new("a", "1");
        unsorted.histogram("b", "h", &[], &[2.0, 1.0]);
        let mut infinite = AnalyzerInfo::new("a", "1");
        infinite.histogram("b", "h", &[], &[1.0, f64::INFINITY]);
        let mut empty = AnalyzerInfo::new("a", "1");
        empty.histogram("b", "h", &[], &[]);
        let mut many = AnalyzerInfo::new("a", "1");
        many.counter("c_total", "h", &["a", "b", "c", "d", "e", "f", "g"]);
        let mut gauge = AnalyzerInfo::new("a", "1");
        gauge.push("g", "h", wit::MetricKind::Gauge, &[], &[1.0]);
        let rules = [
            (twice, "declared twice: an analyzer's metric names are unique"),
            (unsorted, "buckets must be finite and strictly increasing"),
            (infinite, "+Inf is implied, not declared"),
            (empty, "a histogram declares at least one bucket bound"),
            (many, "the SDK supports at most 6"),
            (gauge, "only histograms declare buckets"),
        ];
        for (info, rule) in rules {
            let err = info.validate().expect_err(rule);
            assert!(err.contains(rule), "{err:?} does not state the rule {rule:?}");
        }
    }

    #[test]
    fn to_wit_keeps_declaration_order() {
        let mut info = AnalyzerInfo::new("n", "v");
        let c = info.counter("a_total", "ha", &["device"]);
        let h = info.histogram("b_bytes", "hb", &["device"], &[1.0]);
        assert_eq!((c, h), (Counter(0), Histogram(1)));
        let w = info.to_wit();
        assert_eq!(w.name, "n");
        assert_eq!(w.families[1].kind, wit::MetricKind::Histogram);
        assert_eq!(w.families[1].buckets, vec![1.0]);
        assert_eq!(w.families[0].label_names, vec!["device".to_owned()]);
    }
}
