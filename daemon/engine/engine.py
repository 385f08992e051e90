"""The run state machine: alerts, schedules and manual triggers start runs; approvals move them on.

Every transition is committed before it is acted on (``Effects`` run after the commit). One store
transaction at a time; actions execute outside transactions, in named, supervised tasks.

``Engine`` is the one object the server, Slack and tests hold: it composes the parts and owns their
lifecycle. ``routing`` routes notifications, ``starting`` starts runs, ``runs`` moves them on,
``operators`` approves, rejects and pauses, ``clockwork`` does what time drives, ``tasks`` supervises.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import structlog

from daemon import __version__
from daemon.actions.base import ActionRegistry
from daemon.clients.bundle import Clients
from daemon.config import Config
from daemon.engine import views
from daemon.engine.checks import Checker
from daemon.engine.clockwork import Clockwork
from daemon.engine.context import Context
from daemon.engine.events import WebhookPayload
from daemon.engine.identity import SYSTEM, Identity
from daemon.engine.metrics import Metrics
from daemon.engine.notifier import Notifier
from daemon.engine.operators import Operators
from daemon.engine.quickparse import QuickPayload
from daemon.engine.routing import Router, Settled
from daemon.engine.runs import Runs
from daemon.engine.starting import Starter
from daemon.engine.tasks import Tasks
from daemon.errors import InvalidRequest, LostLeadership, StoreUnavailable
from daemon.kits.clock import Clock, SystemClock
from daemon.runbooks.loader import LoadedRunbook
from daemon.runbooks.schema import Runbook
from daemon.store.base import StateStore
from daemon.store.leadership import Leadership, SoleLeader
from daemon.store.records import RunRecord, RunState
from daemon.store.sqlite import StoreMemory, Tx


class Engine:
    def __init__(
        self,
        *,
        config: Config,
        store: StateStore,
        registry: ActionRegistry,
        runbooks: dict[str, LoadedRunbook],
        clients: Clients,
        notifiers: Iterable[Notifier] = (),
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        tick_interval: float = 1.0,
        leadership: Leadership | None = None,
    ) -> None:
        self.config = config
        self.leadership: Leadership = leadership or SoleLeader()
        self._led_epoch: int | None = None
        """The epoch this engine last recovered under: a new one (a takeover) recovers again."""
        self.store = store
        self.registry = registry
        self.runbooks = runbooks
        self.clients = clients
        self.notifiers = list(notifiers)
        self.metrics = metrics or Metrics()
        self.clock = clock or SystemClock()
        self.memory = StoreMemory(store)
        self.log = structlog.get_logger("runbookd.engine")
        self._tick_interval = tick_interval
        self._tasks = Tasks(self.log)
        self._ticker: asyncio.Task[None] | None = None
        self._router: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._ctx = Context(
            config=config,
            store=store,
            registry=registry,
            runbooks=runbooks,
            clients=clients,
            memory=self.memory,
            notifiers=self.notifiers,
            metrics=self.metrics,
            clock=self.clock,
            log=self.log,
            tasks=self._tasks,
            execute=self._execute,
            leadership=self.leadership,
            execute_undo=self._execute_undo,
        )
        self._runs = Runs(self._ctx)
        self._starter = Starter(self._ctx, self._runs)
        self._routing = Router(self._ctx, self._runs, self._starter)
        self._operators = Operators(self._ctx, self._runs)
        self._clockwork = Clockwork(self._ctx, self._runs, self._starter)
        self._checks = Checker(self._ctx, self._starter)
        self._starter.checks = self._checks
        self.inbox = self._routing.inbox
        self.metrics.runbooks_loaded.set(len(runbooks))
        self.metrics.preset(sorted(runbooks))
        self._tick_now = asyncio.Event()
        self.leadership.on_change(self._on_leadership)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, background: bool = True) -> None:
        """Start the loops; return at once. The leader first recovers runs interrupted by a stop or crash
        and routes what waits, in the tick loop: until then ``routing_live`` is false and notifications
        are stored (the webhook answers) but not routed. A follower only starts the loops: they take up
        the leader's work once this replica leads. ``background=False`` (tests, tools) recovers here."""
        self._runs.stopping = False
        self._tick_now.clear()
        if not background:
            if self.leadership.leading:
                try:
                    await self._take_lead()
                except LostLeadership as exc:  # lost between winning the lease and recovering: keep serving
                    self.log.warning("engine.not_leading", error=str(exc))
            return
        self._ticker = asyncio.create_task(self._tick_loop(), name="engine.tick")
        self._router = asyncio.create_task(self._routing.loop(), name="engine.route")
        if self.store.shared:  # notifications other replicas store wake the router at once
            self._watcher = asyncio.create_task(
                self.store.watch_inbox(self._on_store_news), name="engine.inbox_watch"
            )

    @property
    def routing_live(self) -> bool:
        """Recovery is done on this leader and notifications are being routed."""
        return self._routing.live

    async def wait_routing_live(self, timeout: float = 30.0) -> None:
        """Wait until recovery is done and notifications are routed (tests, benchmarks). TimeoutError."""
        await self._routing.wait_live(timeout)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop starting work, let running actions finish for ``grace`` seconds, then cancel them.
        A cancelled step stays ``running`` in the store and is recovered on the next start."""
        self._runs.stopping = True
        for loop_task in (self._ticker, self._router, self._watcher):
            if loop_task is not None:
                loop_task.cancel()  # a routing batch cut off here rolls back and is routed on the next start
                await asyncio.gather(loop_task, return_exceptions=True)
        await self._tasks.drain(grace)

    def _on_store_news(self, what: str) -> None:
        """Another replica stored a notification (route it) or handed work over (tick now)."""
        if what:
            self._tick_now.set()
        self._routing.wake()

    def _on_leadership(self, leading: bool) -> None:
        self.metrics.leader.set(1 if leading else 0)
        self._checks.leadership_changed(leading)
        self._tick_now.set()  # a new leader recovers at once, not at its next tick

    async def _take_lead(self) -> None:
        """Start leading: treat steps left running as a restart does, route what waits, tick."""
        epoch = self.leadership.epoch
        self._routing.set_live(False)
        await self.recover()
        self._led_epoch = epoch
        self._routing.recovered = True  # the router may route what arrives from now on
        await self.route_pending()  # notifications stored but not routed before a crash or takeover
        await self.tick()
        self._routing.set_live(True)

    async def _tick_loop(self) -> None:
        first = True
        while True:
            if not first:  # the first tick recovers at once (a lone replica leads from the start)
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
                # arrives as the event is set (stop() releasing the lease sets it), and stop() then
                # waits for this loop for ever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._tick_interval):
                        await self._tick_now.wait()
            first = False
            self._tick_now.clear()
            if not self.leadership.leading:
                self._routing.set_live(False)
                continue
            try:
                if self._led_epoch != self.leadership.epoch:
                    await self._take_lead()
                else:
                    await self.tick()
                if self.store.shared:
                    self._routing.wake()  # notifications other replicas stored
            except StoreUnavailable as exc:
                self.log.warning("engine.tick_failed", error=str(exc))
            except Exception:  # expiry and schedules depend on this loop: log a bug, never end the loop
                self.log.exception("engine.tick_crashed")

    async def _execute(self, run_id: str, idx: int) -> None:
        """Execute a step whose start has committed (the context spawns it; the state machine runs it)."""
        await self._runs.execute(run_id, idx)

    async def _execute_undo(self, run_id: str, idx: int) -> None:
        await self._runs.undoing.execute(run_id, idx)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no action or notification task is running (tests, benchmarks, shutdown)."""
        await self._tasks.wait_idle(timeout)

    def definition(self, run: RunRecord) -> Runbook:
        return self._ctx.definition(run)

    # ------------------------------------------------------------------ intake

    async def submit(self, payload: WebhookPayload, raw: str) -> int:
        return await self._routing.submit(payload, raw)

    def settle_quick(self, payload: QuickPayload) -> Settled | None:
        return self._routing.settle_quick(payload)

    async def submit_settled(self, settled: Settled) -> int:
        return await self._routing.submit_settled(settled)

    async def submit_quick(self, payload: QuickPayload, raw: str) -> int:
        return await self._routing.submit_quick(payload, raw)

    async def ingest(self, payload: WebhookPayload) -> dict[str, Any]:
        """Store and route one notification, returning what it did (tests, benchmarks, tools)."""
        receipt = await self.submit(payload, payload.model_dump_json())
        return await self.routed(receipt)

    async def receipt(self, seq: int) -> dict[str, Any]:
        return await self._routing.receipt(seq)

    async def routed(self, seq: int, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until a stored notification is routed; what it did (started, attached, cancelled)."""
        if self._router is None or self._router.done():
            await self.route_pending()
        return await self._routing.wait_routed(seq, timeout)

    async def route_pending(self, *, yield_to_intake: bool = False) -> None:
        await self._routing.route_pending(yield_to_intake=yield_to_intake)

    async def route_batch(self) -> list[int]:
        """Route one batch of stored notifications (tests, tools): the receipts routed."""
        return await self._routing.route_batch()

    async def trigger(self, name: str, params: dict[str, Any], identity: Identity) -> dict[str, Any]:
        return await self._starter.trigger(name, params, identity)

    # ------------------------------------------------------------------ operators

    async def approve(
        self, run_id: str, step_id: str | None, identity: Identity, plan_hash: str | None = None
    ) -> dict[str, Any]:
        return await self._operators.approve(run_id, step_id, identity, plan_hash)

    async def reject(self, run_id: str, identity: Identity, reason: str) -> dict[str, Any]:
        return await self._operators.reject(run_id, identity, reason)

    async def is_paused(self, tx: Tx | None = None) -> bool:
        return await self._ctx.is_paused(tx)

    async def set_paused(self, paused: bool, identity: Identity) -> dict[str, Any]:
        return await self._operators.set_paused(paused, identity)

    # ------------------------------------------------------------------ time

    async def recover(self) -> None:
        await self._clockwork.recover()

    async def tick(self) -> None:
        await self._clockwork.tick()
        await self._checks.tick()

    # ------------------------------------------------------------------ reads

    async def get_run(self, run_id: str) -> dict[str, Any]:
        async with self.store.transaction() as tx:
            return await views.view_of(tx, run_id)

    async def list_runs(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        _check_state(state)
        async with self.store.transaction() as tx:
            runs = await tx.list_runs(state, limit)
            return [
                views.run_view(
                    r, await tx.steps_of(r.id), await tx.approvals_of(r.id), undos=await tx.undos_of(r.id)
                )
                for r in runs
            ]

    async def run_summaries(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """What GET /api/v1/runs lists (``views.run_summary``), newest first."""
        _check_state(state)
        async with self.store.transaction() as tx:
            found = await tx.run_summaries(state, limit)
        return [views.run_summary(run, steps) for run, steps in found]

    async def status(self) -> dict[str, Any]:
        """What GET /api/v1/status shows: is this replica leading, is routing live, what the store holds."""
        async with self.store.transaction() as tx:
            paused = await self.is_paused(tx)
            runs = await tx.count_runs_by_state()
            unrouted = await tx.count_unrouted()
        return {
            "version": __version__,
            "leader": self.leadership.leading,
            "routing_live": self.routing_live,
            "paused": paused,
            "dry_run": self.config.dry_run,
            "store": self.store.backend,
            "runbooks": len(self.runbooks),
            "counts": {
                "runs_active": sum(n for state, n in runs.items() if RunState(state).active),
                "runs_by_state": runs,
                "notifications_unrouted": unrouted,
            },
        }

    def runbook_list(self) -> list[dict[str, Any]]:
        return views.runbook_list(self.runbooks, self.registry)

    async def list_checks(self) -> list[dict[str, Any]]:
        """The scheduled checks and their last results (GET /api/v1/checks, ``runbookd checks``)."""
        return await self._checks.list()


__all__ = ["SYSTEM", "Engine"]


def _check_state(state: str | None) -> None:
    """InvalidRequest for a run state filter that names no state (GET /api/v1/runs?state=...)."""
    if state is not None and state not in {s.value for s in RunState}:
        raise InvalidRequest(f"unknown state {state!r} (one of {', '.join(s.value for s in RunState)})")
