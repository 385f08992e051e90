"""Retention plans: which indices are past ``keep_days`` (by ``creation.date``) and which snapshots are past
``snapshot_keep_days`` (by start time), and what deleting those snapshots loses for good.

Rules (the mutating actions check them again right before acting):
- an index is planned only when it is open, matches the pattern, is older than keep_days, and takes no
  writes (not a data stream's current backing index, not an alias's write index);
- a snapshot is planned only when it is older than snapshot_keep_days and not IN_PROGRESS;
- another copy of the index a snapshot holds under a name is the index of that name still in the cluster,
  or a verified snapshot (SUCCESS, no failed shard, listing it) started no earlier, and only when it is
  provably the same index, not merely one of the same name (daemon/actions/opensearch/copies.py: a late
  write recreates a deleted daily index under its old name). A snapshot's index with no other copy left
  once the planned set is gone is lost for good: the plan names it under that snapshot, or under a newer
  planned snapshot that provably holds the same index.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import Field

from daemon.actions.base import ActionContext, ActionMemory, Output, action
from daemon.actions.opensearch.common import (
    DAY_MS,
    READ_INDICES,
    READ_SNAPSHOTS,
    Index,
    IndexPattern,
    KeepDays,
    RepositoryParams,
    Snapshot,
    SnapshotPattern,
    matches,
    no_match_message,
    read_indices,
    read_snapshots,
    write_targets,
)
from daemon.actions.opensearch.copies import (
    Evidence,
    Holders,
    by_name,
    newest_copy,
    read_evidence,
    read_records,
)
from daemon.clients.opensearch import OpenSearchClient
from daemon.kits.clock import iso

# -- indices ---------------------------------------------------------------------------------------------


class IndexPlanParams(RepositoryParams):
    indices: IndexPattern = "logs-*"
    keep_days: KeepDays = 14
    max_indices: int = Field(100, ge=1, le=1000)
    """At most this many (the oldest first) in ``indices`` of the output, the list later steps take."""


@dataclass
class IndexPlan:
    matched: list[Index]
    planned: list[Index]
    protected: list[tuple[Index, str]]
    copies: dict[str, Snapshot | None]

    @property
    def no_match(self) -> bool:
        return not self.matched


async def plan_indices(
    client: OpenSearchClient, memory: ActionMemory, p: IndexPlanParams, now: float
) -> IndexPlan:
    matched = await read_indices(client, p.indices)
    cutoff = now * 1000 - p.keep_days * DAY_MS
    old = [i for i in matched if i.created_ms and i.created_ms < cutoff and i.status != "close"]
    writes = await write_targets(client) if old else None
    planned, protected = [], []
    for i in old:
        why = writes.why(i.name) if writes else None
        if why:
            protected.append((i, why))
        else:
            planned.append(i)
    if not planned:
        return IndexPlan(matched, planned, protected, {})
    snapshots = await read_snapshots(client, p.repository)
    evidence = Evidence(by_name(matched), await read_records(memory, p.repository))
    return IndexPlan(
        matched, planned, protected, {i.name: newest_copy(snapshots, i, evidence) for i in planned}
    )


def _index_item(i: Index, copy: Snapshot | None, now: float) -> dict[str, Any]:
    return {
        **i.view(now),
        "verified_snapshot": copy.name if copy else None,
        "note": None if copy else "no verified snapshot",
    }


@action(
    "opensearch.plan_index_retention",
    read_only=True,
    idempotent=True,
    permissions=READ_INDICES + READ_SNAPSHOTS,
)
async def plan_index_retention(ctx: ActionContext, p: IndexPlanParams) -> Output:
    """Indices matching the pattern older than ``keep_days`` by ``creation.date`` (open, taking no
    writes), oldest first, each with the newest snapshot that is a verified copy of it (SUCCESS, no failed
    shard, listing it, and provably of this very index, not of an earlier one of that name) or "no
    verified snapshot". A pattern matching nothing is a finding."""
    client: OpenSearchClient = ctx.need("opensearch")
    now = ctx.clock.now()
    plan = await plan_indices(client, ctx.memory, p, now)
    listed = plan.planned[: p.max_indices]
    unverified = [i.name for i in plan.planned if plan.copies[i.name] is None]
    if plan.no_match:
        message = no_match_message(p.indices)
    else:
        message = (
            f"{len(plan.planned)} of {len(plan.matched)} index(es) matching {p.indices} are older than "
            f"{p.keep_days}d; {len(unverified)} of them have no verified snapshot yet"
            + (f"; kept {len(plan.protected)} that take writes" if plan.protected else "")
        )
    return {
        "ok": True,
        "message": message,
        "repository": p.repository,
        "pattern": p.indices,
        "keep_days": p.keep_days,
        "cutoff": iso(now - p.keep_days * 86400),
        "matched": len(plan.matched),
        "no_match": plan.no_match,
        "count": len(plan.planned),
        "indices": [i.name for i in listed],
        "truncated": len(listed) < len(plan.planned),
        "items": [_index_item(i, plan.copies[i.name], now) for i in listed],
        "unverified": unverified,
        "protected": [{"index": i.name, "reason": why} for i, why in plan.protected],
        "findings": len(plan.planned) + (1 if plan.no_match else 0),
    }


