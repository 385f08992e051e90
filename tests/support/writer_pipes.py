"""The intake writer's pipes, watched across the suite (a stopgap; see the closing note of 2026-12-03).

A pipe transport of asyncio's left open when its test's event loop closes warns when it is collected,
and with ``filterwarnings = error`` that fails whichever later test the collector runs in: twice
``test_snapshot_runbook_snapshots_yesterdays_indices_and_verifies``, a test that starts no writer. Each
writer's pipes are recorded; after every test, one left open on a closed loop is closed here and named
with the test that left it, so the leak is found where it happened, not where it is collected. The
names go to pytest's terminal (``conftest.py``), which prints them in passing runs too.

It named the source in CI on 2026-12-03: ``test_a_store_left_open_when_its_loop_closes_...``, which
leaves a writer on a closed loop on purpose and relied on the collector to end its transport within the
test; it now dismantles that transport itself. The guard stays, to name the next one.
"""

from __future__ import annotations

import weakref
from typing import Any

from daemon.store import intake

_pipes: weakref.WeakSet[Any] = weakref.WeakSet()
_connection_made = intake._Child.connection_made


def _recording(self: intake._Child, transport: Any) -> None:
    _connection_made(self, transport)
    for fd in (0, 1):
        pipe = transport.get_pipe_transport(fd)
        if pipe is not None:
            _pipes.add(pipe)


def install() -> None:
    intake._Child.connection_made = _recording  # type: ignore[method-assign]


def close_leaked(test: str) -> list[str]:
    """Close the recorded pipes left open on a closed loop; say which, naming ``test``."""
    said = []
    for transport in list(_pipes):
        raw = getattr(transport, "_pipe", None)  # asyncio's (uvloop's transports have none)
        loop = getattr(transport, "_loop", None)
        if raw is None or loop is None or not loop.is_closed():
            continue
        said.append(f"writer_pipes: {test} left the writer's pipe fd {raw.fileno()} open; closed")
        raw.close()
        transport._pipe = None  # as asyncio's own close does, which needs the (closed) loop
    return said
