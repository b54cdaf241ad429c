//! Registry tests: declaration checks, aggregation, the series cap and the exposition.

use std::sync::Arc;

use super::*;

fn spec(name: &str, kind: Kind, labels: &[&str], buckets: &[f64]) -> FamilySpec {
    FamilySpec {
        name: name.into(),
        help: format!("{name} help"),
        kind,
        label_names: labels.iter().map(|s| s.to_string()).collect(),
        buckets: buckets.to_vec(),
    }
}

fn registry(cap: usize) -> Registry {
    let devices = Arc::new(Devices::default());
    devices.intern("eth0");
    Registry::new(devices, cap)
}

fn text(r: &Registry) -> String {
    let mut out = Vec::new();
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn rejects_bad_declarations() {
    let bad = [
        (spec("Bad-Name_total", Kind::Counter, &[], &[]), "not a valid"),
        (spec("wasmtap_x_total", Kind::Counter, &[], &[]), "must not start"),
        (spec("packets", Kind::Counter, &[], &[]), "_total"),
        (spec("x_total", Kind::Counter, &["le"], &[]), "label name"),
        (spec("x_total", Kind::Counter, &["a", "a"], &[]), "twice"),
        (spec("h", Kind::Histogram, &[], &[2.0, 1.0]), "increasing"),
        (spec("h", Kind::Histogram, &[], &[f64::NAN]), "increasing"),
        (spec("g", Kind::Gauge, &[], &[1.0]), "only histograms"),
    ];
    for (s, want) in bad {
        let err = validate(std::slice::from_ref(&s)).unwrap_err().to_string();
        assert!(err.contains(want), "{s:?}: {err}");
    }
    let twice =
        [spec("a_total", Kind::Counter, &[], &[]), spec("a_total", Kind::Counter, &[], &[])];
    assert_eq!(validate(&twice), Err(FamilyError::Duplicate("a_total".into())));
}

#[test]
fn refuses_a_name_another_analyzer_owns() {
    let r = registry(10);
    r.register("first", &[spec("x_total", Kind::Counter, &[], &[])]).unwrap();
    let err = r.register("second", &[spec("x_total", Kind::Counter, &[], &[])]).unwrap_err();
    assert_eq!(
        err,
        FamilyError::Collision { name: "wasmtap_x_total".into(), owner: "first".into() }
    );
}

#[test]
fn aggregates_counters_gauges_and_histograms_across_calls() {
    let r = registry(10);
    let f = r
        .register(
            "a",
            &[
                spec("pkts_total", Kind::Counter, &["device"], &[]),
                spec("shift", Kind::Gauge, &["src_ip"], &[]),
                spec("size_bytes", Kind::Histogram, &[], &[10.0, 100.0]),
            ],
        )
        .unwrap();
    let dev = vec![Label::Device(0)];
    let ip = vec![Label::Ipv4(0x0a00_0001)];
    let hist = |b: Vec<u64>, sum, count| Value::Histogram { buckets: b, sum, count };
    let calls = [
        vec![
            Update { family: 0, labels: dev.clone(), value: Value::CounterAdd(3.0) },
            Update { family: 1, labels: ip.clone(), value: Value::GaugeSet(7.0, 200) },
            Update { family: 2, labels: vec![], value: hist(vec![1, 1, 0], 55.0, 2) },
        ],
        vec![
            Update { family: 0, labels: dev.clone(), value: Value::CounterAdd(4.0) },
            // Older packet time: must not overwrite the gauge.
            Update { family: 1, labels: ip.clone(), value: Value::GaugeSet(9.0, 100) },
            Update { family: 2, labels: vec![], value: hist(vec![0, 0, 1], 500.0, 1) },
        ],
    ];
    for c in calls {
        r.apply(&f, c).unwrap();
    }
    let t = text(&r);
    assert!(t.contains("wasmtap_pkts_total{device=\"eth0\"} 7\n"), "{t}");
    assert!(t.contains("wasmtap_shift{src_ip=\"10.0.0.1\"} 7\n"), "{t}");
    assert!(t.contains("wasmtap_size_bytes_bucket{le=\"10\"} 1\n"), "{t}");
    assert!(t.contains("wasmtap_size_bytes_bucket{le=\"100\"} 2\n"), "{t}");
    assert!(t.contains("wasmtap_size_bytes_bucket{le=\"+Inf\"} 3\n"), "{t}");
    assert!(t.contains("wasmtap_size_bytes_sum 555\n"), "{t}");
    assert!(t.contains("wasmtap_size_bytes_count 3\n"), "{t}");
}

#[test]
fn a_bad_update_applies_nothing_from_its_call() {
    let r = registry(10);
    let f = r.register("a", &[spec("x_total", Kind::Counter, &["device"], &[])]).unwrap();
    let good = Update { family: 0, labels: vec![Label::Device(0)], value: Value::CounterAdd(1.0) };
    let cases = [
        (Update { family: 5, ..good.clone() }, "family index 5"),
        (Update { labels: vec![], ..good.clone() }, "label values"),
        (Update { value: Value::CounterAdd(-1.0), ..good.clone() }, "negative"),
        (Update { value: Value::GaugeSet(1.0, 0), ..good.clone() }, "wrong kind"),
    ];
    for (bad, want) in cases {
        let err = r.apply(&f, vec![good.clone(), bad]).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
    assert_eq!(r.series_counts(), vec![("wasmtap_x_total".to_string(), 0, 0)]);
}

#[test]
fn the_series_cap_refuses_and_counts_new_series() {
    let r = registry(2);
    let f = r.register("a", &[spec("x_total", Kind::Counter, &["n"], &[])]).unwrap();
    let ups = (0..5).map(|n| Update {
        family: 0,
        labels: vec![Label::Number(n)],
        value: Value::CounterAdd(1.0),
    });
    r.apply(&f, ups.collect()).unwrap();
    // Existing series still update at the cap.
    r.apply(
        &f,
        vec![Update { family: 0, labels: vec![Label::Number(0)], value: Value::CounterAdd(1.0) }],
    )
    .unwrap();
    assert_eq!(r.series_counts(), vec![("wasmtap_x_total".to_string(), 2, 3)]);
    assert!(text(&r).contains("wasmtap_x_total{n=\"0\"} 2\n"));
}

#[test]
fn unregister_removes_the_families() {
    let r = registry(10);
    let f = r.register("a", &[spec("x_total", Kind::Counter, &[], &[])]).unwrap();
    r.unregister(&f);
    assert!(r.gather().is_empty());
    r.register("b", &[spec("x_total", Kind::Counter, &[], &[])]).unwrap();
}

#[test]
fn labels_are_formatted_and_sorted() {
    let r = registry(10);
    let f = r.register("a", &[spec("x_total", Kind::Counter, &["ip", "t"], &[])]).unwrap();
    let v6 =
        Label::Ipv6(u128::from_be_bytes([0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
    let ups = vec![
        Update {
            family: 0,
            labels: vec![v6, Label::Text("b".into())],
            value: Value::CounterAdd(1.0),
        },
        Update {
            family: 0,
            labels: vec![Label::Ipv4(0x7f00_0001), Label::Text("a".into())],
            value: Value::CounterAdd(2.0),
        },
    ];
    r.apply(&f, ups).unwrap();
    let t = text(&r);
    let v4 = t.find("ip=\"127.0.0.1\",t=\"a\"} 2").unwrap();
    let v6 = t.find("ip=\"fd77::1\",t=\"b\"} 1").unwrap();
    assert!(v4 < v6, "{t}");
}

#[test]
fn replace_swaps_families_all_or_none() {
    let r = registry(10);
    r.register("other", &[spec("taken_total", Kind::Counter, &[], &[])]).unwrap();
    let v1 = r.register("a", &[spec("x_total", Kind::Counter, &[], &[])]).unwrap();
    r.apply(&v1, vec![Update { family: 0, labels: vec![], value: Value::CounterAdd(5.0) }])
        .unwrap();
    // A new version that collides with another analyzer leaves the old one in place.
    let clash =
        [spec("x_total", Kind::Counter, &[], &[]), spec("taken_total", Kind::Counter, &[], &[])];
    assert!(matches!(r.replace(Some(&v1), "a", &clash), Err(FamilyError::Collision { .. })));
    assert!(text(&r).contains("wasmtap_x_total 5\n"));
    // The same names again are no collision with itself; series start afresh.
    let v2 = r.replace(Some(&v1), "a", &[spec("x_total", Kind::Counter, &[], &[])]).unwrap();
    assert!(!text(&r).contains("wasmtap_x_total"));
    r.apply(&v2, vec![Update { family: 0, labels: vec![], value: Value::CounterAdd(1.0) }])
        .unwrap();
    assert!(text(&r).contains("wasmtap_x_total 1\n"));
}

#[test]
fn histogram_sums_do_not_depend_on_the_order_of_updates() {
    let r1 = registry(10);
    let r2 = registry(10);
    let h = [spec("t_seconds", Kind::Histogram, &[], &[1.0])];
    let (f1, f2) = (r1.register("a", &h).unwrap(), r2.register("a", &h).unwrap());
    let values = [0.1, 0.2, 0.3, 1e-3, 7.123456789, 1e6];
    let up = |v: f64| Update {
        family: 0,
        labels: vec![],
        value: Value::Histogram { buckets: vec![1, 0], sum: v, count: 1 },
    };
    for v in values {
        r1.apply(&f1, vec![up(v)]).unwrap();
    }
    for v in values.iter().rev() {
        r2.apply(&f2, vec![up(*v)]).unwrap();
    }
    assert_eq!(text(&r1), text(&r2));
    assert!(text(&r1).contains("wasmtap_t_seconds_sum 1000007.724456789\n"), "{}", text(&r1));
}
