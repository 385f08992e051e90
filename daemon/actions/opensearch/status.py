"""Read-only views of OpenSearch's snapshot repository: what snapshots it holds and in which state, which
indices no verified snapshot holds yet, and whether the repository is the S3 bucket it should be."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from daemon.actions.base import ActionContext, Output, action
from daemon.actions.opensearch.common import (
    READ_INDICES,
    READ_SNAPSHOTS,
    IndexName,
    IndexPattern,
    RepositoryParams,
    Snapshot,
    SnapshotName,
    no_match_message,
    read_indices,
    read_snapshots,
)
from daemon.actions.opensearch.copies import Evidence, by_name, newest_copy, read_records
from daemon.clients.opensearch import OpenSearchClient, OpenSearchPermanentError
from daemon.kits.clock import iso
from daemon.kits.names import S3BucketName


class StatusParams(RepositoryParams):
    snapshot: SnapshotName | None = None
    """Only this snapshot (default: every snapshot of the repository)."""
    indices: IndexPattern | None = None
    """With a pattern: also list the matching indices created before today (UTC) that no verified
    snapshot (SUCCESS, no failed shard, listing the index, provably of this very index) holds yet."""
    require_indices: list[IndexName] = Field(default_factory=list, max_length=1000)
    """With ``snapshot``: ``ok`` only when it is a verified copy of each of these."""
    max_listed: int = Field(20, ge=0, le=500)


def _midnight_ms(now: float) -> int:
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(day.timestamp() * 1000)


async def _unsnapshotted(
    ctx: ActionContext, client: OpenSearchClient, repo: str, pattern: str, snapshots: list[Snapshot]
) -> dict[str, Any]:
    """The matching indices created before today that no verified snapshot of that very index holds (a
    snapshot of an earlier index of the same name does not: copies.py)."""
    found = await read_indices(client, pattern)
    cutoff = _midnight_ms(ctx.clock.now())
    before_today = [i for i in found if i.created_ms < cutoff and i.status != "close"]
    evidence = Evidence(by_name(found), await read_records(ctx.memory, repo))
    missing = [i.name for i in before_today if newest_copy(snapshots, i, evidence) is None]
    return {
        "pattern": pattern,
        "matched": len(found),
        "no_match": not found,
        "created_before": iso(cutoff / 1000),
        "unsnapshotted": missing,
    }


def _required(snapshots: list[Snapshot], name: str | None, required: list[str]) -> list[str]:
    if name is None or not required:
        return []
    snap = next((s for s in snapshots if s.name == name), None)
    if snap is None:
        return [f"snapshot {name} does not exist"]
    return [why for i in required if (why := snap.why_not_copy_of(i)) is not None]


@action(
    "opensearch.snapshot_status", read_only=True, idempotent=True, permissions=READ_SNAPSHOTS + READ_INDICES
)
async def snapshot_status(ctx: ActionContext, p: StatusParams) -> Output:
    """The snapshots of a repository (newest first) with state, indices, start/end, shards failed and
    failures; with ``indices``, the matching indices created before today (UTC) that no verified snapshot
    holds yet (``unsnapshotted``); with ``snapshot`` and ``require_indices``, whether that snapshot is a
    verified copy of each. ``findings`` counts indices needing a snapshot (a pattern matching nothing
    counts as one)."""
    client: OpenSearchClient = ctx.need("opensearch")
    if p.snapshot is not None:
        one = await client.get_snapshot(p.repository, p.snapshot)
        snapshots = [Snapshot.parse(one)] if one is not None else []
    else:
        snapshots = await read_snapshots(client, p.repository)
    snapshots.sort(key=lambda s: (s.start_ms, s.name), reverse=True)
    by_state: dict[str, int] = {}
    for s in snapshots:
        by_state[s.state] = by_state.get(s.state, 0) + 1
    out: dict[str, Any] = {
        "repository": p.repository,
        "count": len(snapshots),
        "by_state": by_state,
        "in_progress": [s.name for s in snapshots if s.state == "IN_PROGRESS"],
        "snapshots": [s.view() for s in snapshots[: p.max_listed]],
    }
    parts = [
        f"{p.repository}: {len(snapshots)} snapshot(s) "
        + ("(" + ", ".join(f"{n} {k}" for k, n in sorted(by_state.items())) + ")" if by_state else "")
    ]
    findings = 0
    if p.indices is not None:
        idx = await _unsnapshotted(ctx, client, p.repository, p.indices, snapshots)
        out |= idx
        findings = len(idx["unsnapshotted"]) + (1 if idx["no_match"] else 0)
        parts.append(
            no_match_message(p.indices)
            if idx["no_match"]
            else f"{len(idx['unsnapshotted'])} of {idx['matched']} index(es) matching {p.indices} created before "
            f"today have no verified snapshot"
            + (f": {', '.join(idx['unsnapshotted'][:10])}" if idx["unsnapshotted"] else "")
        )
    problems = _required(snapshots, p.snapshot, p.require_indices)
    if p.require_indices:
        out["problems"] = problems
        parts.append(
            "; ".join(problems)
            if problems
            else f"{p.snapshot} is a verified copy of all {len(p.require_indices)} index(es)"
        )
    out |= {"ok": not problems, "findings": findings, "message": "; ".join(parts)}
    return out


class RepositoryCheckParams(RepositoryParams):
    bucket: S3BucketName = "opensearch-logs"
    """The bucket the repository must point at."""


@action(
    "opensearch.repository_check",
    read_only=True,
    idempotent=True,
    permissions=("opensearch:cluster:admin/repository/get", "opensearch:cluster:admin/repository/verify"),
)
async def repository_check(ctx: ActionContext, p: RepositoryCheckParams) -> Output:
    """The snapshot repository exists, is of type ``s3``, points at the expected bucket, and
    ``POST _snapshot/{repo}/_verify`` passes (every node can write to it). ``ok: false`` with the
    problems otherwise."""
    client: OpenSearchClient = ctx.need("opensearch")
    repo = await client.get_repository(p.repository)
    problems: list[str] = []
    out: dict[str, Any] = {"repository": p.repository, "expected_bucket": p.bucket}
    if repo is None:
        problems.append(f"repository {p.repository} does not exist")
    else:
        settings = repo.get("settings") if isinstance(repo.get("settings"), dict) else {}
        assert isinstance(settings, dict)
        out |= {
            "type": repo.get("type"),
            "bucket": settings.get("bucket"),
            "base_path": settings.get("base_path"),
        }
        if repo.get("type") != "s3":
            problems.append(f"repository {p.repository} is of type {repo.get('type')!r}, not s3")
        if settings.get("bucket") != p.bucket:
            problems.append(
                f"repository {p.repository} points at bucket {settings.get('bucket')!r}, not {p.bucket}"
            )
        try:
            verified = await client.request("POST", f"_snapshot/{p.repository}/_verify")
            nodes = (verified or {}).get("nodes") or {}
            out["verified_nodes"] = sorted(
                str(n.get("name", k)) for k, n in nodes.items() if isinstance(n, dict)
            )
        except OpenSearchPermanentError as exc:
            problems.append(f"verification failed: {exc}")
    out |= {
        "ok": not problems,
        "problems": problems,
        "findings": len(problems),
        "message": "; ".join(problems)
        if problems
        else f"repository {p.repository} is s3 on bucket {p.bucket} and verified on {len(out.get('verified_nodes', []))} node(s)",
    }
    return out


ACTIONS = [snapshot_status, repository_check]
