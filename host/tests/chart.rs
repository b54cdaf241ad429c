//! The Helm chart (`k8s/wasmtap`), checked the way `helm install` would take it, without a
//! cluster and without a helm binary.
//!
//! `k8s/chart_check.py` drives the real Helm library (PyPI `helm-python-sdk`: Helm v4's Go SDK
//! behind a C ABI), `kubernetes-validate` and the prometheus-operator CRD models, and prints JSON;
//! the assertions are here. It runs with the virtualenv that `scripts/setup` makes from
//! `k8s/requirements.txt` (`WASMTAP_TEST_VENV`, else `~/.cache/wasmtap-test-venv`); without
//! it the tests fail with that hint, as they do without tshark or promtool.
//!
//! Two value sets are rendered: the defaults, and `k8s/wasmtap/ci/all-options-values.yaml`,
//! which switches every option on. For each:
//! - `helm lint --strict` reports no warning and no error;
//! - every rendered object of a built-in kind passes `kubernetes-validate --strict` (unknown
//!   fields are errors) against Kubernetes 1.25 (the chart's `kubeVersion` floor) and 1.37;
//!   kubernetes-validate has no schema for ServiceMonitor, PodMonitor and PrometheusRule, so
//!   those are checked against the prometheus-operator CRD schemas (generated models: types,
//!   enums, patterns, required fields) with unknown fields refused. A negative control proves
//!   that each of these validators refuses a broken object, and an unknown kind is a failure,
//!   never a silent pass;
//! - the container's arguments parse with the built binary: `wasmtap <args> --check-config`, with
//!   the rendered config file written to a temporary path and `--config` pointed at it.
//!
//! Besides: `values.schema.json` refuses each of a list of bad values (one assertion each, the
//! message naming the key) and accepts edge values; the security context is least privilege;
//! pod attribution (on by default) mounts the runtime socket's directory and the pods' network
//! namespaces read-only and passes `--cri-socket`, and off mounts no host path and passes
//! `--cri-socket=none`, with the same capabilities either way; the PrometheusRule carries
//! exactly the rules of `dashboard/wasmtap-alerts.yaml`, and with `prometheusRule.ackRttRise`
//! on, the group of `dashboard/wasmtap-alerts-rtt.yaml` after them; the scrape objects select
//! the Service and the pods, name their port, and drop the target labels that would clash with
//! the attribution's `namespace` and `pod`.

mod common;

use common::chart::*;
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Kubernetes versions the built-in objects are validated against: the chart's floor
/// (`kubeVersion: >=1.25.0-0`) and the newest schemas kubernetes-validate ships.
const KUBE_VERSIONS: [&str; 2] = ["1.25", "1.37"];

// ------------------------------------------------------------------------------------------
// Lint and validation

#[test]
fn chart_lints_clean_with_defaults_and_with_every_option() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8");
    let all = all_options_values();
    for (what, extra) in
        [("defaults", vec![]), ("every option", vec!["--values", all.to_str().expect("utf-8")])]
    {
        let mut args = vec!["lint", chart];
        args.extend(extra);
        let report = chart_check(&args);
        eprintln!(
            "helm lint --strict ({what}), Helm {}: {}",
            report["helm_sdk"], report["messages"]
        );
        assert_eq!(report["total_charts_linted"], 1, "{what}: {report}");
        assert_eq!(report["errors"], json!([]), "{what}: lint errors: {report}");
        // Severity 1 is informational ("icon is recommended"); 2 warning, 3 error.
        let serious: Vec<&Value> = report["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m["severity"].as_u64().unwrap_or(3) >= 2)
            .collect();
        assert!(serious.is_empty(), "{what}: lint warnings or errors: {serious:?}");
    }
}

/// Runs `validate` (or `validate-file`) and returns (object, validator, error) rows.
fn validation_rows(args: &[&str]) -> Vec<(String, String, Option<String>)> {
    let mut full: Vec<&str> = args.to_vec();
    for v in KUBE_VERSIONS {
        full.extend(["--kube-version", v]);
    }
    let answer = chart_check(&full);
    let mut rows = Vec::new();
    for o in answer["objects"].as_array().expect("objects") {
        let name =
            format!("{}/{}", o["kind"].as_str().unwrap_or("?"), o["name"].as_str().unwrap_or("?"));
        let checks = o["checks"].as_array().expect("checks");
        assert!(!checks.is_empty(), "{name} was not checked by anything");
        for c in checks {
            rows.push((
                name.clone(),
                c["validator"].as_str().expect("validator").to_string(),
                c["error"].as_str().map(str::to_string),
            ));
        }
    }
    rows
}

