"""The client commands against a hostile or broken server (a fake on loopback, not runbookd): the token
never leaves for another URL, nothing the server answers makes the CLI show a traceback, and nothing it
says can steer the terminal. Every failure is one line on stderr and exit 1, as for an unreachable server.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from support.ports import LOOPBACK
from support.procs import base_env
from support.runbookd import runbookd_bin

TOKEN = "secret-cli-token"


@dataclass
class Answer:
    """What the fake answers every request with: a status, reason phrase, headers and body; or ``raw``
    bytes written as they are instead of an HTTP answer; or ``stream`` bytes of body sent until the client
    goes away (no Content-Length, at most ``stream`` bytes)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    raw: bytes | None = None
    stream: int = 0


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


class FakeServer:
    """A loopback HTTP server that records every request and answers each with ``answer``."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer or Answer()
        self.seen: list[Seen] = []
        self.streamed = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                fake.seen.append(Seen(self.command, self.path, self.headers.get("Authorization")))
                a = fake.answer
                if a.raw is not None:
                    self.wfile.write(a.raw)
                    return
                self.send_response(a.status, a.reason)
                headers = dict(a.headers)
                if not a.stream:
                    headers.setdefault("Content-Length", str(len(a.body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if not a.stream:
                    self.wfile.write(a.body)
                    return
                chunk = b"[" * (1 << 20)
                try:
                    while fake.streamed < a.stream:
                        self.wfile.write(chunk)
                        fake.streamed += len(chunk)
                except OSError:  # the client stopped reading: what it should do
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    try:
        yield server
    finally:
        server.close()


def cli(server: FakeServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [runbookd_bin(), *args],
        env=base_env({"RUNBOOKD_SERVER": server.url, "RUNBOOKD_TOKEN": TOKEN}),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(res: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 1, nothing on stdout, one line on stderr (no traceback), holding every fragment."""
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.stdout == "", res.stdout[:3000]
    assert res.stderr.startswith("runbookd: ") and res.stderr.endswith("\n"), res.stderr[:3000]
    line = res.stderr[:-1]
    assert "\n" not in line and "\r" not in line, line
    assert len(line) < 1000, line
    for f in fragments:
        assert f in line, line
    return line


def no_terminal_controls(text: str) -> None:
    bad = [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F or c in "\u202e\u200b"]
    assert not bad, text


COMMANDS = [
    ["runs"],
    ["runs", "--output", "json"],
    ["show", "r1"],
    ["approve", "r1", "--yes"],
    ["reject", "r1", "--reason", "no"],
    ["trigger", "demo"],
    ["checks"],
    ["pause"],
    ["resume"],
]


# -- 1. redirects are not followed: the token never leaves for another URL ----------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("command", [["runs"], ["pause"]])
def test_a_redirect_is_an_error_naming_the_location_and_is_not_followed(
    fake: FakeServer, status: int, command: list[str]
) -> None:
    other = FakeServer(Answer(200, b'{"runs": [], "paused": true}'))
    try:
        location = f"http://localhost:{other.port}/stolen"
        fake.answer = Answer(status, b"", {"Location": location})
        line = one_line_error(cli(fake, *command), str(status), location)
        assert "redirect" in line
        assert TOKEN not in line
        assert other.seen == []  # neither the token nor the request went to the other URL
        assert [s.method for s in fake.seen] == ["POST" if command == ["pause"] else "GET"]
        assert fake.seen[0].authorization == f"Bearer {TOKEN}"
    finally:
        other.close()


def test_a_redirect_to_the_same_server_is_not_followed_either(fake: FakeServer) -> None:
    fake.answer = Answer(302, b"", {"Location": "/api/v1/resume"})
    one_line_error(cli(fake, "pause"), "302", "/api/v1/resume")
    assert [(s.method, s.path) for s in fake.seen] == [("POST", "/api/v1/pause")]


# -- 2. an answer that is not what runbookd answers: one line, exit 1 -------------------------------------------

UNEXPECTED = {
    "html": b"<html><body>502 Bad Gateway</body></html>",
    "empty": b"",
    "deep": b"[" * 200_000,
    "deep-in-object": b'{"runs": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "number-for-list": b'{"runs": 5, "checks": 5, "paused": 5, "id": 5, "steps": 5}',
    "list": b"[]",
    "empty-object": b"{}",
    "list-of-numbers": b'{"runs": [1, 2], "checks": [1], "steps": [1], "current_step": "s1"}',
    "not-utf8": b'{"runs": ["\xff\xfe"]}',
    "lone-surrogate": b'{"runs": [{"id": "\\ud800"}], "id": "\\ud800", "state": "\\ud800", "paused": 1}',
}


@pytest.mark.parametrize("body", UNEXPECTED.values(), ids=UNEXPECTED.keys())
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_answer_runbookd_would_not_give_is_one_line_not_a_traceback(
    fake: FakeServer, command: list[str], body: bytes
) -> None:
    fake.answer = Answer(200 if command[0] != "trigger" else 201, body, {"Content-Type": "application/json"})
    line = one_line_error(cli(fake, *command), "not what runbookd answers")
    no_terminal_controls(line)
    assert TOKEN not in line


