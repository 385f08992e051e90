"""POST /api/v1/alertmanager: status codes, idempotence, durability and hostile input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from support.inproc import alert_payload, base_config, serve

SCRAPE = """
name: scrape
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
steps:
  - id: targets-down
    action: prometheus.query
    with: {query: 'up{job="{{ params.job | promql }}"} == 0', expect: non_empty}
"""

# on SQLite and on PostgreSQL (the 503 test locks the SQLite file)
BOTH_STORES = pytest.mark.usefixtures("store_backend")


@BOTH_STORES
async def test_requires_the_webhook_token(tmp_path: Path) -> None:
    async with serve(tmp_path, {"scrape": SCRAPE}) as d:
        for token in (None, "wrong", "admin"):
            status, body = await d.call(
                "POST", "/api/v1/alertmanager", token=token, json=alert_payload(job="a")
            )
            assert status == 401, (token, body)
            assert "token" in body["error"]
        status, body = await d.call("GET", "/api/v1/runs")
        assert body["runs"] == []


@BOTH_STORES
async def test_invalid_payloads_get_400_and_change_nothing(tmp_path: Path) -> None:
    no_name = alert_payload(job="a")
    del no_name["alerts"][0]["labels"]["alertname"]
    bad_status = alert_payload(job="a")
    bad_status["alerts"][0]["status"] = "burning"
    not_list = {**alert_payload(job="a"), "alerts": {"a": 1}}
    async with serve(tmp_path, {"scrape": SCRAPE}) as d:
        status, body = await d.call("POST", "/api/v1/alertmanager", token="webhook", data=b"{not json")
        assert (status, body["error"]) == (400, "body is not valid JSON")
        for payload, where in (
            (no_name, "alertname"),
            (bad_status, "status"),
            (not_list, "alerts"),
            ([1, 2], ""),
        ):
            status, body = await d.webhook(payload)
            assert status == 400, body
            assert body["error"] == "not an Alertmanager webhook payload"
            assert any(where in line for line in body["details"]), body
        _, body = await d.call("GET", "/api/v1/runs")
        assert body["runs"] == []
        _, metrics = await d.call("GET", "/metrics", token=None)
        assert 'runbookd_webhook_responses_total{code="400"} 5.0' in metrics


@BOTH_STORES
async def test_oversized_body_gets_413(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, server={"listen": "127.0.0.1:0", "max_body_bytes": 4096})
    payload = alert_payload(job="a")
    payload["alerts"][0]["annotations"]["description"] = "x" * 5000
    async with serve(tmp_path, {"scrape": SCRAPE}, config=cfg) as d:
        status, body = await d.webhook(payload)
        assert status == 413
        assert "larger than 4096" in body["error"]


@BOTH_STORES
async def test_same_payload_twice_gives_one_run(tmp_path: Path) -> None:
    async with serve(tmp_path, {"scrape": SCRAPE}) as d:
        first = await d.webhook(alert_payload(job="node"))
        second = await d.webhook(alert_payload(job="node"))
        assert first[0] == second[0] == 200
        assert len(first[1]["started"]) == 1
        assert second[1]["started"] == [] and second[1]["attached"] == first[1]["started"]
        # a second alert for the same target (another instance of the job) attaches too
        third = await d.webhook(alert_payload(job="node", fingerprint="fp-2", instance="b:9100"))
        assert third[1]["attached"] == first[1]["started"]
        _, body = await d.call("GET", "/api/v1/runs")
        assert [r["id"] for r in body["runs"]] == first[1]["started"]
        run = await d.run(first[1]["started"][0])
        assert [e["event"] for e in run["timeline"]].count("alert_attached") == 1


async def test_store_failure_answers_503_then_a_retry_is_stored(tmp_path: Path) -> None:
    async with serve(tmp_path, {"scrape": SCRAPE}) as d:
        blocker = sqlite3.connect(tmp_path / "state.db", timeout=0.1, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            status, body = await d.webhook(alert_payload(job="node"))
            assert status == 503, body
            assert "retry" in body["error"]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        _, runs = await d.call("GET", "/api/v1/runs")
        assert runs["runs"] == []  # nothing half-stored
        status, body = await d.webhook(alert_payload(job="node"))  # Alertmanager's retry
        assert status == 200 and len(body["started"]) == 1
        _, metrics = await d.call("GET", "/metrics", token=None)
        assert 'runbookd_webhook_responses_total{code="503"} 1.0' in metrics


@BOTH_STORES
async def test_hostile_label_values_stay_data(tmp_path: Path) -> None:
    hostile = 'x"} or vector(1) or up{job="{{ 7*7 }}'
    async with serve(tmp_path, {"scrape": SCRAPE}) as d:
        status, body = await d.webhook(alert_payload(job=hostile))
        assert status == 200
        run = await d.run(body["started"][0])
        assert run["target"] == hostile  # not evaluated as a template
        query = run["steps"][0]["plan"]["query"]
        assert query == 'up{job="x\\"} or vector(1) or up{job=\\"{{ 7*7 }}"} == 0'
        status, body = await d.webhook(alert_payload(job="y" * 5000))
        assert status == 400  # label values over 4096 characters are refused


@BOTH_STORES
async def test_alert_matching_no_runbook_is_stored_without_a_run(tmp_path: Path) -> None:
    async with serve(tmp_path, {"scrape": SCRAPE}) as d:
        status, body = await d.webhook(alert_payload(alertname="SomethingElse", job="a"))
        assert status == 200 and body["started"] == []
        _, metrics = await d.call("GET", "/metrics", token=None)
        assert 'runbookd_alerts_received_total{status="firing"} 1.0' in metrics
        assert json.dumps(body)  # the answer is plain JSON
