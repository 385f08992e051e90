"""The shipped node-degradation and pvc-disk-pressure runbooks, end to end.

Each test loads the real files from runbooks/ into an in-process daemon (dry_run off unless said) that
talks to the Kubernetes API emulator over HTTP with the real kubernetes-asyncio client, and, where a
runbook queries Prometheus, to a real Prometheus scraping a test exporter. Runs start from an
Alertmanager webhook payload and are walked with approvals through the HTTP API; the emulator's request
log says exactly what was, and was not, sent. ``runbookd plan`` is run as the real console script on the
example payloads in docs/examples/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.inproc import Daemon, alert_payload, base_config, serve
from support.kube_api import STRATEGIC_MERGE_PATCH, KubeApiEmulator
from support.kube_fixtures import seed_cluster
from support.ports import closed_port
from support.procs import base_env
from support.prom import MetricsExporter, PrometheusServer
from support.runs import states, steps_of, walk
from support.safety_seed import lh_node, lh_replica, lh_settings, lh_volume

from daemon.actions.registry import default_registry

REPO = Path(__file__).resolve().parent.parent
RUNBOOKD = str(Path(sys.executable).parent / "runbookd")
EXAMPLES = REPO / "docs" / "examples"
NODE_RB, PVC_RB = "node-degradation", "pvc-disk-pressure"
RUNBOOKS = {name: (REPO / "runbooks" / f"{name}.yaml").read_text() for name in (NODE_RB, PVC_RB)}
GI = 2**30

NODE = "node-196"
NODE_PATH = f"/api/v1/nodes/{NODE}"
NS, PVC = "monitoring", "prometheus-db-prometheus-0"
PVC_PATH = f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{PVC}"
CORDON = ("PATCH", NODE_PATH, STRATEGIC_MERGE_PATCH, {"spec": {"unschedulable": True}})
UNCORDON = ("PATCH", NODE_PATH, STRATEGIC_MERGE_PATCH, {"spec": {"unschedulable": None}})


def eviction(namespace: str, name: str) -> tuple[str, str, str, Any]:
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
    return ("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", "application/json", body)


EVICTIONS = [eviction(NS, "grafana-7d9f-x2k4q"), eviction(NS, "thanos-store-0")]
# The read-only steps each runbook starts with, in order.
NODE_CHECKS = ["node-status", "cluster-health", "longhorn-volumes", "capacity"]
PVC_CHECKS = ["pvc", "free-space", "growth"]


# -- helpers -----------------------------------------------------------------------------------------------


def mutations(kube: KubeApiEmulator) -> list[tuple[str, str, str, Any]]:
    return [(r.method, r.path, r.content_type, r.body) for r in kube.mutations]


def node_alert(node: str = NODE, condition: str = "NotReady", status: str = "firing") -> dict[str, Any]:
    return alert_payload(
        "NodeDegraded",
        status=status,
        fingerprint=f"fp-node-{len(node)}-{condition}",
        node=node,
        condition=condition,
        cluster="thanos-ha",
    )


def pvc_alert(namespace: str = NS, pvc: str = PVC) -> dict[str, Any]:
    return alert_payload(
        "DiskPressureWarning",
        fingerprint=f"fp-pvc-{len(namespace)}-{len(pvc)}",
        namespace=namespace,
        persistentvolumeclaim=pvc,
        node="node-197",
        cluster="thanos-ha",
    )


async def start(d: Daemon, payload: dict[str, Any]) -> str:
    status, body = await d.webhook(payload)
    assert status == 200, body
    (run_id,) = body["started"]
    return str(run_id)


def declared_permissions(runbook: str) -> set[str]:
    registry = default_registry()
    rb = yaml.safe_load(RUNBOOKS[runbook])
    return {p for s in rb["steps"] for p in registry.get(s["action"]).permissions}  # type: ignore[union-attr]


def degraded_node(kube: KubeApiEmulator, *, ready: bool = False, pressure: tuple[str, ...] = ()) -> None:
    """The seed's four control-plane nodes; node-196 degraded, with pods of every kind drain sorts."""
    seed_cluster(kube)
    kube.add_node(NODE, ready=ready, pressure=pressure)
    kube.add_workload("DaemonSet", "fluent-bit", "logging")
    kube.add_pod("fluent-bit-x7k2p", "logging", node=NODE, owner=("DaemonSet", "fluent-bit"))
    kube.add_pod(f"kube-apiserver-{NODE}", "kube-system", node=NODE, mirror=True)
    kube.add_pod("grafana-7d9f-x2k4q", NS, node=NODE, owner=("ReplicaSet", "grafana-7d9f"))
    kube.add_pod("thanos-store-0", NS, node=NODE, owner=("StatefulSet", "thanos-store"), empty_dir=True)
    kube.add_pod("grafana-7d9f-m4q8z", NS, node="node-197", owner=("ReplicaSet", "grafana-7d9f"))


def kube_config(
    tmp_path: Path, kube: KubeApiEmulator, prom: PrometheusServer | None = None, **overrides: Any
) -> dict[str, Any]:
    kubernetes = {"host": kube.url, "timeout": "5s", "retries": 1, **overrides.pop("kubernetes", {})}
    if prom is not None:
        overrides["prometheus"] = {"url": prom.url, "timeout": "5s"}
    return base_config(tmp_path, kubernetes=kubernetes, **{"dry_run": False, **overrides})


