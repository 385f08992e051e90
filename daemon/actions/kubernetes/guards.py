"""Blast-radius guards for node actions, and the durable records they keep in ``ctx.memory``.

- Availability: a node counts as *available* when it is Ready and schedulable. Cordoning or draining
  a node takes it out; that is refused when more than ``limits.max_unavailable_nodes`` nodes would be
  unavailable (the target counted), or when fewer available control-plane nodes than etcd quorum
  (floor(n/2)+1 of the n control-plane nodes: 3 of 4) would remain.
- One drain at a time, cluster-wide: a lock record names the run that holds it and when it expires
  (the drain's own timeout plus a margin), so a lock left by a crashed daemon does not block for ever.
- Cordons: every cordon runbookd makes is remembered, so ``uncordon`` only undoes runbookd's own
  cordon (unless forced) and never lets workloads back onto a node a person took out. The record counts
  only while the node's ``spec.unschedulable`` is still the one runbookd's patch set (its
  ``managedFields``): a person who uncordoned and cordoned the node again since owns that cordon.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from daemon.actions.base import ActionContext
from daemon.actions.kubernetes import objects as o
from daemon.clients.kubernetes import FIELD_MANAGER
from daemon.errors import GuardRefused
from daemon.kits.clock import iso

CORDONS = "kubernetes.cordons"
"""ctx.memory namespace: node name -> who in runbookd cordoned it."""
LOCKS = "kubernetes.locks"
DRAIN_LOCK = "drain"
LOCK_MARGIN = 120.0
"""Seconds a drain lock outlives its drain's timeout before another run may treat it as stale."""


@dataclass(frozen=True)
class NodeState:
    name: str
    ready: str
    """The Ready condition: True, False or Unknown."""
    unschedulable: bool
    control_plane: bool

    @property
    def available(self) -> bool:
        return self.ready == "True" and not self.unschedulable

    @property
    def why_unavailable(self) -> str:
        reasons = []
        if self.ready != "True":
            reasons.append("NotReady" if self.ready == "False" else f"Ready={self.ready}")
        if self.unschedulable:
            reasons.append("unschedulable")
        return " and ".join(reasons) or "available"


@dataclass(frozen=True)
class ClusterNodes:
    nodes: tuple[NodeState, ...]

    @classmethod
    def from_objects(cls, nodes: list[o.Obj]) -> ClusterNodes:
        return cls(
            tuple(
                NodeState(o.name_of(n), o.node_ready(n), o.is_unschedulable(n), o.is_control_plane(n))
                for n in sorted(nodes, key=o.name_of)
            )
        )

    @property
    def unavailable(self) -> list[NodeState]:
        return [n for n in self.nodes if not n.available]

    @property
    def control_plane(self) -> list[NodeState]:
        return [n for n in self.nodes if n.control_plane]

    @property
    def quorum(self) -> int:
        """etcd quorum for stacked etcd on every control-plane node: floor(n/2)+1 (0 without any)."""
        n = len(self.control_plane)
        return n // 2 + 1 if n else 0

    def summary(self, max_unavailable: int) -> dict[str, Any]:
        cp_available = [n.name for n in self.control_plane if n.available]
        unavailable = self.unavailable
        return {
            "nodes": len(self.nodes),
            "ready": [n.name for n in self.nodes if n.ready == "True"],
            "not_ready": [n.name for n in self.nodes if n.ready != "True"],
            "unschedulable": [n.name for n in self.nodes if n.unschedulable],
            "unavailable": {n.name: n.why_unavailable for n in unavailable},
            "max_unavailable_nodes": max_unavailable,
            "control_plane": {
                "total": len(self.control_plane),
                "available": len(cp_available),
                "ready": sum(1 for n in self.control_plane if n.ready == "True"),
                "quorum": self.quorum,
                "quorum_ok": len(cp_available) >= self.quorum,
            },
        }


def check_take_out(cluster: ClusterNodes, target: str, verb: str, max_unavailable: int) -> None:
    """Refuse to make ``target`` unavailable when that would break the blast-radius limits."""
    after = {n.name: n for n in cluster.unavailable}
    this = next((n for n in cluster.nodes if n.name == target), None)
    if this is None:
        raise GuardRefused(f"refusing to {verb} {target}: no such node in the cluster")
    after.setdefault(target, this)
    if len(after) > max_unavailable:
        others = [f"{n.name} ({n.why_unavailable})" for n in after.values() if n.name != target]
        raise GuardRefused(
            f"refusing to {verb} {target}: {len(after)} nodes would be NotReady or unschedulable, "
            f"more than limits.max_unavailable_nodes={max_unavailable}; already out: "
            f"{', '.join(others) or 'none'}. Bring those back first, or a person must decide."
        )
    if not this.control_plane:
        return
    remaining = [n for n in cluster.control_plane if n.available and n.name != target]
    if len(remaining) < cluster.quorum:
        out = [f"{n.name} ({n.why_unavailable})" for n in cluster.control_plane if not n.available]
        raise GuardRefused(
            f"refusing to {verb} control-plane node {target}: only {len(remaining)} of "
            f"{len(cluster.control_plane)} control-plane nodes would stay Ready and schedulable, and etcd "
            f"quorum needs {cluster.quorum}; already out: {', '.join(out) or 'none'}."
        )


