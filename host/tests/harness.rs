//! Checks of the test helpers themselves (no root, no host binary needed): the exposition
//! parser, the Prometheus query-answer parser, and the committed sample capture.

mod common;

use common::promql::{parse_query_value, url_encode};
use common::*;
use std::time::Duration;

#[test]
fn exposition_parser_reads_labels_escapes_and_special_values() {
    let text = r#"# HELP wasmtap_packets_total Captured packets.
# TYPE wasmtap_packets_total counter
wasmtap_packets_total{device="eth0"} 12
wasmtap_packets_total{device="we\"ird\\dev\nx"} 3 1700000000000
wasmtap_tcp_resets_total{src_ip="10.77.1.2",dst_ip="fd77:1::1",device="a"} 2
wasmtap_ip_packet_size_bytes_bucket{device="eth0",le="+Inf"} 15
wasmtap_up 1e0
wasmtap_nan NaN
"#;
    let s = parse_exposition(text);
    assert_eq!(s.len(), 6);
    assert_eq!(sum_metric(&s, "wasmtap_packets_total"), 15.0);
    assert_eq!(s[1].labels["device"], "we\"ird\\dev\nx");
    assert_eq!(s[2].labels["dst_ip"], "fd77:1::1");
    assert_eq!(s[3].labels["le"], "+Inf");
    assert_eq!(s[4].value, 1.0);
    assert!(s[5].value.is_nan());
    let pairs = sum_by_pair(&s, "wasmtap_tcp_resets_total");
    let key = ("10.77.1.2".parse().expect("v4"), "fd77:1::1".parse().expect("v6"));
    assert_eq!(pairs.get(&key), Some(&2));
}

#[test]
#[should_panic(expected = "exposition line 1")]
fn exposition_parser_rejects_garbage() {
    parse_exposition("wasmtap_x{device=\"unterminated} 1\n");
}

#[test]
fn self_metrics_are_filtered_out() {
    let text = "# HELP wasmtap_host_x X\n# TYPE wasmtap_host_x gauge\nwasmtap_host_x 1\n\
                # TYPE wasmtap_packets_total counter\nwasmtap_packets_total 2\n\
                wasmtap_analyzer_traps_total{analyzer=\"a\"} 0\n";
    assert_eq!(
        without_self_metrics(text),
        "# TYPE wasmtap_packets_total counter\nwasmtap_packets_total 2\n"
    );
}

#[test]
fn prometheus_query_answers_are_parsed() {
    let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1732621234.5,"6463"]}]}}"#;
    assert_eq!(parse_query_value(body), Some(6463.0));
    let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    assert_eq!(parse_query_value(empty), None);
    assert_eq!(url_encode("sum(a{b=\"c\"})"), "sum%28a%7Bb%3D%22c%22%7D%29");
}

#[test]
fn run_with_timeout_kills_a_hung_command() {
    let r =
        run_with_timeout(std::process::Command::new("sleep").arg("30"), Duration::from_millis(300));
    assert!(r.timed_out());
    assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);
}

/// The committed sample is a real capture with everything the other tests rely on.
#[test]
fn sample_capture_has_ipv4_ipv6_resets_df_and_wscale() {
    let sample = sample_capture();
    assert!(sample.is_file(), "{} is missing", sample.display());
    let t = Totals::from_tshark(&sample);
    assert!((100..=2000).contains(&t.frames), "sample has {} frames", t.frames);
    assert!(t.resets > 0 && t.dont_fragment > 0 && t.wscale_options > 0, "{t:?}");
    assert!(tshark_count(&sample, Some("ipv6 && tcp.flags.reset==1")) > 0);
    assert!(tshark_count(&sample, Some("ip && tcp.flags.reset==1")) > 0);
}
