"""Durations as operators write them: 30s, 5m, 1h30m, 2d (Prometheus style)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration string; bare numbers are seconds. Raises ValueError on anything else."""
    if isinstance(text, bool):
        raise ValueError("a duration is a string like 30s, 5m or 1h30m")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    s = str(text).strip()
    if not s or _PART.sub("", s) != "":
        raise ValueError(f"invalid duration {text!r}: use forms like 30s, 5m, 1h30m, 2d")
    return float(sum(int(n) * _UNITS[u] for n, u in _PART.findall(s)))


def format_duration(seconds: float) -> str:
    s = int(seconds)
    if s == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out.append(f"{s // size}{unit}")
            s %= size
    return "".join(out)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A pydantic field type: accepts "5m" (or seconds), holds seconds as float."""
