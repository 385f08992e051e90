"""JSON answers: always standard JSON (no NaN or Infinity, whatever a step's output holds)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from daemon.kits import strictjson


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(text=strictjson.dumps(data), status=status, content_type="application/json")
