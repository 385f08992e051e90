"""Notification actions that need no outside system."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from daemon.actions.base import ActionContext, Output, Params, action


class LogParams(Params):
    message: str = Field(min_length=1, max_length=10_000)
    level: Literal["info", "warning", "error"] = "info"


@action("notify.log", read_only=True, idempotent=True)
async def log(ctx: ActionContext, p: LogParams) -> Output:
    """Write a message to the run's timeline and the daemon log (a report step)."""
    getattr(ctx.log, p.level)("runbook.report", message=p.message)
    return {"ok": True, "message": p.message}


ACTIONS = [log]
