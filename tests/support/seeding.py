"""A SQLite state file holding many active runs, fast: one run is started by the real engine (from a
real alert and runbook), then its rows are copied in SQL under new ids and targets. For start-up tests
and ``bench/startup.py`` ("cold start with 50,000 active runs")."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from daemon.actions.registry import default_registry
from daemon.clients.bundle import Clients
from daemon.config import parse_config
from daemon.engine.engine import Engine
from daemon.engine.events import WebhookPayload
from daemon.kits.clock import SystemClock
from daemon.runbooks.loader import load_all
from daemon.store.sqlite import Store

from .inproc import alert_payload, base_config


async def _first_run(workdir: Path, state_path: Path, alertname: str, job: str) -> str:
    cfg = base_config(workdir)
    cfg["state"] = {"path": str(state_path)}
    config = parse_config(cfg)
    registry = default_registry()
    runbooks = load_all(config.runbooks.paths, registry, list(config.approvers))
    store = await Store.open(state_path)
    engine = Engine(
        config=config,
        store=store,
        registry=registry,
        runbooks=runbooks,
        clients=Clients(),
        clock=SystemClock(),
    )
    try:
        await engine.start(background=False)
        result = await engine.ingest(WebhookPayload.model_validate(alert_payload(alertname, job=job)))
        await engine.wait_idle()
    finally:
        await engine.stop()
        await store.close()
    started = result["started"]
    assert len(started) == 1, result
    return str(started[0])


def seed_active_runs(workdir: Path, state_path: Path, n: int, *, alertname: str, job: str = "seed") -> str:
    """``n`` active runs awaiting approval in ``state_path``, of the runbook in ``workdir/runbooks`` that
    ``alertname`` starts (targets ``<job>``, ``<job>-1`` ...). Returns the first run's id."""
    first = asyncio.run(_first_run(workdir, state_path, alertname, job))
    db = sqlite3.connect(state_path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        for table, key in (("runs", "id"), ("steps", "run_id")):
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            picks = []
            for c in cols:
                if c == key:
                    picks.append(f"t.{c} || '-' || n.i")
                elif table == "runs" and c == "target":
                    picks.append("t.target || '-' || n.i")
                else:
                    picks.append(f"t.{c}")
            db.execute(
                f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(picks)} FROM {table} t, n "
                f"WHERE t.{key} = ?",
                (n - 1, first),
            )
        db.execute("COMMIT")
    finally:
        db.close()
    return first
