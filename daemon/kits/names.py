"""Validated name types for untrusted input (alert labels end up in API paths and matchers)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check(pattern: re.Pattern[str], what: str, max_len: int) -> AfterValidator:
    def check(v: str) -> str:
        if len(v) > max_len or not pattern.fullmatch(v):  # match() with $ would accept a final newline
            shown = v if len(v) <= 64 else v[:61] + "..."
            raise ValueError(f"{shown!r} is not a valid {what} (max {max_len} chars)")
        return v

    return AfterValidator(check)


DnsLabel = Annotated[str, _check(_DNS1123_LABEL, "DNS-1123 label (lowercase a-z, 0-9, '-')", 63)]
"""Kubernetes namespace and most resource names."""

DnsSubdomain = Annotated[
    str, _check(_DNS1123_SUBDOMAIN, "DNS-1123 subdomain (lowercase a-z, 0-9, '-', '.')", 253)
]
"""Kubernetes node, pod and PVC names."""

LabelName = Annotated[str, _check(_LABEL_NAME, "Prometheus label name", 128)]

LabelValue = Annotated[str, StringConstraints(max_length=1024)]


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_PREFIX = re.compile(r"^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*/?$")
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def _bucket(v: str) -> str:
    shown = v if len(v) <= 64 else v[:61] + "..."
    if not _BUCKET.fullmatch(v):
        raise ValueError(
            f"{shown!r} is not a valid S3 bucket name (3-63 chars: lowercase a-z, 0-9, '.', '-'; "
            "starting and ending with a letter or digit)"
        )
    if ".." in v or ".-" in v or "-." in v or _IPV4.fullmatch(v):
        raise ValueError(f"{shown!r} is not a valid S3 bucket name (no '..', '.-', '-.', not an IP address)")
    if v.startswith(("xn--", "sthree-")) or v.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3")):
        raise ValueError(f"{shown!r} is not a valid S3 bucket name (reserved prefix or suffix)")
    return v


def _prefix(v: str) -> str:
    if v == "":
        return v
    shown = v if len(v) <= 64 else v[:61] + "..."
    if len(v) > 256 or not _PREFIX.fullmatch(v) or any(part in (".", "..") for part in v.split("/")):
        raise ValueError(
            f"{shown!r} is not a valid key prefix (at most 256 chars of a-z, A-Z, 0-9, '.', '_', '=', '-' "
            "in '/'-separated parts; no leading '/', no '//', no '.' or '..' parts)"
        )
    return v if v.endswith("/") else v + "/"


def _ulid(v: str) -> str:
    if not _ULID.fullmatch(v):
        shown = v if len(v) <= 64 else v[:61] + "..."
        raise ValueError(f"{shown!r} is not a ULID (26 chars of Crockford base32, upper case)")
    return v


S3BucketName = Annotated[str, AfterValidator(_bucket)]
"""An S3 bucket name by AWS's general-purpose bucket rules (MinIO's are the same or looser)."""

S3Prefix = Annotated[str, AfterValidator(_prefix)]
"""A folder-like key prefix ("" for the bucket's root), normalised to end with '/'."""

Ulid = Annotated[str, AfterValidator(_ulid)]
"""A ULID as Thanos names its blocks: 01HX... (timestamp, then randomness)."""