#[test]
fn every_rendered_object_passes_strict_validation() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8");
    let all = all_options_values();
    let all = all.to_str().expect("utf-8");
    for (what, args, expected_kinds) in [
        ("defaults", vec!["validate", chart], vec!["ConfigMap", "DaemonSet", "Service"]),
        (
            "every option",
            vec!["validate", chart, "--values", all],
            vec![
                "ConfigMap",
                "DaemonSet",
                "PodMonitor",
                "PrometheusRule",
                "Service",
                "ServiceMonitor",
            ],
        ),
    ] {
        let rows = validation_rows(&args);
        let mut seen: Vec<&str> =
            rows.iter().map(|(o, _, _)| o.split('/').next().unwrap_or("")).collect();
        seen.dedup();
        assert_eq!(seen, expected_kinds, "{what}: rendered kinds");
        for (object, validator, error) in &rows {
            eprintln!("{what}: {object}: {validator}: {}", error.as_deref().unwrap_or("valid"));
        }
        let failed: Vec<_> = rows.iter().filter(|(_, _, e)| e.is_some()).collect();
        assert!(failed.is_empty(), "{what}: objects refused: {failed:#?}");
        // Built-in kinds against both Kubernetes versions, CRD kinds against their schema.
        for (object, validator, _) in &rows {
            let crd = ["ServiceMonitor/", "PodMonitor/", "PrometheusRule/"]
                .iter()
                .any(|k| object.starts_with(k));
            if crd {
                assert!(
                    validator.contains("prometheus-operator CRD schema"),
                    "{object}: {validator}"
                );
            } else {
                assert!(validator.contains("--strict"), "{object}: {validator}");
            }
        }
    }
}

/// The validators are not rubber stamps: each refuses a broken object of its kind, and a kind
/// nobody has a schema for is an error, not a pass.
#[test]
fn the_validators_refuse_broken_objects() {
    let dir = TempDir::new("chart-negative");
    let file = dir.join("broken.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: typo}\nspec:\n  selector: \
         {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      \
         containers:\n        - name: c\n          image: i\n          securityContext: \
         {readOnlyRootFilesytem: true}\n---\napiVersion: monitoring.coreos.com/v1\nkind: \
         ServiceMonitor\nmetadata: {name: typo}\nspec:\n  selector: {matchLabels: {a: b}}\n  \
         endpoints: [{port: metrics, intervall: 15s}]\n---\napiVersion: \
         monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: bad-duration}\nspec:\n  \
         groups: [{name: g, rules: [{alert: A, expr: up, for: soon}]}]\n---\napiVersion: \
         monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: no-selector}\nspec:\n  \
         podMetricsEndpoints: [{port: metrics}]\n---\napiVersion: v1\nkind: Frobnicator\n\
         metadata: {name: unknown-kind}\n",
    )
    .expect("write");
    let rows = validation_rows(&["validate-file", file.to_str().expect("utf-8")]);
    for (object, validator, error) in &rows {
        eprintln!("{object}: {validator}: {error:?}");
    }
    for (object, needle) in [
        ("DaemonSet/typo", "readOnlyRootFilesytem"),
        ("ServiceMonitor/typo", "intervall"),
        ("PrometheusRule/bad-duration", "for"),
        ("PodMonitor/no-selector", "selector"),
        ("Frobnicator/unknown-kind", "Couldn't find schema"),
    ] {
        let mine: Vec<_> = rows.iter().filter(|(o, _, _)| o == object).collect();
        assert!(!mine.is_empty(), "{object} not validated");
        for (_, validator, error) in mine {
            let error = error.as_deref().unwrap_or_else(|| panic!("{validator} accepted {object}"));
            assert!(error.contains(needle), "{object}: {validator}: {error}");
        }
    }
}

// ------------------------------------------------------------------------------------------
// The schema

/// One case for `values.schema.json`: overrides, and `Some(path)` where the schema must refuse
/// them and name that path (`None`: they must be accepted).
struct Case {
    name: &'static str,
    values: Value,
    refused_at: Option<&'static str>,
}

fn bad(name: &'static str, values: Value, path: &'static str) -> Case {
    Case { name, values, refused_at: Some(path) }
}

fn good(name: &'static str, values: Value) -> Case {
    Case { name, values, refused_at: None }
}

