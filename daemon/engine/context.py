"""What the parts of the engine share: their dependencies, the parsed definitions of active runs, the
run timeline, and transactions whose effects are applied once they have committed."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from daemon.actions.base import ActionContext, ActionRegistry
from daemon.clients.bundle import Clients
from daemon.config import Config
from daemon.engine.effects import Effects
from daemon.engine.metrics import Metrics
from daemon.engine.notifier import Notifier, RunNotice
from daemon.engine.tasks import Tasks
from daemon.errors import LostLeadership, StoreUnavailable
from daemon.kits.clock import Clock
from daemon.runbooks.loader import LoadedRunbook
from daemon.runbooks.schema import Runbook
from daemon.store.base import StateStore
from daemon.store.leadership import Leadership, SoleLeader
from daemon.store.records import EventRecord, RunRecord
from daemon.store.sqlite import StoreMemory, Tx

_DEFINITION_CACHE = 512
"""Parsed runbook snapshots kept for active runs (each run keeps the definition it started with)."""

DRY_RUN_HOLD = (
    "dry-run: runbookd runs in dry-run and this run was started live, so its mutating steps wait until "
    "runbookd runs live again (reject the run to end it)"
)
"""Why a live run's mutating step waits under a dry-run daemon (``Context.holds_changes_of``)."""
DRY_RUN_UNDO_HOLD = (
    "dry-run: runbookd runs in dry-run and this run was started live, so the undos of what its steps "
    "changed wait until runbookd runs live again"
)
"""Why a live run's undo waits under a dry-run daemon."""

T = TypeVar("T")
StepExecutor = Callable[[str, int], Coroutine[Any, Any, None]]
"""Runs step ``idx`` of a run, once its start is committed."""


