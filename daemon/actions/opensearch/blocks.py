"""Write blocks: ``index.blocks.write: true`` on indices past retention before their final snapshot, so a
late write (Fluent-bit flushing a backlog into an old daily index) cannot land after the snapshot and be
lost with the index; and its exact inverse, which clears the block on the indices the block step set it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.opensearch.common import (
    DAY_MS,
    READ_INDICES,
    ExactIndices,
    IndexName,
    IndexPattern,
    KeepDays,
    matches,
    read_index,
    write_targets,
)
from daemon.clients.opensearch import OpenSearchClient

WRITE_SETTINGS = ("opensearch:indices:admin/settings/update",)


class BlockParams(Params):
    indices: ExactIndices
    """Exact index names: an opensearch.plan_index_retention step's ``indices``."""
    pattern: IndexPattern = "logs-*"
    """Each index must still match it."""
    keep_days: KeepDays = 14
    """Each index must still be older than this by ``creation.date`` (so today's index is never blocked)."""


def is_blocked(settings: dict[str, str]) -> bool:
    return settings.get("index.blocks.write", "false").lower() == "true"


async def _refusal(
    client: OpenSearchClient, p: BlockParams, name: str, now: float, writes: Any
) -> str | None:
    """Why this index may not be blocked now; "gone" when it no longer exists."""
    index = await read_index(client, name)
    if index is None:
        return "gone"
    if not matches(p.pattern, name):
        return f"does not match {p.pattern}"
    if index.created_ms >= now * 1000 - p.keep_days * DAY_MS:
        return f"created less than {p.keep_days}d ago"
    why: str | None = writes.why(name)
    return why


@action(
    "opensearch.block_writes",
    read_only=False,
    idempotent=True,
    permissions=READ_INDICES + WRITE_SETTINGS,
)
async def block_writes(ctx: ActionContext, p: BlockParams) -> Output:
    """Set ``index.blocks.write: true`` on each listed index that still matches the pattern, is older than
    ``keep_days`` and takes no writes (never a data stream's current backing index or an alias's write
    index: that would stop ingestion). ``blocked`` lists the indices this step blocked (its undo clears
    exactly those); an index already blocked is left as it is."""
    client: OpenSearchClient = ctx.need("opensearch")
    now = ctx.clock.now()
    writes = await write_targets(client)
    blocked, already, gone, refused, requests = [], [], [], [], []
    for name in p.indices:
        why = await _refusal(client, p, name, now, writes)
        if why == "gone":
            gone.append(name)
            continue
        if why is not None:
            refused.append({"index": name, "reason": why})
            continue
        if is_blocked(await client.index_settings(name)):
            already.append(name)
            continue
        body = {"index.blocks.write": True}
        if ctx.dry_run:
            requests.append(client.describe("PUT", f"{name}/_settings", body=body))
        else:
            await client.request("PUT", f"{name}/_settings", body=body)
        blocked.append(name)
    out: dict[str, Any] = {
        "ok": not refused,
        "blocked": blocked,
        "already_blocked": already,
        "gone": gone,
        "refused": refused,
        "message": f"{len(blocked)} index(es) {'would be ' if ctx.dry_run else ''}write-blocked, "
        f"{len(already)} already blocked, {len(gone)} gone, {len(refused)} refused"
        + (f" (e.g. {refused[0]['index']}: {refused[0]['reason']})" if refused else ""),
    }
    if ctx.dry_run:
        return ctx.would(*requests, **out)
    ctx.log.info("opensearch.blocked_writes", blocked=len(blocked), refused=len(refused))
    return out


class UnblockParams(Params):
    indices: list[IndexName] = Field(max_length=1000)
    """The indices a block step blocked (its output ``blocked``); may be empty."""


@action(
    "opensearch.unblock_writes", read_only=False, idempotent=True, permissions=READ_INDICES + WRITE_SETTINGS
)
async def unblock_writes(ctx: ActionContext, p: UnblockParams) -> Output:
    """Clear ``index.blocks.write`` (reset to its default) on the listed indices: the undo of
    opensearch.block_writes. An index deleted since is skipped."""
    client: OpenSearchClient = ctx.need("opensearch")
    cleared, gone, requests = [], [], []
    body = {"index.blocks.write": None}
    for name in p.indices:
        if await read_index(client, name) is None:
            gone.append(name)
            continue
        if ctx.dry_run:
            requests.append(client.describe("PUT", f"{name}/_settings", body=body))
        else:
            await client.request("PUT", f"{name}/_settings", body=body)
        cleared.append(name)
    out = {
        "ok": True,
        "unblocked": cleared,
        "gone": gone,
        "message": f"write block {'would be ' if ctx.dry_run else ''}cleared on {len(cleared)} index(es); "
        f"{len(gone)} gone (deleted)",
    }
    return ctx.would(*requests, **out) if ctx.dry_run else out


ACTIONS = [block_writes, unblock_writes]
