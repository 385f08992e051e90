"""Map runbookd's errors to HTTP answers: a JSON body with the message, never a traceback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from daemon.errors import Conflict, Forbidden, InvalidRequest, NotFound, StoreUnavailable
from daemon.server.auth import Unauthorized

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger("runbookd.http")

_STATUS: list[tuple[type[Exception], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidRequest, 400),
    (StoreUnavailable, 503),
]


def error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 413:
            return error(413, "request body too large")
        if exc.content_type == "application/json":
            raise
        return error(exc.status, exc.reason)
    except Exception as exc:
        for kind, status in _STATUS:
            if isinstance(exc, kind):
                if status >= 500:
                    log.warning("http.unavailable", path=request.path, error=str(exc))
                return error(status, str(exc))
        log.exception("http.internal_error", path=request.path)
        return error(500, "internal error (see the daemon log)")
