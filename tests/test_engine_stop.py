"""Stopping the engine never hangs on its own loops, whatever wakes them at that moment."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support.inproc import serve

pytestmark = pytest.mark.usefixtures("store_backend")  # on SQLite and on PostgreSQL (a lease released)

RUNBOOK = {
    "noop": """
name: noop
triggers: [{alert: Noop}]
steps:
  - id: note
    action: notify.log
    with: {message: "hi"}
"""
}


async def test_stop_ends_the_tick_loop_even_when_a_tick_is_asked_for_at_that_moment(tmp_path: Path) -> None:
    """stop() cancels the tick loop as releasing the lease wakes it (the event is set in the same step of
    the event loop). On Python 3.11, asyncio.wait_for could swallow that cancellation: stop() then waited
    for the loop for ever."""
    for _ in range(20):  # the race needs the wake and the cancel in one step of the loop: repeat it
        async with serve(tmp_path, RUNBOOK) as d:
            engine = d.engine
            await asyncio.sleep(0)  # let the tick loop reach its wait
            engine._tick_now.set()
            async with asyncio.timeout(10):
                await engine.stop(grace=1)
