"""Fake Thanos blocks in a real S3 endpoint (moto), shaped as the sidecar and compactor write them.

A block is a folder named by its ULID holding ``chunks/000001``, ``index`` and, uploaded last,
``meta.json`` (facts.md §4; thanos pkg/block/metadata). ``partial=True`` leaves meta.json out, as an upload
cut short does; ``marked=True`` adds the deletion-mark.json Thanos writes. A block's compaction.sources is
its own ULID unless given (a sidecar's upload); a downsampled copy (``cover``) keeps its input's sources,
as thanos pkg/compact/downsample does.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SIDECAR_A = {"cluster": "thanos-ha", "prometheus": "monitoring/k8s", "replica": "A"}
SIDECAR_B = {"cluster": "thanos-ha", "prometheus": "monitoring/k8s", "replica": "B"}


def ulid(ms: int, rnd: random.Random | None = None) -> str:
    """A ULID: 48-bit millisecond timestamp, 80 random bits, Crockford base32 (26 chars)."""
    rnd = rnd or random.Random()
    value = (ms << 80) | rnd.getrandbits(80)
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def meta_json(
    block_id: str,
    *,
    min_time: int,
    max_time: int,
    labels: dict[str, str],
    resolution: int = 0,
    level: int = 1,
    source: str = "sidecar",
    sources: list[Any] | None = None,
) -> dict[str, Any]:
    return {
        "ulid": block_id,
        "minTime": min_time,
        "maxTime": max_time,
        "stats": {"numSamples": 120_000, "numSeries": 1_000, "numChunks": 1_000},
        "compaction": {"level": level, "sources": [block_id] if sources is None else sources},
        "version": 1,
        "thanos": {
            "labels": labels,
            "downsample": {"resolution": resolution},
            "source": source,
            "segment_files": ["000001"],
            "files": [
                {"rel_path": "chunks/000001", "size_bytes": 2048},
                {"rel_path": "index", "size_bytes": 512},
                {"rel_path": "meta.json"},
            ],
        },
    }


@dataclass
class Block:
    ulid: str
    min_time: int
    max_time: int
    labels: dict[str, str]
    resolution: int = 0
    partial: bool = False
    marked: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sources(self) -> Any:
        """compaction.sources as its meta.json lists it (None when the key is missing)."""
        return self.meta.get("compaction", {}).get("sources")


class FakeThanosBucket:
    """Writes blocks into one bucket of a moto server with plain boto3 (path-style, test credentials)."""

    def __init__(self, moto: Any, bucket: str = "thanos", prefix: str = "", create: bool = True) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.s3 = boto3.client(
            "s3",
            endpoint_url=moto.endpoint_url,
            aws_access_key_id=moto.access_key_id,
            aws_secret_access_key=moto.secret_access_key,
            region_name=moto.region,
            config=Config(s3={"addressing_style": "path"}),
        )
        self.rnd = random.Random(42)
        if create:
            self.s3.create_bucket(Bucket=bucket)

    def add(
        self,
        *,
        max_time: int,
        labels: dict[str, str],
        hours: int = 2,
        resolution: int = 0,
        created: int | None = None,
        partial: bool = False,
        marked: bool = False,
        source: str = "sidecar",
        level: int = 1,
        meta: dict[str, Any] | None = None,
        min_time: int | None = None,
        sources: list[Any] | None = None,
        tweak: Callable[[dict[str, Any]], None] | None = None,
    ) -> Block:
        """A block covering ``hours`` up to ``max_time`` (ms); its ULID is stamped ``created`` (default: just
        after max_time, as a sidecar cuts it). ``sources`` defaults to the block's own ULID; ``tweak``
        edits the meta.json document before it is uploaded (e.g. to break it)."""
        block_id = ulid(created if created is not None else max_time + 60_000, self.rnd)
        min_time = max_time - hours * HOUR_MS if min_time is None else min_time
        doc = meta or meta_json(
            block_id,
            min_time=min_time,
            max_time=max_time,
            labels=labels,
            resolution=resolution,
            level=level,
            source=source,
            sources=sources,
        )
        if tweak is not None:
            tweak(doc)
        base = f"{self.prefix}{block_id}/"
        self.put(base + "chunks/000001", b"c" * 2048)
        self.put(base + "index", b"i" * 512)
        if not partial:
            self.put(base + "meta.json", json.dumps(doc).encode())
        if marked:
            mark = {"id": block_id, "version": 1, "details": "compactor", "deletion_time": max_time // 1000}
            self.put(base + "deletion-mark.json", json.dumps(mark).encode())
        return Block(block_id, min_time, max_time, labels, resolution, partial, marked, doc)

    def cover(self, blocks: list[Block], *, marked: bool = False) -> list[Block]:
        """The compactor's downsampled copies of ``blocks``: one resolution coarser (raw -> 5m, 5m -> 1h),
        each a copy of its input's meta.json but for the ULID and the resolution, as thanos
        pkg/compact/downsample (Downsample: ``newMeta := *origMeta``) writes them: same external labels,
        time range, compaction level and compaction.sources."""
        coarser = {0: 300_000, 300_000: 3_600_000}
        out = []
        for b in blocks:
            out.append(
                self.add(
                    max_time=b.max_time,
                    labels=b.labels,
                    hours=0,
                    resolution=coarser[b.resolution],
                    source="compactor",
                    level=b.meta["compaction"]["level"],
                    created=b.max_time + 3_600_000,
                    marked=marked,
                    min_time=b.min_time,
                    sources=list(b.sources),
                )
            )
        return out

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def objects(self) -> dict[str, tuple[int, str]]:
        """Every object: key -> (size, ETag)."""
        out: dict[str, tuple[int, str]] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for o in page.get("Contents", []):
                out[o["Key"]] = (o["Size"], o["ETag"])
        return out

    def read_json(self, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def close(self) -> None:
        self.s3.close()


# -- runbookd's side ------------------------------------------------------------------------------------


def s3_config(endpoint_url: str, **overrides: Any) -> Any:
    """runbookd's S3Config for a loopback endpoint: no retries, short timeouts (tests fail fast)."""
    from daemon.config import S3Config

    return S3Config(
        **{"endpoint_url": endpoint_url, "retries": 0, "connect_timeout": 2.0, "timeout": 5.0, **overrides}
    )


def s3_client(endpoint_url: str, **overrides: Any) -> Any:
    """runbookd's S3Client with moto's test credentials; close it with ``await client.close()``."""
    from pydantic import SecretStr

    from daemon.clients.s3 import S3Client
    from support.s3 import MotoS3Server

    return S3Client(
        s3_config(endpoint_url, **overrides),
        access_key=SecretStr(MotoS3Server.access_key_id),
        secret_key=SecretStr(MotoS3Server.secret_access_key),
    )


def action_ctx(client: Any, *, dry_run: bool = False, now: float | None = None, step_id: str = "step") -> Any:
    """An ActionContext with only S3 configured and a frozen clock (default: the real time now, since
    S3 stamps LastModified with the real time)."""
    import time

    from daemon.actions.base import ActionContext, Clients
    from daemon.kits.clock import FrozenClock
    from support.action_memory import DictActionMemory

    return ActionContext(
        run_id="run-1",
        step_id=step_id,
        runbook="test-runbook",
        dry_run=dry_run,
        clients=Clients(s3=client),
        memory=DictActionMemory(),
        clock=FrozenClock(time.time() if now is None else now),
    )
