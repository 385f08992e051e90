"""Dry-run, pause, the blast-radius budget, loop breakers, auto-approval and schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.gates import Gates, wait_until
from support.inproc import Daemon, alert_payload, base_config, serve

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on SQLite and on PostgreSQL

SILENCE = """
name: silence
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
steps:
  - id: silence
    action: alertmanager.silence
    with:
      matchers: [{name: job, value: "{{ params.job }}"}]
      duration: 1h
      comment: investigating
"""

GATED = """
name: gated
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
policy: {cooldown: 10m, max_runs_per_day: 2}
steps:
  - id: look
    action: notify.log
    with: {message: "{{ params.job }}"}
  - id: change
    action: test.gate
    with: {name: "{{ params.job }}"}
"""


async def start(d: Daemon, job: str) -> str:
    status, body = await d.webhook(alert_payload(job=job, fingerprint=f"fp-{job}"))
    assert status == 200, body
    return str(body["started"][0])


async def current(d: Daemon, run_id: str) -> tuple[str, str | None]:
    run = await d.run(run_id)
    return run["state"], run["current_step"]


async def test_dry_run_records_the_exact_request_and_changes_nothing(
    tmp_path: Path, alertmanager_factory: Any
) -> None:
    am = alertmanager_factory()
    cfg = base_config(tmp_path, alertmanager={"url": am.url}, dry_run=True)
    async with serve(tmp_path, {"silence": SILENCE}, config=cfg) as d:
        run_id = await start(d, "node")
        assert (await d.approve(run_id, "silence"))[0] == 200
        await d.engine.wait_idle()
        run = await d.run(run_id)
        assert run["state"] == "succeeded" and run["dry_run"] is True
        out = run["steps"][0]["output"]
        assert out["dry_run"] is True
        [request] = out["requests"]
        assert request["method"] == "POST" and request["url"] == f"{am.url}/api/v2/silences"
        assert request["body"]["matchers"] == [
            {"name": "job", "value": "node", "isRegex": False, "isEqual": True}
        ]
        assert f"runbookd run {run_id} step silence" in request["body"]["comment"]
    assert am.silences() == []


async def test_not_dry_run_creates_the_silence(tmp_path: Path, alertmanager_factory: Any) -> None:
    am = alertmanager_factory()
    cfg = base_config(tmp_path, alertmanager={"url": am.url}, dry_run=False)
    async with serve(tmp_path, {"silence": SILENCE}, config=cfg) as d:
        run_id = await start(d, "node")
        await d.approve(run_id, "silence")
        await d.engine.wait_idle()
        run = await d.run(run_id)
        assert run["state"] == "succeeded", run
        [silence] = am.silences()
        assert silence["id"] == run["steps"][0]["output"]["silence_id"]
        assert silence["matchers"][0]["value"] == "node" and run_id in silence["comment"]


async def test_pause_holds_approved_steps_until_resume(tmp_path: Path) -> None:
    gates = Gates()
    gates.open("node")
    async with serve(tmp_path, {"gated": GATED}, registry=gates.registry()) as d:
        run_id = await start(d, "node")
        status, body = await d.call("POST", "/api/v1/pause", token="vic")
        assert status == 403
        status, body = await d.call("POST", "/api/v1/pause", token="alice")
        assert status == 200 and body["paused"] is True
        assert (await d.approve(run_id, "look"))[0] == 200  # approvals are still recorded
        await d.engine.wait_idle()
        await d.engine.tick()
        run = await d.run(run_id)
        assert run["steps"][0]["state"] == "approved" and run["state"] == "awaiting_approval"
        assert any(e["event"] == "step_waiting" and "paused" in e["reason"] for e in run["timeline"])
        _, metrics = await d.call("GET", "/metrics", token=None)
        assert "runbookd_paused 1.0" in metrics
        status, body = await d.call("POST", "/api/v1/resume", token="alice")
        assert body["paused"] is False
        await wait_until(lambda: _state_is(d, run_id, "look", "succeeded"))


async def test_pause_and_resume_refuse_a_body_they_cannot_read(tmp_path: Path) -> None:
    async with serve(tmp_path, {"gated": GATED}, registry=Gates().registry()) as d:
        for path in ("/api/v1/pause", "/api/v1/resume"):
            if path.endswith("resume"):
                assert (await d.call("POST", "/api/v1/pause", json={}))[0] == 200  # {} is no fields
            paused = path.endswith("resume")
            for body in (b"{{{ not json", b"[]", b'{"paused": false}', b"\xff\xfe\x00"):
                status, answer = await d.call("POST", path, data=body)
                assert status == 400, (path, body, answer)
                assert (await d.call("GET", "/api/v1/status"))[1]["paused"] is paused, (path, body)


async def _state_is(d: Daemon, run_id: str, step: str, state: str) -> bool:
    run = await d.run(run_id)
    return any(s["id"] == step and s["state"] == state for s in run["steps"])


async def test_blast_radius_budget_runs_one_mutating_step_at_a_time(tmp_path: Path) -> None:
    gates = Gates()
    async with serve(tmp_path, {"gated": GATED}, registry=gates.registry()) as d:
        a, b = await start(d, "a"), await start(d, "b")
        for run_id in (a, b):
            await d.approve(run_id, "look")
        await wait_until(lambda: _state_is(d, a, "change", "awaiting_approval"))
        await wait_until(lambda: _state_is(d, b, "change", "awaiting_approval"))
        await d.approve(a, "change")
        await wait_until(lambda: gates.started == ["a"])
        await d.approve(b, "change")
        await d.engine.tick()
        run_b = await d.run(b)
        assert run_b["steps"][1]["state"] == "approved"  # approved, held back by the budget
        assert any("blast-radius budget" in e.get("reason", "") for e in run_b["timeline"])
        assert gates.started == ["a"]
        gates.open("a")
        await wait_until(lambda: gates.started == ["a", "b"])
        gates.open("b")
        await d.engine.wait_idle()
        assert (await current(d, a))[0] == (await current(d, b))[0] == "succeeded"


async def test_cooldown_and_daily_limit(tmp_path: Path) -> None:
    gates = Gates()
    gates.open("node")
    async with serve(tmp_path, {"gated": GATED}, registry=gates.registry()) as d:

        async def run_to_end() -> str:
            run_id = await start(d, "node")
            await d.approve(run_id, "look")
            await wait_until(lambda: _state_is(d, run_id, "change", "awaiting_approval"))
            await d.approve(run_id, "change")
            await d.engine.wait_idle()
            assert (await current(d, run_id))[0] == "succeeded"
            return run_id

        await run_to_end()
        status, body = await d.webhook(alert_payload(job="node", fingerprint="fp-node"))
        assert status == 200 and body["started"] == []  # cooldown (10m)
        d.clock.advance(11 * 60)
        await run_to_end()
        d.clock.advance(11 * 60)
        status, body = await d.webhook(alert_payload(job="node", fingerprint="fp-node"))
        assert body["started"] == []  # max_runs_per_day: 2
        _, metrics = await d.call("GET", "/metrics", token=None)
        assert 'runbookd_runs_suppressed_total{reason="cooldown",runbook="gated"} 1.0' in metrics
        assert 'runbookd_runs_suppressed_total{reason="daily_limit",runbook="gated"} 1.0' in metrics
        d.clock.advance(86400)
        status, body = await d.webhook(alert_payload(job="node", fingerprint="fp-node"))
        assert len(body["started"]) == 1


async def test_auto_approve_read_only_never_covers_mutating_steps(tmp_path: Path) -> None:
    gates = Gates()
    cfg = base_config(tmp_path, approval={"auto_approve_read_only": True})
    async with serve(tmp_path, {"gated": GATED}, config=cfg, registry=gates.registry()) as d:
        run_id = await start(d, "node")
        await wait_until(lambda: _state_is(d, run_id, "change", "awaiting_approval"))
        run = await d.run(run_id)
        assert run["steps"][0]["state"] == "succeeded" and run["steps"][0]["approvals"] == []
        assert "step_auto_approved" in [e["event"] for e in run["timeline"]]
        gates.open("node")


async def test_failed_step_fails_the_run(tmp_path: Path) -> None:
    failing = GATED.replace("action: test.gate", "action: test.fail")
    async with serve(tmp_path, {"gated": failing}, registry=Gates().registry()) as d:
        run_id = await start(d, "x")
        await d.approve(run_id, "look")
        await wait_until(lambda: _state_is(d, run_id, "change", "awaiting_approval"))
        await d.approve(run_id, "change")
        await d.engine.wait_idle()
        run = await d.run(run_id)
        assert run["state"] == "failed" and run["outcome"] == "step change failed: x failed on purpose"


SCHEDULED = """
name: nightly
triggers: [{schedule: "0 3 * * *"}]
target: nightly
steps:
  - id: report
    action: notify.log
    with: {message: "fired for {{ schedule.fire_time }}"}
