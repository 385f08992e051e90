"""The node-degradation and pvc-disk-pressure guards: room for a drained node's pods, the out-of-service
taint behind a stale Lease (and its inverse), Longhorn volumes on the node, Longhorn's expansion check.

Actions run against the Kubernetes API emulator with the real kubernetes-asyncio client; the runbook
runs in an in-process daemon up to the taint (the engine runs undos once the undo engine is merged).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.inproc import alert_payload, base_config, serve
from support.kube_api import STRATEGIC_MERGE_PATCH, KubeApiEmulator
from support.kube_fixtures import seed_cluster
from support.runs import states, steps_of, walk
from support.safety_seed import (
    GI,
    lh_instance_manager,
    lh_node,
    lh_replica,
    lh_settings,
    lh_volume,
    node_lease,
    requests_pod,
)

from daemon.actions import kubernetes
from daemon.actions.base import ActionContext, Output
from daemon.actions.kubernetes.capacity import cpu_millis, pod_requests
from daemon.actions.kubernetes.longhorn_disks import Disk
from daemon.clients.kubernetes import KubernetesClient
from daemon.errors import GuardRefused
from daemon.kits.clock import FrozenClock

REPO = Path(__file__).resolve().parent.parent
NODE_RB = "node-degradation"
RUNBOOKS = {NODE_RB: (REPO / "runbooks" / f"{NODE_RB}.yaml").read_text()}
NODE, NS = "node-196", "monitoring"
NOW = 1_800_000_000.0
ACTIONS = {a.name: a for a in kubernetes.ACTIONS}
MakeCtx = Callable[..., ActionContext]
TAINT = {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}


async def run(name: str, ctx: ActionContext, /, **params: Any) -> Output:
    return await ACTIONS[name].run(ctx, ACTIONS[name].params.model_validate(params))


def full_cluster(kube: KubeApiEmulator, *, pressure: tuple[str, ...] = ("MemoryPressure",)) -> None:
    """Four 4-cpu/16Gi nodes; the three others each have 3.5 cpu requested; node-196's app needs 2 cpu."""
    seed_cluster(kube)
    kube.add_node(NODE, pressure=pressure)
    for other in ("node-194", "node-197", "node-198"):
        requests_pod(kube, f"busy-{other}", NS, other, cpu="3500m", memory="2Gi")
    requests_pod(kube, "app-7d9f-x2k4q", NS, NODE, cpu="2", memory="4Gi", owner=("ReplicaSet", "app-7d9f"))


# -- capacity ------------------------------------------------------------------------------------------


def test_pod_requests_as_the_scheduler_counts_them() -> None:
    pod = {
        "spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
                {"resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}}},
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "128Mi"}}}],
            "overhead": {"cpu": "10m"},
        }
    }
    assert pod_requests(pod) == (2010, 1280 * 2**20)
    assert [cpu_millis(v) for v in ("1", "1500m", "0.1", "bogus")] == [1000, 1500, 100, 0]


