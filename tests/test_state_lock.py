"""One writer per SQLite state file (design §5): a second real ``runbookd serve`` on the same state is refused
at once (exit 2, naming the holder), whatever name it uses for the file (symlink, ``..``, hard link); after
the holder is killed with ``kill -9`` a new ``serve`` starts."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from support.runbookd import RunbookdProcess

from daemon.store.lock import StateLock, StateLocked
from daemon.store.sqlite import Store


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    return {
        "runbooks": {"paths": [str(rb_dir)]},
        "dry_run": True,
        "auth": {
            "webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"},
            "tokens": [{"name": "admin", "role": "admin", "secret": {"env": "RUNBOOKD_ADMIN_TOKEN"}}],
        },
        "approvers": {"sre": ["admin"]},
        "log": {"format": "json"},
    }


def _serve_once(rb: RunbookdProcess) -> subprocess.CompletedProcess[str]:
    """Run the second daemon's ``serve`` command line to its exit (it must exit at once)."""
    return subprocess.run(
        rb.build_argv(),
        env=rb.env,
        cwd=rb.cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_second_serve_on_the_same_state_is_refused_naming_the_holder(
    runbookd_factory: Callable[..., RunbookdProcess], config: dict[str, Any], tmp_path: Path
) -> None:
    state = tmp_path / "shared" / "state.db"
    first = runbookd_factory(config, state_path=state)
    second = runbookd_factory(config, state_path=state, start=False)

    res = _serve_once(second)

    assert res.returncode == 2, (res.returncode, res.stderr)
    assert f"pid {first.pid} on host {socket.gethostname()}" in res.stderr, res.stderr
    assert "since 20" in res.stderr, res.stderr
    holder = json.loads((state.parent / "state.db.lock").read_text())
    assert holder["pid"] == first.pid
    # the first daemon is untouched and still serves
    assert first.running
    assert first.get("/readyz").status == 200
    assert first.metric("runbookd_leader") == 1.0  # SQLite: the one process always leads


def test_after_kill_9_of_the_holder_a_new_serve_starts(
    runbookd_factory: Callable[..., RunbookdProcess], config: dict[str, Any], tmp_path: Path
) -> None:
    state = tmp_path / "shared" / "state.db"
    first = runbookd_factory(config, state_path=state)
    old_pid = first.pid
    first.kill9()

    second = runbookd_factory(config, state_path=state)  # the lock file is left behind; the flock is not

    assert second.get("/readyz").status == 200
    holder = json.loads((state.parent / "state.db.lock").read_text())
    assert holder["pid"] == second.pid != old_pid
    # and it is the second one that now holds it: a third is refused naming it
    third = runbookd_factory(config, state_path=state, start=False)
    res = _serve_once(third)
    assert res.returncode == 2
    assert f"pid {second.pid} " in res.stderr


def test_a_symlinked_or_dotted_path_to_the_same_state_is_refused_too(tmp_path: Path) -> None:
    """Audit: the lock sat beside the path as spelled, so ``--state link.db`` (a symlink to the held file)
    started a second writer on the same database."""
    real = tmp_path / "state" / "runbookd.db"
    real.parent.mkdir()
    real.touch()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    held = StateLock.acquire(real)
    try:
        for other in (link, tmp_path / "state" / ".." / "state" / "runbookd.db"):
            with pytest.raises(StateLocked, match=f"pid {os.getpid()}"):
                StateLock.acquire(other)
    finally:
        held.release()
    StateLock.acquire(link).release()  # once released, any spelling may take it


def test_second_serve_on_a_hard_link_to_the_state_is_refused_naming_the_holder(
    runbookd_factory: Callable[..., RunbookdProcess], config: dict[str, Any], tmp_path: Path
) -> None:
    """Known limit, now fixed: each name of a hard-linked state file had its own ``.lock``, so a second
    ``serve`` on the other name started a second writer on the same database."""
    state = tmp_path / "shared" / "state.db"
    first = runbookd_factory(config, state_path=state)
    link = tmp_path / "elsewhere" / "other.db"
    link.parent.mkdir()
    os.link(state, link)
    second = runbookd_factory(config, state_path=link, start=False)

    res = _serve_once(second)

    assert res.returncode == 2, (res.returncode, res.stderr)
    assert f"pid {first.pid} on host {socket.gethostname()}" in res.stderr, res.stderr
    assert f"through the name {state}" in res.stderr, res.stderr
    assert not (link.parent / "other.db.lock").read_text()  # the refused one recorded nothing
    assert first.running
    assert first.get("/readyz").status == 200


def test_a_hard_link_to_the_held_state_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "state" / "runbookd.db"
    real.parent.mkdir()
    real.touch()
    link = tmp_path / "link.db"
    os.link(real, link)
    held = StateLock.acquire(real)
    try:
        with pytest.raises(StateLocked, match=f"pid {os.getpid()} on host .* since 20"):
            StateLock.acquire(link)
    finally:
        held.release()
    StateLock.acquire(link).release()  # once released, any name may take it


def test_the_lock_outlives_sqlite_closing_the_file_in_the_same_process(tmp_path: Path) -> None:
    """POSIX record locks (``lockf``) are dropped when the process closes any descriptor of the file, as
    SQLite does when a connection closes; the lock on the file must not be."""
    state = tmp_path / "state.db"
    link = tmp_path / "link.db"
    held = StateLock.acquire(state)
    try:
        os.link(state, link)
        conn = sqlite3.connect(state, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.close()
        with pytest.raises(StateLocked, match=f"pid {os.getpid()} "):
            StateLock.acquire(link)
    finally:
        held.release()


async def test_first_start_creates_the_state_file_as_sqlite_would(tmp_path: Path) -> None:
    """The lock creates the file SQLite would have created (same mode under the same umask); SQLite takes
    the empty file for an empty database and the store migrates it."""
    by_sqlite, by_lock = tmp_path / "by-sqlite.db", tmp_path / "new" / "state.db"
    old = os.umask(0o027)
    try:
        sqlite3.connect(by_sqlite).close()
        held = StateLock.acquire(by_lock)
    finally:
        os.umask(old)
    try:
        assert by_lock.stat().st_size == 0
        assert by_lock.stat().st_mode == by_sqlite.stat().st_mode
        store = await Store.open(by_lock)
        async with store.transaction() as tx:
            await tx.kv_put("ns", "k", {"v": 1})
        await store.close()
        with pytest.raises(StateLocked):
            StateLock.acquire(by_lock)
    finally:
        held.release()


def test_without_ofd_locks_the_lock_falls_back_to_the_name_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old kernel or a file system without OFD locks: start as before (the ``.lock`` file only), saying
    so, rather than refuse to start."""

    def unsupported(fd: int, cmd: int, arg: bytes) -> bytes:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(fcntl, "fcntl", unsupported)
    state = tmp_path / "state.db"
    with capture_logs() as logs:
        held = StateLock.acquire(state)
    try:
        assert held.db_fd == -1
        assert [e["event"] for e in logs] == ["store.state_lock_by_name_only"]
        with pytest.raises(StateLocked, match=f"pid {os.getpid()} "):
            StateLock.acquire(state)
    finally:
        held.release()
