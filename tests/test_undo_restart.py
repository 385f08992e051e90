"""Undos across a real ``kill -9`` of ``runbookd serve`` (design §5 and §3): the undo state is in the store.

- Killed between a step and its undo: the undo still runs when the run ends after the restart (the
  shipped prometheus-scrape-failure runbook, real Prometheus and Alertmanager: the silence is expired).
- Killed while an undo runs: an idempotent undo is run again; any other needs a person, who retries it.

As in test_restart.py, steps are held open by the actions of ``tests/support/slow_actions.py``, and every
test runs on SQLite and on PostgreSQL (``store_backend``: state.url and a short HA lease, so a start after
``kill -9`` first waits out the dead process's lease; ``restart`` waits until it leads and has recovered)."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.am import AlertmanagerServer
from support.payloads import webhook_payload
from support.polling import wait_until
from support.ports import closed_port
from support.prom import PrometheusServer
from support.runbookd import RunbookdProcess, daemon_config

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = REPO_ROOT / "runbooks" / "prometheus-scrape-failure.yaml"
WAIT = 30.0
LEASE = {"lease": "4s", "renew": "1s"}
"""PostgreSQL: a restart after kill -9 waits out the dead leader's lease (at most 4 s, not the default 15 s)."""


def on_store(config: dict[str, Any], store_backend: str) -> dict[str, Any]:
    """The config on the test's store: the SQLite file (``--state``) as it is, or the PostgreSQL database."""
    if store_backend == "sqlite":
        return config
    return {**config, "state": {"url": store_backend}, "ha": LEASE}  # state.url wins over --state


def restart(rb: RunbookdProcess) -> None:
    """Start the killed daemon again on the same port and store; return once it leads and has recovered
    (``routing_live``): on PostgreSQL only after the killed process's lease expired."""
    rb.start()

    def live() -> bool:
        r = rb.get("/api/v1/status")
        return r.status == 200 and bool(r.json()["routing_live"])

    wait_until("the restarted daemon to lead and recover", live, WAIT)


def get_run(rb: RunbookdProcess, run_id: str) -> dict[str, Any]:
    r = rb.get(f"/api/v1/runs/{run_id}")
    assert r.status == 200, r
    return dict(r.json())


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["id"] == step_id)


def events(run: dict[str, Any]) -> list[str]:
    return [e["event"] for e in run["timeline"]]


def start_run(rb: RunbookdProcess, labels: dict[str, str]) -> str:
    r = rb.post_webhook(webhook_payload(labels, fingerprint=uuid.uuid4().hex[:16]), wait_routed=False)
    assert r.status == 200, r
    started = rb.wait_routed(r.json()["receipt"])["result"]["started"]
    assert len(started) == 1, started
    return str(started[0])


def approve_when_asked(rb: RunbookdProcess, run_id: str, step_id: str) -> None:
    def asks() -> dict[str, Any] | None:
        run = get_run(rb, run_id)
        return (
            run
            if run["current_step"] == step_id and step(run, step_id)["state"] == "awaiting_approval"
            else None
        )

    run = wait_until(f"{step_id} to ask for approval", asks, WAIT)
    plan_hash = step(run, step_id)["plan_hash"]
    r = rb.post(f"/api/v1/runs/{run_id}/steps/{step_id}/approve", json={"plan_hash": plan_hash})
    assert r.status == 200, r