def daemon(
    tmp_path: Path, kube: KubeApiEmulator, prom: PrometheusServer | None = None, **overrides: Any
) -> contextlib.AbstractAsyncContextManager[Daemon]:
    """The in-process daemon with both shipped runbooks, on ``kube_config(...)``."""
    return serve(tmp_path, RUNBOOKS, config=kube_config(tmp_path, kube, prom, **overrides))


def outputs(run: dict[str, Any]) -> dict[str, Any]:
    return {k: s["output"] for k, s in steps_of(run).items()}


# -- node-degradation --------------------------------------------------------------------------------------


async def test_node_notready_cordon_drain_wait_uncordon(tmp_path: Path, kube_api: KubeApiEmulator) -> None:
    degraded_node(kube_api)
    async with daemon(tmp_path, kube_api) as d:
        run_id = await start(d, node_alert())
        run = await d.run(run_id)
        assert run["target"] == NODE
        assert run["params"]["node"] == NODE and run["params"]["condition"] == "NotReady"

        # The node comes back while the operator looks at the wait step.
        run, approved = await walk(
            d, run_id, before={"wait-ready": lambda: kube_api.set_node_ready(NODE, True)}
        )
        assert run["state"] == "succeeded", run
        assert approved == [*NODE_CHECKS, "cordon", "out-of-service", "drain", "wait-ready", "uncordon"]
        assert states(run) == {
            "node-status": "succeeded",
            "cluster-health": "succeeded",
            "longhorn-volumes": "succeeded",
            "capacity": "succeeded",
            "cordon": "succeeded",
            "out-of-service": "failed",  # no Lease: runbookd cannot tell the kubelet is gone
            "drain": "succeeded",
            "drain-incomplete": "skipped",
            "wait-ready": "succeeded",
            "wait-pressure-cleared": "skipped",  # a NotReady alert: no pressure to wait for
            "uncordon": "succeeded",
        }
        out = outputs(run)
        assert out["node-status"]["ready"] is False and out["node-status"]["pod_count"] == 4
        assert out["cluster-health"]["ok"] is True and out["cluster-health"]["not_ready"] == [NODE]
        assert out["cordon"]["changed"] is True
        outcomes = {
            f"{p['namespace']}/{p['name']}": (p["outcome"], p["reason"]) for p in out["drain"]["pods"]
        }
        assert outcomes == {
            f"{NS}/grafana-7d9f-x2k4q": ("evicted", "evicted and gone"),
            f"{NS}/thanos-store-0": ("evicted", "evicted and gone"),
            "logging/fluent-bit-x7k2p": ("skipped", "DaemonSet-managed"),
            f"kube-system/kube-apiserver-{NODE}": ("skipped", "mirror pod of a static pod"),
        }
        assert out["uncordon"]["changed"] is True and out["uncordon"]["forced"] is False
        assert await d.engine.memory.items("kubernetes.cordons") == {}  # the bookkeeping is cleared

    # Exactly: the cordon, one eviction per evictable pod (the drain found the node already cordoned),
    # the uncordon. Never a DELETE, never the DaemonSet or mirror pod.
    sent = mutations(kube_api)
    assert sent[0] == CORDON and sent[-1] == UNCORDON
    assert sorted(sent[1:-1], key=repr) == sorted(EVICTIONS, key=repr)
    assert kube_api.get("Node", NODE)["spec"].get("unschedulable") is None
    assert not kube_api.exists("Pod", "grafana-7d9f-x2k4q", NS) and not kube_api.exists(
        "Pod", "thanos-store-0", NS
    )
    assert kube_api.exists("Pod", "fluent-bit-x7k2p", "logging")
    assert kube_api.exists("Pod", f"kube-apiserver-{NODE}", "kube-system")
    assert kube_api.exists("Pod", "grafana-7d9f-m4q8z", NS)
    # Every request is covered by the permissions the runbook's actions declare (the chart's RBAC).
    assert {r.permission for r in kube_api.requests} <= declared_permissions(NODE_RB)


async def test_node_alert_resolved_after_the_cordon_skips_the_drain_but_uncordons(
    tmp_path: Path, kube_api: KubeApiEmulator
) -> None:
    degraded_node(kube_api)
    async with daemon(tmp_path, kube_api) as d:
        run_id = await start(d, node_alert())
        run, approved = await walk(d, run_id, stop_at="drain")
        assert approved == [*NODE_CHECKS, "cordon", "out-of-service"]
        assert mutations(kube_api) == [CORDON]

        # The node recovers and the alert resolves while the drain waits for approval: the run has
        # changed something, so it is not cancelled; the drain's `when:` no longer holds.
        kube_api.set_node_ready(NODE, True)
        status, body = await d.webhook(node_alert(status="resolved"))
        assert status == 200 and body["cancelled"] == []

        run, approved = await walk(d, run_id)
        assert run["state"] == "succeeded", run
        assert run["alert_resolved"] is True
        assert approved == ["wait-ready", "uncordon"]
        assert states(run)["drain"] == "skipped"
    assert mutations(kube_api) == [CORDON, UNCORDON]  # no eviction