# -- cordon bookkeeping --------------------------------------------------------------------------


async def remember_cordon(ctx: ActionContext, node: str, reason: str) -> None:
    record = {
        "run_id": ctx.run_id,
        "step_id": ctx.step_id,
        "runbook": ctx.runbook,
        "at": iso(ctx.clock.now()),
        "reason": reason,
        "field_manager": FIELD_MANAGER,  # (a record without it is from before runbookd named itself)
    }
    await ctx.memory.put(CORDONS, node, record)


async def cordon_record(ctx: ActionContext, node: str) -> dict[str, Any] | None:
    return await ctx.memory.get(CORDONS, node)


LEGACY_MANAGER = "OpenAPI-Generator"
"""Who the API server took for the manager of a cordon runbookd made before it named itself
(``FIELD_MANAGER``): kubernetes-asyncio's User-Agent up to its first '/'. Accepted only for a record such
a runbookd wrote (without ``field_manager``), so that a node it cordoned is still its own to uncordon
after the upgrade."""


def unschedulable_owners(node: o.Obj) -> set[str] | None:
    """The field managers that set the node's ``spec.unschedulable`` as it is (``metadata.managedFields``,
    operation Update); None when the node shows no managedFields at all (nothing can be told)."""
    entries = o.meta(node).get("managedFields")
    if not isinstance(entries, list):
        return None
    owners: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("operation") != "Update":
            continue
        spec = (entry.get("fieldsV1") or {}).get("f:spec")
        if isinstance(spec, dict) and "f:unschedulable" in spec:
            owners.add(str(entry.get("manager")))
    return owners


async def runbookd_cordon(ctx: ActionContext, node: o.Obj, *, tidy: bool = True) -> dict[str, Any] | None:
    """runbookd's record of the cordon the node has now, if runbookd made that cordon; None when the node
    is schedulable, or someone else set its ``spec.unschedulable`` since (a person's ``kubectl uncordon``
    and ``cordon`` take the field over).

    runbookd's record alone cannot tell: it outlives a person uncordoning the node and cordoning it again
    (an adversarial review found node runs treating such a person's cordon as runbookd's, then draining
    and uncordoning the node). The API server keeps which field manager set each field, and runbookd
    names itself (``FIELD_MANAGER``). With ``tidy``, a record that is known stale (the node schedulable,
    or the field someone else's) is forgotten, not in dry-run; one the node cannot confirm or refute (no
    managedFields) is kept, and the cordon is not taken for runbookd's."""
    name = o.name_of(node)
    record = await cordon_record(ctx, name)
    if record is None:
        return None
    owners = unschedulable_owners(node) if o.is_unschedulable(node) else set()
    mine = {FIELD_MANAGER} if record.get("field_manager") else {FIELD_MANAGER, LEGACY_MANAGER}
    if owners and owners & mine:
        return record
    if owners is not None and tidy and not ctx.dry_run:
        await forget_cordon(ctx, name)
    return None


async def forget_cordon(ctx: ActionContext, node: str) -> None:
    await ctx.memory.delete(CORDONS, node)


# -- the drain lock ------------------------------------------------------------------------------


async def check_drain_lock(ctx: ActionContext, node: str) -> dict[str, Any] | None:
    """Refuse while another run holds a live drain lock; return a stale lock found (to take over)."""
    holder = await ctx.memory.get(LOCKS, DRAIN_LOCK)
    if holder is None:
        return None
    if holder.get("run_id") == ctx.run_id:
        return holder  # our own run's earlier step died mid-drain: steps of one run never overlap
    if float(holder.get("expires_at", 0)) <= ctx.clock.now():
        return holder
    raise GuardRefused(
        f"refusing to drain {node}: node {holder.get('node')} is being drained by run "
        f"{holder.get('run_id')} (step {holder.get('step_id')}) since {holder.get('since')}; "
        "runbookd drains one node at a time. Try again when that drain ends."
    )


@asynccontextmanager
async def drain_lock(ctx: ActionContext, node: str, hold_for: float) -> AsyncIterator[dict[str, Any]]:
    """Hold the cluster-wide drain lock for one drain; released when the drain ends, however it ends."""
    stale = await check_drain_lock(ctx, node)
    if stale is not None:
        ctx.log.warning(
            "kubernetes.drain_lock.taken_over",
            node=node,
            stale_run=stale.get("run_id"),
            stale_node=stale.get("node"),
        )
    now = ctx.clock.now()
    record = {
        "node": node,
        "run_id": ctx.run_id,
        "step_id": ctx.step_id,
        "since": iso(now),
        "expires_at": now + hold_for + LOCK_MARGIN,
        "token": secrets.token_hex(8),
    }
    await ctx.memory.put(LOCKS, DRAIN_LOCK, record)
    try:
        yield record
    finally:
        current = await ctx.memory.get(LOCKS, DRAIN_LOCK)
        if current is not None and current.get("token") == record["token"]:
            await ctx.memory.delete(LOCKS, DRAIN_LOCK)