#[test]
fn values_schema_refuses_bad_values_and_accepts_edge_values() {
    let cases = vec![
        bad("port is not a number", json!({"port": "not-a-port"}), "'/port'"),
        bad("port 0", json!({"port": 0}), "'/port'"),
        bad("port over 65535", json!({"port": 65536}), "'/port'"),
        bad("negative workers", json!({"workers": -3}), "'/workers'"),
        bad("fractional workers", json!({"workers": 1.5}), "'/workers'"),
        bad("batch size 0", json!({"batchSize": 0}), "'/batchSize'"),
        bad("no interface", json!({"interfaces": []}), "'/interfaces'"),
        bad("interfaces as a string", json!({"interfaces": "veth*"}), "'/interfaces'"),
        bad("interface with a space", json!({"interfaces": ["veth 1"]}), "'/interfaces/0'"),
        bad("empty exclude pattern", json!({"exclude": [""]}), "'/exclude/0'"),
        bad("pull policy", json!({"image": {"pullPolicy": "Sometimes"}}), "'/image/pullPolicy'"),
        bad("unknown image key", json!({"image": {"tags": "1"}}), "'/image'"),
        bad("snaplen too small for headers", json!({"snaplen": 10}), "'/snaplen'"),
        bad("Geneve's port as VXLAN", json!({"vxlanPorts": [8472, 6081]}), "'/vxlanPorts/1'"),
        bad("VXLAN port 0", json!({"vxlanPorts": [0]}), "'/vxlanPorts/0'"),
        bad("VXLAN ports as a string", json!({"vxlanPorts": "8472"}), "'/vxlanPorts'"),
        bad("promisc as a string", json!({"promisc": "true"}), "'/promisc'"),
        bad("log level with a space", json!({"logLevel": "debug warn"}), "'/logLevel'"),
        bad("series cap 0", json!({"config": {"seriesCap": 0}}), "'/config/seriesCap'"),
        bad(
            "series TTL in words",
            json!({"config": {"seriesTtl": "ten minutes"}}),
            "'/config/seriesTtl'",
        ),
        bad(
            "labels to drop as a string",
            json!({"config": {"labelsDrop": {"tcp_resets_total": "dst_ip"}}}),
            "'/config/labelsDrop/tcp_resets_total'",
        ),
        bad(
            "invalid family name",
            json!({"config": {"labelsDrop": {"tcp-resets": ["dst_ip"]}}}),
            // Helm reports a bad property name at the document root, naming the property.
            "invalid propertyName 'tcp-resets'",
        ),
        bad(
            "invalid label name",
            json!({"config": {"labelsDrop": {"tcp_resets_total": ["dst-ip"]}}}),
            "'/config/labelsDrop/tcp_resets_total/0'",
        ),
        bad("call budget 0", json!({"sandbox": {"callBudgetMs": 0}}), "'/sandbox/callBudgetMs'"),
        bad(
            "memory cap as a quantity",
            json!({"sandbox": {"memoryMiB": "64Mi"}}),
            "'/sandbox/memoryMiB'",
        ),
        bad(
            "memory limit in words",
            json!({"resources": {"limits": {"memory": "lots"}}}),
            "'/resources/limits/memory'",
        ),
        bad(
            "no CPU request",
            json!({"resources": {"requests": {"cpu": null}}}),
            "'/resources/requests'",
        ),
        bad(
            "no memory limit",
            json!({"resources": {"limits": {"memory": null}}}),
            "'/resources/limits'",
        ),
        bad(
            "maxUnavailable 0",
            json!({"updateStrategy": {"maxUnavailable": 0}}),
            "'/updateStrategy/maxUnavailable'",
        ),
        bad(
            "maxUnavailable 0%",
            json!({"updateStrategy": {"maxUnavailable": "0%"}}),
            "'/updateStrategy/maxUnavailable'",
        ),
        bad(
            "maxUnavailable in words",
            json!({"updateStrategy": {"maxUnavailable": "all"}}),
            "'/updateStrategy/maxUnavailable'",
        ),
        bad(
            "priority class not a DNS name",
            json!({"priorityClassName": "Node_Critical"}),
            "'/priorityClassName'",
        ),
        bad(
            "analyzers ConfigMap not a DNS name",
            json!({"analyzers": {"configMap": "My_Analyzers"}}),
            "'/analyzers/configMap'",
        ),
        bad(
            "analyzer volume with two sources",
            json!({"analyzers": {"volume": {"emptyDir": {}, "hostPath": {"path": "/x"}}}}),
            "'/analyzers/volume'",
        ),
        bad("cache size in words", json!({"cacheSizeLimit": "big"}), "'/cacheSizeLimit'"),
        bad("tolerations as a string", json!({"tolerations": "all"}), "'/tolerations'"),
        bad(
            "annotation value not a string",
            json!({"podAnnotations": {"a": 1}}),
            "'/podAnnotations/a'",
        ),
        bad(
            "ServiceMonitor enabled as a string",
            json!({"serviceMonitor": {"enabled": "yes"}}),
            "'/serviceMonitor/enabled'",
        ),
        bad(
            "scrape interval in words",
            json!({"serviceMonitor": {"interval": "15 seconds"}}),
            "'/serviceMonitor/interval'",
        ),
        bad(
            "PodMonitor timeout",
            json!({"podMonitor": {"scrapeTimeout": "10"}}),
            "'/podMonitor/scrapeTimeout'",
        ),
        bad(
            "ratio threshold over 1",
            json!({"prometheusRule": {"retransmissionRatio": {"threshold": 1.5}}}),
            "'/prometheusRule/retransmissionRatio/threshold'",
        ),
        bad(
            "ratio threshold 0",
            json!({"prometheusRule": {"retransmissionRatio": {"threshold": 0}}}),
            "'/prometheusRule/retransmissionRatio/threshold'",
        ),
        bad(
            "alert duration in words",
            json!({"prometheusRule": {"interfaceDown": {"for": "5 minutes"}}}),
            "'/prometheusRule/interfaceDown/for'",
        ),
        bad(
            "negative drop rate",
            json!({"prometheusRule": {"drops": {"perSecond": -1}}}),
            "'/prometheusRule/drops/perSecond'",
        ),
        bad(
            "ACK RTT rise ratio 1 (a steady pair would alert)",
            json!({"prometheusRule": {"ackRttRise": {"ratio": 1}}}),
            "'/prometheusRule/ackRttRise/ratio'",
        ),
        bad(
            "ACK RTT rise ratio under 1",
            json!({"prometheusRule": {"ackRttRise": {"ratio": 0.5}}}),
            "'/prometheusRule/ackRttRise/ratio'",
        ),
        bad(
            "ACK RTT rise ratio as a string",
            json!({"prometheusRule": {"ackRttRise": {"ratio": "3x"}}}),
            "'/prometheusRule/ackRttRise/ratio'",
        ),
        bad(
            "ACK RTT rise without a sample guard",
            json!({"prometheusRule": {"ackRttRise": {"minSamplesPerSecond": 0}}}),
            "'/prometheusRule/ackRttRise/minSamplesPerSecond'",
        ),
        bad(
            "ACK RTT rise on as a string",
            json!({"prometheusRule": {"ackRttRise": {"enabled": "true"}}}),
            "'/prometheusRule/ackRttRise/enabled'",
        ),
        bad(
            "ACK RTT rise duration in words",
            json!({"prometheusRule": {"ackRttRise": {"for": "a quarter hour"}}}),
            "'/prometheusRule/ackRttRise/for'",
        ),
        bad(
            "unknown ACK RTT rise key",
            json!({"prometheusRule": {"ackRttRise": {"threshold": 3}}}),
            "'/prometheusRule/ackRttRise'",
        ),
        bad("unknown top-level key", json!({"prot": 9725}), "'prot' not allowed"),
        bad("attribution on as a string", json!({"cri": {"enabled": "yes"}}), "'/cri/enabled'"),
        bad(
            "relative CRI socket",
            json!({"cri": {"socket": "run/containerd/containerd.sock"}}),
            "'/cri/socket'",
        ),
        // Off is `enabled: false`; the chart writes `--cri-socket=none` itself.
        bad("CRI socket none", json!({"cri": {"socket": "none"}}), "'/cri/socket'"),
        bad(
            "CRI socket in / (its directory, mounted, would be the node's root)",
            json!({"cri": {"socket": "/containerd.sock"}}),
            "'/cri/socket'",
        ),
        bad(
            "CRI socket through ..",
            json!({"cri": {"socket": "/run/../containerd.sock"}}),
            "'/cri/socket'",
        ),
        bad(
            "CRI socket with a space",
            json!({"cri": {"socket": "/run/my runtime/cri.sock"}}),
            "'/cri/socket'",
        ),
        bad(
            "CRI socket longer than a unix socket address",
            json!({"cri": {"socket": format!("/run/{}/cri.sock", "d".repeat(100))}}),
            "'/cri/socket'",
        ),
        bad("unknown cri key", json!({"cri": {"sockets": "/run/x.sock"}}), "'/cri'"),
        bad("relative netns directory", json!({"cri": {"netnsDir": "netns"}}), "'/cri/netnsDir'"),
        bad(
            "netns directory through ..",
            json!({"cri": {"netnsDir": "/var/run/netns/.."}}),
            "'/cri/netnsDir'",
        ),
        good("lowest port", json!({"port": 1})),
        good(
            "ACK RTT rise on, ratio 1.5, 0.2 samples per second",
            json!({"prometheusRule": {"ackRttRise": {
                "enabled": true, "ratio": 1.5, "minSamplesPerSecond": 0.2
            }}}),
        ),
        good("highest port", json!({"port": 65535})),
        good("maxUnavailable 100%", json!({"updateStrategy": {"maxUnavailable": "100%"}})),
        good("series kept for ever", json!({"config": {"seriesTtl": "0s"}})),
        good("no VXLAN port", json!({"vxlanPorts": []})),
        good("compound TTL", json!({"config": {"seriesTtl": "1h30m"}})),
        good(
            "prefixed family",
            json!({"config": {"labelsDrop": {"wasmtap_tcp_resets_total": ["dst_ip"]}}}),
        ),
        good(
            "analyzers from a hostPath",
            json!({"analyzers": {"volume": {"hostPath": {"path": "/opt/wasmtap"}}}}),
        ),
        good("no CPU limit", json!({"resources": {"limits": {"cpu": null}}})),
        good("promiscuous", json!({"promisc": true})),
        good("attribution off", json!({"cri": {"enabled": false}})),
        good("CRI-O", json!({"cri": {"socket": "/run/crio/crio.sock"}})),
        good("k3s", json!({"cri": {"socket": "/run/k3s/containerd/containerd.sock"}})),
        good(
            "socket name of 107 bytes",
            json!({"cri": {"socket": format!("/run/{}", "s".repeat(102))}}),
        ),
    ];
    let dir = TempDir::new("chart-schema");
    let file = dir.join("cases.json");
    let input: Vec<Value> =
        cases.iter().map(|c| json!({"name": c.name, "values": c.values})).collect();
    std::fs::write(&file, Value::Array(input).to_string()).expect("write cases");
    let chart = chart_dir();
    let answer = chart_check(&[
        "refuse",
        chart.to_str().expect("utf-8"),
        "--cases",
        file.to_str().expect("utf-8"),
    ]);
    let results = answer["cases"].as_array().expect("cases");
    assert_eq!(results.len(), cases.len());
    let mut failures = Vec::new();
    for (case, result) in cases.iter().zip(results) {
        assert_eq!(result["name"], case.name);
        let refused = result["refused"].as_bool().expect("refused");
        let message = result["message"].as_str().unwrap_or("");
        let error = result["error"].as_str().unwrap_or("");
        eprintln!(
            "{:<40} {}: {}",
            case.name,
            if refused { "refused" } else { "accepted" },
            message.lines().last().unwrap_or("").trim()
        );
        // One assertion per case; collected, so that one run lists every wrong case.
        let ok = match case.refused_at {
            Some(path) => refused && error == "HelmValuesError" && message.contains(path),
            None => !refused,
        };
        if !ok {
            failures.push(format!(
                "{}: values {} expected {}, got {} {error}: {message}",
                case.name,
                case.values,
                case.refused_at.map(|p| format!("refusal at {p}")).unwrap_or("acceptance".into()),
                if refused { "refusal" } else { "acceptance" },
            ));
        }
    }
    assert!(failures.is_empty(), "schema cases wrong:\n{}", failures.join("\n"));
}

