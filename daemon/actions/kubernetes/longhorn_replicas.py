"""Would draining a node take away the last healthy copy of a Longhorn volume? Longhorn's own drain check.

Longhorn protects each node's instance-manager pod (which runs the node's replicas) with a
PodDisruptionBudget, and under its default ``node-drain-policy`` (``block-if-contains-last-replica``)
keeps that budget while any replica on the node has no healthy replica of the same volume on another
node (longhorn-manager ``InstanceManagerController.canDeleteInstanceManagerPDB``). A cluster set to
``always-allow`` or ``allow-if-replica-is-stopped``, or one whose budget is missing, has no such
protection, so ``kubernetes.drain`` makes the same check itself, before anything is cordoned or evicted.

A replica (``replicas.longhorn.io``) is *healthy* while ``healthyAt`` is set and ``failedAt`` is not
(in ``spec`` through Longhorn 1.x; ``status`` is read too, as later versions may move them). A replica
with neither has never held data (a new volume, a rebuild that never finished): Longhorn does not
count it and neither does this. Stricter than Longhorn in one point: a healthy copy counts only on a
node that is Ready and schedulable, since one on a cordoned or failing node may be the next to go.

A replica on the drained node that is itself failed still counts as needing a copy elsewhere: when the
volume has none, that failed replica is what a person salvages the data from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.actions.kubernetes import objects as o
from daemon.actions.kubernetes.longhorn_disks import LONGHORN
from daemon.clients.kubernetes import KubeNotFound, KubernetesClient

PERMISSIONS = ("list longhorn.io/replicas",)


def _time(replica: o.Obj, field: str) -> str:
    value = o.spec(replica).get(field) or o.status(replica).get(field)
    return value if isinstance(value, str) else ""


def is_healthy(replica: o.Obj) -> bool:
    return bool(_time(replica, "healthyAt")) and not _time(replica, "failedAt")


def ever_held_data(replica: o.Obj) -> bool:
    return bool(_time(replica, "healthyAt")) or bool(_time(replica, "failedAt"))


@dataclass(frozen=True)
class LastCopy:
    """A volume whose only data, as far as Longhorn knows, is on the node to be drained."""

    volume: str
    replicas_here: list[str]
    """Its replicas on that node (names), healthy or failed."""
    elsewhere: list[str]
    """Its other replicas, each ``name (node, why it does not count)``."""

    def describe(self) -> str:
        others = "; ".join(self.elsewhere) if self.elsewhere else "no replica on any other node"
        return f"{self.volume} (here: {', '.join(self.replicas_here)}; elsewhere: {others})"

    def as_dict(self) -> dict[str, Any]:
        return {"volume": self.volume, "replicas_here": self.replicas_here, "elsewhere": self.elsewhere}


def _why_not(replica: o.Obj, nodes: dict[str, o.Obj]) -> str | None:
    """Why a replica on another node is not a healthy copy to rely on (None: it is one)."""
    if not is_healthy(replica):
        return "failed" if _time(replica, "failedAt") else "never healthy (rebuilding or new)"
    node_name = str(o.spec(replica).get("nodeID") or "")
    node = nodes.get(node_name)
    if node is None:
        return "its node is not in the cluster"
    if o.node_ready(node) != "True":
        return "its node is not Ready"
    if o.is_unschedulable(node):
        return "its node is cordoned"
    return None


def last_copies(node: str, replicas: list[o.Obj], nodes: list[o.Obj]) -> list[LastCopy]:
    """The volumes with a replica on ``node`` that has held data and no healthy replica on another
    Ready, schedulable node, by volume name."""
    by_name = {o.name_of(n): n for n in nodes}
    by_volume: dict[str, list[o.Obj]] = {}
    for r in replicas:
        volume = o.spec(r).get("volumeName")
        if isinstance(volume, str) and volume:
            by_volume.setdefault(volume, []).append(r)
    found: list[LastCopy] = []
    for volume, group in sorted(by_volume.items()):
        here = [r for r in group if o.spec(r).get("nodeID") == node and ever_held_data(r)]
        if not here:
            continue
        elsewhere: list[str] = []
        safe = False
        for r in group:
            other = o.spec(r).get("nodeID")
            if other == node:
                continue
            why = _why_not(r, by_name)
            if why is None:
                safe = True
                break
            elsewhere.append(f"{o.name_of(r)} ({other or 'no node'}, {why})")
        if not safe:
            found.append(LastCopy(volume, sorted(o.name_of(r) for r in here), sorted(elsewhere)))
    return found


async def read_replicas(client: KubernetesClient) -> list[o.Obj] | None:
    """Every Longhorn replica; None when Longhorn is not installed (its API answers 404). Any other
    failure raises: a drain that cannot check must not go ahead."""
    try:
        return await client.list_objects(f"{LONGHORN}/replicas")
    except KubeNotFound:
        return None
