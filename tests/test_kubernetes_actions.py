"""Kubernetes actions against the API emulator, through runbookd's client on the real kubernetes-asyncio.

Each test seeds the emulator, runs an action as the engine would (params validated by the action's own
model, then ``Action.run``), and asserts on what the API server holds and on the exact requests it saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from pydantic import ValidationError
from support.action_memory import DictActionMemory
from support.kube_api import STRATEGIC_MERGE_PATCH, KubeApiEmulator
from support.kube_api import parse_quantity as emulator_quantity
from support.kube_fixtures import SEED_NODES, seed_cluster

from daemon.actions import kubernetes
from daemon.actions.base import ActionContext, Output
from daemon.actions.kubernetes.storage import expansion_target
from daemon.clients.kubernetes import (
    EvictionBlocked,
    KubeConflict,
    KubeForbidden,
    KubeNotFound,
    KubernetesClient,
    RetryPolicy,
    connect,
    from_config,
)
from daemon.config import KubernetesConfig
from daemon.errors import GuardRefused, PermanentError, TemporaryError
from daemon.kits.clock import FrozenClock, iso
from daemon.kits.quantities import format_bytes, parse_quantity

# The emulator fixtures, until tests/conftest.py imports them for every module.

ACTIONS = {a.name: a for a in kubernetes.ACTIONS}
MakeCtx = Callable[..., ActionContext]


async def run(action_name: str, ctx: ActionContext, /, **params: Any) -> Output:
    action = ACTIONS[action_name]
    return await action.run(ctx, action.params.model_validate(params))


def mutations(kube: KubeApiEmulator) -> list[tuple[str, str, Any]]:
    return [(r.method, r.path, r.body) for r in kube.mutations]


def assert_declared(kube: KubeApiEmulator, *names: str) -> None:
    """Every request the actions made is covered by the permissions they declare."""
    declared = {perm for name in names for perm in ACTIONS[name].permissions}
    used = {r.permission for r in kube.requests}
    assert used <= declared, used - declared


CORDON = {"spec": {"unschedulable": True}}


# -- the actions' contract ------------------------------------------------------------------------


def test_every_action_is_declared_with_flags_and_permissions() -> None:
    assert sorted(ACTIONS) == [
        "kubernetes.cluster_health",
        "kubernetes.cordon",
        "kubernetes.delete_pod",
        "kubernetes.drain",
        "kubernetes.drain_capacity",
        "kubernetes.expand_pvc",
        "kubernetes.longhorn_expansion_room",
        "kubernetes.longhorn_volumes",
        "kubernetes.node_status",
        "kubernetes.patch_prometheus_retention",
        "kubernetes.pod_logs",
        "kubernetes.pvc_status",
        "kubernetes.remove_taint",
        "kubernetes.restore_prometheus_retention",
        "kubernetes.rollout_restart",
        "kubernetes.taint_out_of_service",
        "kubernetes.uncordon",
        "kubernetes.wait",
    ]
    read_only = {n for n, a in ACTIONS.items() if a.read_only}
    assert read_only == {
        "kubernetes.cluster_health",
        "kubernetes.drain_capacity",
        "kubernetes.longhorn_expansion_room",
        "kubernetes.longhorn_volumes",
        "kubernetes.node_status",
        "kubernetes.pod_logs",
        "kubernetes.pvc_status",
        "kubernetes.wait",
    }
    assert "create pods/eviction" in ACTIONS["kubernetes.drain"].permissions
    assert not ACTIONS["kubernetes.delete_pod"].idempotent
    for a in ACTIONS.values():
        assert a.permissions and a.description, a.name


HOSTILE = ["node-194/../etc", "..", "node 194", "n" * 300, "Node-194", "node-194/eviction", "", "a_b"]
NAME_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("kubernetes.node_status", {}, "node"),
    ("kubernetes.cordon", {}, "node"),
    ("kubernetes.uncordon", {}, "node"),
    ("kubernetes.drain", {}, "node"),
    ("kubernetes.wait", {"until": "node_ready"}, "node"),
    ("kubernetes.delete_pod", {"namespace": "default"}, "name"),
    ("kubernetes.delete_pod", {"name": "web-1"}, "namespace"),
    ("kubernetes.rollout_restart", {"kind": "Deployment", "namespace": "default"}, "name"),
    ("kubernetes.pvc_status", {"namespace": "default"}, "name"),
    ("kubernetes.expand_pvc", {"namespace": "default", "max_size": "20Gi"}, "name"),
    ("kubernetes.expand_pvc", {"name": "data", "max_size": "20Gi"}, "namespace"),
    ("kubernetes.wait", {"until": "pod_ready", "namespace": "default"}, "name"),
]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_hostile_names_are_refused_before_any_request(kube_api: KubeApiEmulator, hostile: str) -> None:
    for name, base, fld in NAME_FIELDS:
        with pytest.raises(ValidationError) as err:
            ACTIONS[name].params.model_validate({**base, fld: hostile})
        assert fld in str(err.value), name
    assert kube_api.requests == []


def test_params_reject_bad_values() -> None:
    expand = ACTIONS["kubernetes.expand_pvc"].params
    with pytest.raises(ValidationError):
        expand.model_validate({"namespace": "default", "name": "data"})  # max_size is required
    with pytest.raises(ValidationError):
        expand.model_validate({"namespace": "default", "name": "data", "max_size": "lots"})
    with pytest.raises(ValidationError):
        expand.model_validate(
            {"namespace": "default", "name": "data", "max_size": "20Gi", "growth_percent": 500}
        )
    wait = ACTIONS["kubernetes.wait"].params
    with pytest.raises(ValidationError):
        wait.model_validate({"until": "pvc_resized", "node": "node-194"})
    with pytest.raises(ValidationError):
        ACTIONS["kubernetes.rollout_restart"].params.model_validate(
            {"kind": "CronJob", "namespace": "default", "name": "x"}
        )
    with pytest.raises(ValidationError):
        ACTIONS["kubernetes.cordon"].params.model_validate({"node": "node-194", "surprise": 1})


# -- read-only actions ----------------------------------------------------------------------------


async def test_node_status_reports_conditions_role_and_pods(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    kube_api.add_node(
        "node-194", ready=False, pressure=["DiskPressure"], taints=[{"key": "k", "effect": "NoSchedule"}]
    )
    kube_api.add_pod("web-1", node="node-194")
    kube_api.add_pod("fluent-bit-x", "logging", node="node-194", owner=("DaemonSet", "fluent-bit"))
    kube_api.add_pod("elsewhere", node="node-196")

    out = await run("kubernetes.node_status", kube_ctx(), node="node-194")

    assert out["ok"] is True and out["ready"] is False and out["ready_status"] == "False"
    assert out["pressure"] == ["DiskPressure"]
    assert out["control_plane"] is True and out["unschedulable"] is False
    assert out["taints"] == [{"key": "k", "effect": "NoSchedule"}]
    assert {p["name"]: p["daemonset"] for p in out["pods"]} == {"web-1": False, "fluent-bit-x": True}
    assert {c["type"] for c in out["conditions"]} >= {"Ready", "DiskPressure"}
    assert_declared(kube_api, "kubernetes.node_status")


async def test_node_status_of_a_missing_node_is_a_404(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    with pytest.raises(KubeNotFound) as err:
        await run("kubernetes.node_status", kube_ctx(), node="node-404")
    assert err.value.status == 404 and isinstance(err.value, PermanentError)
    assert 'nodes "node-404" not found' in str(err.value)


async def test_cluster_health_counts_quorum_and_unavailable(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    seed_cluster(kube_api)
    out = await run("kubernetes.cluster_health", kube_ctx())
    assert out["ok"] is True
    assert out["control_plane"] == {"total": 4, "available": 4, "ready": 4, "quorum": 3, "quorum_ok": True}

    kube_api.set_node_ready("node-196", None)
    kube_api.set_node_ready("node-197", False)
    out = await run("kubernetes.cluster_health", kube_ctx())
    assert out["ok"] is False
    assert out["not_ready"] == ["node-196", "node-197"]
    assert out["unavailable"] == {"node-196": "Ready=Unknown", "node-197": "NotReady"}
    assert out["control_plane"]["available"] == 2 and out["control_plane"]["quorum_ok"] is False
    assert_declared(kube_api, "kubernetes.cluster_health")


async def test_pvc_status_reports_sizes_class_conditions_and_users(
    kube_api: KubeApiEmulator,
    kube_ctx: MakeCtx,
) -> None:
    kube_api.add_storage_class("longhorn", allow_expansion=True)
    kube_api.add_pvc(
        "data-prom-0",
        "monitoring",
        request="60Gi",
        capacity="50Gi",
        conditions=[{"type": "FileSystemResizePending", "status": "True"}],
    )
    kube_api.add_pod(
        "prom-0", "monitoring", node="node-197", owner=("StatefulSet", "prom"), pvc="data-prom-0"
    )
    kube_api.add_pod("other", "monitoring", node="node-197")

    out = await run("kubernetes.pvc_status", kube_ctx(), namespace="monitoring", name="data-prom-0")

    assert out["capacity"] == "50Gi" and out["requested"] == "60Gi"
    assert out["capacity_bytes"] == 50 * 2**30
    assert out["storage_class"] == "longhorn" and out["allow_expansion"] is True
    assert out["resizing"] is True
    assert [c["type"] for c in out["resize_conditions"]] == ["FileSystemResizePending"]
    assert out["pods"] == [{"name": "prom-0", "node": "node-197"}]
    assert_declared(kube_api, "kubernetes.pvc_status")


# -- cordon / uncordon and the guards -------------------------------------------------------------


async def test_cordon_patches_and_remembers(
    kube_api: KubeApiEmulator,
    kube_ctx: MakeCtx,
    action_memory: DictActionMemory,
) -> None:
    seed_cluster(kube_api)
    out = await run("kubernetes.cordon", kube_ctx(run_id="run-7"), node="node-194", reason="NodeNotReady")

    assert out["changed"] is True
    assert kube_api.get("Node", "node-194")["spec"]["unschedulable"] is True
    assert mutations(kube_api) == [("PATCH", "/api/v1/nodes/node-194", CORDON)]
    assert kube_api.mutations[0].content_type == "application/strategic-merge-patch+json"
    record = await action_memory.get("kubernetes.cordons", "node-194")
    assert record is not None and record["run_id"] == "run-7" and record["reason"] == "NodeNotReady"
    assert_declared(kube_api, "kubernetes.cordon")

    again = await run("kubernetes.cordon", kube_ctx(), node="node-194")
    assert again["changed"] is False and again["cordoned_by_runbookd"] is True
    assert len(kube_api.mutations) == 1


async def test_cordon_refused_beyond_max_unavailable(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    seed_cluster(kube_api)
    kube_api.set_node_ready("node-197", False)

    with pytest.raises(GuardRefused) as err:
        await run("kubernetes.cordon", kube_ctx(), node="node-194")
    message = str(err.value)
    assert "2 nodes would be NotReady or unschedulable" in message
    assert "limits.max_unavailable_nodes=1" in message and "node-197 (NotReady)" in message
    assert kube_api.mutations == []

    # The NotReady node itself may be cordoned: it is already out, so nothing more is.
    out = await run("kubernetes.cordon", kube_ctx(), node="node-197")
    assert out["changed"] is True
    assert mutations(kube_api) == [("PATCH", "/api/v1/nodes/node-197", CORDON)]


async def test_a_persons_cordon_counts_as_unavailable(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    seed_cluster(kube_api, SEED_NODES[:3])
    kube_api.add_node("node-198", unschedulable=True)
    with pytest.raises(GuardRefused, match=r"node-198 \(unschedulable\)"):
        await run("kubernetes.drain", kube_ctx(), node="node-194")
    assert kube_api.mutations == []


async def test_cordon_refused_below_etcd_quorum(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    seed_cluster(kube_api)
    kube_api.add_node("worker-1", control_plane=False)
    kube_api.set_node_ready("node-196", None)
    ctx = kube_ctx(max_unavailable_nodes=2)

    with pytest.raises(GuardRefused) as err:
        await run("kubernetes.cordon", ctx, node="node-194")
    message = str(err.value)
    assert "only 2 of 4 control-plane nodes would stay Ready and schedulable" in message
    assert "etcd quorum needs 3" in message and "node-196 (Ready=Unknown)" in message
    with pytest.raises(GuardRefused, match="etcd quorum needs 3"):
        await run("kubernetes.drain", ctx, node="node-198")
    assert kube_api.mutations == []

    # A worker is outside etcd: taking it out is within max_unavailable_nodes=2.
    out = await run("kubernetes.cordon", ctx, node="worker-1")
    assert out["changed"] is True
    assert mutations(kube_api) == [("PATCH", "/api/v1/nodes/worker-1", CORDON)]


async def _kubectl(
    kube_api: KubeApiEmulator, node: str, unschedulable: bool, agent: str = "kubectl/v1.30.2 (linux/amd64)"
) -> None:
    """A person's ``kubectl cordon`` / ``uncordon``: a strategic merge patch through the API, as kubectl
    sends it (its own field manager, from its User-Agent)."""
    body = {"spec": {"unschedulable": True if unschedulable else None}}
    async with (
        aiohttp.ClientSession() as http,
        http.patch(
            f"{kube_api.url}/api/v1/nodes/{node}",
            json=body,
            headers={"Content-Type": STRATEGIC_MERGE_PATCH, "User-Agent": agent},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()


OLD_RUNBOOKD = "OpenAPI-Generator/33.3.0+snapshot/python"
"""The User-Agent of a runbookd that did not yet name its field manager (kubernetes-asyncio's own)."""


async def test_a_cordon_made_before_runbookd_named_itself_is_still_its_own_to_undo(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx, action_memory: DictActionMemory
) -> None:
    """A review of the managedFields change: a run in progress across the upgrade would have found its
    own cordon owned by 'OpenAPI-Generator', forgotten its record and refused its uncordon for good."""
    seed_cluster(kube_api, SEED_NODES[:3])
    await _kubectl(kube_api, "node-194", True, agent=OLD_RUNBOOKD)  # the older runbookd's cordon ...
    old_record = {
        "run_id": "run-A",
        "step_id": "cordon",
        "runbook": "node-degradation",
        "at": "x",
        "reason": "r",
    }
    await action_memory.put("kubernetes.cordons", "node-194", old_record)  # ... and its record
    again = await run("kubernetes.cordon", kube_ctx(run_id="run-A"), node="node-194")
    assert again["cordoned_by_runbookd"] is True
    out = await run("kubernetes.uncordon", kube_ctx(run_id="run-A"), node="node-194")
    assert out["changed"] is True and out["forced"] is False
    # A record this runbookd wrote counts only for its own name, not for another OpenAPI-Generator client.
    await run("kubernetes.cordon", kube_ctx(run_id="run-B"), node="node-194")
    await _kubectl(kube_api, "node-194", False)
    await _kubectl(kube_api, "node-194", True, agent=OLD_RUNBOOKD)
    assert (await run("kubernetes.cordon", kube_ctx(run_id="run-C"), node="node-194"))[
        "cordoned_by_runbookd"
    ] is False


async def test_a_node_without_managed_fields_keeps_the_record_but_not_the_benefit_of_the_doubt(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx, action_memory: DictActionMemory
) -> None:
    """Nothing on the node says who cordoned it (no managedFields): not taken for runbookd's, and the
    record is not thrown away on that account either."""
    seed_cluster(kube_api, SEED_NODES[:3])
    kube_api.add_node("worker-1", control_plane=False, unschedulable=True)
    record = {"run_id": "run-A", "step_id": "cordon", "field_manager": "runbookd", "reason": "r"}
    await action_memory.put("kubernetes.cordons", "worker-1", record)
    with pytest.raises(GuardRefused, match="runbookd did not cordon it"):
        await run("kubernetes.uncordon", kube_ctx(run_id="run-B"), node="worker-1")
    assert await action_memory.get("kubernetes.cordons", "worker-1") == record


async def test_a_persons_cordon_after_runbookds_is_the_persons(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx, action_memory: DictActionMemory
) -> None:
    """Adversarial review: runbookd's record of a cordon outlived a person's ``kubectl uncordon``; the same
    person's later ``kubectl cordon`` (maintenance) was then taken for runbookd's, and node-degradation
    proposed draining, tainting and uncordoning that node."""
    seed_cluster(kube_api, SEED_NODES[:3])
    first = await run("kubernetes.cordon", kube_ctx(run_id="run-A"), node="node-194")
    assert first["changed"] is True
    owners = kube_api.get("Node", "node-194")["metadata"]["managedFields"]
    assert [(m["manager"], m["fieldsV1"]) for m in owners] == [
        ("runbookd", {"f:spec": {"f:unschedulable": {}}})
    ]
    await _kubectl(kube_api, "node-194", False)  # the person fixes the node, uncordons it
    await _kubectl(kube_api, "node-194", True)  # and later cordons it for maintenance
    assert await action_memory.get("kubernetes.cordons", "node-194") is not None  # runbookd saw none of it

    status = await run("kubernetes.node_status", kube_ctx(run_id="run-B"), node="node-194")
    assert status["cordoned_by_runbookd"] is None
    again = await run("kubernetes.cordon", kube_ctx(run_id="run-B"), node="node-194")
    assert again["changed"] is False and again["cordoned_by_runbookd"] is False
    assert "someone else" in again["message"]
    assert await action_memory.get("kubernetes.cordons", "node-194") is None  # the stale record: gone
    before = len(kube_api.mutations)
    with pytest.raises(GuardRefused, match="runbookd did not cordon it"):
        await run("kubernetes.uncordon", kube_ctx(run_id="run-B"), node="node-194")
    assert len(kube_api.mutations) == before
    assert kube_api.get("Node", "node-194")["spec"]["unschedulable"] is True


async def test_runbookds_cordon_stays_its_own_while_nobody_changes_it(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    """The other side: other changes to the node (a label, a person cordoning the cordoned node again)
    leave runbookd's cordon runbookd's to undo."""
    seed_cluster(kube_api, SEED_NODES[:3])
    await run("kubernetes.cordon", kube_ctx(run_id="run-A"), node="node-194")
    await _kubectl(kube_api, "node-194", True)  # no change: the field stays runbookd's
    async with (
        aiohttp.ClientSession() as http,
        http.patch(
            f"{kube_api.url}/api/v1/nodes/node-194?fieldManager=kubectl-label",
            json={"metadata": {"labels": {"maintenance": "soon"}}},
            headers={"Content-Type": STRATEGIC_MERGE_PATCH},
        ) as resp,
    ):
        assert resp.status == 200
    again = await run("kubernetes.cordon", kube_ctx(run_id="run-B"), node="node-194")
    assert again["cordoned_by_runbookd"] is True
    out = await run("kubernetes.uncordon", kube_ctx(run_id="run-B"), node="node-194")
    assert out["changed"] is True and out["forced"] is False


async def test_uncordon_undoes_only_runbookds_own_cordon_across_a_restart(
    kube_api: KubeApiEmulator,
    kube_ctx: MakeCtx,
    action_memory: DictActionMemory,
) -> None:
    seed_cluster(kube_api, SEED_NODES[:3])
    kube_api.add_node("worker-1", control_plane=False, unschedulable=True)  # cordoned by a person
    mine = await run("kubernetes.cordon", kube_ctx(run_id="run-1"), node="worker-1")
    assert mine["changed"] is False and mine["cordoned_by_runbookd"] is False
    assert await action_memory.get("kubernetes.cordons", "worker-1") is None  # not ours: not remembered
    await run("kubernetes.cordon", kube_ctx(run_id="run-1", max_unavailable_nodes=2), node="node-194")
    before = len(kube_api.mutations)

    restarted = action_memory.restart()  # a new daemon process reads the records back
    ctx = kube_ctx(run_id="run-2", memory=restarted)
    with pytest.raises(GuardRefused, match="runbookd did not cordon it"):
        await run("kubernetes.uncordon", ctx, node="worker-1")
    assert len(kube_api.mutations) == before

    out = await run("kubernetes.uncordon", ctx, node="node-194")
    assert out["changed"] is True and out["forced"] is False
    assert "unschedulable" not in kube_api.get("Node", "node-194")["spec"]
    assert kube_api.mutations[-1].body == {"spec": {"unschedulable": None}}
    assert await restarted.get("kubernetes.cordons", "node-194") is None

    forced = await run("kubernetes.uncordon", ctx, node="worker-1", force=True)
    assert forced["forced"] is True
    assert "unschedulable" not in kube_api.get("Node", "worker-1")["spec"]
    assert_declared(kube_api, "kubernetes.cordon", "kubernetes.uncordon")


async def test_uncordon_waits_for_ready_unless_told(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    seed_cluster(kube_api)
    kube_api.set_node_ready("node-194", False)
    await run("kubernetes.cordon", kube_ctx(), node="node-194")
    before = len(kube_api.mutations)
    with pytest.raises(GuardRefused, match="it is not Ready"):
        await run("kubernetes.uncordon", kube_ctx(), node="node-194")
    assert len(kube_api.mutations) == before
    out = await run("kubernetes.uncordon", kube_ctx(), node="node-194", require_ready=False)
    assert out["changed"] is True


# -- drain ---------------------------------------------------------------------------------------


def seed_node_with_pods(kube: KubeApiEmulator) -> None:
    seed_cluster(kube)
    kube.add_workload("DaemonSet", "fluent-bit", "logging")
    kube.add_pod("web-1", node="node-194", owner=("ReplicaSet", "web-7d4b9"))
    kube.add_pod("prom-0", "monitoring", node="node-194", owner=("StatefulSet", "prom"))
    kube.add_pod("fluent-bit-abcde", "logging", node="node-194", owner=("DaemonSet", "fluent-bit"))
    kube.add_pod("kube-apiserver-node-194", "kube-system", node="node-194", mirror=True)
    kube.add_pod("backup-29", node="node-194", owner=None, phase="Succeeded")
    kube.add_pod("web-2", node="node-196", owner=("ReplicaSet", "web-7d4b9"))


def eviction_path(ns: str, name: str) -> str:
    return f"/api/v1/namespaces/{ns}/pods/{name}/eviction"


async def test_drain_skips_daemonset_and_mirror_pods_and_evicts_the_rest(
    kube_api: KubeApiEmulator,
    kube_ctx: MakeCtx,
    action_memory: DictActionMemory,
) -> None:
    seed_node_with_pods(kube_api)

    out = await run("kubernetes.drain", kube_ctx(), node="node-194", poll_interval="10ms")

    assert out["ok"] is True, out["message"]
    outcomes = {p["name"]: (p["outcome"], p["reason"]) for p in out["pods"]}
    assert outcomes == {
        "web-1": ("evicted", "evicted and gone"),
        "prom-0": ("evicted", "evicted and gone"),
        "backup-29": ("evicted", "evicted and gone"),
        "fluent-bit-abcde": ("skipped", "DaemonSet-managed"),
        "kube-apiserver-node-194": ("skipped", "mirror pod of a static pod"),
    }
    assert out["counts"] == {"evicted": 3, "skipped": 2}
    evictions = sorted(p for m, p, _ in mutations(kube_api) if m == "POST")
    assert evictions == sorted(
        [
            eviction_path("default", "web-1"),
            eviction_path("monitoring", "prom-0"),
            eviction_path("default", "backup-29"),
        ]
    )
    assert mutations(kube_api)[0] == ("PATCH", "/api/v1/nodes/node-194", CORDON)
    assert len(kube_api.mutations) == 4
    assert kube_api.exists("Pod", "fluent-bit-abcde", "logging")
    assert kube_api.exists("Pod", "kube-apiserver-node-194", "kube-system")
    assert kube_api.exists("Pod", "web-2", "default")
    assert not kube_api.exists("Pod", "web-1", "default")
    assert await action_memory.get("kubernetes.cordons", "node-194") is not None
    assert await action_memory.get("kubernetes.locks", "drain") is None  # released
    assert_declared(kube_api, "kubernetes.drain")


async def test_drain_refuses_emptydir_and_unmanaged_pods_without_opt_in(
    kube_api: KubeApiEmulator,
    kube_ctx: MakeCtx,
) -> None:
    seed_cluster(kube_api)
    kube_api.add_pod("cache-0", node="node-194", owner=("StatefulSet", "cache"), empty_dir=True)
    kube_api.add_pod("debug", node="node-194", owner=None)
    kube_api.add_pod("orphan", node="node-194", owner=("DaemonSet", "gone"))

    with pytest.raises(GuardRefused) as err:
        await run("kubernetes.drain", kube_ctx(), node="node-194")
    message = str(err.value)
    assert "3 pod(s) need an explicit opt-in" in message
    assert "default/cache-0 uses emptyDir" in message and "delete_emptydir_data: true" in message
    assert "default/debug has no controller" in message and "force_unmanaged: true" in message
    assert "default/orphan its DaemonSet no longer exists" in message
    assert kube_api.mutations == []  # not even the cordon
    assert "unschedulable" not in kube_api.get("Node", "node-194")["spec"]

    out = await run(
        "kubernetes.drain",
        kube_ctx(),
        node="node-194",
        delete_emptydir_data=True,
        force_unmanaged=True,
        poll_interval="10ms",
    )
    assert out["ok"] is True
    assert sorted(p["name"] for p in out["pods"] if p["outcome"] == "evicted") == [
        "cache-0",
        "debug",
        "orphan",
    ]


async def test_drain_retries_while_a_budget_blocks_then_succeeds(
    kube_api: KubeApiEmulator,
    kube_ctx: MakeCtx,
) -> None:
    seed_cluster(kube_api)
    kube_api.add_pod("web-1", node="node-194", pdb_blocks=2, linger_reads=2)

    out = await run("kubernetes.drain", kube_ctx(), node="node-194", poll_interval="10ms", timeout="5s")

    assert out["ok"] is True
    assert out["pods"] == [
        {
            "namespace": "default",
            "name": "web-1",
            "outcome": "evicted",
            "reason": "evicted and gone",
            "attempts": 3,
        }
    ]
    posts = [r for r in kube_api.requests if r.method == "POST"]
    assert len(posts) == 3
    reads = [
        r
        for r in kube_api.requests
        if r.path == "/api/v1/namespaces/default/pods/web-1" and r.method == "GET"
    ]
    assert len(reads) == 3  # terminating twice, then gone


async def test_drain_gives_up_on_a_blocking_budget_at_its_timeout(
    kube_api: KubeApiEmulator,
    kube_ctx: MakeCtx,
    action_memory: DictActionMemory,
) -> None:
    seed_cluster(kube_api)
    kube_api.add_pod("etcd-backup", node="node-194", pdb_blocks=None, pdb_name="etcd-backup-pdb")
    kube_api.add_pod("web-1", node="node-194")
    loop = asyncio.get_running_loop()
    started = loop.time()

    out = await run("kubernetes.drain", kube_ctx(), node="node-194", poll_interval="50ms", timeout="300ms")

    took = loop.time() - started
    assert 0.3 <= took < 3
    assert out["ok"] is False
    by_name = {p["name"]: p for p in out["pods"]}
    assert by_name["web-1"]["outcome"] == "evicted"
    blocked = by_name["etcd-backup"]
    assert blocked["outcome"] == "blocked" and blocked["attempts"] >= 3
    assert "etcd-backup-pdb" in blocked["reason"]
    assert (
        "drain of node-194 incomplete" in out["message"] and "default/etcd-backup blocked" in out["message"]
    )
    assert kube_api.exists("Pod", "etcd-backup", "default")
    assert await action_memory.get("kubernetes.locks", "drain") is None


async def test_never_two_drains_at_once(
    kube_api: KubeApiEmulator,
    kube_ctx: MakeCtx,
    action_memory: DictActionMemory,
) -> None:
    seed_cluster(kube_api)
    kube_api.add_pod("web-1", node="node-194", pdb_blocks=None)
    kube_api.add_pod("web-2", node="node-196")
    ctx_a = kube_ctx(run_id="run-a", max_unavailable_nodes=2)
    first = asyncio.create_task(
        run("kubernetes.drain", ctx_a, node="node-194", poll_interval="20ms", timeout="10s"), name="drain-a"
    )
    try:
        while await action_memory.get("kubernetes.locks", "drain") is None:
            await asyncio.sleep(0.01)
        with pytest.raises(GuardRefused) as err:
            await run("kubernetes.drain", kube_ctx(run_id="run-b", max_unavailable_nodes=2), node="node-196")
        assert "node node-194 is being drained by run run-a" in str(err.value)
        assert "one node at a time" in str(err.value)
        assert not any(r.path.startswith("/api/v1/nodes/node-196") for r in kube_api.mutations)
        assert kube_api.exists("Pod", "web-2", "default")
    finally:
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
    assert await action_memory.get("kubernetes.locks", "drain") is None  # released on cancel too


async def test_a_stale_drain_lock_is_taken_over(
    kube_api: KubeApiEmulator,
    kube_ctx: MakeCtx,
    action_memory: DictActionMemory,
) -> None:
    seed_cluster(kube_api)
    kube_api.add_pod("web-1", node="node-194")
    clock = FrozenClock(1_800_000_000.0)
    lock = {
        "node": "node-196",
        "run_id": "run-dead",
        "step_id": "drain",
        "since": "x",
        "expires_at": clock.now() + 60,
    }
    await action_memory.put("kubernetes.locks", "drain", lock)

    with pytest.raises(GuardRefused, match="run-dead"):
        await run("kubernetes.drain", kube_ctx(clock=clock), node="node-194", poll_interval="10ms")
    assert kube_api.mutations == []

    # The same run re-running its own interrupted drain step takes its lock back at once.
    out = await run(
        "kubernetes.drain", kube_ctx(run_id="run-dead", clock=clock), node="node-194", poll_interval="10ms"
    )
    assert out["ok"] is True

    await action_memory.put("kubernetes.locks", "drain", lock)
    clock.advance(61)  # past the dead run's deadline: stale
    kube_api.add_pod("web-3", node="node-194")
    out = await run(
        "kubernetes.drain", kube_ctx(run_id="run-new", clock=clock), node="node-194", poll_interval="10ms"
    )
    assert out["ok"] is True and out["counts"] == {"evicted": 1}
    assert await action_memory.get("kubernetes.locks", "drain") is None


# -- dry-run ---------------------------------------------------------------------------------------


async def test_dry_run_drain_records_exact_requests_and_sends_nothing(
    kube_api: KubeApiEmulator,
    kube_ctx: MakeCtx,
    action_memory: DictActionMemory,
) -> None:
    seed_node_with_pods(kube_api)

    dry = await run("kubernetes.drain", kube_ctx(dry_run=True), node="node-194", grace_period_seconds=30)

    assert dry["dry_run"] is True and dry["ok"] is True
    assert kube_api.mutations == []
    assert all(r.method == "GET" for r in kube_api.requests)
    assert "unschedulable" not in kube_api.get("Node", "node-194")["spec"]
    assert action_memory.records == {}
    described = [(r["method"], r["path"], r["content_type"], r["body"]) for r in dry["requests"]]
    assert described[0] == (
        "PATCH",
        "/api/v1/nodes/node-194",
        "application/strategic-merge-patch+json",
        CORDON,
    )
    assert described[1:] == [(r[0], r[1], r[2], r[3]) for r in described[1:] if r[0] == "POST"]
    assert sorted(r[1] for r in described[1:]) == sorted(
        eviction_path(ns, n)
        for ns, n in [("default", "web-1"), ("monitoring", "prom-0"), ("default", "backup-29")]
    )
    assert (
        "POST",
        eviction_path("default", "web-1"),
        "application/json",
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "web-1", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 30},
        },
    ) in described
    # the cordon names runbookd its field manager (guards.runbookd_set_unschedulable reads it back)
    manager = {"PATCH": "?fieldManager=runbookd"}
    assert all(r["url"] == kube_api.url + r["path"] + manager.get(r["method"], "") for r in dry["requests"])
    assert {s["pod"] for s in dry["skipped"]} == {
        "logging/fluent-bit-abcde",
        "kube-system/kube-apiserver-node-194",
    }

    # The real run sends exactly what the dry run showed.
    await run("kubernetes.drain", kube_ctx(), node="node-194", grace_period_seconds=30, poll_interval="10ms")
    sent = [(r.method, r.path, r.content_type, r.body) for r in kube_api.mutations]
    assert sorted(sent, key=repr) == sorted(described, key=repr)


async def test_dry_run_of_every_mutating_action_sends_nothing(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    seed_cluster(kube_api)
    kube_api.add_node("node-199", unschedulable=True)
    kube_api.add_pod("web-1", node="node-196")
    kube_api.add_workload("StatefulSet", "prom", "monitoring")
    kube_api.add_storage_class("longhorn", allow_expansion=True)
    kube_api.add_pvc("data", request="10Gi")
    ctx = kube_ctx(dry_run=True, max_unavailable_nodes=2)

    cordon = await run("kubernetes.cordon", ctx, node="node-194")
    uncordon = await run("kubernetes.uncordon", ctx, node="node-199", force=True)
    delete = await run("kubernetes.delete_pod", ctx, namespace="default", name="web-1")
    restart = await run(
        "kubernetes.rollout_restart", ctx, kind="StatefulSet", namespace="monitoring", name="prom"
    )
    expand = await run("kubernetes.expand_pvc", ctx, namespace="default", name="data", max_size="100Gi")

    assert kube_api.mutations == []
    assert cordon["requests"][0]["body"] == CORDON
    assert uncordon["requests"][0]["body"] == {"spec": {"unschedulable": None}}
    uid = kube_api.get("Pod", "web-1", "default")["metadata"]["uid"]
    assert delete["requests"] == [
        {
            "method": "DELETE",
            "url": f"{kube_api.url}/api/v1/namespaces/default/pods/web-1",
            "path": "/api/v1/namespaces/default/pods/web-1",
            "content_type": "application/json",
            "body": {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}},
        }
    ]
    assert restart["requests"][0]["path"] == "/apis/apps/v1/namespaces/monitoring/statefulsets/prom"
    assert restart["requests"][0]["body"] == {
        "spec": {
            "template": {
                "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": iso(1_800_000_000.0)}}
            }
        }
    }
    rv = kube_api.get("PersistentVolumeClaim", "data", "default")["metadata"]["resourceVersion"]
    assert expand["requests"][0]["body"] == {
        "metadata": {"resourceVersion": rv},
        "spec": {"resources": {"requests": {"storage": "12Gi"}}},
    }
    assert expand["from"] == "10Gi" and expand["to"] == "12Gi"