/// Combinations the schema cannot express are refused by the templates, with a message.
#[test]
fn contradictory_values_are_refused_with_a_message() {
    let dir = TempDir::new("chart-fail");
    let file = dir.join("cases.json");
    let cases = json!([
        {"name": "both analyzer sources",
         "values": {"analyzers": {"configMap": "a", "volume": {"emptyDir": {}}}}},
        {"name": "ServiceMonitor without Service",
         "values": {"service": {"enabled": false}, "serviceMonitor": {"enabled": true}}},
        {"name": "no analyzer at all",
         "values": {"analyzers": {"builtin": false}}},
        {"name": "CRI socket in the netns directory",
         "values": {"cri": {"socket": "/var/run/netns/cri.sock"}}},
    ]);
    std::fs::write(&file, cases.to_string()).expect("write");
    let chart = chart_dir();
    let answer = chart_check(&[
        "refuse",
        chart.to_str().expect("utf-8"),
        "--cases",
        file.to_str().expect("utf-8"),
    ]);
    let results = answer["cases"].as_array().expect("cases");
    assert_eq!(results.len(), 4);
    for (result, needle) in results.iter().zip([
        "not both",
        "needs service.enabled",
        "without any analyzer",
        "must not be in cri.netnsDir",
    ]) {
        assert_eq!(result["refused"], true, "{result}");
        assert!(result["message"].as_str().unwrap_or("").contains(needle), "{result}");
    }
}

