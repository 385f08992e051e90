"""Free loopback TCP ports.

Ports are drawn at random below the kernel's ephemeral range (so an outgoing connection's source port cannot
grab one between "free" and "bound"), checked by binding, and never handed out twice in one test session.
Callers that start a server should still retry on "address already in use" (see ``procs.ServerProcess``).
"""

from __future__ import annotations

import random
import socket
import threading

LOOPBACK = "127.0.0.1"

_LOW, _HIGH = 20000, 32000  # below Linux's default ip_local_port_range (32768-60999)
_handed_out: set[int] = set()
_lock = threading.Lock()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # no SO_REUSEADDR: a port in TIME_WAIT or LISTEN counts as taken
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """Return a loopback TCP port that is free now and was not returned before in this process."""
    with _lock:
        for _ in range(200):
            port = random.randrange(_LOW, _HIGH)
            if port in _handed_out:
                continue
            if _bindable(port):
                _handed_out.add(port)
                return port
        # fall back to the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        _handed_out.add(port)
        return port


def free_ports(n: int) -> list[int]:
    return [free_port() for _ in range(n)]


def closed_port() -> int:
    """A loopback port with nothing listening: a scrape/webhook target that must look down."""
    return free_port()


def is_listening(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
