"""PersistentVolumeClaims: status (size, StorageClass, resize conditions, users) and guarded expansion."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, model_validator

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.kubernetes import longhorn_disks
from daemon.actions.kubernetes import objects as o
from daemon.clients.kubernetes import KubeNotFound, KubernetesClient
from daemon.errors import GuardRefused
from daemon.kits.clock import iso
from daemon.kits.names import DnsLabel, DnsSubdomain
from daemon.kits.quantities import GI, StorageQuantity, format_bytes, parse_quantity

EXPANSIONS = "kubernetes.expansions"
"""ctx.memory namespace: "namespace/name" -> the last expansion runbookd made (makes re-runs safe)."""


class PvcParams(Params):
    namespace: DnsLabel
    name: DnsSubdomain


class RoomParams(PvcParams):
    growth_percent: float = Field(20.0, gt=0, le=100)
    """Grow by this much of the current size (rounded up to a whole Gi)."""
    max_size: StorageQuantity | None = None
    """Never ask for more than this (an absolute cap); refused if below the current size."""


class ExpandParams(RoomParams):
    longhorn_check: bool = False
    """Refuse unless every Longhorn disk holding a replica of the volume can take the growth
    (``kubernetes.longhorn_expansion_room``), re-read right before the patch."""

    @model_validator(mode="after")
    def _capped(self) -> ExpandParams:
        if self.max_size is None and not self.longhorn_check:
            raise ValueError(
                "give max_size, or longhorn_check: true (the cap is then what the disks can hold)"
            )
        return self


def _sizes(pvc: o.Obj) -> tuple[int, int]:
    requested = ((o.spec(pvc).get("resources") or {}).get("requests") or {}).get("storage", "0")
    capacity = (o.status(pvc).get("capacity") or {}).get("storage", "0")
    return parse_quantity(str(requested)), parse_quantity(str(capacity))


def resize_state(pvc: o.Obj) -> dict[str, Any]:
    """Whether a resize is in flight and why, from the sizes and the resize conditions."""
    requested, capacity = _sizes(pvc)
    pending = [
        c
        for c in o.condition_summary(pvc)
        if c.get("type") in o.RESIZE_CONDITIONS and c.get("status") == "True"
    ]
    errors = [c for c in pending if str(c.get("type")).endswith("Error")]
    return {
        "resizing": requested > capacity or bool(pending),
        "resize_conditions": pending,
        "resize_errors": errors,
    }


async def _storage_class(client: KubernetesClient, pvc: o.Obj) -> tuple[str | None, bool]:
    name = o.spec(pvc).get("storageClassName")
    if not name:
        return None, False
    try:
        sc = await client.get_storage_class(str(name))
    except KubeNotFound:
        return str(name), False
    return str(name), sc.get("allowVolumeExpansion") is True


@action(
    "kubernetes.pvc_status",
    read_only=True,
    idempotent=True,
    permissions=("get persistentvolumeclaims", "get storage.k8s.io/storageclasses", "list pods"),
)
async def pvc_status(ctx: ActionContext, p: PvcParams) -> Output:
    """Report a PVC: capacity and requested size, StorageClass and whether it can expand, resize
    conditions, and the pods using it."""
    client: KubernetesClient = ctx.need("kubernetes")
    pvc = await client.get_pvc(p.namespace, p.name)
    requested, capacity = _sizes(pvc)
    sc_name, expandable = await _storage_class(client, pvc)
    users = [pod for pod in await client.pods_in_namespace(p.namespace) if p.name in o.claims_of(pod)]
    return {
        "ok": True,
        "namespace": p.namespace,
        "name": p.name,
        "phase": o.status(pvc).get("phase"),
        "volume": o.spec(pvc).get("volumeName"),
        "capacity": format_bytes(capacity),
        "capacity_bytes": capacity,
        "requested": format_bytes(requested),
        "requested_bytes": requested,
        "storage_class": sc_name,
        "allow_expansion": expandable,
        **resize_state(pvc),
        "conditions": o.condition_summary(pvc),
        "pods": [{"name": o.name_of(pod), "node": o.spec(pod).get("nodeName")} for pod in users],
        "message": f"{p.namespace}/{p.name}: {format_bytes(capacity)} of StorageClass {sc_name} "
        f"({'expandable' if expandable else 'not expandable'}), used by {len(users)} pod(s)",
    }


def expansion_target(current: int, growth_percent: float, cap: int) -> int:
    """current grown by the percentage, rounded up to a whole Gi, never above the cap."""
    grown = math.ceil(current * (1 + growth_percent / 100))
    if current >= GI:
        grown = math.ceil(grown / GI) * GI
    return min(grown, cap)


UNCAPPED = 2**62
"""No step or site cap: with longhorn_check the disks are the cap."""


def _cap(p: RoomParams, site_cap: int | None) -> tuple[int, str]:
    """The ceiling and how to name it: the step's max_size, or the config's if lower."""
    cap = parse_quantity(p.max_size) if p.max_size is not None else UNCAPPED
    if site_cap is not None and site_cap < cap:
        return site_cap, f"kubernetes.max_pvc_size {format_bytes(site_cap)} (from the config)"
    return cap, f"max_size {p.max_size}"


def _check_expandable(
    p: RoomParams, pvc: o.Obj, sc_name: str | None, expandable: bool, site_cap: int | None
) -> tuple[int, int]:
    """The (current, target) sizes, or a refusal an operator can act on."""
    where = f"{p.namespace}/{p.name}"
    if not expandable:
        why = (
            "has no StorageClass" if sc_name is None else f"uses StorageClass {sc_name}, which does not allow"
        )
        raise GuardRefused(
            f"refusing to expand {where}: it {why} volume expansion (allowVolumeExpansion). "
            "A person must move the data or free space."
        )
    requested, capacity = _sizes(pvc)
    if resize_state(pvc)["resizing"]:
        raise GuardRefused(
            f"refusing to expand {where}: a resize is already in progress (requested {format_bytes(requested)}, "
            f"capacity {format_bytes(capacity)}); wait for it with kubernetes.wait until: pvc_resized"
        )
    current = max(requested, capacity)
    cap, cap_name = _cap(p, site_cap)
    if cap < current:
        raise GuardRefused(
            f"refusing to expand {where}: {cap_name} is below its current size "
            f"{format_bytes(current)}, and a volume is never shrunk"
        )
    target = expansion_target(current, p.growth_percent, cap)
    if target <= current:
        raise GuardRefused(f"refusing to expand {where}: it is already at {cap_name}; a person must decide")
    return current, target


@action(
    "kubernetes.expand_pvc",
    read_only=False,
    idempotent=True,
    permissions=(
        "get persistentvolumeclaims",
        "patch persistentvolumeclaims",
        "get storage.k8s.io/storageclasses",
        *longhorn_disks.PERMISSIONS,
    ),
)
async def expand_pvc(ctx: ActionContext, p: ExpandParams) -> Output:
    """Grow a PVC by a percentage, up to max_size, when its StorageClass allows expansion; never shrink.

    Idempotent: the expansion is remembered, so a step re-run after a crash does not grow it twice."""
    client: KubernetesClient = ctx.need("kubernetes")
    key = f"{p.namespace}/{p.name}"
    pvc = await client.get_pvc(p.namespace, p.name)
    done = await ctx.memory.get(EXPANSIONS, key)
    mine = done is not None and (done.get("run_id"), done.get("step_id")) == (ctx.run_id, ctx.step_id)
    if done is not None and mine and _sizes(pvc)[0] >= int(done["to_bytes"]):
        return {"ok": True, "changed": False, **done, "message": f"{key} was already expanded by this step"}
    sc_name, expandable = await _storage_class(client, pvc)
    current, target = _check_expandable(p, pvc, sc_name, expandable, client.max_pvc_bytes)
    if p.longhorn_check:
        room = await _longhorn_room(client, pvc, key, current, target)
        if not room.ok:
            raise GuardRefused(f"refusing to expand {key}: {room.message()}. Nothing was changed.")
    # The resourceVersion makes this a compare-and-set: a PVC changed since it was read answers 409.
    patch = {
        "metadata": {"resourceVersion": o.meta(pvc).get("resourceVersion")},
        "spec": {"resources": {"requests": {"storage": format_bytes(target)}}},
    }
    request = client.patch_pvc(p.namespace, p.name, patch)
    record = {
        "run_id": ctx.run_id,
        "step_id": ctx.step_id,
        "at": iso(ctx.clock.now()),
        "from": format_bytes(current),
        "from_bytes": current,
        "to": format_bytes(target),
        "to_bytes": target,
        "capped": target == _cap(p, client.max_pvc_bytes)[0],
        "storage_class": sc_name,
    }
    if ctx.dry_run:
        return ctx.would(
            request.describe(client.host), pvc=key, **{k: record[k] for k in ("from", "to", "capped")}
        )
    await ctx.memory.put(EXPANSIONS, key, record)
    await client.send(request)
    return {
        "ok": True,
        "changed": True,
        "namespace": p.namespace,
        "name": p.name,
        **record,
        "message": f"expanding {key} from {record['from']} to {record['to']}"
        + (" (capped at max_size)" if record["capped"] else ""),
    }


async def _longhorn_room(
    client: KubernetesClient, pvc: o.Obj, key: str, current: int, target: int
) -> longhorn_disks.Room:
    volume = o.spec(pvc).get("volumeName")
    if not volume:
        raise GuardRefused(f"refusing to expand {key}: it is not bound to a volume")
    try:
        return await longhorn_disks.room_for(client, str(volume), current, target)
    except KubeNotFound:
        raise GuardRefused(
            f"refusing to expand {key}: its volume {volume} is not a Longhorn volume, so runbookd cannot "
            "check that the disks can hold the growth; a person must decide"
        ) from None


@action(
    "kubernetes.longhorn_expansion_room",
    read_only=True,
    idempotent=True,
    permissions=(
        "get persistentvolumeclaims",
        "get storage.k8s.io/storageclasses",
        *longhorn_disks.PERMISSIONS,
    ),
)
async def longhorn_expansion_room(ctx: ActionContext, p: RoomParams) -> Output:
    """Whether every Longhorn disk holding a replica of the PVC's volume can take the growth
    kubernetes.expand_pvc would ask for (Longhorn's own expansion check), with each disk's numbers and
    the largest size the disks could hold. ``ok: false`` when they cannot."""
    client: KubernetesClient = ctx.need("kubernetes")
    key = f"{p.namespace}/{p.name}"
    pvc = await client.get_pvc(p.namespace, p.name)
    sc_name, expandable = await _storage_class(client, pvc)
    try:
        current, target = _check_expandable(p, pvc, sc_name, expandable, client.max_pvc_bytes)
        room = await _longhorn_room(client, pvc, key, current, target)
    except GuardRefused as exc:
        return {"ok": False, "pvc": key, "disks": [], "message": str(exc)}
    return {"pvc": key, "from": format_bytes(current), "to": format_bytes(target), **room.as_dict()}


ACTIONS = [pvc_status, expand_pvc, longhorn_expansion_room]