// ------------------------------------------------------------------------------------------
// What the rendering says

#[test]
fn security_context_is_least_privilege() {
    let dir = TempDir::new("chart-security");
    for (what, objects, promisc) in [
        ("defaults", render(None), false),
        ("every option", render(Some(&all_options_values())), true),
        ("promisc only", render_with(&json!({"promisc": true}), &dir), true),
        ("attribution off", render_with(&json!({"cri": {"enabled": false}}), &dir), false),
    ] {
        let ds = one(&objects, "DaemonSet");
        let pod = &ds["spec"]["template"]["spec"];
        let c = container(&objects);
        let sc = &c["securityContext"];
        assert_eq!(pod["hostNetwork"], true, "{what}: the node's interfaces");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{what}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
        assert!(pod["hostPID"].is_null() && pod["hostIPC"].is_null(), "{what}: {pod}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
        let added = strings(&sc["capabilities"]["add"]);
        let expected = if promisc { vec!["NET_RAW", "NET_ADMIN"] } else { vec!["NET_RAW"] };
        assert_eq!(added, expected, "{what}: capabilities added");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(sc["privileged"], false, "{what}");
        assert_eq!(sc["runAsUser"], 0, "{what}: root for the added capability (README)");
        // Requests and limits for CPU and memory.
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    !c["resources"][kind][resource].is_null(),
                    "{what}: no {kind}.{resource}: {}",
                    c["resources"]
                );
            }
        }
        // One pod per node at a time, no surge (the port is the node's).
        let rolling = &ds["spec"]["updateStrategy"]["rollingUpdate"];
        assert_eq!(rolling["maxSurge"], 0, "{what}");
        assert!(!rolling["maxUnavailable"].is_null(), "{what}");
        // Probes on the exporter's endpoints.
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{what}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{what}");
    }
    let defaults = render(None);
    let pod = &one(&defaults, "DaemonSet")["spec"]["template"]["spec"];
    assert!(pod["priorityClassName"].is_null(), "no priority class by default (see values.yaml)");
    let all = render(Some(&all_options_values()));
    let ds = one(&all, "DaemonSet");
    assert_eq!(ds["spec"]["template"]["spec"]["priorityClassName"], "wasmtap-node-agent");
    assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], "10%");
}

/// The volumes are where the arguments say: the config file, the compile cache on an emptyDir,
/// and the analyzers (from a ConfigMap or any volume) at the watched directory.
#[test]
fn volumes_are_mounted_where_the_arguments_point() {
    let dir = TempDir::new("chart-volumes");
    let host_path = json!({"analyzers": {"volume": {"hostPath": {"path": "/opt/wasmtap", "type": "Directory"}}}});
    for (what, objects, analyzers) in [
        ("defaults", render(None), None),
        ("ConfigMap analyzers", render(Some(&all_options_values())), Some("configMap")),
        ("hostPath analyzers", render_with(&host_path, &dir), Some("hostPath")),
    ] {
        let ds = one(&objects, "DaemonSet");
        let c = container(&objects);
        let args = strings(&c["args"]);
        let mounts = c["volumeMounts"].as_array().expect("mounts");
        let volumes = ds["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes");
        let volume_at = |path: &str| -> &Value {
            let m = mounts
                .iter()
                .find(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("-")))
                .unwrap_or_else(|| panic!("{what}: nothing mounted at {path}: {mounts:?}"));
            volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap_or_else(|| panic!("{what}: no volume {}", m["name"]))
        };
        let config = arg_value(&args, "--config").expect("--config");
        let cm = one(&objects, "ConfigMap");
        assert_eq!(volume_at(&config)["configMap"]["name"], cm["metadata"]["name"], "{what}");
        let file = Path::new(&config).file_name().expect("file").to_str().expect("utf-8");
        assert!(cm["data"][file].is_string(), "{what}: ConfigMap has no {file}");
        let cache = arg_value(&args, "--cache-dir").expect("--cache-dir");
        let cache_volume = volume_at(&cache);
        assert!(cache_volume["emptyDir"].is_object(), "{what}: cache on {cache_volume}");
        assert!(!cache_volume["emptyDir"]["sizeLimit"].is_null(), "{what}: cache size limit");
        match analyzers {
            None => assert!(arg_value(&args, "--analyzer-dir").is_none(), "{what}: {args:?}"),
            Some(source) => {
                let watched = arg_value(&args, "--analyzer-dir").expect("--analyzer-dir");
                let v = volume_at(&watched);
                assert!(v[source].is_object(), "{what}: analyzers from {v}");
                let m = mounts.iter().find(|m| m["mountPath"] == watched.as_str()).expect("mount");
                assert_eq!(m["readOnly"], true, "{what}: analyzers read-only");
            }
        }
    }
}

