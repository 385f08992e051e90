"""The webhook's quick parse (daemon/engine/quickparse.py) takes only what the full validation takes.

The full way is ``events.WebhookPayload`` (pydantic) plus the NaN/Infinity and NUL checks of
``server.intake``. The quick parse may refuse more (the body then goes the full way), never take more, and
what it takes must hold the same values; and it must take what Alertmanager really sends, or it is dead
code. Bodies are generated (Hypothesis) and bent toward the edges the two parsers treat differently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from support.engines import LOG_RUNBOOK
from support.inproc import alert_payload, serve
from support.payloads import webhook_payload

from daemon.engine import quickparse, routing
from daemon.engine.events import MAX_NAME, MAX_VALUE, Alert, WebhookPayload
from daemon.engine.quickparse import QuickAlert, QuickPayload
from daemon.kits import strictjson
from daemon.server import intake as server_intake


def _full_way(text: str) -> WebhookPayload | None:
    """What ``server.intake`` accepts without the quick parse (None: a 400)."""
    try:
        payload = WebhookPayload.model_validate_json(text)
        strictjson.refuse_constants(text)
    except (ValidationError, strictjson.JSONRefused):
        return None
    return None if payload.holds_nul() else payload


def _check(text: str) -> QuickPayload | None:
    quick = quickparse.parse(text)
    if quick is not None:
        full = _full_way(text)
        assert full is not None, text[:300]
        assert msgspec.to_builtins(quick) == full.model_dump(), text[:300]
        # Routing reads a matched notification from these structs: what it reads of an alert agrees too.
        for q, f in zip(quick.alerts, full.alerts, strict=True):
            assert (q.name, q.key(), q.as_context()) == (f.name, f.key(), f.as_context()), text[:300]
    return quick


# ------------------------------------------------------------------------------------------ the schemas agree


@pytest.mark.parametrize(("quick", "full"), [(QuickPayload, WebhookPayload), (QuickAlert, Alert)])
def test_the_quick_structs_have_the_models_fields_and_defaults(quick: Any, full: Any) -> None:
    fields = {f.name: f for f in msgspec.structs.fields(quick)}
    assert set(fields) == set(full.model_fields)
    for name, info in full.model_fields.items():
        field = fields[name]
        if field.required:
            assert info.is_required(), name
        else:
            default = field.default if field.default_factory is msgspec.NODEFAULT else field.default_factory()
            assert default == info.get_default(call_default_factory=True), name


# ------------------------------------------------------------------------------------- generated bodies

_text = st.text(max_size=12)  # lone surrogates included: json.dumps writes them as \udxxx escapes
_labels = st.dictionaries(_text, _text, max_size=4)


def _rarely(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` nine times in ten: a body with one odd part in each alert would almost never be valid."""
    return st.sampled_from([usual] * 9 + [odd]).flatmap(lambda chosen: chosen)


@st.composite
def _alert(draw: st.DrawFn) -> dict[str, Any]:
    labels = draw(_labels) | {"alertname": draw(_rarely(_text, st.just("")))}
    if draw(_rarely(st.just(False), st.just(True))):
        del labels["alertname"]
    alert = webhook_payload({"alertname": "x"})["alerts"][0]
    alert["labels"] = labels
    alert["status"] = draw(_rarely(st.sampled_from(["firing", "resolved"]), st.just("pending")))
    alert["fingerprint"] = draw(_rarely(_text, st.sampled_from(["f" * 129, None])))
    return alert


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text | st.just(float("nan")),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _body(draw: st.DrawFn) -> str:
    payload = webhook_payload({"alertname": "x"})
    payload["alerts"] = draw(st.lists(_alert(), max_size=4))
    payload["status"] = draw(_rarely(st.sampled_from(["firing", "resolved"]), st.just("silenced")))
    payload["truncatedAlerts"] = draw(_rarely(st.integers(), st.sampled_from(["1", 1.0, True])))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # a newer Alertmanager's: the full way
        payload[draw(_text)] = draw(_json_values)
    text = json.dumps(payload, ensure_ascii=draw(st.booleans()), allow_nan=True)
    edit = draw(st.sampled_from(["none", "none", "nul", "deep", "long", "dup"]))
    if edit == "nul":
        text = text.replace('"x"', '"x\\u0000"', 1)
    elif edit == "deep":
        depth = draw(st.integers(150, 400))
        text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    elif edit == "long":
        size = draw(st.sampled_from([MAX_VALUE, MAX_VALUE + 1]))
        text = text.replace('"x"', json.dumps("\U0001f600" * size), 1)
    elif edit == "dup":
        text = text[:-1] + ', "status": "firing"}'
    return text


@settings(max_examples=400, deadline=None, derandomize=True)
@given(_body())
def test_what_the_quick_parse_takes_the_full_way_takes_with_the_same_values(text: str) -> None:
    _check(text)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_labels, st.sampled_from(["firing", "resolved"])), min_size=1, max_size=12))
