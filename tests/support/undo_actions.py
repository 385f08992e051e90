"""Test-only actions for the undo engine, for in-process engines: a change and its inverse that write to
a shared ledger, an inverse that fails, and (from ``Gates``) a step that holds until the test opens it.

``ledger`` is the system the runbook changes: ``test.change`` sets a key, ``test.restore`` puts back the
value the change recorded. Tests read the ledger to see what was changed and what was undone."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from daemon.actions.base import Action, ActionContext, ActionRegistry, Output, Params, action

from .gates import Gates


class ChangeParams(Params):
    key: str = Field(min_length=1, max_length=64)
    value: str = Field(max_length=64)


class RestoreParams(Params):
    key: str = Field(min_length=1, max_length=64)
    value: str | None = Field(None, max_length=64)
    """The value before the change (None: the key did not exist)."""


class UndoLedger:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.ready = False
        """``test.restore_when_ready`` answers "not yet" until this is set."""
        """(action, origin, params) of every call, in order."""

    def actions(self) -> list[Action]:
        ledger = self

        @action("test.change", read_only=False, idempotent=True)
        async def change(ctx: ActionContext, p: ChangeParams) -> Output:
            """Set a key, recording the value it had."""
            before = ledger.values.get(p.key)
            ledger.calls.append(("change", ctx.origin, p.model_dump()))
            if not ctx.dry_run:
                ledger.values[p.key] = p.value
            return {"ok": True, "key": p.key, "before": before}

        @action("test.restore", read_only=False, idempotent=True)
        async def restore(ctx: ActionContext, p: RestoreParams) -> Output:
            """Put back the value a change recorded."""
            ledger.calls.append(("restore", ctx.origin, p.model_dump()))
            if ctx.dry_run:
                return ctx.would({"restore": p.key, "to": p.value})
            if p.value is None:
                ledger.values.pop(p.key, None)
            else:
                ledger.values[p.key] = p.value
            return {"ok": True, "key": p.key, "restored": p.value}

        @action("test.restore_fails", read_only=False, idempotent=True)
        async def restore_fails(ctx: ActionContext, p: RestoreParams) -> Output:
            """An inverse that cannot be applied."""
            ledger.calls.append(("restore_fails", ctx.origin, p.model_dump()))
            return {"ok": False, "message": f"cannot restore {p.key}: the system refused"}

        @action("test.restore_when_ready", read_only=False, idempotent=True)
        async def restore_when_ready(ctx: ActionContext, p: RestoreParams) -> Output:
            """An inverse that re-checks its own guard: "not yet" until the ledger is ready."""
            ledger.calls.append(("restore_when_ready", ctx.origin, p.model_dump()))
            if not ledger.ready:
                return {"ok": False, "not_yet": True, "message": "the backlog has not shipped yet"}
            return await restore.run(ctx, restore.params.model_validate(p.model_dump()))

        return [change, restore, restore_fails, restore_when_ready]

    def registry(self, gates: Gates | None = None) -> ActionRegistry:
        gates = gates or Gates()
        return ActionRegistry([*gates.registry(), *self.actions()])

    def restored(self) -> list[str]:
        """Keys restored, in order."""
        return [str(p["key"]) for name, _, p in self.calls if name == "restore"]
