"""The SQLite inbox's writer thread (``Store.append_inbox``): numbered in order under concurrency, a
cancelled request still leaves the file to the engine unlocked, errors are StoreUnavailable, and a closed
store refuses instead of hanging."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from pathlib import Path

import pytest

from daemon.errors import StoreUnavailable
from daemon.store import sqlite as sqlite_store
from daemon.store.sqlite import Store


def _rows(n: int, tag: str) -> list[tuple[float, int, str, None, None]]:
    return [(1.0, 1, f'{{"{tag}": {i}}}', None, None) for i in range(n)]


def _writers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "runbookd-intake"}


async def test_concurrent_batches_get_consecutive_receipts_in_one_thread(tmp_path: Path) -> None:
    before = _writers()  # other tests' stores may still have theirs
    store = await Store.open(tmp_path / "state.db")
    try:
        firsts = await asyncio.gather(*(store.append_inbox(_rows(3, f"b{i}")) for i in range(20)))
        assert sorted(firsts) == list(range(1, 61, 3))  # no receipt given twice, none skipped
        assert len(_writers() - before) == 1
        async with store.transaction() as tx:
            assert await tx.last_inbox_seq() == 60
            stored = dict(await tx.unrouted(100))
        for i, first in enumerate(firsts):  # each batch's rows in order under its own numbers
            assert [stored[first + k] for k in range(3)] == [f'{{"b{i}": {k}}}' for k in range(3)]
    finally:
        await store.close()
    assert not _writers() - before  # close ends it


async def test_a_cancelled_append_finishes_before_the_store_is_free(tmp_path: Path) -> None:
    """The request's task is cancelled while its rows wait for the file (another connection writes):
    the cancellation ends only once the thread has committed, so the store's lock never lets the engine
    write beside the intake thread."""
    path = tmp_path / "state.db"
    store = await Store.open(path, busy_timeout=5.0)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock for 0.3 s
        threading.Timer(0.3, blocker.rollback).start()
        task = asyncio.create_task(store.append_inbox(_rows(50, "x")))
        await asyncio.sleep(0.05)  # handed to the thread, which waits for the lock
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        reader = sqlite3.connect(path)
        try:  # committed before the cancellation returned
            assert reader.execute("SELECT COUNT(*) FROM inbox").fetchone() == (50,)
        finally:
            reader.close()
        async with store.transaction() as tx:  # and the engine's connection writes at once
            assert await tx.last_inbox_seq() == 50
            await tx.mark_routed(1, 2.0, {})
    finally:
        blocker.close()
        await store.close()


async def test_an_sqlite_error_is_store_unavailable_and_the_writer_goes_on(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    try:
        assert await store.append_inbox(_rows(1, "a")) == 1
        async with store.transaction() as tx:  # a schema the writer cannot write to
            await tx.db.execute("ALTER TABLE inbox RENAME TO inbox_gone")
        with pytest.raises(StoreUnavailable, match="could not store"):
            await store.append_inbox(_rows(1, "b"))
        async with store.transaction() as tx:
            await tx.db.execute("ALTER TABLE inbox_gone RENAME TO inbox")
        assert await store.append_inbox(_rows(1, "c")) == 2  # the same thread, still serving
    finally:
        await store.close()


async def test_a_closed_store_refuses_without_waiting(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    assert await store.append_inbox(_rows(1, "a")) == 1
    await store.close()
    async with asyncio.timeout(2):
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.append_inbox(_rows(1, "b"))


async def test_a_cancellation_repeated_still_waits_for_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await Store.open(path, busy_timeout=5.0)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, blocker.rollback).start()
        task = asyncio.create_task(store.append_inbox(_rows(5, "x")))
        await asyncio.sleep(0.05)
        for _ in range(3):  # a shutdown cancelling again and again
            task.cancel()
            await asyncio.sleep(0.02)
        with pytest.raises(asyncio.CancelledError):
            await task
        reader = sqlite3.connect(path)
        try:
            assert reader.execute("SELECT COUNT(*) FROM inbox").fetchone() == (5,)
        finally:
            reader.close()
    finally:
        blocker.close()
        await store.close()


async def test_a_thread_that_cannot_start_is_a_503_and_the_next_batch_tries_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await Store.open(tmp_path / "state.db")
    try:

        def refuse(self: threading.Thread) -> None:
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(threading.Thread, "start", refuse)
        with pytest.raises(StoreUnavailable, match="cannot start the intake thread"):
            await store.append_inbox(_rows(1, "a"))
        monkeypatch.undo()
        async with asyncio.timeout(5):  # not waiting on a thread that never ran
            assert await store.append_inbox(_rows(1, "b")) == 1
    finally:
        await store.close()


async def test_a_batch_over_the_statement_variable_limit_is_split_in_one_commit(tmp_path: Path) -> None:
    """SQLite before 3.32 allows 999 variables a statement: 199 inbox rows. With that limit on the
    writer's connection, a 500-row batch still commits whole, in order."""
    store = await Store.open(tmp_path / "state.db")
    try:
        assert await store.append_inbox(_rows(1, "a")) == 1
        conn = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
        try:
            conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
            assert sqlite_store._append_batch(conn, _rows(500, "b")) == 2  # the intake thread's own step
        finally:
            conn.close()
        async with store.transaction() as tx:
            assert await tx.last_inbox_seq() == 501
            stored = dict(await tx.unrouted(1000))
        assert [stored[2 + k] for k in range(500)] == [f'{{"b": {k}}}' for k in range(500)]
    finally:
        await store.close()


async def test_a_store_dropped_without_close_ends_its_thread(tmp_path: Path) -> None:
    before = _writers()
    store = await Store.open(tmp_path / "state.db")
    assert await store.append_inbox(_rows(1, "a")) == 1
    (mine,) = _writers() - before
    await store._db.close()  # the engine's connection; the intake writer is left to the collector
    del store
    gc.collect()
    await asyncio.to_thread(mine.join, 5.0)
    assert not mine.is_alive()
