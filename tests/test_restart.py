"""Restart recovery of a real ``runbookd serve`` process (design §5): real ``kill -9`` and real SIGTERM.

Every test runs the daemon as a subprocess on a state file that survives the kill, talks to it only over
HTTP and the CLI, and holds a step open with the test actions of ``tests/support/slow_actions.py``
(loaded as a config plugin): the step appends a line to a "started" file when it starts, so the tests know
it runs and how often it ran, and waits until the test creates its "release" file.

Every test runs on SQLite and on PostgreSQL (``store_backend``): on PostgreSQL the daemon is a lone replica
on a fresh database (state.url, a short HA lease), so after a ``kill -9`` its next start first waits for
the dead process's lease to expire; ``restart`` waits until it leads and has recovered.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.payloads import webhook_payload
from support.polling import wait_until
from support.runbookd import RunbookdProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
WAIT = 30.0  # upper bound of every poll; nothing here is timed
LEASE = {"lease": "4s", "renew": "1s"}
"""PostgreSQL: a restart after kill -9 waits out the dead leader's lease (at most 4 s, not the default 15 s);
3 s of freshness left to the leader between renewals on a busy CI machine."""


# ------------------------------------------------------------------------------------------ runbooks, config


def _hold_runbook(name: str, alert: str, action: str, marks: Path) -> dict[str, Any]:
    """check (read-only) -> hold (the slow test action) -> report (read-only), target = the instance."""
    return {
        "name": name,
        "description": f"Holds a step open until the test releases it ({action}).",
        "triggers": [{"alert": alert}],
        "target": "{{ params.name }}",
        "params": {"name": "{{ alert.labels.instance }}"},
        "policy": {"cooldown": "0s", "max_runs_per_day": 50, "on_resolved": "ignore"},
        "approval": {"approvers": ["sre"], "min_approvers": 1, "timeout": "30m"},
        "steps": [
            {"id": "check", "action": "notify.log", "with": {"message": "about to hold {{ params.name }}"}},
            {
                "id": "hold",
                "action": action,
                "with": {
                    "started": f"{marks}/{{{{ params.name }}}}.started",
                    "release": f"{marks}/{{{{ params.name }}}}.release",
                    "max_wait": "2m",
                },
            },
            {
                "id": "report",
                "action": "notify.log",
                "with": {"message": "held {{ params.name }}, attempt {{ steps['hold'].output.attempt }}"},
            },
        ],
    }


def _one_step_runbook(name: str, alert: str, cooldown: str, max_runs_per_day: int) -> dict[str, Any]:
    return {
        "name": name,
        "triggers": [{"alert": alert}],
        "target": "{{ params.name }}",
        "params": {"name": "{{ alert.labels.instance }}"},
        "policy": {"cooldown": cooldown, "max_runs_per_day": max_runs_per_day, "on_resolved": "ignore"},
        "approval": {"approvers": ["sre"], "timeout": "30m"},
        "steps": [{"id": "say", "action": "notify.log", "with": {"message": "hello {{ params.name }}"}}],
    }


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    d = tmp_path / "marks"
    d.mkdir()
    return d


@pytest.fixture
def daemon(
    runbookd_factory: Callable[..., RunbookdProcess], tmp_path: Path, marks: Path, store_backend: str
) -> Callable[..., RunbookdProcess]:
    """``daemon()`` starts runbookd with the test runbooks and the slow_actions plugin, dry_run off, on
    the SQLite file or on the test's PostgreSQL database (``store_backend``)."""
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    books = [
        _hold_runbook("hold-test", "HoldTest", "test.hold", marks),
        _hold_runbook("hold-idempotent-test", "HoldIdempotentTest", "test.hold_idempotent", marks),
        _one_step_runbook("cooldown-test", "CooldownTest", cooldown="1h", max_runs_per_day=50),
        _one_step_runbook("daily-test", "DailyTest", cooldown="0s", max_runs_per_day=2),
    ]
    for book in books:
        (rb_dir / f"{book['name']}.yaml").write_text(yaml.safe_dump(book, sort_keys=False))
    if store_backend == "sqlite":
        state: dict[str, Any] = {"path": str(tmp_path / "unused.db")}  # --state (the factory's) overrides it
    else:
        state = {"url": store_backend}  # state.url wins over --state
    config = {
        "plugins": ["tests.support.slow_actions"],
        "state": state,
        **({} if store_backend == "sqlite" else {"ha": LEASE}),
        "runbooks": {"paths": [str(rb_dir)]},
        "dry_run": False,
        "auth": {
            "webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"},
            "tokens": [{"name": "admin", "role": "admin", "secret": {"env": "RUNBOOKD_ADMIN_TOKEN"}}],
        },
        "approvers": {"sre": ["admin"]},
        "log": {"format": "json", "level": "info"},
    }
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)

    def make() -> RunbookdProcess:
        return runbookd_factory(config, env={"PYTHONPATH": pythonpath})

    return make