async def test_node_alert_resolved_before_anything_changed_cancels(
    tmp_path: Path, kube_api: KubeApiEmulator
) -> None:
    degraded_node(kube_api)
    async with daemon(tmp_path, kube_api) as d:
        run_id = await start(d, node_alert())
        await walk(d, run_id, stop_at="cordon")
        status, body = await d.webhook(node_alert(status="resolved"))
        assert status == 200 and body["cancelled"] == [run_id]
        run = await d.run(run_id)
        assert run["state"] == "cancelled" and states(run)["cordon"] == "skipped"
    assert mutations(kube_api) == []


async def test_node_drain_refused_is_reported_and_the_node_still_comes_back(
    tmp_path: Path, kube_api: KubeApiEmulator
) -> None:
    """A pod without a controller needs force_unmanaged, which the runbook does not give: the drain
    refuses before evicting anything; the run reports it and still waits for the node and uncordons."""
    degraded_node(kube_api)
    kube_api.add_pod("debug-shell", "default", node=NODE, owner=None)
    async with daemon(tmp_path, kube_api) as d:
        run_id = await start(d, node_alert())
        run, approved = await walk(
            d, run_id, before={"wait-ready": lambda: kube_api.set_node_ready(NODE, True)}
        )
        assert run["state"] == "succeeded", run
        assert approved == [
            *NODE_CHECKS,
            "cordon",
            "out-of-service",
            "drain",
            "drain-incomplete",
            "wait-ready",
            "uncordon",
        ]
        drain = steps_of(run)["drain"]
        assert drain["state"] == "failed"
        assert drain["error"].startswith(f"refusing to drain {NODE}: 1 pod(s) need an explicit opt-in")
        assert "default/debug-shell has no controller" in drain["error"]
        report = steps_of(run)["drain-incomplete"]
        assert report["plan"]["level"] == "warning"
        assert f"The drain of {NODE} did not finish: it was refused" in report["output"]["message"]
    assert mutations(kube_api) == [CORDON, UNCORDON]  # nothing was evicted
    assert kube_api.exists("Pod", "debug-shell", "default")


async def test_node_holding_the_last_copy_of_a_longhorn_volume_is_not_drained(
    tmp_path: Path, kube_api: KubeApiEmulator
) -> None:
    """The node's replica of a volume is the only one that ever held its data (the other failed):
    the drain refuses before evicting anything, whatever Longhorn's node-drain-policy says; the run
    reports it, waits for the node and uncordons, as for any refused drain."""
    degraded_node(kube_api)  # NotReady: its kubelet is down, its replicas may still be serving
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-0", NODE, healthy_at="2026-12-01T10:00:00Z")
    lh_replica(
        kube_api,
        "pvc-0a1b",
        "pvc-0a1b-r-1",
        "node-197",
        healthy_at="2026-12-01T10:00:00Z",
        failed_at="2026-12-03T09:00:00Z",
    )
    async with daemon(tmp_path, kube_api) as d:
        run_id = await start(d, node_alert())
        run, approved = await walk(
            d, run_id, before={"wait-ready": lambda: kube_api.set_node_ready(NODE, True)}
        )
        assert run["state"] == "succeeded", run
        drain = steps_of(run)["drain"]
        assert drain["state"] == "failed"
        assert drain["error"].startswith(
            f"refusing to drain {NODE}: it holds the last copy of 1 Longhorn volume(s)"
        ), drain["error"]
        assert (
            "pvc-0a1b (here: pvc-0a1b-r-0 (healthy); elsewhere: pvc-0a1b-r-1 (node-197, failed))"
            in drain["error"]
        )
        assert "drain-incomplete" in approved and approved[-1] == "uncordon"
    assert mutations(kube_api) == [CORDON, UNCORDON]  # nothing was evicted
    assert kube_api.exists("Pod", "thanos-store-0", NS)


async def test_node_a_person_cordoned_is_left_to_them(tmp_path: Path, kube_api: KubeApiEmulator) -> None:
    degraded_node(kube_api)
    kube_api.add_node(NODE, ready=False, unschedulable=True)  # someone is already on it
    async with daemon(tmp_path, kube_api) as d:
        run_id = await start(d, node_alert())
        run, approved = await walk(d, run_id)
        assert run["state"] == "succeeded", run
        assert approved == [*NODE_CHECKS, "cordon"]
        cordon = steps_of(run)["cordon"]["output"]
        assert cordon["changed"] is False and cordon["cordoned_by_runbookd"] is False
        assert "already cordoned (by someone else)" in cordon["message"]
        assert [k for k, v in states(run).items() if v == "skipped"] == [
            "out-of-service",
            "drain",
            "drain-incomplete",
            "wait-ready",
            "wait-pressure-cleared",
            "uncordon",
        ]
    assert mutations(kube_api) == []


async def test_node_cluster_already_at_its_limit_fails_before_any_change(
    tmp_path: Path, kube_api: KubeApiEmulator
) -> None:
    degraded_node(kube_api)
    kube_api.set_node_ready("node-197", False)  # a second node is down
    async with daemon(tmp_path, kube_api) as d:
        run_id = await start(d, node_alert())
        run, approved = await walk(d, run_id)
        assert approved == ["node-status", "cluster-health"]
        assert run["state"] == "failed"
        assert "2 of 4 nodes unavailable (limit 1)" in steps_of(run)["cluster-health"]["error"]
        assert run["outcome"].startswith("step cluster-health failed")
    assert mutations(kube_api) == []


