"""A small synchronous client of runbookd's HTTP API for the CLI (RUNBOOKD_SERVER, RUNBOOKD_TOKEN).

The server at the other end may not be runbookd (a wrong --server, a proxy's error page, something
hostile): redirects are not followed, answers are read up to a bound and parsed with a bounded depth, and
an answer that is not what runbookd answers is one line (``UnexpectedAnswer``), never a traceback."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import IO, Any

from daemon.cli.render import defang

DEFAULT_SERVER = "http://127.0.0.1:8080"

MAX_ANSWER_BYTES = 64 << 20
"""Largest answer read. The largest real one is `runs`: up to 200 whole runs, step outputs included (a
pod_logs step alone may hold up to 256 KiB of log lines), so tens of MiB are possible, if rare."""
MAX_ERROR_BYTES = 64 << 10
"""Largest error answer read: runbookd's are ``{"error": "one sentence"}``."""
MAX_DEPTH = 64
"""Deepest nesting accepted in an answer: a run view is at most 6 deep above a step's plan or output."""
MAX_ERROR_CHARS = 2000
"""Longest error text shown from an error answer (runbookd's are a sentence or a few)."""
EXCERPT_CHARS = 120
DEADLINE = 120.0
"""Longest one request may take, connection to last byte of the answer. Each read also times out on its
own (``ApiClient.timeout``), but a server that trickles a byte now and then would keep every read inside
that for ever."""


class ClientError(Exception):
    """The request failed; the message says why (server's own error text where there is one, defanged:
    what the server says can no more steer the terminal on this path than on the success path)."""


class UnexpectedAnswer(ClientError):
    """The server answered, but not as runbookd answers: not JSON, too large or too deep, not a JSON
    object, or not the shape the command reads."""


class _NotRunbookd(ValueError):
    """Why a body is not one runbookd would send (for UnexpectedAnswer); ``head``: its first bytes."""

    def __init__(self, why: str, head: bytes = b"") -> None:
        super().__init__(why)
        self.head = head


@dataclass(frozen=True)
class Answer:
    """The last answer received: enough to name it in an error."""

    method: str
    path: str
    status: int
    head: bytes
    """The body's first bytes (enough for an excerpt)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib's handler would send the token (a header added with add_header)
    to whatever URL the Location names, and turn a POST into a GET. A 3xx becomes an HTTPError instead."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> None:
        return None


class _Deadline:
    """Shuts the request's socket down once ``seconds`` have passed since ``start``: whatever read the
    request is in then ends (EOF or an error), and ``expired`` says why."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        """The connection's socket, once connected (connecting has its own timeout)."""
        with self._lock:
            self._sock = sock
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        if sock is not None:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already: nothing is waiting on it
        sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in another thread; close() would not


class _WatchedHTTP(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPConnection, self._deadline), req)


class _WatchedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            _watched(http.client.HTTPSConnection, self._deadline),
            req,
            context=self._context,  # type: ignore[attr-defined]  # urllib's own, as https_open passes it
        )


def _watched(base: type[http.client.HTTPConnection], deadline: _Deadline) -> type[http.client.HTTPConnection]:
    class Watched(base):  # type: ignore[valid-type,misc]  # a class made per request, as urllib wants one
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    return Watched


