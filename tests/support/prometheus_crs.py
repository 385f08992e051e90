"""Seeding a Prometheus Operator setup in the Kubernetes API emulator: a monitoring.coreos.com/v1 Prometheus
and its StatefulSet pods labelled ``operator.prometheus.io/name`` as the operator labels them, each with
its TSDB PersistentVolumeClaim (``prometheus-<name>-db-prometheus-<name>-<i>``, the operator's naming)."""

from __future__ import annotations

from typing import Any

from .kube_api import KubeApiEmulator

NAME_LABEL = "operator.prometheus.io/name"


def claim_name(name: str, i: int) -> str:
    return f"prometheus-{name}-db-prometheus-{name}-{i}"


def add_prometheus(
    kube: KubeApiEmulator,
    name: str = "k8s",
    namespace: str = "monitoring",
    *,
    replicas: int = 2,
    retention: str | None = "2h",
    retention_size: str | None = None,
    external_labels: dict[str, str] | None = None,
    storage: bool = True,
) -> dict[str, Any]:
    """The Prometheus resource and its pods ``prometheus-<name>-<i>`` (with PVCs unless ``storage=False``:
    then the TSDB is in an emptyDir, as the operator does without spec.storage)."""
    spec: dict[str, Any] = {
        "replicas": replicas,
        "externalLabels": external_labels or {"cluster": "thanos-ha"},
    }
    if retention is not None:
        spec["retention"] = retention
    if retention_size is not None:
        spec["retentionSize"] = retention_size
    cr = kube.put(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "Prometheus",
            "metadata": {"name": name, "namespace": namespace, "generation": 1},
            "spec": spec,
        }
    )
    kube.add_workload("StatefulSet", f"prometheus-{name}", namespace)
    for i in range(replicas):
        kube.add_pod(
            f"prometheus-{name}-{i}",
            namespace,
            node=f"node-{i}",
            owner=("StatefulSet", f"prometheus-{name}"),
            pvc=claim_name(name, i) if storage else None,
            empty_dir=not storage,
            labels={NAME_LABEL: name, "app.kubernetes.io/name": "prometheus"},
        )
    return cr


def volume_metrics(
    exporter: Any,
    name: str,
    namespace: str = "monitoring",
    *,
    replicas: int = 2,
    available: float,
    used: float,
) -> None:
    """The kubelet's volume stats of the Prometheus' claims, as the exporter serves them."""
    for i in range(replicas):
        labels = {"namespace": namespace, "persistentvolumeclaim": claim_name(name, i)}
        exporter.set("kubelet_volume_stats_available_bytes", available, labels)
        exporter.set("kubelet_volume_stats_used_bytes", used, labels)
