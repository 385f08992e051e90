"""Prometheus custom resources (monitoring.coreos.com/v1) behind failing pods, and whether their volumes
have room to keep blocks longer.

The pods the Prometheus Operator runs carry ``operator.prometheus.io/name: <Prometheus name>``. Room is
read from the kubelet's volume metrics through Prometheus: ``kubelet_volume_stats_available_bytes`` (free
now) against the growth the volume would see over the added retention, estimated from its growth over the
outage so far (``kubelet_volume_stats_used_bytes`` now minus at the outage's start) and, never lower,
from its steady state (used bytes over the current retention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from daemon.actions.kubernetes import objects as o
from daemon.clients.kubernetes import KubernetesClient
from daemon.clients.prometheus import PrometheusClient
from daemon.kits.quantities import format_bytes

NAME_LABEL = "operator.prometheus.io/name"
DEFAULT_RETENTION = "24h"
"""The operator's default when spec.retention is unset (and spec.retentionSize too)."""


def prometheus_path(namespace: str, name: str) -> str:
    return f"/apis/monitoring.coreos.com/v1/namespaces/{quote(namespace, safe='')}/prometheuses/{quote(name, safe='')}"


def stream_labels(cr: o.Obj) -> dict[str, str]:
    """The external labels every block of this Prometheus carries, whichever replica shipped it: its
    spec.externalLabels and the operator's ``prometheus: <namespace>/<name>`` (named by
    spec.prometheusExternalLabelName; "" turns it off). The replica label differs per replica."""
    spec = o.spec(cr)
    labels = {str(k): str(v) for k, v in (spec.get("externalLabels") or {}).items()}
    label_name = spec.get("prometheusExternalLabelName", "prometheus")
    if label_name:
        m = o.meta(cr)
        labels[str(label_name)] = f"{m.get('namespace')}/{m.get('name')}"
    return labels


async def prometheus_names(
    client: KubernetesClient, namespace: str, pods: list[str]
) -> tuple[dict[str, list[str]], list[str]]:
    """Prometheus name -> its failing pods; and the pods that belong to no Prometheus (or are gone)."""
    names: dict[str, list[str]] = {}
    other: list[str] = []
    listed = {o.name_of(p): p for p in await client.pods_in_namespace(namespace)}
    for pod in pods:
        found = listed.get(pod)
        label = (o.meta(found).get("labels") or {}).get(NAME_LABEL) if found is not None else None
        if label:
            names.setdefault(str(label), []).append(pod)
        else:
            other.append(pod)
    return names, other


async def claims_of(
    client: KubernetesClient, namespace: str, name: str
) -> tuple[list[str], list[str], list[str]]:
    """(PVC names, pods without one, pods not Ready) of every pod of the Prometheus."""
    pods = await client.list_objects(
        f"/api/v1/namespaces/{quote(namespace, safe='')}/pods", label_selector=f"{NAME_LABEL}={name}"
    )
    claims: list[str] = []
    bare: list[str] = []
    not_ready: list[str] = []
    for pod in pods:
        found = o.claims_of(pod)
        claims += found
        if not found:
            bare.append(o.name_of(pod))
        if not o.pod_ready(pod):
            not_ready.append(o.name_of(pod))
    return sorted(set(claims)), sorted(bare), sorted(not_ready)


@dataclass
class Volume:
    claim: str
    available: float | None
    used: float | None
    used_at_start: float | None

    def needed(self, elapsed: float, current: float, target: float, headroom: float) -> float | None:
        """Bytes the volume must still take to keep ``target`` instead of ``current`` seconds."""
        if self.available is None or self.used is None:
            return None
        rates = [self.used / current] if current > 0 else []
        if self.used_at_start is not None and elapsed > 0:
            rates.append((self.used - self.used_at_start) / elapsed)
        return max(rates, default=0.0) * (target - current) * headroom

    def view(self, needed: float | None) -> dict[str, Any]:
        def b(x: float | None) -> str | None:
            return None if x is None else format_bytes(int(x))

        growth = None if self.used is None or self.used_at_start is None else self.used - self.used_at_start
        return {
            "claim": self.claim,
            "available": b(self.available),
            "available_bytes": self.available,
            "used": b(self.used),
            "growth_during_outage": b(growth),
            "needed": b(needed),
            "needed_bytes": needed,
            "room": needed is not None and self.available is not None and self.available >= needed,
        }


def _quoted(value: str) -> str:
    """A PromQL string literal's content (names here are DNS names already; this is belt and braces)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def _one(prom: PrometheusClient, expr: str) -> float | None:
    samples = await prom.query(expr)
    return samples[0].value if samples else None


async def volume(prom: PrometheusClient, namespace: str, claim: str, elapsed: float) -> Volume:
    sel = f'namespace="{_quoted(namespace)}", persistentvolumeclaim="{_quoted(claim)}"'
    offset = max(60, int(elapsed))
    return Volume(
        claim=claim,
        available=await _one(prom, f"max(kubelet_volume_stats_available_bytes{{{sel}}})"),
        used=await _one(prom, f"max(kubelet_volume_stats_used_bytes{{{sel}}})"),
        used_at_start=await _one(prom, f"max(kubelet_volume_stats_used_bytes{{{sel}}} offset {offset}s)"),
    )