def _read(resp: IO[bytes], headers: Message | None, limit: int) -> bytes:
    """The body, or _NotRunbookd past ``limit`` bytes (refused at once when Content-Length says so)."""
    too_large = f"larger than {limit >> 20} MiB" if limit >= 1 << 20 else f"larger than {limit} bytes"
    length = headers.get("Content-Length") if headers is not None else None
    if length and length.strip().isdigit() and int(length) > limit:
        raise _NotRunbookd(too_large, resp.read(EXCERPT_CHARS * 4))
    chunks: list[bytes] = []
    total = 0
    while chunk := resp.read(min(1 << 20, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _NotRunbookd(too_large, chunks[0])
    raw = b"".join(chunks)
    if length and length.strip().isdigit() and total < int(length):  # read(n) does not say so itself
        raise _NotRunbookd(f"cut short: {total} of {int(length)} bytes", raw)
    return raw


def parse(raw: bytes) -> dict[str, Any]:
    """A JSON object as runbookd sends it, or _NotRunbookd. Nesting is bounded (the rendering walks it
    recursively); strings are valid UTF-8 with no lone surrogate (which cannot be printed)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _NotRunbookd("not UTF-8") from None
    except RecursionError:
        raise _NotRunbookd(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise _NotRunbookd("not JSON") from None
    if not isinstance(data, dict):
        raise _NotRunbookd("not a JSON object")
    todo: list[tuple[Any, int]] = [(data, 0)]
    while todo:  # without recursion: the depth is what is being checked
        value, depth = todo.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise _NotRunbookd("a string holds a lone surrogate") from None
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise _NotRunbookd(f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                todo.extend((k, depth + 1) for k in value)
                value = value.values()
            todo.extend((v, depth + 1) for v in value)
    return data


def shown(text: str, limit: int = 200) -> str:
    """Text from the server as one printable line of at most about ``limit`` characters: control and
    invisible characters written as ``\\uXXXX`` (render.defang), as on the success path."""
    return str(defang(text if len(text) <= limit else text[:limit] + "..."))


def excerpt(raw: bytes) -> str:
    """The start of a body as one printable line."""
    if not raw.strip():
        return "(empty body)"
    text = raw[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    return shown(text + ("..." if len(raw) > EXCERPT_CHARS * 4 else ""), EXCERPT_CHARS)


class ApiClient:
    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        deadline: float = DEADLINE,
    ) -> None:
        self.server = (server or os.environ.get("RUNBOOKD_SERVER") or DEFAULT_SERVER).rstrip("/")
        self.token = token if token is not None else os.environ.get("RUNBOOKD_TOKEN")
        self.timeout = timeout
        """Seconds to connect, and for each read."""
        self.deadline = deadline
        """Seconds for the whole request (``DEADLINE``)."""
        self.last: Answer | None = None
        """The last answer received (2xx), for ``unexpected``."""

    def unexpected(self, why: str) -> UnexpectedAnswer:
        """The error for the last answer received: it is not what runbookd answers, and why."""
        a = self.last
        if a is None:
            return UnexpectedAnswer(f"{self.server} did not answer as runbookd does ({why})")
        return UnexpectedAnswer(
            f"{self.server} answered {a.method} {a.path} with HTTP {a.status}, not what runbookd answers"
            f" ({why}): {excerpt(a.head)}"
        )

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if not self.server.startswith(("http://", "https://")):
            raise ClientError(f"--server must be an http(s) URL, not {self.server!r}")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)  # noqa: S310 - scheme checked
        req.add_header("Content-Type", "application/json")
        req.add_header("X-Runbookd-Client", "cli")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        self.last = None
        deadline = _Deadline(self.deadline)
        opener = urllib.request.build_opener(_NoRedirect, _WatchedHTTP(deadline), _WatchedHTTPS(deadline))
        deadline.start()
        try:
            return self._request(opener, req, method, path)
        except ClientError:
            if deadline.expired:  # whatever the cut-off read looked like, this is why it was cut off
                raise ClientError(
                    f"{self.server} did not answer {method} {path} whole within {self.deadline:g} s; gave up"
                ) from None
            raise
        finally:
            deadline.cancel()

    def _request(
        self, opener: urllib.request.OpenerDirector, req: urllib.request.Request, method: str, path: str
    ) -> dict[str, Any]:
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                try:
                    raw = _read(resp, resp.headers, MAX_ANSWER_BYTES)
                except _NotRunbookd as exc:
                    self.last = Answer(method, path, resp.status, exc.head)
                    raise self.unexpected(str(exc)) from None
                self.last = Answer(method, path, resp.status, raw[: EXCERPT_CHARS * 4])
        except urllib.error.HTTPError as exc:
            with exc:  # the error answer's connection: closed once its body is read
                raise self._error(method, path, exc) from None
        except http.client.HTTPException as exc:  # a malformed status line or headers, a body cut short
            raise ClientError(
                f"{self.server} did not answer in HTTP: {type(exc).__name__} {shown(str(exc))}"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach runbookd at {self.server}: {reason}") from None
        try:
            return parse(raw)
        except _NotRunbookd as exc:
            raise self.unexpected(str(exc)) from None

    def _error(self, method: str, path: str, exc: urllib.error.HTTPError) -> ClientError:
        if 300 <= exc.code < 400:
            location = exc.headers.get("Location") if exc.headers else None
            return ClientError(
                f"{exc.code} from {method} {path}: redirects are not followed"
                f" (Location: {shown(location) if location else 'none given'}); check --server / RUNBOOKD_SERVER"
            )
        message = shown(exc.reason) if isinstance(exc.reason, str) else ""
        try:
            error = parse(_read(exc, exc.headers, MAX_ERROR_BYTES)).get("error")
        except (_NotRunbookd, OSError, http.client.HTTPException):
            error = None  # not runbookd's error answer: the status and its reason phrase say enough
        if isinstance(error, str) and error:
            message = shown(error, MAX_ERROR_CHARS)
        hint = " (set RUNBOOKD_TOKEN)" if exc.code == 401 and not self.token else ""
        return ClientError(f"{exc.code}: {message}{hint}")

    def get(self, path: str, **query: str | None) -> dict[str, Any]:
        q = {k: v for k, v in query.items() if v is not None}
        return self.request("GET", path + ("?" + urllib.parse.urlencode(q) if q else ""))

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("POST", path, body if body is not None else {})


def quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")
