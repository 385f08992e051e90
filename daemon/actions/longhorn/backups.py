"""Mutating Longhorn actions: take a backup, delete backups by the retention rules, clear a stuck backup.

Each re-reads what it acts on right before acting: the deletion re-applies the retention rules to the
volume's backups as they are now (never the newest Completed one, never the only one), the clearing
re-checks that the backup is still running and past the threshold, and deletes carry a UID precondition
so that exactly the object checked is deleted."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from pydantic import Field

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.longhorn.model import Backup, retention_verdicts
from daemon.actions.longhorn.status import MAX_DELETE, RetentionParams, longhorn
from daemon.clients.kubernetes import KubeConflict, KubeNotFound, WriteRequest
from daemon.clients.longhorn import DEFAULT_TARGET, LABEL_BACKUP_VOLUME, LonghornClient
from daemon.errors import GuardRefused, TemporaryError
from daemon.kits.clock import iso
from daemon.kits.durations import Duration
from daemon.kits.names import DnsSubdomain

POLL = 2.0


def _name(ctx: ActionContext, volume: str) -> str:
    """The same name for the same step and volume, so a step re-run after a crash finds its own objects."""
    digest = hashlib.sha256(f"{ctx.run_id}/{ctx.step_id}/{volume}".encode()).hexdigest()[:12]
    return f"runbookd-{digest}"


class CreateParams(Params):
    volumes: list[DnsSubdomain] = Field(min_length=1, max_length=20)
    """Longhorn volume names (``pvc-...``); one backup each, one after the other."""
    timeout: Duration = 1800.0
    """How long to wait, in all, for the backups to reach Completed."""
    interval: Duration = Field(POLL, ge=0.01, le=60)


async def _send(lh: LonghornClient, req: WriteRequest) -> bool:
    """Send a create; False when the object already exists (a re-run of the same step)."""
    try:
        await lh.kube.send(req)
    except KubeConflict:
        return False
    return True


async def _wait(read: Any, done: Any, deadline: float, interval: float) -> dict[str, Any] | None:
    """Poll ``read()`` until ``done(obj)``; None at the deadline."""
    while True:
        try:
            obj: dict[str, Any] = await read()
            if done(obj):
                return obj
        except (KubeNotFound, TemporaryError):
            pass
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(min(interval, max(deadline - time.monotonic(), 0.01)))


async def _backup_one(
    ctx: ActionContext, lh: LonghornClient, volume: str, deadline: float, interval: float
) -> dict[str, Any]:
    vol = await lh.volume(volume)
    status = vol.get("status") or {}
    if status.get("isStandby"):
        raise GuardRefused(f"volume {volume} is a standby (DR) volume: Longhorn does not back it up")
    running = [
        b for b in map(Backup.of, await lh.backups(volume)) if b.running and b.name != _name(ctx, volume)
    ]
    if running:
        b = running[0]
        since = iso(b.requested_at) if b.requested_at else "?"
        raise GuardRefused(
            f"backup {b.name} of volume {volume} is still {b.state or 'New'} (since {since}); a new one would "
            "queue behind it. Clear it first (longhorn.clear_stuck_backup) if it is stuck"
        )
    target = (vol.get("spec") or {}).get("backupTargetName") or DEFAULT_TARGET
    name = _name(ctx, volume)
    snap = lh.create_snapshot(name, volume, {"runbookd/run": ctx.run_id})
    backup = lh.create_backup(name, volume, name, target)
    if ctx.dry_run:
        return {
            "volume": volume,
            "ok": True,
            "dry_run": True,
            "requests": [snap.describe(lh.kube.host), backup.describe(lh.kube.host)],
        }
    await _send(lh, snap)
    ready = await _wait(
        lambda: lh.snapshot(name),
        lambda o: (
            (o.get("status") or {}).get("readyToUse") is True or bool((o.get("status") or {}).get("error"))
        ),
        deadline,
        interval,
    )
    if ready is None or (ready.get("status") or {}).get("error"):
        said = (ready or {}).get("status", {}).get("error") or "not ready in time"
        return {"volume": volume, "ok": False, "snapshot": name, "error": f"snapshot {name}: {said}"}
    await _send(lh, backup)
    final = await _wait(
        lambda: lh.backup(name),
        lambda o: (o.get("status") or {}).get("state") in ("Completed", "Error"),
        deadline,
        interval,
    )
    if final is None:
        return {
            "volume": volume,
            "ok": False,
            "snapshot": name,
            "backup": name,
            "error": f"backup {name} did not complete in time; it may be stuck (see longhorn.clear_stuck_backup)",
        }
    b = Backup.of(final)
    if b.state == "Error":
        return {
            "volume": volume,
            "ok": False,
            "snapshot": name,
            "backup": name,
            "error": f"backup {name}: Error: {b.error}",
        }
    return {
        "volume": volume,
        "ok": True,
        "snapshot": name,
        "backup": name,
        "url": b.url,
        "completed_at": iso(b.completed_at) if b.completed_at else None,
    }


@action(
    "longhorn.create_backup",
    read_only=False,
    idempotent=True,
    permissions=(
        "get longhorn.io/volumes",
        "list longhorn.io/backups",
        "get longhorn.io/backups",
        "create longhorn.io/backups",
        "get longhorn.io/snapshots",
        "create longhorn.io/snapshots",
    ),
)
async def create_backup(ctx: ActionContext, p: CreateParams) -> Output:
    """Snapshot and back up each volume as Longhorn's own API does (a Snapshot, then a Backup of it),
    waiting until each backup is Completed; an Error backup or the timeout fails the step.

    Refuses a volume that already has a backup running: a new one would queue behind it."""
    lh = longhorn(ctx)
    deadline = time.monotonic() + p.timeout
    results = [await _backup_one(ctx, lh, v, deadline, p.interval) for v in p.volumes]
    failed = [r for r in results if not r["ok"]]
    if ctx.dry_run:
        return ctx.would(*[req for r in results for req in r["requests"]], volumes=list(p.volumes))
    done = [r["backup"] for r in results if r["ok"]]
    message = f"{len(done)} backup(s) Completed: {', '.join(done) or 'none'}"
    if failed:
        message += "; failed: " + "; ".join(str(r["error"]) for r in failed)
    return {"ok": not failed, "results": results, "message": message}


class DeleteParams(RetentionParams):
    backups: list[DnsSubdomain] = Field(min_length=1, max_length=MAX_DELETE)
    """The Backup objects the approved plan lists; each is re-checked against the plan rules first."""


async def _volume_now(lh: LonghornClient, name: str) -> tuple[Backup | None, list[Backup]]:
    """The backup ``name`` and every backup of its volume, as they are now; (None, []) when it is gone.

    Read by the ``backup-volume`` label when the backup bears it (one volume's backups, not every Backup
    again for each of up to 500 deletions), else all of them. A backup of that volume without the label
    is then left out, which can only make the rules keep more: a backup missing from the view never makes
    another one deletable."""
    try:
        obj = await lh.backup(name)
    except KubeNotFound:
        return None, []
    volume = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_BACKUP_VOLUME)
    listed = [Backup.of(o) for o in await lh.backups(volume if isinstance(volume, str) and volume else None)]
    target = next((b for b in listed if b.name == name), None)  # None: deleted between the two reads
    return target, listed


@action(
    "longhorn.delete_backups",
    read_only=False,
    idempotent=True,
    permissions=("get longhorn.io/backups", "list longhorn.io/backups", "delete longhorn.io/backups"),
)
async def delete_backups(ctx: ActionContext, p: DeleteParams) -> Output:
    """Delete the listed Backup objects (which deletes them from the backup store), one at a time, each
    only if the retention rules still say so for its volume on its backup target as they are right now.
    One already being deleted counts as gone (a re-run after a restart finds its own deletes so).

    Never the newest Completed backup, never a volume's only backup: those are refused, not deleted."""
    lh, deleted, refused, gone, would = longhorn(ctx), [], [], [], []
    for name in p.backups:
        target, listed = await _volume_now(lh, name)
        if target is None or target.deleting:  # a delete (ours, before a restart, or anyone's) under way
            gone.append(name)
            continue
        mine = [b for b in listed if (b.volume, b.target) == (target.volume, target.target)]
        if p.volumes and target.volume not in p.volumes:
            refused.append({"backup": name, "reason": f"volume {target.volume} is not in the plan's volumes"})
            continue
        verdict = retention_verdicts(mine, p.keep_last, p.keep_days, ctx.clock.now())[name]
        if not verdict.delete:
            refused.append({"backup": name, "volume": target.volume, "reason": verdict.reason})
            continue
        req = lh.delete_backup(name, target.uid)
        if ctx.dry_run:
            would.append(req.describe(lh.kube.host))
            continue
        try:
            await lh.kube.send(req)
        except KubeNotFound:
            gone.append(name)
            continue
        deleted.append({"backup": name, "volume": target.volume, "reason": verdict.reason})
    if ctx.dry_run:
        return ctx.would(*would, refused=refused)
    message = f"deleted {len(deleted)} backup(s)"
    if refused:
        message += f"; refused {len(refused)}: " + "; ".join(f"{r['backup']}: {r['reason']}" for r in refused)
    return {
        "ok": not refused,
        "deleted": deleted,
        "refused": refused,
        "already_gone": gone,
        "message": message,
    }


