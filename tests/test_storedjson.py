"""``kits.storedjson``: the receipts and attach events routing writes read back as ``json.dumps`` wrote them."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.kits import storedjson

_plain: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters() | st.sampled_from(["\ud800", "\udfff", "\x00"])),  # lone surrogates: json.dumps
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(st.characters() | st.just("\udc80"), max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def _pairs(text: str) -> Any:
    """The document with each object as its list of (key, value) pairs: key order made visible."""
    return json.loads(text, object_pairs_hook=list)


@settings(max_examples=300, deadline=None)
@given(_plain)
def test_plain_values_read_back_as_json_dumps_wrote_them_keys_and_order_included(value: Any) -> None:
    assert _pairs(storedjson.sorted_keys(value)) == _pairs(json.dumps(value, sort_keys=True, default=str))
    assert _pairs(storedjson.as_is(value)) == _pairs(json.dumps(value, default=str))


def test_what_msgspec_refuses_is_written_by_json_dumps_exactly() -> None:
    odd = object.__new__(type("Odd", (), {}))
    for value in ({"error": "\ud800"}, {2: "b", 1: "a"}, {"x": odd}):
        assert storedjson.sorted_keys(value) == json.dumps(value, sort_keys=True, default=str)
    for value in ({"error": "\ud800"}, {"x": odd}):
        assert storedjson.as_is(value) == json.dumps(value, default=str)
    # int keys: msgspec writes them as strings in their order, as json.dumps does
    assert _pairs(storedjson.as_is({2: "b", 1: "a"})) == _pairs(json.dumps({2: "b", 1: "a"}))


def test_a_receipt_is_compact_utf8_in_its_own_key_order() -> None:
    receipt = {"alerts": 1, "started": [], "unmatched": [{"alert": "Disk\u00e9", "fingerprint": "ab"}]}
    assert storedjson.as_is(receipt) == (
        '{"alerts":1,"started":[],"unmatched":[{"alert":"Disk\u00e9","fingerprint":"ab"}]}'
    )
    assert storedjson.sorted_keys({"b": 1, "a": {"d": 2, "c": 3}}) == '{"a":{"c":3,"d":2},"b":1}'
