"""Reading request bodies from clients that may be broken or hostile.

Every failure to read a body is the client's: a broken ``Content-Encoding``, bad chunking or a client
that goes away mid-body is answered 400, a body over the limit 413, a body not finished within
``server.body_timeout`` 408, and more than ``server.max_pending_bodies`` bodies being read at once 503
(Alertmanager retries 5xx; the others are hostile or broken). None of them is an internal error, none
logs a traceback. On shutdown every body still being read is given up at once, so SIGTERM never waits on
a slow client.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from daemon.config import ServerConfig
from daemon.kits import strictjson


class BadBody(Exception):
    """The request body could not be read or parsed; answered with ``status`` and the message."""

    def __init__(self, status: int, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.status, self.detail = status, detail


class BodyGate:
    """Bounds the time to read one body and the number of bodies read at once; gives them up on close."""

    def __init__(self, config: ServerConfig) -> None:
        self.limit = config.max_body_bytes
        self.timeout = config.body_timeout
        self.max_pending = config.max_pending_bodies
        self._reading: set[asyncio.Timeout] = set()
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._reading)

    async def read(self, request: web.Request) -> bytes:
        """The whole body (decoded from its Content-Encoding), or BadBody."""
        if request.content_length is not None and request.content_length > self.limit:
            raise BadBody(413, f"body larger than {self.limit} bytes")
        if self._closed:
            raise BadBody(503, "runbookd is shutting down")
        if len(self._reading) >= self.max_pending:
            raise BadBody(503, "too many requests are still sending their bodies; retry")
        if request.content.is_eof():  # all of it has arrived (the usual case): nothing to wait for
            deadline = None
        else:
            deadline = asyncio.timeout(self.timeout)
            self._reading.add(deadline)
        try:
            if deadline is None:
                return await request.read()
            async with deadline:
                return await request.read()
        except TimeoutError:
            if self._closed:
                raise BadBody(503, "runbookd is shutting down") from None
            raise BadBody(408, f"body not received within {self.timeout:g} s") from None
        except web.HTTPRequestEntityTooLarge:
            raise BadBody(413, f"body larger than {self.limit} bytes") from None
        except (HttpProcessingError, web.RequestPayloadError) as exc:  # encoding, chunking, framing
            # Nothing more can be read: say so, or aiohttp tries to read the rest after the answer.
            request.content.feed_eof()
            raise BadBody(400, f"cannot read the body: {_first_line(exc)}") from None
        except ConnectionError:  # the client went away mid-body (ConnectionResetError "Connection lost")
            raise BadBody(400, "the client closed the connection before sending the whole body") from None
        finally:
            if deadline is not None:
                self._reading.discard(deadline)

    def close(self) -> None:
        """Shutdown: end every body read in progress now (their requests answer 503) and take no more."""
        self._closed = True
        now = asyncio.get_running_loop().time()
        for deadline in list(self._reading):
            deadline.reschedule(now)


def _first_line(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split())[:200]


async def json_object(gate: BodyGate, request: web.Request, *, empty_ok: bool = True) -> dict[str, Any]:
    """The body as a JSON object (standard JSON, bounded depth); ``{}`` for no body when ``empty_ok``."""
    raw = await gate.read(request) if request.can_read_body else b""
    if not raw and empty_ok:
        return {}
    try:
        data = strictjson.loads(raw)
    except strictjson.JSONRefused as exc:
        raise BadBody(400, "body is not valid JSON", str(exc)) from None
    if not isinstance(data, dict):
        raise BadBody(400, "body must be a JSON object")
    return data
