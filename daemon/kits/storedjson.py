"""JSON text of the small records routing writes by the thousand (receipts, attach events), written fast.

``json.dumps`` costs ~9 µs for a routed notification's receipt; msgspec's encoder writes the same
document in ~1 µs (compact, and UTF-8 where ``json.dumps`` writes ``\\u`` escapes). Read back with
``json.loads``, both give equal values for what these records hold: str, int, finite float, bool, None,
lists and dicts with str keys. Where msgspec refuses a value (a lone surrogate, a non-str key, a type it
does not know), ``json.dumps`` (``default=str``) writes it as before.

Values msgspec writes its own way (NaN as null, datetimes in RFC 3339, sets as arrays, bytes in base64)
would read back differently from ``json.dumps``: records of arbitrary content (a step's result, a run's
params) are not written here.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

_SORTED = msgspec.json.Encoder(order="sorted").encode
_AS_IS = msgspec.json.Encoder().encode
_REFUSED = (TypeError, ValueError, OverflowError, UnicodeEncodeError)
"""What msgspec raises for a value it will not write (UnicodeEncodeError is a ValueError; named for
the reader)."""


def sorted_keys(value: Any) -> str:
    """``json.dumps(value, sort_keys=True, default=str)``, read back equal (see the module)."""
    try:
        return _SORTED(value).decode()
    except _REFUSED:
        return json.dumps(value, sort_keys=True, default=str)


def as_is(value: Any) -> str:
    """``json.dumps(value, default=str)``: keys in insertion order; read back equal (see the module)."""
    try:
        return _AS_IS(value).decode()
    except _REFUSED:
        return json.dumps(value, default=str)
