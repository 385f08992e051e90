"""Would draining a node take away the last copy of a Longhorn volume? Longhorn's own drain rule, checked
by ``kubernetes.drain`` before it cordons or evicts anything.

Longhorn keeps a PodDisruptionBudget on each node's instance-manager pod (which runs the node's
replicas) and, once the node is cordoned, removes it only as its ``node-drain-policy`` setting allows
(longhorn-manager ``InstanceManagerController.canDeleteInstanceManagerPDB``):

- ``block-if-contains-last-replica`` (the default): not while a replica on the node has no healthy
  replica of its volume on another node whose instance manager runs;
- ``allow-if-replica-is-stopped``: the same, but a replica here that is stopped (desired and current
  state) does not count;
- ``block-for-eviction`` / ``block-for-eviction-if-contains-last-replica``: Longhorn moves the replicas
  off the cordoned node itself, and the budget holds until it has;
- ``always-allow``: no protection at all.

A drain that meets the budget retries its evictions (429) until its timeout and then reports the node
not drained; a drain under ``always-allow``, or where the budget is missing, stops the last copy. So the
drain applies the first two rules itself, whatever the policy says (``always-allow`` too), and under
the eviction policies leaves it to Longhorn (refusing there would keep the node from being cordoned,
which is what starts Longhorn's eviction).

A replica (``replicas.longhorn.io``) holds data once ``spec.healthyAt`` or ``spec.failedAt`` is set; a
replica with neither (new, or a rebuild that never finished) holds nothing and is ignored, as Longhorn
ignores it. A copy elsewhere counts when it is healthy (``healthyAt`` set, ``failedAt`` not, not being
deleted, not in state error or unknown), its instance manager (``status.instanceManagerName``, or any
on its node when it names none) is running, and its node is Ready and schedulable. Longhorn does not
ask for Ready; one NotReady node is enough to lose a copy, so this does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from daemon.actions.kubernetes import objects as o
from daemon.clients.kubernetes import KubeNotFound, KubernetesClient
from daemon.clients.longhorn import LonghornClient
from daemon.errors import PermanentError

PERMISSIONS = ("list longhorn.io/replicas", "list longhorn.io/instancemanagers", "get longhorn.io/settings")
POLICY = "node-drain-policy"
DEFAULT_POLICY = "block-if-contains-last-replica"
LEFT_TO_LONGHORN = ("block-for-eviction", "block-for-eviction-if-contains-last-replica")
STOPPED_ALLOWED = "allow-if-replica-is-stopped"

Outcome = Literal["passed", "refused", "not_installed", "left_to_longhorn"]


def is_instance_manager(pod: o.Obj) -> bool:
    """A Longhorn instance-manager pod (it runs its node's replicas): ``longhorn.io/component`` label."""
    return (o.meta(pod).get("labels") or {}).get("longhorn.io/component") == "instance-manager"


def holds_data(replica: o.Obj) -> bool:
    return bool(o.spec(replica).get("healthyAt")) or bool(o.spec(replica).get("failedAt"))


def _stopped(replica: o.Obj) -> bool:
    return (
        o.spec(replica).get("desireState") == "stopped" and o.status(replica).get("currentState") == "stopped"
    )


@dataclass(frozen=True)
class LastCopy:
    """A volume whose only data, as far as Longhorn knows, is on the node to be drained."""

    volume: str
    replicas_here: list[str]
    """Its replicas on that node that hold data, each ``name (healthy|failed)``."""
    elsewhere: list[str]
    """Its other replicas, each ``name (node, why it does not count)``."""

    def describe(self) -> str:
        others = "; ".join(self.elsewhere) if self.elsewhere else "no replica on any other node"
        return f"{self.volume} (here: {', '.join(self.replicas_here)}; elsewhere: {others})"

    def as_dict(self) -> dict[str, Any]:
        return {"volume": self.volume, "replicas_here": self.replicas_here, "elsewhere": self.elsewhere}


@dataclass
class Check:
    """What the drain's Longhorn check found; ``as_dict`` goes into the drain's output."""

    outcome: Outcome
    policy: str | None = None
    volumes_here: int = 0
    """Volumes with a replica on the node that holds data (and counts under the policy)."""
    last: list[LastCopy] = field(default_factory=list)

    def listed(self, most: int = 10) -> str:
        """The volumes that would lose their last copy, the first ``most`` described, then a count."""
        shown = "; ".join(c.describe() for c in self.last[:most])
        return shown + (f"; and {len(self.last) - most} more" if len(self.last) > most else "")

    def message(self) -> str:
        if self.outcome == "not_installed":
            return "Longhorn is not installed (its replicas API answered 404): nothing to check"
        if self.outcome == "left_to_longhorn":
            return (
                f"node-drain-policy is {self.policy}: Longhorn moves the replicas off the cordoned node itself "
                "and its PodDisruptionBudget holds the drain until it has"
            )
        if self.outcome == "passed":
            return f"each of the {self.volumes_here} Longhorn volume(s) with data here has a healthy copy elsewhere"
        return f"{len(self.last)} Longhorn volume(s) would lose their last copy"

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "policy": self.policy,
            "volumes_here": self.volumes_here,
            "last_copies": [c.as_dict() for c in self.last],
            "message": self.message(),
        }


