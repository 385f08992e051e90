"""The "another replica is healthy" guard before a Prometheus pod (and its Thanos sidecar) is restarted.

Restarting one replica of a Prometheus set costs its in-memory head until the WAL is replayed; Thanos
Query fills the gap from the other replica. That holds only when another replica of the same set (same
``operator.prometheus.io/name`` and shard, same namespace) is:

- Ready (the pod's Ready condition, not terminating),
- scraping (``up`` for that pod is 1 in Prometheus), and
- shipping: its sidecar uploaded a block within ``ship_window`` (4h by default: blocks are cut every
  2h, so a healthy sidecar uploads at least once in 4h), seen either as
  ``thanos_objstore_bucket_last_successful_upload_time`` being recent or as
  ``thanos_shipper_uploads_total`` having increased.

"No data" is never healthy: a replica whose metrics are missing does not count. Both the runbook's
diagnosis step and the restart action call ``check_peers``; the restart re-reads everything right
before it deletes the pod.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from daemon.actions.kubernetes import objects as o
from daemon.clients.kubernetes import KubernetesClient
from daemon.clients.prometheus import PrometheusClient
from daemon.errors import GuardRefused
from daemon.kits.durations import format_duration

SET_LABEL = "operator.prometheus.io/name"
SHARD_LABEL = "operator.prometheus.io/shard"
LEGACY_SET_LABEL = "prometheus"
"""Older Prometheus Operator releases label the pods ``prometheus: <name>`` only."""


def q(value: str) -> str:
    """A value for a double-quoted PromQL string (names come from the API, escaped all the same)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def re_any(values: list[str]) -> str:
    return q("|".join(re.escape(v) for v in values))


@dataclass
class Peer:
    name: str
    ready: bool
    up: bool = False
    last_upload_age: float | None = None
    uploads_in_window: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "pod": self.name,
            "ready": self.ready,
            "up": self.up,
            "last_upload_age_seconds": None if self.last_upload_age is None else round(self.last_upload_age),
            "uploads_in_window": self.uploads_in_window,
            "healthy": self.healthy,
            "problems": self.problems,
        }


@dataclass
class PeerReport:
    pod: str
    set_name: str | None
    peers: list[Peer]
    ship_window: float

    @property
    def healthy(self) -> list[Peer]:
        return [p for p in self.peers if p.healthy]

    @property
    def ok(self) -> bool:
        return bool(self.healthy)

    @property
    def reason(self) -> str:
        if self.set_name is None:
            return (
                f"{self.pod} carries no {SET_LABEL} (or {LEGACY_SET_LABEL}) label: runbookd cannot tell which "
                "other replicas serve the same data"
            )
        if not self.peers:
            return f"{self.pod} is the only replica of Prometheus {self.set_name}: restarting it blinds the cluster"
        if self.ok:
            return f"other replica(s) healthy: {', '.join(p.name for p in self.healthy)}"
        listed = "; ".join(f"{p.name}: {', '.join(p.problems)}" for p in self.peers)
        return f"no other replica of Prometheus {self.set_name} is Ready, scraping and shipping ({listed})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "set": self.set_name,
            "peers": [p.as_dict() for p in self.peers],
            "ship_window": format_duration(self.ship_window),
            "reason": self.reason,
        }


def set_selector(pod: o.Obj) -> tuple[str | None, str | None]:
    """(set name, label selector for its replicas) from the pod's Prometheus Operator labels."""
    labels = o.meta(pod).get("labels") or {}
    name = labels.get(SET_LABEL)
    if name:
        selector = f"{SET_LABEL}={name}"
        if labels.get(SHARD_LABEL) is not None:
            selector += f",{SHARD_LABEL}={labels[SHARD_LABEL]}"
        return str(name), selector
    legacy = labels.get(LEGACY_SET_LABEL)
    if legacy:
        return str(legacy), f"{LEGACY_SET_LABEL}={legacy}"
    return None, None


async def _by_pod(prom: PrometheusClient, expr: str) -> dict[str, float]:
    return {s.labels.get("pod", ""): s.value for s in await prom.query(expr)}


async def _fill_metrics(
    prom: PrometheusClient, namespace: str, peers: list[Peer], bucket: str, cluster: str, window: float
) -> None:
    pods = re_any([p.name for p in peers])
    sel = f'namespace="{q(namespace)}", pod=~"{pods}", cluster=~"{re_any([cluster]) if cluster else ""}|"'
    hours = f"{int(window)}s"
    # min: every target of the pod answers (Prometheus AND its sidecar, which serves Thanos Query the
    # replica's recent data); max let one live target hide a dead sidecar.
    up = await _by_pod(prom, f"min by (pod) (up{{{sel}}})")
    uploaded = await _by_pod(
        prom,
        f'min by (pod) (time() - thanos_objstore_bucket_last_successful_upload_time{{{sel}, bucket="{q(bucket)}"}})',
    )
    shipped = await _by_pod(prom, f"sum by (pod) (increase(thanos_shipper_uploads_total{{{sel}}}[{hours}]))")
    for p in peers:
        p.up = up.get(p.name) == 1.0
        p.last_upload_age = uploaded.get(p.name)
        p.uploads_in_window = shipped.get(p.name)


def _judge(p: Peer, window: float) -> None:
    if not p.ready:
        p.problems.append("pod not Ready")
    if not p.up:
        p.problems.append("not scraping (up is not 1 for every target of the pod, or no data)")
    recent = p.last_upload_age is not None and p.last_upload_age <= window
    counted = p.uploads_in_window is not None and p.uploads_in_window > 0
    if not (recent or counted):
        p.problems.append(f"its sidecar shipped no block in the last {format_duration(window)}")


async def check_peers(
    k8s: KubernetesClient,
    prom: PrometheusClient | None,
    *,
    namespace: str,
    pod: str,
    bucket: str,
    cluster: str = "",
    ship_window: float = 4 * 3600,
) -> PeerReport:
    """Read the pod's set, its other replicas and their health, now."""
    this = await k8s.get_pod(namespace, pod)
    name, selector = set_selector(this)
    if selector is None:
        return PeerReport(pod, None, [], ship_window)
    path = f"/api/v1/namespaces/{namespace}/pods"
    others = [p for p in await k8s.list_objects(path, label_selector=selector) if o.name_of(p) != pod]
    peers = [Peer(o.name_of(p), o.pod_ready(p)) for p in sorted(others, key=o.name_of)]
    if peers:
        if prom is None:
            raise GuardRefused(
                "prometheus is not configured: runbookd cannot tell whether the other replica scrapes and "
                "ships, so it will not restart this one"
            )
        await _fill_metrics(prom, namespace, peers, bucket, cluster, ship_window)
    for p in peers:
        _judge(p, ship_window)
    return PeerReport(pod, name, peers, ship_window)
