"""Typed application state. The engine is created on start-up (it needs the opened store), so the app
holds a slot for it, filled by the cleanup context before the first request."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from daemon.config import Config
from daemon.engine.engine import Engine
from daemon.server.auth import TokenAuth
from daemon.server.bodies import BodyGate


@dataclass
class Slot:
    engine: Engine | None = None
    ready: bool = False

    def get(self) -> Engine:
        if self.engine is None:
            raise web.HTTPServiceUnavailable(reason="runbookd is starting")
        return self.engine


SLOT = web.AppKey("slot", Slot)
AUTH = web.AppKey("auth", TokenAuth)
CONFIG = web.AppKey("config", Config)
BODIES = web.AppKey("bodies", BodyGate)


def engine_of(request: web.Request) -> Engine:
    return request.app[SLOT].get()
