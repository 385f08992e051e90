"""Routing renders a runbook's params and target once per distinct input (``daemon/engine/plankeys.py``):
what the templates read of the alert is found from their syntax tree, and a cached plan is always the
plan a fresh render gives."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.engines import make_engine

from daemon.engine import planner
from daemon.engine.engine import Engine
from daemon.engine.events import Alert, WebhookPayload
from daemon.runbooks.templating import alert_reads
from daemon.store.sqlite import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ("{{ alert.labels.job }}", {("labels", "job")}),
        ("{{ alert['labels']['job'] }}", {("labels", "job")}),
        ("{{ alert.labels.job | dns_label }}-{{ alert.status }}", {("labels", "job"), ("status",)}),
        ("{{ (alert.labels | default({})).cluster | default('') }}", {("labels", "cluster")}),
        ("{{ (alert.labels | default({})).bucket | default('thanos', true) }}", {("labels", "bucket")}),
        ("{{ params.job }}/{{ params.instance }}", set()),
        ("{{ run.runbook }}", set()),
        ("{{ alert.startsAt }} {{ alert.fingerprint }}", {("startsAt",), ("fingerprint",)}),
        # reads the labels as a whole: every label is part of the key
        ("{% for k, v in alert.labels | dictsort %}{{ k }}={{ v }},{% endfor %}", {("labels",)}),
        ("{{ alert.labels[params.name] }}", {("labels",)}),
        ("{{ (alert.labels | default({'x': 1})).x }}", {("labels",)}),  # the default could be seen
        # may see more than fields and labels: no key (plans keyed on the whole alert)
        ("{{ alert }}", None),
        ("{{ alert.labels.items() }}", None),  # the dict method, not a label called items
        ("{% set alert = {'labels': {}} %}{{ alert.labels.x }}", None),
        ("{% for alert in [1] %}{{ alert }}{% endfor %}", None),
        ("{{ alert.nosuchfield }}", None),
        # renders differently each time: never one plan for several alerts
        ("{{ ['a', 'b'] | random }}", None),
        ("{{ lipsum(1) }}", None),
        ("{{ cycler(1, 2) }}", None),
    ],
)
def test_what_a_template_reads_of_the_alert(source: str, reads: set[tuple[str, ...]] | None) -> None:
    assert alert_reads(source) == (None if reads is None else frozenset(reads))


def _runbook(name: str, params: dict[str, str], target: str) -> str:
    lines = [f"name: {name}", "triggers:", "  - alert: Synthetic", f"target: {target!r}", "params:"]
    lines += [f"  {k}: {v!r}" for k, v in params.items()]
    lines += ["steps:", "  - id: note", "    action: notify.log", "    with: {message: hi}"]
    return "\n".join(lines) + "\n"


SYNTHETIC = {
    "by-label": _runbook("by-label", {"job": "{{ alert.labels.job }}"}, "{{ params.job }}"),
    "filtered": _runbook(
        "filtered",
        {"x": "{{ alert.labels.job | dns_label }}-{{ alert.labels.zone | default('none') }}"},
        "{{ params.x }}/{{ alert.status }}",
    ),
    "map-default": _runbook(
        "map-default", {"c": "{{ (alert.labels | default({})).cluster | default('c0') }}"}, "{{ params.c }}"
    ),
    "whole-labels": _runbook(
        "whole-labels", {"all": "{% for k, v in alert.labels | dictsort %}{{ k }}={{ v }},{% endfor %}"}, "t"
    ),
    "annotation": _runbook(
        "annotation", {"s": "{{ alert.annotations.summary | default('') }}"}, "{{ alert.labels.job }}"
    ),
    "may-fail": _runbook("may-fail", {"n": "{{ alert.labels.node }}"}, "{{ params.n }}"),
    # an error names the first label missing of those the text mentions, even inside a string
    "error-wording": _runbook("error-wording", {"n": "{{ 'alert.labels.zone' ~ alert.labels.node }}"}, "t"),
    "whole-alert": _runbook("whole-alert", {"a": "{{ alert.labels.items() | list | length }}"}, "t"),
    # fails at render time with Jinja's own runtime error, for every alert
    "runtime-error": _runbook("runtime-error", {"j": "{% set alert.x = 1 %}{{ alert.labels.job }}"}, "t"),
}
SHIPPED = {
    path.stem: path.read_text()
    for path in sorted((ROOT / "runbooks").glob("*.yaml"))
    if "alert:" in path.read_text()
}


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    store = await Store.open(tmp_path / "state.db")
    yield make_engine(tmp_path, store, {**SYNTHETIC, **SHIPPED})
    await store.close()


def _alert(rnd: random.Random) -> Alert:
    """A random alert over few values, so that many alerts share the values a runbook reads."""
    labels = {"alertname": rnd.choice(["Synthetic", "NodeDegraded", "S3ConnectivityLoss"])}
    for name, values in {
        "job": ["a", "b", "B_1"],
        "instance": ["i1", "i2", "i3"],
        "zone": ["z1", None],
        "cluster": ["c1", "", None],
        "node": ["n1", None],
        "namespace": ["monitoring", None],
        "pod": ["p-0", "p-1"],
        "bucket": ["thanos", None],
        "persistentvolumeclaim": ["data-0", None],
        "condition": ["DiskPressure", None],
        "service": ["s", None],
    }.items():
        value = rnd.choice(values)
        if value is not None:
            labels[name] = value
    annotations = {"summary": rnd.choice(["down", "up"])} if rnd.random() < 0.5 else {}
    return Alert.model_validate(
        {
            "status": rnd.choice(["firing", "resolved"]),
            "labels": labels,
            "annotations": annotations,
            "startsAt": rnd.choice(["2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"]),
            "fingerprint": rnd.choice(["", "f1", "f2"]),
        }
    )


async def test_a_cached_plan_is_the_plan_a_fresh_render_gives(engine: Engine) -> None:
    router = engine._routing
    router._index()  # builds the index (and each runbook's dependencies)
    runbooks = [lr.runbook for lr in engine.runbooks.values()]
    keyed = {rb.name for rb in runbooks if router._plan_deps.get(rb.name) is not None}
    assert keyed >= {
        "by-label",
        "filtered",
        "map-default",
        "whole-labels",
        "annotation",
        "may-fail",
        "error-wording",
    }
    assert keyed >= set(SHIPPED)  # every shipped alert runbook is keyed by the labels it reads
    assert "whole-alert" not in keyed
    rnd = random.Random(11)
    hits = 0
    for _ in range(1500):
        alert = _alert(rnd)
        for rb in runbooks:
            cached = router._plan(rb, alert)
            kept, router._plans = router._plans, {}
            fresh = router._plan(rb, alert)  # rendered now, from an empty cache
            router._plans = kept
            assert cached == fresh, (rb.name, alert.labels)
            hits += cached is not fresh
    assert hits > 1500  # and the cache did answer most of them


async def test_new_instances_of_a_target_render_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: list[dict[str, Any]] = []
    real = planner.render_params

    def counting(rb: Any, ctx: dict[str, Any], given: dict[str, Any] | None = None) -> dict[str, Any]:
        rendered.append(ctx["alert"]["labels"])
        return real(rb, ctx, given)

    monkeypatch.setattr(planner, "render_params", counting)
    router = engine._routing
    router._index()
    by_label = engine.runbooks["by-label"].runbook
    for i in range(50):
        labels = {"alertname": "Synthetic", "job": "a" if i % 2 else "b", "instance": f"10.0.0.{i}"}
        plan = router._plan(by_label, Alert.model_validate({"status": "firing", "labels": labels}))
        assert plan == ({"job": labels["job"]}, labels["job"])
    assert len(rendered) == 2  # once per job


async def test_a_template_jinja_fails_at_render_sets_its_runbook_aside_and_routing_goes_on(
    engine: Engine,
) -> None:
    payload = {
        "status": "firing",
        "alerts": [{"status": "firing", "labels": {"alertname": "Synthetic", "job": "a", "node": "n1"}}],
    }
    receipt = await engine.submit(WebhookPayload.model_validate(payload), json.dumps(payload))
    await engine.route_pending()
    result = (await engine.receipt(receipt))["result"]
    assert "error" not in result  # the notification was routed, not set aside whole
    reasons = {s["runbook"]: s["reason"] for s in result["suppressed"]}
    assert reasons["runtime-error"].startswith("render_error: ")
    assert "cannot assign attribute" in reasons["runtime-error"]
    assert len(result["started"]) >= 5  # the other runbooks it matches started their runs
