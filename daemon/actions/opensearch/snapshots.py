"""Taking a snapshot and deleting old ones, through the snapshot API only.

``create_snapshot`` never starts a second snapshot of indices a running one already copies, asks for
``partial: false``, waits (polling) for the end, and reports PARTIAL and FAILED as failures. Before it
starts the snapshot it records, durably, which of its indices were write-blocked at that moment: only such
a snapshot holds everything the index will ever hold, and opensearch.delete_indices accepts no other. It
records each index's uuid then too, and once the snapshot has started which of those uuids are still the
index of that name: the snapshot copied exactly those indices (OpenSearch's snapshot API names indices,
never their uuids), so a later index of the same name can be told from the one it holds.

``delete_snapshots`` deletes one snapshot at a time, each re-read right before: never one IN_PROGRESS
(deleting it would abort it), never one younger than ``snapshot_keep_days``, and never one whose deletion
would now lose an index that the approved plan did not name for that very snapshot (a name is no
identity: approving the loss of one ``logs-2025.06.01`` is no approval of the loss of another).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.opensearch.blocks import is_blocked
from daemon.actions.opensearch.common import (
    READ_INDICES,
    READ_SNAPSHOTS,
    ExactIndices,
    KeepDays,
    RepositoryParams,
    Snapshot,
    SnapshotName,
    SnapshotTemplate,
    read_index,
    read_snapshots,
)
from daemon.actions.opensearch.copies import MEMORY, Evidence, memory_key, read_evidence
from daemon.actions.opensearch.plans import lost_by_deleting, too_young
from daemon.clients.opensearch import OpenSearchClient, OpenSearchPermanentError
from daemon.kits.durations import Duration


def render_name(template: str, now: float) -> str:
    t = datetime.fromtimestamp(now, UTC)
    return template.replace("{date}", t.strftime("%Y.%m.%d")).replace("{time}", t.strftime("%H%M%S"))


class CreateParams(RepositoryParams):
    indices: ExactIndices
    """Exact index names (never a pattern: the snapshot holds what was approved)."""
    name: SnapshotTemplate = "logs-{date}"
    """The snapshot's name; {date} is YYYY.MM.DD and {time} HHMMSS, both UTC."""
    timeout: Duration = 7200.0
    """How long to wait for the snapshot to end (it goes on in OpenSearch after that)."""
    poll_interval: Duration = 15.0

    @field_validator("poll_interval")
    @classmethod
    def _poll(cls, v: float) -> float:
        if not 0.01 <= v <= 600:
            raise ValueError("poll_interval is between 10ms and 10m")
        return v


async def _blocks_now(
    client: OpenSearchClient, indices: list[str]
) -> tuple[dict[str, str], dict[str, str], list[str], list[str]]:
    """(index -> its uuid, write-blocked index -> its uuid, not blocked, missing)."""
    uuids: dict[str, str] = {}
    blocked: dict[str, str] = {}
    open_, missing = [], []
    for name in indices:
        index = await read_index(client, name)
        if index is None:
            missing.append(name)
            continue
        uuids[name] = index.uuid
        if is_blocked(await client.index_settings(name)):
            blocked[name] = index.uuid
        else:
            open_.append(name)
    return uuids, blocked, open_, missing


async def _note_copies(
    ctx: ActionContext, client: OpenSearchClient, key: str, record: dict[str, Any], snap: Snapshot
) -> None:
    """Record the snapshot's uuid and ``copied``: each index whose uuid, read before the snapshot
    started, is still the uuid of the index of that name now. The snapshot exists, so it has started; an
    index seen before and after its start under one uuid bore that name at the start (a uuid is never
    reused), so it is the index the snapshot copied. An index deleted and created again in between is
    left out: which of the two the snapshot holds is not proven."""
    if ctx.dry_run or not record or record.get("uuid") not in (None, "", snap.uuid):
        return  # nothing runbookd read before the start, or the record is of another snapshot of that name
    before: dict[str, str] = {**record.get("write_blocked", {}), **record.get("index_uuids", {})}
    copied = {}
    for name, uuid in sorted(before.items()):
        index = await read_index(client, name) if name in snap.indices else None
        if index is not None and index.uuid == uuid:
            copied[name] = uuid
    await ctx.memory.put(MEMORY, key, {**record, "uuid": snap.uuid, "copied": copied})


async def _running_overlap(client: OpenSearchClient, repo: str, indices: list[str], name: str) -> list[str]:
    """Running snapshots (other than ``name``) that copy any of these indices, as "snap (a, b)"."""
    running = [Snapshot.parse(d) for d in await client.get_snapshots(repo, "_current")]
    wanted = set(indices)
    return [
        f"{s.name} ({', '.join(sorted(wanted & set(s.indices))[:5])})"
        for s in running
        if s.name != name and wanted & set(s.indices)
    ]


