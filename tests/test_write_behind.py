"""A SQLite transaction sends its writes to aiosqlite's thread with the next read or with COMMIT
(``daemon.store.sqlite._WriteBehind``): fewer hand-offs, the same transaction. Checked here: the
hand-off count, order (a read sees the writes before it), an error of a queued write rolls the whole
transaction back even when the caller swallows it, a BEGIN that cannot get the lock runs nothing, the
queue is bounded, savepoints and cancellation still undo what they should."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from daemon.errors import StoreUnavailable
from daemon.store import sqlite as sqlite_store
from daemon.store.sqlite import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "state.db", busy_timeout=0.2)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def handoffs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each function the store hands to aiosqlite's thread, in order."""
    seen: list[str] = []
    real = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return seen


def _kv(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return {k: v for k, v in conn.execute("SELECT key, value FROM kv WHERE namespace = 't'")}


async def test_writes_travel_with_the_next_read_and_the_commit(
    store: Store, tmp_path: Path, handoffs: list[str]
) -> None:
    async with store.transaction() as tx:
        for i in range(10):
            await tx.kv_put("t", f"k{i}", {"i": i})
        assert handoffs == []  # ten writes (and BEGIN), nothing sent yet
        assert await tx.kv_get("t", "k9") == {"i": 9}  # the read sees the writes queued before it
        assert len(handoffs) == 1
        await tx.kv_put("t", "k0", {"i": "again"})
    assert len(handoffs) == 2  # the last write went with COMMIT
    assert _kv(tmp_path / "state.db")["k0"] == '{"i": "again"}'
    assert len(_kv(tmp_path / "state.db")) == 10


async def test_a_failing_queued_write_rolls_back_even_when_swallowed(
    store: Store, tmp_path: Path, handoffs: list[str]
) -> None:
    async with store.transaction() as tx:
        await tx.kv_put("t", "kept-before", {"v": 1})
    with sqlite3.connect(
        tmp_path / "state.db"
    ) as conn:  # SQLite itself refuses one key, as a full disk would
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON kv WHEN NEW.key = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    caught: list[BaseException] = []
    with pytest.raises(StoreUnavailable, match="disk is full"):
        async with store.transaction() as tx:
            await tx.kv_put("t", "a", {"v": 1})
            await tx.kv_put("t", "bad", {"v": 2})
            await tx.kv_put("t", "b", {"v": 3})
            try:
                await tx.kv_get("t", "a")  # sends the queue: the error is raised here
            except sqlite3.Error as exc:
                caught.append(exc)
            sent = len(handoffs)
            await tx.kv_put("t", "after", {"v": 4})  # a caller that goes on as if nothing happened
            with pytest.raises(sqlite3.Error):
                await tx.kv_get("t", "after")  # every later read raises it again, and sends nothing
            assert len(handoffs) == sent
    assert caught and "disk is full" in str(caught[0])
    assert _kv(tmp_path / "state.db") == {"kept-before": '{"v": 1}'}  # not a, not b, not after


async def test_a_begin_that_cannot_lock_runs_nothing(store: Store, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the file (busy_timeout is 0.2 s)
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            async with store.transaction() as tx:
                await tx.kv_put("t", "x", {"v": 1})
                await tx.kv_get("t", "x")
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with store.transaction() as tx:  # the store works again, and nothing of the refused one is there
        assert await tx.kv_get("t", "x") is None


async def test_a_body_error_after_writes_were_sent_rolls_them_back(store: Store, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="late"):
        async with store.transaction() as tx:
            await tx.kv_put("t", "x", {"v": 1})
            assert await tx.kv_get("t", "x") == {"v": 1}  # sent: SQLite holds it, uncommitted
            await tx.kv_put("t", "y", {"v": 2})  # queued, never sent
            raise RuntimeError("late")
    assert _kv(tmp_path / "state.db") == {}
    async with store.transaction() as tx:  # rolled back, not left open: the next transaction begins
        await tx.kv_put("t", "z", {"v": 3})
    assert _kv(tmp_path / "state.db") == {"z": '{"v": 3}'}


async def test_a_savepoint_undoes_only_its_own_writes(store: Store, tmp_path: Path) -> None:
    async with store.transaction() as tx:
        await tx.kv_put("t", "outer", {"v": 1})
        with pytest.raises(ValueError, match="inner"):
            async with tx.savepoint("sp"):
                await tx.kv_put("t", "inner", {"v": 2})
                assert await tx.kv_get("t", "inner") == {"v": 2}
                await tx.kv_put("t", "inner-queued", {"v": 3})
                raise ValueError("inner")
        assert await tx.kv_get("t", "inner") is None
    assert _kv(tmp_path / "state.db") == {"outer": '{"v": 1}'}


async def test_a_cancelled_transaction_keeps_nothing(store: Store, tmp_path: Path) -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with store.transaction() as tx:
            await tx.kv_put("t", "x", {"v": 1})
            await tx.kv_get("t", "x")
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _kv(tmp_path / "state.db") == {}
    async with store.transaction() as tx:  # and the lock and connection are free again
        await tx.kv_put("t", "y", {"v": 2})
    assert _kv(tmp_path / "state.db") == {"y": '{"v": 2}'}


async def test_the_queue_is_sent_when_it_grows_large(
    store: Store, tmp_path: Path, handoffs: list[str]
) -> None:
    rows = [("t", f"k{i}", "{}") for i in range(sqlite_store._QUEUE_ROWS * 2 + 10)]
    async with store.transaction() as tx:
        for i in range(0, len(rows), 500):  # as a store copy writes a table, page by page
            await tx.db.executemany(
                "INSERT INTO kv (namespace, key, value) VALUES (?,?,?)", rows[i : i + 500]
            )
        assert len(handoffs) == 2  # not held until COMMIT
    assert len(_kv(tmp_path / "state.db")) == len(rows)


# Found by review (each failed before the fix): errors that are not sqlite3's, cancellations, savepoints.


def _in_transaction_elsewhere(db: Path) -> bool:
    """Whether another connection holds the write lock (the engine's left inside a transaction)."""
    conn = sqlite3.connect(db, timeout=0.05, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


async def test_a_value_sqlite_cannot_take_sent_with_commit_is_rolled_back(
    store: Store, tmp_path: Path
) -> None:
    with pytest.raises(OverflowError):
        async with store.transaction() as tx:
            await tx.kv_put("t", "a", {"v": 1})
            await tx.db.execute(
                "UPDATE runs SET current_step = ? WHERE id = 'none'", (2**64,)
            )  # over 64 bits
    assert not _in_transaction_elsewhere(tmp_path / "state.db")
    assert _kv(tmp_path / "state.db") == {}
    async with store.transaction() as tx:
        await tx.kv_put("t", "b", {"v": 2})
    assert _kv(tmp_path / "state.db") == {"b": '{"v": 2}'}


def _slow_handoffs(monkeypatch: pytest.MonkeyPatch, when: Any) -> asyncio.Event:
    """Hand-offs for which ``when(queued)`` holds still reach the thread at once, but their caller waits
    30 s for the answer (to be cancelled meanwhile). Set: one such hand-off began."""
    real = sqlite_store._on_thread
    began = asyncio.Event()

    async def slow(db: aiosqlite.Connection, fn: Any, queued: Any, read: Any) -> Any:
        inner = asyncio.ensure_future(real(db, fn, queued, read))
        if not when(queued):
            return await inner
        began.set()
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.wait([inner])  # it ran on the thread, whatever became of its caller
        return inner.result()

    monkeypatch.setattr(sqlite_store, "_on_thread", slow)
    return began


async def test_cancelled_while_a_failing_commit_is_on_its_way_rolls_back(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON kv WHEN NEW.key = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    began = _slow_handoffs(monkeypatch, lambda queued: any(sql == "COMMIT" for sql, _, _ in queued))

    async def body() -> None:
        async with store.transaction() as tx:
            await tx.kv_put("t", "a", {"v": 1})
            await tx.kv_put("t", "bad", {"v": 2})  # fails on the thread: COMMIT never runs

    task = asyncio.create_task(body())
    await began.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()
    assert not _in_transaction_elsewhere(tmp_path / "state.db")
    async with store.transaction() as tx:
        await tx.kv_put("t", "b", {"v": 3})
    assert _kv(tmp_path / "state.db") == {"b": '{"v": 3}'}


async def test_a_read_given_up_by_its_caller_fails_the_transaction(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body that times a read out and goes on: the writes sent with that read may or may not have run,
    so the transaction must not commit what came after as if they had."""
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON kv WHEN NEW.key = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    _slow_handoffs(monkeypatch, lambda queued: any(p == ("t", "bad", "{}") for _, p, _ in queued))
    with pytest.raises(StoreUnavailable, match="did not all run"):
        async with store.transaction() as tx:
            await tx.kv_put("t", "a", {"v": 1})
            await tx.db.execute("INSERT INTO kv (namespace, key, value) VALUES (?,?,?)", ("t", "bad", "{}"))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await tx.kv_get("t", "a")
            await tx.kv_put("t", "c", {"v": 3})
    monkeypatch.undo()
    assert _kv(tmp_path / "state.db") == {}
    assert not _in_transaction_elsewhere(tmp_path / "state.db")


async def test_a_statement_fails_inside_the_savepoint_it_was_made_in(store: Store, tmp_path: Path) -> None:
    """Routing's fallback routes notifications one by one, each in a savepoint, and sets aside the one
    that fails: a write-only error of the first must not surface in (and be blamed on) the second."""
    outcomes: dict[str, str] = {}
    async with store.transaction() as tx:
        for name in ("A", "B", "C"):
            try:
                async with tx.savepoint("route_one"):
                    await tx.kv_get("t", f"ref-{name}")
                    await tx.kv_put("t", f"run-of-{name}", {"started": True})
                    if name == "A":  # a value SQLite cannot bind, in a write nothing reads back
                        await tx.db.execute("UPDATE runs SET current_step = ? WHERE id = 'none'", (2**64,))
                outcomes[name] = "routed"
            except OverflowError:
                outcomes[name] = "set aside"
    assert outcomes == {"A": "set aside", "B": "routed", "C": "routed"}
    assert sorted(_kv(tmp_path / "state.db")) == ["run-of-B", "run-of-C"]


async def test_a_savepoint_that_cannot_roll_back_fails_the_transaction(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sqlite_store._run_queued

    def refuse_rollback_to(conn: sqlite3.Connection, queued: Any, read: Any) -> Any:
        if any(sql.startswith("ROLLBACK TO") for sql, _, _ in queued):
            raise sqlite3.OperationalError("disk I/O error")
        return real(conn, queued, read)

    monkeypatch.setattr(sqlite_store, "_run_queued", refuse_rollback_to)
    with pytest.raises(StoreUnavailable, match="disk I/O error"):
        async with store.transaction() as tx:
            await tx.kv_put("t", "a", {"v": 1})
            try:
                async with tx.savepoint("sp"):
                    await tx.kv_put("t", "b", {"v": 2})
                    await tx.kv_get("t", "b")  # sent: SQLite holds b, to be undone
                    raise ValueError("bad notification")
            except (ValueError, sqlite3.Error):
                pass  # a caller that goes on: b is still there, so nothing may commit
            await tx.kv_put("t", "c", {"v": 3})
    monkeypatch.undo()
    assert _kv(tmp_path / "state.db") == {}
