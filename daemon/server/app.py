"""Assemble the daemon: store, clients, engine and HTTP routes, owned by the app's cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.actions.base import ActionRegistry
from daemon.actions.registry import default_registry
from daemon.clients.factory import build_clients, close_clients
from daemon.config import Config, Secrets
from daemon.engine.engine import Engine
from daemon.engine.metrics import Metrics
from daemon.engine.notifier import LogNotifier, Notifier
from daemon.kits.clock import Clock
from daemon.runbooks.loader import LoadedRunbook
from daemon.server import api, expect, openapi
from daemon.server.answers import json_response
from daemon.server.auth import TokenAuth
from daemon.server.bodies import BodyGate
from daemon.server.errors import errors_middleware
from daemon.server.intake import alertmanager_webhook
from daemon.server.keys import AUTH, BODIES, CONFIG, SLOT, Slot, engine_of
from daemon.server.slack import ChatOps
from daemon.store.factory import leadership_for, open_store

log = structlog.get_logger("runbookd.server")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    slot = request.app[SLOT]
    if slot.ready and slot.engine is not None and await slot.engine.store.ping():
        return json_response({"status": "ready"})
    return json_response({"status": "not ready"}, status=503)


async def metrics(request: web.Request) -> web.Response:
    engine = engine_of(request)
    body = generate_latest(engine.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


_LINGER = 2.0
"""Seconds aiohttp keeps reading (and dropping) a body no handler read, after answering (a 401 answered on
the headers, say), so that the client reads the answer before the connection closes. aiohttp's 10 s let
a client without credentials hold a socket that long per request, outside ``server.max_pending_bodies``."""


def app_runner(app: web.Application, config: Config) -> web.AppRunner:
    """How runbookd serves its app (``runbookd serve``, and the tests' in-process daemons alike).

    ``auto_decompress=False``: aiohttp would inflate every compressed body on the event loop, whole, even
    one it only drains after answering 401 (1 MiB of gzip inflates to 1 GiB: tens of seconds during which
    nothing else, ``/healthz`` included, is answered). ``BodyGate`` inflates what a handler reads instead,
    never past ``server.max_body_bytes``."""
    return web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.server.drain_timeout,
        keepalive_timeout=config.server.idle_timeout,
        auto_decompress=False,
        lingering_time=_LINGER,
    )


def create_app(
    config: Config,
    secrets: Secrets,
    runbooks: dict[str, LoadedRunbook],
    *,
    registry: ActionRegistry | None = None,
    clock: Clock | None = None,
    notifiers: list[Notifier] | None = None,
    tick_interval: float = 1.0,
) -> web.Application:
    app = web.Application(client_max_size=config.server.max_body_bytes, middlewares=[errors_middleware])
    app[CONFIG] = config
    app[AUTH] = TokenAuth(config.auth.tokens, secrets.tokens, secrets.webhook_token)
    app[SLOT] = slot = Slot()
    app[BODIES] = bodies = BodyGate(config.server)
    chatops = ChatOps.install(app, config, secrets, runbooks, clock)  # None unless Slack is on

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = await open_store(config.state, secrets.state_password, lease=config.ha.lease)
        leadership = leadership_for(
            store, config.state, secrets.state_password, lease=config.ha.lease, renew=config.ha.renew
        )
        clients = await build_clients(config, secrets)
        engine = Engine(
            config=config,
            store=store,
            registry=registry or default_registry(config.plugins),
            runbooks=runbooks,
            clients=clients,
            notifiers=[LogNotifier(), *(notifiers or []), *([chatops.start(store)] if chatops else [])],
            metrics=Metrics(),
            clock=clock,
            tick_interval=tick_interval,
            leadership=leadership,
        )
        slot.engine = engine
        try:
            await leadership.start()  # a lone replica leads at once; the engine then recovers as leader
            await engine.start()
            slot.ready = True
            log.info(
                "runbookd.started",
                runbooks=sorted(runbooks),
                dry_run=config.dry_run,
                store=store.backend,
                leader=leadership.leading,
            )
            yield
        finally:
            slot.ready = False
            if chatops is not None:
                await chatops.drain()
            await engine.stop(config.server.shutdown_grace)
            await leadership.stop()  # after the last step result is recorded: a standby takes over now
            await close_clients(clients)
            await store.close()
            log.info("runbookd.stopped")

    async def give_up_bodies(app: web.Application) -> None:
        bodies.close()  # before the server waits for requests in progress: none waits on a slow client

    app.on_shutdown.append(give_up_bodies)
    app.cleanup_ctx.append(lifecycle)
    app.router.add_post(
        "/api/v1/alertmanager", alertmanager_webhook, expect_handler=expect.expect_handler(expect.webhook)
    )
    api.add_routes(app)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    document = openapi.text()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(text=document, content_type="application/json")

    app.router.add_get("/api/v1/openapi.json", openapi_json)
    return app
