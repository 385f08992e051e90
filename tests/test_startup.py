"""Start-up (issue 11 §9): the webhook stores at once while recovery runs behind it; the gauge
``runbookd_routing_live`` and ``GET /api/v1/status`` say when routing is live. A real ``runbookd serve``
subprocess on a state file seeded with runs that recovery has to advance."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from support.inproc import write_runbooks
from support.payloads import webhook_payload
from support.polling import wait_until
from support.runbookd import RunbookdProcess, daemon_config
from support.seeding import seed_active_runs

RUNBOOK = """
name: scrape
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
approval: {approvers: [sre]}
steps:
  - id: say
    action: notify.log
    with: {message: "{{ params.job }}"}
"""
SEEDED = 3000


def test_the_webhook_stores_while_recovery_runs_then_routing_goes_live(
    tmp_path: Path, runbookd_factory: Callable[..., RunbookdProcess]
) -> None:
    write_runbooks(tmp_path, {"scrape": RUNBOOK})
    state = tmp_path / "state.db"
    seed_active_runs(tmp_path, state, SEEDED, alertname="PrometheusScrapeFailure")
    db = sqlite3.connect(state, isolation_level=None)
    # as if the process died between starting these runs and planning their first step: recovery plans
    # each one (and asks for its approval), which takes a while for thousands of runs
    db.execute("UPDATE steps SET state = 'pending', plan = NULL, plan_hash = NULL, requested_at = NULL")
    db.close()
    config = daemon_config(
        tmp_path / "runbooks",
        prometheus="http://127.0.0.1:9",
        alertmanager="http://127.0.0.1:9",
        dry_run=True,
    )
    rb = runbookd_factory(config, state_path=state, ready_timeout=60.0)  # returns once /healthz answers

    resp = rb.post_webhook(
        webhook_payload({"alertname": "PrometheusScrapeFailure", "job": "new"}), wait_routed=False
    )
    assert resp.status == 200 and resp.json()["status"] == "stored"
    receipt = resp.json()["receipt"]
    assert rb.get("/readyz", token="").status == 200  # readiness means "can store"
    assert rb.metric("runbookd_routing_live") == 0.0  # recovery of the seeded runs is still running
    status = rb.get("/api/v1/status").json()
    assert status["routing_live"] is False and status["leader"] is True and status["store"] == "sqlite"

    wait_until("routing live", lambda: rb.metric("runbookd_routing_live") == 1.0, timeout=300)
    routed = rb.wait_routed(receipt, timeout=60)
    assert len(routed["result"]["started"]) == 1
    status = rb.get("/api/v1/status").json()
    assert status["routing_live"] is True
    assert status["counts"]["runs_active"] == SEEDED + 1
    assert status["counts"]["notifications_unrouted"] == 0
    assert set(status) >= {"version", "leader", "routing_live", "paused", "dry_run", "store", "counts"}


def test_a_sqlite_daemon_never_loads_the_postgresql_driver(
    tmp_path: Path, runbookd_factory: Callable[..., RunbookdProcess]
) -> None:
    # psycopg (and the libpq it loads) cost ~90 ms of every start and ~9 MB of memory; on the default
    # store they are never needed. Checked in the running process's memory map after it served a webhook.
    write_runbooks(tmp_path, {"scrape": RUNBOOK})
    config = daemon_config(
        tmp_path / "runbooks",
        prometheus="http://127.0.0.1:9",
        alertmanager="http://127.0.0.1:9",
        dry_run=True,
    )
    rb = runbookd_factory(config, state_path=tmp_path / "state.db")
    resp = rb.post_webhook(webhook_payload({"alertname": "PrometheusScrapeFailure", "job": "web"}))
    assert resp.status == 200
    assert rb.pid is not None
    maps = Path(f"/proc/{rb.pid}/maps").read_text()
    assert "/site-packages/" in maps  # the map does list the daemon's own extension modules
    loaded = {line.split()[-1] for line in maps.splitlines() if "psycopg" in line or "libpq" in line}
    assert loaded == set(), loaded
