"""One writer per SQLite state file: ``serve`` holds an exclusive ``flock`` on ``<state>.lock`` for its life,
and an open-file-description lock on the state file itself, so that the lock follows the file, not its name.

The kernel releases both when the process ends in any way (``kill -9`` included), so a stale lock file
never blocks a restart; the lock file's content (pid, host, since) only names the holder for the message a
second ``serve`` prints. Read-only tools never take it.

Why two: the ``.lock`` file sits beside the name the path finally resolves to, so a symlinked or ``..``
spelling meets it, but a hard link is another name of the same file with a ``.lock`` of its own. The
second lock is taken on the database file's inode, which every name shares: a Linux OFD lock
(``F_OFD_SETLK``) on one byte far above anything SQLite locks. SQLite's unix VFS takes POSIX locks on the
database file only at PENDING_BYTE (0x40000000), RESERVED_BYTE (the next) and the SHARED range (the 510
bytes after that), and in WAL mode on the ``-shm`` file; OFD and POSIX locks conflict only where their
ranges overlap, so neither ``serve``'s own connection nor the intake writer's child process ever meets
this one. Unlike a POSIX lock (``fcntl.lockf``), an OFD lock is not dropped when the process closes some
other descriptor of the file, which SQLite does whenever a connection closes. A lock beyond the end of
the file does not extend it. The holder's record is also kept in an extended attribute of the database
file (``user.runbookd.holder``), which every name shares too, for the message a second ``serve`` started
on a hard link prints.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import struct
import sys
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from daemon.errors import RunbookdError

log = structlog.get_logger("runbookd.store")

INODE_LOCK_BYTE = 1 << 62
"""The byte of the state file the OFD lock covers: far above SQLite's lock bytes (0x40000000 to
0x400001FF) and above the largest database SQLite can write (about 2**48 bytes); never read or written."""
HOLDER_XATTR = "user.runbookd.holder"
_FLOCK = struct.Struct("@hhqqi0q")  # Linux's struct flock: l_type, l_whence, l_start, l_len, l_pid (+ pad)
_DB_MODE = 0o644  # what SQLite's unix VFS creates a database with (SQLITE_DEFAULT_FILE_PERMISSIONS)


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
    db_fd: int = -1
    """The state file's descriptor holding the OFD lock (-1: none, see ``_lock_inode``)."""

    @classmethod
    def acquire(cls, state: Path) -> StateLock:
        """Take the lock or raise StateLocked naming the holder. Keep the object for the process's life:
        release it only once every SQLite connection of this process to the file is closed (closing its
        descriptor of the file drops the process's POSIX locks on it, SQLite's included)."""
        path = lock_path(state)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise StateLocked(_refusal(state, holder)) from None
        except OSError:
            os.close(fd)
            raise
        real = state.resolve()
        try:
            db_fd = _lock_inode(real)
        except StateLocked as exc:
            os.close(fd)
            raise StateLocked(_refusal(state, str(exc))) from None
        except BaseException:
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
        if db_fd >= 0:  # best effort: only the message of a second serve on a hard link reads it
            with suppress(OSError):
                os.setxattr(db_fd, HOLDER_XATTR, json.dumps({**record, "state": str(real)}).encode())
        return cls(path, fd, db_fd)

    def release(self) -> None:
        for fd in (self.db_fd, self.fd):
            if fd >= 0:
                os.close(fd)  # closing the descriptor drops its flock / OFD lock
        self.fd = self.db_fd = -1


def _refusal(state: Path, holder: str) -> str:
    return (
        f"state file {state} is in use by another runbookd serve ({holder}); "
        "one writer at a time: stop it first, or use PostgreSQL (state.url) to run replicas"
    )


def _lock_inode(real: Path) -> int:
    """Open the state file (an empty one if there is none yet: SQLite takes a 0-byte file for an empty
    database) and take the OFD write lock on ``INODE_LOCK_BYTE``; return its descriptor, or -1 where that
    cannot be done, leaving the ``.lock`` file's flock alone as before. Raises StateLocked (with the holder
    as its message) if another open of the file holds it."""
    if sys.platform != "linux" or not hasattr(fcntl, "F_OFD_SETLK"):
        log.warning("store.state_lock_by_name_only", reason="no OFD locks on this platform")
        return -1
    try:
        db_fd = os.open(real, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _DB_MODE)
    except OSError:  # no write access (or not a file): SQLite cannot write it either and says so at open
        return -1
    request = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, INODE_LOCK_BYTE, 1, 0)
    try:
        fcntl.fcntl(db_fd, fcntl.F_OFD_SETLK, request)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            try:
                holder = _describe(_parse(os.getxattr(db_fd, HOLDER_XATTR)))
            except OSError:  # a file system without user xattrs
                holder = "holder unknown: it uses another name of this file, a hard link"
            os.close(db_fd)
            raise StateLocked(holder) from None
        os.close(db_fd)  # e.g. EINVAL (a kernel before 3.15), ENOLCK (a network file system without locks)
        log.warning(
            "store.state_lock_by_name_only",
            reason=f"the state file cannot take an OFD lock: {exc.strerror}",
            limit="a hard link to the state file gets past the lock",
        )
        return -1
    return db_fd


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        return _parse(os.pread(fd, 4096, 0))
    except OSError:
        return {}


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode() or "{}")
    except ValueError:  # UnicodeDecodeError included
        return {}
    return data if isinstance(data, dict) else {}


def _describe(data: dict[str, Any]) -> str:
    if not data:
        return "holder unknown"
    text = f"pid {data.get('pid', '?')} on host {data.get('host', '?')} since {data.get('since', '?')}"
    if data.get("state"):
        text += f", through the name {data['state']}"
    return text
