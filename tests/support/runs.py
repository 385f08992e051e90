"""Walking a run through its approvals over the HTTP API, and reading its steps."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .inproc import Daemon

ENDED = {"succeeded", "failed", "rejected", "expired", "cancelled"}
Hook = Callable[[], Any]


async def walk(
    d: Daemon,
    run_id: str,
    *,
    before: Mapping[str, Hook] | None = None,
    stop_at: str | None = None,
    timeout: float = 60.0,
) -> tuple[dict[str, Any], list[str]]:
    """Approve every step that asks, in turn, until the run ends (or ``stop_at`` asks). Returns the run
    and the steps approved. ``before[step]`` runs (awaited if async) just before that step is approved."""
    approved: list[str] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        run = await d.run(run_id)
        if run["state"] in ENDED:
            return run, approved
        if run["state"] == "undoing":
            undos = [s["undo"] for s in run["steps"] if isinstance(s.get("undo"), dict)]
            if all(
                u.get("state") == "waiting" for u in undos if u.get("state") not in ("succeeded", "skipped")
            ):
                return run, approved  # the steps are over; what is left waits for its guard
            await asyncio.sleep(0.05)
            continue
        cur = run["current_step"]
        step = next(s for s in run["steps"] if s["id"] == cur)
        if run["state"] == "awaiting_approval" and step["state"] == "awaiting_approval":
            if cur == stop_at:
                return run, approved
            hook = (before or {}).get(cur)
            if hook is not None:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            status, body = await d.approve(run_id, cur, plan_hash=step["plan_hash"])
            assert status == 200, body
            approved.append(cur)
            continue
        if loop.time() > end:
            raise AssertionError(f"run {run_id} stuck at {cur} ({run['state']}): {run}")
        await asyncio.sleep(0.02)


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in run["steps"]}


def states(run: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["state"] for s in run["steps"]}