/// Pod attribution (values `cri.*`). On (the default, and with other paths): `--cri-socket`
/// names the socket at its node path, inside a read-only hostPath mount of the directory that
/// holds it (the same path inside and out, so the flag names the node's file), and the pods'
/// network namespaces are mounted read-only with HostToContainer propagation. Off: no host path
/// is mounted at all and the host is told `--cri-socket=none` (else it would look for the usual
/// sockets itself). Either way the capabilities are the same, NET_RAW alone, and nothing is
/// privileged or propagates back to the node.
#[test]
fn attribution_mounts_the_runtime_socket_and_namespaces_read_only_or_nothing() {
    let dir = TempDir::new("chart-cri");
    let off = render_with(&json!({"cri": {"enabled": false}}), &dir);
    // Every option, but attribution off: the same values file with `cri.enabled` false.
    let all = all_options_values();
    let mut all_values =
        chart_check(&["load", all.to_str().expect("utf-8")])["documents"][0].clone();
    all_values["cri"]["enabled"] = json!(false);
    let all_off = render_with(&all_values, &dir);
    for (what, objects, socket, netns, without) in [
        ("defaults", render(None), Some("/run/containerd/containerd.sock"), "/var/run/netns", &off),
        ("every option", render(Some(&all)), Some("/run/crio/crio.sock"), "/run/netns", &all_off),
        ("attribution off", off.clone(), None, "", &off),
        ("every option, attribution off", all_off.clone(), None, "", &all_off),
    ] {
        let ds = one(&objects, "DaemonSet");
        let c = container(&objects);
        let args = strings(&c["args"]);
        let mounts = c["volumeMounts"].as_array().expect("mounts");
        let volumes = ds["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes");
        let host_paths: Vec<&Value> =
            volumes.iter().filter(|v| v["hostPath"].is_object()).collect();
        let flags: Vec<&String> = args.iter().filter(|a| a.starts_with("--cri-socket")).collect();
        assert_eq!(flags.len(), 1, "{what}: one --cri-socket in {args:?}");
        let Some(socket) = socket else {
            assert_eq!(arg_value(&args, "--cri-socket").as_deref(), Some("none"), "{what}");
            assert!(host_paths.is_empty(), "{what}: host paths mounted: {host_paths:?}");
            continue;
        };
        assert_eq!(arg_value(&args, "--cri-socket").as_deref(), Some(socket), "{what}");
        // The mount that holds the socket: its directory, from the same host path.
        let socket_dir = Path::new(socket).parent().expect("directory").to_str().expect("utf-8");
        let volume = |name: &Value| -> &Value {
            volumes
                .iter()
                .find(|v| &v["name"] == name)
                .unwrap_or_else(|| panic!("{what}: no volume {name}"))
        };
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == socket_dir)
            .unwrap_or_else(|| panic!("{what}: nothing mounted at {socket_dir}: {mounts:?}"));
        assert_eq!(m["readOnly"], true, "{what}: socket directory read-only: {m}");
        assert!(m["mountPropagation"].is_null(), "{what}: no propagation needed: {m}");
        let v = volume(&m["name"]);
        assert_eq!(v["hostPath"]["path"], socket_dir, "{what}: {v}");
        assert_eq!(v["hostPath"]["type"], "Directory", "{what}: {v}");
        // The network namespaces: read-only, later ones propagating in, never out.
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == netns)
            .unwrap_or_else(|| panic!("{what}: nothing mounted at {netns}: {mounts:?}"));
        assert_eq!(m["readOnly"], true, "{what}: {m}");
        assert_eq!(m["mountPropagation"], "HostToContainer", "{what}: {m}");
        let v = volume(&m["name"]);
        assert_eq!(v["hostPath"]["path"], netns, "{what}: {v}");
        assert_eq!(v["hostPath"]["type"], "DirectoryOrCreate", "{what}: {v}");
        // Those two and no other host path.
        assert_eq!(host_paths.len(), 2, "{what}: host paths: {host_paths:?}");
        // No more privilege than the same values with attribution off: the same security
        // contexts (NET_RAW, and NET_ADMIN for promisc only: security_context_is_least_privilege),
        // and the same pod but for the two volumes.
        let sc = &c["securityContext"];
        assert_eq!(sc, &container(without)["securityContext"], "{what}: security context");
        assert_eq!(sc["privileged"], false, "{what}");
        let pod = &ds["spec"]["template"]["spec"];
        let pod_off = &one(without, "DaemonSet")["spec"]["template"]["spec"];
        for key in ["securityContext", "hostNetwork", "hostPID", "hostIPC"] {
            assert_eq!(pod[key], pod_off[key], "{what}: pod {key}");
        }
        assert_eq!(volumes.len(), pod_off["volumes"].as_array().map_or(0, Vec::len) + 2, "{what}");
    }
}

