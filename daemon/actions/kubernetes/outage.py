"""A node that is down: can the rest absorb its pods, which Longhorn volumes it held, and the
non-graceful node shutdown taint (``node.kubernetes.io/out-of-service=nodeshutdown:NoExecute``).

The taint (Kubernetes >= 1.28) makes the control plane force-delete the node's pods and detach their
volumes, so StatefulSet pods and Longhorn RWO volumes can start elsewhere. On a node that is only cut
off but still running, that means two writers on one volume. So ``taint_out_of_service`` refuses
unless the node is not Ready *and* its Lease in ``kube-node-lease`` has not been renewed for
``lease_stale_after`` (default 5m), re-read right before the patch; and the approver is asked to
confirm the machine is powered off. ``remove_taint`` is its inverse: it removes exactly the taint
runbookd added, and only once the node is Ready again.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.kubernetes import capacity
from daemon.actions.kubernetes import objects as o
from daemon.clients.kubernetes import KubeNotFound, KubernetesClient
from daemon.clients.longhorn import LonghornClient
from daemon.errors import GuardRefused
from daemon.kits.clock import iso, parse_iso
from daemon.kits.durations import Duration, format_duration
from daemon.kits.names import DnsSubdomain

TAINTS = "kubernetes.taints"
"""ctx.memory namespace: "node/key:effect" -> the taint runbookd added, and which run added it."""
OUT_OF_SERVICE = {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}


class NodeParams(Params):
    node: DnsSubdomain


class OutOfServiceParams(NodeParams):
    lease_stale_after: Duration = 300.0
    """Refuse while the node's kubelet renewed its Lease more recently than this."""

    @field_validator("lease_stale_after")
    @classmethod
    def _bounded(cls, v: float) -> float:
        if not 60 <= v <= 86400:
            raise ValueError("lease_stale_after is between 1m and 24h")
        return v


class RemoveTaintParams(NodeParams):
    key: str = Field(OUT_OF_SERVICE["key"], min_length=1, max_length=316, pattern=r"^[A-Za-z0-9./_-]+$")
    effect: str = Field(OUT_OF_SERVICE["effect"], pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")
    require_ready: bool = True
    """Refuse while the node is not Ready (pods would be let back onto a node that is still down)."""
    force: bool = False
    """Also remove a taint runbookd did not add."""


def _record_key(node: str, key: str, effect: str) -> str:
    return f"{node}/{key}:{effect}"


def _has(taints: list[o.Obj], key: str, effect: str) -> bool:
    return any(t.get("key") == key and t.get("effect") == effect for t in taints)


async def lease_age(client: KubernetesClient, node: str, now: float) -> tuple[float, str]:
    """Seconds since the node's kubelet last renewed its Lease, and the renewTime."""
    try:
        lease = await client.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}")
    except KubeNotFound:
        raise GuardRefused(
            f"refusing to taint {node} out of service: it has no Lease in kube-node-lease, so runbookd cannot "
            "tell when its kubelet was last alive"
        ) from None
    renewed = o.spec(lease).get("renewTime")
    if not renewed:
        raise GuardRefused(f"refusing to taint {node} out of service: its Lease has no renewTime")
    return now - parse_iso(str(renewed)), str(renewed)


@action(
    "kubernetes.taint_out_of_service",
    read_only=False,
    idempotent=True,
    permissions=("get nodes", "patch nodes", "get coordination.k8s.io/leases"),
)
async def taint_out_of_service(ctx: ActionContext, p: OutOfServiceParams) -> Output:
    """Taint a NotReady node node.kubernetes.io/out-of-service=nodeshutdown:NoExecute so its pods and
    volumes move, only when its kubelet's Lease is stale; the approver confirms it is powered off."""
    client: KubernetesClient = ctx.need("kubernetes")
    node = await client.get_node(p.node)
    if o.node_ready(node) == "True":
        raise GuardRefused(f"refusing to taint {p.node} out of service: it is Ready (its kubelet is running)")
    age, renewed = await lease_age(client, p.node, ctx.clock.now())
    if age < p.lease_stale_after:
        raise GuardRefused(
            f"refusing to taint {p.node} out of service: its kubelet renewed its Lease {format_duration(max(age, 0))} "
            f"ago ({renewed}), less than {format_duration(p.lease_stale_after)}: the node may still be running and "
            "holding its volumes. Wait, and make sure the machine is powered off."
        )
    taints = [t for t in o.spec(node).get("taints") or [] if isinstance(t, dict)]
    key = _record_key(p.node, OUT_OF_SERVICE["key"], OUT_OF_SERVICE["effect"])
    if _has(taints, OUT_OF_SERVICE["key"], OUT_OF_SERVICE["effect"]):
        mine = await ctx.memory.get(TAINTS, key)
        return {
            "ok": True,
            "node": p.node,
            "changed": False,
            "added_by_runbookd": mine is not None,
            "message": f"{p.node} already carries the out-of-service taint",
        }
    # Node taints have no merge key: the whole list is sent, guarded by the resourceVersion read.
    patch = {
        "metadata": {"resourceVersion": o.meta(node).get("resourceVersion")},
        "spec": {"taints": [*taints, {**OUT_OF_SERVICE, "timeAdded": iso(ctx.clock.now())}]},
    }
    request = client.patch_node(p.node, patch)
    if ctx.dry_run:
        return ctx.would(request.describe(client.host), node=p.node, lease_age=format_duration(age))
    await ctx.memory.put(
        TAINTS, key, {"run_id": ctx.run_id, "step_id": ctx.step_id, "at": iso(ctx.clock.now())}
    )
    await client.send(request)
    return {
        "ok": True,
        "node": p.node,
        "changed": True,
        "lease_renewed": renewed,
        "lease_age_seconds": round(age),
        "taint": OUT_OF_SERVICE,
        "message": f"tainted {p.node} out of service (its Lease was last renewed {format_duration(age)} ago): "
        "its pods are force-deleted and their volumes detached",
    }