"""


async def test_schedule_fires_once_per_time_and_catches_up_once(tmp_path: Path) -> None:
    from support.inproc import FrozenClock

    clock = FrozenClock(start=1_800_000_000.0)  # 2027-01-15T08:00:00Z
    async with serve(tmp_path, {"nightly": SCHEDULED}, clock=clock) as d:
        await d.engine.tick()
        assert (await d.call("GET", "/api/v1/runs"))[1]["runs"] == []
        clock.advance(19 * 3600 + 60)  # 03:01 next day
        await d.engine.tick()
        await d.engine.tick()
        runs = (await d.call("GET", "/api/v1/runs"))[1]["runs"]
        assert len(runs) == 1 and runs[0]["trigger"] == "schedule"
        full = (await d.call("GET", f"/api/v1/runs/{runs[0]['id']}"))[1]
        assert full["steps"][0]["plan"]["message"] == "fired for 2027-01-16T03:00:00Z"
        await d.call("POST", f"/api/v1/runs/{runs[0]['id']}/reject", json={"reason": "test"})
        clock.advance(3 * 86400)  # down for three nights: one catch-up run, not three
        await d.engine.tick()
        await d.engine.tick()
        assert len((await d.call("GET", "/api/v1/runs"))[1]["runs"]) == 2
