"""An Engine in the test's own process, on a given store, with the runbooks written under ``tmp_path``
(no HTTP, no background router unless the test starts one): for tests that drive routing step by step."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from daemon.actions.registry import default_registry
from daemon.clients.bundle import Clients
from daemon.config import parse_config
from daemon.engine.engine import Engine
from daemon.kits.clock import FrozenClock
from daemon.runbooks.loader import load_all
from daemon.store.base import StateStore
from daemon.store.postgres import PgSettings, PgStore
from daemon.store.sqlite import Store
from support.inproc import base_config, write_runbooks
from support.postgres import PostgresServer

LOG_RUNBOOK = """
name: log
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
steps:
  - id: say
    action: notify.log
    with: {message: "{{ params.job }}"}
"""
"""One read-only step per job: for tests of routing, where what the step does does not matter."""


def make_engine(tmp_path: Path, store: StateStore, runbooks: Mapping[str, str], **extra: Any) -> Engine:
    """``extra``: further Engine arguments (``leadership``, ``clock``, ...)."""
    write_runbooks(tmp_path, runbooks)
    cfg = parse_config(base_config(tmp_path))
    registry = default_registry()
    loaded = load_all(cfg.runbooks.paths, registry, list(cfg.approvers))
    return Engine(
        config=cfg,
        store=store,
        registry=registry,
        runbooks=loaded,
        clients=Clients(),
        **{"clock": FrozenClock(), **extra},
    )


async def open_test_store(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> StateStore:
    """A fresh store: a SQLite file under ``tmp_path``, or a fresh database on the session's PostgreSQL."""
    if backend == "sqlite":
        return await Store.open(tmp_path / "state.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return await PgStore.open(PgSettings(server.fresh_database()))
