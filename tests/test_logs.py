"""The log never costs the loop much, whoever causes it (issue 11, point 1): tracebacks are plain (no
locals, no rich), broken requests reported by aiohttp are one line, identical lines are rate-limited."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
import structlog
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, ContentEncodingError

from daemon import logs


@pytest.fixture
def configured() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    for name in ("aiohttp.server", "aiohttp.web"):
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, logs.ServerNoiseFilter)]:
            logger.removeFilter(f)


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limiter_lets_a_burst_through_then_counts_what_it_dropped() -> None:
    ticks = Ticks()
    limiter = logs.RateLimiter(burst=3, per=10.0, clock=ticks)
    a, b = ("http", "warning", "bad_body"), ("http", "warning", "other")
    assert [limiter.allow(a) for _ in range(5)] == [0, 0, 0, None, None]
    assert limiter.allow(b) == 0  # another kind has its own budget
    ticks.now += 9.9
    assert limiter.allow(a) is None
    ticks.now += 0.2  # a new window: the first line says how many were dropped
    assert limiter.allow(a) == 3
    assert limiter.allow(a) == 0


def test_the_rate_limiter_forgets_the_oldest_kinds_beyond_its_bound() -> None:
    limiter = logs.RateLimiter(burst=1, per=10.0, clock=Ticks(), max_kinds=2)
    for kind in ("a", "b", "c"):
        assert limiter.allow((kind,)) == 0
    assert limiter.allow(("a",)) == 0  # forgotten, so counted afresh
    assert limiter.allow(("c",)) is None


def raise_with_a_local() -> None:
    local_secret = "LOCAL-VALUE-4711"
    raise RuntimeError(f"boom {len(local_secret)}")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_tracebacks_never_render_locals(
    configured: None, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    logs.configure(fmt)
    log = structlog.get_logger("runbookd.test")
    try:
        raise_with_a_local()
    except RuntimeError:
        log.exception("test.failed")
    err = capsys.readouterr().err
    assert "raise_with_a_local" in err and "boom 16" in err  # the traceback is there ...
    assert "LOCAL-VALUE-4711" not in err  # ... without the frame's locals
    assert "\u2500" not in err and "\u2502" not in err  # nor rich's box drawing


def test_identical_warnings_are_rate_limited(configured: None, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json")
    log = structlog.get_logger("runbookd.test")
    for i in range(50):  # one failure, whatever the path: one kind
        log.warning("http.bad_body", path=f"/api/v1/runs/{i}", error="cannot read the body")
    log.warning("http.bad_body", path="/api/v1/runs", error="another error")
    for i in range(50):  # no error: only lines identical in everything are one kind
        log.warning("engine.paused", by=f"user-{i % 25}")
    for _ in range(50):
        log.info("routine.line")
    lines = capsys.readouterr().err.splitlines()
    assert sum("cannot read the body" in line for line in lines) == 10
    assert sum("another error" in line for line in lines) == 1
    assert sum("engine.paused" in line for line in lines) == 50
    assert sum("routine.line" in line for line in lines) == 50  # info is not limited


def test_aiohttp_reports_of_broken_requests_are_one_line(configured: None) -> None:
    logs.configure("json")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    server = logging.getLogger("aiohttp.server")
    keep = Keep()
    server.addHandler(keep)
    try:
        for _ in range(30):
            try:
                raise ContentEncodingError("Can not decode content-encoding: gzip")
            except ContentEncodingError:
                server.exception("Error handling request from %s", "127.0.0.1")
        try:
            raise KeyError("a real bug")
        except KeyError:
            server.exception("Error handling request from %s", "127.0.0.1")
    finally:
        server.removeHandler(keep)
    broken = [r for r in seen if "ContentEncodingError" in r.getMessage()]
    assert len(broken) == 10  # rate-limited
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in broken)
    assert "127.0.0.1" in broken[0].getMessage() and "gzip" in broken[0].getMessage()
    (bug,) = [r for r in seen if r not in broken]
    assert bug.exc_info is not None  # a real failure keeps its traceback


@pytest.fixture
def masking() -> Iterator[None]:
    yield
    logs.mask_values([])


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_the_daemons_secrets_are_masked_in_every_line_whoever_logs_it(
    fmt: str, configured: None, masking: None, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "s3cret-webhook-token"
    logs.configure(fmt, "info")
    logs.mask_values([token, "tiny"])  # "tiny" is too short to mask: it would mask ordinary words
    structlog.get_logger("runbookd").warning("probe.failed", error=f"GET https://u:{token}@h/ refused")
    try:
        raise RuntimeError(f"connect with {token} failed")
    except RuntimeError:
        structlog.get_logger("runbookd").exception("probe.crashed")
        record = logging.LogRecord(
            "botocore", logging.ERROR, __file__, 1, "retrying %s", (token,), sys.exc_info()
        )
    structlog.get_logger("runbookd").info("a tiny word")
    err = capsys.readouterr().err
    assert token not in err, err
    assert err.count("***") == 2, err  # the error field and the traceback's message
    assert "a tiny word" in err
    # the standard library's lines (aiohttp, botocore, kubernetes_asyncio), their tracebacks too
    handlers = logging.getLogger().handlers
    assert handlers and all(isinstance(h.formatter, logs._MaskingFormatter) for h in handlers)
    line = handlers[0].format(record)
    assert token not in line and line.count("***") == 2, line


def test_a_broken_request_is_logged_without_its_raw_bytes(configured: None, masking: None) -> None:
    # aiohttp's parser errors quote the raw request: its Authorization header too (and every line then
    # differs, so the rate limit could not group them)
    bad_lf = BadStatusLine(b"POST /api/v1/alertmanager HTTP/1.1\nAuthorization: Bearer tok-1\n\n")
    bad_char = BadHttpMessage("Invalid header value char: b'Authorization: Bearer tok-2\\x01'")
    for exc in (bad_lf, bad_char):
        text = logs.client_error_text(exc)
        assert "Bearer" not in text and "tok-" not in text, text
        assert text.startswith("400, message:"), text
    assert logs.client_error_text(ContentEncodingError("deflate")) == "400, message: deflate"


def test_a_request_line_too_long_is_logged_without_it() -> None:
    # aiohttp quotes an over-long URL as bytearray(b'...'): each line then differs (no rate limit)
    exc = BadHttpMessage("Status line is too long: bytearray(b'GET /x?token=abc HTTP/1.1')")
    assert logs.client_error_text(exc) == "400, message: Status line is too long"