async def _wait(client: OpenSearchClient, repo: str, name: str, p: CreateParams) -> Snapshot | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + p.timeout
    while True:
        doc = await client.get_snapshot(repo, name)
        snap = Snapshot.parse(doc) if doc is not None else None
        if snap is None or snap.state != "IN_PROGRESS" or loop.time() >= deadline:
            return snap
        await asyncio.sleep(p.poll_interval)


def _result(snap: Snapshot | None, p: CreateParams, name: str, record: dict[str, Any]) -> Output:
    base: dict[str, Any] = {
        "snapshot": name,
        "repository": p.repository,
        "indices": p.indices,
        "write_blocked_at_start": sorted(record.get("write_blocked", {})),
        "not_write_blocked_at_start": sorted(set(p.indices) - set(record.get("write_blocked", {}))),
    }
    if snap is None:
        return {
            **base,
            "ok": False,
            "state": None,
            "message": f"snapshot {name} vanished while runbookd waited",
        }
    problems = [why for i in p.indices if (why := snap.why_not_copy_of(i)) is not None]
    detail = snap.view(max_failures=20)
    if snap.state == "IN_PROGRESS":
        message = f"snapshot {name} is still IN_PROGRESS after {p.timeout:g}s; it goes on in OpenSearch"
    elif problems:
        message = f"snapshot {name} ended {snap.state}: " + "; ".join(sorted(set(problems))[:5])
    else:
        message = f"snapshot {name} SUCCESS: a verified copy of all {len(p.indices)} index(es)"
    return {**detail, **base, "ok": not problems, "verified": not problems, "message": message}


@action(
    "opensearch.create_snapshot",
    read_only=False,
    idempotent=True,
    permissions=READ_SNAPSHOTS + READ_INDICES + ("opensearch:cluster:admin/snapshot/create",),
)
async def create_snapshot(ctx: ActionContext, p: CreateParams) -> Output:
    """Snapshot exactly the listed indices (``partial: false``, no global state) under a dated name, and
    wait for it to end: PARTIAL or FAILED (or a SUCCESS not listing every index) fails the step. Refuses
    to start while a running snapshot (``_snapshot/{repo}/_current``) copies any of the same indices. A
    snapshot of that name already there (a re-run) is waited for and judged, not started again."""
    client: OpenSearchClient = ctx.need("opensearch")
    name = render_name(p.name, ctx.clock.now())
    key = memory_key(p.repository, name)
    existing = await client.get_snapshot(p.repository, name)
    if existing is not None:
        snap = Snapshot.parse(existing)
        if set(snap.indices) != set(p.indices):
            return {
                "ok": False,
                "snapshot": name,
                "message": f"a snapshot named {name} already exists "
                f"with other indices ({len(snap.indices)}); choose another name template",
            }
        record = await ctx.memory.get(MEMORY, key) or {}
        if record and not record.get("uuid") and not ctx.dry_run:  # the process died before noting it
            record["uuid"] = snap.uuid
            await ctx.memory.put(MEMORY, key, record)
        waited = await _wait(client, p.repository, name, p)
        if waited is not None and not record.get("copied"):
            await _note_copies(ctx, client, key, record, waited)
        return _result(waited, p, name, record)
    overlap = await _running_overlap(client, p.repository, p.indices, name)
    if overlap:
        return {
            "ok": False,
            "snapshot": name,
            "running": overlap,
            "message": "not starting a second snapshot of the same indices while one runs: "
            + "; ".join(overlap),
        }
    uuids, blocked, not_blocked, missing = await _blocks_now(client, p.indices)
    if missing:
        return {
            "ok": False,
            "snapshot": name,
            "missing": missing,
            "message": f"{len(missing)} index(es) do not exist: {', '.join(missing[:10])}",
        }
    body = {
        "indices": ",".join(p.indices),
        "ignore_unavailable": False,
        "include_global_state": False,
        "partial": False,
    }
    if ctx.dry_run:
        return ctx.would(
            client.describe("PUT", f"_snapshot/{p.repository}/{name}", body=body),
            snapshot=name,
            write_blocked_now=sorted(blocked),
            not_write_blocked_now=not_blocked,
        )
    record = {
        "indices": p.indices,
        "write_blocked": blocked,
        "index_uuids": uuids,
        "run_id": ctx.run_id,
        "step_id": ctx.step_id,
    }
    await ctx.memory.put(MEMORY, key, record)  # before the snapshot starts: what was there at its start
    try:
        await client.request("PUT", f"_snapshot/{p.repository}/{name}", body=body)
    except OpenSearchPermanentError as exc:
        if exc.type != "invalid_snapshot_name_exception":
            raise
        # A retried PUT whose first attempt went through: judged like any existing one.
    taken = await _wait(client, p.repository, name, p)
    if taken is not None:
        await _note_copies(ctx, client, key, record, taken)
    ctx.log.info("opensearch.snapshot", snapshot=name, state=taken.state if taken else None)
    return _result(taken, p, name, record)


