"""Deleting indices past retention, one at a time, each only once a verified snapshot holds all of it.

Right before deleting each index (never a wildcard: every name is exact and re-read) the action checks:
- it still exists as an index of that very name (not an alias, not a data stream), still matches the
  pattern and is still older than ``keep_days``;
- it takes no writes: not a data stream's current backing index, not an alias's write index;
- it is write-blocked now, and runbookd started the given snapshot while it was write-blocked (recorded
  by opensearch.create_snapshot), so nothing written late is missing from the snapshot;
- the snapshot, re-read now, is SUCCESS, has no failed shard and lists the index. PARTIAL is not a backup
  (opensearch-project/index-management#662); "the snapshot exists" is not "it contains the index"
  (elastic/elasticsearch#57809).
"""

from __future__ import annotations

from typing import Any

from daemon.actions.base import ActionContext, Output, action
from daemon.actions.opensearch.blocks import is_blocked
from daemon.actions.opensearch.common import (
    DAY_MS,
    READ_INDICES,
    READ_SNAPSHOTS,
    ExactIndices,
    IndexPattern,
    KeepDays,
    RepositoryParams,
    Snapshot,
    SnapshotName,
    matches,
    read_index,
    write_targets,
)
from daemon.actions.opensearch.copies import MEMORY, memory_key
from daemon.clients.opensearch import OpenSearchClient, OpenSearchPermanentError


class DeleteIndicesParams(RepositoryParams):
    snapshot: SnapshotName
    """The snapshot that must hold each index: the final snapshot runbookd took after blocking writes."""
    indices: ExactIndices
    """Exact names the plan approved (an opensearch.plan_index_retention step's ``indices``)."""
    pattern: IndexPattern = "logs-*"
    keep_days: KeepDays = 14


async def _refusal(
    ctx: ActionContext, client: OpenSearchClient, p: DeleteIndicesParams, name: str
) -> str | None:
    """Why this index may not be deleted now; "gone" when it no longer exists."""
    index = await read_index(client, name)
    if index is None:
        return "gone"
    if not matches(p.pattern, name):
        return f"does not match {p.pattern}"
    if index.created_ms >= ctx.clock.now() * 1000 - p.keep_days * DAY_MS:
        return f"created less than {p.keep_days}d ago"
    why = (await write_targets(client)).why(name)
    if why is not None:
        return why
    if not is_blocked(await client.index_settings(name)):
        return "not write-blocked now: a write may have landed after the snapshot"
    record: dict[str, Any] = await ctx.memory.get(MEMORY, memory_key(p.repository, p.snapshot)) or {}
    if (record.get("write_blocked") or {}).get(name) != index.uuid:
        return (
            f"snapshot {p.snapshot} was not started by runbookd while this index was write-blocked "
            "(run opensearch.block_writes, then opensearch.create_snapshot)"
        )
    doc = await client.get_snapshot(p.repository, p.snapshot)
    if doc is None:
        return f"snapshot {p.snapshot} does not exist (any more)"
    snap = Snapshot.parse(doc)
    if record.get("uuid") and record["uuid"] != snap.uuid:
        return f"snapshot {p.snapshot} is not the one runbookd took (uuid {snap.uuid})"
    return snap.why_not_copy_of(name)


@action(
    "opensearch.delete_indices",
    read_only=False,
    idempotent=True,
    permissions=READ_INDICES + READ_SNAPSHOTS + ("opensearch:indices:admin/delete",),
)
async def delete_indices(ctx: ActionContext, p: DeleteIndicesParams) -> Output:
    """Delete each listed index, by its exact name and one at a time, only when (checked right before)
    the snapshot is still SUCCESS with no failed shard and lists it, runbookd took that snapshot while
    the index was write-blocked and it still is, the index still matches the pattern and is older than
    ``keep_days``, and it takes no writes (no data stream's current backing index, no alias's write
    index). Refused indices are kept and listed with the reason."""
    client: OpenSearchClient = ctx.need("opensearch")
    deleted, gone, refused, requests = [], [], [], []
    for name in p.indices:
        why = await _refusal(ctx, client, p, name)
        if why == "gone":
            gone.append(name)
            continue
        if why is not None:
            refused.append({"index": name, "reason": why})
            continue
        if ctx.dry_run:
            requests.append(client.describe("DELETE", name))
            deleted.append(name)
            continue
        try:
            await client.request("DELETE", name)
        except OpenSearchPermanentError as exc:
            if exc.kind == "not_found":
                gone.append(name)
                continue
            if exc.kind not in ("snapshot_in_progress", "invalid_request"):
                raise
            refused.append({"index": name, "reason": str(exc)})
            continue
        deleted.append(name)
    out: dict[str, Any] = {
        # In dry-run no final snapshot was taken, so refusals for want of one are expected, not failures.
        "ok": not refused or ctx.dry_run,
        "repository": p.repository,
        "snapshot": p.snapshot,
        "deleted": deleted,
        "gone": gone,
        "refused": refused,
        "message": f"{len(deleted)} index(es) {'would be ' if ctx.dry_run else ''}deleted, {len(gone)} already "
        f"gone, {len(refused)} refused"
        + (f" (e.g. {refused[0]['index']}: {refused[0]['reason']})" if refused else ""),
    }
    if ctx.dry_run:
        return ctx.would(*requests, **out)
    ctx.log.info("opensearch.deleted_indices", deleted=len(deleted), refused=len(refused))
    return out


ACTIONS = [delete_indices]
