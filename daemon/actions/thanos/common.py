"""What the Thanos actions share: bucket parameters, retention parameters, and output shapes."""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from daemon.actions.base import Params
from daemon.actions.thanos.compactor import Matchers
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
    maxTime is older than this is retired. 0 keeps that resolution for ever.

    Whatever the retention, a raw block is retired only when 5m blocks of its stream cover it, and a 5m
    block only when 1h blocks do (daemon/actions/thanos/coverage.py); and nothing is retired while the
    compactor is halted or idle (``compactor_check``)."""

    retention_raw: Duration = 0.0
    retention_5m: Duration = 0.0
    retention_1h: Duration = 0.0
    compactor_retention_raw: Duration | None = None
    """The compactor's own --retention.resolution-raw, when it has one ("" or None: not set). Nothing is
    retired that the compactor would keep: the longer of the two retentions applies (0 keeps)."""
    compactor_retention_5m: Duration | None = None
    compactor_retention_1h: Duration | None = None
    compactor_check: bool = True
    """Ask Prometheus whether the compactor runs (not halted, an iteration in the last 24h) and retire
    nothing when it does not. Turn off only where the compactor's metrics cannot be scraped."""
    compactor_selector: Matchers = ""
    """Label matchers selecting this bucket's compactor series (e.g. ``job="thanos-compact"``)."""

    @field_validator(
        "compactor_retention_raw", "compactor_retention_5m", "compactor_retention_1h", mode="before"
    )
    @classmethod
    def _unset(cls, v: object) -> object:
        return None if v == "" else v

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

    def _compactor(self) -> dict[int, float | None]:
        return {
            0: self.compactor_retention_raw,
            300_000: self.compactor_retention_5m,
            3_600_000: self.compactor_retention_1h,
        }

    def effective(self) -> dict[int, float]:
        """Resolution (ms) -> the retention applied (seconds, 0 keeps): ours, or the compactor's when it
        keeps longer (never mark what the compactor itself would keep)."""
        ours = {0: self.retention_raw, 300_000: self.retention_5m, 3_600_000: self.retention_1h}
        out = {}
        for res, seconds in ours.items():
            theirs = self._compactor()[res]
            if theirs is None or seconds == 0:
                out[res] = seconds
            else:
                out[res] = 0.0 if theirs == 0 else max(seconds, theirs)
        return out

    def cutoffs_ms(self, now: float) -> dict[int, int | None]:
        """Resolution (ms) -> maxTime (ms) a block must be older than; None keeps that resolution."""
        return {
            res: int((now - seconds) * 1000) if seconds else None for res, seconds in self.effective().items()
        }

    def describe(self) -> dict[str, str]:
        names = {0: "raw", 300_000: "5m", 3_600_000: "1h"}
        return {names[r]: format_duration(s) if s else "keep" for r, s in self.effective().items()}

    def compactor_flags(self) -> dict[str, str] | None:
        """The compactor's retention flags as given, or None when none was."""
        names = {0: "raw", 300_000: "5m", 3_600_000: "1h"}
        given = {names[r]: v for r, v in self._compactor().items() if v is not None}
        if not given:
            return None
        return {f"--retention.resolution-{k}": format_duration(v) if v else "0d" for k, v in given.items()}

    def compactor_note(self) -> str:
        flags = self.compactor_flags()
        if flags is None:
            return ""
        shown = " ".join(f"{k}={v}" for k, v in flags.items())
        return (
            f"the compactor runs with {shown}: nothing is marked that it would keep (the longer retention "
            "of each resolution applies)"
        )


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
