"""Retention of a Thanos bucket: plan which blocks are older than the retention of their resolution, then
mark them for deletion (the compactor deletes marked blocks after its --delete-delay).

Safety rules, enforced here and not left to runbooks:
- only complete blocks (meta.json present) are planned or marked, never a partial upload;
- a block is old enough when its meta.json maxTime is older than now minus the retention of its
  resolution (the longer of ours and the compactor's own flags, when given); mark_for_deletion reads
  meta.json again (never from a cache) right before writing;
- a raw block is retired only when it has been downsampled as Thanos tells it (coverage.py): each ULID of
  its compaction.sources is a source of a 5m block of the same stream (same external labels); a 5m block
  only when 1h blocks hold its sources. Time ranges prove nothing (a late or backfilled block inside a
  5m block's range was never downsampled). mark_for_deletion checks this again, and right before
  writing each mark reads the covering blocks' meta.json anew and checks their sources once more;
- nothing is planned or marked while the compactor is halted or completed no iteration in 24h
  (compactor.py), asked again by mark_for_deletion;
- the newest block of a stream (same external labels, same resolution) is never planned nor marked, so
  retention never removes the only copy of a stream's latest data;
- a block already marked is left as it is (idempotent); nothing is ever deleted or overwritten.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator

from daemon.actions.base import ActionContext, Output, action
from daemon.actions.thanos.common import READ, MaxListed, RetentionParams, block_view, gib, iso_ms, scan_view
from daemon.actions.thanos.compactor import compactor_health
from daemon.actions.thanos.coverage import NEXT_RESOLUTION, Coverage, is_cover, sources_text, unheld
from daemon.clients.s3 import S3Client
from daemon.clients.thanos import (
    DELETION_MARK,
    MAX_META_BYTES,
    META,
    RESOLUTIONS,
    BlockFolder,
    BlockMeta,
    Labels,
    ThanosBucket,
    for_each,
    labels_text,
    parse_meta,
    resolution_name,
)
from daemon.kits.clock import iso
from daemon.kits.names import Ulid

MAX_MARKS = 10_000
_VERBS = {"marked": "marked", "would_mark": "would be marked (dry-run)"}
Stream = tuple[Labels, int]
Rank = tuple[int, str]
"""(maxTime, ULID): how blocks of one stream are ordered, newest last."""


def _meta(f: BlockFolder) -> BlockMeta:
    """The meta.json of a block the caller selected for having one."""
    assert f.meta is not None, f.ulid
    return f.meta


def _rank(f: BlockFolder) -> Rank:
    return (_meta(f).max_time, f.ulid)


def _stream_text(stream: Stream) -> str:
    return f"{labels_text(stream[0])} at resolution {resolution_name(stream[1])}"


def too_young(meta: BlockMeta, cutoffs: dict[int, int | None]) -> str | None:
    """Why a block must not be retired yet, or None when its resolution's retention has passed."""
    if meta.resolution not in RESOLUTIONS:
        return f"unknown resolution {meta.resolution} ms: not covered by any retention"
    cutoff = cutoffs[meta.resolution]
    if cutoff is None:
        return f"{resolution_name(meta.resolution)} blocks are kept for ever (retention 0)"
    if meta.max_time >= cutoff:
        return f"maxTime {iso_ms(meta.max_time)} is not older than the retention cutoff {iso_ms(cutoff)}"
    return None


def newest_per_stream(blocks: list[BlockFolder]) -> dict[Stream, BlockFolder]:
    newest: dict[Stream, BlockFolder] = {}
    for f in blocks:
        stream = _meta(f).stream
        cur = newest.get(stream)
        if cur is None or _rank(f) > _rank(cur):
            newest[stream] = f
    return newest


# -- plan ------------------------------------------------------------------------------------------------


class PlanParams(RetentionParams):
    max_blocks: int = Field(1000, ge=1, le=MAX_MARKS)
    """At most this many ULIDs (the oldest first) in ``ulids``, the list a mark step takes."""
    max_listed: MaxListed = 20


