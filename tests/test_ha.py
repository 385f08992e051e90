"""Two real ``runbookd serve`` replicas on one real PostgreSQL (design §5): one leader (a lease on the
database's clock, fenced by an epoch), every replica taking webhooks and approvals.

The held steps use ``tests/support/slow_actions.py`` (loaded as a plugin): each start appends
``<run> <step> <pid>`` to a file, so the tests see which process ran a step and how often.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.payloads import webhook_payload
from support.polling import wait_until
from support.postgres import PostgresServer
from support.runbookd import RunbookdProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
WAIT = 60.0  # upper bound of every poll; nothing here is timed
LEASE = {"lease": "6s", "renew": "1s"}  # short, so a takeover happens within the test; 5 s of freshness


def _runbook(name: str, alert: str, hold_action: str, marks: Path) -> dict[str, Any]:
    """check (read-only) -> hold (slow test action) -> report (read-only)."""
    return {
        "name": name,
        "triggers": [{"alert": alert}],
        "target": "{{ params.name }}",
        "params": {"name": "{{ alert.labels.instance }}"},
        "policy": {"cooldown": "0s", "max_runs_per_day": 50, "on_resolved": "ignore"},
        "approval": {"approvers": ["sre"], "min_approvers": 1, "timeout": "30m"},
        "steps": [
            {"id": "check", "action": "notify.log", "with": {"message": "check {{ params.name }}"}},
            {
                "id": "hold",
                "action": hold_action,
                "with": {
                    "started": f"{marks}/{{{{ params.name }}}}.started",
                    "release": f"{marks}/{{{{ params.name }}}}.release",
                    "max_wait": "3m",
                },
            },
            {"id": "report", "action": "notify.log", "with": {"message": "done {{ params.name }}"}},
        ],
    }


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    d = tmp_path / "marks"
    d.mkdir()
    return d


@pytest.fixture
def cluster(
    runbookd_factory: Callable[..., RunbookdProcess],
    tmp_path: Path,
    marks: Path,
    postgres_server: PostgresServer,
) -> Iterator[Callable[..., RunbookdProcess]]:
    """``cluster(auto_read_only=False)`` starts one more replica on the test's PostgreSQL database."""
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    for book in (
        _runbook("ha-hold", "HaHold", "test.hold", marks),
        _runbook("ha-hold-idempotent", "HaHoldIdempotent", "test.hold_idempotent", marks),
    ):
        (rb_dir / f"{book['name']}.yaml").write_text(yaml.safe_dump(book, sort_keys=False))
    url = postgres_server.fresh_database()
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    stopped: list[RunbookdProcess] = []

    def make(*, auto_read_only: bool = False) -> RunbookdProcess:
        config = {
            "plugins": ["tests.support.slow_actions"],
            "state": {"url": url},
            "ha": LEASE,
            "runbooks": {"paths": [str(rb_dir)]},
            "dry_run": False,
            "approval": {"auto_approve_read_only": auto_read_only},
            "auth": {
                "webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"},
                "tokens": [{"name": "admin", "role": "admin", "secret": {"env": "RUNBOOKD_ADMIN_TOKEN"}}],
            },
            "approvers": {"sre": ["admin"]},
            "log": {"format": "json", "level": "info"},
        }
        rb = runbookd_factory(config, env={"PYTHONPATH": pythonpath})
        stopped.append(rb)
        return rb

    yield make
    for rb in stopped:  # a SIGSTOPped replica cannot stop on SIGTERM
        if rb.running:
            os.killpg(rb.pid or 0, signal.SIGCONT)


# ------------------------------------------------------------------------------------------ helpers


def leader(rb: RunbookdProcess) -> bool:
    return rb.metric("runbookd_leader") == 1.0


def start_run(rb: RunbookdProcess, alertname: str, instance: str) -> str:
    payload = webhook_payload(
        {"alertname": alertname, "instance": instance, "severity": "warning"},
        fingerprint=uuid.uuid4().hex[:16],
    )
    r = rb.post_webhook(payload, wait_routed=False)
    assert r.status == 200, r
    receipt = rb.wait_routed(r.json()["receipt"], timeout=WAIT)
    assert len(receipt["result"]["started"]) == 1, receipt
    return str(receipt["result"]["started"][0])


def get_run(rb: RunbookdProcess, run_id: str) -> dict[str, Any]:
    r = rb.get(f"/api/v1/runs/{run_id}")
    assert r.status == 200, r
    return dict(r.json())


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["id"] == step_id)


def wait_run(rb: RunbookdProcess, run_id: str, state: str, awaiting: str | None = None) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        run = get_run(rb, run_id)
        if run["state"] != state:
            return None
        if awaiting is not None and (
            run["current_step"] != awaiting or step(run, awaiting)["state"] != "awaiting_approval"
        ):
            return None
        return run

    return dict(wait_until(f"run {run_id} {state} at {awaiting}", probe, WAIT))


def approve(rb: RunbookdProcess, run_id: str, step_id: str, plan_hash: str | None = None) -> Any:
    plan_hash = plan_hash or step(get_run(rb, run_id), step_id)["plan_hash"]
    return rb.post(f"/api/v1/runs/{run_id}/steps/{step_id}/approve", json={"plan_hash": plan_hash})


def started_steps(run: dict[str, Any], step_id: str) -> int:
    return sum(1 for e in run["timeline"] if e["event"] == "step_started" and e.get("step") == step_id)