async def test_drain_refuses_when_the_other_nodes_cannot_absorb_the_pods(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    full_cluster(kube_api)
    with pytest.raises(GuardRefused) as refused:
        await run("kubernetes.drain", kube_ctx(), node=NODE)
    message = str(refused.value)
    assert (
        f"refusing to drain {NODE}: the pods to move from {NODE} request cpu 2000m, memory 4Gi, 1 pod(s)"
        in message
    )
    assert "have cpu 1500m, memory 42Gi, 327 pod(s) free" in message
    assert f"these would stay Pending: {NS}/app-7d9f-x2k4q (cpu 2000m, memory 4Gi)" in message
    assert kube_api.mutations == []
    # With room (one node freed), the same drain goes ahead.
    kube_api.objects.pop(("pods", NS, "busy-node-198"))
    out = await run("kubernetes.drain", kube_ctx(), node=NODE, poll_interval="10ms")
    assert out["ok"] is True and [r.method for r in kube_api.mutations] == ["PATCH", "POST"]


async def test_pressure_node_whose_pods_fit_nowhere_is_not_drained(
    tmp_path: Path, kube_api: KubeApiEmulator
) -> None:
    full_cluster(kube_api)
    cfg = base_config(
        tmp_path, dry_run=False, kubernetes={"host": kube_api.url, "timeout": "5s", "retries": 1}
    )
    async with serve(tmp_path, RUNBOOKS, config=cfg) as d:
        status, body = await d.webhook(
            alert_payload(
                "NodeDegraded", fingerprint="fp-n", node=NODE, condition="MemoryPressure", cluster="c"
            )
        )
        assert status == 200, body
        run, approved = await walk(d, body["started"][0])
    assert approved == ["node-status", "cluster-health", "longhorn-volumes", "capacity"]
    assert run["state"] == "failed"
    capacity = steps_of(run)["capacity"]
    assert capacity["output"]["ok"] is False
    assert capacity["output"]["needed"] == {"cpu": 2000, "memory": 4 * GI, "pods": 1}
    assert capacity["output"]["free"]["cpu"] == 1500
    assert "would stay Pending" in capacity["error"]
    assert states(run)["cordon"] == "pending" and kube_api.mutations == []


# -- Longhorn's last copy --------------------------------------------------------------------------------

T0, T1 = "2026-12-01T10:00:00Z", "2026-12-03T09:00:00Z"
REPLICAS = "/apis/longhorn.io/v1beta2/namespaces/longhorn-system/replicas"


def node_with_an_app(kube: KubeApiEmulator, *, ready: bool = True) -> None:
    """The four seed nodes, each with a running Longhorn instance manager; node-196 under disk pressure
    (or NotReady) with one app pod to evict."""
    seed_cluster(kube)
    kube.add_node(NODE, ready=ready, pressure=() if not ready else ("DiskPressure",))
    kube.add_pod("app-7d9f-x2k4q", NS, node=NODE, owner=("ReplicaSet", "app-7d9f"))
    for node in ("node-194", NODE, "node-197", "node-198"):
        lh_instance_manager(kube, node)


def drain_policy(kube: KubeApiEmulator, value: str) -> None:
    kube.put(
        {
            "apiVersion": "longhorn.io/v1beta2",
            "kind": "Setting",
            "metadata": {"name": "node-drain-policy", "namespace": "longhorn-system"},
            "value": value,
        }
    )


async def test_drain_refuses_a_node_holding_the_last_copy_of_a_longhorn_volume(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    node_with_an_app(kube_api)
    drain_policy(kube_api, "always-allow")  # Longhorn itself would let this drain stop the last copy
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-here", NODE, healthy_at=T0)
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-failed", "node-197", healthy_at=T0, failed_at=T1)
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-rebuilding", "node-198")
    lh_replica(kube_api, "pvc-9f8e", "pvc-9f8e-r-0", NODE, healthy_at=T0)  # has a copy elsewhere
    lh_replica(kube_api, "pvc-9f8e", "pvc-9f8e-r-1", "node-194", healthy_at=T0)

    with pytest.raises(GuardRefused) as refused:
        await run("kubernetes.drain", kube_ctx(), node=NODE, poll_interval="10ms")
    message = str(refused.value)
    assert message.startswith(f"refusing to drain {NODE}: it holds the last copy of 1 Longhorn volume(s)"), (
        message
    )
    assert (
        "pvc-0a1b (here: pvc-0a1b-r-here (healthy); elsewhere: pvc-0a1b-r-failed (node-197, failed); "
        "pvc-0a1b-r-rebuilding (node-198, never healthy (rebuilding or new)))"
    ) in message
    assert "node-drain-policy is always-allow" in message
    assert "pvc-9f8e" not in message and message.endswith("Nothing was changed.")
    assert kube_api.mutations == []  # not even the cordon

    # Once Longhorn has rebuilt a replica elsewhere, the same drain goes ahead and says what it checked.
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-rebuilding", "node-198", healthy_at=T1)
    out = await run("kubernetes.drain", kube_ctx(), node=NODE, poll_interval="10ms")
    assert out["ok"] is True and [r.method for r in kube_api.mutations] == ["PATCH", "POST"]
    assert out["longhorn"]["outcome"] == "passed" and out["longhorn"]["volumes_here"] == 2
    used = {r.permission for r in kube_api.requests}
    assert used <= set(ACTIONS["kubernetes.drain"].permissions), used


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (lambda k: k.add_node("node-199", control_plane=False, ready=False), "its node is not Ready"),
        (lambda k: k.add_node("node-199", control_plane=False, unschedulable=True), "its node is cordoned"),
        (
            lambda k: lh_instance_manager(k, "node-199", state="error"),
            "instance manager im-node-199 not running",
        ),
        (
            lambda k: lh_replica(k, "pvc-0a1b", "pvc-0a1b-r-1", "node-199", healthy_at=T0, state="error"),
            "in state error",
        ),
        (
            lambda k: k.objects[("longhorn.io/replicas", "longhorn-system", "pvc-0a1b-r-1")][
                "metadata"
            ].update(deletionTimestamp=T1),
            "being deleted",
        ),
    ],
)
async def test_a_copy_elsewhere_counts_only_where_longhorn_can_serve_it(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx, spoil: Callable[[KubeApiEmulator], None], why: str
) -> None:
    node_with_an_app(kube_api)
    kube_api.add_node("node-199", control_plane=False)  # a worker: etcd keeps quorum throughout
    lh_instance_manager(kube_api, "node-199")
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-0", NODE, healthy_at=T0)
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-1", "node-199", healthy_at=T0)
    ctx = kube_ctx(max_unavailable_nodes=2)  # the blast-radius guard lets a second node go
    spoil(kube_api)
    with pytest.raises(GuardRefused, match=re.escape(f"pvc-0a1b-r-1 (node-199, {why})")):
        await run("kubernetes.drain", ctx, node=NODE)
    assert kube_api.mutations == []