/// `wasmtap run <the rendered arguments> --check-config`, the config file from the ConfigMap.
fn check_args(objects: &[Value], dir: &TempDir) -> (Vec<String>, RunResult) {
    let c = container(objects);
    let mut args = strings(&c["args"]);
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    let cm = one(objects, "ConfigMap");
    let config = dir.join("config.toml");
    std::fs::write(&config, cm["data"]["config.toml"].as_str().expect("config.toml"))
        .expect("write config");
    let mut rewritten = 0;
    for a in args.iter_mut() {
        if a.starts_with("--config=") {
            *a = format!("--config={}", config.display());
            rewritten += 1;
        }
    }
    assert_eq!(rewritten, 1, "exactly one --config in {args:?}");
    let r = run_with_timeout(
        Command::new(HOST).args(&args).arg("--check-config"),
        Duration::from_secs(30),
    );
    (args, r)
}

#[test]
fn container_arguments_and_config_file_parse_with_the_built_binary() {
    for (what, objects, needles) in [
        (
            "defaults",
            render(None),
            vec![
                "\"veth*\"",
                "\"cali*\"",
                "\"lxc*\"",
                "\"lxc_health\"",
                "0.0.0.0:9725",
                "10000",
                "600s",
                "/run/containerd/containerd.sock",
            ],
        ),
        (
            "every option",
            render(Some(&all_options_values())),
            vec![
                "\"eth0\"",
                "\"veth-test*\"",
                "0.0.0.0:9726",
                "20000",
                "1800s",
                "wasmtap_tcp_resets_total",
                "wasmtap_ip_dont_fragment_total",
                "/etc/wasmtap/analyzers",
                "/run/crio/crio.sock",
            ],
        ),
        (
            "attribution off",
            render_with(&json!({"cri": {"enabled": false}}), &TempDir::new("chart-args-off")),
            vec!["\"veth*\"", "0.0.0.0:9725"],
        ),
    ] {
        let dir = TempDir::new("chart-args");
        let (args, r) = check_args(&objects, &dir);
        eprintln!("{what}: host {} --check-config:\n{}", args.join(" "), r.stdout_text());
        assert!(r.success(), "{what}: the rendered arguments do not parse: {}", r.describe());
        let printed = r.stdout_text();
        for n in needles {
            assert!(printed.contains(n), "{what}: {n} not in the settings in force:\n{printed}");
        }
    }
    // The check is a real one: a key the host does not know fails it, naming the key.
    let objects = render(None);
    let dir = TempDir::new("chart-args-bad");
    let mut broken = objects.clone();
    for o in broken.iter_mut().filter(|o| o["kind"] == "ConfigMap") {
        let text = o["data"]["config.toml"].as_str().expect("config").to_string();
        o["data"]["config.toml"] = json!(text.replace("series-cap", "series-capp"));
    }
    let (_, r) = check_args(&broken, &dir);
    assert!(!r.success(), "a misspelt key passed --check-config: {}", r.describe());
    assert!(r.stderr_text().contains("series-capp"), "{}", r.describe());
}

/// The groups of a rules file under `dashboard/`.
fn rule_groups(name: &str) -> Vec<Value> {
    let file = repo_root().join("dashboard").join(name);
    let loaded = chart_check(&["load", file.to_str().expect("utf-8")]);
    let groups = loaded["documents"][0]["groups"].as_array().cloned().unwrap_or_default();
    assert!(!groups.is_empty(), "no groups in {}", file.display());
    groups
}