@pytest.mark.parametrize(
    ("max_unavailable", "already_out", "expected"),
    [
        # node-197 is NotReady and the limit allows 2 nodes out, but only 2 of 4 control-plane nodes
        # would stay available: etcd needs 3.
        (
            2,
            "not_ready",
            "only 2 of 4 control-plane nodes would stay Ready and schedulable, and etcd quorum needs 3",
        ),
        # a person cordoned node-197: a second node out is over limits.max_unavailable_nodes=1.
        (
            1,
            "cordoned",
            "2 nodes would be NotReady or unschedulable, more than limits.max_unavailable_nodes=1",
        ),
    ],
)
async def test_node_guard_refuses_the_cordon_and_the_run_fails_unchanged(
    tmp_path: Path, kube_api: KubeApiEmulator, max_unavailable: int, already_out: str, expected: str
) -> None:
    # A pressure alert: node-196 is still Ready, so cordoning it takes one more node out.
    degraded_node(kube_api, ready=True, pressure=("MemoryPressure",))
    if already_out == "not_ready":
        kube_api.set_node_ready("node-197", False)
    else:
        kube_api.add_node("node-197", unschedulable=True)
    async with daemon(tmp_path, kube_api, limits={"max_unavailable_nodes": max_unavailable}) as d:
        run_id = await start(d, node_alert(condition="MemoryPressure"))
        run, approved = await walk(d, run_id)
        assert approved == [*NODE_CHECKS, "cordon"]  # health was within limits
        assert run["state"] == "failed"
        error = steps_of(run)["cordon"]["error"]
        assert error.startswith(f"refusing to cordon control-plane node {NODE}") or error.startswith(
            f"refusing to cordon {NODE}"
        )
        assert expected in error
        assert run["outcome"] == f"step cordon failed: {error}"
        assert await d.engine.memory.items("kubernetes.cordons") == {}
    assert mutations(kube_api) == []


async def test_node_dry_run_records_exact_requests_and_changes_nothing(
    tmp_path: Path, kube_api: KubeApiEmulator
) -> None:
    degraded_node(kube_api)
    before = {key: json.dumps(obj, sort_keys=True) for key, obj in kube_api.objects.items()}
    async with daemon(tmp_path, kube_api, dry_run=True) as d:
        run_id = await start(d, node_alert())
        run, approved = await walk(d, run_id)
        assert run["state"] == "succeeded" and run["dry_run"] is True, run
        # Reads run for real; the waits are skipped (nothing changed, nothing to wait for); the
        # uncordon finds the node schedulable and would send nothing.
        assert approved == [*NODE_CHECKS, "cordon", "out-of-service", "drain", "uncordon"]
        assert states(run)["wait-ready"] == "skipped" and states(run)["drain-incomplete"] == "skipped"
        out = outputs(run)

        def described(requests: list[dict[str, Any]]) -> list[tuple[str, str, str, Any]]:
            for r in requests:
                query = "?fieldManager=runbookd" if r["method"] in ("PATCH", "PUT") else ""
                assert r["url"] == kube_api.url + r["path"] + query
            return [(r["method"], r["path"], r["content_type"], r["body"]) for r in requests]

        assert out["cordon"]["dry_run"] is True
        assert described(out["cordon"]["requests"]) == [CORDON]
        drain = described(out["drain"]["requests"])
        assert drain[0] == CORDON  # the node is not really cordoned, so the drain would cordon it
        assert sorted(drain[1:], key=repr) == sorted(EVICTIONS, key=repr)
        assert sorted(s["pod"] for s in out["drain"]["skipped"]) == [
            f"kube-system/kube-apiserver-{NODE}",
            "logging/fluent-bit-x7k2p",
        ]
        assert out["uncordon"]["changed"] is False
        assert await d.engine.memory.items("kubernetes.cordons") == {}
    assert mutations(kube_api) == []
    assert {key: json.dumps(obj, sort_keys=True) for key, obj in kube_api.objects.items()} == before


@pytest.mark.parametrize("node", ["a/b", "..", "node 196", "n" * 300, "Node-196", "../../api/v1/nodes"])
async def test_hostile_node_label_fails_the_first_step_before_any_request(
    tmp_path: Path, kube_api: KubeApiEmulator, node: str
) -> None:
    degraded_node(kube_api)
    async with daemon(tmp_path, kube_api) as d:
        run_id = await start(d, node_alert(node=node))
        await d.engine.wait_idle()
        run = await d.run(run_id)
        assert run["state"] == "failed"
        first = steps_of(run)["node-status"]
        assert first["state"] == "failed" and first["plan"] is None and first["approvals"] == []
        assert "invalid parameters for kubernetes.node_status: node:" in first["error"]
        assert "DNS-1123 subdomain" in first["error"]
        assert all(s["state"] == "pending" for s in run["steps"][1:])
    assert kube_api.requests == []


