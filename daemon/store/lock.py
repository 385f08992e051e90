"""One writer per SQLite state file: ``serve`` holds an exclusive ``flock`` on ``<state>.lock`` for its life.

The kernel releases the lock when the process ends in any way (``kill -9`` included), so a stale lock file
never blocks a restart; the file's content (pid, host, since) only names the holder for the message a second
``serve`` prints. Read-only tools never take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from daemon.errors import RunbookdError


class StateLocked(RunbookdError):
    """Another process serves this state file: refuse to start (exit 2), never share it."""


def lock_path(state: Path) -> Path:
    """Beside the file the path finally names: a symlinked or ``..`` spelling of the same state file gets
    the same lock, so it cannot start a second writer."""
    real = state.resolve()
    return real.with_name(real.name + ".lock")


@dataclass
class StateLock:
    path: Path
    fd: int

    @classmethod
    def acquire(cls, state: Path) -> StateLock:
        """Take the lock or raise StateLocked naming the holder. Keep the object for the process's life."""
        path = lock_path(state)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StateLocked(
                f"state file {state} is in use by another runbookd serve ({holder}); "
                "one writer at a time: stop it first, or use PostgreSQL (state.url) to run replicas"
            ) from None
        except OSError:
            os.close(fd)
            raise
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        return cls(path, fd)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


def _read_holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or not data:
        return "holder unknown"
    return f"pid {data.get('pid', '?')} on host {data.get('host', '?')} since {data.get('since', '?')}"
