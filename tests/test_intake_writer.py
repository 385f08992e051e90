"""The SQLite inbox's writer process (``Store.append_inbox``, ``daemon.store.intake``): numbered in order
under concurrency, a cancelled request still leaves the file to the engine unlocked, errors are
StoreUnavailable, a writer that dies or cannot start is a 503 and is started again, and a closed store
refuses instead of hanging. The child program itself (``intake_child``) is tested in-process below."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import signal
import sqlite3
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import StoreUnavailable
from daemon.store import intake, intake_child
from daemon.store.sqlite import Store


def _rows(n: int, tag: str) -> list[tuple[float, int, str, None, None]]:
    return [(1.0, 1, f'{{"{tag}": {i}}}', None, None) for i in range(n)]


def _writer_pid(store: Store) -> int:
    assert store._intake is not None
    pid = store._intake.pid
    assert pid is not None
    return pid


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _gone(pid: int, within: float = 5.0) -> bool:
    for _ in range(int(within / 0.02)):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.02)
    return False


def _count(path: Path) -> int:
    reader = sqlite3.connect(path)
    try:
        return int(reader.execute("SELECT COUNT(*) FROM inbox").fetchone()[0])
    finally:
        reader.close()


async def test_concurrent_batches_get_consecutive_receipts_from_one_process(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    try:
        firsts = await asyncio.gather(*(store.append_inbox(_rows(3, f"b{i}")) for i in range(20)))
        assert sorted(firsts) == list(range(1, 61, 3))  # no receipt given twice, none skipped
        pid = _writer_pid(store)
        assert pid != os.getpid() and _alive(pid)
        assert await store.append_inbox(_rows(1, "c")) == 61
        assert _writer_pid(store) == pid  # the same process for every batch
        async with store.transaction() as tx:
            assert await tx.last_inbox_seq() == 61
            stored = dict(await tx.unrouted(100))
        for i, first in enumerate(firsts):  # each batch's rows in order under its own numbers
            assert [stored[first + k] for k in range(3)] == [f'{{"b{i}": {k}}}' for k in range(3)]
    finally:
        await store.close()
    assert await _gone(pid)  # close ends it


async def test_a_cancelled_append_finishes_before_the_store_is_free(tmp_path: Path) -> None:
    """The request's task is cancelled while its rows wait for the file (another connection writes):
    the cancellation ends only once the writer has committed, so the store's lock never lets the engine
    write beside the intake writer."""
    path = tmp_path / "state.db"
    store = await Store.open(path, busy_timeout=5.0)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        assert await store.append_inbox(_rows(1, "warm")) == 1  # the process is up
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock for 0.3 s
        threading.Timer(0.3, blocker.rollback).start()
        task = asyncio.create_task(store.append_inbox(_rows(50, "x")))
        await asyncio.sleep(0.05)  # handed to the writer, which waits for the lock
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _count(path) == 51  # committed before the cancellation returned
        async with store.transaction() as tx:  # and the engine's connection writes at once
            assert await tx.last_inbox_seq() == 51
            await tx.mark_routed(1, 2.0, {})
    finally:
        blocker.close()
        await store.close()


async def test_an_sqlite_error_is_store_unavailable_and_the_writer_goes_on(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    try:
        assert await store.append_inbox(_rows(1, "a")) == 1
        pid = _writer_pid(store)
        async with store.transaction() as tx:  # a schema the writer cannot write to
            await tx.db.execute("ALTER TABLE inbox RENAME TO inbox_gone")
        with pytest.raises(StoreUnavailable, match="could not store the notifications: no such table: inbox"):
            await store.append_inbox(_rows(1, "b"))
        async with store.transaction() as tx:
            await tx.db.execute("ALTER TABLE inbox_gone RENAME TO inbox")
        assert await store.append_inbox(_rows(1, "c")) == 2
        assert _writer_pid(store) == pid  # the same process, still serving
    finally:
        await store.close()


async def test_a_closed_store_refuses_without_waiting(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    assert await store.append_inbox(_rows(1, "a")) == 1
    await store.close()
    async with asyncio.timeout(2):
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.append_inbox(_rows(1, "b"))


async def test_a_cancellation_repeated_still_waits_for_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await Store.open(path, busy_timeout=5.0)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        threading.Timer(0.5, blocker.rollback).start()
        task = asyncio.create_task(store.append_inbox(_rows(5, "x")))
        await asyncio.sleep(0.2)  # the process started, read its batch and waits for the lock
        for _ in range(3):  # a shutdown cancelling again and again
            task.cancel()
            await asyncio.sleep(0.02)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _count(path) == 5
    finally:
        blocker.close()
        await store.close()


async def test_a_writer_that_cannot_start_is_a_503_and_the_next_batch_tries_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await Store.open(tmp_path / "state.db")
    try:
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
        with pytest.raises(StoreUnavailable, match="cannot start the intake writer process"):
            await store.append_inbox(_rows(1, "a"))
        monkeypatch.undo()
        async with asyncio.timeout(5):  # not waiting on a process that never ran
            assert await store.append_inbox(_rows(1, "b")) == 1
    finally:
        await store.close()


async def test_a_writer_killed_mid_batch_is_a_503_and_a_new_one_takes_over(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await Store.open(path, busy_timeout=5.0)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        assert await store.append_inbox(_rows(1, "a")) == 1
        pid = _writer_pid(store)
        blocker.execute("BEGIN IMMEDIATE")  # the next batch waits inside the writer
        task = asyncio.create_task(store.append_inbox(_rows(3, "lost")))
        await asyncio.sleep(0.1)
        os.kill(pid, signal.SIGKILL)  # the OOM killer, say
        async with asyncio.timeout(5):
            with pytest.raises(StoreUnavailable, match="intake writer process ended"):
                await task  # answered, not left hanging
        blocker.rollback()
        assert await store.append_inbox(_rows(2, "b")) == 2  # nothing of the lost batch was written
        assert _writer_pid(store) != pid
    finally:
        blocker.close()
        await store.close()


async def test_a_batch_that_cannot_be_encoded_leaves_the_writer_and_the_lock_usable(tmp_path: Path) -> None:
    """Review finding: the batch's answer was queued before its encoding failed, so the next batch's
    answer went to nobody and the store's lock was held for ever."""

    class Text(str):  # marshal refuses str subclasses
        pass

    store = await Store.open(tmp_path / "state.db")
    try:
        assert await store.append_inbox(_rows(1, "a")) == 1
        with pytest.raises(ValueError, match="unmarshallable"):
            await store.append_inbox([(1.0, 1, Text("x"), None, None)])
        async with asyncio.timeout(5):
            assert await store.append_inbox(_rows(2, "b")) == 2  # its own answer, not a stale one
            async with store.transaction() as tx:  # the lock is free
                assert await tx.last_inbox_seq() == 3
    finally:
        await store.close()


