"""Test-only actions that hold a step open, so a test can crash or stop the daemon while the step runs.

Loaded by a real ``runbookd serve`` through the config (``plugins: ["tests.support.slow_actions"]``, with
the repository root on ``PYTHONPATH``). Each action appends one line to its ``started`` file when it starts
(so a test knows it runs, and counts how often it ran), then waits until the ``release`` file exists or
``max_wait`` passes. Nothing here is imported by the test process itself; only ``daemon`` is imported.

- ``test.hold``:            mutating, NOT idempotent: a crash mid-way sends the run to needs_attention.
- ``test.hold_idempotent``: mutating and idempotent: a crash mid-way re-runs it on the next start.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from pydantic import Field, field_validator

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.kits.durations import Duration

POLL_SECONDS = 0.05


class HoldParams(Params):
    started: str = Field(min_length=2, max_length=4096)
    """Absolute path: one line ``<run> <step> <pid>`` is appended to it when the action starts."""
    release: str = Field(min_length=2, max_length=4096)
    """Absolute path: the action finishes (ok) once this file exists."""
    max_wait: Duration = 60.0
    """Give up (not ok) after this long without the release file."""

    @field_validator("started", "release")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not os.path.isabs(v):
            raise ValueError("must be an absolute path")
        return v


async def _hold(ctx: ActionContext, p: HoldParams) -> Output:
    # Synchronous on purpose: the mark is on disk before the step can be killed.
    with open(p.started, "a") as f:
        f.write(f"{ctx.run_id} {ctx.step_id} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())
    attempts = len(Path(p.started).read_text().splitlines())
    ctx.log.info("test.hold.started", started=p.started, release=p.release, attempt=attempts)
    deadline = time.monotonic() + p.max_wait
    while not os.path.exists(p.release):
        if time.monotonic() >= deadline:
            return {"ok": False, "message": f"{p.release} did not appear within {p.max_wait:g}s"}
        await asyncio.sleep(POLL_SECONDS)
    return {"ok": True, "released": True, "attempt": attempts, "pid": os.getpid()}


@action("test.hold", read_only=False, idempotent=False)
async def hold(ctx: ActionContext, p: HoldParams) -> Output:
    """Mark the start, then wait for a release file (not idempotent: a crash mid-way needs a person)."""
    return await _hold(ctx, p)


@action("test.hold_idempotent", read_only=False, idempotent=True)
async def hold_idempotent(ctx: ActionContext, p: HoldParams) -> Output:
    """Mark the start, then wait for a release file (idempotent: re-run after a crash)."""
    return await _hold(ctx, p)


ACTIONS = [hold, hold_idempotent]
