"""Alertmanager notifications are stored first and routed after.

The webhook answers 200 once its payload is committed to the inbox; routing (matching runbooks, starting
or attaching runs) happens right after, in batches, in the order received. Concurrent requests share one
commit (group commit), so intake keeps up with Alertmanager however slow routing is; a notification that
was stored but not yet routed when the process died is routed on the next start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from daemon.errors import StoreUnavailable
from daemon.kits.clock import Clock
from daemon.store.base import StateStore

MAX_BATCH = 500


class Inbox:
    def __init__(
        self, store: StateStore, clock: Clock, on_stored: Callable[[list[tuple[int, Any]]], None]
    ) -> None:
        """``on_stored`` gets (receipt, item given to ``submit``) of each committed batch, in order."""
        self._store = store
        self._clock = clock
        self._on_stored = on_stored
        self._pending: list[tuple[str, int, asyncio.Future[int], Any]] = []
        self._writer: asyncio.Task[None] | None = None
        self._next_seq: int | None = None
        self._last_submit = 0.0

    def busy(self, within: float = 0.002) -> bool:
        """Whether notifications are arriving right now (one submitted in the last ``within`` seconds, or
        one waiting to be written)."""
        loop = asyncio.get_running_loop()
        return bool(self._pending) or loop.time() - self._last_submit < within

    async def submit(self, payload: str, alerts: int, item: Any = None) -> int:
        """Store one notification; returns its receipt number once committed. Raises StoreUnavailable.
        ``item`` (the parsed payload) is handed to ``on_stored`` with its receipt."""
        loop = asyncio.get_running_loop()
        self._last_submit = loop.time()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((payload, alerts, future, item))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="inbox.write")
        return await future

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            now = self._clock.now()
            try:
                async with self._store.intake() as tx:
                    if self._next_seq is None or self._store.shared:  # other replicas number too
                        self._next_seq = await tx.last_inbox_seq() + 1
                    first = self._next_seq
                    rows = [
                        (first + i, now, alerts, payload) for i, (payload, alerts, _, _) in enumerate(batch)
                    ]
                    await tx.add_to_inbox(rows)
            except Exception as exc:  # every waiting request must get an answer: 503, so Alertmanager retries
                error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(f"cannot store: {exc}")
                self._next_seq = None  # read it again: the batch may or may not have been written
                for _, _, future, _ in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self._next_seq = first + len(batch)
            for i, (_, _, future, _) in enumerate(batch):
                if not future.done():
                    future.set_result(first + i)
            self._on_stored([(first + i, item) for i, (_, _, _, item) in enumerate(batch)])