@action("kubernetes.remove_taint", read_only=False, idempotent=True, permissions=("get nodes", "patch nodes"))
async def remove_taint(ctx: ActionContext, p: RemoveTaintParams) -> Output:
    """Remove a taint runbookd added (key and effect), once the node is Ready again."""
    client: KubernetesClient = ctx.need("kubernetes")
    node = await client.get_node(p.node)
    taints = [t for t in o.spec(node).get("taints") or [] if isinstance(t, dict)]
    record_key = _record_key(p.node, p.key, p.effect)
    mine = await ctx.memory.get(TAINTS, record_key)
    if not _has(taints, p.key, p.effect):
        if mine is not None and not ctx.dry_run:
            await ctx.memory.delete(TAINTS, record_key)
        return {
            "ok": True,
            "node": p.node,
            "changed": False,
            "message": f"{p.node} has no {p.key}:{p.effect} taint",
        }
    if mine is None and not p.force:
        raise GuardRefused(
            f"refusing to remove {p.key}:{p.effect} from {p.node}: runbookd did not add it; a person did"
        )
    if p.require_ready and o.node_ready(node) != "True":
        # not yet, rather than a failure: as an undo it is asked again until its timeout (undoing.py)
        return {
            "ok": False,
            "not_yet": True,
            "node": p.node,
            "changed": False,
            "message": f"not removing {p.key}:{p.effect} from {p.node} yet: it is not Ready "
            f"(Ready={o.node_ready(node)}); pods would be let back onto a node that is still down",
        }
    kept = [t for t in taints if not (t.get("key") == p.key and t.get("effect") == p.effect)]
    patch = {"metadata": {"resourceVersion": o.meta(node).get("resourceVersion")}, "spec": {"taints": kept}}
    request = client.patch_node(p.node, patch)
    if ctx.dry_run:
        return ctx.would(request.describe(client.host), node=p.node)
    await client.send(request)
    await ctx.memory.delete(TAINTS, record_key)
    return {
        "ok": True,
        "node": p.node,
        "changed": True,
        "message": f"removed {p.key}:{p.effect} from {p.node}",
    }


@action(
    "kubernetes.drain_capacity",
    read_only=True,
    idempotent=True,
    permissions=("list nodes", "list pods"),
)
async def drain_capacity(ctx: ActionContext, p: NodeParams) -> Output:
    """Whether the other Ready, schedulable nodes can absorb the requests (cpu, memory, pods) of the
    pods a drain of this node would evict. ``ok: false``, with the numbers, when they cannot."""
    client: KubernetesClient = ctx.need("kubernetes")
    nodes = await client.list_nodes()
    o.find_node(nodes, p.node)
    pods = await client.list_objects("/api/v1/pods")
    moving = [pod for pod in pods if o.spec(pod).get("nodeName") == p.node and capacity.moves(pod)]
    return capacity.absorb(nodes, pods, p.node, moving).as_dict()


@action(
    "kubernetes.longhorn_volumes", read_only=True, idempotent=True, permissions=("list longhorn.io/volumes",)
)
async def longhorn_volumes(ctx: ActionContext, p: NodeParams) -> Output:
    """The Longhorn volumes attached to a node (status.currentNodeID), with robustness and their PVC."""
    client: KubernetesClient = ctx.need("kubernetes")
    try:
        volumes = await client.list_objects(LonghornClient(client).path("volumes"))
    except KubeNotFound:
        return {"ok": True, "node": p.node, "volumes": [], "message": "Longhorn is not installed"}
    attached = [v for v in volumes if o.status(v).get("currentNodeID") == p.node]
    out: list[dict[str, Any]] = []
    for v in sorted(attached, key=o.name_of):
        kube = o.status(v).get("kubernetesStatus") or {}
        out.append(
            {
                "volume": o.name_of(v),
                "robustness": o.status(v).get("robustness"),
                "state": o.status(v).get("state"),
                "replicas": o.spec(v).get("numberOfReplicas"),
                "pvc": f"{kube.get('namespace')}/{kube.get('pvcName')}" if kube.get("pvcName") else None,
            }
        )
    shown = ", ".join(f"{v['volume']} ({v['pvc'] or 'no PVC'}, {v['robustness']})" for v in out)
    return {
        "ok": True,
        "node": p.node,
        "volumes": out,
        "not_healthy": [v["volume"] for v in out if v["robustness"] != "healthy"],
        "message": f"{len(out)} Longhorn volume(s) attached to {p.node}" + (f": {shown}" if out else ""),
    }


ACTIONS = [taint_out_of_service, remove_taint, drain_capacity, longhorn_volumes]