@pytest.mark.parametrize(
    ("namespace", "pvc"), [("a/b", PVC), (NS, ".."), (NS, "data 1"), (NS, "p" * 300), ("x" * 64, PVC)]
)
async def test_hostile_pvc_labels_fail_the_first_step_before_any_request(
    tmp_path: Path, kube_api: KubeApiEmulator, namespace: str, pvc: str
) -> None:
    async with daemon(tmp_path, kube_api) as d:
        run_id = await start(d, pvc_alert(namespace, pvc))
        await d.engine.wait_idle()
        run = await d.run(run_id)
        assert run["state"] == "failed"
        first = steps_of(run)["pvc"]
        assert first["state"] == "failed" and "invalid parameters for kubernetes.pvc_status" in first["error"]
    assert kube_api.requests == []


async def test_node_pressure_waits_for_the_condition_to_clear_in_prometheus(
    tmp_path: Path,
    kube_api: KubeApiEmulator,
    prometheus_factory: Callable[..., PrometheusServer],
    exporter_factory: Callable[..., MetricsExporter],
) -> None:
    """The pressure branch's PromQL against a real Prometheus: kube-state-metrics' condition series
    of this node and cluster only (another cluster's node of the same name stays under pressure)."""
    degraded_node(kube_api, ready=True, pressure=("MemoryPressure",))
    exporter = exporter_factory()

    def condition(cluster: str, under_pressure: bool) -> None:
        for status, value in (("true", under_pressure), ("false", not under_pressure)):
            labels = {"node": NODE, "condition": "MemoryPressure", "status": status, "cluster": cluster}
            exporter.set("kube_node_status_condition", float(value), labels)

    condition("thanos-ha", True)
    condition("other-cluster", True)
    prom = prometheus_factory(targets=[exporter.target])
    await prom.wait_for_async('kube_node_status_condition{status="true"} == 1', lambda r: len(r) == 2)

    async def pressure_clears() -> None:
        condition("thanos-ha", False)
        await prom.wait_for_async(
            'kube_node_status_condition{cluster="thanos-ha", status="false"} == 1', timeout=30
        )

    async with daemon(tmp_path, kube_api, prom) as d:
        run_id = await start(d, node_alert(condition="MemoryPressure"))
        run, approved = await walk(d, run_id, before={"wait-pressure-cleared": pressure_clears})
        assert run["state"] == "succeeded", run
        assert approved == [
            *NODE_CHECKS,
            "cordon",
            "drain",
            "wait-ready",
            "wait-pressure-cleared",
            "uncordon",
        ]
        cleared = steps_of(run)["wait-pressure-cleared"]
        assert 'condition="MemoryPressure"' in cleared["plan"]["query"]
        assert [r["labels"] for r in cleared["output"]["result"]] == [{"node": NODE}]
    sent = mutations(kube_api)
    assert sent[0] == CORDON and sent[-1] == UNCORDON and len(sent) == 4


# -- pvc-disk-pressure -------------------------------------------------------------------------------------


class VolumeStats:
    """kubelet_volume_stats_* of one PVC, as the kubelet exports them, for two clusters."""

    def __init__(self, exporter: MetricsExporter) -> None:
        self.exporter = exporter

    def set(self, capacity: float, available: float, cluster: str = "thanos-ha") -> None:
        labels = {"namespace": NS, "persistentvolumeclaim": PVC, "cluster": cluster}
        self.exporter.set("kubelet_volume_stats_capacity_bytes", capacity, labels)
        self.exporter.set("kubelet_volume_stats_available_bytes", available, labels)


RATIO = (
    f'kubelet_volume_stats_available_bytes{{persistentvolumeclaim="{PVC}", cluster="thanos-ha"}}'
    f' / kubelet_volume_stats_capacity_bytes{{persistentvolumeclaim="{PVC}", cluster="thanos-ha"}}'
)


@pytest.fixture
async def volume_prometheus(
    prometheus_factory: Callable[..., PrometheusServer], exporter_factory: Callable[..., MetricsExporter]
) -> tuple[PrometheusServer, VolumeStats]:
    """A real Prometheus scraping a PVC at 5% free, and the same PVC name in another cluster at 1%
    (it must never be confused with ours, or the verification could not pass)."""
    exporter = exporter_factory()
    stats = VolumeStats(exporter)
    stats.set(10 * GI, 0.5 * GI)
    stats.set(10 * GI, 0.1 * GI, cluster="other-cluster")
    prom = prometheus_factory(targets=[exporter.target])
    await prom.wait_for_async(RATIO)
    return prom, stats


def pvc_cluster(
    kube: KubeApiEmulator, *, expandable: bool, resize_after_reads: int = 1, disk_available: int = 80 * GI
) -> str:
    """The PVC, its users, and its Longhorn volume with 2 replicas on two 100 GB disks (each 40 GB
    scheduled, ``disk_available`` free; defaults 100% over-provisioning, 25% minimal available)."""
    kube.add_storage_class("longhorn", allow_expansion=expandable)
    kube.add_pvc(PVC, NS, request="10Gi", resize_after_reads=resize_after_reads)
    kube.add_pod("prometheus-0", NS, node="node-197", owner=("StatefulSet", "prometheus"), pvc=PVC)
    kube.add_pod("grafana-7d9f-m4q8z", NS, node="node-197")
    volume = str(kube.get("PersistentVolumeClaim", PVC, NS)["spec"]["volumeName"])
    lh_settings(kube)
    for node in ("node-196", "node-197"):
        disk = {
            "uuid": f"uuid-{node}",
            "maximum": 100 * 10**9,
            "available": disk_available,
            "scheduled": 40 * GI,
        }
        lh_node(kube, node, {"default-disk": disk})
    lh_volume(
        kube, volume, size=10 * GI, replicas=[("node-196", "uuid-node-196"), ("node-197", "uuid-node-197")]
    )
    return volume