class ClearParams(Params):
    backups: list[DnsSubdomain] = Field(min_length=1, max_length=20)
    """Backups the check found stuck."""
    stuck_after: Duration = 6 * 3600.0
    """Only a backup Pending/InProgress for longer than this is deleted."""


@action(
    "longhorn.clear_stuck_backup",
    read_only=False,
    idempotent=True,
    permissions=("get longhorn.io/backups", "delete longhorn.io/backups"),
)
async def clear_stuck_backup(ctx: ActionContext, p: ClearParams) -> Output:
    """Delete a backup stuck Pending/InProgress for longer than ``stuck_after`` (Longhorn's documented
    workaround: a stuck backup blocks every later backup of its volume); a new backup may then run.

    Re-reads each backup first: one that finished, failed, or is younger than the threshold is refused."""
    lh, now = longhorn(ctx), ctx.clock.now()
    cleared, refused, gone, would = [], [], [], []
    for name in p.backups:
        try:
            b = Backup.of(await lh.backup(name))
        except KubeNotFound:
            gone.append(name)
            continue
        age = b.stuck_for(now, p.stuck_after)
        if age is None:
            state = b.state or "New, synced from the backup store and not read yet"
            why = f"it is {state}" if not b.running else f"it has run less than {p.stuck_after / 3600:g}h"
            refused.append({"backup": name, "volume": b.volume, "reason": f"not stuck: {why}"})
            continue
        req = lh.delete_backup(name, b.uid)
        if ctx.dry_run:
            would.append(req.describe(lh.kube.host))
            continue
        try:
            await lh.kube.send(req)
        except KubeNotFound:
            gone.append(name)
            continue
        cleared.append({**b.brief(now), "running_hours": round(age / 3600, 1)})
    if ctx.dry_run:
        return ctx.would(*would, refused=refused)
    message = f"cleared {len(cleared)} stuck backup(s): {', '.join(c['backup'] for c in cleared) or 'none'}"
    if refused:
        message += "; refused: " + "; ".join(f"{r['backup']} ({r['reason']})" for r in refused)
    return {
        "ok": not refused,
        "cleared": cleared,
        "refused": refused,
        "already_gone": gone,
        "message": message,
    }


ACTIONS = [create_backup, delete_backups, clear_stuck_backup]
