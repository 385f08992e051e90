"""Map runbookd's errors to HTTP answers: a JSON body with the message, never a traceback.

A request the client got wrong (its body, its JSON, its credentials) is logged in one line, without a
traceback; repeated identical lines are rate-limited by the log set-up (``daemon.logs``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from daemon.errors import Conflict, Forbidden, InvalidRequest, NotFound, StoreUnavailable
from daemon.server.answers import json_response
from daemon.server.auth import Unauthorized
from daemon.server.bodies import BadBody

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


def _has_nul(request: web.Request) -> bool:
    return "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.query.items())


def error(status: int, message: str, **extra: object) -> web.Response:
    return json_response({"error": message, **extra}, status=status)


def bad_body(request: web.Request, exc: BadBody) -> web.Response:
    """One warning line (rate-limited), and the connection is not kept: its stream is in an unknown state."""
    detail = {"detail": exc.detail} if exc.detail else {}
    log.warning("http.bad_body", path=request.path, status=exc.status, error=str(exc), **detail)
    resp = error(exc.status, str(exc))
    resp.force_close()
    if exc.status == 503:
        resp.headers["Retry-After"] = "1"
    return resp


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _has_nul(request):  # a run id "%00" reached PostgreSQL, which refuses NUL in text: 503, not 404
        return error(400, "the URL holds a NUL character (%00)")
    codings = request.headers.getall("Transfer-Encoding", [])
    if codings and [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
        # aiohttp frames "gzip, chunked" as chunked and drops the gzip: a proxy in front may read the
        # body otherwise (an adversarial pass). chunked is the only coding a request may use here.
        resp = error(400, "the only Transfer-Encoding understood is chunked")
        resp.force_close()
        return resp
    try:
        return await handler(request)
    except BadBody as exc:
        return bad_body(request, exc)
    except web.HTTPException as exc:
        if exc.status == 413:
            return error(413, "request body too large")
        if exc.content_type == "application/json":
            raise
        resp = error(exc.status, exc.reason)
        if "Allow" in exc.headers:  # 405 says which methods the path takes (RFC 9110 15.5.6)
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except Exception as exc:
        for kind, status in _STATUS:
            if isinstance(exc, kind):
                if status >= 500:
                    log.warning("http.unavailable", path=request.path, error=str(exc))
                return error(status, str(exc))
        log.exception("http.internal_error", path=request.path)
        return error(500, "internal error (see the daemon log)")
