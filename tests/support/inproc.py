"""runbookd's app served in-process on a loopback port, with an injectable clock and action registry.

For tests of the engine's rules through the real HTTP API without a subprocess (the subprocess path,
with kill -9, is ``support.runbookd``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from daemon.actions.base import ActionRegistry
from daemon.actions.registry import default_registry
from daemon.config import Config, Secrets, parse_config
from daemon.engine.engine import Engine
from daemon.engine.notifier import Notifier
from daemon.kits.clock import FrozenClock
from daemon.runbooks.loader import load_all
from daemon.server.app import app_runner, create_app
from daemon.server.keys import SLOT

from .payloads import webhook_payload
from .ports import free_port

STATE_URL: str | None = None
"""Set by the ``store_backend`` fixture: serve() then stores in this PostgreSQL database (state.url)."""

WEBHOOK = "wh-token"
TOKENS = {
    "admin": "admin-token",
    "alice": "alice-token",
    "bob": "bob-token",
    "carol": "carol-token",
    "vic": "vic-token",
}


def base_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0"},
        "state": {"path": str(tmp_path / "state.db"), "busy_timeout": "1s"},
        "runbooks": {"paths": [str(tmp_path / "runbooks")]},
        "dry_run": True,
        "auth": {
            "webhook_token": {"env": "UNUSED_IN_PROCESS"},
            "tokens": [
                {"name": "admin", "role": "admin", "secret": {"env": "X"}},
                {"name": "alice", "role": "approver", "secret": {"env": "X"}},
                {"name": "bob", "role": "approver", "secret": {"env": "X"}},
                {"name": "carol", "role": "approver", "secret": {"env": "X"}},
                {"name": "vic", "role": "viewer", "secret": {"env": "X"}},
            ],
        },
        "approvers": {"sre": ["admin", "alice", "bob", "vic"], "dba": ["carol"]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@dataclass
class Daemon:
    url: str
    app: web.Application
    clock: FrozenClock
    session: aiohttp.ClientSession

    @property
    def engine(self) -> Engine:
        return self.app[SLOT].get()

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "admin",
        json: Any = None,
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        headers = {}
        if token is not None:
            secret = WEBHOOK if token == "webhook" else TOKENS.get(token, token)
            headers["Authorization"] = f"Bearer {secret}"
        async with self.session.request(
            method, self.url + path, json=json, data=data, headers=headers
        ) as resp:
            body = await resp.read()
            try:
                import json as _json

                return resp.status, _json.loads(body)
            except ValueError:
                return resp.status, body.decode()

    async def webhook(self, payload: Any) -> tuple[int, Any]:
        """POST a notification; once stored, wait until it is routed and add what it did (started,
        attached, cancelled, from GET /api/v1/receipts/N) to the answer."""
        status, body = await self.call("POST", "/api/v1/alertmanager", token="webhook", json=payload)
        if status == 200:
            await self.engine.routed(body["receipt"])
            rstatus, receipt = await self.call("GET", f"/api/v1/receipts/{body['receipt']}")
            assert rstatus == 200, receipt
            body = {**body, **receipt["result"]}
        return status, body

    async def approve(
        self, run_id: str, step: str, who: str = "admin", plan_hash: str | None = None
    ) -> tuple[int, Any]:
        body = {"plan_hash": plan_hash} if plan_hash else {}
        return await self.call("POST", f"/api/v1/runs/{run_id}/steps/{step}/approve", token=who, json=body)

    async def run(self, run_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/api/v1/runs/{run_id}")
        assert status == 200, body
        return dict(body)


def write_runbooks(tmp_path: Path, runbooks: Mapping[str, str]) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir(exist_ok=True)
    for name, text in runbooks.items():
        (folder / f"{name}.yaml").write_text(text)


@asynccontextmanager
async def serve(
    tmp_path: Path,
    runbooks: Mapping[str, str],
    *,
    config: Config | dict[str, Any] | None = None,
    registry: ActionRegistry | None = None,
    clock: FrozenClock | None = None,
    secrets: Mapping[str, str] | None = None,
    notifiers: list[Notifier] | None = None,
) -> AsyncIterator[Daemon]:
    """``secrets``: further resolved secrets by Secrets field name (e.g. ``s3_access_key``)."""
    write_runbooks(tmp_path, runbooks)
    cfg = config if isinstance(config, Config) else parse_config(config or base_config(tmp_path))
    if STATE_URL is not None:
        cfg = cfg.model_copy(update={"state": cfg.state.model_copy(update={"url": STATE_URL})})
    registry = registry or default_registry()
    loaded = load_all(cfg.runbooks.paths, registry, list(cfg.approvers))
    resolved = Secrets(
        webhook_token=SecretStr(WEBHOOK),
        tokens={k: SecretStr(v) for k, v in TOKENS.items()},
        **{k: SecretStr(v) for k, v in (secrets or {}).items()},
    )
    clock = clock or FrozenClock()
    app = create_app(
        cfg, resolved, loaded, registry=registry, clock=clock, tick_interval=3600, notifiers=notifiers
    )
    runner = app_runner(app, cfg)  # as runbookd serve serves it (bodies inflated by BodyGate)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        engine = app[SLOT].engine
        if engine is not None and engine.leadership.leading:
            await engine.wait_routing_live()  # recovery runs behind the open webhook: let it finish
        async with aiohttp.ClientSession() as session:
            daemon = Daemon(f"http://127.0.0.1:{port}", app, clock, session)
            yield daemon
            await daemon.engine.wait_idle()
    finally:
        await runner.cleanup()


def alert_payload(
    alertname: str = "PrometheusScrapeFailure",
    status: str = "firing",
    fingerprint: str = "fp-1",
    **labels: str,
) -> dict[str, Any]:
    return webhook_payload(
        {"alertname": alertname, "severity": "warning", **labels}, status=status, fingerprint=fingerprint
    )
