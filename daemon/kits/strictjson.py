"""JSON for hostile input: standard JSON only (no NaN/Infinity), no lone surrogates or NUL characters,
no repeated names in an object, bounded nesting.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``"\\ud800"`` (a string that cannot be encoded again)
and recurses once per nesting level. It also accepts ``"\\u0000"``, which PostgreSQL cannot store in a
text field (on that store such a value made a manual trigger answer 503 and an alert label stall routing).
Anything parsed from a request goes through ``loads`` here, and everything answered goes through
``dumps``, so a response is always standard JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

MAX_DEPTH = 32
"""Deepest nesting accepted (objects and arrays); runbookd's own documents are at most 6 deep."""
MAX_VALUES = 20_000
"""Most values (strings, numbers, objects, arrays...) in one document: the check walks each in Python,
and 1 MiB of ``[]`` is 340,000 of them (0.35 s of event loop); runbookd's own requests hold a few dozen."""


class JSONRefused(ValueError):
    """Not standard JSON, or JSON runbookd will not take (too deep, lone surrogates, NUL characters)."""


def _no_constant(name: str) -> NoReturn:
    raise JSONRefused(f"{name} is not standard JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose names are unique: parsers disagree on a repeated one (Python's keeps the last, a
    proxy or a log may show the first), so what runbookd acts on could differ from what was checked."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise JSONRefused("an object repeats a name")
    return obj


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise JSONRefused("a string holds a NUL character (\\u0000)")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise JSONRefused("a string holds a lone surrogate (\\ud800-\\udfff)") from None


def _check_tree(data: Any, max_depth: int, max_values: int) -> None:
    """Walk the parsed value without recursion: depth, the count of values (counted before a container's
    items are walked, so a huge one is refused at once), finite numbers, the text of every key and string."""
    todo: list[tuple[Any, int]] = [(data, 0)]
    seen = 1
    while todo:
        value, depth = todo.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, float):
            if not math.isfinite(value):  # 1e400: legal JSON syntax, but Infinity once read
                raise JSONRefused("a number is out of range")
        elif isinstance(value, dict | list):
            if depth >= max_depth:
                raise JSONRefused(f"nested deeper than {max_depth} levels")
            seen += len(value)
            if seen > max_values:
                raise JSONRefused(f"more than {max_values} values")
            if isinstance(value, dict):
                for k, v in value.items():
                    _check_text(k)
                    todo.append((v, depth + 1))
            else:
                todo.extend((v, depth + 1) for v in value)


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> Any:
    """Parse standard JSON from UTF-8 bytes or text; JSONRefused (a ValueError) for anything else."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_object)
    except JSONRefused:
        raise
    except UnicodeDecodeError:
        raise JSONRefused("not UTF-8") from None
    except RecursionError:
        raise JSONRefused(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise JSONRefused(f"not valid JSON: {exc}") from None
    _check_tree(data, max_depth, max_values)
    return data


def refuse_constants(text: str) -> None:
    """JSONRefused if ``text`` holds ``NaN``, ``Infinity`` or a number out of range outside its strings;
    parsed in C, nothing walked in Python (for documents another parser validates)."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except JSONRefused:
        raise
    except (ValueError, RecursionError) as exc:
        raise JSONRefused(f"not valid JSON: {exc}") from None
    try:
        json.dumps(data, allow_nan=False)  # an infinite number (1e400) is refused, in C
    except ValueError:
        raise JSONRefused("a number is out of range") from None
    except RecursionError:
        raise JSONRefused("nested too deep") from None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf": a string, as Prometheus writes them
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(data: Any) -> str:
    """Standard JSON: a non-finite float (from a step's output, say) is written as a string."""
    try:
        return json.dumps(data, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(data), allow_nan=False)
