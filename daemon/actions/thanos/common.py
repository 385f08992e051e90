"""What the Thanos actions share: bucket parameters, retention parameters, and output shapes."""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import Field, model_validator

from daemon.actions.base import Params
from daemon.clients.s3 import S3Client
from daemon.clients.thanos import BlockFolder, BlockMeta, Labels, Scan, ThanosBucket, resolution_name
from daemon.kits.clock import iso
from daemon.kits.durations import Duration, format_duration
from daemon.kits.names import S3BucketName, S3Prefix

MIN_RETENTION = 86400.0
"""A non-zero retention shorter than a day is almost surely a unit mistake (30 vs 30d)."""

READ = ("s3:ListBucket", "s3:GetObject")


class BucketParams(Params):
    bucket: S3BucketName
    prefix: S3Prefix = ""
    """The objstore ``prefix`` the Thanos components use, if any."""

    def open(self, s3: S3Client) -> ThanosBucket:
        return ThanosBucket(s3, self.bucket, self.prefix)


class RetentionParams(BucketParams):
    """Retention per resolution, as the compactor's --retention.resolution-raw|5m|1h: a block whose
    maxTime is older than this is retired. 0 keeps that resolution for ever."""

    retention_raw: Duration = 0.0
    retention_5m: Duration = 0.0
    retention_1h: Duration = 0.0

    @model_validator(mode="after")
    def _sane(self) -> RetentionParams:
        values = {"raw": self.retention_raw, "5m": self.retention_5m, "1h": self.retention_1h}
        for name, seconds in values.items():
            if 0 < seconds < MIN_RETENTION:
                raise ValueError(
                    f"retention_{name}: {format_duration(seconds)} is under 1d (0 keeps for ever)"
                )
        if not any(values.values()):
            raise ValueError("every retention is 0 (keep for ever): there is nothing to retire")
        return self

    def cutoffs_ms(self, now: float) -> dict[int, int | None]:
        """Resolution (ms) -> maxTime (ms) a block must be older than; None keeps that resolution."""
        return {
            res: int((now - seconds) * 1000) if seconds else None
            for res, seconds in (
                (0, self.retention_raw),
                (300_000, self.retention_5m),
                (3_600_000, self.retention_1h),
            )
        }

    def describe(self) -> dict[str, str]:
        return {
            "raw": format_duration(self.retention_raw) if self.retention_raw else "keep",
            "5m": format_duration(self.retention_5m) if self.retention_5m else "keep",
            "1h": format_duration(self.retention_1h) if self.retention_1h else "keep",
        }


MaxListed = Annotated[int, Field(ge=0, le=500)]
"""How many items a detailed list in an output shows (its count is always complete)."""


def iso_ms(ms: int) -> str:
    return iso(ms / 1000)


def labels_dict(labels: Labels) -> dict[str, str]:
    return dict(labels)


def block_view(folder: BlockFolder) -> dict[str, Any]:
    meta: BlockMeta | None = folder.meta
    out: dict[str, Any] = {"ulid": folder.ulid, "bytes": folder.bytes, "objects": folder.objects}
    if folder.uploaded is not None:
        out["uploaded"] = iso(folder.uploaded)
    if meta is not None:
        out |= {
            "min_time": iso_ms(meta.min_time),
            "max_time": iso_ms(meta.max_time),
            "resolution": resolution_name(meta.resolution),
            "level": meta.level,
            "source": meta.source,
            "labels": labels_dict(meta.labels),
        }
    return out


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def scan_view(scan: Scan, started: float) -> dict[str, Any]:
    """What a scan cost: list pages, objects, meta.json files read and found in the cache, seconds."""
    return {
        "pages": scan.pages,
        "objects": scan.objects,
        "meta_reads": scan.meta_reads,
        "meta_cached": scan.meta_cached,
        "seconds": round(time.perf_counter() - started, 3),
    }