async def test_a_writer_that_stops_answering_is_killed_and_the_batch_is_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen process (or an fsync that never returns) must not hold the store's lock for ever: after
    busy_timeout plus a margin the batch is a 503, the process is killed and the next batch starts another."""
    monkeypatch.setattr(intake, "_ANSWER_MARGIN", 0.5)
    store = await Store.open(tmp_path / "state.db", busy_timeout=0.2)
    try:
        assert await store.append_inbox(_rows(1, "a")) == 1
        pid = _writer_pid(store)
        os.kill(pid, signal.SIGSTOP)
        async with asyncio.timeout(5):
            with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.7 s"):
                await store.append_inbox(_rows(1, "b"))
            assert await _gone(pid)
            assert await store.append_inbox(_rows(1, "c")) == 2
        assert _writer_pid(store) != pid
    finally:
        async with asyncio.timeout(15):
            await store.close()


async def test_close_waits_for_the_pipes_of_a_writer_already_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed writer whose end asyncio has not finished seeing (its watcher thread is late) is replaced at
    once; close() still waits for its pipes, or they outlive the loop (a ResourceWarning in a later test)."""
    monkeypatch.setattr(intake, "_ANSWER_MARGIN", 0.3)
    store = await Store.open(tmp_path / "state.db", busy_timeout=0.1)
    try:
        assert await store.append_inbox(_rows(1, "a")) == 1
        assert store._intake is not None and store._intake._child is not None
        old = store._intake._child
        late = old.connection_lost  # asyncio's last word on the old process arrives 0.5 s late
        monkeypatch.setattr(
            old, "connection_lost", lambda exc: asyncio.get_running_loop().call_later(0.5, late, exc)
        )
        os.kill(old.pid, signal.SIGSTOP)
        with pytest.raises(StoreUnavailable, match="did not answer"):
            await store.append_inbox(_rows(1, "b"))
        assert await store.append_inbox(_rows(1, "c")) == 2  # a new writer, the old one still closing
        assert not old.closed.done()
    finally:
        async with asyncio.timeout(15):
            await store.close()
    assert old.closed.done()


