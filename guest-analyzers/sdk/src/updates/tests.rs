//! Tests of per-call aggregation: one update per series, summed counters, binned histograms,
//! latest-time gauges, misuse reported as an error, and reuse across calls.

use super::*;
use crate::wit::{LabelValue, UpdateValue};

struct Fixture {
    updates: Updates,
    c: Counter,
    g: Gauge,
    h: Histogram,
    bare: Counter,
}

fn fixture() -> Fixture {
    let mut info = AnalyzerInfo::new("t", "0");
    let c = info.counter("c_total", "h", &["src_ip", "device"]);
    let g = info.gauge("g", "h", &["device"]);
    let h = info.histogram("h_bytes", "h", &["device"], &[0.0, 10.0, 100.0]);
    let bare = info.counter("bare_total", "h", &[]);
    Fixture { updates: Updates::new(&info), c, g, h, bare }
}

#[test]
fn counters_sum_per_series_in_first_seen_order() {
    let Fixture { mut updates, c, bare, .. } = fixture();
    let a = [Label::Ipv4(1), Label::Device(0)];
    let b = [Label::Ipv4(2), Label::Device(0)];
    updates.inc(c, &a);
    updates.inc(c, &b);
    updates.add(c, &a, 2.5);
    updates.inc(bare, &[]);
    assert_eq!(updates.len(), 3);
    let out = updates.finish().expect("no misuse");
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].family, 0);
    assert_eq!(out[0].labels, vec![LabelValue::Ipv4(1), LabelValue::Device(0)]);
    assert_eq!(out[0].value, UpdateValue::CounterAdd(3.5));
    assert_eq!(out[1].labels, vec![LabelValue::Ipv4(2), LabelValue::Device(0)]);
    assert_eq!(out[1].value, UpdateValue::CounterAdd(1.0));
    assert_eq!(out[2].family, 3);
    assert!(out[2].labels.is_empty());
    assert!(updates.is_empty());
}

#[test]
fn histogram_bins_are_le_and_not_cumulative() {
    let Fixture { mut updates, h, .. } = fixture();
    let dev = [Label::Device(1)];
    for v in [0.0, 0.0, 5.0, 10.0, 10.5, 100.0, 101.0, 1e9] {
        updates.observe(h, &dev, v);
    }
    updates.observe(h, &[Label::Device(2)], 3.0);
    let out = updates.finish().expect("no misuse");
    assert_eq!(out.len(), 2);
    let UpdateValue::Histogram(d) = &out[0].value else {
        panic!("histogram expected: {:?}", out[0].value)
    };
    // Buckets le 0, le 10, le 100, +Inf.
    assert_eq!(d.bucket_counts, vec![2, 2, 2, 2]);
    assert_eq!(d.count, 8);
    assert_eq!(d.sum, 0.0 + 5.0 + 10.0 + 10.5 + 100.0 + 101.0 + 1e9);
    let UpdateValue::Histogram(d2) = &out[1].value else { panic!("histogram expected") };
    assert_eq!(d2.bucket_counts, vec![0, 1, 0, 0]);
    assert_eq!((d2.sum, d2.count), (3.0, 1));
}

#[test]
fn gauge_keeps_the_latest_packet_time() {
    let Fixture { mut updates, g, .. } = fixture();
    let dev = [Label::Device(0)];
    updates.set(g, &dev, 7.0, 200);
    updates.set(g, &dev, 3.0, 100); // older: ignored
    updates.set(g, &dev, 9.0, 200); // same time, later call: wins
    let out = updates.finish().expect("no misuse");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value, UpdateValue::GaugeSet((9.0, 200)));
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let Fixture { mut updates, c, h, .. } = fixture();
    updates.inc(c, &[Label::Device(0)]);
    let e = updates.finish().expect_err("wrong label count");
    assert!(e.contains("c_total") && e.contains("2 label values"), "{e}");

    updates.add(c, &[Label::Ipv4(0), Label::Device(0)], -1.0);
    assert!(updates.finish().expect_err("negative").contains("negative"));

    updates.observe(h, &[Label::Device(0)], f64::NAN);
    assert!(updates.finish().is_err());

    updates.inc(Counter(99), &[]);
    assert!(updates.finish().expect_err("unknown family").contains("99"));

    // The accumulator is usable again after an error.
    updates.inc(c, &[Label::Ipv4(0), Label::Device(0)]);
    assert_eq!(updates.finish().map(|v| v.len()), Ok(1));
}