def test_the_unexpected_answer_is_named_with_its_status_and_a_short_excerpt(fake: FakeServer) -> None:
    fake.answer = Answer(200, b"<html>" + b"x" * 100_000 + b"</html>")
    line = one_line_error(cli(fake, "runs"), "GET /api/v1/runs", "200", "<html>xxx")
    assert len(line) < 400, line


def test_the_first_unexpected_answer_of_approve_sends_no_approval(fake: FakeServer) -> None:
    fake.answer = Answer(200, b'{"current_step": "s1", "steps": {"s1": 1}}')
    one_line_error(cli(fake, "approve", "r1", "--yes"), "not what runbookd answers")
    assert [s.method for s in fake.seen] == ["GET"]


@pytest.mark.parametrize("status", [400, 503])
@pytest.mark.parametrize("body", [b"[" * 200_000, b'{"error": {"nested": 1}}', b"[]", b"\xff", b"{"])
def test_an_error_answer_runbookd_would_not_give_is_one_line(
    fake: FakeServer, status: int, body: bytes
) -> None:
    fake.answer = Answer(status, body)
    one_line_error(cli(fake, "show", "r1"), str(status))


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "until-close"])
def test_an_answer_too_large_is_not_read_whole(fake: FakeServer, with_length: bool) -> None:
    from daemon.cli.client import MAX_ANSWER_BYTES

    fake.answer = Answer(200, stream=4 * MAX_ANSWER_BYTES)
    if with_length:
        fake.answer.headers["Content-Length"] = str(4 * MAX_ANSWER_BYTES)
    one_line_error(cli(fake, "runs"), "not what runbookd answers", "larger than")
    # what the kernel's socket buffers took, at most, beyond what the CLI read
    assert fake.streamed < MAX_ANSWER_BYTES + (32 << 20), fake.streamed


@pytest.mark.parametrize(
    "raw",
    [
        b"SPEAK FRIEND\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n{}",
        b"",
    ],
    ids=["bad-status-line", "cut-short", "too-many-headers", "closed"],
)
def test_broken_http_is_one_line(fake: FakeServer, raw: bytes) -> None:
    fake.answer = Answer(raw=raw)
    one_line_error(cli(fake, "runs"))


def test_real_shapes_still_work(fake: FakeServer) -> None:
    fake.answer = Answer(200, b'{"paused": true}')
    res = cli(fake, "pause")
    assert res.returncode == 0 and res.stdout.startswith("paused"), res
    fake.answer = Answer(200, b'{"runs": []}')
    res = cli(fake, "runs")
    assert (res.returncode, res.stdout, res.stderr) == (0, "no runs\n", "")


# -- 3. the server's error text cannot steer the terminal --------------------------------------------------------

HOSTILE = "denied\x1b]0;pwned\x07\x1b[2K\r\nrunbookd: approved r1\u202e\u200b"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_the_error_field_is_defanged(fake: FakeServer, command: list[str]) -> None:
    fake.answer = Answer(403, json.dumps({"error": HOSTILE}).encode(), {"Content-Type": "application/json"})
    line = one_line_error(cli(fake, *command), "403", "denied", "\\u001b]0;pwned\\u0007")
    no_terminal_controls(line)


def test_the_reason_phrase_is_defanged(fake: FakeServer) -> None:
    fake.answer = Answer(502, b"not json", reason="Bad\x1b[2J\x1b[31m Gateway\x9b")
    line = one_line_error(cli(fake, "runs"), "502", "Bad\\u001b[2J")
    no_terminal_controls(line)


def test_the_location_of_a_redirect_is_defanged(fake: FakeServer) -> None:
    fake.answer = Answer(302, b"", {"Location": "http://x/\x1b[2Jstolen"})
    line = one_line_error(cli(fake, "runs"), "302", "\\u001b[2Jstolen")
    no_terminal_controls(line)


def test_a_401_without_a_token_still_hints_at_it(fake: FakeServer) -> None:
    fake.answer = Answer(401, b'{"error": "missing bearer token"}')
    res = subprocess.run(
        [runbookd_bin(), "runs"],
        env=base_env({"RUNBOOKD_SERVER": fake.url, "RUNBOOKD_TOKEN": ""}),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    one_line_error(res, "401: missing bearer token", "RUNBOOKD_TOKEN")


def test_a_value_of_the_answer_quoted_in_an_error_is_defanged(fake: FakeServer) -> None:
    fake.answer = Answer(200, json.dumps({"state": "ended\x1b[2K\rsucceeded", "steps": []}).encode())
    line = one_line_error(cli(fake, "approve", "r1", "--yes"), "run r1 is ended\\u001b[2K\\u000dsucceeded")
    no_terminal_controls(line)
