"""``Expect: 100-continue``: the client is invited to send its body only if it may.

aiohttp's default answers ``100 Continue`` at once, before any handler runs: a client without credentials,
or declaring a body over ``server.max_body_bytes``, was invited to upload it, then answered 401 or 413,
and aiohttp lingered on the socket to drain the body (an adversarial pass). Each POST route here checks
first what its handler would check before reading the body (the bearer token, Slack's signature headers,
the declared length) and answers a refusal instead of the invitation. The connection is not kept after
it: aiohttp waits at most ``app._LINGER`` for a body that was never asked for, then closes it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from daemon.server.auth import Unauthorized
from daemon.server.errors import error
from daemon.server.keys import AUTH, BODIES

Refusal = Callable[[web.Request], web.Response | None]
"""What a route refuses on its headers alone (None: the body may come)."""
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def expect_handler(refusal: Refusal) -> ExpectHandler:
    """An aiohttp ``expect_handler``: 100 Continue unless the declared length or ``refusal`` refuses."""

    async def handle(request: web.Request) -> web.StreamResponse | None:
        if request.version != HttpVersion11:
            return None  # HTTP/1.0 has no 100 Continue: the body comes anyway, as aiohttp's default does
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            return _closing(error(417, "the only expectation understood is Expect: 100-continue"))
        length = request.content_length
        if length is not None and length > request.app[BODIES].limit:
            return _closing(error(413, "request body too large"))
        refused = refusal(request)
        if refused is not None:
            return _closing(refused)
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # (as aiohttp's default: the answer's size starts after it)
        return None

    return handle


def _closing(resp: web.Response) -> web.Response:
    resp.force_close()  # not kept alive: the body, never asked for, is not waited for past the linger
    return resp


def webhook(request: web.Request) -> web.Response | None:
    return _unauthorized(lambda: request.app[AUTH].check_webhook(request))


def api(request: web.Request) -> web.Response | None:
    return _unauthorized(lambda: request.app[AUTH].identity(request))


def _unauthorized(check: Callable[[], object]) -> web.Response | None:
    try:
        check()
    except Unauthorized as exc:
        return error(401, str(exc))
    return None
