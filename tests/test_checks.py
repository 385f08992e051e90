"""Scheduled checks (design §3): a schedule trigger's read-only check runs at each fire without approval,
starts a run only when its ``when:`` is true, follows the schedules' restart rules, and records its
result for ``GET /api/v1/checks``, ``runbookd checks`` and the metrics.

The check's action is ``test.look`` (tests/support/check_actions.py): a read-only action whose answer,
failure or hang the test sets, counting its calls. The daemon is the real app in-process, over HTTP, on
SQLite and on PostgreSQL (``store_backend``; the restarts reopen the same database)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.check_actions import Probe
from support.inproc import TOKENS, Daemon, base_config, serve

from daemon.errors import RunbookError
from daemon.kits.clock import FrozenClock
from daemon.runbooks.loader import load_all

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on SQLite and on PostgreSQL

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z
NIGHTLY = """
name: nightly-look
triggers:
  - schedule: "0 3 * * *"
    check:
      action: test.look
      with: {what: "{{ params.what }}", limit: "{{ params.limit }}"}
      when: "{{ check.output.stale | length > 0 }}"
      timeout: 2s
target: nightly
params:
  what: volumes
  limit: 5
approval: {timeout: 48h}
steps:
  - id: report
    action: notify.log
    with: {message: "{{ check.findings }} {{ params.what }}: {{ check.output.stale | join(',') }}"}
