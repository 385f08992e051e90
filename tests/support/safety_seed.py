"""Seeding helpers for the safety guards' objects in the Kubernetes API emulator: Prometheus replicas with
Thanos sidecars, the objstore Secret, Longhorn nodes/disks/volumes/replicas/settings, node Leases and
pods with resource requests. Times are RFC 3339 strings computed from a reference "now"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.kits.clock import iso

from .kube_api import KubeApiEmulator

GI = 2**30
LH_NS = "longhorn-system"
PROM_SET = "k8s"
OBJSTORE_SECRET = "thanos-objstore-config"


def prometheus_replica(
    kube: KubeApiEmulator,
    name: str,
    namespace: str = "monitoring",
    *,
    node: str = "node-196",
    ready: bool = True,
    started_at: float,
    prom_set: str = PROM_SET,
) -> dict[str, Any]:
    """A Prometheus Operator pod: prometheus + thanos-sidecar (OBJSTORE_CONFIG from the Secret)."""
    if not kube.exists("StatefulSet", f"prometheus-{prom_set}", namespace):
        kube.add_workload("StatefulSet", f"prometheus-{prom_set}", namespace)
    labels = {
        "app.kubernetes.io/name": "prometheus",
        "operator.prometheus.io/name": prom_set,
        "operator.prometheus.io/shard": "0",
        "prometheus": prom_set,
    }
    pod = kube.add_pod(
        name,
        namespace,
        node=node,
        owner=("StatefulSet", f"prometheus-{prom_set}"),
        ready=ready,
        labels=labels,
    )
    env = [
        {
            "name": "OBJSTORE_CONFIG",
            "valueFrom": {"secretKeyRef": {"name": OBJSTORE_SECRET, "key": "objstore.yml"}},
        }
    ]
    pod["spec"]["containers"] = [
        {"name": "prometheus", "image": "quay.io/prometheus/prometheus:v2.53.0"},
        {
            "name": "thanos-sidecar",
            "image": "quay.io/thanos/thanos:v0.35.1",
            "args": ["sidecar", "--objstore.config=$(OBJSTORE_CONFIG)"],
            "env": env,
        },
    ]
    pod["status"]["containerStatuses"] = [
        {"name": c, "ready": ready, "state": {"running": {"startedAt": iso(started_at)}}}
        for c in ("prometheus", "thanos-sidecar")
    ]
    return pod


def objstore_secret(
    kube: KubeApiEmulator, changed_at: float, namespace: str = "monitoring", created_at: float | None = None
) -> dict[str, Any]:
    """The objstore Secret, whose data a manager last changed at ``changed_at`` (managedFields)."""
    created = iso(created_at if created_at is not None else changed_at)
    return kube.put(
        {
            "kind": "Secret",
            "metadata": {
                "name": OBJSTORE_SECRET,
                "namespace": namespace,
                "creationTimestamp": created,
                "managedFields": [
                    {"manager": "helm", "operation": "Update", "apiVersion": "v1", "time": created},
                    {
                        "manager": "kubectl-edit",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "time": iso(changed_at),
                    },
                ],
            },
            "type": "Opaque",
            "data": {"objstore.yml": "dHlwZTogUzMKY29uZmlnOiB7YWNjZXNzX2tleTogc2VjcmV0fQo="},
        }
    )


def lh_settings(kube: KubeApiEmulator, *, over_provisioning: int = 100, minimal_available: int = 25) -> None:
    for name, value in (
        ("storage-over-provisioning-percentage", over_provisioning),
        ("storage-minimal-available-percentage", minimal_available),
    ):
        kube.put(
            {
                "apiVersion": "longhorn.io/v1beta2",
                "kind": "Setting",
                "metadata": {"name": name, "namespace": LH_NS},
                "value": str(value),
            }
        )


def lh_node(kube: KubeApiEmulator, node: str, disks: Mapping[str, Mapping[str, int | str]]) -> None:
    """A Longhorn node; ``disks[name]`` = {uuid, maximum, available, scheduled, reserved} (bytes)."""
    spec_disks = {
        name: {
            "path": f"/var/lib/longhorn-{name}",
            "allowScheduling": True,
            "storageReserved": d.get("reserved", 0),
        }
        for name, d in disks.items()
    }
    status = {
        name: {
            "diskUUID": d["uuid"],
            "storageMaximum": d["maximum"],
            "storageAvailable": d["available"],
            "storageScheduled": d["scheduled"],
            "conditions": [{"type": "Schedulable", "status": "True"}],
        }
        for name, d in disks.items()
    }
    kube.put(
        {
            "apiVersion": "longhorn.io/v1beta2",
            "kind": "Node",
            "metadata": {"name": node, "namespace": LH_NS},
            "spec": {"disks": spec_disks},
            "status": {"diskStatus": status},
        }
    )


def lh_volume(
    kube: KubeApiEmulator,
    name: str,
    *,
    size: int,
    replicas: list[tuple[str, str]],
    attached_to: str = "",
    robustness: str = "healthy",
    pvc: tuple[str, str] | None = None,
) -> None:
    """A Longhorn volume and its replicas, each (node, disk uuid)."""
    kube.put(
        {
            "apiVersion": "longhorn.io/v1beta2",
            "kind": "Volume",
            "metadata": {"name": name, "namespace": LH_NS},
            "spec": {"size": str(size), "numberOfReplicas": len(replicas)},
            "status": {
                "state": "attached" if attached_to else "detached",
                "robustness": robustness,
                "currentNodeID": attached_to,
                "kubernetesStatus": {"namespace": pvc[0], "pvcName": pvc[1]} if pvc else {},
            },
        }
    )
    for i, (node, disk) in enumerate(replicas):
        kube.put(
            {
                "apiVersion": "longhorn.io/v1beta2",
                "kind": "Replica",
                "metadata": {"name": f"{name}-r-{i}", "namespace": LH_NS, "labels": {"longhornvolume": name}},
                "spec": {"volumeName": name, "nodeID": node, "diskID": disk},
            }
        )


def lh_replica(
    kube: KubeApiEmulator,
    volume: str,
    name: str,
    node: str,
    *,
    healthy_at: str = "",
    failed_at: str = "",
    state: str | None = None,
    manager: str | None = None,
    namespace: str = LH_NS,
) -> None:
    """One Longhorn replica of ``volume`` on ``node``, with its health times (spec) and its instance
    manager (``im-<node>`` unless given); its state is running when healthy, else stopped."""
    running = bool(healthy_at) and not failed_at
    kube.put(
        {
            "apiVersion": "longhorn.io/v1beta2",
            "kind": "Replica",
            "metadata": {"name": name, "namespace": namespace, "labels": {"longhornvolume": volume}},
            "spec": {
                "volumeName": volume,
                "nodeID": node,
                "healthyAt": healthy_at,
                "failedAt": failed_at,
                "desireState": "running" if running else "stopped",
            },
            "status": {
                "currentState": state or ("running" if running else "stopped"),
                "instanceManagerName": manager if manager is not None else f"im-{node}",
            },
        }
    )


def lh_instance_manager(
    kube: KubeApiEmulator, node: str, *, state: str = "running", namespace: str = LH_NS
) -> None:
    """Node ``node``'s Longhorn instance manager, ``im-<node>``, in ``state``."""
    kube.put(
        {
            "apiVersion": "longhorn.io/v1beta2",
            "kind": "InstanceManager",
            "metadata": {"name": f"im-{node}", "namespace": namespace},
            "spec": {"nodeID": node, "type": "aio", "dataEngine": "v1"},
            "status": {"currentState": state},
        }
    )


def node_lease(kube: KubeApiEmulator, node: str, renewed_at: float) -> None:
    kube.put(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": node,
                "leaseDurationSeconds": 40,
                "renewTime": iso(renewed_at)[:-1] + ".000000Z",
            },
        }
    )


def requests_pod(
    kube: KubeApiEmulator, name: str, namespace: str, node: str, *, cpu: str, memory: str, **kw: Any
) -> dict[str, Any]:
    """A pod whose one container requests cpu and memory."""
    pod = kube.add_pod(name, namespace, node=node, **kw)
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": cpu, "memory": memory}}
    return pod
