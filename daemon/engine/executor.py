"""Run one action: validated params, a hard timeout, bounded retries of temporary errors for idempotent
actions, and every failure turned into a message an operator can act on."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from daemon.actions.base import Action, ActionContext
from daemon.errors import ActionError, Refused, TemporaryError
from daemon.kits.durations import parse_duration

MAX_ATTEMPTS = 3


def action_timeout(default: float, planned: object) -> float:
    """An action that waits (its own ``timeout`` param) gets that long plus a minute to report."""
    if isinstance(planned, int | float | str) and not isinstance(planned, bool):
        try:
            return max(default, parse_duration(planned) + 60)
        except ValueError:
            pass
    return default


REFUSED = {"changed": False, "refused": True}
"""The output of a step refused before it acted (undoing.changed_something reads ``refused``)."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    output: dict[str, Any]
    error: str | None
    seconds: float


async def _attempts(action: Action, ctx: ActionContext, plan: dict[str, Any]) -> dict[str, Any]:
    params = action.params.model_validate(plan)
    delay = 1.0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return await action.run(ctx, params)
        except TemporaryError as exc:
            if not action.idempotent or attempt == MAX_ATTEMPTS:
                raise
            wait = exc.retry_after if exc.retry_after is not None else delay
            ctx.log.warning("action.retry", attempt=attempt, error=str(exc), wait=wait)
            await asyncio.sleep(min(wait, 30.0))
            delay *= 2
    raise AssertionError("unreachable")


async def execute(action: Action, ctx: ActionContext, plan: dict[str, Any], timeout: float) -> Outcome:
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            output = await _attempts(action, ctx, plan)
    except TimeoutError:
        return Outcome(
            False, {}, f"{action.name} did not finish within {timeout:g}s", time.monotonic() - started
        )
    except ValidationError as exc:
        msg = f"invalid parameters: {exc.errors()[0]['msg']}"
        return Outcome(False, dict(REFUSED), msg, time.monotonic() - started)
    except Refused as exc:  # declined before changing anything: nothing for an undo to restore
        return Outcome(False, dict(REFUSED), str(exc), time.monotonic() - started)
    except ActionError as exc:
        return Outcome(False, {}, str(exc), time.monotonic() - started)
    except Exception:  # a bug in an action must fail its step, not the daemon
        ctx.log.exception("action.crashed")
        return Outcome(False, {}, f"{action.name} crashed (see the daemon log)", time.monotonic() - started)
    ok = bool(output.get("ok", True))
    error = None if ok else str(output.get("message") or f"{action.name} reported failure")
    return Outcome(ok, output, error, time.monotonic() - started)