# -- pods and workloads ----------------------------------------------------------------------------


async def test_delete_pod_only_for_controller_pods(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    kube_api.add_pod("thanos-sidecar-0", "monitoring", owner=("StatefulSet", "prometheus"))
    kube_api.add_pod("debug", owner=None)
    kube_api.add_pod("etcd-node-194", "kube-system", node="node-194", mirror=True)

    with pytest.raises(GuardRefused, match="no controller, so nothing would recreate it"):
        await run("kubernetes.delete_pod", kube_ctx(), namespace="default", name="debug")
    with pytest.raises(GuardRefused, match="mirror of a static pod"):
        await run("kubernetes.delete_pod", kube_ctx(), namespace="kube-system", name="etcd-node-194")
    assert kube_api.mutations == []

    uid = kube_api.get("Pod", "thanos-sidecar-0", "monitoring")["metadata"]["uid"]
    out = await run("kubernetes.delete_pod", kube_ctx(), namespace="monitoring", name="thanos-sidecar-0")
    assert out["owner"] == {"kind": "StatefulSet", "name": "prometheus"} and out["uid"] == uid
    assert not kube_api.exists("Pod", "thanos-sidecar-0", "monitoring")
    assert kube_api.mutations[0].body["preconditions"] == {"uid": uid}
    assert_declared(kube_api, "kubernetes.delete_pod")

    with pytest.raises(KubeNotFound):
        await run("kubernetes.delete_pod", kube_ctx(), namespace="monitoring", name="thanos-sidecar-0")


async def test_rollout_restart_sets_restarted_at_from_the_clock(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    kube_api.add_workload("Deployment", "thanos-query", "monitoring")
    clock = FrozenClock(1_800_000_123.0)

    out = await run(
        "kubernetes.rollout_restart",
        kube_ctx(clock=clock),
        kind="Deployment",
        namespace="monitoring",
        name="thanos-query",
    )

    assert out["restarted_at"] == "2027-01-15T08:02:03Z" == iso(clock.now())
    stored = kube_api.get("Deployment", "thanos-query", "monitoring")
    assert stored["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": "2027-01-15T08:02:03Z"
    }
    assert stored["spec"]["template"]["metadata"]["labels"] == {"app": "thanos-query"}  # merged, not replaced
    assert out["generation"] == 2 and out["previous_generation"] == 1
    assert_declared(kube_api, "kubernetes.rollout_restart")

    with pytest.raises(KubeNotFound):
        await run(
            "kubernetes.rollout_restart", kube_ctx(), kind="DaemonSet", namespace="monitoring", name="nope"
        )


# -- PVC expansion ---------------------------------------------------------------------------------


async def test_expand_pvc_grows_by_percent_up_to_the_cap_and_once_per_step(
    kube_api: KubeApiEmulator,
    kube_ctx: MakeCtx,
) -> None:
    kube_api.add_storage_class("longhorn", allow_expansion=True)
    kube_api.add_pvc("data", "monitoring", request="10Gi")

    out = await run("kubernetes.expand_pvc", kube_ctx(), namespace="monitoring", name="data", max_size="11Gi")

    assert (out["from"], out["to"], out["capped"]) == ("10Gi", "11Gi", True)
    pvc = kube_api.get("PersistentVolumeClaim", "data", "monitoring")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "11Gi"
    assert pvc["status"]["capacity"]["storage"] == "11Gi"
    assert len(kube_api.mutations) == 1
    assert_declared(kube_api, "kubernetes.expand_pvc")

    again = await run(
        "kubernetes.expand_pvc", kube_ctx(), namespace="monitoring", name="data", max_size="11Gi"
    )
    assert again["changed"] is False  # the same step, re-run: not grown twice
    assert len(kube_api.mutations) == 1

    grown = await run(
        "kubernetes.expand_pvc",
        kube_ctx(step_id="later"),
        namespace="monitoring",
        name="data",
        max_size="1Ti",
        growth_percent=50,
    )
    assert (grown["from"], grown["to"], grown["capped"]) == ("11Gi", "17Gi", False)  # 16.5Gi rounded up


async def test_expand_pvc_refusals(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    kube_api.add_storage_class("longhorn", allow_expansion=True)
    kube_api.add_storage_class("local-path", allow_expansion=False)
    kube_api.add_pvc("fixed", storage_class="local-path")
    kube_api.add_pvc("classless", storage_class=None)
    kube_api.add_pvc("data", request="10Gi")
    kube_api.add_pvc("busy", request="12Gi", capacity="10Gi", resize_after_reads=None)
    ctx = kube_ctx()

    with pytest.raises(GuardRefused, match="StorageClass local-path, which does not allow volume expansion"):
        await run("kubernetes.expand_pvc", ctx, namespace="default", name="fixed", max_size="20Gi")
    with pytest.raises(GuardRefused, match="has no StorageClass"):
        await run("kubernetes.expand_pvc", ctx, namespace="default", name="classless", max_size="20Gi")
    with pytest.raises(
        GuardRefused, match="max_size 5Gi is below its current size 10Gi, and a volume is never shrunk"
    ):
        await run("kubernetes.expand_pvc", ctx, namespace="default", name="data", max_size="5Gi")
    with pytest.raises(GuardRefused, match="already at max_size 10Gi"):
        await run("kubernetes.expand_pvc", ctx, namespace="default", name="data", max_size="10Gi")
    with pytest.raises(GuardRefused, match="a resize is already in progress"):
        await run("kubernetes.expand_pvc", ctx, namespace="default", name="busy", max_size="20Gi")
    assert kube_api.mutations == []


async def test_expand_pvc_conflict_when_changed_meanwhile(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    kube_api.add_storage_class("longhorn", allow_expansion=True)
    kube_api.add_pvc("data", request="10Gi")
    path = "/api/v1/namespaces/default/persistentvolumeclaims/data"
    kube_api.fail("PATCH", path, status=409)
    with pytest.raises(KubeConflict) as err:
        await run("kubernetes.expand_pvc", kube_ctx(), namespace="default", name="data", max_size="20Gi")
    assert err.value.status == 409
    assert (
        kube_api.get("PersistentVolumeClaim", "data", "default")["spec"]["resources"]["requests"]["storage"]
        == "10Gi"
    )


async def test_the_configured_cap_wins_over_a_larger_max_size(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    kube_api.add_storage_class("longhorn", allow_expansion=True)
    kube_api.add_pvc("data", request="100Gi")
    client = await from_config(KubernetesConfig(host=kube_api.url, max_pvc_size="110Gi", retries=0))
    try:
        ctx = kube_ctx(client=client)
        out = await run("kubernetes.expand_pvc", ctx, namespace="default", name="data", max_size="1Ti")
        assert (out["to"], out["capped"]) == ("110Gi", True)
        with pytest.raises(
            GuardRefused, match=r"already at kubernetes\.max_pvc_size 110Gi \(from the config\)"
        ):
            await run(
                "kubernetes.expand_pvc",
                kube_ctx(client=client, step_id="again"),
                namespace="default",
                name="data",
                max_size="1Ti",
            )
    finally:
        await client.close()
    assert len(kube_api.mutations) == 1


# -- waits -----------------------------------------------------------------------------------------


async def test_wait_for_node_ready(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    kube_api.add_node("node-194", ready=False)
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, kube_api.set_node_ready, "node-194", True)

    out = await run(
        "kubernetes.wait", kube_ctx(), until="node_ready", node="node-194", interval="20ms", timeout="5s"
    )

    assert out["ok"] is True and out["attempts"] > 1 and out["seen"]["ready"] == "True"
    assert_declared(kube_api, "kubernetes.wait")


async def test_wait_times_out(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    kube_api.add_node("node-194", ready=None)
    out = await run(
        "kubernetes.wait", kube_ctx(), until="node_ready", node="node-194", interval="20ms", timeout="100ms"
    )
    assert out["ok"] is False and out["attempts"] >= 3
    assert "not node_ready after 0.1s" in out["message"] and out["seen"]["ready"] == "Unknown"


async def test_wait_for_pod_ready_through_a_restart(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, lambda: kube_api.add_pod("prom-0", "monitoring", ready=False))
    loop.call_later(0.15, kube_api.set_pod_ready, "monitoring", "prom-0", True)

    out = await run(
        "kubernetes.wait",
        kube_ctx(),
        until="pod_ready",
        namespace="monitoring",
        name="prom-0",
        interval="20ms",
        timeout="5s",
    )
    assert out["ok"] is True and out["seen"] == {"phase": "Running", "ready": True}


async def test_wait_for_pvc_resize(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    kube_api.add_storage_class("longhorn", allow_expansion=True)
    kube_api.add_pvc("data", request="10Gi", resize_after_reads=3)
    await run("kubernetes.expand_pvc", kube_ctx(), namespace="default", name="data", max_size="20Gi")

    out = await run(
        "kubernetes.wait",
        kube_ctx(),
        until="pvc_resized",
        namespace="default",
        name="data",
        interval="10ms",
        timeout="5s",
    )
    assert out["ok"] is True and out["attempts"] == 4
    assert out["seen"]["capacity"] == "12Gi" and out["seen"]["resizing"] is False


# -- the client's error handling -------------------------------------------------------------------


async def test_client_retries_transient_errors_then_gives_up(
    kube_api: KubeApiEmulator,
    kube_client: KubernetesClient,
) -> None:
    kube_api.add_node("node-194")
    kube_api.fail("GET", "/api/v1/nodes/node-194", status=503, times=2)
    node = await kube_client.get_node("node-194")
    assert node["metadata"]["name"] == "node-194"
    assert len(kube_api.requests) == 3

    kube_api.fail("GET", "/api/v1/nodes/node-194", status=500, times=5)
    with pytest.raises(TemporaryError) as err:
        await kube_client.get_node("node-194")
    assert err.value.status == 500 and not isinstance(err.value, PermanentError)
    assert type(err.value.__cause__).__name__ == "ApiException"
    assert len(kube_api.requests) == 6  # 3 attempts, bounded


async def test_client_does_not_retry_a_blocked_eviction_or_permanent_errors(
    kube_api: KubeApiEmulator,
    kube_client: KubernetesClient,
) -> None:
    kube_api.add_pod("web-1", pdb_blocks=None, pdb_name="web-pdb")
    with pytest.raises(EvictionBlocked) as err:
        await kube_client.send(KubernetesClient.evict_pod("default", "web-1"))
    assert err.value.status == 429 and "web-pdb" in str(err.value)
    assert len(kube_api.requests) == 1

    kube_api.fail("GET", "/api/v1/nodes", status=403)
    with pytest.raises(KubeForbidden):
        await kube_client.list_nodes()
    with pytest.raises(KubeNotFound):
        await kube_client.get_pvc("default", "nope")
    assert len(kube_api.requests) == 3


async def test_client_times_out_and_reports_unreachable(kube_api: KubeApiEmulator) -> None:
    kube_api.add_node("node-194")
    kube_api.stall("GET", "/api/v1/nodes/node-194", seconds=0.6, times=1)
    client = await connect(host=kube_api.url, timeout=0.2, retry=RetryPolicy(attempts=2, backoff=0.01))
    try:
        node = await client.get_node("node-194")  # the first attempt times out, the retry answers
        assert node["metadata"]["name"] == "node-194"
        kube_api.stall("GET", "/api/v1/nodes/node-194", seconds=0.6, times=2)
        with pytest.raises(TemporaryError, match=r"did not answer GET /api/v1/nodes/node-194 within 0\.2s"):
            await client.get_node("node-194")
    finally:
        await client.close()

    await kube_api.stop()
    client = await connect(host=kube_api.url, timeout=1, retry=RetryPolicy(attempts=2, backoff=0.01))
    try:
        with pytest.raises(TemporaryError, match="unreachable"):
            await client.list_nodes()
    finally:
        await client.close()


async def test_client_from_a_kubeconfig_sends_its_token(kube_api: KubeApiEmulator, tmp_path: Path) -> None:
    kube_api.add_node("node-194")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": kube_api.url}}],
                "users": [{"name": "runbookd", "user": {"token": "sa-token-123"}}],
                "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "runbookd"}}],
                "current-context": "emu",
            }
        )
    )
    client = await from_config(KubernetesConfig(kubeconfig=kubeconfig, timeout=2))
    try:
        assert [n["metadata"]["name"] for n in await client.list_nodes()] == ["node-194"]
    finally:
        await client.close()
    assert kube_api.requests[-1].authorization == "Bearer sa-token-123"
    assert kubeconfig.read_text().count("sa-token-123") == 1


async def test_in_cluster_config_outside_a_pod_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(
        PermanentError, match=r"not running in a Kubernetes pod and no kubernetes\.kubeconfig"
    ):
        await from_config(KubernetesConfig())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10Gi", 10 * 2**30),
        ("500M", 500 * 10**6),
        ("1.5Gi", 3 * 2**29),
        ("1e3", 1000),
        ("0.5Ki", 512),
        ("7", 7),
    ],
)
def test_quantities_parse_as_the_api_server_does(text: str, expected: int) -> None:
    assert parse_quantity(text) == expected == emulator_quantity(text)


@pytest.mark.parametrize("text", ["10GB", "-1Gi", "1.2.3", "", "Gi", "10 Gi", "1e999999"])
def test_bad_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_expansion_rounds_up_to_whole_gi_and_stops_at_the_cap() -> None:
    gi = 2**30
    assert format_bytes(expansion_target(10 * gi, 20, 2**40)) == "12Gi"
    assert format_bytes(expansion_target(50 * gi, 15, 2**40)) == "58Gi"  # 57.5Gi rounded up
    assert format_bytes(expansion_target(500 * 2**20, 20, 2**40)) == "600Mi"  # under 1Gi: exact
    assert format_bytes(expansion_target(10 * gi, 50, 13 * gi)) == "13Gi"
    assert format_bytes(1536 * 2**20) == "1536Mi" and format_bytes(1000) == "1000"
