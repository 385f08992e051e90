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