# -- delete ----------------------------------------------------------------------------------------------


class SnapshotDeletion(Params):
    snapshot: SnapshotName
    last_copy_of: list[str] = Field(default_factory=list, max_length=10_000)
    """The indices the plan said deleting this snapshot loses for good (what the approver accepted for
    it, and only for it)."""


class DeleteParams(RepositoryParams):
    snapshot_keep_days: KeepDays = 180
    snapshots: list[SnapshotDeletion] = Field(min_length=1, max_length=500)
    """An opensearch.plan_snapshot_retention step's ``delete``."""


def _deletion_refusal(
    snap: Snapshot,
    every: list[Snapshot],
    evidence: Evidence,
    p: DeleteParams,
    approved: set[str],
    now: float,
) -> tuple[str | None, list[str]]:
    """Why this snapshot may not be deleted now, and what deleting it loses: the plan's rule
    (``lost_by_deleting``) over what was read right before."""
    why = too_young(snap, p.snapshot_keep_days, now)
    if why is not None:
        return why, []
    lost = lost_by_deleting([snap], [s for s in every if s.name != snap.name], evidence)[snap.name]
    unapproved = sorted(set(lost) - approved)
    if unapproved:
        return (
            f"deleting it now would lose {', '.join(unapproved[:10])} for good, which the approved plan "
            "did not name for it"
        ), lost
    return None, lost


@action(
    "opensearch.delete_snapshots",
    read_only=False,
    idempotent=True,
    permissions=(
        *READ_SNAPSHOTS,
        "opensearch:indices:monitor/settings/get",
        "opensearch:cluster:admin/snapshot/delete",
    ),
)
async def delete_snapshots(ctx: ActionContext, p: DeleteParams) -> Output:
    """Delete the listed snapshots through the snapshot API (never in the bucket: snapshots share files),
    one at a time, in the order given. Right before each: re-read; refuse one IN_PROGRESS, one that
    started within ``snapshot_keep_days``, or one whose deletion would now lose an index its
    ``last_copy_of`` does not name. A snapshot already gone is skipped."""
    client: OpenSearchClient = ctx.need("opensearch")
    deleted, gone, refused, lost_total, requests = [], [], [], [], []
    for d in p.snapshots:
        every = await read_snapshots(client, p.repository)
        snap = next((s for s in every if s.name == d.snapshot), None)
        if snap is None:
            gone.append(d.snapshot)
            continue
        evidence = await read_evidence(client, ctx.memory, p.repository)
        why, lost = _deletion_refusal(snap, every, evidence, p, set(d.last_copy_of), ctx.clock.now())
        if why is not None:
            refused.append({"snapshot": d.snapshot, "reason": why})
            continue
        if ctx.dry_run:
            requests.append(client.describe("DELETE", f"_snapshot/{p.repository}/{d.snapshot}"))
        else:
            try:
                await client.request("DELETE", f"_snapshot/{p.repository}/{d.snapshot}")
            except OpenSearchPermanentError as exc:
                if exc.type != "snapshot_missing_exception":
                    raise
                # gone between the re-read and the delete (or a retried DELETE whose first went through)
        deleted.append(d.snapshot)
        lost_total += lost
    out: dict[str, Any] = {
        "ok": not refused,
        "repository": p.repository,
        "deleted": deleted,
        "gone": gone,
        "refused": refused,
        "lost_for_good": sorted(lost_total),
        "message": f"{len(deleted)} snapshot(s) {'would be ' if ctx.dry_run else ''}deleted, {len(gone)} already "
        f"gone, {len(refused)} refused"
        + (f" (e.g. {refused[0]['snapshot']}: {refused[0]['reason']})" if refused else "")
        + (f"; lost for good: {', '.join(sorted(lost_total)[:20])}" if lost_total else ""),
    }
    if ctx.dry_run:
        return ctx.would(*requests, **out)
    ctx.log.info("opensearch.deleted_snapshots", deleted=len(deleted), refused=len(refused))
    return out


ACTIONS = [create_snapshot, delete_snapshots]
