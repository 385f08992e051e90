"""Whether a block's history survives its retirement: downsampled blocks of the same stream must cover it.

Thanos keeps long history by downsampling (thanos pkg/compact/downsample): the compactor writes a 5m
block (``thanos.downsample.resolution`` 300000 ms) from raw blocks (0) once they span 40h, and a 1h block
(3600000 ms) from 5m blocks once they span 10 days. A downsampled block keeps its source's external labels
(``thanos.labels``, the stream's identity) and its minTime/maxTime. The compactor's own retention does
not wait for downsampling, so retiring a raw block that no 5m block covers loses that time range for good.

The rule here: a raw block may be retired only when unmarked, complete 5m blocks with exactly the same
external labels together cover its whole [minTime, maxTime); a 5m block only when 1h blocks cover it. 1h
blocks have nothing coarser: their retention is the operator's explicit choice.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from daemon.clients.thanos import BlockFolder, BlockMeta, Labels, resolution_name

NEXT_RESOLUTION = {0: 300_000, 300_000: 3_600_000}
"""Resolution (ms) -> the coarser one that must cover a block before it may be retired."""


@dataclass
class _Span:
    start: int
    end: int
    ulids: list[tuple[int, int, str]] = field(default_factory=list)
    """(minTime, maxTime, ULID) of the blocks that make this span."""


@dataclass
class Coverage:
    """Merged time ranges of the downsampled blocks, per (external labels, resolution)."""

    spans: dict[tuple[Labels, int], list[_Span]] = field(default_factory=dict)
    starts: dict[tuple[Labels, int], list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, blocks: Iterable[BlockFolder]) -> Coverage:
        """From complete, unmarked blocks (the caller filters); raw blocks cover nothing."""
        by_stream: dict[tuple[Labels, int], list[tuple[int, int, str]]] = {}
        for f in blocks:
            meta = f.meta
            if meta is None or f.marked or meta.resolution == 0:
                continue
            by_stream.setdefault((meta.labels, meta.resolution), []).append(
                (meta.min_time, meta.max_time, f.ulid)
            )
        cov = cls()
        for key, items in by_stream.items():
            items.sort()
            merged: list[_Span] = []
            for lo, hi, ulid in items:
                if merged and lo <= merged[-1].end:  # [a, b) then [b, c): contiguous
                    merged[-1].end = max(merged[-1].end, hi)
                else:
                    merged.append(_Span(lo, hi))
                merged[-1].ulids.append((lo, hi, ulid))
            cov.spans[key] = merged
            cov.starts[key] = [s.start for s in merged]
        return cov

    def covering(self, meta: BlockMeta) -> list[str] | None:
        """The ULIDs of the coarser blocks that together cover this block, or None when they do not (or
        the block is 1h: nothing coarser exists, so nothing is required)."""
        need = NEXT_RESOLUTION.get(meta.resolution)
        if need is None:
            return []
        key = (meta.labels, need)
        starts = self.starts.get(key)
        if not starts:
            return None
        i = bisect.bisect_right(starts, meta.min_time) - 1
        if i < 0:
            return None
        span = self.spans[key][i]
        if span.end < meta.max_time:
            return None
        return [u for lo, hi, u in span.ulids if lo < meta.max_time and hi > meta.min_time] or None


def uncovered_reason(meta: BlockMeta) -> str:
    need = NEXT_RESOLUTION.get(meta.resolution, 0)
    return (
        f"kept: not downsampled yet (no {resolution_name(need)} blocks of the same stream cover its "
        f"whole time range)"
    )