async def test_pvc_expanded_waited_for_and_verified(
    tmp_path: Path, kube_api: KubeApiEmulator, volume_prometheus: tuple[PrometheusServer, VolumeStats]
) -> None:
    prom, stats = volume_prometheus
    pvc_cluster(kube_api, expandable=True)
    rv = kube_api.get("PersistentVolumeClaim", PVC, NS)["metadata"]["resourceVersion"]

    async def filesystem_grows() -> None:
        # What the kubelet reports once the volume and its filesystem have grown to 13Gi.
        stats.set(13 * GI, 3.5 * GI)
        await prom.wait_for_async(RATIO, lambda r: float(r[0]["value"][1]) > 0.2)

    async with daemon(tmp_path, kube_api, prom) as d:
        run_id = await start(d, pvc_alert())
        assert (await d.run(run_id))["target"] == f"{NS}/{PVC}"
        run, approved = await walk(d, run_id, before={"verify": filesystem_grows})
        assert run["state"] == "succeeded", run
        assert approved == [*PVC_CHECKS, "longhorn-room", "expand", "wait-resize", "verify"]
        assert states(run)["person-must-act"] == "skipped"
        assert states(run)["opensearch-cause"] == "skipped"
        out = outputs(run)
        assert out["pvc"]["allow_expansion"] is True and out["pvc"]["storage_class"] == "longhorn"
        assert [p["name"] for p in out["pvc"]["pods"]] == ["prometheus-0"]
        # Only this cluster's series: the other cluster's PVC of the same name is not ours.
        assert [r["value"] for r in out["free-space"]["result"]] == [0.05]
        assert out["expand"]["from"] == "10Gi" and out["expand"]["to"] == "13Gi"
        assert out["expand"]["capped"] is False
        assert out["wait-resize"]["ok"] is True and out["wait-resize"]["attempts"] == 2
        assert out["verify"]["ok"] is True and out["verify"]["count"] == 1
    assert mutations(kube_api) == [
        (
            "PATCH",
            PVC_PATH,
            STRATEGIC_MERGE_PATCH,
            {"metadata": {"resourceVersion": rv}, "spec": {"resources": {"requests": {"storage": "13Gi"}}}},
        )
    ]
    pvc = kube_api.get("PersistentVolumeClaim", PVC, NS)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "13Gi"
    assert pvc["status"]["capacity"]["storage"] == "13Gi"
    assert {r.permission for r in kube_api.requests} <= declared_permissions(PVC_RB)


async def test_pvc_without_expansion_reports_that_a_person_must_act(
    tmp_path: Path, kube_api: KubeApiEmulator, volume_prometheus: tuple[PrometheusServer, VolumeStats]
) -> None:
    prom, _ = volume_prometheus
    pvc_cluster(kube_api, expandable=False)
    async with daemon(tmp_path, kube_api, prom) as d:
        run_id = await start(d, pvc_alert())
        run, approved = await walk(d, run_id)
        assert run["state"] == "succeeded", run
        assert approved == [*PVC_CHECKS, "person-must-act"]
        assert {k: v for k, v in states(run).items() if v == "skipped"} == {
            "opensearch-cause": "skipped",
            "longhorn-room": "skipped",
            "expand": "skipped",
            "wait-resize": "skipped",
            "verify": "skipped",
        }
        report = steps_of(run)["person-must-act"]
        assert report["plan"]["level"] == "warning"
        message = report["output"]["message"]
        assert message.startswith(f"PVC {NS}/{PVC} is running out of space and runbookd cannot expand it:")
        assert "StorageClass longhorn (not expandable)" in message
        assert "Used by: prometheus-0." in message
        assert "Free now: 5.0%." in message
        assert "A person must act" in message
    assert mutations(kube_api) == []


async def test_pvc_at_the_configured_cap_is_refused_and_the_run_fails(
    tmp_path: Path, kube_api: KubeApiEmulator, volume_prometheus: tuple[PrometheusServer, VolumeStats]
) -> None:
    prom, _ = volume_prometheus
    pvc_cluster(kube_api, expandable=True)
    async with daemon(tmp_path, kube_api, prom, kubernetes={"max_pvc_size": "10Gi"}) as d:
        run_id = await start(d, pvc_alert())
        run, approved = await walk(d, run_id)
        assert approved == [*PVC_CHECKS, "longhorn-room", "person-must-act"]
        assert states(run)["longhorn-room"] == "failed" and states(run)["expand"] == "skipped"
        refusal = (
            f"refusing to expand {NS}/{PVC}: it is already at kubernetes.max_pvc_size 10Gi (from the config); "
            "a person must decide"
        )
        assert steps_of(run)["longhorn-room"]["error"] == refusal
        assert refusal in steps_of(run)["person-must-act"]["output"]["message"]
    assert mutations(kube_api) == []


