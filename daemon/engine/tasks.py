"""The engine's supervised background work: every task is named, its failure is logged, and on stop
running actions get a grace period before they are cancelled.

Step executions are kept apart from the rest (notifications), so a stop can drain them first."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Tasks:
    def __init__(self, log: Any) -> None:
        self._log = log
        self._tasks: set[asyncio.Task[None]] = set()
        self._executions: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str, *, execution: bool = False) -> None:
        task = asyncio.create_task(coro, name=name)
        group = self._executions if execution else self._tasks
        group.add(task)

        def done(t: asyncio.Task[None]) -> None:
            group.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self._log.error("engine.task_failed", task=t.get_name(), exc_info=t.exception())

        task.add_done_callback(done)

    def executing(self, name: str) -> bool:
        """Whether the step execution task ``name`` still runs in this process."""
        return any(t.get_name() == name for t in self._executions)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no action or notification task is running (tests, benchmarks, shutdown)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._executions or self._tasks:
            pending = self._executions | self._tasks
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError(f"still running: {sorted(t.get_name() for t in pending)}")
            await asyncio.wait(pending, timeout=left)

    async def drain(self, grace: float) -> None:
        """Let running actions finish for ``grace`` seconds, then cancel them; then the other tasks."""
        if self._executions:
            self._log.info("engine.draining", running_steps=len(self._executions), grace=grace)
            _done, pending = await asyncio.wait(self._executions, timeout=grace)
            for task in pending:
                self._log.warning("engine.cancelling_step", task=task.get_name())
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
