"""Longhorn objects as the actions reason about them: backups with their state and times, and the
retention rules (never the newest Completed backup, never a volume's only one), shared by the plan and
by the deletion that re-checks it right before acting."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from daemon.clients.longhorn import LABEL_BACKUP_TARGET, LABEL_BACKUP_VOLUME
from daemon.kits.clock import iso, parse_iso

RUNNING_STATES = frozenset({"Pending", "InProgress"})
"""Not finished. A Backup in state "" is running too when it names a snapshot: one asked for that no
controller has picked up yet (see ``Backup.running``)."""
DAY = 86400.0


def _time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Backup:
    name: str
    uid: str
    volume: str
    target: str
    """The BackupTarget it is stored in (label ``backup-target``, else ``status.backupTargetName``; ""
    before Longhorn 1.8, which had one target). Retention counts each volume's backups per target:
    the newest backup on one target is no copy of the data on another."""
    state: str
    requested_at: float | None
    """When the Backup object was created (the backup was asked for)."""
    completed_at: float | None
    """``status.backupCreatedAt``: when the upload finished (Completed backups)."""
    error: str
    url: str
    snapshot: str = ""
    """``spec.snapshotName``: empty on a Backup Longhorn made from what it found in the backup store
    (longhorn-manager backup_controller: "the backup already exists in the remote backup target")."""
    deleting: bool = False
    """``metadata.deletionTimestamp`` is set: Longhorn is removing it from the backup store (its finalizer
    holds the object until then, for as long as the target is unreachable). It is no copy to count on."""

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Backup:
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        labels = meta.get("labels") or {}
        completed = _time(status.get("backupCreatedAt")) or _time(status.get("snapshotCreatedAt"))
        return cls(
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            volume=str(labels.get(LABEL_BACKUP_VOLUME) or status.get("volumeName") or ""),
            target=str(labels.get(LABEL_BACKUP_TARGET) or status.get("backupTargetName") or ""),
            state=str(status.get("state") or ""),
            requested_at=_time(meta.get("creationTimestamp")),
            completed_at=completed if status.get("state") == "Completed" else None,
            error=str(status.get("error") or ""),
            url=str(status.get("url") or ""),
            snapshot=str((obj.get("spec") or {}).get("snapshotName") or ""),
            deleting=bool(meta.get("deletionTimestamp")),
        )

    @property
    def completed(self) -> bool:
        """Completed and staying: a backup being deleted keeps no history and protects no other."""
        return self.state == "Completed" and not self.deleting

    @property
    def running(self) -> bool:
        """Pending or InProgress, or not picked up yet ("") when it names a snapshot to back up. A
        Backup synced from the store (no snapshot name) waits in "" until Longhorn has read it: it is
        finished data, never a stuck backup to clear."""
        return self.state in RUNNING_STATES or (self.state == "" and bool(self.snapshot))

    def stuck_for(self, now: float, threshold: float) -> float | None:
        """Seconds it has been running, when that is longer than ``threshold``."""
        if not self.running or self.requested_at is None:
            return None
        age = now - self.requested_at
        return age if age > threshold else None

    def brief(self, now: float) -> dict[str, Any]:
        at = self.completed_at if self.completed else self.requested_at
        return {
            "backup": self.name,
            "volume": self.volume,
            "state": self.state or "New",
            "at": iso(at) if at is not None else None,
            "age_hours": round((now - at) / 3600, 1) if at is not None else None,
        }


def grouped(backups: Iterable[Backup], key: Callable[[Backup], str]) -> dict[str, list[Backup]]:
    out: dict[str, list[Backup]] = {}
    for b in backups:
        out.setdefault(key(b), []).append(b)
    return out


def by_volume(objects: list[dict[str, Any]]) -> dict[str, list[Backup]]:
    return grouped(map(Backup.of, objects), lambda b: b.volume)


def by_target(backups: list[Backup]) -> dict[str, list[Backup]]:
    """One volume's backups by the BackupTarget they are stored in."""
    return grouped(backups, lambda b: b.target)


def newest_first(backups: list[Backup]) -> list[Backup]:
    """Completed backups, newest first (by completion time, then name for a stable order)."""
    done = [b for b in backups if b.completed and b.completed_at is not None]
    return sorted(done, key=lambda b: (b.completed_at or 0.0, b.name), reverse=True)


@dataclass(frozen=True)
class Verdict:
    delete: bool
    reason: str


def retention_verdicts(
    backups: list[Backup], keep_last: int, keep_days: float, now: float
) -> dict[str, Verdict]:
    """For each backup of ONE volume on ONE backup target: delete it or keep it, and why. A backup is deleted only when it is
    Completed, is not among the newest ``keep_last`` Completed ones, is older than ``keep_days``, is not
    the newest Completed backup and is not the volume's only Completed one; anything else is kept."""
    ordered = newest_first(backups)
    out: dict[str, Verdict] = {}
    for b in backups:
        if b.deleting:
            out[b.name] = Verdict(False, "already being deleted (metadata.deletionTimestamp is set)")
        elif not b.completed or b.completed_at is None:
            out[b.name] = Verdict(False, f"{b.state or 'New'}, not Completed: retention leaves it alone")
    for rank, b in enumerate(ordered):
        age_days = (now - (b.completed_at or now)) / DAY
        if rank == 0:
            out[b.name] = Verdict(False, "the newest Completed backup of its volume")
        elif len(ordered) < 2:
            out[b.name] = Verdict(False, "the volume's only Completed backup")
        elif rank < keep_last:
            out[b.name] = Verdict(False, f"among the newest {keep_last} Completed backups")
        elif age_days <= keep_days:
            out[b.name] = Verdict(False, f"{age_days:.1f} days old, not older than {keep_days:g} days")
        else:
            out[b.name] = Verdict(
                True, f"#{rank + 1} newest, {age_days:.1f} days old: beyond keep_last and keep_days"
            )
    return out


def volume_verdicts(
    backups: list[Backup], keep_last: int, keep_days: float, now: float
) -> dict[str, Verdict]:
    """The retention verdicts of one volume's backups, target by target: the newest backup on one
    target is no copy of the data on another (Longhorn 1.8+ keeps a BackupVolume per volume and
    target). When the volume has backups on more than one target, each reason names its target."""
    targets = by_target(backups)
    out: dict[str, Verdict] = {}
    for target, group in targets.items():
        for name, v in retention_verdicts(group, keep_last, keep_days, now).items():
            where = f" (backup target {target or 'unnamed'})" if len(targets) > 1 else ""
            out[name] = Verdict(v.delete, v.reason + where)
    return out