async def test_pvc_growth_the_longhorn_disks_cannot_hold_is_refused_with_the_numbers(
    tmp_path: Path, kube_api: KubeApiEmulator, volume_prometheus: tuple[PrometheusServer, VolumeStats]
) -> None:
    """100 GB disks with 26 GB free: +3Gi would leave 22.8Gi, under the 25% floor (23.3Gi). Longhorn would
    leave the PVC resizing; runbookd refuses before asking, and the run reports the numbers."""
    prom, _ = volume_prometheus
    volume = pvc_cluster(kube_api, expandable=True, disk_available=26 * 10**9)
    async with daemon(tmp_path, kube_api, prom) as d:
        run, approved = await walk(d, await start(d, pvc_alert()))
    assert approved == [*PVC_CHECKS, "longhorn-room", "person-must-act"]
    assert states(run)["expand"] == "skipped"
    room = steps_of(run)["longhorn-room"]["output"]
    assert room["ok"] is False and room["growth_bytes"] == 3 * GI
    assert [d["node"] for d in room["disks"]] == ["node-196", "node-197"]
    assert room["disks"][0]["problems"] == [
        "available 24.2Gi - 3.0Gi = 21.2Gi <= 93.1Gi x 25% minimal available = 23.3Gi"
    ]
    assert room["cap_bytes"] < 12 * GI  # computed from the disks, never a fixed 200Gi
    message = steps_of(run)["person-must-act"]["output"]["message"]
    assert (
        f"Longhorn cannot hold 10Gi -> 13Gi (+3.0Gi per replica) of volume {volume}: node-196/default-disk:"
        in message
    )
    assert "The disks could take at most" in message
    assert mutations(kube_api) == []


async def test_pvc_in_logging_points_at_opensearch_retention(
    tmp_path: Path, kube_api: KubeApiEmulator, volume_prometheus: tuple[PrometheusServer, VolumeStats]
) -> None:
    prom, _ = volume_prometheus
    kube_api.add_storage_class("longhorn", allow_expansion=False)
    kube_api.add_pvc("data-opensearch-0", "logging")
    async with daemon(tmp_path, kube_api, prom) as d:
        run, _ = await walk(d, await start(d, pvc_alert(namespace="logging", pvc="data-opensearch-0")))
    note = steps_of(run)["opensearch-cause"]["output"]["message"]
    assert (
        "index retention" in note and "snapshot is stuck" in note and "opensearch-retention runbook" in note
    )
    assert "opensearch-retention runbook" in steps_of(run)["person-must-act"]["output"]["message"]
    assert mutations(kube_api) == []


# -- runbookd plan on the example payloads -----------------------------------------------------------------


def plan_config(tmp_path: Path, kube: KubeApiEmulator) -> Path:
    cfg = {
        "state": {"path": str(tmp_path / "never-created.db")},
        "runbooks": {"paths": [str(REPO / "runbooks")]},
        "dry_run": False,
        "prometheus": {"url": f"http://127.0.0.1:{closed_port()}"},
        "kubernetes": {"host": kube.url, "max_pvc_size": "500Gi"},
        "auth": {
            "webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"},
            "tokens": [{"name": "admin", "role": "admin", "secret": {"env": "RUNBOOKD_ADMIN_TOKEN"}}],
        },
        "approvers": {"sre": ["admin"]},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