# ------------------------------------------------------------------------------------------ helpers


def alert_payload(alertname: str, instance: str, *, fingerprint: str | None = None) -> dict[str, Any]:
    """One firing alert; a new alert each call unless ``fingerprint`` is given."""
    return webhook_payload(
        {"alertname": alertname, "instance": instance, "severity": "warning"},
        fingerprint=fingerprint or uuid.uuid4().hex[:16],
        annotations={"summary": f"{alertname} on {instance}"},
        starts_at="2024-05-01T03:00:00Z" if fingerprint else _now_rfc3339(),
        generator_url="",
    )


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def post_alert(rb: RunbookdProcess, payload: dict[str, Any]) -> dict[str, Any]:
    """POST a notification and return what routing it did (the receipt's result), once routed."""
    r = rb.post_webhook(payload, wait_routed=False)
    assert r.status == 200, r
    return {**r.json(), **rb.wait_routed(r.json()["receipt"])["result"]}


def start_run(rb: RunbookdProcess, alertname: str, instance: str) -> str:
    summary = post_alert(rb, alert_payload(alertname, instance))
    assert len(summary["started"]) == 1, summary
    return str(summary["started"][0])


def get_run(rb: RunbookdProcess, run_id: str) -> dict[str, Any]:
    r = rb.get(f"/api/v1/runs/{run_id}")
    assert r.status == 200, r
    return dict(r.json())


def runs_of(rb: RunbookdProcess, runbook: str) -> list[dict[str, Any]]:
    r = rb.get("/api/v1/runs")
    assert r.status == 200, r
    return [run for run in r.json()["runs"] if run["runbook"] == runbook]


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["id"] == step_id)


def wait_run(
    rb: RunbookdProcess, run_id: str, state: str, current: str | None = None, timeout: float = WAIT
) -> dict[str, Any]:
    """Poll until the run is in ``state`` (and, if given, waits on step ``current`` for approval)."""

    def probe() -> dict[str, Any] | None:
        run = get_run(rb, run_id)
        if run["state"] != state:
            return None
        if current is not None and (
            run["current_step"] != current or step(run, current)["state"] != "awaiting_approval"
        ):
            return None
        return run

    return dict(wait_until(f"run {run_id} {state} at {current}", probe, timeout))


def restart(rb: RunbookdProcess) -> None:
    """Start the stopped (or killed) daemon again on the same port and store; return once it leads and has
    recovered (``routing_live``): on PostgreSQL only after the killed process's lease expired."""
    rb.start()

    def live() -> bool:
        r = rb.get("/api/v1/status")
        return r.status == 200 and bool(r.json()["routing_live"])

    wait_until("the restarted daemon to lead and recover", live, WAIT)


def approve(rb: RunbookdProcess, run_id: str, step_id: str) -> dict[str, Any]:
    """Approve over the HTTP API, bound to the plan hash currently shown."""
    plan_hash = step(get_run(rb, run_id), step_id)["plan_hash"]
    r = rb.post(f"/api/v1/runs/{run_id}/steps/{step_id}/approve", json={"plan_hash": plan_hash})
    assert r.status == 200, r
    return dict(r.json())


