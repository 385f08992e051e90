"""A server that trickles its answer cannot hold the CLI for ever: each read has its own timeout, and the
whole request a deadline (``daemon.cli.client.DEADLINE``), after which it is given up with one clear error.
The real client against raw loopback servers that send a byte every 50 ms, well inside any read timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from support.ports import LOOPBACK

from daemon.cli.client import ApiClient, ClientError

TRICKLES = {
    "headers never end": (b"HTTP/1.1 200 OK\r\n", b"X"),
    "body shorter than its length": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
        b" ",
    ),
    "chunks never end": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n",
        b"1\r\n \r\n",
    ),
    "error body never ends": (b"HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n{", b" "),
}


class Trickler:
    """Reads a request, sends ``head``, then ``drip`` every 50 ms until the client goes away."""

    def __init__(self, head: bytes, drip: bytes) -> None:
        self.head, self.drip = head, drip
        self.listener = socket.create_server((LOOPBACK, 0))
        self.url = f"http://{LOOPBACK}:{self.listener.getsockname()[1]}"
        self.gone = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(self.head)
                while True:
                    time.sleep(0.05)
                    conn.sendall(self.drip)
            except OSError:
                self.gone.set()  # the client shut the connection down


@pytest.fixture(params=list(TRICKLES))
def trickler(request: pytest.FixtureRequest) -> Iterator[Trickler]:
    server = Trickler(*TRICKLES[request.param])
    yield server
    server.listener.close()


def test_a_trickled_answer_is_given_up_at_the_deadline(trickler: Trickler) -> None:
    client = ApiClient(trickler.url, token="t", timeout=5.0, deadline=1.0)
    caught: list[BaseException] = []

    def call() -> None:
        try:
            client.get("/api/v1/runs")
        except BaseException as exc:  # whatever it is, the assertions below say it
            caught.append(exc)

    started = time.monotonic()
    waiter = threading.Thread(target=call, daemon=True)
    waiter.start()
    waiter.join(10.0)
    took = time.monotonic() - started
    assert not waiter.is_alive(), "still reading after 10 s: no deadline"
    assert len(caught) == 1 and isinstance(caught[0], ClientError), caught
    assert "did not answer GET /api/v1/runs whole within 1 s; gave up" in str(caught[0]), caught[0]
    assert 1.0 <= took < 4.0, took  # the deadline, not the 5 s read timeout
    assert trickler.gone.wait(5.0)  # and the connection was dropped, not left open


def test_an_answer_inside_the_deadline_is_read_as_before() -> None:
    body = b'{"runs": []}'
    server = Trickler(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), b"")
    try:
        client = ApiClient(server.url, token="t", timeout=5.0, deadline=30.0)
        assert client.get("/api/v1/runs") == {"runs": []}
        # the request's deadline was cancelled with it: its timer ends now, not in 30 s
        timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
        for t in timers:
            t.join(2.0)
        assert not [t for t in timers if t.is_alive()]
    finally:
        server.listener.close()