def wait_state(rb: RunbookdProcess, run_id: str, state: str) -> dict[str, Any]:
    return dict(
        wait_until(
            f"run {run_id} {state}", lambda: (run := get_run(rb, run_id))["state"] == state and run, WAIT
        )
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ------------------------------------------------------------------------------------------ real silence


def test_kill9_between_the_silence_and_the_end_still_expires_it(
    prometheus_factory: Callable[..., PrometheusServer],
    alertmanager_factory: Callable[..., AlertmanagerServer],
    runbookd_factory: Callable[..., RunbookdProcess],
    store_backend: str,
) -> None:
    down = f"127.0.0.1:{closed_port()}"
    prom = prometheus_factory(
        scrape_configs=[{"job_name": "restart", "static_configs": [{"targets": [down]}]}]
    )
    prom.wait_for('up{job="restart"} == 0', bool, timeout=60)
    am = alertmanager_factory()
    config = daemon_config(RUNBOOK, prometheus=prom.url, alertmanager=am.url, dry_run=False)
    rb = runbookd_factory(on_store(config, store_backend))
    labels = {
        "alertname": "PrometheusScrapeFailure",
        "job": "restart",
        "instance": down,
        "severity": "warning",
    }
    run_id = start_run(rb, labels)
    for step_id in ("target-down", "scrape-error", "down-since", "others-down", "report", "silence-target"):
        approve_when_asked(rb, run_id, step_id)
    run = wait_until(
        "the silence to be created",
        lambda: (
            (r := get_run(rb, run_id))["current_step"] == "wait-for-recovery"
            and step(r, "wait-for-recovery")["state"] == "awaiting_approval"
            and r
        ),
        WAIT,
    )
    silence_id = step(run, "silence-target")["output"]["silence_id"]
    assert [s["status"]["state"] for s in am.silences() if s["id"] == silence_id] == ["active"]

    assert rb.kill9() == -signal.SIGKILL
    restart(rb)

    res = rb.cli("reject", run_id, "--reason", "the exporter is being replaced")
    assert res.returncode == 0, res.stderr
    run = wait_state(rb, run_id, "rejected")
    assert step(run, "silence-target")["undo"]["state"] == "succeeded"
    assert [s["status"]["state"] for s in am.silences() if s["id"] == silence_id] == ["expired"]


# ------------------------------------------------------------------------------------------ an undo cut off


def _undo_runbook(name: str, alert: str, undo_action: str, marks: Path) -> dict[str, Any]:
    def hold(what: str) -> dict[str, Any]:
        return {
            "started": f"{marks}/{{{{ params.name }}}}.{what}.started",
            "release": f"{marks}/{{{{ params.name }}}}.{what}.release",
            "max_wait": "2m",
        }

    return {
        "name": name,
        "triggers": [{"alert": alert}],
        "target": "{{ params.name }}",
        "params": {"name": "{{ alert.labels.instance }}"},
        "policy": {"cooldown": "0s", "max_runs_per_day": 50, "on_resolved": "ignore"},
        "approval": {"approvers": ["sre"], "timeout": "30m"},
        "steps": [
            {
                "id": "change",
                "action": "test.hold_idempotent",
                "with": hold("change"),
                "undo": {"action": undo_action, "with": hold("undo")},
            },
            {"id": "report", "action": "notify.log", "with": {"message": "changed {{ params.name }}"}},
        ],
    }


@pytest.fixture
def undo_daemon(
    runbookd_factory: Callable[..., RunbookdProcess], tmp_path: Path, store_backend: str
) -> tuple[RunbookdProcess, Path]:
    marks = tmp_path / "marks"
    marks.mkdir()
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    for book in (
        _undo_runbook("undo-hold", "UndoHold", "test.hold", marks),
        _undo_runbook("undo-hold-idempotent", "UndoHoldIdempotent", "test.hold_idempotent", marks),
    ):
        (rb_dir / f"{book['name']}.yaml").write_text(yaml.safe_dump(book, sort_keys=False))
    config = {
        "plugins": ["tests.support.slow_actions"],
        "state": {"path": str(tmp_path / "unused.db")},
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
    return runbookd_factory(on_store(config, store_backend), env={"PYTHONPATH": pythonpath}), marks


def _to_running_undo(rb: RunbookdProcess, marks: Path, alert: str, name: str) -> str:
    (marks / f"{name}.change.release").touch()  # the change itself finishes at once
    run_id = start_run(rb, {"alertname": alert, "instance": name, "severity": "warning"})
    approve_when_asked(rb, run_id, "change")
    approve_when_asked(rb, run_id, "report")
    wait_until("the undo to start", lambda: lines(marks / f"{name}.undo.started"), WAIT)
    run = get_run(rb, run_id)
    assert run["state"] == "undoing" and step(run, "change")["undo"]["state"] == "running", run
    return run_id


def test_kill9_during_a_non_idempotent_undo_needs_a_person_who_retries_it(
    undo_daemon: tuple[RunbookdProcess, Path],
) -> None:
    rb, marks = undo_daemon
    run_id = _to_running_undo(rb, marks, "UndoHold", "cut")
    first_pid = rb.pid

    assert rb.kill9() == -signal.SIGKILL
    restart(rb)

    run = get_run(rb, run_id)
    assert run["state"] == "needs_attention", run
    undo = step(run, "change")["undo"]
    assert undo["state"] == "failed" and "outcome is unknown" in undo["error"]
    assert "undo_interrupted" in events(run)
    assert lines(marks / "cut.undo.started") == [f"{run_id} change/undo {first_pid}"]  # not re-run

    (marks / "cut.undo.release").touch()
    res = rb.cli("approve", run_id, "--step", "change")
    assert res.returncode == 0, res.stderr
    run = wait_state(rb, run_id, "succeeded")
    assert step(run, "change")["undo"]["attempts"] == 2
    assert len(lines(marks / "cut.undo.started")) == 2
    assert "undo_retry_approved" in events(run)


def test_kill9_during_an_idempotent_undo_runs_it_again(undo_daemon: tuple[RunbookdProcess, Path]) -> None:
    rb, marks = undo_daemon
    run_id = _to_running_undo(rb, marks, "UndoHoldIdempotent", "again")

    assert rb.kill9() == -signal.SIGKILL
    restart(rb)

    wait_until("the undo to run again", lambda: len(lines(marks / "again.undo.started")) == 2, WAIT)
    run = get_run(rb, run_id)
    assert run["state"] == "undoing" and "needs_attention" not in events(run)
    (marks / "again.undo.release").touch()
    run = wait_state(rb, run_id, "succeeded")
    assert step(run, "change")["undo"]["state"] == "succeeded"
    assert step(run, "change")["undo"]["attempts"] == 2
    assert events(run).count("undo_started") == 2