@dataclass
class Split:
    """The eligible blocks divided by the coverage rule (coverage.py), which the plan and the mark step
    both apply."""

    covered: list[BlockFolder] = field(default_factory=list)
    uncovered: list[BlockFolder] = field(default_factory=list)
    coverers: dict[str, list[str]] = field(default_factory=dict)
    """ULID of a covered block -> the coarser blocks holding its sources, read again before its mark."""
    late: int = 0
    """Uncovered blocks inside the time range of coarser blocks built from other sources: uploaded late or
    backfilled. Counted apart because a rule by time range would have retired them."""
    coverage: dict[int, Coverage] = field(default_factory=dict)
    """Resolution -> the coverage its blocks were judged by."""

    def reason(self, f: BlockFolder) -> str:
        """Why an uncovered block is kept, for the approver. Worded on demand: a plan lists only a few
        of what may be 100,000 uncovered blocks."""
        meta = _meta(f)
        return self.coverage[meta.resolution].why_not(meta)


def split_covered(eligible: list[BlockFolder], blocks: list[BlockFolder]) -> Split:
    """The eligible blocks divided into covered and uncovered, coarsest resolution first, so a coarser
    block retired in the same pass never counts as covering a finer one."""
    going: set[str] = set()
    split = Split()
    for res in (3_600_000, 300_000, 0):
        batch = [f for f in eligible if _meta(f).resolution == res]
        if not batch:
            continue
        cov = split.coverage[res] = Coverage.of(f for f in blocks if f.ulid not in going)
        for f in batch:
            found = cov.covering(_meta(f))
            if found is None:
                split.uncovered.append(f)
                if _meta(f).sources is not None and cov.spanned(_meta(f)):
                    split.late += 1
            else:
                split.covered.append(f)
                split.coverers[f.ulid] = found
                going.add(f.ulid)
    return split


async def _compactor(ctx: ActionContext, p: RetentionParams) -> dict[str, Any] | None:
    if not p.compactor_check:
        return None
    return await compactor_health(ctx.need("prometheus"), p.compactor_selector)


