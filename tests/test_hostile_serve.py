"""Issue 11, points 1 and 5 against a real ``runbookd serve`` (console logs, the production signal path):
slow-loris clients never hold SIGTERM up, and broken bodies are one log line each, never a traceback."""

from __future__ import annotations

import os
import socket
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from support.ports import closed_port
from support.runbookd import DEFAULT_ADMIN_TOKEN, DEFAULT_WEBHOOK_TOKEN, RunbookdProcess, daemon_config

RUNBOOK = """
name: one
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
approval: {approvers: [sre]}
steps:
  - id: look
    action: notify.log
    with: {message: "{{ params.job }}"}
"""


def config(tmp_path: Path, **server: object) -> dict[str, object]:
    folder = tmp_path / "runbooks"
    folder.mkdir(exist_ok=True)
    (folder / "one.yaml").write_text(RUNBOOK)
    cfg = daemon_config(
        folder,
        prometheus=f"http://127.0.0.1:{closed_port()}",
        alertmanager=f"http://127.0.0.1:{closed_port()}",
        dry_run=True,
    )
    cfg["log"] = {"format": "console"}
    cfg["server"] = {"listen": "127.0.0.1:0", **server}
    return cfg


@contextmanager
def connection(rb: RunbookdProcess, raw: bytes) -> Iterator[socket.socket]:
    sock = socket.create_connection((rb.host, rb.port), timeout=30)
    try:
        sock.sendall(raw)
        yield sock
    finally:
        sock.close()


def answer_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split()[1]) if data else 0


WEBHOOK_HEAD = (
    b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + DEFAULT_WEBHOOK_TOKEN.encode()
)


def test_sigterm_does_not_wait_on_slow_clients(
    runbookd_factory: Callable[..., RunbookdProcess], tmp_path: Path
) -> None:
    rb = runbookd_factory(config(tmp_path, body_timeout="1h"))
    with ExitStack() as held:
        for i in range(40):  # bodies started and never finished, plain and chunked
            framing = b"Content-Length: 100000" if i % 2 else b"Transfer-Encoding: chunked"
            first = b'{"alerts": [' if i % 2 else b"10\r\n" + b"x" * 8
            held.enter_context(connection(rb, WEBHOOK_HEAD + b"\r\n" + framing + b"\r\n\r\n" + first))
        for _ in range(20):  # headers never finished
            held.enter_context(connection(rb, b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Le"))
        for _ in range(10):  # a finished request on a kept-alive connection, then silence
            sock = held.enter_context(connection(rb, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert answer_status(sock) == 200
        assert rb.get("/healthz", token="").status == 200  # and it answers everyone else meanwhile
        # Everything above still open. A generous bound, far above the drain timeout (5 s), to tell
        # "exits on its own" from "hangs until SIGKILL" (stop() SIGKILLs after it: exit code -9);
        # before the fix, aiohttp waited 60 s for the handlers stuck reading bodies that never came.
        code = rb.stop(grace=45)
    assert code == 0, rb.log_tail()
    assert "Traceback" not in rb.log_text()


def test_broken_bodies_are_one_line_each_and_never_a_traceback(
    runbookd_factory: Callable[..., RunbookdProcess], tmp_path: Path
) -> None:
    rb = runbookd_factory(config(tmp_path))
    broken = [
        b"\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\n\x1f\x8bxx",
        b"\r\nContent-Encoding: deflate\r\nContent-Length: 4\r\n\r\nabcd",
        b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n",
    ]
    for _ in range(30):
        for tail in broken:
            with connection(rb, WEBHOOK_HEAD + tail) as sock:
                assert answer_status(sock) == 400
        with connection(rb, WEBHOOK_HEAD + b"\r\nContent-Length: 100\r\n\r\n{"):
            pass  # the client goes away mid-body
    assert rb.get("/healthz", token="").status == 200
    assert rb.stop() == 0
    text = rb.log_text()
    assert "Traceback" not in text, text[-3000:]
    # one line each (aiohttp's own for the errors it meets before the handler), then rate-limited
    assert text.count("it is not valid gzip") == 10
    assert text.count("the deflate stream ends early") == 10
    assert text.count("Invalid character in chunk size") == 10
    assert text.count("closed the connection before sending the whole body") == 10


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_gzip_bomb_is_not_inflated_even_when_refused_unread(
    runbookd_factory: Callable[..., RunbookdProcess], tmp_path: Path
) -> None:
    """aiohttp inflates a compressed body whole on the event loop, even one it drains after answering
    401: ~0.5 MiB of gzip is 512 MiB, about a second of the loop each. runbookd serve inflates only what
    a handler reads, up to max_body_bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(512)) + packer.flush()
    assert len(bomb) < 1_048_576  # under the default max_body_bytes: read, not refused on its length
    rb = runbookd_factory(config(tmp_path))
    assert rb.pid is not None
    heads = {
        401: b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x",  # no token: answered unread
        413: WEBHOOK_HEAD,  # with the token: read, and refused once it inflates past the limit
    }
    before = _cpu_seconds(rb.pid)
    for status, head in heads.items():
        for _ in range(3):
            length = b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
            with connection(rb, head + b"\r\n" + length + bomb) as sock:
                assert answer_status(sock) == status
    # Six bombs: ~3 GiB to inflate had aiohttp done it (several seconds of CPU); inflating 1 MiB and
    # draining 0.5 MiB six times is milliseconds. A bound far from both.
    assert _cpu_seconds(rb.pid) - before < 1.0
    assert rb.get("/healthz", token="").status == 200
    assert rb.stop() == 0


def test_requests_aiohttp_cannot_parse_never_put_a_token_in_the_log(
    runbookd_factory: Callable[..., RunbookdProcess], tmp_path: Path
) -> None:
    """aiohttp's parser errors quote the raw request, its Authorization header too."""
    rb = runbookd_factory(config(tmp_path))
    broken = [
        # bare LF line endings (a hand-written client): the whole head is quoted
        b"POST /api/v1/alertmanager HTTP/1.1\nHost: x\nAuthorization: Bearer %s\nContent-Length: 0\n\n"
        % DEFAULT_WEBHOOK_TOKEN.encode(),
        # a control character after the token: the header line is quoted
        b"GET /api/v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\x01\r\n\r\n"
        % DEFAULT_ADMIN_TOKEN.encode(),
    ]
    for raw in broken:
        for _ in range(3):
            with connection(rb, raw) as sock:
                assert answer_status(sock) == 400
    assert rb.get("/healthz", token="").status == 200
    assert rb.stop() == 0
    text = rb.log_text()
    assert "Bad status line" in text and "Invalid header value char" in text, text[-2000:]
    assert DEFAULT_WEBHOOK_TOKEN not in text and DEFAULT_ADMIN_TOKEN not in text, text[-2000:]
