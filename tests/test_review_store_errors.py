"""Review findings: a store error raised by a statement (not by BEGIN or COMMIT) must count as the store
being unavailable, so the background loops retry instead of dying and the API answers 503, not 500.

The error is produced the way a full disk or a corrupt page would produce it, by SQLite itself: a trigger
added from a second connection makes the daemon's next INSERT fail, and dropping it heals the store."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from support.gates import Gates, wait_until
from support.inproc import Daemon, alert_payload, serve

ONE_STEP = """
name: one-step
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
policy: {cooldown: 0s}
approval: {approvers: [sre], timeout: 30m}
steps:
  - id: look
    action: notify.log
    with: {message: "looking at {{ params.job }}"}
"""


async def _sql(db: Path, statement: str) -> None:
    """From a thread: the daemon under test runs on this event loop, and may hold a transaction open
    while it waits for the loop (a blocking call here would wait for the lock it holds)."""

    def run() -> None:
        with sqlite3.connect(db, timeout=5) as conn:
            conn.execute(statement)

    await asyncio.to_thread(run)


async def _receipt(d: Daemon, seq: int) -> dict[str, object]:
    status, body = await d.call("GET", f"/api/v1/receipts/{seq}")
    assert status == 200, body
    return dict(body)


async def _routed(d: Daemon, seq: int, timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if (await _receipt(d, seq))["routed_at"] is not None:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_routing_survives_a_failing_statement(tmp_path: Path) -> None:
    async with serve(tmp_path, {"one-step": ONE_STEP}) as d:
        db = tmp_path / "state.db"
        await _sql(
            db,
            "CREATE TRIGGER fail_routing BEFORE INSERT ON alert_links "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        )
        status, body = await d.call(
            "POST", "/api/v1/alertmanager", token="webhook", json=alert_payload(job="a")
        )
        assert status == 200, body  # stored: the inbox itself is fine
        first = int(body["receipt"])
        await asyncio.sleep(0.3)  # the router tries, and fails
        assert (await _receipt(d, first))["routed_at"] is None
        await _sql(db, "DROP TRIGGER fail_routing")

        status, body = await d.call(
            "POST", "/api/v1/alertmanager", token="webhook", json=alert_payload(job="b", fingerprint="fp-b")
        )
        assert status == 200, body
        second = int(body["receipt"])
        # the router keeps going once the store heals: both notifications are routed, in order
        assert await _routed(d, first), "the routing loop died on the store error"
        assert await _routed(d, second)
        status, runs = await d.call("GET", "/api/v1/runs")
        assert sorted(r["target"] for r in runs["runs"]) == ["a", "b"]


async def test_a_failing_statement_answers_503_not_500(tmp_path: Path) -> None:
    async with serve(tmp_path, {"one-step": ONE_STEP}) as d:
        await _sql(
            tmp_path / "state.db",
            "CREATE TRIGGER fail_runs BEFORE INSERT ON runs "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        )
        status, body = await d.call(
            "POST", "/api/v1/runs", token="alice", json={"runbook": "one-step", "params": {"job": "x"}}
        )
        assert status == 503, body
        assert "disk is full" in body["error"]


async def test_the_tick_loop_survives_a_failing_statement(tmp_path: Path) -> None:
    """Expiry, reminders and schedules run in the tick loop: one failed tick must not end it."""
    async with serve(tmp_path, {"one-step": ONE_STEP}) as d:
        status, run = await d.call(
            "POST", "/api/v1/runs", token="alice", json={"runbook": "one-step", "params": {"job": "x"}}
        )
        assert status == 201, run
        engine = d.engine
        # the daemon's own tick loop, restarted to tick fast for this test
        assert engine._ticker is not None
        engine._ticker.cancel()
        engine._tick_interval = 0.02
        engine._ticker = asyncio.create_task(engine._tick_loop(), name="engine.tick")
        db = tmp_path / "state.db"
        await _sql(
            db,
            "CREATE TRIGGER fail_steps BEFORE INSERT ON steps "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        )
        d.clock.advance(31 * 60)  # past the deadline: the next tick expires the step, and fails to
        loop = asyncio.get_running_loop()
        ticker = engine._ticker
        assert ticker is not None
        await asyncio.sleep(0.2)
        assert not ticker.done(), "the tick loop died on the store error"
        await _sql(db, "DROP TRIGGER fail_steps")
        end = loop.time() + 5
        while loop.time() < end and (await d.run(run["id"]))["state"] != "expired":
            await asyncio.sleep(0.05)
        assert (await d.run(run["id"]))["state"] == "expired"


GATED = """
name: gated
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
approval: {approvers: [sre]}
steps:
  - id: change
    action: test.gate
    with: {name: "{{ params.job }}"}
"""


async def test_a_step_result_is_recorded_once_the_store_heals(tmp_path: Path) -> None:
    """A result that cannot be committed at once is kept and committed as soon as the store takes it.
    Dropped, its step stayed `running` until a restart, holding the blast-radius budget (no other
    mutating step could start) and then re-ran or asked a person about an outcome runbookd had known."""
    gates = Gates()
    async with serve(tmp_path, {"gated": GATED}, registry=gates.registry()) as d:
        status, run = await d.call(
            "POST", "/api/v1/runs", token="alice", json={"runbook": "gated", "params": {"job": "db"}}
        )
        assert status == 201, run
        assert (await d.approve(run["id"], "change", who="bob"))[0] == 200
        await wait_until(lambda: gates.started == ["db"])
        db = tmp_path / "state.db"
        await _sql(
            db,
            "CREATE TRIGGER fail_steps BEFORE INSERT ON steps "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        )
        gates.open("db")
        await wait_until(lambda: gates.finished == ["db"])
        await asyncio.sleep(0.3)  # the result cannot be recorded yet
        assert (await d.run(run["id"]))["steps"][0]["state"] == "running"
        await _sql(db, "DROP TRIGGER fail_steps")
        await wait_until(_state_is(d, run["id"], "succeeded"), timeout=10)


def _state_is(d: Daemon, run_id: str, state: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await d.run(run_id))["state"] == state

    return check
