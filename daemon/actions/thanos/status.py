"""thanos.bucket_status: the blocks in a Thanos bucket, per stream of external labels, and whether new ones
keep arriving."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from daemon.actions.base import ActionContext, Output, action
from daemon.actions.thanos.common import READ, BucketParams, MaxListed, block_view, gib, iso_ms, scan_view
from daemon.clients.s3 import S3Client
from daemon.clients.thanos import BlockFolder, BlockMeta, Labels, Scan, labels_text, resolution_name
from daemon.kits.clock import iso
from daemon.kits.durations import Duration, format_duration
from daemon.kits.names import LabelName, LabelValue

MAX_STREAMS = 200


class StatusParams(BucketParams):
    max_age: Duration | None = None
    """Expect a block (of the selected streams) uploaded within this long; ``ok: false`` otherwise."""
    source: Literal["any", "sidecar", "compactor", "receive"] = "any"
    """Only blocks made by this Thanos component count (``sidecar``: what Prometheus shipped)."""
    labels: dict[LabelName, LabelValue] = Field(default_factory=dict, max_length=10)
    """Only blocks whose external labels include all of these count (e.g. ``{replica: A}``)."""
    max_listed: MaxListed = 20

    @field_validator("max_age")
    @classmethod
    def _bounded(cls, v: float | None) -> float | None:
        if v is not None and not 60 <= v <= 30 * 86400:
            raise ValueError("max_age is between 1m and 30d")
        return v


@dataclass
class Stream:
    labels: Labels
    blocks: int = 0
    bytes: int = 0
    resolutions: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    newest: BlockFolder | None = None
    """The block with the latest maxTime."""
    newest_max_time: int = 0
    last_upload: BlockFolder | None = None
    """The block whose meta.json was uploaded last."""

    def add(self, f: BlockFolder, meta: BlockMeta) -> None:
        self.blocks += 1
        self.bytes += f.bytes
        res = resolution_name(meta.resolution)
        self.resolutions[res] = self.resolutions.get(res, 0) + 1
        self.sources[meta.source] = self.sources.get(meta.source, 0) + 1
        if self.newest is None or (meta.max_time, f.ulid) > (self.newest_max_time, self.newest.ulid):
            self.newest, self.newest_max_time = f, meta.max_time
        if self.last_upload is None or (f.uploaded or 0) > (self.last_upload.uploaded or 0):
            self.last_upload = f

    def view(self, now: float, max_age: float | None) -> dict[str, Any]:
        assert self.newest is not None and self.last_upload is not None
        uploaded = self.last_upload.uploaded or 0.0
        age = max(0.0, now - uploaded)
        return {
            "labels": dict(self.labels),
            "blocks": self.blocks,
            "bytes": self.bytes,
            "resolutions": self.resolutions,
            "sources": self.sources,
            "newest_max_time": iso_ms(self.newest_max_time),
            "newest_ulid": self.newest.ulid,
            "last_upload": iso(uploaded),
            "last_upload_ulid": self.last_upload.ulid,
            "upload_age_seconds": round(age),
            "stale": None if max_age is None else age > max_age,
        }


def _selected(f: BlockFolder, p: StatusParams) -> bool:
    meta = f.meta
    if meta is None:
        return False
    if p.source != "any" and meta.source != p.source:
        return False
    have = dict(meta.labels)
    return all(have.get(k) == v for k, v in p.labels.items())


def _verdict(p: StatusParams, streams: list[dict[str, Any]]) -> tuple[bool, str]:
    which = " ".join(
        [f"source={p.source}" if p.source != "any" else "", labels_text(tuple(sorted(p.labels.items())))]
    ).strip()
    if p.max_age is None:
        return True, f"{len(streams)} stream(s)"
    within = format_duration(p.max_age)
    if not streams:
        return False, f"no block matches {which or 'anything'}: nothing was uploaded within {within}"
    stale = [s for s in streams if s["stale"]]
    if stale:
        names = ", ".join(labels_text(tuple(s["labels"].items())) for s in stale[:5])
        return False, f"{len(stale)} of {len(streams)} stream(s) uploaded nothing within {within}: {names}"
    return True, f"every one of {len(streams)} stream(s) uploaded a block within {within}"


def _streams(blocks: list[BlockFolder], p: StatusParams) -> dict[Labels, Stream]:
    streams: dict[Labels, Stream] = {}
    for f in blocks:
        if f.meta is not None and _selected(f, p):
            streams.setdefault(f.meta.labels, Stream(f.meta.labels)).add(f, f.meta)
    return streams


def _problems(scan: Scan, now: float, max_listed: int) -> dict[str, Any]:
    """Partial uploads (oldest first) and unreadable meta.json files."""
    folders = scan.folders.values()
    partial = sorted((f for f in folders if not f.complete and not f.marked), key=lambda f: f.last_modified)
    unreadable = [f for f in folders if f.complete and not f.marked and f.meta is None]
    return {
        "partial": {
            "count": len(partial),
            "bytes": sum(f.bytes for f in partial),
            "oldest": [
                {
                    **block_view(f),
                    "last_modified": iso(f.last_modified),
                    "age_seconds": round(now - f.last_modified),
                }
                for f in partial[:max_listed]
            ],
        },
        "unreadable": {
            "count": len(unreadable),
            "items": [{"ulid": f.ulid, "problem": f.problem} for f in unreadable[:max_listed]],
        },
    }


@action("thanos.bucket_status", read_only=True, idempotent=True, permissions=READ)
async def bucket_status(ctx: ActionContext, p: StatusParams) -> Output:
    """The blocks of a Thanos bucket: per stream of external labels the newest block and the last upload,
    partial uploads (no meta.json), blocks marked for deletion; with ``max_age``, whether every selected
    stream uploaded a block that recently."""
    s3: S3Client = ctx.need("s3")
    started = time.perf_counter()
    scan = await p.open(s3).scan(want_meta=lambda f: not f.marked)
    now = ctx.clock.now()
    marked = [f for f in scan.folders.values() if f.marked]
    blocks = [f for f in scan.folders.values() if f.meta is not None and not f.marked]
    streams = _streams(blocks, p)
    views = [streams[k].view(now, p.max_age) for k in sorted(streams)]
    ok, verdict = _verdict(p, views)
    problems = _problems(scan, now, p.max_listed)
    total = sum(f.bytes for f in blocks)
    return {
        "ok": ok,
        "message": f"{p.bucket}: {len(blocks)} blocks ({gib(total)}), {problems['partial']['count']} partial, "
        f"{len(marked)} marked for deletion; {verdict}",
        "bucket": p.bucket,
        "prefix": p.prefix,
        "now": iso(now),
        "blocks": len(blocks),
        "bytes": total,
        "marked": {"count": len(marked), "bytes": sum(f.bytes for f in marked)},
        **problems,
        "streams": views[:MAX_STREAMS],
        "streams_total": len(views),
        "stale_streams": [s["labels"] for s in views if s["stale"]][: p.max_listed],
        "scan": scan_view(scan, started),
    }


ACTIONS = [bucket_status]
