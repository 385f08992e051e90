"""The SQLite inbox's writer process: the program ``daemon.store.intake`` starts beside the daemon.

It reads batches of inbox rows on stdin, inserts and commits (fsyncs) each batch in one transaction on a
connection of its own, and answers each with the first receipt SQLite gave, in order, on stdout. It
exits when stdin ends (the daemon closed it or is gone).

It is a process, not a thread, for one reason: a thread has to take the GIL back from the busy event
loop to hand its answer over, several times per batch, and on a 2-vCPU node that wait was most of the
webhook's latency (bench/README.md, "The inbox writer as a process"). This file is run by path with
``python -I -S`` and imports the standard library only; the daemon imports it for the wire format.

Wire format, both ways little-endian:
  batch   <I length> + ``marshal`` of a list of inbox rows (tuples of float, int, str and None only)
  answer  <B kind><q value>: kind OK, value = the first receipt; or kind FAILED, value = the length of
          the UTF-8 message that follows
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import os
import signal
import sqlite3
import struct
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

BATCH_HEAD = struct.Struct("<I")
ANSWER = struct.Struct("<Bq")
OK, FAILED = 0, 1
INBOX_COLUMNS = 5
"""Values per row of ``inbox_insert``."""


@functools.lru_cache(maxsize=512)
def inbox_insert(rows: int) -> str:
    """One INSERT of ``rows`` inbox rows, numbered by SQLite: each gets the largest receipt so far + 1
    (the rowid rule; ``prune_inbox`` keeps the newest row, so no number is given twice)."""
    return (
        "INSERT INTO inbox (received_at, alerts, payload, routed_at, result) VALUES "  # noqa: S608
        + ", ".join(["(?,?,?,?,?)"] * rows)
    )


def encode_batch(rows: Sequence[tuple[Any, ...]]) -> bytes:
    data = marshal.dumps(list(rows))
    return BATCH_HEAD.pack(len(data)) + data


def open_intake(path: str, busy_timeout: float) -> sqlite3.Connection:
    """The writer's connection, configured whole or not at all."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        conn.execute("PRAGMA synchronous=FULL")  # journal_mode=WAL is the file's: set at open
    except BaseException:
        conn.close()
        raise
    return conn


def append_batch(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert ``rows`` in one transaction (committed and fsynced on return); the first receipt.

    One statement in autocommit when it fits; a batch over the statement's variable limit (999 before
    SQLite 3.32) is split inside one transaction."""
    per = max(1, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // INBOX_COLUMNS)
    if len(rows) <= per:
        return _insert(conn, rows)
    conn.execute("BEGIN IMMEDIATE")
    try:
        firsts = [_insert(conn, rows[i : i + per]) for i in range(0, len(rows), per)]
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return firsts[0]


def _insert(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    last = conn.execute(inbox_insert(len(rows)), [v for row in rows for v in row]).lastrowid
    return int(last or 0) - len(rows) + 1


def serve(path: str, busy_timeout: float, stdin: BinaryIO, out: int) -> None:
    """Answer batches until stdin ends."""
    parent = os.getppid()
    conn: sqlite3.Connection | None = None
    try:
        while head := stdin.read(BATCH_HEAD.size):
            if len(head) < BATCH_HEAD.size:
                return
            (size,) = BATCH_HEAD.unpack(head)
            body = stdin.read(size)
            if len(body) < size or os.getppid() != parent:
                return  # the daemon is gone: nobody can acknowledge this batch, so it is not written
            try:
                rows = marshal.loads(body)  # noqa: S302 - written by the daemon that started us, on our stdin
                if conn is None:  # opened here, so that a failure to open is answered like any other
                    conn = open_intake(path, busy_timeout)
                first = append_batch(conn, rows)
            except Exception as exc:  # answered: the daemon turns it into a 503 (Alertmanager retries)
                message = f"{exc}".encode("utf-8", "replace")[:2000]
                _write_all(out, ANSWER.pack(FAILED, len(message)) + message)
            else:
                _write_all(out, ANSWER.pack(OK, first))
    finally:
        if conn is not None:
            conn.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(argv: list[str]) -> int:
    # The daemon decides when this process ends (by closing stdin, after its last batch). It starts us in
    # a session of our own, so its process group's Ctrl-C or SIGTERM does not reach us; a signal sent to us
    # some other way (a session-wide kill, say) must not end us while the daemon drains either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, busy_timeout = argv[1], float(argv[2])
    with os.fdopen(0, "rb", buffering=1 << 16, closefd=False) as stdin:
        serve(path, busy_timeout, stdin, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
