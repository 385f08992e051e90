"""Thanos's object storage layout (one folder per block, named by its ULID) read through S3Client.

A scan is one flat, paginated listing of the bucket: it gives every block folder, its objects and bytes,
whether its meta.json exists (uploaded last, so a folder without it is a partial upload) and whether it
carries a deletion-mark.json. The meta.json of each block that needs one is read while the listing goes
on, by a bounded pool of readers. Blocks are immutable, so parsed meta.json files are kept in the S3
client's memo and later scans only list.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from daemon.clients.s3 import S3Client, S3PermanentError, S3TemporaryError

META = "meta.json"
DELETION_MARK = "deletion-mark.json"
NO_COMPACT_MARK = "no-compact-mark.json"
MAX_META_BYTES = 4 * 2**20
"""A compacted block's meta.json lists its sources and files; a few MB is far beyond any real one."""

RESOLUTIONS = {0: "raw", 300_000: "5m", 3_600_000: "1h"}
"""thanos.downsample.resolution (ms) -> the names compactor flags use (--retention.resolution-raw|5m|1h)."""

_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
_QUEUE = 8000
"""Closed block folders waiting for their meta.json to be read: a few list pages ahead of the readers."""

Labels = tuple[tuple[str, str], ...]
T = TypeVar("T")


def is_ulid(text: str) -> bool:
    return _ULID.fullmatch(text) is not None


def resolution_name(ms: int) -> str:
    return RESOLUTIONS.get(ms, f"{ms}ms")