"""


async def checks(d: Daemon) -> dict[str, dict[str, Any]]:
    status, body = await d.call("GET", "/api/v1/checks", token="vic")  # a viewer may read them
    assert status == 200, body
    return {c["runbook"]: c for c in body["checks"]}


async def runs(d: Daemon) -> list[dict[str, Any]]:
    """Each listed run in full (the list holds summaries: no plans)."""
    listed = (await d.call("GET", "/api/v1/runs"))[1]["runs"]
    return [(await d.call("GET", f"/api/v1/runs/{r['id']}"))[1] for r in listed]


async def metrics(d: Daemon) -> str:
    async with d.session.get(d.url + "/metrics") as resp:
        return await resp.text()


async def fire_once(d: Daemon, clock: FrozenClock, hours: float = 19.5) -> None:
    """Advance past the next 03:00 UTC and let the check finish."""
    clock.advance(hours * 3600)
    await d.engine.tick()
    await d.engine.wait_idle()


async def test_a_healthy_night_starts_no_run_and_records_ok(tmp_path: Path) -> None:
    probe = Probe()
    clock = FrozenClock(START)
    async with serve(tmp_path, {"nightly": NIGHTLY}, registry=probe.registry(), clock=clock) as d:
        assert (await checks(d))["nightly-look"]["outcome"] is None  # seen, not fired yet
        await fire_once(d, clock)
        assert await runs(d) == []
        c = (await checks(d))["nightly-look"]
        assert c["outcome"] == "ok" and c["findings"] == 0
        assert c["last_fire"] == "2027-01-16T03:00:00Z" and c["schedule"] == "0 3 * * *"
        assert c["message"] == "0 volumes"
        assert probe.calls == [{"what": "volumes", "limit": 5}]
        text = await metrics(d)
    assert 'runbookd_check_outcomes_total{outcome="ok",runbook="nightly-look"} 1.0' in text
    assert 'runbookd_check_outcomes_total{outcome="work",runbook="nightly-look"} 0.0' in text
    assert 'runbookd_check_findings{runbook="nightly-look"} 0.0' in text
    assert 'runbookd_check_last_fire_timestamp_seconds{runbook="nightly-look"} 1.8000684e+09' in text


async def test_work_starts_one_run_with_the_check_in_its_context(tmp_path: Path) -> None:
    probe = Probe()
    probe.items = ["pvc-a", "pvc-b"]
    clock = FrozenClock(START)
    async with serve(tmp_path, {"nightly": NIGHTLY}, registry=probe.registry(), clock=clock) as d:
        await fire_once(d, clock)
        (run,) = await runs(d)
        assert run["trigger"] == "schedule" and run["state"] == "awaiting_approval"
        assert run["steps"][0]["plan"]["message"] == "2 volumes: pvc-a,pvc-b"
        c = (await checks(d))["nightly-look"]
        assert c["outcome"] == "work" and c["findings"] == 2 and c["run_id"] == run["id"]
        await fire_once(d, clock, 24)  # the next night, the run still waits: no second run
        assert len(await runs(d)) == 1
        c = (await checks(d))["nightly-look"]
        assert c["outcome"] == "work" and f"run {run['id']} is still active" in c["message"]
        assert len(probe.calls) == 2


async def test_a_check_missed_while_down_runs_once_on_start(tmp_path: Path) -> None:
    probe = Probe()
    clock = FrozenClock(START)
    async with serve(tmp_path, {"nightly": NIGHTLY}, registry=probe.registry(), clock=clock):
        pass  # start: the schedule is seen and remembered
    clock.advance(3 * 86400)  # down for three nights
    async with serve(tmp_path, {"nightly": NIGHTLY}, registry=probe.registry(), clock=clock) as d:
        await d.engine.wait_idle()
        await d.engine.tick()
        await d.engine.wait_idle()
        assert len(probe.calls) == 1  # one catch-up, not three, not two
        c = (await checks(d))["nightly-look"]
        assert c["outcome"] == "ok" and c["last_fire"] == "2027-01-16T03:00:00Z"  # the first one missed
    async with serve(tmp_path, {"nightly": NIGHTLY}, registry=probe.registry(), clock=clock) as d:
        await d.engine.tick()
        await d.engine.wait_idle()
        text = await metrics(d)
    assert len(probe.calls) == 1  # a restart after it was recorded does not run it again
    # the gauges show the recorded result after a restart, not nothing
    assert 'runbookd_check_last_outcome{outcome="ok",runbook="nightly-look"} 1.0' in text
    assert 'runbookd_check_last_fire_timestamp_seconds{runbook="nightly-look"} 1.8000684e+09' in text


async def test_a_check_cut_off_by_a_stop_runs_once_on_the_next_start(
    tmp_path: Path, store_backend: str
) -> None:
    probe = Probe()
    probe.hang = True
    probe.items = ["pvc-a"]
    clock = FrozenClock(START)
    slow = {"nightly": NIGHTLY.replace("timeout: 2s", "timeout: 5m")}  # cut off by the stop, not its timeout
    async with serve(tmp_path, slow, registry=probe.registry(), clock=clock) as d:
        clock.advance(19.5 * 3600)
        await d.engine.tick()
        while not probe.calls:
            await asyncio.sleep(0.01)
        await d.engine.stop(grace=0.1)  # the daemon stops while the check runs
        assert (await checks(d))["nightly-look"]["pending"] is True
    assert stored_runs(tmp_path, store_backend) == 0
    probe.hang = False
    async with serve(tmp_path, slow, registry=probe.registry(), clock=clock) as d:
        await d.engine.wait_idle()
        await d.engine.tick()
        await d.engine.wait_idle()
        assert len(probe.calls) == 2  # cut off once, then run once
        assert len(await runs(d)) == 1
        c = (await checks(d))["nightly-look"]
        assert c["outcome"] == "work" and c["pending"] is False and c["last_fire"] == "2027-01-16T03:00:00Z"


def stored_runs(tmp_path: Path, store_backend: str) -> int:
    """Runs in the store, read directly while no daemon is serving it."""
    import sqlite3

    if store_backend != "sqlite":
        with psycopg.connect(store_backend, connect_timeout=10) as conn:
            row = conn.execute("SELECT COUNT(*) FROM runs").fetchone()
            assert row is not None
            return int(row[0])
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        return int(db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    finally:
        db.close()


async def test_a_manual_trigger_runs_the_check_first_and_starts_anyway(tmp_path: Path) -> None:
    probe = Probe()
    clock = FrozenClock(START)
    async with serve(tmp_path, {"nightly": NIGHTLY}, registry=probe.registry(), clock=clock) as d:
        status, run = await d.call(
            "POST", "/api/v1/runs", json={"runbook": "nightly-look", "params": {"what": "disks"}}
        )
        assert status == 201, run
        assert probe.calls == [{"what": "disks", "limit": 5}]  # with the trigger's params
        assert run["trigger"] == "manual"
        assert run["steps"][0]["plan"]["message"] == "0 disks: "  # when: was false; it started anyway
        c = (await checks(d))["nightly-look"]
        assert c["outcome"] == "ok" and c["run_id"] == run["id"]
        assert c["message"].startswith("manual trigger by admin: 0 disks")
        assert c["last_fire"] == "2027-01-15T08:00:00Z"


async def test_a_manual_trigger_whose_check_fails_starts_nothing(tmp_path: Path) -> None:
    probe = Probe()
    probe.fail = "the API said no"
    async with serve(tmp_path, {"nightly": NIGHTLY}, registry=probe.registry()) as d:
        status, body = await d.call("POST", "/api/v1/runs", json={"runbook": "nightly-look"})
        assert status == 409 and "the API said no" in body["error"], body
        assert await runs(d) == []
        assert (await checks(d))["nightly-look"]["outcome"] == "error"


async def test_a_manual_trigger_the_check_action_refuses_is_400_and_records_nothing(tmp_path: Path) -> None:
    probe = Probe()
    clock = FrozenClock(START)
    async with serve(tmp_path, {"nightly": NIGHTLY}, registry=probe.registry(), clock=clock) as d:
        await fire_once(d, clock)  # a scheduled result, which a caller's typo must not overwrite
        before = await checks(d)
        outcomes = [line for line in (await metrics(d)).splitlines() if line.startswith("runbookd_check_")]
        status, body = await d.call(
            "POST", "/api/v1/runs", json={"runbook": "nightly-look", "params": {"what": "x" * 65}}
        )
        assert status == 400 and "param what" in body["error"] and "check" in body["error"], body
        assert probe.calls == [{"what": "volumes", "limit": 5}]  # the schedule's only: the check never ran
        assert await runs(d) == []
        assert await checks(d) == before
        after = [line for line in (await metrics(d)).splitlines() if line.startswith("runbookd_check_")]
        assert after == outcomes


async def test_a_viewer_cannot_make_a_check_run(tmp_path: Path) -> None:
    probe = Probe()
    async with serve(tmp_path, {"nightly": NIGHTLY}, registry=probe.registry()) as d:
        status, _ = await d.call("POST", "/api/v1/runs", token="vic", json={"runbook": "nightly-look"})
        assert status == 403
    assert probe.calls == []


@pytest.mark.parametrize("how", ["error", "timeout"])
async def test_a_check_that_fails_is_recorded_as_error_and_visible(tmp_path: Path, how: str) -> None:
    probe = Probe()
    probe.items = ["pvc-a"]
    if how == "error":
        probe.fail = "backups.longhorn.io is forbidden"
    else:
        probe.hang = True  # the check's timeout is 2s
    clock = FrozenClock(START)
    async with serve(tmp_path, {"nightly": NIGHTLY}, registry=probe.registry(), clock=clock) as d:
        await fire_once(d, clock)
        assert await runs(d) == []  # no run on a check that could not look
        c = (await checks(d))["nightly-look"]
        assert c["outcome"] == "error" and c["findings"] == 0 and c["pending"] is False
        expected = "forbidden" if how == "error" else "did not finish within 2s"
        assert expected in c["message"]
        text = await metrics(d)
        assert 'runbookd_check_outcomes_total{outcome="error",runbook="nightly-look"} 1.0' in text
        assert 'runbookd_check_last_outcome{outcome="error",runbook="nightly-look"} 1.0' in text
        out = await cli(d, "checks")
        assert "nightly-look" in out and "error" in out and expected[:20] in out
        listed = json.loads(await cli(d, "checks", "--output", "json"))
        assert listed[0]["outcome"] == "error" and listed[0]["last_fire"] == "2027-01-16T03:00:00Z"


async def cli(d: Daemon, *args: str) -> str:
    exe = str(Path(sys.executable).parent / "runbookd")
    env = {**os.environ, "RUNBOOKD_SERVER": d.url, "RUNBOOKD_TOKEN": TOKENS["vic"]}
    proc = await asyncio.create_subprocess_exec(
        exe, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


def test_a_mutating_check_is_a_validation_error(tmp_path: Path) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "bad.yaml").write_text(NIGHTLY.replace("action: test.look", "action: test.change"))
    with pytest.raises(RunbookError) as err:
        load_all([folder], Probe().registry(), list(base_config(tmp_path)["approvers"]))
    assert "a check must be read-only" in str(err.value)


async def test_a_fire_during_a_running_check_is_queued_not_lost(tmp_path: Path) -> None:
    probe = Probe()
    probe.hang = True
    clock = FrozenClock(START)
    slow = {"nightly": NIGHTLY.replace("timeout: 2s", "timeout: 5m")}
    async with serve(tmp_path, slow, registry=probe.registry(), clock=clock) as d:
        clock.advance(19.5 * 3600)
        await d.engine.tick()
        while not probe.calls:
            await asyncio.sleep(0.01)
        clock.advance(24 * 3600)  # the next night's fire comes while the first check still runs
        await d.engine.tick()
        assert len(probe.calls) == 1  # not a second check of the same trigger at once
        probe.release.set()
        await d.engine.wait_idle()
        c = (await checks(d))["nightly-look"]
        assert c["last_fire"] == "2027-01-16T03:00:00Z" and c["pending"] is True  # recorded, next queued
        await d.engine.tick()
        await d.engine.wait_idle()
        c = (await checks(d))["nightly-look"]
        assert len(probe.calls) == 2 and c["last_fire"] == "2027-01-17T03:00:00Z" and c["pending"] is False
