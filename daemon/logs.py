"""structlog set-up: JSON lines in production, readable lines in a terminal; secrets masked.

Secrets are masked twice: a field whose name says it holds one (``token``, ``password``, ...) is written
as ``***``, and the values of the daemon's own secrets (``mask_values``, given by ``runbookd serve``) are
replaced by ``***`` wherever they appear in a finished line, its traceback included, whichever logger
wrote it (aiohttp's parser errors quote the raw request, ``Authorization`` header and all).

A log line must never cost the event loop much, whoever causes it: tracebacks are rendered plainly
(never with local variables, never by rich), the HTTP server's reports of broken requests are one line
without a traceback, and repeated identical warnings and errors are rate-limited.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import structlog

_SECRET_WORDS = ("token", "secret", "password", "authorization", "credential", "signature")


@functools.lru_cache(maxsize=1024)
def _is_secret(key: str) -> bool:
    """Whether a log field of this name holds a secret (its name says so); the names are few."""
    return key != "event" and any(w in key.lower() for w in _SECRET_WORDS)


def _mask_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if _is_secret(key):
            event[key] = "***"
    return event


_SECRET_VALUES: tuple[str, ...] = ()
"""The daemon's secrets (``mask_values``), longest first: masked wherever they appear in a line."""
_MIN_MASKED = 6
"""Shorter values are not masked: they would mask ordinary words (and are no secret worth the name)."""


def mask_values(values: Iterable[str]) -> None:
    """Mask these values (the daemon's tokens and passwords) in every line logged from now on."""
    global _SECRET_VALUES
    _SECRET_VALUES = tuple(sorted({v for v in values if len(v) >= _MIN_MASKED}, key=len, reverse=True))


def masked(text: str) -> str:
    for value in _SECRET_VALUES:
        if value in text:
            text = text.replace(value, "***")
    return text


def _masking(render: Callable[..., Any]) -> Callable[..., Any]:
    """A structlog renderer whose finished line has the secret values masked."""

    def render_masked(logger: Any, name: str, event: MutableMapping[str, Any]) -> Any:
        line = render(logger, name, event)
        return masked(line) if _SECRET_VALUES and isinstance(line, str) else line

    return render_masked


class _MaskingFormatter(logging.Formatter):
    """The standard library's lines (aiohttp, botocore, ...), their tracebacks included, masked."""

    def format(self, record: logging.LogRecord) -> str:
        return masked(super().format(record))


_RAW_BYTES = re.compile(r"(?::\s*|\s+)\"?(?:bytearray\()?b['\"].*", re.DOTALL)
"""Where aiohttp's parser errors start quoting the raw request (``...: b'Authorization: Bearer ...'``)."""


def client_error_text(exc: BaseException) -> str:
    """One line for a broken request: what was wrong, without the request's own bytes (which may hold
    its credentials, and make every line unique to the rate limit)."""
    text = _RAW_BYTES.sub("", str(exc))
    return " ".join(text.split())[:200]


class RateLimiter:
    """At most ``burst`` lines per ``per`` seconds for each kind of line; the next line let through
    after a pause says how many were dropped (``suppressed=N``).

    A kind is what makes two lines "the same". A structlog event that reports an error (an ``error``
    field or a traceback) is of the kind of its level, event name and error, whatever else it says
    (the path, the client), so a flood of one failure is one kind; any other event only repeats when
    all of it repeats. A standard library record's kind is its logger, level and message template."""

    def __init__(
        self,
        burst: int = 10,
        per: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 1024,
    ) -> None:
        self.burst, self.per, self._clock, self._max_kinds = burst, per, clock, max_kinds
        self._seen: OrderedDict[tuple[object, ...], list[float]] = OrderedDict()
        """kind -> [window start, lines in this window, lines dropped since the last one let through]"""

    def allow(self, kind: tuple[object, ...]) -> int | None:
        """None to drop this line; otherwise how many of its kind were dropped before it."""
        now = self._clock()
        entry = self._seen.get(kind)
        if entry is None or now - entry[0] >= self.per:
            dropped = int(entry[2]) if entry is not None else 0
            self._seen[kind] = [now, 1, 0]
            self._seen.move_to_end(kind)
            if len(self._seen) > self._max_kinds:
                self._seen.popitem(last=False)
            return dropped
        if entry[1] < self.burst:
            entry[1] += 1
            dropped, entry[2] = int(entry[2]), 0
            return dropped
        entry[2] += 1
        return None

    def __call__(
        self, _logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """structlog processor: rate-limits warnings and worse (info lines are the daemon's own story)."""
        if method not in ("warning", "warn", "error", "exception", "critical"):
            return event
        if "error" in event or "exc_info" in event:
            kind: tuple[object, ...] = (method, event.get("event"), str(event.get("error", ""))[:200])
        else:
            kind = (method, *sorted((k, repr(v)[:200]) for k, v in event.items()))
        dropped = self.allow(kind)
        if dropped is None:
            raise structlog.DropEvent
        if dropped:
            event["suppressed"] = dropped
        return event


_CLIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def _is_client_error(exc: BaseException | None) -> bool:
    # aiohttp is heavy; imported only where logged. RequestPayloadError: aiohttp reading what is left of
    # a broken body after the handler answered ("Unhandled exception" otherwise, with a traceback).
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.web_protocol import RequestPayloadError

    return isinstance(exc, (HttpProcessingError, RequestPayloadError, *_CLIENT_ERRORS))


class ServerNoiseFilter(logging.Filter):
    """For aiohttp's server loggers: a broken request (bad framing, bad encoding, a client gone) is one
    line without a traceback; identical lines are rate-limited; real failures keep their traceback."""

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self._limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _is_client_error(exc):
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {client_error_text(exc)}"
            record.args, record.exc_info, record.exc_text = None, None, None
        if record.levelno < logging.WARNING:
            return True
        dropped = self._limiter.allow((record.name, record.levelno, str(record.msg)[:200]))
        if dropped is None:
            return False
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} more like this suppressed)"
            record.args = None
        return True


def renderer(fmt: str) -> Any:
    """JSON lines, or readable lines whose tracebacks are plain text: never rich, never with locals
    (rendering a traceback's locals took ~0.3 s of event loop per error)."""
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)


def configure(fmt: str = "json", level: str = "info") -> None:
    limiter = RateLimiter()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            limiter,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _mask_secrets,
            structlog.processors.format_exc_info
            if fmt == "json"
            else structlog.processors.StackInfoRenderer(),
            _masking(renderer(fmt)),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=getattr(logging, level.upper()), stream=sys.stderr, format="%(name)s %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_MaskingFormatter("%(name)s %(message)s"))
    for noisy in ("aiohttp.access", "kubernetes_asyncio", "botocore", "aiobotocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    noise = ServerNoiseFilter(RateLimiter())
    for name in ("aiohttp.server", "aiohttp.web"):
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, ServerNoiseFilter)]:
            logger.removeFilter(old)
        logger.addFilter(noise)
