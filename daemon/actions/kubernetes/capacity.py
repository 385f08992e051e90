"""Can the rest of the cluster absorb a drained node's pods? Requests against free allocatable.

For each pod a drain would evict (not DaemonSet or mirror pods, not finished ones) its effective
request is taken as the scheduler does: per resource, the larger of the sum over its containers and the
largest init container, plus the pod overhead. The receiving nodes are the other nodes that are Ready,
schedulable and carry no NoSchedule/NoExecute taint (tolerations are not credited: the estimate errs
towards refusing). A node's free capacity is its ``status.allocatable`` minus the requests of the pods
bound to it that have not finished (cpu, memory, and the pod count against ``allocatable.pods``).

The pods are placed largest first, each on the node with the most free memory that still fits its cpu,
memory and one pod slot. If any pod finds no node, the drain would leave it Pending: refused, with the
totals per resource and the pods that do not fit. A pod's own node selectors and affinities are not
modelled, so "fits" is necessary, not sufficient; "does not fit" is certain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from daemon.actions.kubernetes import objects as o
from daemon.kits.quantities import format_bytes, parse_quantity

RESOURCES = ("cpu", "memory", "pods")


def cpu_millis(text: object) -> int:
    """Millicores in a cpu quantity: 500m, 1, 0.25, 2k (0 for anything unreadable)."""
    s = str(text).strip()
    try:
        if s.endswith("m"):
            return int(Decimal(s[:-1]))
        return int(Decimal(parse_quantity(s) if s[-1:].isalpha() else Decimal(s)) * 1000)
    except (InvalidOperation, ValueError, IndexError):
        return 0


def _bytes(text: object) -> int:
    try:
        return parse_quantity(str(text))
    except ValueError:
        return 0


def _container_requests(c: o.Obj) -> tuple[int, int]:
    req = ((c.get("resources") or {}).get("requests")) or {}
    return cpu_millis(req.get("cpu", "0")), _bytes(req.get("memory", "0"))


def pod_requests(pod: o.Obj) -> tuple[int, int]:
    """(cpu millicores, memory bytes) the scheduler reserves for the pod."""
    spec = o.spec(pod)
    cpu = mem = 0
    for c in spec.get("containers") or []:
        dc, dm = _container_requests(c)
        cpu, mem = cpu + dc, mem + dm
    for c in spec.get("initContainers") or []:
        ic, im = _container_requests(c)
        cpu, mem = max(cpu, ic), max(mem, im)
    overhead = spec.get("overhead") or {}
    return cpu + cpu_millis(overhead.get("cpu", "0")), mem + _bytes(overhead.get("memory", "0"))


def moves(pod: o.Obj) -> bool:
    """Whether a drain would send this pod elsewhere (and the scheduler would have to place it)."""
    owner = o.controller_of(pod)
    if owner is not None and owner.get("kind") == "DaemonSet":
        return False
    return not (o.is_mirror(pod) or o.is_finished(pod))


@dataclass
class Free:
    node: str
    cpu: int
    memory: int
    pods: int

    def fits(self, cpu: int, memory: int) -> bool:
        return self.cpu >= cpu and self.memory >= memory and self.pods >= 1

    def take(self, cpu: int, memory: int) -> None:
        self.cpu, self.memory, self.pods = self.cpu - cpu, self.memory - memory, self.pods - 1


def _receives(node: o.Obj, target: str) -> bool:
    if o.name_of(node) == target or o.node_ready(node) != "True" or o.is_unschedulable(node):
        return False
    taints = o.spec(node).get("taints") or []
    return not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in taints if isinstance(t, dict))


def free_capacity(nodes: list[o.Obj], pods: list[o.Obj], target: str) -> list[Free]:
    used: dict[str, list[int]] = {}
    for pod in pods:
        where = o.spec(pod).get("nodeName")
        if where and not o.is_finished(pod):
            cpu, mem = pod_requests(pod)
            u = used.setdefault(str(where), [0, 0, 0])
            u[0], u[1], u[2] = u[0] + cpu, u[1] + mem, u[2] + 1
    out = []
    for node in nodes:
        if not _receives(node, target):
            continue
        alloc = o.status(node).get("allocatable") or {}
        u = used.get(o.name_of(node), [0, 0, 0])
        out.append(
            Free(
                o.name_of(node),
                cpu_millis(alloc.get("cpu", "0")) - u[0],
                _bytes(alloc.get("memory", "0")) - u[1],
                int(str(alloc.get("pods", "0")) or 0) - u[2],
            )
        )
    return out


@dataclass
class Capacity:
    node: str
    needed: dict[str, int]
    free: dict[str, int]
    receivers: list[str]
    unplaced: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unplaced

    def _shown(self, values: dict[str, int]) -> str:
        return (
            f"cpu {values['cpu']}m, memory {format_bytes(max(values['memory'], 0))}, {values['pods']} pod(s)"
        )

    def message(self) -> str:
        head = (
            f"the pods to move from {self.node} request {self._shown(self.needed)}; the "
            f"{len(self.receivers)} other Ready schedulable node(s) ({', '.join(self.receivers) or 'none'}) "
            f"have {self._shown(self.free)} free"
        )
        if self.ok:
            return head + ": they fit"
        listed = ", ".join(self.unplaced[:10]) + (
            f" and {len(self.unplaced) - 10} more" if len(self.unplaced) > 10 else ""
        )
        return head + f"; these would stay Pending: {listed}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "node": self.node,
            "needed": self.needed,
            "free": self.free,
            "receivers": self.receivers,
            "unplaced": self.unplaced,
            "message": self.message(),
        }


def absorb(nodes: list[o.Obj], pods: list[o.Obj], target: str, moving: list[o.Obj]) -> Capacity:
    """Place ``moving`` (pods of ``target``) on the other nodes, largest first."""
    free = free_capacity(nodes, pods, target)
    totals = {
        "cpu": sum(f.cpu for f in free),
        "memory": sum(f.memory for f in free),
        "pods": sum(f.pods for f in free),
    }
    sized = sorted(
        ((pod_requests(p), o.ref(p)) for p in moving), key=lambda x: (x[0][1], x[0][0]), reverse=True
    )
    needed = {
        "cpu": sum(c for (c, _), _ in sized),
        "memory": sum(m for (_, m), _ in sized),
        "pods": len(sized),
    }
    unplaced = []
    for (cpu, mem), ref in sized:
        fitting = [f for f in free if f.fits(cpu, mem)]
        if not fitting:
            unplaced.append(f"{ref} (cpu {cpu}m, memory {format_bytes(mem)})")
            continue
        max(fitting, key=lambda f: (f.memory, f.cpu)).take(cpu, mem)
    return Capacity(target, needed, totals, [f.node for f in free], unplaced)
