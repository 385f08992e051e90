"""What a transaction decides to do once it has committed: notify people and start actions.

Nothing here runs before the commit, so a crash between deciding and acting loses no record."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from daemon.engine.notifier import EventKind, RunNotice
from daemon.engine.views import run_view
from daemon.store.sqlite import Tx


@dataclass
class Effects:
    _notices: list[tuple[EventKind, str, str | None, dict[str, Any]]] = field(default_factory=list)
    executions: list[tuple[str, int]] = field(default_factory=list)
    notices: list[RunNotice] = field(default_factory=list)
    ended: list[tuple[str, str]] = field(default_factory=list)
    """(runbook, outcome) of runs that ended, for metrics."""
    approval_waits: list[tuple[str, float]] = field(default_factory=list)
    leading: bool = True
    """The transaction is the leader's (fenced). A follower's records what people did and leaves the rest
    (planning, starting steps, notifying) to the leader: see ``wakes`` and ``Context.transact``."""
    wakes: list[str] = field(default_factory=list)
    """Runs a follower changed that the leader must advance."""
    undo_executions: list[tuple[str, int]] = field(default_factory=list)
    """(run id, step index) of undos whose start has committed."""

    def merge(self, other: Effects) -> None:
        self._notices += other._notices
        self.executions += other.executions
        self.notices += other.notices
        self.ended += other.ended
        self.approval_waits += other.approval_waits
        self.wakes += other.wakes
        self.undo_executions += other.undo_executions

    def notice(self, kind: EventKind, run_id: str, step_id: str | None = None, **detail: Any) -> None:
        self._notices.append((kind, run_id, step_id, detail))

    def execute(self, run_id: str, idx: int) -> None:
        assert self.leading, "only the leader starts steps"
        self.executions.append((run_id, idx))

    async def hand_off(self, tx: Tx, now: float) -> None:
        """A follower's transaction: what the leader must do next goes to the store with it (kv
        ``handoff``); the leader ticks as soon as this commits, to advance and to notify."""
        if not self.wakes and not self._notices:
            return
        key = f"{now:017.6f}-{secrets.token_hex(4)}"
        notices = [[kind, run_id, step_id, detail] for kind, run_id, step_id, detail in self._notices]
        await tx.kv_put("handoff", key, {"wake": sorted(set(self.wakes)), "notices": notices})
        await tx.wake_leader()
        self._notices.clear()
        self.wakes.clear()

    def execute_undo(self, run_id: str, idx: int) -> None:
        assert self.leading, "only the leader starts undos"
        self.undo_executions.append((run_id, idx))

    async def materialize(self, tx: Tx) -> None:
        """Build each notice's run view inside the transaction, after its last change."""
        for kind, run_id, step_id, detail in self._notices:
            run = await tx.get_run(run_id)
            if run is None:
                continue
            steps, undos = await tx.steps_of(run_id), await tx.undos_of(run_id)
            view = run_view(run, steps, await tx.approvals_of(run_id), undos=undos)
            step = next((s for s in view["steps"] if s["id"] == step_id), None)
            self.notices.append(RunNotice(kind=kind, run=view, step=step, detail=detail))
        self._notices.clear()
