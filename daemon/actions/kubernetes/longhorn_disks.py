"""Can the Longhorn disks holding a volume's replicas take its growth? Longhorn's own expansion check.

Longhorn (longhorn-manager ``ReplicaScheduler.CheckReplicasSizeExpansion``) refuses to grow a volume
unless, for every disk holding one of its replicas (``replicas.longhorn.io`` ``spec.nodeID`` and
``spec.diskID``, the disk's ``diskUUID`` in ``nodes.longhorn.io`` ``status.diskStatus``), with ``n`` the
replicas of the volume on that disk and ``g`` the growth in bytes:

    storageScheduled + g x n  <=  (storageMaximum - storageReserved) x over-provisioning% / 100

and the disk is not already short of space (``storageAvailable > storageMaximum x minimal-available%``).
runbookd is stricter on the second rule and counts the growth there too
(``storageAvailable - g x n > storageMaximum x minimal-available%``): the grown volume will be written,
and a disk under its minimal-available floor stops Longhorn from scheduling anything on it. The
settings are ``storage-over-provisioning-percentage`` (default 100) and
``storage-minimal-available-percentage`` (default 25).

A PVC whose growth the disks cannot hold would sit in ``Resizing`` for ever (or fill the node's disk);
the expansion is refused before it is asked for, with each disk's numbers. The largest growth every
disk could take is reported too: that is the cap, computed from the disks at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.actions.kubernetes import objects as o
from daemon.clients.kubernetes import KubeNotFound, KubernetesClient
from daemon.clients.longhorn import LonghornClient
from daemon.kits.quantities import format_bytes

OVER_PROVISIONING = "storage-over-provisioning-percentage"
MINIMAL_AVAILABLE = "storage-minimal-available-percentage"
DEFAULTS = {OVER_PROVISIONING: 100, MINIMAL_AVAILABLE: 25}
PERMISSIONS = (
    "get longhorn.io/volumes",
    "list longhorn.io/replicas",
    "get longhorn.io/nodes",
    "get longhorn.io/settings",
)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}Gi"


@dataclass(frozen=True)
class Disk:
    node: str
    name: str
    uuid: str
    replicas: int
    maximum: int
    available: int
    scheduled: int
    reserved: int
    over_provisioning: int
    minimal_available: int

    @property
    def schedule_limit(self) -> int:
        return int((self.maximum - self.reserved) * self.over_provisioning / 100)

    @property
    def floor(self) -> int:
        return int(self.maximum * self.minimal_available / 100)

    def problems(self, growth: int) -> list[str]:
        """Why this disk cannot take ``growth`` more bytes per replica (empty: it can)."""
        more = growth * self.replicas
        out = []
        if self.maximum <= 0 or self.available <= 0:
            out.append("reports no storage (storageMaximum or storageAvailable is 0)")
        if self.scheduled + more > self.schedule_limit:
            out.append(
                f"scheduled {_gib(self.scheduled)} + {_gib(more)} = {_gib(self.scheduled + more)} > "
                f"({_gib(self.maximum)} max - {_gib(self.reserved)} reserved) x {self.over_provisioning}% "
                f"= {_gib(self.schedule_limit)}"
            )
        if self.available - more <= self.floor:
            out.append(
                f"available {_gib(self.available)} - {_gib(more)} = {_gib(self.available - more)} <= "
                f"{_gib(self.maximum)} x {self.minimal_available}% minimal available = {_gib(self.floor)}"
            )
        return out

    @property
    def max_growth(self) -> int:
        """The most bytes each replica of the volume on this disk may grow by."""
        by_schedule = (self.schedule_limit - self.scheduled) // self.replicas
        by_space = (self.available - self.floor - 1) // self.replicas
        return max(0, min(by_schedule, by_space))

    def as_dict(self, growth: int) -> dict[str, Any]:
        return {
            "node": self.node,
            "disk": self.name,
            "replicas_of_volume": self.replicas,
            "storage_maximum": self.maximum,
            "storage_available": self.available,
            "storage_scheduled": self.scheduled,
            "storage_reserved": self.reserved,
            "schedule_limit": self.schedule_limit,
            "minimal_available_bytes": self.floor,
            "max_growth": self.max_growth,
            "max_growth_human": format_bytes(self.max_growth)
            if self.max_growth % 2**20 == 0
            else _gib(self.max_growth),
            "problems": self.problems(growth),
        }


@dataclass(frozen=True)
class Room:
    volume: str
    current: int
    target: int
    disks: tuple[Disk, ...]
    missing: tuple[str, ...] = ()
    """Replicas whose disk no Longhorn node reports: Longhorn itself refuses then."""

    @property
    def growth(self) -> int:
        return self.target - self.current

    @property
    def ok(self) -> bool:
        return bool(self.disks) and not self.missing and not any(d.problems(self.growth) for d in self.disks)

    @property
    def cap(self) -> int:
        """The largest size every disk could take: current + the smallest per-disk max growth."""
        return self.current + min((d.max_growth for d in self.disks), default=0)

    def message(self) -> str:
        grow = (
            f"{format_bytes(self.current)} -> {format_bytes(self.target)} (+{_gib(self.growth)} per replica)"
        )
        if self.ok:
            return f"Longhorn volume {self.volume}: the disks of its {self.replica_count} replica(s) can take {grow}"
        if not self.disks:
            return f"Longhorn volume {self.volume} has no scheduled replica: its disks cannot be checked"
        bad = [
            f"{d.node}/{d.name}: {'; '.join(d.problems(self.growth))}"
            for d in self.disks
            if d.problems(self.growth)
        ]
        bad += [f"replica {r}: its disk is not reported by any Longhorn node" for r in self.missing]
        return (
            f"Longhorn cannot hold {grow} of volume {self.volume}: {' | '.join(bad)}. "
            f"The disks could take at most {_gib(self.cap)} in total (+{_gib(self.cap - self.current)})"
        )

    @property
    def replica_count(self) -> int:
        return sum(d.replicas for d in self.disks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "volume": self.volume,
            "current_bytes": self.current,
            "target_bytes": self.target,
            "growth_bytes": self.growth,
            "cap_bytes": self.cap,
            "cap": _gib(self.cap),
            "disks": [d.as_dict(self.growth) for d in self.disks],
            "missing_disks": list(self.missing),
            "message": self.message(),
        }


async def _setting(client: KubernetesClient, name: str) -> int:
    try:
        obj = await client.get(LonghornClient(client).path("settings", name))
    except KubeNotFound:
        return DEFAULTS[name]
    value = obj.get("value")
    return int(str(value)) if str(value).strip().isdigit() else DEFAULTS[name]


def _find_disk(node: o.Obj, uuid: str) -> tuple[str, o.Obj, o.Obj] | None:
    for name, disk in (o.status(node).get("diskStatus") or {}).items():
        if isinstance(disk, dict) and disk.get("diskUUID") == uuid:
            return str(name), disk, (o.spec(node).get("disks") or {}).get(name) or {}
    return None


async def room_for(client: KubernetesClient, volume: str, current: int, target: int) -> Room:
    """Read the volume's replicas, their disks and the settings now; raises KubeNotFound for a volume
    Longhorn does not know (not a Longhorn volume)."""
    await client.get(LonghornClient(client).path("volumes", volume))
    replicas = [
        r
        for r in await client.list_objects(
            LonghornClient(client).path("replicas"), label_selector=f"longhornvolume={volume}"
        )
        if o.spec(r).get("volumeName") == volume and o.spec(r).get("nodeID")
    ]
    over, minimal = await _setting(client, OVER_PROVISIONING), await _setting(client, MINIMAL_AVAILABLE)
    counts: dict[tuple[str, str], int] = {}
    for r in replicas:
        key = (str(o.spec(r)["nodeID"]), str(o.spec(r).get("diskID", "")))
        counts[key] = counts.get(key, 0) + 1
    disks, missing = [], []
    nodes: dict[str, o.Obj] = {}
    for (node_name, uuid), n in sorted(counts.items()):
        if node_name not in nodes:
            nodes[node_name] = await client.get(LonghornClient(client).path("nodes", node_name))
        found = _find_disk(nodes[node_name], uuid)
        if found is None:
            missing.append(f"on {node_name} disk {uuid}")
            continue
        name, status, spec = found
        disks.append(
            Disk(
                node_name,
                name,
                uuid,
                n,
                int(status.get("storageMaximum") or 0),
                int(status.get("storageAvailable") or 0),
                int(status.get("storageScheduled") or 0),
                int(spec.get("storageReserved") or 0),
                over,
                minimal,
            )
        )
    return Room(volume, current, target, tuple(disks), tuple(missing))
