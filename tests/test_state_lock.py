"""One writer per SQLite state file (design §5): a second real ``runbookd serve`` on the same state is refused
at once (exit 2, naming the holder); after the holder is killed with ``kill -9`` a new ``serve`` starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.runbookd import RunbookdProcess

from daemon.store.lock import StateLock, StateLocked


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
