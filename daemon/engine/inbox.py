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
        """``on_stored`` gets (receipt, item given to ``submit``) of each committed batch's notifications
        that are left to route, in order."""
        self._store = store
        self._clock = clock
        self._on_stored = on_stored
        self._pending: list[tuple[str, int, str | None, asyncio.Future[int], Any]] = []
        self._writer: asyncio.Task[None] | None = None
        self._last_submit = 0.0

    def busy(self, within: float = 0.002) -> bool:
        """Whether notifications are arriving right now (one submitted in the last ``within`` seconds, or
        one waiting to be written)."""
        loop = asyncio.get_running_loop()
        return bool(self._pending) or loop.time() - self._last_submit < within

    async def submit(self, payload: str, alerts: int, item: Any = None, routed: str | None = None) -> int:
        """Store one notification; returns its receipt number once committed. Raises StoreUnavailable.
        ``item`` (the parsed payload) is handed to ``on_stored`` with its receipt. ``routed``: the
        notification is routed already (nothing in it for routing to do), with this result (JSON)."""
        loop = asyncio.get_running_loop()
        self._last_submit = loop.time()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((payload, alerts, routed, future, item))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="inbox.write")
        return await future

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            now = self._clock.now()
            rows = [
                (now, alerts, payload, None if routed is None else now, routed)
                for payload, alerts, routed, _, _ in batch
            ]
            try:
                first = await self._store.append_inbox(rows)
            except Exception as exc:  # every waiting request must get an answer: 503, so Alertmanager retries
                error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(f"cannot store: {exc}")
                for *_, future, _ in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for i, (*_, future, _) in enumerate(batch):
                if not future.done():
                    future.set_result(first + i)
            to_route = [
                (first + i, item) for i, (_, _, routed, _, item) in enumerate(batch) if routed is None
            ]
            if to_route:
                self._on_stored(to_route)
