"""Audit finding: a client that opens a connection and trickles its headers (or sends none) was held for
aiohttp's default keep-alive of an hour; `server.idle_timeout` closes it (default 75 s)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from support.ports import closed_port
from support.runbookd import RunbookdProcess, daemon_config


def _closed_by_server(sock: socket.socket) -> bool:
    """Wait (bounded by the socket timeout) for the server to close; True if it did."""
    try:
        return sock.recv(4096) == b""
    except TimeoutError:
        return False


def test_a_connection_that_never_finishes_its_headers_is_closed(
    runbookd_factory: Callable[..., RunbookdProcess], tmp_path: Path
) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    cfg = daemon_config(
        folder,
        prometheus=f"http://127.0.0.1:{closed_port()}",
        alertmanager=f"http://127.0.0.1:{closed_port()}",
        dry_run=True,
    )
    cfg["server"] = {"listen": "127.0.0.1:0", "idle_timeout": "1s"}
    rb = runbookd_factory(cfg)
    partial = socket.create_connection((rb.host, rb.port), timeout=60)
    silent = socket.create_connection((rb.host, rb.port), timeout=60)
    try:
        partial.sendall(b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert _closed_by_server(partial)
        assert _closed_by_server(silent)
    finally:
        partial.close()
        silent.close()
    assert rb.get("/healthz", token="").status == 200
