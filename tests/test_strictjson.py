"""The strict JSON of requests and answers (issue 11, points 3 and 4)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.kits import strictjson

_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
)  # loads refuses these
finite_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=25,
)


def nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_is_bounded_exactly() -> None:
    assert strictjson.loads(nest(strictjson.MAX_DEPTH)) is not None
    for depth in (strictjson.MAX_DEPTH + 1, 5_000, 200_000):
        with pytest.raises(strictjson.JSONRefused, match="nested deeper"):
            strictjson.loads(nest(depth))
    deep_object = '{"a": ' * 40 + "1" + "}" * 40
    with pytest.raises(strictjson.JSONRefused, match="nested deeper"):
        strictjson.loads(deep_object)


@pytest.mark.parametrize(
    "text", ['"x\\ud800"', '{"\\udfff": 1}', '["ok", ["\\udbff"]]', "NaN", "[Infinity]", '{"a": -Infinity}']
)
def test_non_standard_json_is_refused(text: str) -> None:
    with pytest.raises(strictjson.JSONRefused):
        strictjson.loads(text)


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(strictjson.JSONRefused, match="UTF-8"):
        strictjson.loads(b'{"a": "\xff"}')


def test_a_surrogate_pair_is_one_character_and_fine() -> None:
    assert strictjson.loads('"\\ud83d\\ude00"') == "\U0001f600"


@settings(max_examples=200, deadline=None)
@given(value=finite_json)
def test_what_dumps_writes_loads_reads_back(value: Any) -> None:
    text = strictjson.dumps(value)
    if _depth(value) < strictjson.MAX_DEPTH:
        assert strictjson.loads(text) == value


def test_answers_never_hold_nan_or_infinity() -> None:
    text = strictjson.dumps({"ratio": math.nan, "rates": [math.inf, -math.inf, 1.5]})
    assert json.loads(text, parse_constant=_refuse) == {"ratio": "nan", "rates": ["inf", "-inf", 1.5]}


def _refuse(name: str) -> None:
    raise AssertionError(name)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def test_audit_refuses_a_nul_in_keys_and_values() -> None:
    for raw in ('{"a": "\\u0000"}', '{"\\u0000": 1}', '["x\\u0000y"]'):
        with pytest.raises(strictjson.JSONRefused, match="NUL"):
            strictjson.loads(raw)
    assert strictjson.loads('{"a": "\\\\u0000"}') == {"a": "\\u0000"}


def test_numbers_out_of_range_and_documents_of_too_many_values_are_refused() -> None:
    for text in ('{"a": 1e400}', "[-1e999]", "1E+309"):
        with pytest.raises(strictjson.JSONRefused, match="out of range"):
            strictjson.loads(text)
        with pytest.raises(strictjson.JSONRefused, match="out of range"):
            strictjson.refuse_constants(text)
    assert strictjson.loads('{"a": 1e300, "b": -2.5e-300}') == {"a": 1e300, "b": -2.5e-300}
    enough = "[" + ",".join(["1"] * (strictjson.MAX_VALUES - 1)) + "]"
    assert len(strictjson.loads(enough)) == strictjson.MAX_VALUES - 1
    with pytest.raises(strictjson.JSONRefused, match="more than"):
        strictjson.loads("[" + ",".join(["1"] * strictjson.MAX_VALUES) + "]")
    strictjson.refuse_constants('{"label": "NaN", "n": 1.5}')  # only what is outside strings counts
    for text in ('{"x": NaN}', "[Infinity]"):
        with pytest.raises(strictjson.JSONRefused, match="not standard JSON"):
            strictjson.refuse_constants(text)


@pytest.mark.parametrize(
    "text", ['{"a": 1, "a": 2}', '{"x": [{"b": 1, "c": 2, "b": 1}]}', '{"a": 1, "\\u0061": 1}']
)
def test_an_object_repeating_a_name_is_refused(text: str) -> None:
    """Parsers disagree on which one counts (Python keeps the last): what runbookd acts on could differ
    from what a proxy, a log or a reviewer read (an adversarial pass on Slack payloads)."""
    with pytest.raises(strictjson.JSONRefused, match="repeats a name"):
        strictjson.loads(text)
    assert strictjson.loads('{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}')["b"][1]["a"] == 3