#[test]
fn buffers_are_reused_across_calls() {
    let Fixture { mut updates, c, h, .. } = fixture();
    for round in 0..3u32 {
        for i in 0..100u32 {
            updates.inc(c, &[Label::Ipv4(i % 10), Label::Device(0)]);
            updates.observe(h, &[Label::Device((i % 4) as u16)], f64::from(i));
        }
        let out = updates.finish().expect("no misuse");
        assert_eq!(out.len(), 14, "round {round}");
        let (counters, histograms): (Vec<_>, Vec<_>) = out.iter().partition(|u| u.family == c.0);
        assert_eq!(counters.len(), 10);
        assert!(counters.iter().all(|u| u.value == UpdateValue::CounterAdd(10.0)));
        let total: u64 = histograms
            .iter()
            .map(|u| match &u.value {
                UpdateValue::Histogram(d) => d.bucket_counts.iter().sum::<u64>(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, 100);
    }
}

#[test]
fn hash_spreads_small_keys() {
    use std::collections::HashSet;
    // hashbrown indexes with the low bits and tags with the top 7: both must vary.
    let hashes: Vec<u64> =
        (0..256u32).map(|i| series_hash(1, &[Label::Ipv4(0x0a00_0000 + i)])).collect();
    let low: HashSet<u64> = hashes.iter().map(|h| h & 0xff).collect();
    let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
    // 256 random draws from 256 (128) values fill about 162 (110) of them.
    assert!(low.len() > 140, "{}", low.len());
    assert!(top.len() > 90, "{}", top.len());
    assert_ne!(series_hash(0, &[Label::Device(1)]), series_hash(1, &[Label::Device(1)]));
    assert_ne!(series_hash(0, &[Label::Device(1)]), series_hash(0, &[Label::Number(1)]));
}

fn histogram_of(out: &[wit::MetricUpdate], i: usize) -> wit::HistogramDelta {
    match &out[i].value {
        UpdateValue::Histogram(d) => d.clone(),
        other => panic!("histogram expected: {other:?}"),
    }
}

#[test]
fn binned_observations_merge_like_single_ones() {
    let Fixture { mut updates, h, .. } = fixture();
    let dev = [Label::Device(1)];
    for v in [0.0, 5.0, 10.0, 101.0] {
        updates.observe(h, &dev, v);
    }
    let single = histogram_of(&updates.finish().expect("no misuse"), 0);
    // The same four, binned by hand (le 0, le 10, le 100, +Inf), in two parts.
    updates.observe_binned(h, &dev, &[1, 1, 0, 0], 5.0);
    updates.observe_binned(h, &dev, &[0, 1, 0, 1], 111.0);
    let binned = histogram_of(&updates.finish().expect("no misuse"), 0);
    assert_eq!(binned, single);
    assert_eq!((binned.count, binned.sum), (4, 116.0));

    updates.observe_binned(h, &dev, &[1, 2, 3], 1.0);
    let e = updates.finish().expect_err("three counts for four buckets");
    assert!(e.contains("3 bucket counts, not 4"), "{e}");
    updates.observe_binned(h, &dev, &[1, 0, 0, 0], f64::NAN);
    assert!(updates.finish().is_err(), "a NaN sum is refused");
}

#[test]
fn histogram_sums_are_exact_whatever_the_grouping() {
    let Fixture { mut updates, h, .. } = fixture();
    let dev = [Label::Device(1)];
    // 0.1 s ten times: f64 additions give 0.9999999999999999; billionths give 1 exactly.
    for _ in 0..10 {
        updates.observe(h, &dev, 0.1);
    }
    assert_eq!(histogram_of(&updates.finish().expect("no misuse"), 0).sum, 1.0);
    // Whole sums beyond 2^53 billionths stay whole.
    for _ in 0..3 {
        updates.observe(h, &dev, 3_000_000_000.0);
    }
    assert_eq!(histogram_of(&updates.finish().expect("no misuse"), 0).sum, 9_000_000_000.0);
}
