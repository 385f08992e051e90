"""The whole path with real components (design §8, issue 2 "Done means"):

real Prometheus scraping a job with one down target -> an alert posted to a real Alertmanager's API v2 ->
Alertmanager's webhook (bearer token) -> ``runbookd serve`` (dry_run off) -> every step approved through
the HTTP API and the CLI -> ``prometheus.query`` and ``prometheus.targets`` answered by the real
Prometheus -> the silence of that one target created in the real Alertmanager -> the target comes back ->
the run ``succeeded`` -> the silence expired by its undo.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.am import AlertmanagerServer, webhook_config
from support.polling import wait_until
from support.ports import closed_port
from support.prom import MetricsExporter, PrometheusServer
from support.runbookd import RunbookdProcess, daemon_config

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = REPO_ROOT / "runbooks" / "prometheus-scrape-failure.yaml"
JOB = "e2e-scrape"
WAIT = 60.0  # upper bound of every poll; nothing here is timed


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["id"] == step_id)


def _config(prom: PrometheusServer, am: AlertmanagerServer) -> dict[str, Any]:
    return daemon_config(RUNBOOK, prometheus=prom.url, alertmanager=am.url, dry_run=False)


def test_alert_through_real_alertmanager_runs_to_succeeded_with_real_query_and_silence(
    prometheus_factory: Callable[..., PrometheusServer],
    alertmanager_factory: Callable[..., AlertmanagerServer],
    runbookd_factory: Callable[..., RunbookdProcess],
    test_exporter: MetricsExporter,
    exporter_factory: Callable[..., MetricsExporter],
) -> None:
    # A job with one live target (the test exporter) and one down (a closed loopback port).
    test_exporter.set("e2e_alive", 1)
    down = f"127.0.0.1:{closed_port()}"
    prom = prometheus_factory(
        scrape_configs=[{"job_name": JOB, "static_configs": [{"targets": [test_exporter.target, down]}]}]
    )
    am = alertmanager_factory()
    rb = runbookd_factory(_config(prom, am))
    am.set_config(
        webhook_config(
            rb.url + "/api/v1/alertmanager",
            bearer_token=rb.webhook_token,
            group_by=("alertname", "job"),
            group_wait="0s",
            group_interval="1s",
        )
    )
    prom.wait_for(
        f'up{{job="{JOB}"}}',
        lambda r: (
            {s["metric"]["instance"]: s["value"][1] for s in r} == {test_exporter.target: "1", down: "0"}
        ),
        timeout=WAIT,
    )

    labels = {"alertname": "PrometheusScrapeFailure", "job": JOB, "instance": down, "severity": "warning"}
    am.fire(labels, {"summary": f"Prometheus cannot scrape {JOB} target {down}"})

    def awaiting() -> list[dict[str, Any]]:
        r = rb.get("/api/v1/runs", params={"state": "awaiting_approval"})
        assert r.status == 200, r
        return [x for x in r.json()["runs"] if x["runbook"] == "prometheus-scrape-failure"]

    (listed,) = wait_until("Alertmanager to deliver the alert and runbookd to start a run", awaiting)
    run_id = listed["id"]
    run = rb.get(f"/api/v1/runs/{run_id}").json()  # the list holds summaries: the alert is here
    assert run["trigger"] == "alert" and run["target"] == f"{JOB}/{down}" and run["dry_run"] is False
    assert run["alert"]["labels"] == labels
    assert run["current_step"] == "target-down"

    # Approve every step as it comes up: the first with the CLI, the others over the HTTP API.
    approved: list[str] = []
    while True:
        run = rb.get(f"/api/v1/runs/{run_id}").json()
        if run["state"] not in ("awaiting_approval", "running", "undoing"):
            break
        cur = run["current_step"]
        if run["state"] in ("running", "undoing") or step(run, cur)["state"] != "awaiting_approval":
            time.sleep(0.1)
            continue
        assert cur not in approved, f"step {cur} asks for approval twice: {run}"
        if cur == "wait-for-recovery":  # the target comes back while its alerts are silenced
            exporter_factory(port=int(down.rsplit(":", 1)[1]))
            prom.wait_for(f'up{{job="{JOB}", instance="{down}"}} == 1', bool, timeout=WAIT)
        if not approved:
            res = rb.cli("approve", run_id)
            assert res.returncode == 0, res.stderr
        else:
            plan_hash = step(run, cur)["plan_hash"]
            r = rb.post(f"/api/v1/runs/{run_id}/steps/{cur}/approve", json={"plan_hash": plan_hash})
            assert r.status == 200, r
        approved.append(cur)
        assert len(approved) <= 7

    assert run["state"] == "succeeded", run
    assert approved == [
        "target-down",
        "scrape-error",
        "down-since",
        "others-down",
        "report",
        "silence-target",
        "wait-for-recovery",
    ]
    assert all(s["state"] == "succeeded" for s in run["steps"]), run["steps"]

    # prometheus.query answered by the real Prometheus: exactly the down instance
    target_down = step(run, "target-down")["output"]
    assert target_down["count"] == 1
    assert [s["labels"]["instance"] for s in target_down["result"]] == [down]
    assert target_down["result"][0]["labels"]["job"] == JOB
    # never up since Prometheus started: down for the whole window
    assert step(run, "down-since")["output"]["count"] == 0
    (target,) = step(run, "scrape-error")["output"]["targets"]
    assert target["health"] == "down" and "connection refused" in target["last_error"]

    # the silence was real, in Alertmanager, for this one target's follow-on alerts, and named the run
    silence_id = step(run, "silence-target")["output"]["silence_id"]
    silences = {s["id"]: s for s in am.silences()}
    assert silence_id in silences, silences
    silence = silences[silence_id]
    assert silence["createdBy"] == "runbookd"
    assert run_id in silence["comment"]
    assert {"name": "job", "value": JOB, "isRegex": False, "isEqual": True} in silence["matchers"]
    assert {"name": "instance", "value": down, "isRegex": False, "isEqual": True} in silence["matchers"]
    assert {"name": "alertname", "value": "PrometheusScrapeFailure", "isRegex": False, "isEqual": False} in (
        silence["matchers"]
    )
    # ... and is expired by the step's undo once the run ended
    assert silence["status"]["state"] == "expired"
    assert step(run, "silence-target")["undo"]["state"] == "succeeded"
    assert step(run, "silence-target")["undo"]["params"] == {"silence_id": silence_id}
    # the scrape-failure alert itself stayed visible throughout
    (alert,) = am.alerts(filter=['alertname="PrometheusScrapeFailure"'])
    assert alert["status"]["state"] == "active"

    report = step(run, "report")["output"]["message"]
    assert down in report and "down for the whole 6h window" in report and "connection refused" in report

    assert rb.metric("runbookd_alerts_received_total", status="firing") >= 1
    assert rb.metric("runbookd_webhook_responses_total", code="200") >= 1
    assert rb.metric("runbookd_webhook_responses_total", code="401") == 0
    assert rb.metric("runbookd_runs_total", runbook="prometheus-scrape-failure", outcome="succeeded") == 1