# -- snapshots -------------------------------------------------------------------------------------------


class SnapshotPlanParams(RepositoryParams):
    snapshot_keep_days: KeepDays = 180
    snapshots: SnapshotPattern = "*"
    """Only snapshots whose name matches (default: all of the repository)."""
    max_snapshots: int = Field(50, ge=1, le=500)


def losses(
    deleted: list[Snapshot], remaining: list[Snapshot], evidence: Evidence
) -> dict[str, dict[str, list[str]]]:
    """Snapshot name -> {index whose copy in it is lost for good once every snapshot in ``deleted`` is
    gone: the same-named copies that exist but were not counted, and why}.

    A copy is kept by the live index of that name or by a snapshot in ``remaining`` only when that is
    provably the same index (``Evidence``). A copy that a newer snapshot in ``deleted`` provably holds too
    is named under that newer one only; two different indices of one name are each named under their own
    snapshot, since approving the loss of one is no approval of the loss of the other."""
    holders = Holders.of(remaining + deleted, evidence)
    order = {o.name: (o.start_ms, o.name) for o in deleted}
    out: dict[str, dict[str, list[str]]] = {}
    for s in deleted:
        lost: dict[str, list[str]] = {}
        for i in sorted(s.index_set):
            if evidence.live_doubt(s, i) is None:
                continue
            same = holders.same_index(i, s, evidence)
            if any(_outlives(o, s, order) for o in same):
                continue
            stays = partial(_outlives, s=s, order=order)
            lost[i] = evidence.doubts(s, i, holders.later(i, s), stays, {o.name for o in same})
        out[s.name] = lost
    return out


def _outlives(o: Snapshot, s: Snapshot, order: dict[str, tuple[int, str]]) -> bool:
    """Whether ``o`` is still there when ``s`` goes: not deleted, or deleted later (a newer one, deleted
    after it in the plan's order, oldest first)."""
    key = order.get(o.name)
    return key is None or key > (s.start_ms, s.name)


def lost_by_deleting(
    deleted: list[Snapshot], remaining: list[Snapshot], evidence: Evidence
) -> dict[str, list[str]]:
    """Snapshot name -> the indices lost for good with it once every snapshot in ``deleted`` is gone
    (``losses``)."""
    return names_lost(losses(deleted, remaining, evidence))


