"""Why a Thanos sidecar fails to upload, read from its log lines and its failing bucket operations, and
whether restarting its pod can cure that.

Pure functions (no I/O) so that each rule is unit-tested on real log shapes:

- ``credentials`` (AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, ExpiredToken): the keys the
  sidecar holds are refused. The Prometheus Operator passes the objstore config to the sidecar as an
  environment variable read at start (``OBJSTORE_CONFIG`` from a Secret), so a restart helps only when
  that Secret changed after the container started (the keys were rotated and the pod still has the old
  ones). Otherwise the keys themselves, or the bucket policy, are wrong: a person must fix them.
- ``bucket_missing`` (NoSuchBucket): the bucket is gone or misnamed. A restart cannot create it.
- ``overlap`` (overlapping blocks) and ``corrupt_block`` (a block whose meta.json/index/chunks cannot
  be read): the same block fails again after a restart; it needs a person (and usually thanos tools).
- ``network`` (connection refused, timeouts, DNS, TLS): a restart helps only when the fault is this
  pod's own (S3 answers runbookd and the other sidecars); the runbook checks that separately.
- ``unknown``: nothing recognised; a restart is the generic cure for a stuck shipper, shown with the
  log lines so the approver can judge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Cause = Literal["credentials", "bucket_missing", "overlap", "corrupt_block", "network", "unknown"]

# Most specific first: a line matching several rules is classified by the first.
_RULES: tuple[tuple[Cause, re.Pattern[str]], ...] = (
    (
        "bucket_missing",
        re.compile(r"NoSuchBucket|specified bucket does not exist|bucket .{0,80}not (?:be )?found", re.I),
    ),
    (
        "credentials",
        re.compile(
            r"AccessDenied|Access Denied|InvalidAccessKeyId|Access Key Id you provided does not exist"
            r"|SignatureDoesNotMatch|signature we calculated does not match|ExpiredToken"
            r"|InvalidToken|security token included in the request is (?:invalid|expired)",
            re.I,
        ),
    ),
    ("overlap", re.compile(r"overlap", re.I)),
    (
        "corrupt_block",
        re.compile(
            r"corrupt|checksum mismatch|unexpected end of JSON input|invalid character .{0,40}meta\.json"
            r"|read meta(?:\.json)?|invalid block|out-of-order chunks?|index.{0,40}(?:malformed|invalid)",
            re.I,
        ),
    ),
    (
        "network",
        re.compile(
            r"connection refused|connection reset|no such host|i/o timeout|context deadline exceeded"
            r"|TLS handshake|x509:|network is unreachable|EOF$",
            re.I,
        ),
    ),
)

RESTART_CURES: dict[Cause, bool] = {
    "credentials": False,  # unless the Secret changed after the container started: see decide()
    "bucket_missing": False,
    "overlap": False,
    "corrupt_block": False,
    "network": True,
    "unknown": True,
}

_ERRORISH = re.compile(r"level=(?:error|warn)|\berr(?:or)?[=:]|fail", re.I)


@dataclass(frozen=True)
class Diagnosis:
    cause: Cause
    evidence: list[str]
    """The log lines that show it (at most a few), already redacted by the caller."""
    failing_operations: list[str]


def classify(lines: list[str], failing_operations: list[str]) -> Diagnosis:
    """The cause the newest recognisable error line points at; ``unknown`` when none is recognised.

    The newest line wins: a sidecar that had a network blip an hour ago and has been refused by S3
    since is a credentials case now."""
    for line in reversed(lines):
        if not _ERRORISH.search(line):
            continue
        for cause, pattern in _RULES:
            if pattern.search(line):
                evidence = [ln for ln in lines if _ERRORISH.search(ln) and pattern.search(ln)][-3:]
                return Diagnosis(cause, evidence, sorted(failing_operations))
    return Diagnosis("unknown", [ln for ln in lines if _ERRORISH.search(ln)][-3:], sorted(failing_operations))


Verdict = Literal["restart", "report"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str


def decide(diagnosis: Diagnosis, secret_changed_after_start: bool | None) -> Decision:
    """Whether the cause is one a restart cures. ``secret_changed_after_start`` is None when it could
    not be told (no Secret found, no start time, no change time): then credentials are reported."""
    cause = diagnosis.cause
    if cause == "credentials":
        if secret_changed_after_start:
            return Decision(
                "restart",
                "S3 refuses the sidecar's credentials, and the objstore Secret changed after the container "
                "started: the pod still holds the old keys, and a restart loads the new ones",
            )
        if secret_changed_after_start is None:
            return Decision(
                "report",
                "S3 refuses the sidecar's credentials, and runbookd cannot tell whether the objstore Secret "
                "changed since the container started: check the keys and the bucket policy",
            )
        return Decision(
            "report",
            "S3 refuses the sidecar's credentials, and the objstore Secret has not changed since the "
            "container started: the keys themselves (or the bucket policy) are wrong; a restart would load "
            "the same keys",
        )
    if cause == "bucket_missing":
        return Decision("report", "the bucket does not exist (NoSuchBucket): a restart cannot create it")
    if cause == "overlap":
        return Decision(
            "report",
            "the sidecar meets overlapping blocks: the same blocks fail again after a restart; a person must "
            "resolve the overlap (thanos tools bucket verify)",
        )
    if cause == "corrupt_block":
        return Decision(
            "report",
            "a block cannot be read (corrupt or partial): the shipper fails on it again after a restart; a "
            "person must inspect or remove that block on the Prometheus volume",
        )
    if cause == "network":
        return Decision("restart", "network errors to S3: a restart helps when the fault is this pod's own")
    return Decision("restart", "no known cause in the log: a restart is the usual cure for a stuck shipper")