@dataclass(kw_only=True, eq=False)
class Context:
    config: Config
    store: StateStore
    registry: ActionRegistry
    runbooks: dict[str, LoadedRunbook]
    clients: Clients
    memory: StoreMemory
    notifiers: list[Notifier]
    metrics: Metrics
    clock: Clock
    log: Any
    tasks: Tasks
    execute: StepExecutor
    leadership: Leadership = field(default_factory=SoleLeader)
    execute_undo: StepExecutor
    """Runs the undo of step ``idx`` of a run, once its start is committed."""
    _definitions: OrderedDict[str, Runbook] = field(default_factory=OrderedDict, init=False, repr=False)

    def definition(self, run: RunRecord) -> Runbook:
        rb = self._definitions.get(run.id)
        if rb is None:
            rb = Runbook.model_validate(run.definition)
            self._definitions[run.id] = rb
            if len(self._definitions) > _DEFINITION_CACHE:
                self._definitions.popitem(last=False)
        else:
            self._definitions.move_to_end(run.id)
        return rb

    def remember_definition(self, run_id: str, rb: Runbook) -> None:
        """A new run's definition is the loaded runbook it was dumped from: no need to parse it back."""
        self._definitions[run_id] = rb
        if len(self._definitions) > _DEFINITION_CACHE:
            self._definitions.popitem(last=False)

    def action_context(
        self, run_id: str, step_id: str, runbook: str, *, dry_run: bool, log: Any
    ) -> ActionContext:
        """What an action sees when it runs: a step, an undo or a scheduled check."""
        return ActionContext(
            run_id=run_id,
            step_id=step_id,
            runbook=runbook,
            dry_run=dry_run,
            clients=self.clients,
            memory=self.memory,
            limits=self.config.limits,
            clock=self.clock,
            log=log,
            public_url=self.config.server.public_url,
        )

    def forget_definition(self, run_id: str) -> None:
        self._definitions.pop(run_id, None)

    async def event(self, tx: Tx, run: RunRecord, event: str, actor: str = "runbookd", **detail: Any) -> None:
        await self.event_ids(tx, run.id, run.runbook, event, actor, **detail)

    async def event_ids(
        self, tx: Tx, run_id: str, runbook: str, event: str, actor: str = "runbookd", **detail: Any
    ) -> None:
        await tx.add_event(EventRecord(run_id, self.clock.now(), event, actor, detail))
        self.log.info(f"run.{event}", run_id=run_id, runbook=runbook, actor=actor, **detail)

    def holds_changes_of(self, run: RunRecord) -> bool:
        """Whether this daemon holds back the run's changes (mutating steps, undos): it runs in dry-run
        and the run was started live (``run.dry_run`` is fixed at its start). ``dry_run`` promises that
        nothing changes; running the change as a dry run instead would let the run go on as if it had
        happened, so it waits until runbookd runs live again, or a person rejects the run."""
        return self.config.dry_run and not run.dry_run

    async def is_paused(self, tx: Tx | None = None) -> bool:
        if tx is None:
            async with self.store.transaction() as t:
                return await self.is_paused(t)
        rec = await tx.kv_get("engine", "paused")
        return bool(rec and rec.get("paused"))

    async def transact(self, body: Callable[[Tx, Effects], Awaitable[T]], *, leader_only: bool = False) -> T:
        """Run ``body(tx, fx)`` in one transaction, then apply its effects.

        On the leader the transaction is fenced (it commits only while this replica's epoch is current).
        On a follower ``fx.leading`` is false: the body records what a person did, and what follows from it
        is handed to the leader through the store. ``leader_only`` work (routing, ticks, recovery, step
        results) raises LostLeadership on a follower without running."""
        lead = self.leadership
        leading = lead.leading
        if leader_only and not leading:
            raise LostLeadership("this replica is not the leader")
        fx = Effects(leading=leading)
        async with self.store.transaction(lead if leading else None) as tx:
            result = await body(tx, fx)
            if leading:
                await fx.materialize(tx)
            else:
                await fx.hand_off(tx, self.clock.now())
        self._apply(fx)
        return result

    async def record_result(
        self, body: Callable[[Tx, Effects], Awaitable[None]], *, log: Any, event: str, **detail: Any
    ) -> None:
        """Commit what an action did (a step's or an undo's result), on the leader only.

        Fenced (LostLeadership): give up; the leader that took over treats the action as interrupted (re-run
        only if idempotent, else needs_attention), and recording it here could overwrite that decision.
        Store unavailable: the action stays ``running`` in the store (holding its budget slot) until its
        result is committed, so keep the result and try again. A stop cancels this; the next start then
        treats the action as interrupted."""
        delay = 1.0
        while True:
            try:
                await self.transact(body, leader_only=True)
                return
            except LostLeadership as exc:
                log.error(event, error=str(exc), lost_leadership=True, **detail)
                return
            except StoreUnavailable as exc:
                log.error(event, error=str(exc), retry_in=delay, **detail)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _apply(self, fx: Effects) -> None:
        """Run after commit: metrics, notifications, action executions."""
        for runbook, outcome in fx.ended:
            self.metrics.runs.labels(runbook=runbook, outcome=outcome).inc()
        for runbook, wait in fx.approval_waits:
            self.metrics.approval_wait.labels(runbook=runbook).observe(wait)
        for notice in fx.notices:
            for n in self.notifiers:
                self.tasks.spawn(self._notify(n, notice), f"notify.{n.name}.{notice.run['id']}.{notice.kind}")
        for run_id, idx in fx.executions:
            self.tasks.spawn(self.execute(run_id, idx), f"step.{run_id}.{idx}", execution=True)
        for run_id, idx in fx.undo_executions:
            self.tasks.spawn(self.execute_undo(run_id, idx), f"undo.{run_id}.{idx}", execution=True)

    async def _notify(self, notifier: Notifier, notice: RunNotice) -> None:
        try:
            await notifier.notify(notice)
        except Exception as exc:  # a notifier must never fail a run
            self.metrics.notifications_failed.labels(notifier=notifier.name).inc()
            self.log.warning("notify.failed", notifier=notifier.name, run_id=notice.run["id"], error=str(exc))