#[test]
fn prometheus_rule_carries_the_alerts_file_rules() {
    let main = rule_groups("wasmtap-alerts.yaml");
    let rtt = rule_groups("wasmtap-alerts-rtt.yaml");
    let dir = TempDir::new("chart-rules");
    // Default values: exactly the main file's rules; the optional ACK RTT alert is off.
    let objects = render_with(&json!({"prometheusRule": {"enabled": true}}), &dir);
    let rule = one(&objects, "PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"],
        Value::Array(main.clone()),
        "the chart's PrometheusRule (default values) differs from dashboard/wasmtap-alerts.yaml"
    );
    // ackRttRise on, with its defaults: the main file's groups, then the optional file's.
    let objects = render_with(
        &json!({"prometheusRule": {"enabled": true, "ackRttRise": {"enabled": true}}}),
        &dir,
    );
    let rule = one(&objects, "PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"],
        Value::Array([main, rtt].concat()),
        "the chart's PrometheusRule (ackRttRise.enabled) differs from dashboard/wasmtap-alerts.yaml \
         followed by dashboard/wasmtap-alerts-rtt.yaml"
    );
    // ackRttRise alone renders no PrometheusRule: it needs prometheusRule.enabled.
    let objects = render_with(&json!({"prometheusRule": {"ackRttRise": {"enabled": true}}}), &dir);
    assert!(objects.iter().all(|o| o["kind"] != "PrometheusRule"), "{objects:?}");

    // With other values: the thresholds, durations and extra labels land in the rules, and
    // promtool accepts them.
    let all = render(Some(&all_options_values()));
    let rule = one(&all, "PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let groups = rule["spec"]["groups"].as_array().expect("groups");
    let names: Vec<&Value> = groups.iter().map(|g| &g["name"]).collect();
    assert_eq!(names, [&json!("wasmtap"), &json!("wasmtap-rtt")]);
    let rules: Vec<&Value> =
        groups.iter().flat_map(|g| g["rules"].as_array().expect("rules")).collect();
    let by_name =
        |n: &str| rules.iter().find(|r| r["alert"] == n).unwrap_or_else(|| panic!("no alert {n}"));
    let ratio = by_name("WasmtapTcpRetransmissionRatioHigh");
    let expr = ratio["expr"].as_str().expect("expr");
    assert!(expr.contains(") > 0.02\n") && expr.contains(">= 5\n"), "{expr}");
    assert_eq!(ratio["for"], "15m");
    assert_eq!(
        by_name("WasmtapPacketsDropped")["expr"].as_str().map(|e| e.contains("> 0.5")),
        Some(true)
    );
    assert_eq!(by_name("WasmtapAnalyzerQuarantined")["for"], "2m");
    assert_eq!(by_name("WasmtapInterfaceDown")["for"], "10m");
    assert_eq!(by_name("WasmtapSeriesRefused")["for"], "10m");
    // Not in the every-option values (the default there): set here.
    assert_eq!(by_name("WasmtapPodSourceDown")["for"], "10m");
    let set = render_with(
        &json!({"prometheusRule": {"enabled": true, "podSourceDown": {"for": "30m"}}}),
        &dir,
    );
    let set = &one(&set, "PrometheusRule")["spec"]["groups"][0]["rules"];
    let set = set.as_array().expect("rules").iter().find(|r| r["alert"] == "WasmtapPodSourceDown");
    assert_eq!(set.map(|r| &r["for"]), Some(&json!("30m")));
    // The optional alert, on in the every-option values, with their ratio, guard and `for`.
    let rtt = by_name("WasmtapTcpAckRttRise");
    let expr = rtt["expr"].as_str().expect("expr");
    assert!(expr.contains(">\n  2.5 * histogram_quantile(0.5,"), "{expr}");
    assert_eq!(expr.matches(">= 2\n").count(), 2, "both sample guards: {expr}");
    assert_eq!(rtt["for"], "30m");
    let description = rtt["annotations"]["description"].as_str().expect("description");
    assert!(description.contains("more than 2.5 times its median"), "{description}");
    for r in &rules {
        assert_eq!(r["labels"]["team"], "network", "{}", r["alert"]);
        assert_eq!(r["labels"]["severity"], "warning", "{}", r["alert"]);
    }
    require_tools(&["promtool"]);
    let rules_file = dir.join("rendered-rules.yaml");
    // JSON is YAML: promtool reads it as a rules file.
    std::fs::write(&rules_file, json!({"groups": rule["spec"]["groups"]}).to_string())
        .expect("write rules");
    let out = run_ok(
        Command::new("promtool").arg("check").arg("rules").arg(&rules_file),
        Duration::from_secs(60),
    );
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");
}

#[test]
fn scrape_objects_select_the_pods_and_name_their_port() {
    let objects = render(Some(&all_options_values()));
    let ds = one(&objects, "DaemonSet");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let port_name = container(&objects)["ports"][0]["name"].clone();
    let port = container(&objects)["ports"][0]["containerPort"].clone();
    assert_eq!(port, 9726);
    let matches = |selector: &Value, labels: &Value| {
        selector.as_object().expect("matchLabels").iter().all(|(k, v)| &labels[k] == v)
    };
    assert!(matches(&ds["spec"]["selector"]["matchLabels"], pod_labels), "DaemonSet selector");

    let svc = one(&objects, "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless: every pod is scraped");
    assert!(matches(&svc["spec"]["selector"], pod_labels), "Service selector vs pod labels");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port_name);
    let svc_port_name = svc["spec"]["ports"][0]["name"].clone();

    let sm = one(&objects, "ServiceMonitor");
    assert!(matches(&sm["spec"]["selector"]["matchLabels"], &svc["metadata"]["labels"]));
    assert_eq!(sm["spec"]["endpoints"][0]["port"], svc_port_name);
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!([svc["metadata"]["namespace"]])
    );
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");

    let pm = one(&objects, "PodMonitor");
    assert!(matches(&pm["spec"]["selector"]["matchLabels"], pod_labels));
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], port_name);
    // Both name the target by its node: the dashboard's Node variable is `instance`.
    for (what, endpoint) in [
        ("ServiceMonitor", &sm["spec"]["endpoints"][0]),
        ("PodMonitor", &pm["spec"]["podMetricsEndpoints"][0]),
    ] {
        let relabel = &endpoint["relabelings"][0];
        assert_eq!(relabel["sourceLabels"], json!(["__meta_kubernetes_pod_node_name"]), "{what}");
        assert_eq!(relabel["targetLabel"], "instance", "{what}");
        // The operator's namespace and pod target labels (wasmtap's own) are dropped: they
        // would turn the pod attribution's namespace and pod into exported_namespace and
        // exported_pod (honorLabels false), or label unattributed series with wasmtap's pod
        // (honorLabels true).
        let drop = &endpoint["relabelings"][1];
        assert_eq!(drop["action"], "labeldrop", "{what}: {drop}");
        assert_eq!(drop["regex"], "namespace|pod", "{what}: {drop}");
        assert!(endpoint["honorLabels"].is_null(), "{what}: honorLabels: {endpoint}");
    }

    // A change of the config file changes the pod template (a rollout): the checksum.
    let dir = TempDir::new("chart-checksum");
    let a = render(None);
    let b = render_with(&json!({"config": {"seriesCap": 5}}), &dir);
    let checksum = |o: &[Value]| {
        one(o, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .clone()
    };
    assert!(checksum(&a).is_string());
    assert_ne!(checksum(&a), checksum(&b), "the config checksum did not change");
}