def test_it_takes_what_alertmanager_sends(alerts: list[tuple[dict[str, str], str]]) -> None:
    """Go's encoder: no spaces, <, > and & escaped, valid UTF-8 (no lone surrogates)."""
    payload = webhook_payload({"alertname": "x"})
    payload["alerts"] = [
        webhook_payload(
            {
                k.encode("utf-8", "replace").decode(): v.encode("utf-8", "replace").decode()
                for k, v in labels.items()
            }
            | {"alertname": "Scrape"},
            status=status,
            fingerprint=f"{i:016x}",
        )["alerts"][0]
        for i, (labels, status) in enumerate(alerts)
    ]
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    if "\\u0000" in text:
        return
    assert _check(text) is not None


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("NaN in a field both ignore", '{"status":"firing","zz":NaN,"alerts":[]}'),
        ("Infinity", '{"status":"firing","zz":-Infinity,"alerts":[]}'),
        ("a lone surrogate", '{"status":"firing","zz":"\\ud800","alerts":[]}'),
        ("nested 201 deep", '{"status":"firing","alerts":[],"zz":' + "[" * 201 + "]" * 201 + "}"),
        ("a field Alertmanager does not send", '{"status":"firing","alerts":[],"zz":1}'),
        (
            "one in an alert",
            '{"status":"firing","alerts":[{"status":"firing","labels":{"alertname":"a"},"zz":1}]}',
        ),
        ("a NUL", '{"status":"firing","alerts":[{"status":"firing","labels":{"alertname":"a\\u0000"}}]}'),
        ("no alertname", '{"status":"firing","alerts":[{"status":"firing","labels":{"job":"a"}}]}'),
        (
            "an empty alertname",
            '{"status":"firing","alerts":[{"status":"firing","labels":{"alertname":""}}]}',
        ),
        ("a number as text", '{"status":"firing","truncatedAlerts":"1","alerts":[]}'),
        (
            "a label name too long",
            '{"status":"firing","alerts":[{"status":"firing","labels":{"alertname":"a",'
            f'"{"k" * (MAX_NAME + 1)}":"v"}}}}]}}',
        ),
        ("trailing data", '{"status":"firing","alerts":[]} x'),
    ],
)
def test_it_leaves_the_edges_to_the_full_way(name: str, text: str) -> None:
    assert quickparse.parse(text) is None, name


# ------------------------------------------------------------------------------------------ through the API


async def test_a_body_the_quick_parse_takes_is_never_validated_by_pydantic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unmatched: stored routed. Resolved or matched: routed from the quick parse's structs. Only a body
    it does not take (here a field a newer Alertmanager might send) goes the full way."""
    full: list[str] = []
    validate = WebhookPayload.model_validate_json

    def counted(text: str) -> WebhookPayload:
        full.append(text)
        return validate(text)

    monkeypatch.setattr(server_intake.WebhookPayload, "model_validate_json", counted)
    async with serve(tmp_path, {"log": LOG_RUNBOOK}) as d:  # (its receipt: test_intake_settle.py)
        unmatched, resolved, matched = (
            alert_payload("DiskFull"),
            alert_payload("DiskFull", "resolved"),
            alert_payload(job="node"),
        )
        newer = {**alert_payload(job="other"), "newField": 1}
        receipts = []
        for payload, parsed_by_pydantic in ((unmatched, 0), (resolved, 0), (matched, 0), (newer, 1)):
            status, body = await d.call("POST", "/api/v1/alertmanager", token="webhook", json=payload)
            assert status == 200 and len(full) == parsed_by_pydantic
            receipts.append(body["receipt"])
        result = await d.engine.routed(receipts[2])
        assert result["started"], result  # the matched alert started a run
        assert (await d.engine.routed(receipts[3]))["started"], "the full way routes as before"
        resolved_result = await d.engine.routed(receipts[1])
        assert resolved_result["alerts"] == 1 and not resolved_result["started"], resolved_result


def test_a_notification_left_to_routing_costs_no_alert_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review finding: the settle check hashed the labels of every fingerprint-less alert before the
    resolved one that sends the notification to routing; with 10,000 alerts that was ~37 ms, twice."""
    hashed: list[dict[str, str]] = []
    monkeypatch.setattr(quickparse, "labels_key", lambda labels: hashed.append(labels) or "k")
    alerts = [{"status": "firing", "labels": {"alertname": "a", "i": str(i)}} for i in range(50)]
    body = {"status": "firing", "alerts": [*alerts, {"status": "resolved", "labels": {"alertname": "a"}}]}
    payload = quickparse.parse(json.dumps(body))
    assert payload is not None
    router = routing.Router.__new__(routing.Router)
    router._index = lambda: {}  # type: ignore[method-assign]  # no runbook: nothing matches
    assert router._settled(payload) is None and hashed == []
    assert router._settled(msgspec.structs.replace(payload, alerts=payload.alerts[:50])) is not None
    assert len(hashed) == 50  # settled: each alert's key is in its receipt
