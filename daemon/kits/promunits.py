"""Prometheus' own units, as the Prometheus Operator passes them to --storage.tsdb.retention.time|size.

Durations (prometheus/common model.ParseDuration): ``1y2w3d4h5m6s7ms``, units largest first, a year being
365 days. Sizes (Prometheus' units.Base2Bytes, the operator's ByteSize ``(^0|([0-9]*[.])?[0-9]+((K|M|G|T|E
|P)i?)?B)$``): ``512MB`` and ``512MiB`` are both 512 * 2^20 bytes.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import AfterValidator

_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
_SIZE = re.compile(r"^(0|([0-9]*[.])?[0-9]+(([KMGTPE])i?)?B)$")
_SIZE_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}


def parse_prom_duration(text: str) -> float:
    """Seconds. Raises ValueError."""
    m = _DURATION.fullmatch(text)
    if not text or m is None or not any(m.groups()):
        raise ValueError(f"{text[:40]!r} is not a Prometheus duration (e.g. 2h, 15d, 1y)")
    return float(sum(int(g) * u for g, u in zip(m.groups(), _DURATION_UNITS, strict=True) if g))


def parse_prom_size(text: str) -> int:
    """Bytes. Raises ValueError."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ValueError(f"{text[:40]!r} is not a Prometheus size (e.g. 512MB, 10GiB)")
    if text == "0":
        return 0
    number = text.rstrip("B").rstrip("i")
    unit = number[-1] if number[-1] in _SIZE_POWERS else ""
    value = float(number[:-1] if unit else number)
    factor: int = 1024 ** _SIZE_POWERS.get(unit, 0)
    return math.ceil(value * factor)


def format_prom_size(n: int) -> str:
    """Whole MiB, rounded up, in the form Prometheus reads (``1536MB``)."""
    return f"{math.ceil(n / 2**20)}MB"


def _duration(v: str) -> str:
    parse_prom_duration(v)
    return v


def _size(v: str) -> str:
    parse_prom_size(v)
    return v


PromDuration = Annotated[str, AfterValidator(_duration)]
PromSize = Annotated[str, AfterValidator(_size)]