@action("thanos.plan_retention", read_only=True, idempotent=True, permissions=READ)
async def plan_retention(ctx: ActionContext, p: PlanParams) -> Output:
    """Which blocks are older than the retention of their resolution (raw / 5m / 1h; 0 keeps) and whose
    history survives them (downsampled, as Thanos tells it: 5m blocks of the same stream hold every
    source of a raw block, 1h blocks every source of a 5m one), excluding blocks already marked, partial
    uploads, and the newest block of every stream. Nothing is planned while the compactor is halted or
    idle.

    ``ulids`` (oldest first, at most ``max_blocks``) is what a thanos.mark_for_deletion step takes;
    ``count`` and ``bytes`` cover every eligible block."""
    s3: S3Client = ctx.need("s3")
    started = time.perf_counter()
    compactor = await _compactor(ctx, p)
    scan = await p.open(s3).scan(want_meta=lambda f: not f.marked)
    now = ctx.clock.now()
    cutoffs = p.cutoffs_ms(now)
    blocks = [f for f in scan.folders.values() if f.meta is not None and not f.marked]
    newest = newest_per_stream(blocks)
    eligible = [f for f in blocks if too_young(_meta(f), cutoffs) is None]
    protected = [f for f in eligible if newest[_meta(f).stream] is f]
    old = [f for f in eligible if newest[_meta(f).stream] is not f]
    split = split_covered(old, blocks)
    covered, uncovered = split.covered, sorted(split.uncovered, key=_rank)
    held = compactor is not None and not compactor["healthy"]
    planned = [] if held else sorted(covered, key=_rank)
    by_res: dict[str, dict[str, int]] = {}
    for f in planned:
        entry = by_res.setdefault(resolution_name(_meta(f).resolution), {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += f.bytes
    total = sum(f.bytes for f in planned)
    ulids = [f.ulid for f in planned[: p.max_blocks]]
    folders = scan.folders.values()
    message = (
        (
            f"{p.bucket}: NOTHING planned, {len(covered)} block(s) held back: {compactor['reason']}"
            if held and compactor is not None
            else f"{p.bucket}: {len(planned)} of {len(blocks)} blocks ({gib(total)}) are past retention "
            f"({', '.join(f'{res} {keep}' for res, keep in p.describe().items())})"
        )
        + (f"; the first {len(ulids)} are listed" if len(ulids) < len(planned) else "")
        + (f"; kept {len(uncovered)} past retention that are not downsampled yet" if uncovered else "")
        + (
            f" ({split.late} of them inside the time range of coarser blocks built from other sources: "
            "uploaded late or backfilled)"
            if split.late
            else ""
        )
        + (f"; kept {len(protected)} that are the newest of their stream" if protected else "")
        + (f"; {p.compactor_note()}" if p.compactor_flags() else "")
    )
    return {
        "ok": True,
        "message": message,
        "bucket": p.bucket,
        "prefix": p.prefix,
        "now": iso(now),
        "retention": p.describe(),
        "compactor_flags": p.compactor_flags(),
        "compactor": compactor,
        "held_by_compactor": len(covered) if held else 0,
        "cutoffs": {resolution_name(r): iso_ms(c) if c is not None else None for r, c in cutoffs.items()},
        "count": len(planned),
        "bytes": total,
        "by_resolution": by_res,
        "ulids": ulids,
        "truncated": len(ulids) < len(planned),
        "blocks": [block_view(f) for f in planned[: p.max_listed]],
        "not_downsampled": [{**block_view(f), "reason": split.reason(f)} for f in uncovered[: p.max_listed]],
        "not_downsampled_count": len(uncovered),
        "protected": [
            {**block_view(f), "reason": "newest block of its stream"} for f in protected[: p.max_listed]
        ],
        "protected_count": len(protected),
        "skipped": {
            "marked": sum(1 for f in folders if f.marked),
            "partial": sum(1 for f in folders if not f.complete and not f.marked),
            "unreadable": sum(1 for f in folders if f.complete and not f.marked and f.meta is None),
        },
        "scanned_blocks": len(scan.folders),
        "scan": scan_view(scan, started),
    }


# -- mark ------------------------------------------------------------------------------------------------


class MarkParams(RetentionParams):
    ulids: list[Ulid] = Field(min_length=1, max_length=MAX_MARKS)
    """The blocks to mark: a thanos.plan_retention step's ``ulids``."""

    @field_validator("ulids")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("ulids lists a block more than once")
        return v


class _Marking:
    """The outcome of each requested block, in the order of the request."""

    def __init__(self, ulids: list[str]) -> None:
        self.outcome: dict[str, tuple[str, str]] = {}
        self.order = ulids

    def refuse(self, ulid: str, reason: str) -> None:
        self.outcome[ulid] = ("refused", reason)

    def of(self, kind: str) -> list[str]:
        return [u for u in self.order if self.outcome.get(u, ("",))[0] == kind]


async def _guard_newest(
    tb: ThanosBucket, targets: list[BlockFolder], others: list[BlockFolder], marking: _Marking
) -> None:
    """Refuse the newest target of each stream that has no newer unmarked block left outside the targets.
    Reads other blocks' meta.json newest-created first (ULID order), stopping once every stream has one."""
    need: dict[Stream, BlockFolder] = newest_per_stream(targets)
    others = sorted(others, key=lambda f: f.ulid, reverse=True)
    chunk = tb.s3.max_concurrency * 4
    for i in range(0, len(others), chunk):
        if not need:
            return
        batch = others[i : i + chunk]
        await tb.read_metas(batch)
        for f in batch:
            if f.meta is not None and f.meta.stream in need and _rank(f) > _rank(need[f.meta.stream]):
                del need[f.meta.stream]
    for stream, f in need.items():
        marking.refuse(
            f.ulid,
            f"newest block of stream {_stream_text(stream)}: no newer block would remain (never the only copy)",
        )


async def _check(
    ctx: ActionContext, tb: ThanosBucket, p: MarkParams, cutoffs: dict[int, int | None], marking: _Marking
) -> tuple[list[BlockFolder], dict[str, list[str]]]:
    """Every requested block that may be marked now, and the coarser blocks that cover each; the others
    get their outcome in ``marking``."""
    compactor = await _compactor(ctx, p)
    if compactor is not None and not compactor["healthy"]:
        for ulid in p.ulids:
            marking.refuse(ulid, f"the compactor is not working, nothing is marked: {compactor['reason']}")
        return [], {}
    # A fresh listing: what exists and what is marked right now. Other blocks' meta.json may come from
    # the cache (a block's meta.json never changes); the requested ones are read again below.
    scan = await tb.scan(want_meta=lambda f: not f.marked)
    requested = set(p.ulids)
    candidates: list[BlockFolder] = []
    for ulid in p.ulids:
        f = scan.folders.get(ulid)
        if f is None:
            marking.refuse(ulid, "no such block in the bucket")
        elif f.marked:
            marking.outcome[ulid] = ("already_marked", "already has a deletion-mark.json (left as it is)")
        elif not f.complete:
            marking.refuse(ulid, "no meta.json: a partial upload (the compactor cleans those up)")
        else:
            candidates.append(f)
    await tb.read_metas(candidates, fresh=True)  # the age check reads meta.json now, never a cached copy
    targets: list[BlockFolder] = []
    for f in candidates:
        why = f.problem if f.meta is None else too_young(f.meta, cutoffs)
        if why is not None:
            marking.refuse(f.ulid, why or "meta.json unreadable")
        else:
            targets.append(f)
    unmarked = [f for f in scan.folders.values() if f.meta is not None and not f.marked]
    split = split_covered(targets, unmarked)
    for f in split.uncovered:
        marking.refuse(f.ulid, split.reason(f))
    others = [f for f in scan.folders.values() if f.complete and not f.marked and f.ulid not in requested]
    covered = {f.ulid for f in split.covered}  # by ULID: `f in list` would compare dataclasses, O(n^2)
    others += [f for f in candidates if f.ulid not in covered]  # a refused block stays: it counts as newer
    await _guard_newest(tb, split.covered, others, marking)
    return [f for f in split.covered if f.ulid not in marking.outcome], split.coverers


class _Coverers:
    """Right before a block's mark is written, the blocks that hold its sources are read again: still
    complete, not marked for deletion themselves, and, by their meta.json read anew (never from the
    cache), coarser blocks of its stream whose compaction.sources together still hold every one of its
    sources: the plan's rule (coverage.py), on what the bucket says now. Each is read once per step."""

    def __init__(self, tb: ThanosBucket) -> None:
        self.tb = tb
        self.seen: dict[str, BlockMeta | str] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def _read(self, ulid: str) -> BlockMeta | str:
        """The covering block's meta.json as it is now, or why it no longer counts."""
        s3, bucket = self.tb.s3, self.tb.bucket
        if (
            await s3.get_object(bucket, self.tb.key(ulid, DELETION_MARK), max_bytes=MAX_META_BYTES)
            is not None
        ):
            return f"its covering block {ulid} is now marked for deletion itself"
        data = await s3.get_object(bucket, self.tb.key(ulid, META), max_bytes=MAX_META_BYTES)
        if data is None:
            return f"its covering block {ulid} is gone"
        try:
            return parse_meta(ulid, data, s3.memo.share)
        except ValueError as exc:
            return f"its covering block {ulid} has an unusable meta.json now: {exc}"

    async def _get(self, ulid: str) -> BlockMeta | str:
        async with self.locks.setdefault(ulid, asyncio.Lock()):
            if ulid not in self.seen:
                self.seen[ulid] = await self._read(ulid)
        return self.seen[ulid]

    async def problem(self, meta: BlockMeta, ulids: list[str]) -> str | None:
        """Why the block of ``meta`` (its meta.json as just re-read) is no longer downsampled by the
        covers ``ulids`` the check found, or None when they still hold all of its sources."""
        if meta.resolution not in NEXT_RESOLUTION:
            return None  # 1h: nothing coarser exists, nothing is required
        name = resolution_name(NEXT_RESOLUTION[meta.resolution])
        held: set[str] = set()
        problems: list[str] = []
        for ulid in ulids:
            cover = await self._get(ulid)
            if isinstance(cover, str):
                problems.append(cover)
            elif not is_cover(cover, meta):
                problems.append(f"its covering block {ulid} is no longer a {name} block of its stream")
            else:
                held.update(cover.sources or ())
        missing = unheld(meta, held)
        if missing == []:
            return None
        if problems:
            return problems[0]
        if missing is None or meta.sources is None:
            return "its meta.json has no valid compaction.sources"
        return f"{sources_text(len(missing), len(meta.sources))} in no {name} block of its stream now"


def _summary(marking: _Marking, verb: str) -> dict[str, Any]:
    done, already, refused = marking.of(verb), marking.of("already_marked"), marking.of("refused")
    return {
        "ok": not refused,
        "message": f"{len(done)} block(s) {_VERBS[verb]}, {len(already)} already marked, "
        f"{len(refused)} refused"
        + (f" (e.g. {refused[0]}: {marking.outcome[refused[0]][1]})" if refused else ""),
        verb: len(done),
        "already_marked": len(already),
        "refused": len(refused),
        "refusals": [{"ulid": u, "reason": marking.outcome[u][1]} for u in refused[:100]],
        f"{verb}_ulids": done[:100],
    }


@action(
    "thanos.mark_for_deletion",
    read_only=False,
    idempotent=True,
    permissions=("s3:ListBucket", "s3:GetObject", "s3:PutObject"),
)
async def mark_for_deletion(ctx: ActionContext, p: MarkParams) -> Output:
    """Write ``<ulid>/deletion-mark.json`` for each listed block that is still past retention, so the
    compactor deletes it after its --delete-delay. Never deletes an object.

    Each block's meta.json is read again first: a block that is missing, partial, too young for the
    retention of its resolution, not downsampled (coarser blocks of its stream do not hold all of its
    sources) or the newest of its stream is refused, and everything is refused while the compactor is
    halted or idle. Already marked: left as is."""
    s3: S3Client = ctx.need("s3")
    tb = p.open(s3)
    now = ctx.clock.now()
    marking = _Marking(p.ulids)
    targets, coverers = await _check(ctx, tb, p, p.cutoffs_ms(now), marking)
    bodies = {f.ulid: tb.deletion_mark(f.ulid, details=ctx.origin, now=now) for f in targets}
    common = {"bucket": p.bucket, "prefix": p.prefix, "details": ctx.origin, "deletion_time": int(now)}
    if ctx.dry_run:
        for f in targets:
            marking.outcome[f.ulid] = ("would_mark", "")
        requests = [tb.describe_put(u, body) for u, body in bodies.items()]
        return ctx.would(*requests, **common, **_summary(marking, "would_mark"))

    recheck = _Coverers(tb)

    async def put(f: BlockFolder) -> None:
        why = await recheck.problem(_meta(f), coverers.get(f.ulid, []))
        if why is not None:
            marking.refuse(f.ulid, f"kept: not downsampled any more ({why})")
            return
        await tb.put_deletion_mark(f.ulid, bodies[f.ulid])
        marking.outcome[f.ulid] = ("marked", "")

    await for_each(targets, put, s3.max_concurrency)
    ctx.log.info("thanos.marked", bucket=p.bucket, marked=len(marking.of("marked")))
    return {**common, **_summary(marking, "marked")}


ACTIONS = [plan_retention, mark_for_deletion]
