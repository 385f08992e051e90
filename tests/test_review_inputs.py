"""Review finding: API inputs that end up whole in the timeline, the log and Slack are bounded like alert
labels are (a 1 MiB rejection reason or param value was stored and logged as it came)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.gates import Gates
from support.inproc import serve

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on SQLite and on PostgreSQL

RUNBOOK = """
name: one
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}", note: ""}
approval: {approvers: [sre]}
steps:
  - id: look
    action: notify.log
    with: {message: "{{ params.job }}"}
"""


async def test_a_rejection_reason_is_bounded(tmp_path: Path) -> None:
    async with serve(tmp_path, {"one": RUNBOOK}, registry=Gates().registry()) as d:
        status, run = await d.call(
            "POST", "/api/v1/runs", token="alice", json={"runbook": "one", "params": {"job": "x"}}
        )
        assert status == 201, run
        path = f"/api/v1/runs/{run['id']}/reject"
        status, body = await d.call("POST", path, token="bob", json={"reason": "x" * 200_000})
        assert status == 400 and "at most 1000 characters" in body["error"], body
        assert (await d.run(run["id"]))["state"] == "awaiting_approval"
        status, body = await d.call("POST", path, token="bob", json={"reason": "y" * 1000})
        assert status == 200 and body["state"] == "rejected"


async def test_a_manual_param_value_is_bounded(tmp_path: Path) -> None:
    async with serve(tmp_path, {"one": RUNBOOK}, registry=Gates().registry()) as d:
        status, body = await d.call(
            "POST",
            "/api/v1/runs",
            token="alice",
            json={"runbook": "one", "params": {"job": "x", "note": "n" * 5000}},
        )
        assert status == 400 and "note" in body["error"] and "4096" in body["error"], body
        status, body = await d.call("GET", "/api/v1/runs")
        assert body["runs"] == []


async def test_a_receipt_number_out_of_range_is_a_clear_error(tmp_path: Path) -> None:
    async with serve(tmp_path, {"one": RUNBOOK}) as d:
        status, body = await d.call("GET", "/api/v1/receipts/99999999999999999999999")
        assert status == 400 and body == {"error": "a receipt is a number"}, body
        status, body = await d.call("GET", "/api/v1/receipts/%D9%A1")  # ARABIC-INDIC DIGIT ONE
        assert status == 400, body


async def test_a_deeply_nested_body_is_a_clear_error(tmp_path: Path) -> None:
    async with serve(tmp_path, {"one": RUNBOOK}) as d:
        status, body = await d.call("POST", "/api/v1/runs", token="vic", data=b"[" * 200_000)
        assert status == 400 and body == {"error": "body is not valid JSON"}, body
