"""Audit finding: PostgreSQL cannot store a NUL character (U+0000) in a text field. A manual param, an alert
label, a run id in the URL or a Slack form field holding one answered 503 on that store ("retry" — the
same request fails again), and one stored alert with such a label stalled routing for every notification
behind it. They are refused with 400 at the door, on both stores alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.gates import Gates
from support.inproc import serve
from support.payloads import webhook_payload
from support.slack_api import ALICE, RUNBOOKS, FakeSlack, command_body, serve_slack, signed_headers

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on SQLite and on PostgreSQL

RUNBOOK = """
name: one
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
approval: {approvers: [sre]}
steps:
  - id: look
    action: notify.log
    with: {message: "{{ params.job }}"}
"""


async def test_a_nul_in_a_manual_param_or_a_url_is_refused_with_400(tmp_path: Path) -> None:
    async with serve(tmp_path, {"one": RUNBOOK}, registry=Gates().registry()) as d:
        status, body = await d.call(
            "POST", "/api/v1/runs", token="alice", json={"runbook": "one", "params": {"job": "x\u0000y"}}
        )
        assert status == 400 and body == {"error": "body is not valid JSON"}, body  # the log says why
        status, body = await d.call("GET", "/api/v1/runs/%00")
        assert status == 400 and "NUL" in body["error"], body
        status, body = await d.call("GET", "/api/v1/runs?state=%00")
        assert status == 400, body
        status, body = await d.call("GET", "/api/v1/runs")
        assert status == 200 and body["runs"] == [], body


async def test_an_alert_label_with_a_nul_is_refused_and_routing_goes_on(tmp_path: Path) -> None:
    async with serve(tmp_path, {"one": RUNBOOK}, registry=Gates().registry()) as d:
        bad = webhook_payload({"alertname": "PrometheusScrapeFailure", "job": "j\u0000"})
        status, body = await d.webhook(bad)
        assert status == 400 and "NUL" in body["error"], body
        status, body = await d.webhook(webhook_payload({"alertname": "PrometheusScrapeFailure", "job": "ok"}))
        assert status == 200 and len(body["started"]) == 1, body
        assert (await d.run(body["started"][0]))["target"] == "ok"
        # a label value that only spells a backslash-u is data like any other
        spelled = webhook_payload(
            {"alertname": "PrometheusScrapeFailure", "job": "\\u0000"}, fingerprint="fp-2"
        )
        status, body = await d.webhook(spelled)
        assert status == 200 and len(body["started"]) == 1, body


async def test_a_signed_slack_command_with_a_nul_is_refused_with_400(tmp_path: Path) -> None:
    slack = await FakeSlack().start()
    try:
        async with serve_slack(tmp_path, RUNBOOKS, slack=slack) as sd:
            body = command_body("pause \u0000", ALICE, slack.response_url())
            status, text = await sd.post(
                "/slack/commands", body, headers=signed_headers(body, int(sd.d.clock.now()))
            )
            assert status == 400 and "NUL" in text, text
            assert (await sd.d.call("GET", "/api/v1/status"))[1]["paused"] is False
    finally:
        await slack.close()
