"""Read-only Longhorn actions: the backup state of every volume, and the retention plan."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.longhorn.model import Backup, by_volume, newest_first, volume_verdicts
from daemon.clients.longhorn import DEFAULT_TARGET, LonghornClient
from daemon.kits.clock import iso
from daemon.kits.durations import Duration
from daemon.kits.names import DnsSubdomain

READ = ("list longhorn.io/volumes", "list longhorn.io/backups")


def longhorn(ctx: ActionContext) -> LonghornClient:
    return LonghornClient(ctx.need("kubernetes"))


class StatusParams(Params):
    max_age: Duration = 26 * 3600.0
    """A volume whose last Completed backup is older than this is ``stale``."""
    stuck_after: Duration = 6 * 3600.0
    """A backup Pending or InProgress for longer than this is ``stuck``."""
    volumes: list[DnsSubdomain] = Field(default_factory=list, max_length=200)
    """Only these volumes (default: every volume)."""


def _pvc(volume: dict[str, Any]) -> tuple[str | None, str | None]:
    ks = (volume.get("status") or {}).get("kubernetesStatus") or {}
    return ks.get("pvcName") or None, ks.get("namespace") or None


def _target_view(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for t in targets:
        status = t.get("status") or {}
        said = [str(c.get("message")) for c in status.get("conditions") or () if c.get("message")]
        out.append(
            {
                "name": (t.get("metadata") or {}).get("name"),
                "url": (t.get("spec") or {}).get("backupTargetURL"),
                "available": status.get("available") is True,
                "message": "; ".join(said),
            }
        )
    return out


def _volume_view(
    name: str, vol: dict[str, Any], backups: list[Backup], p: StatusParams, now: float
) -> dict[str, Any]:
    pvc, pvc_ns = _pvc(vol)
    done = newest_first(backups)
    last = done[0] if done else None
    age = (now - last.completed_at) if last and last.completed_at else None
    # A backup running and not yet stuck is the fix under way: give it until stuck_after.
    underway = any(b.running and b.stuck_for(now, p.stuck_after) is None for b in backups)
    return {
        "volume": name,
        "pvc": pvc,
        "namespace": pvc_ns,
        "backup_target": (vol.get("spec") or {}).get("backupTargetName") or DEFAULT_TARGET,
        "backups": len(backups),
        "completed": len(done),
        "last_completed": last.name if last else None,
        "last_completed_at": iso(last.completed_at) if last and last.completed_at else None,
        "age_hours": round(age / 3600, 1) if age is not None else None,
        "stale": bool(backups) and (age is None or age > p.max_age) and not underway,
        "underway": underway,
        "running": [b.brief(now) for b in backups if b.running],
        "errors": [{**b.brief(now), "error": b.error} for b in backups if b.state == "Error"],
    }


@action(
    "longhorn.backup_status",
    read_only=True,
    idempotent=True,
    permissions=(*READ, "list longhorn.io/backuptargets"),
)
async def backup_status(ctx: ActionContext, p: StatusParams) -> Output:
    """Per Longhorn volume: its PVC, last Completed backup, backups stuck Pending/InProgress longer than
    ``stuck_after``, Error backups, volumes never backed up, and whether the backup target is available.
    A volume is stale when its last Completed backup is older than ``max_age`` (or it has none) and no
    backup of it is under way (running, not yet stuck).

    ``findings``: the stale volumes, the stuck backups and an unavailable backup target."""
    lh, now = longhorn(ctx), ctx.clock.now()
    volumes = {str(v["metadata"]["name"]): v for v in await lh.volumes() if v.get("metadata")}
    backups = by_volume(await lh.backups())
    targets = _target_view(await lh.backup_targets())
    wanted = set(p.volumes) or set(volumes)
    views = [_volume_view(n, volumes[n], backups.get(n, []), p, now) for n in sorted(wanted & set(volumes))]
    stale = [
        {k: v[k] for k in ("volume", "pvc", "namespace", "last_completed_at", "age_hours")}
        for v in views
        if v["stale"]
    ]
    stuck = []
    for name in sorted(wanted):
        for b in backups.get(name, []):
            age = b.stuck_for(now, p.stuck_after)
            if age is not None:
                stuck.append({**b.brief(now), "running_hours": round(age / 3600, 1)})
    down = [t for t in targets if not t["available"]]
    findings: list[dict[str, Any]] = [{"kind": "stale", **s} for s in stale]
    findings += [{"kind": "stuck", **s} for s in stuck]
    findings += [
        {"kind": "backup_target_unavailable", "name": t["name"], "message": t["message"]} for t in down
    ]
    never = [v["volume"] for v in views if v["backups"] == 0]
    parts = [
        f"{len(views)} volume(s)",
        f"{len(stale)} stale (no Completed backup within {p.max_age / 3600:g}h)",
    ]
    parts.append(f"{len(stuck)} backup(s) stuck over {p.stuck_after / 3600:g}h")
    if down:
        parts.append(f"backup target(s) not available: {', '.join(str(t['name']) for t in down)}")
    if never:
        parts.append(f"{len(never)} volume(s) never backed up")
    return {
        "ok": True,
        "namespace": lh.namespace,
        "backup_targets": targets,
        "target_available": bool(targets) and not down,
        "volumes": views,
        "stale": stale,
        "stuck": stuck,
        "errors": [e for v in views for e in v["errors"]],
        "no_backup": never,
        "findings": findings,
        "message": "; ".join(parts),
    }


MAX_DELETE = 500
"""Backups one plan lists for deletion at most (``longhorn.delete_backups`` takes no more): a first run
over a large backlog takes the oldest, the next runs the rest."""


class RetentionParams(Params):
    keep_last: int = Field(7, ge=1, le=1000)
    """Keep at least this many Completed backups per volume, whatever their age."""
    keep_days: float = Field(30, ge=0, le=3650)
    """Keep every Completed backup younger than this many days."""
    volumes: list[DnsSubdomain] = Field(default_factory=list, max_length=200)
    """Only these volumes (default: every volume that has backups)."""


def plan_for(
    objects: list[dict[str, Any]], p: RetentionParams, now: float
) -> dict[str, list[dict[str, Any]]]:
    """Per volume: each backup with the verdict of the retention rules, applied to the volume's
    backups on each backup target apart (``verdicts``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for volume, backups in sorted(by_volume(objects).items()):
        if p.volumes and volume not in p.volumes:
            continue
        verdicts = volume_verdicts(backups, p.keep_last, p.keep_days, now)
        out[volume] = [
            {
                **b.brief(now),
                "target": b.target,
                "delete": verdicts[b.name].delete,
                "reason": verdicts[b.name].reason,
            }
            for b in sorted(backups, key=lambda b: b.completed_at or b.requested_at or 0.0, reverse=True)
        ]
    return out


@action(
    "longhorn.plan_backup_retention",
    read_only=True,
    idempotent=True,
    permissions=("list longhorn.io/backups",),
)
async def plan_backup_retention(ctx: ActionContext, p: RetentionParams) -> Output:
    """Which Completed Longhorn backups are beyond ``keep_last`` per volume AND older than ``keep_days``.

    Never the newest Completed backup of a volume, never a volume's only one, never one not Completed.
    ``findings`` (and ``delete``): the backups the plan would delete, oldest last."""
    now = ctx.clock.now()
    plan = plan_for(await longhorn(ctx).backups(), p, now)
    delete = [
        {k: b[k] for k in ("backup", "volume", "target", "at", "age_hours", "reason")}
        for bs in plan.values()
        for b in bs
        if b["delete"]
    ]
    kept = sum(1 for bs in plan.values() for b in bs if not b["delete"])
    later = len(delete) - MAX_DELETE
    if later > 0:  # the oldest first; the rest are planned again tomorrow
        oldest = {d["backup"] for d in sorted(delete, key=lambda d: -(d["age_hours"] or 0.0))[:MAX_DELETE]}
        delete = [d for d in delete if d["backup"] in oldest]
    message = (
        f"{len(delete)} backup(s) to delete, {kept} kept, over {len(plan)} volume(s) "
        f"(keep_last {p.keep_last}, keep_days {p.keep_days:g})"
    )
    if later > 0:
        message += f"; {later} more beyond retention are left to a later run (at most {MAX_DELETE} a run)"
    return {
        "ok": True,
        "keep_last": p.keep_last,
        "keep_days": p.keep_days,
        "volumes": plan,
        "delete": delete,
        "backups": [d["backup"] for d in delete],
        "truncated": later > 0,
        "findings": delete,
        "message": message,
    }


ACTIONS = [backup_status, plan_backup_retention]
