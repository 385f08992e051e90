"""Whether a block's data survives its retirement: it has been downsampled, decided the way Thanos decides it.

Thanos downsamples block by block (thanos pkg/compact/downsample, Downsample): a 5m block
(``thanos.downsample.resolution`` 300000 ms) is written from one raw block (0), a 1h block (3600000 ms)
from one 5m block, and its meta.json is a copy of the input's with only the ULID and the resolution
changed, so it keeps ``compaction.sources`` (the ULIDs of the uploaded blocks whose data it holds), the
stream's external labels (``thanos.labels``) and minTime/maxTime. The compactor tells which blocks are
already downsampled by those sources, not by time (cmd/thanos/downsample.go, downsampleBucket): it
gathers the sources of every 5m block and of every 1h block, and skips a raw block when each of its
sources is among the 5m ones, a 5m block when each of its sources is among the 1h ones.

The rule here is the same one: a raw block may be retired only when each ULID of its compaction.sources
is a source of some unmarked, complete 5m block of the same stream (exactly the same external labels); a
5m block only when 1h blocks hold all of its sources. Time ranges prove nothing: a raw block uploaded late
or backfilled inside the range of a 5m block built from other sources was never downsampled. Stricter
than the compactor on two counts, both on the safe side: only the block's own stream counts (the
compactor pools every stream's sources), and a raw or 5m block whose sources are missing or malformed
is never covered (the compactor would take an empty list as downsampled). 1h blocks have nothing coarser: their
retention is the operator's explicit choice.
"""

from __future__ import annotations

import bisect
from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from daemon.clients.thanos import BlockFolder, BlockMeta, Labels, resolution_name

NEXT_RESOLUTION = {0: 300_000, 300_000: 3_600_000}
"""Resolution (ms) -> the coarser one whose blocks must hold a block's sources before it may be retired."""

Stream = tuple[Labels, int]


def is_cover(cover: BlockMeta, meta: BlockMeta) -> bool:
    """Whether ``cover`` may hold ``meta``'s downsampled data: the same stream, one resolution coarser,
    and sources that can be read."""
    return (
        cover.labels == meta.labels
        and cover.resolution == NEXT_RESOLUTION.get(meta.resolution)
        and cover.sources is not None
    )


def unheld(meta: BlockMeta, held: Container[str]) -> list[str] | None:
    """The sources of ``meta`` that no cover holds (``held``: the covers' sources); [] when every one is
    held, which is what makes the block downsampled. None when its sources are unknown: never covered."""
    if meta.sources is None:
        return None
    return [s for s in meta.sources if s not in held]


@dataclass
class Coverage:
    """The sources held by the downsampled blocks, per stream (external labels, resolution), and their
    merged time ranges (only to explain why a block inside them is not downsampled)."""

    holders: dict[Stream, dict[str, list[str]]] = field(default_factory=dict)
    """Stream -> source ULID -> the ULIDs of that stream's blocks whose compaction.sources list it."""
    spans: dict[Stream, list[tuple[int, int]]] = field(default_factory=dict)
    starts: dict[Stream, list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, blocks: Iterable[BlockFolder]) -> Coverage:
        """From complete, unmarked blocks (the caller filters); raw blocks cover nothing, nor do blocks
        whose sources cannot be read."""
        cov = cls()
        ranges: dict[Stream, list[tuple[int, int]]] = {}
        for f in blocks:
            meta = f.meta
            if meta is None or f.marked or meta.resolution == 0 or meta.sources is None:
                continue
            held = cov.holders.setdefault(meta.stream, {})
            for source in meta.sources:
                held.setdefault(source, []).append(f.ulid)
            ranges.setdefault(meta.stream, []).append((meta.min_time, meta.max_time))
        for stream, items in ranges.items():
            cov.spans[stream] = _merged(items)
            cov.starts[stream] = [lo for lo, _ in cov.spans[stream]]
        return cov

    def covering(self, meta: BlockMeta) -> list[str] | None:
        """The ULIDs of the coarser blocks of its stream that hold its sources, or None when some source is
        held by none (or its sources are unknown). [] for a 1h block: nothing coarser exists, nothing is
        required."""
        need = NEXT_RESOLUTION.get(meta.resolution)
        if need is None:
            return []
        held = self.holders.get((meta.labels, need), {})
        if meta.sources is None or unheld(meta, held):
            return None
        return sorted({u for s in meta.sources for u in held[s]})

    def spanned(self, meta: BlockMeta) -> bool:
        """Whether coarser blocks of its stream together span its whole [minTime, maxTime)."""
        key = (meta.labels, NEXT_RESOLUTION.get(meta.resolution, 0))
        starts = self.starts.get(key)
        if not starts:
            return False
        i = bisect.bisect_right(starts, meta.min_time) - 1
        return i >= 0 and self.spans[key][i][1] >= meta.max_time

    def why_not(self, meta: BlockMeta) -> str:
        """What the approver reads for a block kept because it is not downsampled: in particular a block
        whose time range is spanned but whose sources are not held (uploaded late, or backfilled)."""
        name = resolution_name(NEXT_RESOLUTION.get(meta.resolution, 0))
        held = self.holders.get((meta.labels, NEXT_RESOLUTION.get(meta.resolution, 0)), {})
        missing = unheld(meta, held)
        if missing is None or meta.sources is None:
            return (
                "kept: not downsampled as far as can be told (its meta.json has no valid "
                f"compaction.sources, so no {name} block can be shown to hold its data)"
            )
        which = sources_text(len(missing), len(meta.sources))
        if self.spanned(meta):
            return (
                f"kept: not downsampled: {name} blocks of the same stream span its time range, but {which} "
                f"in no {name} block (uploaded late or backfilled after those were built)"
            )
        return f"kept: not downsampled yet ({which} in no {name} block of the same stream)"


def sources_text(missing: int, total: int) -> str:
    """The subject of "... in no 5m block": which of a block's sources no cover holds."""
    if missing == total:
        return "its source is" if total == 1 else "its sources are"
    return f"{missing} of its {total} sources " + ("is" if missing == 1 else "are")


def _merged(items: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Time ranges merged where they touch or overlap ([a, b) then [b, c) is contiguous)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(items):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out
