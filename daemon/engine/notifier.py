"""How the engine tells people about runs. Notifiers never block or fail a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

EventKind = Literal["approval_requested", "step_finished", "run_ended", "run_attention", "reminder"]


@dataclass(frozen=True)
class RunNotice:
    kind: EventKind
    run: dict[str, Any]
    """The run as the API shows it (steps, approvals, state)."""
    step: dict[str, Any] | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Notifier(Protocol):
    name: str

    async def notify(self, notice: RunNotice) -> None:
        """Deliver one notice. May retry internally; raising only counts a failure."""
        ...


class LogNotifier:
    name = "log"

    def __init__(self) -> None:
        self._log = structlog.get_logger("runbookd.notify")

    async def notify(self, notice: RunNotice) -> None:
        step = notice.step or {}
        self._log.info(
            f"notice.{notice.kind}",
            run_id=notice.run["id"],
            runbook=notice.run["runbook"],
            state=notice.run["state"],
            step=step.get("id"),
        )
