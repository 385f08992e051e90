"""Kubernetes resource quantities for storage sizes: "10Gi", "500M", "1.5Ti", "1e9" <-> bytes."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_FACTORS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
GI = 2**30


def parse_quantity(text: str) -> int:
    """Whole bytes in a quantity (rounded up, as the API server rounds storage). ValueError otherwise."""
    s = str(text).strip()
    m = _QUANTITY.fullmatch(s)
    if m is None or len(s) > 64:
        raise ValueError(f"{s[:64]!r} is not a Kubernetes quantity such as 10Gi or 500M")
    number, suffix = m.group(1), m.group(2) or ""
    try:
        value = Decimal(number)
        if suffix[:1] in ("e", "E"):
            exponent = int(suffix[1:])
            if not -30 <= exponent <= 30:
                raise ValueError(exponent)
            value = value.scaleb(exponent)
        elif suffix:
            value *= _FACTORS[suffix]
    except (InvalidOperation, ValueError):
        raise ValueError(f"{s[:64]!r} is not a Kubernetes quantity") from None
    whole = int(value.to_integral_value(rounding="ROUND_CEILING"))
    if whole > 2**63 - 1:
        raise ValueError(f"{s[:64]!r} is too large")
    return whole


def format_bytes(n: int) -> str:
    """The shortest exact binary-suffixed form: 12Gi, 1536Mi, or plain bytes."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        factor = _FACTORS[suffix]
        if n >= factor and n % factor == 0:
            return f"{n // factor}{suffix}"
    return str(n)


def _valid(v: str) -> str:
    if parse_quantity(v) <= 0:
        raise ValueError("a storage size must be positive")
    return v


StorageQuantity = Annotated[str, AfterValidator(_valid)]
"""A pydantic field type: a positive Kubernetes quantity, kept as written."""
