"""thanos.stream_shipped: does the bucket hold a Prometheus' data up to (nearly) now?

Read from the blocks' meta.json, never from one upload timestamp: after an outage the sidecar uploads its
backlog oldest first, so the first block that lands says nothing about the rest. A stream (one set of
external labels) has shipped when its newest raw block's maxTime is within ``within`` of now and, given
the outage's start (``since``), after it: a block cut after the outage began has landed, and the sidecar
ships oldest first. Without that, the last block shipped before an outage (it ended 1-3 hours before
the outage began, blocks being cut every 2 hours) counted as shipped for hours into the outage: an
adversarial review found the retention restore of s3-connectivity-loss lowering retention back minutes
after the raise, while the sidecars still could not upload.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field, field_validator

from daemon.actions.base import ActionContext, Output, action
from daemon.actions.thanos.common import READ, BucketParams, iso_ms
from daemon.clients.s3 import S3Client
from daemon.clients.thanos import Labels, ThanosBucket, labels_text
from daemon.kits.durations import Duration, format_duration
from daemon.kits.names import LabelName, LabelValue

RETIRED_AFTER = 86400.0
"""A stream whose newest block ended more than this before ``since`` was retired before the outage."""


def parse_time(text: str) -> float:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ValueError("the time needs a zone (Z or +00:00)")
    return when.timestamp()


class ShippedParams(BucketParams):
    labels: dict[LabelName, LabelValue] = Field(min_length=1, max_length=20)
    """External labels every block of the Prometheus carries (its replicas add their own label)."""
    within: Duration = 4 * 3600.0
    """Shipped: the newest raw block of every live stream ends at most this long before now."""
    since: str = ""
    """The outage's start (ISO 8601): a live stream has shipped only once a block ending after it has;
    streams that ended a day before it are retired and do not count."""

    @field_validator("since")
    @classmethod
    def _time(cls, v: str) -> str:
        if v:
            parse_time(v)
        return v


async def streams_shipped(
    tb: ThanosBucket, labels: dict[str, str], within: float, since: float | None, now: float
) -> dict[str, Any]:
    """Per live stream whose labels include ``labels``: its newest raw block, and whether it is recent."""
    scan = await tb.scan(want_meta=lambda f: not f.marked)
    wanted = set(labels.items())
    newest: dict[Labels, int] = {}
    for f in scan.with_meta():
        meta = f.meta
        if meta is None or f.marked or meta.resolution != 0 or not wanted <= set(meta.labels):
            continue
        newest[meta.labels] = max(newest.get(meta.labels, meta.max_time), meta.max_time)
    cutoff_ms = int((now - within) * 1000)
    if since is not None:
        cutoff_ms = max(cutoff_ms, int(since * 1000) + 1)  # a block holding samples after the start
    retired_ms = int((since - RETIRED_AFTER) * 1000) if since is not None else None
    streams: list[dict[str, Any]] = []
    behind_labels: list[Labels] = []
    for key, max_time in sorted(newest.items()):
        retired = retired_ms is not None and max_time < retired_ms
        streams.append(
            {
                "labels": dict(key),
                "newest_max_time": iso_ms(max_time),
                "lag_seconds": max(0, round(now - max_time / 1000)),
                "shipped": max_time >= cutoff_ms,
                "retired": retired,
            }
        )
        if not retired and max_time < cutoff_ms:
            behind_labels.append(key)
    live = [s for s in streams if not s["retired"]]
    behind = [s for s in live if not s["shipped"]]
    shipped = bool(live) and not behind
    shown = labels_text(tuple(sorted(labels.items())))
    if not live:
        message = f"no live stream with external labels {shown} in the bucket"
    elif behind:
        message = (
            f"{len(behind)} of {len(live)} stream(s) of {shown} not shipped up to within "
            f"{format_duration(within)}{_past(since)}: e.g. {labels_text(behind_labels[0])} ends at "
            f"{behind[0]['newest_max_time']}"
        )
    else:
        message = (
            f"every stream of {shown} ({len(live)}) is shipped up to within {format_duration(within)}"
            f"{_past(since)}"
        )
    return {"shipped": shipped, "streams": streams, "message": message}


def _past(since: float | None) -> str:
    return "" if since is None else f" and past the outage's start ({iso_ms(int(since * 1000))})"


@action("thanos.stream_shipped", read_only=True, idempotent=True, permissions=READ)
async def stream_shipped(ctx: ActionContext, p: ShippedParams) -> Output:
    """Whether the bucket holds every live stream of a Prometheus (blocks whose external labels include
    ``labels``) up to within ``within`` of now (and past ``since``), from the newest raw block's maxTime
    in meta.json."""
    s3: S3Client = ctx.need("s3")
    now = ctx.clock.now()
    since = parse_time(p.since) if p.since else None
    found = await streams_shipped(p.open(s3), dict(p.labels), p.within, since, now)
    return {"ok": True, "bucket": p.bucket, "within": format_duration(p.within), **found}


ACTIONS = [stream_shipped]