async def test_the_instance_manager_is_not_evicted_once_its_replicas_hold_the_last_copy(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    """always-allow: Longhorn would let its instance manager go. The drain passes its first check (a
    healthy copy on node-197), its evictions of the instance manager are refused for a while, and then
    node-197's copy fails: the next attempt checks again and leaves the pod alone."""
    node_with_an_app(kube_api)
    drain_policy(kube_api, "always-allow")
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-0", NODE, healthy_at=T0)
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-1", "node-197", healthy_at=T0)
    kube_api.add_pod(
        "instance-manager-6f1c",
        "longhorn-system",
        node=NODE,
        owner=("InstanceManager", f"im-{NODE}"),
        labels={"longhorn.io/component": "instance-manager"},
        pdb_blocks=None,  # Longhorn's budget, until the node's volumes are detached
    )
    evicting = "/api/v1/namespaces/longhorn-system/pods/instance-manager-6f1c/eviction"
    drain = asyncio.create_task(
        run("kubernetes.drain", kube_ctx(), node=NODE, poll_interval="20ms", timeout="3s")
    )
    while not any(r.path == evicting for r in kube_api.requests):
        await asyncio.sleep(0.01)
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-1", "node-197", healthy_at=T0, failed_at=T1)
    out = await asyncio.wait_for(drain, 10)
    result = {p["name"]: p for p in out["pods"]}["instance-manager-6f1c"]
    assert out["ok"] is False and result["outcome"] == "blocked", result
    assert result["reason"].startswith(
        "not evicted: it runs the last copy of 1 Longhorn volume(s) now: pvc-0a1b"
    )
    assert {p["name"]: p["outcome"] for p in out["pods"]}["app-7d9f-x2k4q"] == "evicted"
    assert kube_api.exists("Pod", "instance-manager-6f1c", "longhorn-system")


async def test_a_not_ready_nodes_failed_replicas_do_not_block_its_drain(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    """A NotReady node's replicas have failed and each volume is degraded, but a healthy copy of each is
    on a Ready node: the drain goes ahead. So do a replica that never held data and another volume's
    replicas."""
    node_with_an_app(kube_api, ready=False)
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-0", NODE, healthy_at=T0, failed_at=T1)
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-1", "node-197", healthy_at=T0)
    lh_replica(kube_api, "pvc-new", "pvc-new-r-0", NODE)  # created, never healthy: no data to keep
    lh_replica(kube_api, "pvc-9f8e", "pvc-9f8e-r-0", "node-194", healthy_at=T0)
    out = await run("kubernetes.drain", kube_ctx(), node=NODE, poll_interval="10ms")
    assert out["ok"] is True and [r.method for r in kube_api.mutations] == ["PATCH", "POST"]
    assert (
        out["longhorn"]["volumes_here"] == 1 and out["longhorn"]["policy"] == "block-if-contains-last-replica"
    )


async def test_the_drain_follows_longhorns_drain_policy(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    """A detached volume's only replica is here, stopped. allow-if-replica-is-stopped lets it go (as
    Longhorn does); under the eviction policies Longhorn moves it off the cordoned node itself, so the
    drain must not refuse (it would never be cordoned); any other policy refuses."""
    node_with_an_app(kube_api)
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-0", NODE, healthy_at=T0)
    kube_api.objects[("longhorn.io/replicas", "longhorn-system", "pvc-0a1b-r-0")]["spec"]["desireState"] = (
        "stopped"
    )
    kube_api.objects[("longhorn.io/replicas", "longhorn-system", "pvc-0a1b-r-0")]["status"][
        "currentState"
    ] = "stopped"
    for policy in ("block-if-contains-last-replica", "always-allow"):
        drain_policy(kube_api, policy)
        with pytest.raises(GuardRefused, match=f"node-drain-policy is {policy}"):
            await run("kubernetes.drain", kube_ctx(), node=NODE)
    assert kube_api.mutations == []
    for policy, outcome in (
        ("allow-if-replica-is-stopped", "passed"),
        ("block-for-eviction", "left_to_longhorn"),
        ("block-for-eviction-if-contains-last-replica", "left_to_longhorn"),
    ):
        drain_policy(kube_api, policy)
        kube_api.add_pod("app-7d9f-x2k4q", NS, node=NODE, owner=("ReplicaSet", "app-7d9f"))
        kube_api.add_node(NODE, pressure=("DiskPressure",))  # not cordoned again
        out = await run("kubernetes.drain", kube_ctx(), node=NODE, poll_interval="10ms")
        assert out["ok"] is True and out["longhorn"]["outcome"] == outcome, (policy, out["longhorn"])
        assert out["longhorn"]["policy"] == policy


async def test_longhorn_in_its_configured_namespace_is_the_one_checked(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx, kube_client: KubernetesClient
) -> None:
    node_with_an_app(kube_api)
    kube_client.longhorn_namespace = "storage"  # kubernetes.longhorn_namespace
    lh_instance_manager(kube_api, "node-197", namespace="storage")
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-0", NODE, healthy_at=T0, namespace="storage")
    with pytest.raises(GuardRefused, match="it holds the last copy of 1 Longhorn volume"):
        await run("kubernetes.drain", kube_ctx(), node=NODE)
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-1", "node-197", healthy_at=T0, namespace="storage")
    out = await run("kubernetes.drain", kube_ctx(), node=NODE, poll_interval="10ms")
    assert out["ok"] is True and out["longhorn"]["volumes_here"] == 1
    # The node's report reads the same namespace.
    kube_api.put(
        {
            "apiVersion": "longhorn.io/v1beta2",
            "kind": "Volume",
            "metadata": {"name": "pvc-0a1b", "namespace": "storage"},
            "status": {"currentNodeID": NODE},
        }
    )
    report = await run("kubernetes.longhorn_volumes", kube_ctx(), node=NODE)
    assert [v["volume"] for v in report["volumes"]] == ["pvc-0a1b"]


async def test_drain_without_longhorn_goes_ahead_and_an_unreadable_longhorn_refuses(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    node_with_an_app(kube_api)
    lh_replica(kube_api, "pvc-0a1b", "pvc-0a1b-r-0", NODE, healthy_at=T0)
    kube_api.fail("GET", REPLICAS, status=403)
    with pytest.raises(GuardRefused, match=r"could not read Longhorn's replicas .*Nothing was changed"):
        await run("kubernetes.drain", kube_ctx(), node=NODE)
    assert kube_api.mutations == []
    # The one opt-out: a person who knows the copy is lost anyway (a dead disk) drains regardless.
    out = await run(
        "kubernetes.drain", kube_ctx(), node=NODE, check_longhorn_replicas=False, poll_interval="10ms"
    )
    assert out["ok"] is True and out["longhorn"] is None


async def test_drain_where_longhorn_is_not_installed(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    node_with_an_app(kube_api)
    kube_api.fail("GET", REPLICAS, status=404)
    out = await run("kubernetes.drain", kube_ctx(), node=NODE, poll_interval="10ms")
    assert out["ok"] is True and [r.method for r in kube_api.mutations] == ["PATCH", "POST"]
    assert out["longhorn"]["outcome"] == "not_installed"


# -- out of service ----------------------------------------------------------------------------------------


def down_node(kube: KubeApiEmulator, *, lease_age: float) -> None:
    seed_cluster(kube)
    kube.add_node(NODE, ready=None)
    node_lease(kube, NODE, NOW - lease_age)


async def test_out_of_service_refused_while_the_lease_is_fresh(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    down_node(kube_api, lease_age=90)
    with pytest.raises(GuardRefused, match=r"renewed its Lease 1m30s ago .* less than 5m"):
        await run("kubernetes.taint_out_of_service", kube_ctx(clock=FrozenClock(NOW)), node=NODE)
    assert kube_api.mutations == []


async def test_out_of_service_refused_for_a_ready_node_or_one_without_lease(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    seed_cluster(kube_api)
    with pytest.raises(GuardRefused, match="it is Ready"):
        await run("kubernetes.taint_out_of_service", kube_ctx(), node=NODE)
    kube_api.set_node_ready(NODE, False)
    with pytest.raises(GuardRefused, match="no Lease in kube-node-lease"):
        await run("kubernetes.taint_out_of_service", kube_ctx(), node=NODE)
    assert kube_api.mutations == []


async def test_out_of_service_taint_and_its_inverse(kube_api: KubeApiEmulator, kube_ctx: MakeCtx) -> None:
    down_node(kube_api, lease_age=600)
    ctx = kube_ctx(clock=FrozenClock(NOW))
    rv = kube_api.get("Node", NODE)["metadata"]["resourceVersion"]
    out = await run("kubernetes.taint_out_of_service", ctx, node=NODE)
    assert out["changed"] is True and out["lease_age_seconds"] == 600
    (patch,) = kube_api.mutations
    assert (patch.method, patch.path, patch.content_type) == (
        "PATCH",
        f"/api/v1/nodes/{NODE}",
        STRATEGIC_MERGE_PATCH,
    )
    assert patch.body == {
        "metadata": {"resourceVersion": rv},
        "spec": {"taints": [{**TAINT, "timeAdded": "2027-01-15T08:00:00Z"}]},
    }
    again = await run("kubernetes.taint_out_of_service", ctx, node=NODE)
    assert again["changed"] is False and again["added_by_runbookd"] is True and len(kube_api.mutations) == 1

    # The inverse waits for the node to be Ready, then removes exactly that taint.
    waiting = await run("kubernetes.remove_taint", ctx, node=NODE)
    assert waiting["ok"] is False and waiting["not_yet"] is True and "it is not Ready" in waiting["message"]
    assert len(kube_api.mutations) == 1
    kube_api.set_node_ready(NODE, True)
    removed = await run("kubernetes.remove_taint", ctx, node=NODE)
    assert removed["changed"] is True and kube_api.get("Node", NODE)["spec"]["taints"] == []
    assert (await run("kubernetes.remove_taint", ctx, node=NODE))["changed"] is False


async def test_remove_taint_leaves_a_taint_a_person_added(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    seed_cluster(kube_api)
    kube_api.add_node(NODE, taints=[dict(TAINT)])
    with pytest.raises(GuardRefused, match="runbookd did not add it"):
        await run("kubernetes.remove_taint", kube_ctx(), node=NODE)
    assert kube_api.mutations == []


@pytest.mark.parametrize(("lease_age", "tainted"), [(60.0, False), (900.0, True)])
async def test_runbook_up_to_the_taint(
    tmp_path: Path, kube_api: KubeApiEmulator, lease_age: float, tainted: bool
) -> None:
    down_node(kube_api, lease_age=lease_age)
    kube_api.add_pod("grafana-7d9f-x2k4q", NS, node=NODE, owner=("ReplicaSet", "grafana-7d9f"))
    lh_volume(
        kube_api,
        "pvc-1234",
        size=10 * GI,
        replicas=[],
        attached_to=NODE,
        robustness="degraded",
        pvc=(NS, "prometheus-db-prometheus-0"),
    )
    cfg = base_config(
        tmp_path, dry_run=False, kubernetes={"host": kube_api.url, "timeout": "5s", "retries": 1}
    )
    async with serve(tmp_path, RUNBOOKS, config=cfg, clock=FrozenClock(NOW)) as d:
        status, body = await d.webhook(
            alert_payload("NodeDegraded", fingerprint="fp-n", node=NODE, condition="NotReady", cluster="c")
        )
        assert status == 200, body
        run_, approved = await walk(d, body["started"][0], stop_at="drain")
    assert approved[-2:] == ["cordon", "out-of-service"]
    volumes = steps_of(run_)["longhorn-volumes"]["output"]
    assert volumes["volumes"] == [
        {
            "volume": "pvc-1234",
            "robustness": "degraded",
            "state": "attached",
            "replicas": 0,
            "pvc": f"{NS}/prometheus-db-prometheus-0",
        }
    ]
    assert volumes["not_healthy"] == ["pvc-1234"]
    step = steps_of(run_)["out-of-service"]
    taints = kube_api.get("Node", NODE)["spec"]["taints"]
    if tainted:
        assert step["state"] == "succeeded" and taints == [{**TAINT, "timeAdded": "2027-01-15T08:00:00Z"}]
    else:
        assert step["state"] == "failed" and "renewed its Lease 1m ago" in step["error"]
        assert taints == []
        assert [r.method for r in kube_api.mutations] == ["PATCH"]  # the cordon only


# -- Longhorn's expansion check ----------------------------------------------------------------------------


def disk(**kw: int) -> Disk:
    base = {"maximum": 100 * GI, "available": 60 * GI, "scheduled": 50 * GI, "reserved": 10 * GI}
    base.update(kw)
    return Disk(
        "n",
        "d",
        "u",
        kw.pop("replicas", 1),
        base["maximum"],
        base["available"],
        base["scheduled"],
        base["reserved"],
        100,
        25,
    )


def test_longhorn_disk_rules_at_their_boundaries() -> None:
    d = disk()  # schedule limit (100-10) x 100% = 90Gi; floor 25Gi
    assert d.problems(40 * GI) == [
        "available 60.0Gi - 40.0Gi = 20.0Gi <= 100.0Gi x 25% minimal available = 25.0Gi"
    ]
    assert d.problems(35 * GI - 1) == []
    assert d.problems(35 * GI)[0].startswith(
        "available 60.0Gi - 35.0Gi = 25.0Gi <= "
    )  # strictly greater needed
    tight = disk(available=90 * GI)
    assert tight.problems(40 * GI) == []  # 50 + 40 = 90 <= 90: exactly at the limit is allowed
    assert tight.problems(40 * GI + 1)[0].startswith("scheduled 50.0Gi + 40.0Gi = 90.0Gi > ")
    assert tight.max_growth == 40 * GI
    two = Disk("n", "d", "u", 2, 100 * GI, 90 * GI, 50 * GI, 10 * GI, 100, 25)
    assert two.max_growth == 20 * GI and two.problems(20 * GI + 1)


async def test_expand_pvc_rechecks_the_longhorn_disks_right_before_the_patch(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    kube_api.add_storage_class("longhorn", allow_expansion=True)
    kube_api.add_pvc("data", NS, request="10Gi")
    volume = kube_api.get("PersistentVolumeClaim", "data", NS)["spec"]["volumeName"]
    lh_settings(kube_api, over_provisioning=100, minimal_available=25)
    lh_node(
        kube_api,
        "node-196",
        {"d1": {"uuid": "u1", "maximum": 100 * GI, "available": 80 * GI, "scheduled": 98 * GI}},
    )
    lh_volume(kube_api, volume, size=10 * GI, replicas=[("node-196", "u1")])
    with pytest.raises(GuardRefused) as refused:
        await run(
            "kubernetes.expand_pvc",
            kube_ctx(),
            namespace=NS,
            name="data",
            growth_percent=30,
            longhorn_check=True,
        )
    assert f"refusing to expand {NS}/data: Longhorn cannot hold 10Gi -> 13Gi (+3.0Gi per replica)" in str(
        refused.value
    )
    assert (
        "node-196/d1: scheduled 98.0Gi + 3.0Gi = 101.0Gi > (100.0Gi max - 0.0Gi reserved) x 100% = 100.0Gi"
        in str(refused.value)
    )
    assert "at most 12.0Gi in total (+2.0Gi)" in str(refused.value)
    assert kube_api.mutations == []
    # Room made on the disk: the same expansion goes through.
    node = kube_api.objects[("longhorn.io/nodes", "longhorn-system", "node-196")]
    node["status"]["diskStatus"]["d1"]["storageScheduled"] = 20 * GI
    out = await run(
        "kubernetes.expand_pvc", kube_ctx(), namespace=NS, name="data", growth_percent=30, longhorn_check=True
    )
    assert out["changed"] is True and out["to"] == "13Gi"


async def test_expand_pvc_refuses_a_volume_longhorn_does_not_know(
    kube_api: KubeApiEmulator, kube_ctx: MakeCtx
) -> None:
    kube_api.add_storage_class("longhorn", allow_expansion=True)
    kube_api.add_pvc("data", NS, request="10Gi")
    with pytest.raises(GuardRefused, match="is not a Longhorn volume"):
        await run("kubernetes.expand_pvc", kube_ctx(), namespace=NS, name="data", longhorn_check=True)
    assert kube_api.mutations == []