def cli_json(rb: RunbookdProcess, *args: str) -> Any:
    res = rb.cli(*args, "--output", "json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def events(run: dict[str, Any]) -> list[str]:
    return [e["event"] for e in run["timeline"]]


def walk_to_hold_running(rb: RunbookdProcess, run_id: str, started: Path) -> str:
    """Approve ``check`` and ``hold``; return hold's approved plan hash once its action has started."""
    wait_run(rb, run_id, "awaiting_approval", "check")
    approve(rb, run_id, "check")
    run = wait_run(rb, run_id, "awaiting_approval", "hold")
    old_hash = str(step(run, "hold")["plan_hash"])
    approve(rb, run_id, "hold")
    wait_until(f"{started} written by the running step", lambda: lines(started))
    run = get_run(rb, run_id)
    assert run["state"] == "running" and step(run, "hold")["state"] == "running", run
    return old_hash


# ------------------------------------------------------------------------------------------ (a)


def test_pending_approval_survives_kill9_with_its_deadline_and_plan(
    daemon: Callable[..., RunbookdProcess], marks: Path
) -> None:
    rb = daemon()
    run_id = start_run(rb, "HoldTest", "pending")
    wait_run(rb, run_id, "awaiting_approval", "check")
    approve(rb, run_id, "check")
    before = wait_run(rb, run_id, "awaiting_approval", "hold")
    hold_before = step(before, "hold")
    assert hold_before["deadline"] and hold_before["plan_hash"]

    assert rb.kill9() == -signal.SIGKILL
    restart(rb)  # same port, same store

    after = get_run(rb, run_id)
    assert after["state"] == "awaiting_approval"
    assert after["current_step"] == "hold"
    hold_after = step(after, "hold")
    assert hold_after["state"] == "awaiting_approval"
    for key in ("deadline", "plan_hash", "requested_at", "plan"):
        assert hold_after[key] == hold_before[key], key
    assert step(after, "check")["state"] == "succeeded"
    assert [a["by"] for a in step(after, "check")["approvals"]] == ["admin"]
    assert events(after) == events(before)  # the restart itself changed nothing in the timeline
    listed = cli_json(rb, "runs", "--state", "awaiting_approval")
    assert [r["id"] for r in listed] == [run_id]

    # walk it to the end with the CLI (which approves the plan hash it shows)
    (marks / "pending.release").touch()
    res = rb.cli("approve", run_id)
    assert res.returncode == 0, res.stderr
    wait_run(rb, run_id, "awaiting_approval", "report")
    approved = cli_json(rb, "approve", run_id, "--step", "report")
    assert approved["id"] == run_id
    done = wait_run(rb, run_id, "succeeded")
    assert lines(marks / "pending.started") == [f"{run_id} hold {rb.pid}"]
    assert step(done, "hold")["output"]["attempt"] == 1
    assert step(done, "report")["output"]["message"] == "held pending, attempt 1"
    assert events(done)[-1] == "run_ended"


# ------------------------------------------------------------------------------------------ (b)


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_kill9_during_non_idempotent_step_needs_attention(
    daemon: Callable[..., RunbookdProcess], marks: Path, decision: str
) -> None:
    name = f"crash-{decision}"
    started, release = marks / f"{name}.started", marks / f"{name}.release"
    rb = daemon()
    run_id = start_run(rb, "HoldTest", name)
    old_hash = walk_to_hold_running(rb, run_id, started)
    first_pid = rb.pid

    assert rb.kill9() == -signal.SIGKILL
    restart(rb)

    run = get_run(rb, run_id)
    assert run["state"] == "needs_attention"
    assert run["current_step"] == "hold"
    hold = step(run, "hold")
    assert hold["state"] == "awaiting_approval"
    assert hold["plan_hash"] and hold["plan_hash"] != old_hash
    assert hold["plan"] == {"started": str(started), "release": str(release), "max_wait": "2m"}
    assert "outcome is unknown" in hold["error"] and "Verify" in hold["error"]
    assert "needs_attention" in events(run)
    assert [r["id"] for r in runs_of(rb, "hold-test")] == [run_id]
    listed = rb.get("/api/v1/runs", params={"state": "needs_attention"}).json()["runs"]
    assert [r["id"] for r in listed] == [run_id]
    # nothing re-ran on its own
    assert lines(started) == [f"{run_id} hold {first_pid}"]

    # the approval given before the crash does not count, and cannot be replayed
    stale = rb.post(f"/api/v1/runs/{run_id}/steps/hold/approve", json={"plan_hash": old_hash})
    assert stale.status == 409, stale
    assert "changed" in stale.json()["error"]
    assert get_run(rb, run_id)["state"] == "needs_attention"

    if decision == "reject":
        res = rb.cli("reject", run_id, "--reason", "checked by hand: the change already happened")
        assert res.returncode == 0, res.stderr
        ended = get_run(rb, run_id)
        assert ended["state"] == "rejected"
        assert "checked by hand" in ended["outcome"]
        assert step(ended, "hold")["state"] == "rejected"
        assert step(ended, "report")["state"] == "pending"
        assert lines(started) == [f"{run_id} hold {first_pid}"]  # never ran again
        return

    release.touch()
    res = rb.cli("approve", run_id, "--step", "hold")  # binds the new plan hash shown by the server
    assert res.returncode == 0, res.stderr
    run = wait_run(rb, run_id, "awaiting_approval", "report")
    hold = step(run, "hold")
    assert hold["state"] == "succeeded" and hold["attempts"] == 2
    assert hold["output"]["attempt"] == 2
    assert [a["plan_hash"] for a in hold["approvals"]] == [old_hash, hold["plan_hash"]]
    assert lines(started) == [f"{run_id} hold {first_pid}", f"{run_id} hold {rb.pid}"]
    approve(rb, run_id, "report")
    done = wait_run(rb, run_id, "succeeded")
    assert step(done, "report")["output"]["message"] == f"held {name}, attempt 2"


# ------------------------------------------------------------------------------------------ (c)


def test_kill9_during_idempotent_step_reruns_it(daemon: Callable[..., RunbookdProcess], marks: Path) -> None:
    started, release = marks / "idem.started", marks / "idem.release"
    rb = daemon()
    run_id = start_run(rb, "HoldIdempotentTest", "idem")
    approved_hash = walk_to_hold_running(rb, run_id, started)
    first_pid = rb.pid

    assert rb.kill9() == -signal.SIGKILL
    restart(rb)

    # re-run on start without anyone approving again
    wait_until("the idempotent step to start again", lambda: len(lines(started)) == 2)
    assert lines(started) == [f"{run_id} hold {first_pid}", f"{run_id} hold {rb.pid}"]
    run = get_run(rb, run_id)
    assert run["state"] == "running"
    hold = step(run, "hold")
    assert hold["state"] == "running" and hold["plan_hash"] == approved_hash
    assert len(hold["approvals"]) == 1
    assert "step_interrupted" in events(run)
    assert "needs_attention" not in events(run)

    release.touch()
    run = wait_run(rb, run_id, "awaiting_approval", "report")
    assert step(run, "hold")["output"]["attempt"] == 2
    approve(rb, run_id, "report")
    done = wait_run(rb, run_id, "succeeded")
    assert step(done, "report")["output"]["message"] == "held idem, attempt 2"


# ------------------------------------------------------------------------------------------ (d)


def test_duplicate_payload_cooldown_and_daily_limit_hold_across_kill9(
    daemon: Callable[..., RunbookdProcess],
) -> None:
    rb = daemon()

    # the same webhook payload twice (Alertmanager re-sends, HA peers duplicate): one run
    same = alert_payload("CooldownTest", "c1", fingerprint="c1c1c1c1c1c1c1c1")
    first = post_alert(rb, same)
    assert len(first["started"]) == 1
    cool_run = first["started"][0]
    again = post_alert(rb, same)
    assert again["started"] == [] and again["attached"] == [cool_run]

    # daily-test: no cooldown, at most 2 runs a day for one target; end both
    daily_runs = []
    for _ in range(2):
        run_id = start_run(rb, "DailyTest", "d1")
        wait_run(rb, run_id, "awaiting_approval", "say")
        res = rb.cli("reject", run_id, "--reason", "not needed")
        assert res.returncode == 0, res.stderr
        daily_runs.append(run_id)

    assert rb.kill9() == -signal.SIGKILL
    restart(rb)

    # the duplicate again, after the crash: still the one run, attached
    after = post_alert(rb, same)
    assert after["started"] == [] and after["attached"] == [cool_run]
    assert [r["id"] for r in runs_of(rb, "cooldown-test")] == [cool_run]

    # end the cooldown-test run, restart again, and alert again for the same target
    wait_run(rb, cool_run, "awaiting_approval", "say")
    approve(rb, cool_run, "say")
    wait_run(rb, cool_run, "succeeded")
    assert rb.kill9() == -signal.SIGKILL
    restart(rb)

    blocked = post_alert(rb, alert_payload("CooldownTest", "c1"))
    assert blocked["started"] == [] and blocked["attached"] == []
    assert [r["id"] for r in runs_of(rb, "cooldown-test")] == [cool_run]
    assert rb.metric("runbookd_runs_suppressed_total", runbook="cooldown-test", reason="cooldown") == 1

    blocked = post_alert(rb, alert_payload("DailyTest", "d1"))
    assert blocked["started"] == [] and blocked["attached"] == []
    assert sorted(r["id"] for r in runs_of(rb, "daily-test")) == sorted(daily_runs)
    assert rb.metric("runbookd_runs_suppressed_total", runbook="daily-test", reason="daily_limit") == 1

    # the limits are per target: another target still starts a run
    other = start_run(rb, "CooldownTest", "c2")
    assert get_run(rb, other)["target"] == "c2"
    assert rb.metric("runbookd_alerts_received_total", status="firing") == 3


# ------------------------------------------------------------------------------------------ (e)


def _sigterm(rb: RunbookdProcess) -> None:
    assert rb.pid is not None
    os.killpg(rb.pid, signal.SIGTERM)  # the daemon runs in its own process group


def _wait_exit(rb: RunbookdProcess, timeout: float = WAIT) -> int:
    assert rb.proc is not None
    return rb.proc.wait(timeout)


def test_sigterm_drains_the_running_step_then_exits_0(
    daemon: Callable[..., RunbookdProcess], marks: Path
) -> None:
    started, release = marks / "drain.started", marks / "drain.release"
    rb = daemon()
    run_id = start_run(rb, "HoldTest", "drain")
    walk_to_hold_running(rb, run_id, started)

    _sigterm(rb)
    wait_until("the daemon to report that it drains", lambda: "engine.draining" in rb.log_text())
    assert rb.running  # still waiting for the step, which has not been released
    release.touch()
    assert _wait_exit(rb) == 0
    assert "engine.cancelling_step" not in rb.log_text()

    restart(rb)
    run = get_run(rb, run_id)
    hold = step(run, "hold")
    assert hold["state"] == "succeeded" and hold["attempts"] == 1
    assert run["state"] == "awaiting_approval" and run["current_step"] == "report"
    assert "step_interrupted" not in events(run) and "needs_attention" not in events(run)
    approve(rb, run_id, "report")
    wait_run(rb, run_id, "succeeded")
    assert len(lines(started)) == 1


def test_sigterm_past_the_grace_cancels_the_step_and_the_next_start_asks_a_person(
    daemon: Callable[..., RunbookdProcess], marks: Path
) -> None:
    started = marks / "stuck.started"
    rb = daemon()
    run_id = start_run(rb, "HoldTest", "stuck")
    walk_to_hold_running(rb, run_id, started)

    _sigterm(rb)  # never released: the drain grace runs out
    assert _wait_exit(rb) == 0
    assert "engine.cancelling_step" in rb.log_text()

    restart(rb)
    run = get_run(rb, run_id)
    assert run["state"] == "needs_attention"
    assert step(run, "hold")["state"] == "awaiting_approval"
    assert len(lines(started)) == 1


def test_sigterm_starts_no_new_step_while_draining(
    daemon: Callable[..., RunbookdProcess], marks: Path
) -> None:
    """A step approved but held back by the blast-radius budget must not start during the drain (it would
    be abandoned mid-way at exit); it starts after the next start instead."""
    rb = daemon()
    first = start_run(rb, "HoldTest", "first")
    walk_to_hold_running(rb, first, marks / "first.started")
    second = start_run(rb, "HoldTest", "second")
    wait_run(rb, second, "awaiting_approval", "check")
    approve(rb, second, "check")
    wait_run(rb, second, "awaiting_approval", "hold")
    approve(rb, second, "hold")
    waiting = wait_until(
        "the second hold to wait for the budget",
        lambda: "step_waiting" in events(run := get_run(rb, second)) and run,
    )
    assert step(waiting, "hold")["state"] == "approved"

    _sigterm(rb)
    wait_until("the daemon to report that it drains", lambda: "engine.draining" in rb.log_text())
    (marks / "first.release").touch()  # the budget frees up while the daemon stops
    assert _wait_exit(rb) == 0
    assert not (marks / "second.started").exists()

    (marks / "second.release").touch()
    restart(rb)
    run = wait_run(rb, second, "awaiting_approval", "report")
    assert step(run, "hold")["attempts"] == 1
    assert "needs_attention" not in events(run)
    assert len(lines(marks / "second.started")) == 1