def executed_here(rb: RunbookdProcess, run_id: str, step_id: str, since: int = 0) -> bool:
    """Whether this process's log says it executed the step (after byte offset ``since``)."""
    text = rb.log_text()[since:]
    return any(
        '"step.executing"' in line and run_id in line and f'"step": "{step_id}"' in line
        for line in text.splitlines()
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ------------------------------------------------------------------------------------------ tests


def test_follower_takes_webhooks_and_approvals_the_leader_acts_and_a_kill_9_fails_over(
    cluster: Callable[..., RunbookdProcess], marks: Path
) -> None:
    a = cluster()
    b = cluster()
    assert leader(a) and not leader(b)
    assert a.get("/readyz").status == 200 and b.get("/readyz").status == 200

    run_id = start_run(b, "HaHoldIdempotent", "n1")  # posted to the follower, routed by the leader
    wait_run(b, run_id, "awaiting_approval", "check")
    r = approve(b, run_id, "check")  # approved on the follower ...
    assert r.status == 200, r
    wait_run(a, run_id, "awaiting_approval", "hold")
    assert executed_here(a, run_id, "check") and not executed_here(
        b, run_id, "check"
    )  # ... done by the leader

    hold_hash = step(get_run(a, run_id), "hold")["plan_hash"]
    assert a.kill9() == -signal.SIGKILL  # the leader dies while `hold` awaits approval

    first = approve(b, run_id, "hold", hold_hash)  # the standby may not lead yet: it records the approval
    assert first.status == 200, first
    again = approve(b, run_id, "hold", hold_hash)
    assert again.status == 409, again  # counted once
    wait_until("the standby leads", lambda: leader(b), WAIT)
    wait_until(f"{marks}/n1.started", lambda: lines(marks / "n1.started"), WAIT)
    (marks / "n1.release").touch()
    run = wait_run(b, run_id, "awaiting_approval", "report")
    assert lines(marks / "n1.started") == [f"{run_id} hold {b.pid}"]
    assert [x["by"] for x in step(run, "hold")["approvals"]] == ["admin"]
    assert started_steps(run, "hold") == 1 and started_steps(run, "check") == 1
    assert '"leadership.acquired"' in b.log_text()

    c = cluster()  # a new replica joins as follower; an approval given to it counts too
    assert not leader(c)
    assert approve(c, run_id, "report").status == 200
    done = wait_run(c, run_id, "succeeded")
    assert started_steps(done, "report") == 1
    assert executed_here(b, run_id, "report") and not executed_here(c, run_id, "report")


def test_kill_9_during_a_non_idempotent_step_needs_attention_never_runs_twice(
    cluster: Callable[..., RunbookdProcess], marks: Path
) -> None:
    a = cluster()
    b = cluster()
    run_id = start_run(a, "HaHold", "n2")
    wait_run(a, run_id, "awaiting_approval", "check")
    assert approve(a, run_id, "check").status == 200
    wait_run(a, run_id, "awaiting_approval", "hold")
    assert approve(a, run_id, "hold").status == 200
    wait_until("hold started on the leader", lambda: lines(marks / "n2.started"), WAIT)
    assert a.kill9() == -signal.SIGKILL

    run = wait_run(b, run_id, "needs_attention")
    assert step(run, "hold")["state"] == "awaiting_approval"
    assert "outcome is unknown" in step(run, "hold")["error"]
    assert leader(b)
    (marks / "n2.release").touch()
    assert lines(marks / "n2.started") == [f"{run_id} hold {a.pid}"]  # never started again by itself
    assert started_steps(get_run(b, run_id), "hold") == 1


def test_sigstop_of_the_leader_longer_than_the_lease_then_sigcont_it_starts_no_step(
    cluster: Callable[..., RunbookdProcess], marks: Path
) -> None:
    a = cluster(auto_read_only=True)  # without fencing, `report` would start right after `hold` ends
    b = cluster(auto_read_only=True)
    run_id = start_run(a, "HaHoldIdempotent", "n3")
    wait_run(a, run_id, "awaiting_approval", "hold")  # `check` ran without a click
    assert approve(a, run_id, "hold").status == 200
    wait_until("hold started on the leader", lambda: lines(marks / "n3.started"), WAIT)
    assert a.pid is not None

    os.killpg(a.pid, signal.SIGSTOP)
    try:
        wait_until("the standby leads", lambda: leader(b), WAIT)
        # the standby treats `hold` as interrupted; idempotent, so it runs it again itself
        wait_until("hold re-run by the standby", lambda: len(lines(marks / "n3.started")) == 2, WAIT)
        # release while the old leader is still paused: its own `hold` is done the moment it resumes,
        # before it may have renewed (or failed to renew) its lease
        (marks / "n3.release").touch()
        done = wait_run(b, run_id, "succeeded")
        mark = len(a.log_text())
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    wait_until(
        "the old leader says it lost leadership", lambda: '"leadership.lost"' in a.log_text()[mark:], WAIT
    )
    wait_until(
        "the old leader's result refused", lambda: '"step.result_not_recorded"' in a.log_text()[mark:], WAIT
    )
    assert not leader(a) and leader(b)
    assert lines(marks / "n3.started") == [f"{run_id} hold {a.pid}", f"{run_id} hold {b.pid}"]
    assert not executed_here(a, run_id, "report", since=mark)  # the old leader started no step
    assert executed_here(b, run_id, "report")
    after = get_run(b, run_id)
    assert after["timeline"] == done["timeline"]  # nothing the old leader did after resuming was recorded
    assert started_steps(after, "report") == 1
    assert step(after, "hold")["output"]["pid"] == b.pid