async def run_plan(config: Path, alert: Path, *args: str) -> str:
    # In a thread: the emulator shares this event loop and must stay able to answer (it must not be asked).
    res = await asyncio.to_thread(
        subprocess.run,
        [RUNBOOKD, "plan", "--config", str(config), "--alert", str(alert), *args],
        cwd=config.parent,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


async def test_plan_renders_the_node_notready_example(tmp_path: Path, kube_api: KubeApiEmulator) -> None:
    config = plan_config(tmp_path, kube_api)
    result = json.loads(await run_plan(config, EXAMPLES / "node-notready.json", "--output", "json"))
    assert result["unmatched_alerts"] == []
    (run,) = result["runs"]
    assert (run["runbook"], run["alert"], run["target"]) == (NODE_RB, "NodeDegraded", NODE)
    assert run["params"] == {
        "node": NODE,
        "condition": "NotReady",
        "cluster": "thanos-ha",
        "delete_emptydir_data": True,
        "force_unmanaged": False,
        "drain_timeout": "10m",
        "recovery_timeout": "30m",
    }
    steps = steps_of(run)
    assert list(steps) == [
        *NODE_CHECKS,
        "cordon",
        "out-of-service",
        "drain",
        "drain-incomplete",
        "wait-ready",
        "wait-pressure-cleared",
        "uncordon",
    ]
    assert [s["id"] for s in run["steps"] if s["mutating"]] == [
        "cordon",
        "out-of-service",
        "drain",
        "uncordon",
    ]
    assert steps["node-status"]["plan"] == {"node": NODE}
    assert steps["cluster-health"]["plan"] == {}
    assert steps["cordon"]["plan"] == {"node": NODE, "reason": "NodeDegraded NotReady"}
    assert steps["drain"]["plan"] == {
        "node": NODE,
        "delete_emptydir_data": True,
        "force_unmanaged": False,
        "timeout": "10m",
        "poll_interval": "5s",
        "grace_period_seconds": None,
        "check_capacity": True,
        "check_longhorn_replicas": True,
    }
    assert steps["capacity"]["plan"] == {"node": NODE}
    assert steps["out-of-service"]["plan"] == {"node": NODE, "lease_stale_after": "5m"}
    assert "not run.alert_resolved" in steps["drain"]["when"]
    assert steps["wait-ready"]["plan"] == {
        "until": "node_ready",
        "node": NODE,
        "namespace": None,
        "name": None,
        "timeout": "30m",
        "interval": "10s",
    }
    assert steps["uncordon"]["plan"] == {"node": NODE, "force": False, "require_ready": True}
    assert steps["drain-incomplete"]["plan"] is None  # uses the drain's output: rendered later
    assert "params.condition != 'NotReady'" in steps["wait-pressure-cleared"]["when"]

    human = await run_plan(config, EXAMPLES / "node-notready.json")
    assert human.splitlines()[0] == f"NodeDegraded -> runbook {NODE_RB}, target {NODE}"
    rows = {line.split()[0]: line for line in human.splitlines()[3:] if line.strip()}
    assert "mutating" in rows["cordon"] and "mutating" in rows["drain"] and "read-only" in rows["wait-ready"]
    # plan contacted nothing and created nothing
    assert kube_api.requests == []
    assert not (tmp_path / "never-created.db").exists()


async def test_plan_renders_the_pvc_full_example(tmp_path: Path, kube_api: KubeApiEmulator) -> None:
    config = plan_config(tmp_path, kube_api)
    result = json.loads(await run_plan(config, EXAMPLES / "pvc-full.json", "--output", "json"))
    (run,) = result["runs"]
    assert (run["runbook"], run["alert"], run["target"]) == (PVC_RB, "DiskPressureWarning", f"{NS}/{PVC}")
    assert run["params"] == {
        "namespace": NS,
        "pvc": PVC,
        "cluster": "thanos-ha",
        "growth_percent": 30,
    }
    steps = steps_of(run)
    assert list(steps) == [
        *PVC_CHECKS,
        "opensearch-cause",
        "longhorn-room",
        "expand",
        "wait-resize",
        "verify",
        "person-must-act",
    ]
    assert [s["id"] for s in run["steps"] if s["mutating"]] == ["expand"]
    selector = f'namespace="{NS}", persistentvolumeclaim="{PVC}", cluster=~"thanos\\\\-ha|"'
    assert steps["pvc"]["plan"] == {"namespace": NS, "name": PVC}
    assert steps["free-space"]["plan"]["query"] == (
        f"min by (namespace, persistentvolumeclaim) ( kubelet_volume_stats_available_bytes{{{selector}}}"
        f" / kubelet_volume_stats_capacity_bytes{{{selector}}})"
    )
    assert steps["growth"]["plan"]["query"] == (
        "min by (namespace, persistentvolumeclaim) (predict_linear("
        f" kubelet_volume_stats_available_bytes{{{selector}}}[6h], 24 * 3600))"
    )
    # The guard step and the cap: what the Longhorn disks can hold, never a fixed size.
    assert steps["longhorn-room"]["plan"] == {
        "namespace": NS,
        "name": PVC,
        "growth_percent": 30.0,
        "max_size": None,
    }
    assert steps["expand"]["plan"] == {
        "namespace": NS,
        "name": PVC,
        "growth_percent": 30.0,
        "max_size": None,
        "longhorn_check": True,
    }
    assert steps["expand"]["when"] == "{{ steps.pvc.output.allow_expansion and steps['longhorn-room'].ok }}"
    assert steps["wait-resize"]["plan"]["until"] == "pvc_resized"
    assert steps["verify"]["plan"]["expect"] == "> 0.15"
    assert steps["verify"]["plan"]["query"] == steps["free-space"]["plan"]["query"]
    assert steps["person-must-act"]["when"] == (
        "{{ not steps.pvc.output.allow_expansion or steps['longhorn-room'].state == 'failed' }}"
    )
    assert kube_api.requests == []


async def test_plan_escapes_hostile_pvc_labels_in_queries(tmp_path: Path, kube_api: KubeApiEmulator) -> None:
    payload = json.loads((EXAMPLES / "pvc-full.json").read_text())
    hostile = 'x"} or vector(1) or up{a="'
    payload["alerts"][0]["labels"]["persistentvolumeclaim"] = hostile
    alert = tmp_path / "hostile.json"
    alert.write_text(json.dumps(payload))
    result = json.loads(await run_plan(plan_config(tmp_path, kube_api), alert, "--output", "json"))
    steps = steps_of(result["runs"][0])
    assert 'persistentvolumeclaim="x\\"} or vector(1) or up{a=\\""' in steps["free-space"]["plan"]["query"]
    assert "DNS-1123 subdomain" in steps["pvc"]["error"]  # and the Kubernetes step refuses it outright
    assert kube_api.requests == []
