#!/usr/bin/env python3
"""Renders, lints and validates the wasmtap Helm chart for host/tests/chart.rs; prints JSON.

It drives the real Helm library (PyPI `helm-python-sdk`, Helm's Go SDK behind a C ABI: no helm
binary), `kubernetes-validate` (the Kubernetes OpenAPI schemas, strict: unknown fields are
errors) and, for the prometheus-operator kinds that kubernetes-validate has no schema for,
`cloudcoil-models-prometheus-operator` (models generated from the operator's CRD schemas).
scripts/setup installs the three into a virtualenv (k8s/requirements.txt); the Rust test runs
this script with that virtualenv's python. The assertions are the test's; this script reports.

    chart_check.py render   CHART [--values FILE]  objects of `helm template`, parsed
    chart_check.py lint     CHART [--values FILE]  `helm lint --strict`'s report
    chart_check.py refuse   CHART --cases FILE     each case's values rendered: refused or not
    chart_check.py validate CHART [--values FILE] --kube-version V...
                                                   every rendered object validated
    chart_check.py load     FILE                   a YAML file's documents, as JSON
    chart_check.py validate-file FILE --kube-version V...
                                                   the objects of a YAML file validated (the
                                                   test's proof that the validators refuse)

Values files are YAML. Every command prints one JSON document on stdout.
"""

import argparse
import json
import sys

import helm_python as helm
import kubernetes_validate
import yaml

RELEASE = "wasmtap"
NAMESPACE = "monitoring"

# Kinds whose schemas come from CRDs, not from Kubernetes itself.
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def load_values(path):
    if not path:
        return {}
    with open(path) as f:
        return yaml.safe_load(f) or {}


def render(chart_dir, values):
    """`helm template`: [{template, object}] for every non-empty document, in template order."""
    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    out = []
    for template in sorted(manifests):
        for doc in yaml.safe_load_all(manifests[template]):
            if doc:
                out.append({"template": template, "object": doc})
    return out


def unknown_keys(given, dumped, path=""):
    """Keys of `given` (the rendered object) that the model dropped: fields it does not know."""
    found = []
    if isinstance(given, dict) and isinstance(dumped, dict):
        for key, value in given.items():
            where = f"{path}.{key}" if path else key
            if key not in dumped:
                found.append(where)
            else:
                found += unknown_keys(value, dumped[key], where)
    elif isinstance(given, list) and isinstance(dumped, list):
        for n, (a, b) in enumerate(zip(given, dumped)):
            found += unknown_keys(a, b, f"{path}[{n}]")
    return found


def validate_crd_object(obj):
    """Checks a prometheus-operator object against the operator's CRD schema (types, enums,
    patterns, required fields) and, as `--strict` does for built-in kinds, refuses fields the
    schema does not have."""
    from cloudcoil.models.prometheus_operator import v1
    import importlib.metadata as md

    model = getattr(v1, obj["kind"])
    version = md.version("cloudcoil.models.prometheus_operator")
    validator = f"prometheus-operator CRD schema (cloudcoil models {version}), unknown fields refused"
    try:
        parsed = model.model_validate(obj)
    except Exception as e:  # pydantic.ValidationError: the message lists every error
        return validator, str(e)
    dumped = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    extra = unknown_keys(obj, dumped)
    if extra:
        return validator, "unknown fields: " + ", ".join(extra)
    return validator, None


def validate(items, versions):
    """Validates [{template, object}] (rendered, or read from a file)."""
    results = []
    for item in items:
        obj = item["object"]
        entry = {
            "template": item["template"],
            "kind": obj.get("kind"),
            "name": obj.get("metadata", {}).get("name"),
            "checks": [],
        }
        if obj.get("kind") in CRD_KINDS:
            validator, error = validate_crd_object(obj)
            entry["checks"].append({"validator": validator, "error": error})
        else:
            for version in versions:
                validator = f"kubernetes-validate {kubernetes_validate.__version__} --strict, Kubernetes {version}"
                try:
                    got = kubernetes_validate.validate(obj, version, strict=True)
                    entry["checks"].append({"validator": f"{validator} (schema {got})", "error": None})
                except kubernetes_validate.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    entry["checks"].append({"validator": validator, "error": f"{where}: {e.message}"})
                except kubernetes_validate.SchemaNotFoundError as e:
                    # Not a pass: a built-in kind must have a schema.
                    entry["checks"].append({"validator": validator, "error": e.message})
        results.append(entry)
    return results


def refuse(chart_dir, cases_path):
    """Renders each case's values the way `helm install` does (schema first); reports whether
    Helm refused them and why."""
    with open(cases_path) as f:
        cases = yaml.safe_load(f)
    out = []
    with helm.Chart.load(chart_dir) as chart:
        for case in cases:
            try:
                chart.render(case["values"], name=RELEASE, namespace=NAMESPACE, is_install=True)
                out.append({"name": case["name"], "refused": False, "message": ""})
            except helm.HelmError as e:
                out.append({"name": case["name"], "refused": True, "error": type(e).__name__, "message": str(e)})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["render", "lint", "refuse", "validate", "validate-file", "load"])
    p.add_argument("chart", help="the chart directory (a file for load and validate-file)")
    p.add_argument("--values")
    p.add_argument("--cases")
    p.add_argument("--kube-version", action="append", default=[])
    a = p.parse_args()
    values = load_values(a.values)
    if a.command == "render":
        result = {"objects": render(a.chart, values)}
    elif a.command == "lint":
        result = helm.lint(a.chart, values, strict=True, namespace=NAMESPACE)
    elif a.command == "refuse":
        result = {"cases": refuse(a.chart, a.cases)}
    elif a.command == "load":
        with open(a.chart) as f:
            result = {"documents": [d for d in yaml.safe_load_all(f)]}
    elif a.command == "validate":
        result = {"objects": validate(render(a.chart, values), a.kube_version)}
    else:
        with open(a.chart) as f:
            items = [{"template": a.chart, "object": d} for d in yaml.safe_load_all(f) if d]
        result = {"objects": validate(items, a.kube_version)}
    result["helm_sdk"] = helm.helm_sdk_version()
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