def labels_text(labels: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


@dataclass(frozen=True, slots=True)
class BlockMeta:
    """What runbookd needs of a meta.json."""

    ulid: str
    min_time: int
    """Milliseconds since the epoch, like maxTime."""
    max_time: int
    resolution: int
    """thanos.downsample.resolution in ms: 0 raw, 300000 (5m), 3600000 (1h)."""
    level: int
    source: str
    labels: Labels
    """thanos.labels (the external labels of the Prometheus that produced it), sorted."""
    sources: tuple[str, ...] | None = None
    """compaction.sources: the ULIDs of the uploaded blocks whose data this block holds (a compacted or
    downsampled block inherits them). None when missing or malformed: such a block is never taken as
    downsampled, nor as holding any block's downsampled data (actions/thanos/coverage.py)."""

    @property
    def stream(self) -> tuple[Labels, int]:
        """Blocks of one stream are copies of the same series at the same resolution."""
        return (self.labels, self.resolution)


def parse_sources(compaction: object) -> tuple[str, ...] | None:
    """compaction.sources as interned ULID strings (a raw, a 5m and a 1h block repeat the same ones), or
    None when missing, empty, or not all ULIDs. Never raises: a bad list must not make the rest of the
    meta.json unusable, only keep the block from counting as downsampled."""
    if not isinstance(compaction, dict):
        return None
    raw = compaction.get("sources")
    if not isinstance(raw, list) or not raw:
        return None
    if not all(isinstance(s, str) and is_ulid(s) for s in raw):
        return None
    return tuple(sys.intern(s) for s in dict.fromkeys(raw))


def parse_meta(ulid: str, data: bytes, share: Callable[[Labels], Labels] = lambda x: x) -> BlockMeta:
    """Raises ValueError saying what is wrong with the file. ``share`` returns one canonical tuple per
    distinct label set (Memo.share), so 100,000 cached blocks of a few dozen streams share them."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack
        raise ValueError("meta.json is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("meta.json is not a JSON object")
    if doc.get("ulid") != ulid:
        raise ValueError(f"meta.json names block {str(doc.get('ulid'))[:40]!r}, not its folder {ulid}")
    min_t, max_t = doc.get("minTime"), doc.get("maxTime")
    if not isinstance(min_t, int) or not isinstance(max_t, int) or isinstance(max_t, bool) or max_t < min_t:
        raise ValueError("meta.json has no valid minTime/maxTime")
    thanos = doc.get("thanos") or {}
    if not isinstance(thanos, dict):
        raise ValueError("meta.json: thanos is not an object")
    labels = thanos.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ValueError("meta.json: thanos.labels is not a map of strings")
    downsample = thanos.get("downsample") or {}
    resolution = downsample.get("resolution", 0) if isinstance(downsample, dict) else None
    if not isinstance(resolution, int) or resolution < 0:
        raise ValueError("meta.json: thanos.downsample.resolution is not a number of ms")
    compaction = doc.get("compaction") or {}
    level = compaction.get("level", 1) if isinstance(compaction, dict) else 1
    return BlockMeta(
        ulid=sys.intern(ulid),  # the object its own compaction.sources and its copies' then share
        min_time=min_t,
        max_time=max_t,
        resolution=resolution,
        level=level if isinstance(level, int) else 1,
        source=sys.intern(str(thanos.get("source") or "unknown")[:32]),
        labels=share(tuple(sorted((str(k), v) for k, v in labels.items()))),
        sources=parse_sources(compaction),
    )


@dataclass(slots=True)
class BlockFolder:
    """One ``<prefix><ULID>/`` folder as the listing showed it."""

    ulid: str
    objects: int = 0
    bytes: int = 0
    last_modified: float = 0.0
    """Newest LastModified of its objects."""
    uploaded: float | None = None
    """LastModified of meta.json, which is uploaded last: when the block became complete. None: partial."""
    marked: bool = False
    """Has a deletion-mark.json: the compactor deletes it after its --delete-delay."""
    no_compact: bool = False
    meta: BlockMeta | None = None
    problem: str | None = None
    """Why its meta.json could not be used (unreadable, vanished)."""

    @property
    def complete(self) -> bool:
        return self.uploaded is not None


@dataclass
class Scan:
    bucket: str
    prefix: str
    folders: dict[str, BlockFolder] = field(default_factory=dict)
    """In ULID order (the order of the listing)."""
    other_objects: int = 0
    """Objects outside any block folder (e.g. debug/ files)."""
    objects: int = 0
    pages: int = 0
    meta_reads: int = 0
    meta_cached: int = 0

    def with_meta(self) -> list[BlockFolder]:
        return [f for f in self.folders.values() if f.meta is not None]


class ThanosBucket:
    """One Thanos bucket (and the objstore ``prefix`` its components use, "" for none)."""

    def __init__(self, s3: S3Client, bucket: str, prefix: str = "") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    def key(self, ulid: str, name: str) -> str:
        return f"{self.prefix}{ulid}/{name}"

    async def read_meta(self, folder: BlockFolder, *, fresh: bool = False) -> BlockMeta | None:
        """Set (and return) ``folder.meta``, or ``folder.problem``. ``fresh`` skips the memo: the caller is
        about to act on what it says."""
        key = self.key(folder.ulid, META)
        if not fresh:
            cached = self.s3.memo.get(self.bucket, key)
            if cached is not None:
                folder.meta = cached
                return folder.meta
        data = await self.s3.get_object(self.bucket, key, max_bytes=MAX_META_BYTES)
        if data is None:
            folder.meta, folder.problem = None, "meta.json is gone (block deleted, or never complete)"
            return None
        try:
            folder.meta = parse_meta(folder.ulid, data, self.s3.memo.share)
        except ValueError as exc:
            folder.meta, folder.problem = None, str(exc)
            return None
        self.s3.memo.put(self.bucket, key, folder.meta)
        return folder.meta

    async def read_metas(self, folders: Iterable[BlockFolder], *, fresh: bool = False) -> None:
        """Read many meta.json files, at most ``s3.max_concurrency`` at a time."""

        async def one(f: BlockFolder) -> None:
            await self.read_meta(f, fresh=fresh)

        await for_each(folders, one, self.s3.max_concurrency)

    async def scan(self, want_meta: Callable[[BlockFolder], bool] | None = None) -> Scan:
        """List every object under the prefix; read the meta.json of each complete folder ``want_meta``
        accepts, overlapping those reads with the rest of the listing."""
        scan = Scan(self.bucket, self.prefix)
        queue: asyncio.Queue[BlockFolder | None] = asyncio.Queue(maxsize=_QUEUE)
        workers = self.s3.max_concurrency if want_meta is not None else 0

        async def reader() -> None:
            while (folder := await queue.get()) is not None:
                await self.read_meta(folder)
                scan.meta_reads += 1

        async def closed(folder: BlockFolder) -> None:
            if want_meta is None or not folder.complete or not want_meta(folder):
                return
            cached = self.s3.memo.get(self.bucket, self.key(folder.ulid, META))
            if cached is not None:
                folder.meta = cached
                scan.meta_cached += 1
            else:
                await queue.put(folder)

        async def lister() -> None:
            current: BlockFolder | None = None
            cut = len(self.prefix)
            async for page in self.s3.iter_pages(self.bucket, prefix=self.prefix):
                scan.pages += 1
                scan.objects += len(page)
                for obj in page:
                    ulid, sep, name = obj.key[cut:].partition("/")
                    if not sep or not is_ulid(ulid):
                        scan.other_objects += 1
                        continue
                    if current is None or current.ulid != ulid:
                        if current is not None:
                            await closed(current)
                        current = scan.folders.setdefault(ulid, BlockFolder(ulid))
                    _add(current, name, obj.size, obj.last_modified)
            if current is not None:
                await closed(current)
            for _ in range(workers):
                await queue.put(None)

        async def run() -> None:
            async with asyncio.TaskGroup() as tg:
                for i in range(workers):
                    tg.create_task(reader(), name=f"thanos-meta-reader-{i}")
                await lister()

        await _first_error(run())
        if want_meta is not None:
            keep = {self.key(f.ulid, META) for f in scan.folders.values() if f.complete}
            self.s3.memo.retain(self.bucket, self.prefix, keep)
        return scan

    def deletion_mark(self, ulid: str, *, details: str, now: float) -> bytes:
        """The deletion-mark.json Thanos itself writes (pkg/block/metadata/markers.go, version 1)."""
        doc = {"id": ulid, "version": 1, "details": details, "deletion_time": int(now)}
        return json.dumps(doc).encode()

    def describe_put(self, ulid: str, body: bytes) -> dict[str, Any]:
        """The PutObject request of a deletion mark, as dry-run records it."""
        key = self.key(ulid, DELETION_MARK)
        return {
            "method": "PUT",
            "operation": "PutObject",
            "url": self.s3.object_url(self.bucket, key),
            "bucket": self.bucket,
            "key": key,
            "content_type": "application/json",
            "body": json.loads(body),
        }

    async def put_deletion_mark(self, ulid: str, body: bytes) -> str:
        return await self.s3.put_object(
            self.bucket, self.key(ulid, DELETION_MARK), body, content_type="application/json"
        )


def _add(folder: BlockFolder, name: str, size: int, modified: float) -> None:
    folder.objects += 1
    folder.bytes += size
    folder.last_modified = max(folder.last_modified, modified)
    if name == META:
        folder.uploaded = modified
    elif name == DELETION_MARK:
        folder.marked = True
    elif name == NO_COMPACT_MARK:
        folder.no_compact = True


async def for_each(items: Iterable[T], fn: Callable[[T], Awaitable[None]], concurrency: int) -> None:
    """``await fn(item)`` for every item, ``concurrency`` at a time (a pool of workers sharing one
    iterator, so 10,000 items are not 10,000 tasks). The first failure cancels the rest and is raised."""
    it = iter(items)

    async def worker() -> None:
        for item in it:
            await fn(item)

    async def run() -> None:
        async with asyncio.TaskGroup() as tg:
            for i in range(concurrency):
                tg.create_task(worker(), name=f"s3-worker-{i}")

    await _first_error(run())


async def _first_error(awaitable: Awaitable[None]) -> None:
    """Await; when concurrent workers failed with S3 errors, raise the first one itself, not a group."""
    try:
        await awaitable
    except BaseExceptionGroup as group:
        s3_errors = [e for e in group.exceptions if isinstance(e, S3TemporaryError | S3PermanentError)]
        if s3_errors and len(s3_errors) == len(group.exceptions):
            raise s3_errors[0]  # noqa: B904 -- its own __cause__ is the botocore error
        raise
