//! Registry tests: declaration checks, aggregation, the series cap and the exposition.

use std::sync::Arc;
use std::time::Duration;

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
    r.render().into_iter().map(|(_, text)| text).collect()
}

/// The `prometheus` crate's rendering of the registry: every family as a `proto` message,
/// encoded by its `TextEncoder`. The reference that `render` must equal byte for byte.
fn crate_text(r: &Registry) -> String {
    use prometheus::proto;
    let families = r.families.read();
    let mut out: Vec<proto::MetricFamily> = Vec::new();
    for f in families.iter() {
        let series = f.series.lock();
        let mut entries: Vec<_> = series.entries().collect();
        if entries.is_empty() {
            continue;
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut mf = proto::MetricFamily::default();
        mf.set_name(f.full_name.clone());
        mf.set_help(f.spec.help.clone());
        mf.set_field_type(match f.spec.kind {
            Kind::Counter => proto::MetricType::COUNTER,
            Kind::Gauge => proto::MetricType::GAUGE,
            Kind::Histogram => proto::MetricType::HISTOGRAM,
        });
        let metrics = entries.iter().map(|(labels, s)| {
            // An owner's kept fields are labels of their own.
            let values =
                labels.iter().zip(series.shape.iter()).flat_map(|(value, fields)| {
                    match (value, fields) {
                        (Label::Owner(o), Some(fields)) => o
                            .fields()
                            .into_iter()
                            .zip(fields)
                            .filter(|(_, kept)| **kept)
                            .map(|(v, _)| v.to_string())
                            .collect(),
                        _ => vec![match value {
                            Label::Text(s) => s.to_string(),
                            Label::Ipv4(a) => std::net::Ipv4Addr::from(*a).to_string(),
                            Label::Ipv6(a) => std::net::Ipv6Addr::from(*a).to_string(),
                            Label::Device(d) => r.devices.name(*d),
                            Label::Number(n) => n.to_string(),
                            Label::Owner(o) => o.pod().to_string(),
                        }],
                    }
                });
            let pairs = series.label_names.iter().zip(values).map(|(name, value)| {
                let mut p = proto::LabelPair::default();
                p.set_name(name.clone());
                p.set_value(value);
                p
            });
            let mut m = proto::Metric::from_label(pairs.collect());
            match &s.value {
                series::SeriesValue::Counter(v) => {
                    let mut c = proto::Counter::default();
                    c.set_value(*v);
                    m.set_counter(c);
                }
                series::SeriesValue::Gauge(v, _) => {
                    let mut g = proto::Gauge::default();
                    g.set_value(*v);
                    m.set_gauge(g);
                }
                series::SeriesValue::Histogram { buckets, sum, count } => {
                    let mut h = proto::Histogram::default();
                    let mut cumulative = 0;
                    let list = f.spec.buckets.iter().zip(buckets).map(|(bound, n)| {
                        cumulative += n;
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(*bound);
                        b.set_cumulative_count(cumulative);
                        b
                    });
                    h.set_bucket(list.collect());
                    h.set_sample_sum(sum.to_f64());
                    h.set_sample_count(*count);
                    m.set_histogram(h);
                }
            }
            m
        });
        mf.set_metric(metrics.collect());
        out.push(mf);
    }
    out.sort_by(|a, b| a.name().cmp(b.name()));
    prometheus::TextEncoder::new().encode_to_string(&out).unwrap()
}

#[test]
fn the_rendering_is_the_prometheus_crates_byte_for_byte() {
    let r = registry(100);
    let devices = r.devices().clone();
    devices.intern("we\"ird\\dev\nice");
    let mut help =
        spec("h_seconds", Kind::Histogram, &["device", "why"], &[0.001, 0.5, 1.0, 2.5e6]);
    help.help = "A \"quoted\" help \\ with\na newline.".into();
    let families = r
        .register(
            "a",
            &[
                spec("x_total", Kind::Counter, &["src_ip", "dst_ip", "device"], &[]),
                spec("level", Kind::Gauge, &["n"], &[]),
                help,
                spec("plain_total", Kind::Counter, &[], &[]),
                spec("bare_seconds", Kind::Histogram, &[], &[1e-9, 0.1]),
                spec("never_total", Kind::Counter, &["n"], &[]),
            ],
        )
        .unwrap();
    let v6 = |last: u8| {
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[15] = last;
        Label::Ipv6(u128::from_be_bytes(b))
    };
    let u = |family: u32, labels: Vec<Label>, value: Value| Update { family, labels, value };
    let ups = vec![
        u(0, vec![Label::Ipv4(0x0a00_0001), v6(2), Label::Device(0)], Value::CounterAdd(3.0)),
        u(0, vec![v6(9), Label::Ipv4(1), Label::Device(1)], Value::CounterAdd(0.5)),
        u(0, vec![Label::Ipv4(7), Label::Ipv4(8), Label::Device(9)], Value::CounterAdd(9e15)),
        u(1, vec![Label::Number(-4)], Value::GaugeSet(-1.25e-7, 5)),
        u(1, vec![Label::Number(12)], Value::GaugeSet(1.5e15, 5)),
        u(1, vec![Label::Number(3)], Value::GaugeSet(0.0, 5)),
        u(
            2,
            vec![Label::Device(1), Label::Text("a \"b\" \\c\nd".into())],
            Value::Histogram { buckets: vec![1, 0, 2, 0, 3], sum: 12.000_000_001, count: 6 },
        ),
        u(
            2,
            vec![Label::Device(0), Label::Text("".into())],
            Value::Histogram { buckets: vec![0, 0, 0, 0, 0], sum: 0.0, count: 0 },
        ),
        u(3, vec![], Value::CounterAdd(42.0)),
        u(4, vec![], Value::Histogram { buckets: vec![1, 1, 1], sum: 7.5, count: 3 }),
    ];
    r.apply(&families, ups).unwrap();
    let ours = text(&r);
    assert_eq!(ours, crate_text(&r));
    // Spot checks of what the shared reference says, so that both cannot drift together.
    assert!(ours.contains("wasmtap_plain_total 42\n"), "{ours}");
    assert!(ours.contains("wasmtap_bare_seconds_bucket{le=\"+Inf\"} 3\n"), "{ours}");
    assert!(ours.contains(r#"why="a \"b\" \\c\nd",le="2500000"} 3"#), "{ours}");
    assert!(ours.contains(r#"{device="we\"ird\\dev\nice",why="a \"b\" \\c\nd",le="+Inf"} 6"#));
    assert!(!ours.contains("never_total"), "a family without series is not shown");
}

/// Every rule a declaration is checked against, with a declaration that breaks it and the
/// words of the rule that its error must state (not only that something is wrong).
#[test]
fn every_declaration_error_names_its_rule() {
    let long = "x".repeat(validate::MAX_FAMILY_NAME + 1);
    let many: Vec<String> = (0..=validate::MAX_LABELS).map(|i| format!("l{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let buckets: Vec<f64> = (0..=validate::MAX_BUCKETS).map(|i| i as f64).collect();
    let long_label = "l".repeat(validate::MAX_LABEL_NAME + 1);
    let mut long_help = spec("h_total", Kind::Counter, &[], &[]);
    long_help.help = "h".repeat(validate::MAX_HELP + 1);
    let rules = [
        (
            spec("Bad-Name_total", Kind::Counter, &[], &[]),
            "a metric name is lower snake case, [a-z_][a-z0-9_]*",
        ),
        (
            spec("wasmtap_x_total", Kind::Counter, &[], &[]),
            "must not start with \"wasmtap_\": the host adds that prefix",
        ),
        (
            spec("packets", Kind::Counter, &[], &[]),
            "must end in \"_total\": Prometheus names every counter so",
        ),
        (
            spec("x_total", Kind::Counter, &["Src-IP"], &[]),
            "a label name is lower snake case, [a-z_][a-z0-9_]*",
        ),
        (
            spec("h_seconds", Kind::Histogram, &["le"], &[1.0]),
            "\"le\" is reserved: Prometheus uses \"le\" for the bounds of histogram buckets",
        ),
        (
            spec("x_total", Kind::Counter, &["le"], &[]),
            "\"le\" is reserved: Prometheus uses \"le\" for the bounds of histogram buckets",
        ),
        (
            spec("x_total", Kind::Counter, &["__name__"], &[]),
            "is reserved: names starting with \"__\" are reserved for Prometheus internals",
        ),
        (
            spec("x_total", Kind::Counter, &["a", "a"], &[]),
            "declared twice: a family's label names are unique",
        ),
        (
            spec("h", Kind::Histogram, &[], &[2.0, 1.0]),
            "buckets must be finite and strictly increasing",
        ),
        (
            spec("h", Kind::Histogram, &[], &[f64::NAN]),
            "buckets must be finite and strictly increasing",
        ),
        (spec("h", Kind::Histogram, &[], &[f64::INFINITY]), "+Inf is implied, not declared"),
        (spec("g", Kind::Gauge, &[], &[1.0]), "only histograms declare buckets"),
        (
            spec(&long, Kind::Gauge, &[], &[]),
            &format!("over the limit of {}", validate::MAX_FAMILY_NAME),
        ),
        (
            long_help,
            &format!("the help of \"h_total\" is 1025, over the limit of {}", validate::MAX_HELP),
        ),
        (
            spec("x_total", Kind::Counter, &many, &[]),
            &format!("the labels of \"x_total\" is 17, over the limit of {}", validate::MAX_LABELS),
        ),
        (
            spec("x_total", Kind::Counter, &[&long_label], &[]),
            &format!(
                "a label name of \"x_total\" is 65, over the limit of {}",
                validate::MAX_LABEL_NAME
            ),
        ),
        (
            spec("h", Kind::Histogram, &[], &buckets),
            &format!("the buckets of \"h\" is 65, over the limit of {}", validate::MAX_BUCKETS),
        ),
    ];
    for (s, rule) in rules {
        let err = validate(std::slice::from_ref(&s)).unwrap_err().to_string();
        assert!(err.contains(rule), "{:?}: {err:?} does not state the rule {rule:?}", s.name);
    }
    let twice =
        [spec("a_total", Kind::Counter, &[], &[]), spec("a_total", Kind::Counter, &[], &[])];
    assert_eq!(validate(&twice), Err(FamilyError::Duplicate("a_total".into())));
    let err = validate(&twice).unwrap_err().to_string();
    assert!(err.contains("declared twice: an analyzer's metric names are unique"), "{err}");
    let err = validate_count(validate::MAX_FAMILIES + 1).unwrap_err().to_string();
    let rule =
        format!("the number of families is 257, over the limit of {}", validate::MAX_FAMILIES);
    assert!(err.contains(&rule), "{err}");

    // Labels that are neither reserved nor ill-formed pass, and so does a family without any.
    let fine = [
        spec("x_total", Kind::Counter, &["lee", "le_x", "_x", "namespace", "src_pod"], &[]),
        spec("bare_total", Kind::Counter, &[], &[]),
        spec("bare_seconds", Kind::Histogram, &[], &[0.5]),
    ];
    assert_eq!(validate(&fine), Ok(()));
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

/// Every rule an update is checked against, with an update that breaks it and the words of
/// the rule that its error must state; and a refused update applies nothing from its call.
#[test]
fn every_update_error_names_its_rule() {
    let r = registry(10);
    let f = r
        .register(
            "a",
            &[
                spec("x_total", Kind::Counter, &["device"], &[]),
                spec("g", Kind::Gauge, &[], &[]),
                spec("h_seconds", Kind::Histogram, &[], &[1.0]),
            ],
        )
        .unwrap();
    let good = Update { family: 0, labels: vec![Label::Device(0)], value: Value::CounterAdd(1.0) };
    let hist = |buckets: Vec<u64>, sum: f64, count: u64| Update {
        family: 2,
        labels: vec![],
        value: Value::Histogram { buckets, sum, count },
    };
    let rules = [
        (
            Update { family: 5, ..good.clone() },
            "family index 5, which was not declared: an update names one of the families init declared",
        ),
        (Update { labels: vec![], ..good.clone() }, "an update has one value per declared label"),
        (
            Update { value: Value::GaugeSet(1.0, 0), ..good.clone() },
            "wrong kind of value for a counter: a counter takes counter-add, a gauge gauge-set, a histogram histogram",
        ),
        (
            Update { value: Value::CounterAdd(-1.0), ..good.clone() },
            "which is negative, not finite or over 2^53",
        ),
        (
            Update { value: Value::CounterAdd(f64::INFINITY), ..good.clone() },
            "which is negative, not finite or over 2^53",
        ),
        (
            Update { family: 1, labels: vec![], value: Value::GaugeSet(f64::NAN, 0) },
            "gauge value NaN is not finite or beyond ±1e20",
        ),
        (hist(vec![1], 0.5, 1), "an update has one count per declared bucket and one for +Inf"),
        (
            hist(vec![1, 1], 0.5, 3),
            "is not the sum of its buckets (2): each observation counts in exactly one bucket",
        ),
        (hist(vec![1, 0], f64::INFINITY, 1), "histogram sum inf is not finite or beyond ±1e20"),
        (
            hist(vec![1 << 41, 0], 0.0, 1 << 41),
            "would overflow its series: one update observes at most 2^40 values",
        ),
    ];
    for (bad, rule) in rules {
        let err = r.apply(&f, vec![good.clone(), bad]).unwrap_err().to_string();
        assert!(err.contains(rule), "{err:?} does not state the rule {rule:?}");
    }
    let counts = r.series_counts();
    assert!(counts.iter().all(|(_, live, refused)| (*live, *refused) == (0, 0)), "{counts:?}");
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
    assert!(r.render().is_empty());
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
    assert!(text(&r).contains("wasmtap_x_total 0\n"), "a label-less counter starts at 0");
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

fn add(n: i64, by: f64) -> Update {
    Update {
        family: 0,
        labels: vec![Label::Number(n), Label::Number(7)],
        value: Value::CounterAdd(by),
    }
}

#[test]
fn series_expire_after_the_ttl_and_free_their_place_under_the_cap() {
    let r = registry(2);
    r.set_limits(2, Some(Duration::from_millis(200)));
    let f = r.register("a", &[spec("x_total", Kind::Counter, &["n", "m"], &[])]).unwrap();
    r.apply(&f, vec![add(1, 5.0), add(2, 1.0), add(3, 1.0)]).unwrap();
    assert_eq!(r.series_counts(), vec![("wasmtap_x_total".to_string(), 2, 1)]);
    std::thread::sleep(Duration::from_millis(120));
    r.apply(&f, vec![add(2, 1.0)]).unwrap(); // keeps series 2 fresh
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(r.expire(), 1, "series 1 was idle past the TTL, series 2 was not");
    // Series 1 comes back in the place it freed and starts from 0: it shows only the new add.
    r.apply(&f, vec![add(1, 1.0)]).unwrap();
    let t = text(&r);
    assert!(t.contains("wasmtap_x_total{n=\"1\",m=\"7\"} 1\n"), "{t}");
    assert!(t.contains("wasmtap_x_total{n=\"2\",m=\"7\"} 2\n"), "{t}");
    assert!(!t.contains("n=\"3\""), "{t}");
    assert_eq!(r.series_counts(), vec![("wasmtap_x_total".to_string(), 2, 1)]);
}

#[test]
fn without_a_ttl_nothing_expires() {
    let r = registry(10);
    let f = r.register("a", &[spec("x_total", Kind::Counter, &["n", "m"], &[])]).unwrap();
    r.apply(&f, vec![add(1, 1.0)]).unwrap();
    assert_eq!(r.expire(), 0);
    assert_eq!(r.series_counts()[0].1, 1);
}

#[test]
fn the_label_policy_drops_labels_and_adds_up_what_they_told_apart() {
    let r = registry(10);
    let mut policy = Policy::new();
    policy.insert("wasmtap_x_total".into(), vec!["n".into()]);
    policy.insert("wasmtap_absent_total".into(), vec!["n".into()]);
    // Set before the family registers, as at start-up.
    let notes = r.set_policy(policy.clone());
    assert_eq!(notes.len(), 2, "{notes:?}");
    let f = r.register("a", &[spec("x_total", Kind::Counter, &["n", "m"], &[])]).unwrap();
    r.apply(&f, vec![add(1, 1.0), add(2, 2.0), add(3, 4.0)]).unwrap();
    assert!(text(&r).contains("wasmtap_x_total{m=\"7\"} 7\n"), "{}", text(&r));
    assert_eq!(r.series_counts(), vec![("wasmtap_x_total".to_string(), 1, 0)]);
    // The same policy again changes nothing; another one starts the family afresh.
    r.set_policy(policy);
    assert_eq!(r.series_counts()[0].1, 1);
    let notes = r.set_policy(Policy::new());
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(r.series_counts()[0].1, 0);
    r.apply(&f, vec![add(1, 1.0)]).unwrap();
    assert!(text(&r).contains("wasmtap_x_total{n=\"1\",m=\"7\"} 1\n"), "{}", text(&r));
}

#[test]
fn a_policy_naming_a_missing_label_is_reported() {
    let r = registry(10);
    r.register("a", &[spec("x_total", Kind::Counter, &["n"], &[])]).unwrap();
    let mut policy = Policy::new();
    policy.insert("wasmtap_x_total".into(), vec!["dst_ip".into()]);
    let notes = r.set_policy(policy);
    assert_eq!(notes, vec!["label policy: wasmtap_x_total has no label \"dst_ip\"".to_string()]);
}

#[test]
fn declarations_are_bounded_in_count_and_size() {
    let many: Vec<FamilySpec> =
        (0..257).map(|i| spec(&format!("f{i}_total"), Kind::Counter, &[], &[])).collect();
    assert!(matches!(validate(&many), Err(FamilyError::TooLarge { limit: 256, .. })));
    let long = spec(&"x".repeat(129), Kind::Gauge, &[], &[]);
    assert!(matches!(validate(&[long]), Err(FamilyError::TooLarge { limit: 128, .. })));
    let labels: Vec<String> = (0..17).map(|i| format!("l{i}")).collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let wide = spec("w", Kind::Gauge, &labels, &[]);
    assert!(matches!(validate(&[wide]), Err(FamilyError::TooLarge { limit: 16, .. })));
    let buckets: Vec<f64> = (0..65).map(f64::from).collect();
    let fine = spec("h", Kind::Histogram, &[], &buckets);
    assert!(matches!(validate(&[fine]), Err(FamilyError::TooLarge { limit: 64, .. })));
    let mut help = spec("g", Kind::Gauge, &[], &[]);
    help.help = "h".repeat(1025);
    assert!(matches!(validate(&[help]), Err(FamilyError::TooLarge { limit: 1024, .. })));
}

#[test]
fn histogram_updates_must_add_up_and_values_be_finite() {
    let r = registry(10);
    let f = r
        .register("a", &[spec("h", Kind::Histogram, &[], &[1.0]), spec("g", Kind::Gauge, &[], &[])])
        .unwrap();
    let hist = |buckets: Vec<u64>, sum: f64, count: u64| Update {
        family: 0,
        labels: vec![],
        value: Value::Histogram { buckets, sum, count },
    };
    let err = |u: Update| r.apply(&f, vec![u]).unwrap_err().to_string();
    assert!(err(hist(vec![1, 1], 1.0, 3)).contains("not the sum"));
    assert!(err(hist(vec![1, 1], f64::INFINITY, 2)).contains("not finite"));
    assert!(err(hist(vec![u64::MAX, 1], 1.0, 0)).contains("overflow"));
    let gauge = Update { family: 1, labels: vec![], value: Value::GaugeSet(f64::NAN, 1) };
    assert!(err(gauge).contains("not finite"));
    let add = Update { family: 0, labels: vec![], value: Value::CounterAdd(1.0) };
    assert!(err(add).contains("wrong kind"));
    r.apply(&f, vec![hist(vec![1, 1], 1.5, 2)]).unwrap();
}

#[test]
fn a_total_that_would_overflow_is_refused_not_wrapped() {
    let r = registry(10);
    let f = r.register("a", &[spec("h", Kind::Histogram, &[], &[1.0])]).unwrap();
    let big = 1u64 << 40;
    let hist = || Update {
        family: 0,
        labels: vec![],
        value: Value::Histogram { buckets: vec![big, 0], sum: 0.0, count: big },
    };
    // 2^24 updates of 2^40 reach 2^64: far too many to run here, so start the series high.
    r.apply(&f, vec![hist()]).unwrap();
    {
        let families = r.families.read();
        let mut series = families[0].series.lock();
        let s = &mut series.map.values_mut().next().unwrap()[0].series;
        if let SeriesValue::Histogram { buckets, count, .. } = &mut s.value {
            (buckets[0], *count) = (u64::MAX - 1, u64::MAX - 1);
        }
    }
    r.apply(&f, vec![hist()]).unwrap();
    assert_eq!(r.series_counts(), vec![("wasmtap_h".to_string(), 1, 1)], "refused once");
    // Still the value it had (the exposition prints counts as floats), not wrapped to 2^40-2.
    assert!(text(&r).contains("wasmtap_h_count 18446744073709552000\n"), "{}", text(&r));
}

#[test]
fn a_label_less_counter_is_exported_at_zero_from_the_start_and_stays() {
    let r = Registry::with_limits(Arc::new(Devices::default()), 10, Some(Duration::from_millis(1)));
    let specs = [
        spec("quiet_total", Kind::Counter, &[], &[]),
        spec("labelled_total", Kind::Counter, &["k"], &[]),
        spec("level", Kind::Gauge, &[], &[]),
        spec("t_seconds", Kind::Histogram, &[], &[1.0]),
    ];
    r.register("a", &specs).unwrap();
    let t = text(&r);
    assert!(t.contains("# TYPE wasmtap_quiet_total counter\nwasmtap_quiet_total 0\n"), "{t}");
    for absent in ["wasmtap_labelled_total", "wasmtap_level", "wasmtap_t_seconds"] {
        assert!(!t.contains(absent), "{absent}: its series are not known in advance:\n{t}");
    }
    assert_eq!(r.series_counts()[0], ("wasmtap_quiet_total".to_owned(), 1, 0));
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(r.expire(), 0, "a series known in advance does not expire");
    assert!(text(&r).contains("wasmtap_quiet_total 0\n"));
    // A policy that drops every label of a counter makes its one series known in advance.
    let policy = Policy::from([("wasmtap_labelled_total".to_owned(), vec!["k".to_owned()])]);
    r.set_policy(policy);
    assert!(text(&r).contains("wasmtap_labelled_total 0\n"), "{}", text(&r));
}

/// A registry attributing from a table in which 10.0.0.1 is pod `web-1` of Deployment `web`,
/// 10.0.0.2 pod `db-0`, 192.0.2.1 the node, and `eth0` the host side of `web-1`.
fn attributed(pods: &[(&str, &str, &str, [u8; 4])]) -> (Registry, Arc<Attribution>) {
    let listing = Listing {
        source: "file:test".into(),
        up: true,
        node_addresses: vec!["192.0.2.1".parse().unwrap()],
        pods: pods
            .iter()
            .map(|(ns, workload, pod, a)| crate::pods::Pod {
                namespace: ns.to_string(),
                name: pod.to_string(),
                uid: String::new(),
                workload: workload.to_string(),
                addresses: vec![std::net::Ipv4Addr::from(*a).into()],
                interface: (*pod == "web-1").then(|| "eth0".to_string()),
            })
            .collect(),
    };
    let a = Arc::new(Attribution::new(Table::new(listing)));
    (registry(100).with_attribution(a.clone()), a)
}

use crate::pods::{Attribution, Listing, Table};

fn pair(family: u32, src: [u8; 4], dst: [u8; 4], by: f64) -> Update {
    Update {
        family,
        labels: vec![
            Label::Ipv4(u32::from_be_bytes(src)),
            Label::Ipv4(u32::from_be_bytes(dst)),
            Label::Device(0),
        ],
        value: Value::CounterAdd(by),
    }
}

#[test]
fn updates_are_attributed_to_the_pods_that_hold_the_addresses_then() {
    let pods = [("shop", "web", "web-1", [10, 0, 0, 1]), ("data", "db", "db-0", [10, 0, 0, 2])];
    let (r, a) = attributed(&pods);
    let f =
        r.register("t", &[spec("x_total", Kind::Counter, &["src_ip", "dst_ip", "device"], &[])]);
    let f = f.unwrap();
    r.apply(&f, vec![pair(0, [10, 0, 0, 1], [10, 0, 0, 2], 3.0)]).unwrap();
    r.apply(&f, vec![pair(0, [192, 0, 2, 1], [198, 51, 100, 7], 1.0)]).unwrap();
    // The address of db-0 is given to a new pod: later updates carry it, in a new series.
    let reused = [("shop", "web", "web-1", [10, 0, 0, 1]), ("data", "db", "db-1", [10, 0, 0, 2])];
    let (_, b) = attributed(&reused);
    a.publish(b.load().listing().clone());
    r.apply(&f, vec![pair(0, [10, 0, 0, 1], [10, 0, 0, 2], 2.0)]).unwrap();
    let t = text(&r);
    let pod = |p: &str| format!("namespace=\"shop\",workload=\"web\",pod=\"{p}\"");
    let web = pod("web-1");
    assert!(t.contains(&format!(
        "x_total{{src_ip=\"10.0.0.1\",dst_ip=\"10.0.0.2\",device=\"eth0\",src_namespace=\"shop\",\
         src_workload=\"web\",src_pod=\"web-1\",dst_namespace=\"data\",dst_workload=\"db\",\
         dst_pod=\"db-0\",{web}}} 3\n"
    )), "{t}");
    assert!(
        t.contains("dst_pod=\"db-1\",namespace=\"shop\",workload=\"web\",pod=\"web-1\"} 2\n"),
        "{t}"
    );
    // The node's address names the node; an address outside the node names nothing.
    assert!(
        t.contains(
            "src_namespace=\"\",src_workload=\"node\",src_pod=\"\",dst_namespace=\"\",\
         dst_workload=\"\",dst_pod=\"\","
        ),
        "{t}"
    );
    assert_eq!(t, crate_text(&r));
}

#[test]
fn dropping_addresses_and_pods_leaves_per_workload_series_with_the_same_sums() {
    let pods: Vec<(&str, &str, String, [u8; 4])> = (1..=20u8)
        .map(|i| ("shop", if i % 2 == 0 { "web" } else { "api" }, format!("p{i}"), [10, 0, 0, i]))
        .collect();
    let pods: Vec<(&str, &str, &str, [u8; 4])> =
        pods.iter().map(|(n, w, p, a)| (*n, *w, p.as_str(), *a)).collect();
    let (r, _) = attributed(&pods);
    let drop = ["src_ip", "dst_ip", "src_pod", "dst_pod", "device", "pod"];
    let policy = Policy::from([("wasmtap_x_total".to_string(), drop.map(String::from).to_vec())]);
    r.set_policy(policy);
    let f =
        r.register("t", &[spec("x_total", Kind::Counter, &["src_ip", "dst_ip", "device"], &[])]);
    let f = f.unwrap();
    let mut total = 0.0;
    for i in 1..=20u8 {
        r.apply(&f, vec![pair(0, [10, 0, 0, i], [10, 0, 0, 21 - i], f64::from(i))]).unwrap();
        total += f64::from(i);
    }
    let t = text(&r);
    let lines: Vec<&str> = t.lines().filter(|l| !l.starts_with('#')).collect();
    // api→web, web→api (21 - i has the other parity), and nothing else; no pod is behind
    // eth0 here.
    assert_eq!(lines.len(), 2, "{t}");
    let sum: f64 =
        lines.iter().map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()).sum();
    assert_eq!(sum, total);
    assert!(t.contains("x_total{src_namespace=\"shop\",src_workload=\"api\",dst_namespace=\"shop\",dst_workload=\"web\",namespace=\"\",workload=\"\"} 100\n"), "{t}");
}

#[test]
fn without_attribution_or_with_its_labels_declared_nothing_is_added() {
    let r = registry(100);
    let f =
        r.register("t", &[spec("x_total", Kind::Counter, &["src_ip", "dst_ip", "device"], &[])]);
    r.apply(&f.unwrap(), vec![pair(0, [10, 0, 0, 1], [10, 0, 0, 2], 1.0)]).unwrap();
    assert!(
        text(&r).contains("x_total{src_ip=\"10.0.0.1\",dst_ip=\"10.0.0.2\",device=\"eth0\"} 1\n")
    );
    let (r, _) = attributed(&[("shop", "web", "web-1", [10, 0, 0, 1])]);
    let labels = ["src_ip", "dst_ip", "src_pod", "device"];
    let f = r.register("t", &[spec("x_total", Kind::Counter, &labels, &[])]).unwrap();
    let mut u = pair(0, [10, 0, 0, 1], [10, 0, 0, 2], 1.0);
    u.labels.insert(2, Label::Text("mine".into()));
    r.apply(&f, vec![u]).unwrap();
    let t = text(&r);
    assert!(t.contains("src_pod=\"mine\",device=\"eth0\",namespace=\"shop\",workload=\"web\",pod=\"web-1\"} 1\n"), "{t}");
}
