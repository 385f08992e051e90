"""Review finding: a manual trigger's params keep the type of the runbook's default.

The CLI sends every ``--param KEY=VALUE`` as a string, so ``--param cleanup=false`` arrived as the string
"false", which is *true* in a ``when:`` (a non-empty string): the person asked for no cleanup and was
asked to approve one. A boolean or numeric default makes the given value a boolean or a number, and a
value that is not one is refused with 400 before a run starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.gates import Gates
from support.inproc import serve

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on SQLite and on PostgreSQL

RUNBOOK = """
name: typed
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}", cleanup: false, keep: 3, ratio: 0.5}
approval: {approvers: [sre]}
steps:
  - id: cleanup
    action: test.gate
    when: "{{ params.cleanup }}"
    with: {name: "{{ params.job }}"}
  - id: report
    action: notify.log
    with: {message: "keep {{ params.keep + 1 }}, ratio {{ params.ratio * 2 }}"}
"""


async def test_a_string_false_is_false(tmp_path: Path) -> None:
    async with serve(tmp_path, {"typed": RUNBOOK}, registry=Gates().registry()) as d:
        status, run = await d.call(
            "POST",
            "/api/v1/runs",
            token="alice",
            json={
                "runbook": "typed",
                "params": {"job": "db", "cleanup": "false", "keep": "7", "ratio": "2.5"},
            },
        )
        assert status == 201, run
        assert run["params"] == {"job": "db", "cleanup": False, "keep": 7, "ratio": 2.5}
        assert [s["state"] for s in run["steps"]] == ["skipped", "awaiting_approval"]
        assert run["steps"][1]["plan"]["message"] == "keep 8, ratio 5.0"


async def test_a_string_true_is_true(tmp_path: Path) -> None:
    async with serve(tmp_path, {"typed": RUNBOOK}, registry=Gates().registry()) as d:
        for i, given in enumerate(("true", "Yes", "1", True)):
            status, run = await d.call(
                "POST",
                "/api/v1/runs",
                token="alice",
                json={"runbook": "typed", "params": {"job": f"j-{i}", "cleanup": given}},
            )
            assert status == 201, run
            assert run["params"]["cleanup"] is True
            assert run["steps"][0]["state"] == "awaiting_approval"


async def test_a_value_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    async with serve(tmp_path, {"typed": RUNBOOK}, registry=Gates().registry()) as d:
        for params in ({"cleanup": "maybe"}, {"keep": "many"}, {"ratio": "nan-ish"}, {"keep": True}):
            status, body = await d.call(
                "POST",
                "/api/v1/runs",
                token="alice",
                json={"runbook": "typed", "params": {"job": "x", **params}},
            )
            assert status == 400, (params, body)
            assert next(iter(params)) in body["error"]
        status, body = await d.call("GET", "/api/v1/runs")
        assert body["runs"] == []
