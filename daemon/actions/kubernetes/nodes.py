"""Node actions: status and cluster health (read-only), cordon and uncordon (guarded, remembered)."""

from __future__ import annotations

from pydantic import Field

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.kubernetes import guards
from daemon.actions.kubernetes import objects as o
from daemon.clients.kubernetes import KubernetesClient
from daemon.errors import GuardRefused
from daemon.kits.names import DnsSubdomain


class NodeParams(Params):
    node: DnsSubdomain


class ClusterParams(Params):
    pass


class CordonParams(NodeParams):
    reason: str = Field("", max_length=500)
    """Why, for the record kept with the cordon (shown by node_status)."""


class UncordonParams(NodeParams):
    force: bool = False
    """Also undo a cordon runbookd did not make (a person's)."""
    require_ready: bool = True
    """Refuse to put workloads back on a node that is not Ready."""


@action("kubernetes.node_status", read_only=True, idempotent=True, permissions=("get nodes", "list pods"))
async def node_status(ctx: ActionContext, p: NodeParams) -> Output:
    """Report a node: conditions, Ready, pressures, unschedulable, taints, role and the pods on it."""
    client: KubernetesClient = ctx.need("kubernetes")
    node = await client.get_node(p.node)
    pods = await client.pods_on_node(p.node)
    record = await guards.runbookd_cordon(ctx, node, tidy=False)
    ready = o.node_ready(node)
    return {
        "ok": True,
        "node": p.node,
        "ready": ready == "True",
        "ready_status": ready,
        "conditions": o.condition_summary(node),
        "pressure": o.pressures(node),
        "unschedulable": o.is_unschedulable(node),
        "taints": list(o.spec(node).get("taints") or []),
        "control_plane": o.is_control_plane(node),
        "cordoned_by_runbookd": record,
        "pod_count": len(pods),
        "pods": [o.pod_summary(pod) for pod in pods],
        "message": f"node {p.node} is Ready={ready}"
        + (", unschedulable" if o.is_unschedulable(node) else "")
        + (f", under {', '.join(o.pressures(node))}" if o.pressures(node) else ""),
    }


@action("kubernetes.cluster_health", read_only=True, idempotent=True, permissions=("list nodes",))
async def cluster_health(ctx: ActionContext, p: ClusterParams) -> Output:
    """Report Ready, NotReady and unschedulable nodes, and Ready control-plane nodes against etcd quorum.

    ``ok`` is true when quorum holds and no more nodes are unavailable than limits.max_unavailable_nodes."""
    client: KubernetesClient = ctx.need("kubernetes")
    cluster = guards.ClusterNodes.from_objects(await client.list_nodes())
    limit = ctx.limits.max_unavailable_nodes
    summary = cluster.summary(limit)
    lock = await ctx.memory.get(guards.LOCKS, guards.DRAIN_LOCK)
    cp = summary["control_plane"]
    ok = cp["quorum_ok"] and len(cluster.unavailable) <= limit
    message = (
        f"{len(cluster.unavailable)} of {len(cluster.nodes)} nodes unavailable (limit {limit}); "
        f"{cp['available']} of {cp['total']} control-plane nodes available, quorum {cp['quorum']}"
    )
    drain = {k: lock.get(k) for k in ("node", "run_id", "since")} if lock else None
    return {"ok": ok, **summary, "drain_in_progress": drain, "message": message}


@action("kubernetes.cordon", read_only=False, idempotent=True, permissions=("list nodes", "patch nodes"))
async def cordon(ctx: ActionContext, p: CordonParams) -> Output:
    """Mark a node unschedulable, if the blast-radius guards allow it; runbookd remembers the cordon."""
    client: KubernetesClient = ctx.need("kubernetes")
    async with client.take_out_lock:  # the check and the cordon, as one step against other node actions
        nodes = await client.list_nodes()
        node = o.find_node(nodes, p.node)
        if o.is_unschedulable(node):
            mine = await guards.runbookd_cordon(ctx, node)
            who = "by runbookd" if mine else "by someone else"
            return {
                "ok": True,
                "node": p.node,
                "changed": False,
                "cordoned_by_runbookd": mine is not None,
                "message": f"node {p.node} was already cordoned ({who})",
            }
        guards.check_take_out(
            guards.ClusterNodes.from_objects(nodes), p.node, "cordon", ctx.limits.max_unavailable_nodes
        )
        request = client.patch_node(p.node, {"spec": {"unschedulable": True}})
        if ctx.dry_run:
            return ctx.would(request.describe(client.host), node=p.node)
        # Remembered before it is done: a crash in between leaves a record for a schedulable node, which
        # uncordon treats as done; the other order could leave a cordon nobody knows runbookd made.
        await guards.remember_cordon(ctx, p.node, p.reason or ctx.origin)
        await client.send(request)
    return {"ok": True, "node": p.node, "changed": True, "message": f"cordoned {p.node}"}


@action("kubernetes.uncordon", read_only=False, idempotent=True, permissions=("get nodes", "patch nodes"))
async def uncordon(ctx: ActionContext, p: UncordonParams) -> Output:
    """Make a node schedulable again, only if runbookd cordoned it (or with force: true)."""
    client: KubernetesClient = ctx.need("kubernetes")
    node = await client.get_node(p.node)
    mine = await guards.runbookd_cordon(ctx, node)  # (a record of a schedulable node: forgotten)
    if not o.is_unschedulable(node):
        return {"ok": True, "node": p.node, "changed": False, "message": f"node {p.node} is schedulable"}
    if mine is None and not p.force:
        raise GuardRefused(
            f"refusing to uncordon {p.node}: runbookd did not cordon it (not this cordon: its "
            "spec.unschedulable was last set by someone else), so a person did and may still need it "
            "out. Uncordon it yourself, or run this step with force: true."
        )
    if p.require_ready and o.node_ready(node) != "True":
        raise GuardRefused(
            f"refusing to uncordon {p.node}: it is not Ready (Ready={o.node_ready(node)}); wait for it "
            "(kubernetes.wait until: node_ready) or pass require_ready: false."
        )
    request = client.patch_node(p.node, {"spec": {"unschedulable": None}})
    if ctx.dry_run:
        return ctx.would(request.describe(client.host), node=p.node)
    await client.send(request)
    await guards.forget_cordon(ctx, p.node)
    return {
        "ok": True,
        "node": p.node,
        "changed": True,
        "forced": mine is None,
        "message": f"uncordoned {p.node}"
        + (" (forced: runbookd had not cordoned it)" if mine is None else ""),
    }


ACTIONS = [node_status, cluster_health, cordon, uncordon]
