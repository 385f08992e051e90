"""Test-only actions for in-process engines: a mutating step that holds until the test opens its gate.

Used to observe the blast-radius budget, pause and shutdown while a step is really running."""

from __future__ import annotations

import asyncio

from pydantic import Field

from daemon.actions.base import Action, ActionContext, ActionRegistry, Output, Params, action
from daemon.actions.registry import default_registry


class GateParams(Params):
    name: str = Field(min_length=1, max_length=64)


class Gates:
    """Named asyncio events; a step of ``test.gate`` with name N runs until ``open(N)``."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.finished: list[str] = []

    def event(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())

    def open(self, name: str) -> None:
        self.event(name).set()

    def actions(self) -> list[Action]:
        gates = self

        @action("test.gate", read_only=False, idempotent=False)
        async def gate(ctx: ActionContext, p: GateParams) -> Output:
            """Hold until the test opens the gate."""
            gates.started.append(p.name)
            await gates.event(p.name).wait()
            gates.finished.append(p.name)
            return {"ok": True, "name": p.name}

        @action("test.fail", read_only=False, idempotent=False)
        async def fail(ctx: ActionContext, p: GateParams) -> Output:
            """Report failure."""
            return {"ok": False, "message": f"{p.name} failed on purpose"}

        return [gate, fail]

    def registry(self) -> ActionRegistry:
        return ActionRegistry([*default_registry(), *self.actions()])


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    """Poll an async predicate (bounded), for state reached by background tasks."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
