"""Reading request bodies from clients that may be broken or hostile.

Every failure to read a body is the client's: a broken ``Content-Encoding``, bad chunking or a client
that goes away mid-body is answered 400, a body over the limit 413, a body not finished within
``server.body_timeout`` 408, and more than ``server.max_pending_bodies`` bodies being read at once 503
(Alertmanager retries 5xx; the others are hostile or broken). None of them is an internal error, none
logs a traceback. On shutdown every body still being read is given up at once, so SIGTERM never waits on
a slow client.

Compressed bodies (``Content-Encoding: gzip`` or ``deflate``) are inflated here, never more than the
limit: the server runs with aiohttp's own inflating off (``app.app_runner``), because aiohttp inflates a
whole body on the event loop, even one it only drains after answering 401 (1 MiB of gzip is 1 GiB).

Slack's endpoints, which anyone on the internet can reach and whose signature can only be checked once
the body is read, have bodies of their own to count (``pool="slack"``): unsigned senders that never finish
cannot use up the slots of Alertmanager's webhook and the API.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any, Literal

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from daemon.config import ServerConfig
from daemon.kits import strictjson


class BadBody(Exception):
    """The request body could not be read or parsed; answered with ``status`` and the message."""

    def __init__(self, status: int, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.status, self.detail = status, detail


Pool = Literal["api", "slack"]
"""Whose bodies: Alertmanager's webhook and the API (authenticated first), or Slack's (signed)."""

_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""Content-Encoding -> zlib's wbits (gzip framing; zlib framing, or raw deflate when the body has no
zlib header: ``_inflate``)."""
_MAX_MEMBERS = 64
"""Most gzip members (concatenated streams) in one body."""


class BodyGate:
    """Bounds the time to read one body and the number of bodies read at once (per pool); gives them up
    on close."""

    def __init__(self, config: ServerConfig) -> None:
        self.limit = config.max_body_bytes
        self.timeout = config.body_timeout
        self.max_pending = config.max_pending_bodies
        self._reading: dict[Pool, set[asyncio.Timeout]] = {"api": set(), "slack": set()}
        self._closed = False

    @property
    def pending(self) -> int:
        return sum(len(reading) for reading in self._reading.values())

    async def read(self, request: web.Request, pool: Pool = "api") -> bytes:
        """The whole body (decoded from its Content-Encoding), or BadBody."""
        if request.content_length is not None and request.content_length > self.limit:
            raise BadBody(413, f"body larger than {self.limit} bytes")
        if self._closed:
            raise BadBody(503, "runbookd is shutting down")
        reading = self._reading[pool]
        if len(reading) >= self.max_pending:
            raise BadBody(503, "too many requests are still sending their bodies; retry")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
        if encoding != "identity" and encoding not in _ENCODINGS:
            raise BadBody(
                400, f"cannot read the body: Content-Encoding {encoding[:40]!r} is not gzip or deflate"
            )
        if request.content.is_eof():  # all of it has arrived (the usual case): nothing to wait for
            deadline = None
        else:
            deadline = asyncio.timeout(self.timeout)
            reading.add(deadline)
        try:
            if deadline is None:
                raw = await request.read()
            else:
                async with deadline:
                    raw = await request.read()
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
                reading.discard(deadline)
        return raw if encoding == "identity" else self._inflate(raw, encoding)

    def _inflate(self, raw: bytes, encoding: str) -> bytes:
        """``raw`` decoded, at most ``limit`` bytes of it (413 past that), in bounded steps."""
        if not raw:
            return raw
        wbits = _ENCODINGS[encoding]
        if encoding == "deflate" and raw[:1] and raw[0] & 0x0F != 8:  # no zlib header: raw deflate, as
            wbits = -zlib.MAX_WBITS  # some clients send it (aiohttp and browsers accept it too)
        out: list[bytes] = []
        room, rest = self.limit, raw
        for _ in range(_MAX_MEMBERS):
            inflater = zlib.decompressobj(wbits)
            try:
                chunk = inflater.decompress(rest, room + 1)  # one byte more than fits: over the limit
            except zlib.error:
                raise BadBody(400, f"cannot read the body: it is not valid {encoding}") from None
            if len(chunk) > room:
                raise BadBody(413, f"body larger than {self.limit} bytes once decoded ({encoding})")
            out.append(chunk)
            room -= len(chunk)
            if not inflater.eof:
                raise BadBody(400, f"cannot read the body: the {encoding} stream ends early")
            rest = inflater.unused_data
            if not rest:
                return b"".join(out)
            if wbits != _ENCODINGS["gzip"]:  # one deflate stream per body: what follows it is not JSON's
                raise BadBody(400, f"cannot read the body: bytes follow the end of the {encoding} stream")
        raise BadBody(400, f"cannot read the body: more than {_MAX_MEMBERS} {encoding} members")

    def close(self) -> None:
        """Shutdown: end every body read in progress now (their requests answer 503) and take no more."""
        self._closed = True
        now = asyncio.get_running_loop().time()
        for deadline in [d for reading in self._reading.values() for d in reading]:
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
