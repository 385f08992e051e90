"""Render and check the Helm chart with real tools: Helm's own engine (helm-python-sdk, `helm_python`),
the Kubernetes 1.28 OpenAPI schemas (kubernetes-validate, strict), the Prometheus Operator's CRD schemas
(cloudcoil-models-prometheus-operator: models generated from the CRDs) and promtool for rule groups.

No cluster is contacted: `Chart.render` is `helm template` (the `lookup` function returns nothing).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pydantic
import yaml
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator_v1

from .prom import PROMTOOL_BIN

KUBE_VERSION = "1.28.0"
"""The seed cluster's Kubernetes version: every manifest must be valid there."""

CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
"""Prometheus Operator resources: no schema in kubernetes-validate; checked by hand and with promtool."""


def lint(chart: Path, values: dict[str, Any]) -> list[str]:
    """`helm lint --strict` for Kubernetes 1.28: the findings worse than "info", as text."""
    report = helm_python.lint(chart, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return problems + list(report["errors"])


def render(
    chart: Path, values: dict[str, Any], *, name: str = "runbookd", namespace: str = "monitoring"
) -> list[dict[str, Any]]:
    """`helm template` (as an install): every rendered object, in template order."""
    manifests = helm_python.Chart.load(chart).render(values, name=name, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), f"{path}: not a mapping"
                objects.append(doc)
    return objects


def render_error(chart: Path, values: dict[str, Any]) -> str:
    """The message Helm fails with for these values; AssertionError if it renders."""
    try:
        helm_python.Chart.load(chart).render(values, name="runbookd", namespace="monitoring", is_install=True)
    except helm_python.HelmError as exc:
        return str(exc)
    raise AssertionError(f"the chart rendered with {values}")


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """What the Kubernetes 1.28 schema (strict: no unknown fields) refuses in one object."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_KINDS:
        return crd_errors(obj)
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        return [f"{name}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{name}: no Kubernetes {KUBE_VERSION} schema ({exc})"]
    return []


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """A ServiceMonitor or PrometheusRule against the Prometheus Operator's CRD schema: types through the
    generated model, and (strict, like kubectl's field validation) no field the schema does not know, seen
    as what the model's round trip drops."""
    name = f"{obj['kind']}/{obj.get('metadata', {}).get('name')}"
    model = getattr(prometheus_operator_v1, obj["kind"])
    try:
        parsed = model.model_validate(obj)
    except pydantic.ValidationError as exc:
        return [f"{name}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    back = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{name}: {path}: not in the CRD schema" for path in _dropped(obj, back)]


def _dropped(given: Any, kept: Any, path: str = "") -> list[str]:
    if isinstance(given, dict):
        out = []
        for key, value in given.items():
            here = f"{path}.{key}" if path else str(key)
            if not isinstance(kept, dict) or key not in kept:
                out.append(here)
            else:
                out += _dropped(value, kept[key], here)
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [
            p
            for i, (g, k) in enumerate(zip(given, kept, strict=False))
            for p in _dropped(g, k, f"{path}.{i}")
        ]
    return []


def promtool_check(rule_spec: dict[str, Any]) -> str:
    """`promtool check rules` on a PrometheusRule's spec (a rule file's top level); its output."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(rule_spec, f)
        f.flush()
        done = subprocess.run(
            [PROMTOOL_BIN, "check", "rules", f.name], capture_output=True, text=True, timeout=60
        )
    if done.returncode != 0:
        raise AssertionError(done.stdout + done.stderr)
    return done.stdout


def by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for o in objects:
        out.setdefault(o["kind"], []).append(o)
    return out
