"""Test-only actions for the scheduled-check engine: a read-only look whose answer the test sets, that
counts its calls, and can fail, crash or hang until the test releases it."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from daemon.actions.base import Action, ActionContext, ActionRegistry, Output, Params, action
from daemon.actions.registry import default_registry
from daemon.errors import PermanentError


class LookParams(Params):
    what: str = Field("things", max_length=64)
    limit: int = 10


class Probe:
    """What ``test.look`` answers: ``items`` (reported as ``findings``), or an error, or a hang."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.fail: str | None = None
        self.hang = False
        self.release = asyncio.Event()
        self.calls: list[dict[str, Any]] = []

    def actions(self) -> list[Action]:
        probe = self

        @action("test.look", read_only=True, idempotent=True)
        async def look(ctx: ActionContext, p: LookParams) -> Output:
            """Report the items the test set."""
            probe.calls.append(p.model_dump())
            if probe.hang:
                await probe.release.wait()
            if probe.fail is not None:
                raise PermanentError(probe.fail)
            items = list(probe.items)[: p.limit]
            return {
                "ok": True,
                "what": p.what,
                "stale": items,
                "findings": items,
                "message": f"{len(items)} {p.what}",
            }

        @action("test.change", read_only=False, idempotent=False)
        async def change(ctx: ActionContext, p: LookParams) -> Output:
            """A mutating action (never allowed as a check)."""
            return {"ok": True}

        return [look, change]

    def registry(self) -> ActionRegistry:
        return ActionRegistry([*default_registry(), *self.actions()])
