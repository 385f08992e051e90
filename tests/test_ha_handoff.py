"""Two replicas in one process on one PostgreSQL database: what a person does on the follower is recorded
there, and the leader does what follows (plans, starts the step, notifies) at its next tick. The follower
itself never plans, starts a step or notifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.gates import wait_until
from support.inproc import alert_payload, base_config, serve

from daemon.engine.notifier import RunNotice

RUNBOOK = {
    "two-notes": """
name: two-notes
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
approval: {approvers: [sre], timeout: 30m}
steps:
  - id: first
    action: notify.log
    with: {message: "first {{ params.job }}"}
  - id: second
    action: notify.log
    with: {message: "second {{ params.job }}"}
"""
}


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.notices: list[RunNotice] = []

    async def notify(self, notice: RunNotice) -> None:
        self.notices.append(notice)

    def kinds(self, run_id: str) -> list[str]:
        return [n.kind for n in self.notices if n.run["id"] == run_id]


def _step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["id"] == step_id)


async def test_follower_records_the_leader_acts_and_notifies(tmp_path: Path, postgres_url: str) -> None:
    config = base_config(tmp_path, state={"url": postgres_url})
    on_leader, on_follower = Recorder(), Recorder()
    async with (
        serve(tmp_path, RUNBOOK, config=config, notifiers=[on_leader]) as leader,
        serve(tmp_path, RUNBOOK, config=config, notifiers=[on_follower]) as follower,
    ):
        assert leader.engine.leadership.leading and not follower.engine.leadership.leading

        # a manual start on the follower: stored, planned by the leader
        status, run = await follower.call(
            "POST", "/api/v1/runs", json={"runbook": "two-notes", "params": {"job": "a"}}
        )
        assert status == 201, run
        run_id = run["id"]
        assert _step(run, "first")["state"] == "pending"  # the follower does not plan
        await leader.engine.tick()
        run = await leader.run(run_id)
        assert _step(run, "first")["state"] == "awaiting_approval"
        await leader.engine.wait_idle()
        assert on_leader.kinds(run_id) == ["approval_requested"]

        # approved on the follower: carried out by the leader
        status, body = await follower.approve(run_id, "first", plan_hash=_step(run, "first")["plan_hash"])
        assert status == 200, body
        assert _step(body, "first")["state"] == "approved"
        await leader.engine.tick()
        await leader.engine.wait_idle()
        run = await leader.run(run_id)
        assert _step(run, "first")["state"] == "succeeded"
        assert _step(run, "second")["state"] == "awaiting_approval"

        # rejected on the follower: the run ends there, the leader tells people
        status, body = await follower.call("POST", f"/api/v1/runs/{run_id}/reject", json={"reason": "enough"})
        assert status == 200 and body["state"] == "rejected", body
        await follower.engine.wait_idle()
        assert on_follower.notices == []  # nothing at all from the follower
        assert "run_ended" not in on_leader.kinds(run_id)
        await leader.engine.tick()
        await leader.engine.wait_idle()
        assert on_leader.kinds(run_id)[-1] == "run_ended"
        ended = on_leader.notices[-1]
        assert ended.run["state"] == "rejected"
        # handed over once: a second tick sends nothing more
        count = len(on_leader.notices)
        await leader.engine.tick()
        await leader.engine.wait_idle()
        assert len(on_leader.notices) == count


async def test_an_approval_on_the_follower_wakes_the_leader_at_once(
    tmp_path: Path, postgres_url: str
) -> None:
    """The engine tick here is an hour: only the follower's NOTIFY can make the leader act in time."""
    config = base_config(tmp_path, state={"url": postgres_url})
    async with (
        serve(tmp_path, RUNBOOK, config=config) as leader,
        serve(tmp_path, RUNBOOK, config=config) as follower,
    ):
        status, body = await follower.call(
            "POST", "/api/v1/alertmanager", token="webhook", json=alert_payload(job="b")
        )
        assert status == 200, body
        receipt = body["receipt"]

        async def routed() -> dict[str, Any] | None:  # by the leader, woken by the follower's NOTIFY
            status, got = await follower.call("GET", f"/api/v1/receipts/{receipt}")
            return got if status == 200 and got["routed_at"] is not None else None

        await wait_until(routed, timeout=20)
        (run_id,) = (await routed() or {})["result"]["started"]

        async def awaiting() -> dict[str, Any] | None:
            run = await follower.run(run_id)
            return run if _step(run, "first")["state"] == "awaiting_approval" else None

        await wait_until(awaiting, timeout=20)
        run = await follower.run(run_id)
        status, body = await follower.approve(run_id, "first", plan_hash=_step(run, "first")["plan_hash"])
        assert status == 200, body

        async def carried_out() -> bool:
            return _step(await follower.run(run_id), "second")["state"] == "awaiting_approval"

        await wait_until(carried_out, timeout=20)
        assert _step(await leader.run(run_id), "first")["state"] == "succeeded"