async def test_a_new_writer_replaces_the_finalizer_of_the_old_one(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    try:
        assert await store.append_inbox(_rows(1, "a")) == 1
        assert store._intake is not None and store._intake._finalizer is not None
        first = store._intake._finalizer
        child = store._intake._child
        assert child is not None
        os.kill(_writer_pid(store), signal.SIGKILL)
        # Until asyncio has seen the exit (its watcher thread reaps the child), the dead process looks alive.
        await asyncio.wait_for(asyncio.shield(child.closed), 5)
        assert await store.append_inbox(_rows(1, "b")) == 2
        assert not first.alive  # not one more kept per process started
        assert store._intake._finalizer.alive
    finally:
        await store.close()


async def test_ctrl_c_to_the_process_group_does_not_end_the_writer(tmp_path: Path) -> None:
    """The daemon drains on SIGINT/SIGTERM and still stores what arrives meanwhile."""
    store = await Store.open(tmp_path / "state.db")
    try:
        assert await store.append_inbox(_rows(1, "a")) == 1
        pid = _writer_pid(store)
        assert os.getsid(pid) != os.getsid(0)  # a session of its own: our group's signals never reach it
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        await asyncio.sleep(0.1)
        assert await store.append_inbox(_rows(1, "b")) == 2
        assert _writer_pid(store) == pid
    finally:
        await store.close()


async def test_the_writer_does_not_inherit_the_daemons_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNBOOKD_WEBHOOK_TOKEN", "s3cret-token")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    store = await Store.open(tmp_path / "state.db")
    try:
        assert await store.append_inbox(_rows(1, "a")) == 1
        with open(f"/proc/{_writer_pid(store)}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        assert b"RUNBOOKD_WEBHOOK_TOKEN=s3cret-token" not in environ
        assert f"TMPDIR={tmp_path}".encode() in environ  # where SQLite may put temporary files
    finally:
        await store.close()


async def test_a_store_dropped_without_close_ends_its_writer(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    assert await store.append_inbox(_rows(1, "a")) == 1
    pid = _writer_pid(store)
    assert store._intake is not None and store._intake._child is not None
    child = store._intake._child
    await store._db.close()  # the engine's connection; the intake writer is left to the collector
    del store
    gc.collect()
    assert await _gone(pid)
    # Its pipes too, before this test's loop closes (a pipe left open warns in whichever test collects it).
    await asyncio.wait_for(asyncio.shield(child.closed), 5)


def test_the_writer_serves_on_uvloop_too(tmp_path: Path) -> None:
    """``runbookd serve`` runs on uvloop, whose subprocess transports are its own classes."""
    import uvloop  # a dependency on Linux (pyproject.toml)

    async def use() -> tuple[int, int, int]:
        store = await Store.open(tmp_path / "state.db")
        try:
            first = await store.append_inbox(_rows(2, "a"))
            second = await store.append_inbox(_rows(1, "b"))
            pid = _writer_pid(store)
        finally:
            await store.close()
        return first, second, pid

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        first, second, pid = runner.run(use())
    assert (first, second) == (1, 3)
    assert not _alive(pid)


# asyncio's subprocess transport, collected after its loop closed, tries to close itself on that loop: an
# unraisable RuntimeError, expected in this scenario, and raised inside this test (it waits for it).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_store_left_open_when_its_loop_closes_does_not_leave_its_writer_running(tmp_path: Path) -> None:
    """Review finding: with the loop closed, closing the writer's stdin failed, so the process waited for
    an end of file that never came, for as long as the daemon lived. (Close a store before its loop.)"""

    async def use() -> tuple[Store, int, Any]:
        store = await Store.open(tmp_path / "state.db")
        assert await store.append_inbox(_rows(1, "a")) == 1
        await store._db.close()  # the engine's connection; the writer is left open
        assert store._intake is not None and store._intake._child is not None
        return store, _writer_pid(store), store._intake._child._transport

    # asyncio's transports, left unclosed with their loop, warn when collected: expected here, and they
    # must be collected inside this test (the child watcher's thread holds them until the child is reaped).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with asyncio.Runner() as runner:
            store, pid, transport = runner.run(use())
        del store
        gc.collect()
        for _ in range(250):
            reaped = not os.path.exists(f"/proc/{pid}")
            watching = any(t.name.startswith("waitpid-") for t in threading.enumerate())  # asyncio's
            if reaped and not watching:
                break
            time.sleep(0.02)
        assert not _alive(pid)
        _dismantle(transport)
        del transport
        gc.collect()


def _dismantle(transport: Any) -> None:
    """What asyncio would have done to a subprocess transport had its loop still run: close its pipes,
    note the exit (its watcher reaped the process but could not tell the closed loop). Collected later,
    in whichever test the collector runs, it would otherwise warn there (twice in CI: "unclosed
    transport" and Popen's "subprocess ... is still running"), failing that test."""
    for fd in (0, 1):
        pipe = transport.get_pipe_transport(fd)
        if pipe is not None and pipe._pipe is not None:
            pipe._pipe.close()
            pipe._pipe = None
    if transport._proc.returncode is None:
        transport._proc.returncode = -signal.SIGKILL
    transport._closed = True


# ------------------------------------------------------------------------------ the child program, in-process


def _serve(path: Path, batches: list[Any], *, parents: list[int] | None = None) -> list[tuple[int, Any]]:
    """Run ``intake_child.serve`` on these batches; its answers, decoded."""
    stdin = io.BytesIO(b"".join(intake_child.encode_batch(b) for b in batches))
    r, w = os.pipe()
    try:
        if parents is None:
            intake_child.serve(str(path), 1.0, stdin, w)
        else:
            calls = iter(parents)
            real = os.getppid
            os.getppid = lambda: next(calls)  # type: ignore[assignment]
            try:
                intake_child.serve(str(path), 1.0, stdin, w)
            finally:
                os.getppid = real  # type: ignore[assignment]
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    answers: list[tuple[int, Any]] = []
    while data:
        kind, value = intake_child.ANSWER.unpack_from(data)
        data = data[intake_child.ANSWER.size :]
        if kind == intake_child.FAILED:
            answers.append((kind, data[:value].decode()))
            data = data[value:]
        else:
            answers.append((kind, value))
    return answers


async def test_the_child_answers_each_batch_in_order(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")  # the schema
    await store.close()
    assert _serve(tmp_path / "state.db", [_rows(2, "a"), _rows(3, "b"), _rows(1, "c")]) == [
        (intake_child.OK, 1),
        (intake_child.OK, 3),
        (intake_child.OK, 6),
    ]


async def test_the_child_writes_nothing_once_its_daemon_is_gone(tmp_path: Path) -> None:
    """Re-parented (its daemon died after sending a batch): the batch is not written, nobody can
    acknowledge it, and a daemon started since owns the file."""
    store = await Store.open(tmp_path / "state.db")
    await store.close()
    assert _serve(tmp_path / "state.db", [_rows(1, "a"), _rows(1, "b")], parents=[100, 100, 1]) == [
        (intake_child.OK, 1)
    ]
    assert _count(tmp_path / "state.db") == 1


async def test_the_child_connection_is_configured_whole_or_opened_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never a connection without synchronous=FULL: a failure to set it is answered, and the next batch
    opens a new connection."""
    store = await Store.open(tmp_path / "state.db")
    await store.close()
    opened: list[list[str]] = []

    class FailsSynchronousOnce(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            opened[-1].append(sql)
            if sql == "PRAGMA synchronous=FULL" and len(opened) == 1:
                raise sqlite3.OperationalError("disk I/O error")
            return super().execute(sql, *args)

    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append([])
        return real_connect(*args, factory=FailsSynchronousOnce, **kwargs)

    monkeypatch.setattr(intake_child.sqlite3, "connect", connect)
    assert _serve(tmp_path / "state.db", [_rows(1, "a"), _rows(1, "b")]) == [
        (intake_child.FAILED, "disk I/O error"),
        (intake_child.OK, 1),
    ]
    assert len(opened) == 2  # the half-configured connection was not kept
    assert "PRAGMA synchronous=FULL" in opened[1]


async def test_a_batch_over_the_statement_variable_limit_is_split_in_one_commit(tmp_path: Path) -> None:
    """SQLite before 3.32 allows 999 variables a statement: 199 inbox rows. With that limit on the
    writer's connection, a 500-row batch still commits whole, in order."""
    store = await Store.open(tmp_path / "state.db")
    try:
        assert await store.append_inbox(_rows(1, "a")) == 1
        conn = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
        try:
            conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
            assert intake_child.append_batch(conn, _rows(500, "b")) == 2  # the writer's own step
        finally:
            conn.close()
        async with store.transaction() as tx:
            assert await tx.last_inbox_seq() == 501
            stored = dict(await tx.unrouted(1000))
        assert [stored[2 + k] for k in range(500)] == [f'{{"b": {k}}}' for k in range(500)]
    finally:
        await store.close()