def _why_not(replica: o.Obj, nodes: dict[str, o.Obj], managers: dict[str, o.Obj]) -> str | None:
    """Why a replica on another node is not a copy to rely on (None: it is one)."""
    spec, status = o.spec(replica), o.status(replica)
    if spec.get("failedAt"):
        return "failed"
    if not spec.get("healthyAt"):
        return "never healthy (rebuilding or new)"
    if o.meta(replica).get("deletionTimestamp"):
        return "being deleted"
    if status.get("currentState") in ("error", "unknown"):
        return f"in state {status.get('currentState')}"
    node_name = str(spec.get("nodeID") or "")
    manager = str(status.get("instanceManagerName") or "")
    running = [
        m
        for name, m in managers.items()
        if (name == manager if manager else o.spec(m).get("nodeID") == node_name)
        and o.status(m).get("currentState") == "running"
    ]
    if not running:
        return (
            f"instance manager {manager} not running"
            if manager
            else "no running instance manager on its node"
        )
    node = nodes.get(node_name)
    if node is None:
        return "its node is not in the cluster"
    if o.node_ready(node) != "True":
        return "its node is not Ready"
    if o.is_unschedulable(node):
        return "its node is cordoned"
    return None


def last_copies(
    node: str, replicas: list[o.Obj], nodes: list[o.Obj], managers: list[o.Obj], policy: str
) -> tuple[int, list[LastCopy]]:
    """(How many volumes have a replica on ``node`` that holds data and counts under ``policy``, and those
    of them without a copy to rely on elsewhere), by volume name."""
    by_node = {o.name_of(n): n for n in nodes}
    by_name = {o.name_of(m): m for m in managers}
    by_volume: dict[str, list[o.Obj]] = {}
    for r in replicas:
        volume = o.spec(r).get("volumeName")
        if isinstance(volume, str) and volume:
            by_volume.setdefault(volume, []).append(r)
    here_count, found = 0, []
    for volume, group in sorted(by_volume.items()):
        here = [
            r
            for r in group
            if o.spec(r).get("nodeID") == node
            and holds_data(r)
            and not (policy == STOPPED_ALLOWED and _stopped(r))
        ]
        if not here:
            continue
        here_count += 1
        elsewhere: list[str] = []
        for r in group:
            other = o.spec(r).get("nodeID")
            if other == node:
                continue
            why = _why_not(r, by_node, by_name)
            if why is None:
                break
            elsewhere.append(f"{o.name_of(r)} ({other or 'no node'}, {why})")
        else:
            mine = sorted(
                f"{o.name_of(r)} ({'failed' if o.spec(r).get('failedAt') else 'healthy'})" for r in here
            )
            found.append(LastCopy(volume, mine, sorted(elsewhere)))
    return here_count, found


async def _items(client: KubernetesClient, path: str) -> list[o.Obj]:
    """A list's items; an answer without an ``items`` list raises (a check must not read it as empty)."""
    body = await client.request("GET", path)
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise PermanentError(f"GET {path} answered without an items list")
    return [i for i in items if isinstance(i, dict)]


async def _policy(client: KubernetesClient) -> str:
    try:
        setting = await client.get(LonghornClient(client).path("settings", POLICY))
    except KubeNotFound:
        return DEFAULT_POLICY
    value = setting.get("value")
    return value if isinstance(value, str) and value else DEFAULT_POLICY


async def check(client: KubernetesClient, node: str, nodes: list[o.Obj]) -> Check:
    """Read Longhorn's replicas (and, when the node holds data, the drain policy and the instance
    managers) now. Any failure to read raises an ActionError: a drain that cannot check must not go on."""
    try:
        replicas = await _items(client, LonghornClient(client).path("replicas"))
    except KubeNotFound:
        return Check("not_installed")
    if not any(o.spec(r).get("nodeID") == node and holds_data(r) for r in replicas):
        return Check("passed")
    policy = await _policy(client)
    if policy in LEFT_TO_LONGHORN:
        return Check("left_to_longhorn", policy)
    managers = await _items(client, LonghornClient(client).path("instancemanagers"))
    here, last = last_copies(node, replicas, nodes, managers, policy)
    return Check("refused" if last else "passed", policy, here, last)