def names_lost(found: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """``losses`` without the reasons: snapshot name -> the indices lost with it, sorted."""
    return {name: sorted(lost) for name, lost in found.items()}


def too_young(s: Snapshot, keep_days: int, now: float) -> str | None:
    if s.state == "IN_PROGRESS":
        return f"snapshot {s.name} is IN_PROGRESS"
    if not s.start_ms:
        return f"snapshot {s.name} has no start time"
    if s.start_ms >= now * 1000 - keep_days * DAY_MS:
        return f"snapshot {s.name} started {iso(s.start_ms / 1000)}, within {keep_days}d"
    return None


@dataclass
class SnapshotPlan:
    considered: list[Snapshot]
    planned: list[Snapshot]
    kept: list[tuple[Snapshot, str]]
    losses: dict[str, dict[str, list[str]]]

    @property
    def lost(self) -> dict[str, list[str]]:
        return names_lost(self.losses)


async def plan_snapshots(
    client: OpenSearchClient, memory: ActionMemory, p: SnapshotPlanParams, now: float
) -> SnapshotPlan:
    every = await read_snapshots(client, p.repository)
    considered = sorted(
        (s for s in every if matches(p.snapshots, s.name)), key=lambda s: (s.start_ms, s.name)
    )
    planned, kept = [], []
    for s in considered:
        why = too_young(s, p.snapshot_keep_days, now)
        if why:
            kept.append((s, why))
        else:
            planned.append(s)
    planned = planned[: p.max_snapshots]
    names = {s.name for s in planned}
    if not planned:
        return SnapshotPlan(considered, planned, kept, {})
    evidence = await read_evidence(client, memory, p.repository)
    lost = losses(planned, [s for s in every if s.name not in names], evidence)
    return SnapshotPlan(considered, planned, kept, lost)


def _snapshot_item(s: Snapshot, lost: dict[str, list[str]]) -> dict[str, Any]:
    """A planned snapshot as the approver reads it: ``last_copy_of``, and for those of its indices of
    which a copy of the same name exists but is not provably the same index, that copy and why
    (``unproven_copies``)."""
    doubts = {i: why for i, why in sorted(lost.items()) if why}
    return {**s.view(), "last_copy_of": sorted(lost), **({"unproven_copies": doubts} if doubts else {})}


@action(
    "opensearch.plan_snapshot_retention",
    read_only=True,
    idempotent=True,
    permissions=READ_SNAPSHOTS + READ_INDICES,
)
async def plan_snapshot_retention(ctx: ActionContext, p: SnapshotPlanParams) -> Output:
    """Snapshots that started more than ``snapshot_keep_days`` ago (never one IN_PROGRESS), oldest first,
    and for each the indices whose last copy it is: by the seed's policy those logs are gone for good once
    it is deleted, and the approver sees exactly which. ``delete`` is what opensearch.delete_snapshots
    takes."""
    client: OpenSearchClient = ctx.need("opensearch")
    now = ctx.clock.now()
    plan = await plan_snapshots(client, ctx.memory, p, now)
    lost = plan.lost
    lost_total = sorted({i for v in lost.values() for i in v})
    items = [_snapshot_item(s, plan.losses[s.name]) for s in plan.planned]
    message = (
        f"{len(plan.planned)} of {len(plan.considered)} snapshot(s) in {p.repository} started more than "
        f"{p.snapshot_keep_days}d ago"
        + (
            f"; deleting them loses {len(lost_total)} index(es) for good: {', '.join(lost_total[:20])}"
            if lost_total
            else "; no index loses its last copy"
        )
    )
    return {
        "ok": True,
        "message": message,
        "repository": p.repository,
        "snapshot_keep_days": p.snapshot_keep_days,
        "cutoff": iso(now - p.snapshot_keep_days * 86400),
        "count": len(plan.planned),
        "snapshots": items,
        "delete": [{"snapshot": s.name, "last_copy_of": lost[s.name]} for s in plan.planned],
        "lost_for_good": lost_total,
        "kept": len(plan.kept),
        "in_progress": [s.name for s, _ in plan.kept if s.state == "IN_PROGRESS"],
        "findings": len(plan.planned),
    }


class RetentionCheckParams(RepositoryParams):
    indices: IndexPattern = "logs-*"
    keep_days: KeepDays = 14
    snapshot_keep_days: KeepDays = 180


@action(
    "opensearch.retention_check", read_only=True, idempotent=True, permissions=READ_INDICES + READ_SNAPSHOTS
)
async def retention_check(ctx: ActionContext, p: RetentionCheckParams) -> Output:
    """Both retention plans in one read, for a scheduled check: ``findings`` is the number of indices past
    ``keep_days`` plus snapshots past ``snapshot_keep_days`` (plus one when the pattern matches nothing)."""
    client: OpenSearchClient = ctx.need("opensearch")
    now = ctx.clock.now()
    ip = await plan_indices(
        client,
        ctx.memory,
        IndexPlanParams(repository=p.repository, indices=p.indices, keep_days=p.keep_days),
        now,
    )
    sp = await plan_snapshots(
        client,
        ctx.memory,
        SnapshotPlanParams(repository=p.repository, snapshot_keep_days=p.snapshot_keep_days),
        now,
    )
    parts = [no_match_message(p.indices)] if ip.no_match else []
    parts.append(
        f"{len(ip.planned)} index(es) past {p.keep_days}d, {len(sp.planned)} snapshot(s) past {p.snapshot_keep_days}d"
    )
    return {
        "ok": True,
        "message": "; ".join(parts),
        "no_match": ip.no_match,
        "indices": [i.name for i in ip.planned],
        "snapshots": [s.name for s in sp.planned],
        "findings": len(ip.planned) + len(sp.planned) + (1 if ip.no_match else 0),
    }


ACTIONS = [plan_index_retention, plan_snapshot_retention, retention_check]
