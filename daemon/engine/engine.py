"""The run state machine: alerts, schedules and manual triggers start runs; approvals move them on.

Every transition is committed before it is acted on (``Effects`` run after the commit). One store
transaction at a time; actions execute outside transactions, in named, supervised tasks.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections import OrderedDict
from collections.abc import Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog

from daemon.actions.base import ActionContext, ActionRegistry
from daemon.clients.bundle import Clients
from daemon.config import Config
from daemon.engine import gate, planner, schedules
from daemon.engine.effects import Effects
from daemon.engine.events import Alert, WebhookPayload
from daemon.engine.executor import execute
from daemon.engine.identity import SYSTEM, Identity
from daemon.engine.inbox import Inbox
from daemon.engine.metrics import Metrics
from daemon.engine.notifier import Notifier
from daemon.engine.views import run_view
from daemon.errors import Conflict, Forbidden, InvalidRequest, NotFound, StoreUnavailable
from daemon.kits.clock import Clock, SystemClock, iso
from daemon.kits.durations import parse_duration
from daemon.runbooks.loader import LoadedRunbook
from daemon.runbooks.schema import Runbook
from daemon.store.records import ApprovalRecord, EventRecord, RunRecord, RunState, StepRecord, StepState
from daemon.store.sqlite import Store, StoreMemory, Tx

_DONE_STEP = (StepState.SUCCEEDED, StepState.SKIPPED)
_DEFINITION_CACHE = 512
"""Parsed runbook snapshots kept for active runs (each run keeps the definition it started with)."""
_ROUTE_BATCH = 10
"""Notifications routed per transaction: small, so the inbox writer gets the store between batches."""
_ROUTE_MAX_DEFER = 1.0
"""Longest a routing batch waits for intake to pause, so a steady stream still gets routed."""
_KEEP_INTAKE = 7 * 86400


def _action_timeout(default: float, planned: object) -> float:
    """An action that waits (its own ``timeout`` param) gets that long plus a minute to report."""
    if isinstance(planned, int | float | str) and not isinstance(planned, bool):
        try:
            return max(default, parse_duration(planned) + 60)
        except ValueError:
            pass
    return default


class Engine:
    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        registry: ActionRegistry,
        runbooks: dict[str, LoadedRunbook],
        clients: Clients,
        notifiers: Iterable[Notifier] = (),
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        tick_interval: float = 1.0,
    ) -> None:
        self.config = config
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
        self._tasks: set[asyncio.Task[None]] = set()
        self._executions: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._router: asyncio.Task[None] | None = None
        self._route_wanted = asyncio.Event()
        self._routed_seq = 0
        self._routed = asyncio.Condition()
        self.inbox = Inbox(store, self.clock, self._route_wanted.set)
        self._definitions: OrderedDict[str, Runbook] = OrderedDict()
        self._noted: set[tuple[str, int, str]] = set()
        self._pruned_at = 0.0
        self._stopping = False
        """Set by stop(): no step starts any more (one started while draining would be abandoned)."""
        self.metrics.runbooks_loaded.set(len(runbooks))
        self.metrics.preset(sorted(runbooks))

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, background: bool = True) -> None:
        """Recover runs interrupted by a stop or crash, then start the tick loop."""
        self._stopping = False
        await self.recover()
        await self.route_pending()  # notifications stored but not routed before a crash
        await self.tick()
        if background:
            self._ticker = asyncio.create_task(self._tick_loop(), name="engine.tick")
            self._router = asyncio.create_task(self._route_loop(), name="engine.route")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop starting work, let running actions finish for ``grace`` seconds, then cancel them.
        A cancelled step stays ``running`` in the store and is recovered on the next start."""
        self._stopping = True
        for loop_task in (self._ticker, self._router):
            if loop_task is not None:
                loop_task.cancel()  # a routing batch cut off here rolls back and is routed on the next start
                await asyncio.gather(loop_task, return_exceptions=True)
        if self._executions:
            self.log.info("engine.draining", running_steps=len(self._executions), grace=grace)
            _done, pending = await asyncio.wait(self._executions, timeout=grace)
            for task in pending:
                self.log.warning("engine.cancelling_step", task=task.get_name())
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval)
            try:
                await self.tick()
            except StoreUnavailable as exc:
                self.log.warning("engine.tick_failed", error=str(exc))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str, *, execution: bool = False) -> None:
        task = asyncio.create_task(coro, name=name)
        group = self._executions if execution else self._tasks
        group.add(task)

        def done(t: asyncio.Task[None]) -> None:
            group.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.log.error("engine.task_failed", task=t.get_name(), exc_info=t.exception())

        task.add_done_callback(done)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no action or notification task is running (tests, benchmarks, shutdown)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._executions or self._tasks:
            pending = self._executions | self._tasks
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError(f"still running: {sorted(t.get_name() for t in pending)}")
            await asyncio.wait(pending, timeout=left)

    # ------------------------------------------------------------------ helpers

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

    async def _event(
        self, tx: Tx, run: RunRecord, event: str, actor: str = "runbookd", **detail: Any
    ) -> None:
        await self._event_ids(tx, run.id, run.runbook, event, actor, **detail)

    async def _event_ids(
        self, tx: Tx, run_id: str, runbook: str, event: str, actor: str = "runbookd", **detail: Any
    ) -> None:
        await tx.add_event(EventRecord(run_id, self.clock.now(), event, actor, detail))
        self.log.info(f"run.{event}", run_id=run_id, runbook=runbook, actor=actor, **detail)

    async def _finish(self, tx: Tx, run: RunRecord, state: RunState, outcome: str, fx: Effects) -> None:
        now = self.clock.now()
        run.state, run.ended_at, run.outcome, run.updated_at = state, now, outcome, now
        await tx.save_run(run)
        await self._event(tx, run, "run_ended", state=str(state), outcome=outcome)
        fx.notice("run_ended", run.id)
        fx.ended.append((run.runbook, str(state)))
        self._definitions.pop(run.id, None)

    async def _commit_effects(self, tx: Tx, fx: Effects) -> None:
        await fx.materialize(tx)

    def _apply(self, fx: Effects) -> None:
        """Run after commit: metrics, notifications, action executions."""
        for runbook, outcome in fx.ended:
            self.metrics.runs.labels(runbook=runbook, outcome=outcome).inc()
        for runbook, wait in fx.approval_waits:
            self.metrics.approval_wait.labels(runbook=runbook).observe(wait)
        for notice in fx.notices:
            for n in self.notifiers:
                self._spawn(self._notify(n, notice), f"notify.{n.name}.{notice.run['id']}.{notice.kind}")
        for run_id, idx in fx.executions:
            self._spawn(self._execute(run_id, idx), f"step.{run_id}.{idx}", execution=True)

    async def _notify(self, notifier: Notifier, notice: Any) -> None:
        try:
            await notifier.notify(notice)
        except Exception as exc:  # a notifier must never fail a run
            self.metrics.notifications_failed.labels(notifier=notifier.name).inc()
            self.log.warning("notify.failed", notifier=notifier.name, run_id=notice.run["id"], error=str(exc))

    async def _transact(self, body: Any) -> Any:
        """Run ``body(tx, fx)`` in one transaction, then apply its effects."""
        fx = Effects()
        async with self.store.transaction() as tx:
            result = await body(tx, fx)
            await self._commit_effects(tx, fx)
        self._apply(fx)
        return result

    def _new_run_id(self) -> str:
        stamp = datetime.fromtimestamp(self.clock.now(), UTC).strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{secrets.token_hex(3)}"

    # ------------------------------------------------------------------ intake

    async def submit(self, payload: WebhookPayload, raw: str) -> int:
        """Store an Alertmanager notification (group-committed with concurrent ones); returns its receipt
        number once committed. Routing follows in the background. Raises StoreUnavailable."""
        if payload.truncatedAlerts:
            self.log.warning("webhook.truncated", truncated=payload.truncatedAlerts, group=payload.groupKey)
        receipt = await self.inbox.submit(raw, len(payload.alerts))
        firing = sum(1 for alert in payload.alerts if alert.status == "firing")
        self.metrics.count_received(firing, len(payload.alerts) - firing)
        return receipt

    async def ingest(self, payload: WebhookPayload) -> dict[str, Any]:
        """Store and route one notification, returning what it did (tests, benchmarks, tools)."""
        receipt = await self.submit(payload, payload.model_dump_json())
        return await self.routed(receipt)

    async def receipt(self, seq: int) -> dict[str, Any]:
        async with self.store.transaction() as tx:
            found = await tx.receipt(seq)
        if found is None:
            raise NotFound(f"no receipt {seq}")
        return found

    async def routed(self, seq: int, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until a stored notification is routed; what it did (started, attached, cancelled)."""
        if self._router is None or self._router.done():
            await self.route_pending()
        async with asyncio.timeout(timeout), self._routed:
            await self._routed.wait_for(lambda: self._routed_seq >= seq)
        result: dict[str, Any] = (await self.receipt(seq))["result"] or {}
        return result

    async def _route_loop(self) -> None:
        while True:
            await self._route_wanted.wait()
            self._route_wanted.clear()
            try:
                await self.route_pending(yield_to_intake=True)
            except StoreUnavailable as exc:
                self.log.warning("inbox.route_failed", error=str(exc))
                await asyncio.sleep(1.0)
                self._route_wanted.set()

    async def route_pending(self, *, yield_to_intake: bool = False) -> None:
        """Route every stored notification not routed yet, oldest first, in batches.

        With ``yield_to_intake``, a batch waits while notifications are arriving (for at most
        _ROUTE_MAX_DEFER): answering Alertmanager comes first, and a burst is routed right after it."""
        loop = asyncio.get_running_loop()
        while True:
            if yield_to_intake:
                deferred = loop.time()
                while self.inbox.busy() and loop.time() - deferred < _ROUTE_MAX_DEFER:  # noqa: ASYNC110
                    await asyncio.sleep(0.002)  # a debounce: wait for a 2 ms gap in arrivals
            last: int = await self._transact(self._route_batch)
            if last == 0:
                return
            async with self._routed:
                self._routed_seq = max(self._routed_seq, last)
                self._routed.notify_all()

    async def _route_batch(self, tx: Tx, fx: Effects) -> int:
        """Route up to a batch of notifications in one transaction; the highest receipt routed, or 0."""
        rows = await tx.unrouted(_ROUTE_BATCH)
        for seq, raw in rows:
            one = Effects()
            try:
                async with tx.savepoint("route_one"):
                    result = await self._route(tx, WebhookPayload.model_validate_json(raw), one)
                fx.merge(one)
            except (StoreUnavailable, sqlite3.Error):
                raise
            except Exception as exc:  # one bad notification must not block the inbox behind it
                self.log.exception("inbox.unroutable", receipt=seq)
                result = {"error": f"could not be routed: {exc}"}
            await tx.mark_routed(seq, self.clock.now(), result)
        return rows[-1][0] if rows else 0

    async def _route(self, tx: Tx, payload: WebhookPayload, fx: Effects) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "alerts": len(payload.alerts),
            "started": [],
            "attached": [],
            "cancelled": [],
        }
        now = self.clock.now()
        for alert in payload.alerts:
            new = await tx.record_alert(
                alert.key(), alert.startsAt, alert.status, alert.name, alert.labels, now
            )
            if alert.status == "firing":
                await self._on_firing(tx, alert, new, fx, summary)
            else:
                await self._on_resolved(tx, alert, new, fx, summary)
        return summary

    def _matching(self, alert: Alert) -> list[Runbook]:
        return [
            lr.runbook
            for lr in self.runbooks.values()
            if any(t.matches_alert(alert.labels) for t in lr.runbook.triggers)
        ]

    async def _on_firing(self, tx: Tx, alert: Alert, new: bool, fx: Effects, summary: dict[str, Any]) -> None:
        for rb in self._matching(alert):
            ctx: dict[str, Any] = {"alert": alert.as_context(), "run": {"runbook": rb.name}, "steps": {}}
            ctx["schedule"] = {}
            try:
                params = planner.render_params(rb, ctx)
                target = planner.render_target(rb, {**ctx, "params": params})
            except planner.PlanError as exc:
                self.metrics.runs_suppressed.labels(runbook=rb.name, reason="render_error").inc()
                self.log.warning("alert.unroutable", runbook=rb.name, alert=alert.name, error=str(exc))
                continue
            active = await tx.active_run_ref(rb.name, target)
            if active is not None:
                run_id, resolved = active
                await tx.link_alert(alert.key(), rb.name, run_id)
                if new:
                    await self._event_ids(
                        tx, run_id, rb.name, "alert_attached", alert=alert.name, fingerprint=alert.key()
                    )
                if resolved:
                    await tx.set_alert_firing(run_id)
                summary["attached"].append(run_id)
                continue
            reason = await self._policy_blocks(tx, rb, target)
            if reason is not None:
                self.metrics.runs_suppressed.labels(runbook=rb.name, reason=reason.split(":")[0]).inc()
                self.log.warning("run.suppressed", runbook=rb.name, target=target, reason=reason)
                continue
            run = await self._create_run(
                tx, rb, target, params, "alert", None, {"alert": alert.as_context()}, fx
            )
            await tx.link_alert(alert.key(), rb.name, run.id)
            summary["started"].append(run.id)

    async def _policy_blocks(self, tx: Tx, rb: Runbook, target: str) -> str | None:
        now = self.clock.now()
        last = await tx.last_ended_at(rb.name, target)
        if last is not None and now - last < rb.policy.cooldown:
            return f"cooldown: the last run for {target} ended {now - last:.0f}s ago"
        n = await tx.count_runs_since(rb.name, target, now - 86400)
        if n >= rb.policy.max_runs_per_day:
            return f"daily_limit: {n} runs for {target} in the last 24h (max_runs_per_day {rb.policy.max_runs_per_day})"
        return None

    async def _on_resolved(
        self, tx: Tx, alert: Alert, new: bool, fx: Effects, summary: dict[str, Any]
    ) -> None:
        await tx.resolve_alert(alert.key())
        for run in await tx.runs_for_alert(alert.key()):
            if not run.state.active or run.alert_resolved:
                continue
            if await tx.firing_alerts_of(run.id):
                if new:
                    await self._event(
                        tx, run, "alert_resolved_partly", alert=alert.name, fingerprint=alert.key()
                    )
                continue
            run.alert_resolved = True
            await self._event(tx, run, "alert_resolved", alert=alert.name)
            rb = self.definition(run)
            if (
                rb.policy.on_resolved == "cancel"
                and not run.mutated
                and run.state == RunState.AWAITING_APPROVAL
            ):
                await self._cancel_current(tx, run)
                await self._finish(
                    tx, run, RunState.CANCELLED, "the alert resolved before anything was changed", fx
                )
                summary["cancelled"].append(run.id)
            else:
                await tx.save_run(run)
                await self._recheck_when(tx, run, fx)

    async def _recheck_when(self, tx: Tx, run: RunRecord, fx: Effects) -> None:
        """The alert resolved under a run that goes on: a current step not started yet was planned
        while it still fired, so its ``when:`` (e.g. ``not run.alert_resolved``) is checked again, and
        the step is skipped instead of waiting for an approval that would run it anyway."""
        steps = await tx.steps_of(run.id)
        if run.state != RunState.AWAITING_APPROVAL or run.current_step >= len(steps):
            return
        st, spec = steps[run.current_step], self.definition(run).steps[run.current_step]
        if spec.when is None or st.state not in (StepState.AWAITING_APPROVAL, StepState.APPROVED):
            return
        try:
            if planner.should_run(spec, planner.step_context(run, steps)):
                return
        except planner.PlanError:
            return  # it rendered when planned; keep the step as the operator sees it
        st.state, st.finished_at = StepState.SKIPPED, self.clock.now()
        await tx.save_step(st)
        await self._event(tx, run, "step_skipped", step=st.step_id, when=spec.when, reason="alert resolved")
        fx.notice("step_finished", run.id, st.step_id)
        await self._advance(tx, run, fx)

    async def _cancel_current(self, tx: Tx, run: RunRecord) -> None:
        steps = await tx.steps_of(run.id)
        if run.current_step < len(steps):
            st = steps[run.current_step]
            if st.state in (StepState.AWAITING_APPROVAL, StepState.APPROVED, StepState.PENDING):
                st.state, st.finished_at = StepState.SKIPPED, self.clock.now()
                await tx.save_step(st)

    async def _create_run(
        self,
        tx: Tx,
        rb: Runbook,
        target: str,
        params: dict[str, Any],
        trigger: str,
        requester: str | None,
        context: dict[str, Any],
        fx: Effects,
    ) -> RunRecord:
        now = self.clock.now()
        run = RunRecord(
            id=self._new_run_id(),
            runbook=rb.name,
            target=target,
            state=RunState.AWAITING_APPROVAL,
            trigger=trigger,
            requester=requester,
            params=params,
            context=context,
            definition=rb.model_dump(mode="json", by_alias=True),
            created_at=now,
            updated_at=now,
            dry_run=self.config.dry_run,
        )
        await tx.save_run(run)
        for st in planner.new_steps(run.id, rb, self.registry):
            await tx.save_step(st)
        await self._event(
            tx,
            run,
            "run_started",
            requester or "runbookd",
            trigger=trigger,
            target=target,
            dry_run=run.dry_run,
        )
        self.metrics.runs_started.labels(runbook=rb.name).inc()
        await self._advance(tx, run, fx)
        return run

    async def trigger(self, name: str, params: dict[str, Any], identity: Identity) -> dict[str, Any]:
        """Start a run by hand. Cooldown and daily limits are for automation; a person may override them,
        but never start a second active run for the same target."""
        lr = self.runbooks.get(name)
        if lr is None:
            raise NotFound(f"no runbook named {name!r}")
        if not identity.at_least("approver"):
            raise Forbidden(
                f"{identity.name} has role {identity.role}; starting runs needs approver or admin"
            )
        rb = lr.runbook
        ctx: dict[str, Any] = {"alert": {}, "schedule": {}, "run": {"runbook": rb.name}, "steps": {}}
        try:
            rendered = planner.render_params(rb, ctx, params)
            target = planner.render_target(rb, {**ctx, "params": rendered})
        except planner.PlanError as exc:
            raise InvalidRequest(str(exc)) from None

        async def body(tx: Tx, fx: Effects) -> dict[str, Any]:
            active = await tx.active_run_for(rb.name, target)
            if active is not None:
                raise Conflict(f"run {active.id} of {rb.name} is already active for {target}")
            run = await self._create_run(tx, rb, target, rendered, "manual", identity.name, {}, fx)
            return await self._view(tx, run.id)

        result: dict[str, Any] = await self._transact(body)
        return result

    # ------------------------------------------------------------------ progress

    async def _advance(self, tx: Tx, run: RunRecord, fx: Effects) -> None:
        """Move a run forward as far as it can go without a person or an action."""
        steps = await tx.steps_of(run.id)
        rb = self.definition(run)
        while run.state.active and run.state != RunState.NEEDS_ATTENTION:
            if run.current_step >= len(steps):
                await self._finish(tx, run, RunState.SUCCEEDED, f"all {len(steps)} steps done", fx)
                return
            st, spec = steps[run.current_step], rb.steps[run.current_step]
            if st.state in _DONE_STEP or (st.state == StepState.FAILED and spec.continue_on_failure):
                run.current_step += 1
                continue
            if st.state == StepState.FAILED:
                await self._finish(tx, run, RunState.FAILED, f"step {st.step_id} failed: {st.error}", fx)
                return
            if st.state == StepState.PENDING:
                if run.alert_resolved and rb.policy.on_resolved == "cancel" and not run.mutated:
                    await self._cancel_current(tx, run)
                    await self._finish(
                        tx, run, RunState.CANCELLED, "the alert resolved before anything changed", fx
                    )
                    return
                await self._plan_step(tx, run, st, rb, steps, fx)
                continue
            if st.state == StepState.APPROVED and await self._may_start(tx, run, st):
                now = self.clock.now()
                st.state, st.started_at, st.attempts = StepState.RUNNING, now, st.attempts + 1
                run.state, run.mutated = RunState.RUNNING, run.mutated or st.mutating
                await tx.save_step(st)
                await self._event(
                    tx, run, "step_started", step=st.step_id, action=st.action, attempt=st.attempts
                )
                fx.execute(run.id, st.idx)
            elif st.state == StepState.RUNNING:
                run.state = RunState.RUNNING
            elif st.state in (StepState.AWAITING_APPROVAL, StepState.APPROVED):
                run.state = RunState.AWAITING_APPROVAL
            break
        run.updated_at = self.clock.now()
        await tx.save_run(run)

    async def _plan_step(
        self, tx: Tx, run: RunRecord, st: StepRecord, rb: Runbook, steps: list[StepRecord], fx: Effects
    ) -> None:
        spec = rb.steps[st.idx]
        action = self.registry.get(st.action)
        now = self.clock.now()
        if action is None:
            st.state, st.error = StepState.FAILED, f"action {st.action} is no longer known to this daemon"
            await tx.save_step(st)
            return
        ctx = planner.step_context(run, steps)
        try:
            if not planner.should_run(spec, ctx):
                st.state, st.finished_at = StepState.SKIPPED, now
                await tx.save_step(st)
                await self._event(tx, run, "step_skipped", step=st.step_id, when=spec.when)
                return
            st.plan = planner.render_plan(spec, action, ctx)
        except planner.PlanError as exc:
            st.state, st.error, st.finished_at = StepState.FAILED, str(exc), now
            await tx.save_step(st)
            await self._event(tx, run, "step_failed", step=st.step_id, error=str(exc))
            return
        st.plan_hash = planner.plan_hash(run.id, st, st.plan)
        if action.read_only and self.config.approval.auto_approve_read_only:
            st.state = StepState.APPROVED
            await tx.save_step(st)
            await self._event(tx, run, "step_auto_approved", step=st.step_id, plan_hash=st.plan_hash)
            return
        timeout = (
            rb.approval.timeout if rb.approval.timeout is not None else self.config.approval.default_timeout
        )
        st.state, st.requested_at, st.deadline = StepState.AWAITING_APPROVAL, now, now + timeout
        run.state = RunState.AWAITING_APPROVAL
        await tx.save_step(st)
        await self._event(
            tx,
            run,
            "approval_requested",
            step=st.step_id,
            action=st.action,
            plan_hash=st.plan_hash,
            mutating=st.mutating,
            deadline=iso(st.deadline),
        )
        fx.notice("approval_requested", run.id, st.step_id)

    async def _may_start(self, tx: Tx, run: RunRecord, st: StepRecord) -> bool:
        """Pause and the blast-radius budget hold an approved step back (noted once in the timeline)."""
        if self._stopping:
            return False  # stays approved; the next start runs it
        reason = None
        if await self.is_paused(tx):
            reason = "paused: runbookd resume lets it start"
        elif (
            st.mutating
            and await tx.running_mutating_steps() >= self.config.limits.max_concurrent_mutating_steps
        ):
            reason = (
                f"waiting for the blast-radius budget "
                f"({self.config.limits.max_concurrent_mutating_steps} mutating step(s) at a time)"
            )
        if reason is None:
            return True
        key = (run.id, st.idx, reason.split(":")[0].split(" ")[0])
        if key not in self._noted:
            self._noted.add(key)
            await self._event(tx, run, "step_waiting", step=st.step_id, reason=reason)
        return False

    async def _execute(self, run_id: str, idx: int) -> None:
        async with self.store.transaction() as tx:
            run = await tx.get_run(run_id)
            steps = await tx.steps_of(run_id)
        if run is None or idx >= len(steps) or steps[idx].state != StepState.RUNNING:
            return
        st, rb = steps[idx], self.definition(run)
        action = self.registry.get(st.action)
        assert action is not None and st.plan is not None
        log = self.log.bind(run_id=run.id, runbook=run.runbook, step=st.step_id, action=st.action)
        ctx = ActionContext(
            run_id=run.id,
            step_id=st.step_id,
            runbook=run.runbook,
            dry_run=run.dry_run,
            clients=self.clients,
            memory=self.memory,
            limits=self.config.limits,
            clock=self.clock,
            log=log,
            public_url=self.config.server.public_url,
        )
        spec = rb.steps[idx]
        timeout = spec.timeout or _action_timeout(self.config.limits.action_timeout, st.plan.get("timeout"))
        log.info("step.executing", dry_run=run.dry_run, timeout=timeout)
        outcome = await execute(action, ctx, st.plan, timeout)
        result = "succeeded" if outcome.ok else "failed"
        self.metrics.step_duration.labels(action=st.action, outcome=result).observe(outcome.seconds)
        log.info("step.finished", outcome=result, seconds=round(outcome.seconds, 3), error=outcome.error)

        async def record(tx: Tx, fx: Effects) -> None:
            run2 = await tx.get_run(run_id)
            steps2 = await tx.steps_of(run_id)
            if run2 is None or steps2[idx].state != StepState.RUNNING:
                return
            st2 = steps2[idx]
            st2.state = StepState.SUCCEEDED if outcome.ok else StepState.FAILED
            st2.output, st2.error, st2.finished_at = outcome.output, outcome.error, self.clock.now()
            await tx.save_step(st2)
            detail: dict[str, Any] = {"step": st2.step_id, "seconds": round(outcome.seconds, 3)}
            if outcome.error:
                detail["error"] = outcome.error
            await self._event(tx, run2, f"step_{result}", **detail)
            fx.notice("step_finished", run2.id, st2.step_id)
            await self._advance(tx, run2, fx)
            if st2.mutating:
                await self._advance_waiting(tx, fx)

        try:
            await self._transact(record)
        except StoreUnavailable as exc:
            # The step stays `running` in the store: the next start treats it as interrupted.
            log.error("step.result_not_recorded", error=str(exc))

    async def _advance_waiting(self, tx: Tx, fx: Effects) -> None:
        for st in await tx.steps_in_state(StepState.APPROVED):
            run = await tx.get_run(st.run_id)
            if run is not None and run.state.active and run.current_step == st.idx:
                await self._advance(tx, run, fx)

    # ------------------------------------------------------------------ operators

    async def _current(self, tx: Tx, run_id: str, step_id: str | None) -> tuple[RunRecord, StepRecord]:
        run = await tx.get_run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        if not run.state.active:
            raise Conflict(f"run {run.id} is {run.state}: {run.outcome or 'it has ended'}")
        steps = await tx.steps_of(run.id)
        cur = steps[run.current_step]
        if step_id is not None and step_id != cur.step_id:
            other = next((s for s in steps if s.step_id == step_id), None)
            if other is None:
                raise NotFound(f"run {run.id} has no step {step_id!r}")
            raise Conflict(f"step {step_id} is {other.state}; the run is at step {cur.step_id} ({cur.state})")
        return run, cur

    async def approve(
        self, run_id: str, step_id: str | None, identity: Identity, plan_hash: str | None = None
    ) -> dict[str, Any]:
        expired: list[str] = []

        async def body(tx: Tx, fx: Effects) -> dict[str, Any]:
            run, cur = await self._current(tx, run_id, step_id)
            rb = self.definition(run)
            if cur.state != StepState.AWAITING_APPROVAL:
                raise Conflict(f"step {cur.step_id} is {cur.state}, not awaiting approval")
            gate.check_may_approve(identity, rb, run, cur, self.config.approvers)
            now = self.clock.now()
            if cur.deadline is not None and now >= cur.deadline:
                await self._expire(tx, run, cur, fx)
                expired.append(f"step {cur.step_id} expired at {iso(cur.deadline)}; the run has ended")
                return {}
            if plan_hash is not None and plan_hash != cur.plan_hash:
                raise Conflict(
                    f"the plan of step {cur.step_id} changed since you saw it (yours {plan_hash}, "
                    f"now {cur.plan_hash}): review it again"
                )
            approvals = await tx.approvals_of(run.id)
            already = gate.approvers_of(cur, approvals)
            if identity.name in already:
                raise Conflict(
                    f"{identity.name} already approved step {cur.step_id}; it needs "
                    f"{rb.approval.min_approvers} distinct approver(s)"
                )
            assert cur.plan_hash is not None
            await tx.add_approval(
                ApprovalRecord(run.id, cur.step_id, identity.name, identity.via, cur.plan_hash, now)
            )
            count = len(already) + 1
            await self._event(
                tx,
                run,
                "step_approved",
                identity.name,
                step=cur.step_id,
                via=identity.via,
                plan_hash=cur.plan_hash,
                approvals=count,
                needed=rb.approval.min_approvers,
            )
            if count >= rb.approval.min_approvers:
                cur.state = StepState.APPROVED
                await tx.save_step(cur)
                if cur.requested_at is not None:
                    fx.approval_waits.append((run.runbook, now - cur.requested_at))
                if run.state == RunState.NEEDS_ATTENTION:
                    run.state = RunState.AWAITING_APPROVAL
                await self._advance(tx, run, fx)
            return await self._view(tx, run.id)

        result: dict[str, Any] = await self._transact(body)
        if expired:
            raise Conflict(expired[0])
        return result

    async def reject(self, run_id: str, identity: Identity, reason: str) -> dict[str, Any]:
        reason = reason.strip()
        if not reason:
            raise InvalidRequest("a rejection needs a reason")

        async def body(tx: Tx, fx: Effects) -> dict[str, Any]:
            run, cur = await self._current(tx, run_id, None)
            rb = self.definition(run)
            if cur.state == StepState.RUNNING:
                raise Conflict(
                    f"step {cur.step_id} is running and cannot be stopped mid-way; reject after it ends"
                )
            check = StepRecord(**{**cur.__dict__, "mutating": False})  # a requester may abort their own run
            gate.check_may_approve(identity, rb, run, check, self.config.approvers)
            cur.state, cur.finished_at = StepState.REJECTED, self.clock.now()
            await tx.save_step(cur)
            await self._event(
                tx, run, "step_rejected", identity.name, step=cur.step_id, via=identity.via, reason=reason
            )
            await self._finish(
                tx, run, RunState.REJECTED, f"rejected by {identity.name}: {reason[:1000]}", fx
            )
            return await self._view(tx, run.id)

        result: dict[str, Any] = await self._transact(body)
        return result

    async def _expire(self, tx: Tx, run: RunRecord, st: StepRecord, fx: Effects) -> None:
        st.state, st.finished_at = StepState.EXPIRED, self.clock.now()
        await tx.save_step(st)
        await self._event(tx, run, "step_expired", step=st.step_id)
        deadline = iso(st.deadline) if st.deadline else "?"
        await self._finish(tx, run, RunState.EXPIRED, f"step {st.step_id} was not approved by {deadline}", fx)

    async def is_paused(self, tx: Tx | None = None) -> bool:
        if tx is None:
            async with self.store.transaction() as t:
                return await self.is_paused(t)
        rec = await tx.kv_get("engine", "paused")
        return bool(rec and rec.get("paused"))

    async def set_paused(self, paused: bool, identity: Identity) -> dict[str, Any]:
        if not identity.at_least("approver"):
            raise Forbidden(f"{identity.name} has role {identity.role}; pause/resume needs approver or admin")

        async def body(tx: Tx, fx: Effects) -> dict[str, Any]:
            now = self.clock.now()
            await tx.kv_put("engine", "paused", {"paused": paused, "by": identity.name, "at": now})
            if not paused:
                self._noted = {k for k in self._noted if k[2] != "paused"}
                await self._advance_waiting(tx, fx)
            return {"paused": paused, "by": identity.name, "at": iso(now)}

        self.log.warning("engine.paused" if paused else "engine.resumed", by=identity.name)
        result: dict[str, Any] = await self._transact(body)
        self.metrics.paused.set(1 if paused else 0)
        return result

    # ------------------------------------------------------------------ time

    async def recover(self) -> None:
        """After a restart: a step found running re-runs if idempotent, else its run needs a person."""

        async def body(tx: Tx, fx: Effects) -> None:
            for st in await tx.steps_in_state(StepState.RUNNING):
                run = await tx.get_run(st.run_id)
                if run is None:
                    continue
                if st.idempotent:
                    st.state = StepState.APPROVED
                    await tx.save_step(st)
                    await self._event(
                        tx, run, "step_interrupted", step=st.step_id, then="re-run (idempotent)"
                    )
                    continue
                now = self.clock.now()
                st.state, st.requested_at, st.deadline = StepState.AWAITING_APPROVAL, now, None
                st.error = (
                    "runbookd stopped while this step ran; its outcome is unknown. Verify the system by hand, "
                    "then approve to run it again or reject to abort."
                )
                assert st.plan is not None
                st.plan_hash = planner.plan_hash(run.id, st, st.plan)
                run.state, run.updated_at = RunState.NEEDS_ATTENTION, now
                await tx.save_step(st)
                await tx.save_run(run)
                await self._event(tx, run, "needs_attention", step=st.step_id, reason=st.error)
                fx.notice("run_attention", run.id, st.step_id)
            for run in await tx.active_runs():
                if run.state != RunState.NEEDS_ATTENTION:
                    await self._advance(tx, run, fx)

        await self._transact(body)
        self.metrics.paused.set(1 if await self.is_paused() else 0)

    async def tick(self) -> None:
        """Expire overdue approvals, fire due schedules, refresh gauges."""

        async def body(tx: Tx, fx: Effects) -> None:
            now = self.clock.now()
            for st in await tx.steps_due_before(now):
                run = await tx.get_run(st.run_id)
                if run is not None and run.state.active:
                    await self._expire(tx, run, st, fx)
            await self._remind(tx, now, fx)
            await self._fire_schedules(tx, now, fx)
            if now - self._pruned_at > 3600:
                # Routed notifications and seen-alert records are kept a week, for audit and dedup.
                await tx.prune_inbox(now - _KEEP_INTAKE)
                await tx.prune_alerts(now - _KEEP_INTAKE)
                self._pruned_at = now
            await self._advance_waiting(tx, fx)
            oldest = await tx.oldest_awaiting_approval()
            self.metrics.oldest_pending_approval.set(now - oldest if oldest else 0)
            self.metrics.set_active(await tx.count_runs_by_state())

        await self._transact(body)

    async def _remind(self, tx: Tx, now: float, fx: Effects) -> None:
        """Once per approval request, ``slack.reminder_before`` ahead of its deadline: a ``reminder`` notice."""
        before = self.config.slack.reminder_before if self.config.slack else None
        if not before:
            return
        for st in await tx.steps_due_before(now + before):
            if st.deadline is None or st.deadline <= now:
                continue
            key = f"{st.run_id}/{st.step_id}/{st.requested_at}"
            if await tx.kv_get("reminders", key) is None:
                await tx.kv_put("reminders", key, {"at": now})
                fx.notice("reminder", st.run_id, st.step_id, deadline=iso(st.deadline))

    async def _fire_schedules(self, tx: Tx, now: float, fx: Effects) -> None:
        for lr in self.runbooks.values():
            rb = lr.runbook
            for i, trig in enumerate(rb.triggers):
                if trig.schedule is None:
                    continue
                key = f"{rb.name}#{i}"
                rec = await tx.kv_get("schedules", key)
                if rec is None or rec.get("cron") != trig.schedule:
                    await tx.kv_put("schedules", key, {"cron": trig.schedule, "last": now})
                    continue
                fire = schedules.due(trig.schedule, self.config.timezone, float(rec["last"]), now)
                if fire is None:
                    continue
                await tx.kv_put("schedules", key, {"cron": trig.schedule, "last": now})
                sched = {"fire_time": iso(fire), "cron": trig.schedule}
                ctx: dict[str, Any] = {
                    "alert": {},
                    "schedule": sched,
                    "run": {"runbook": rb.name},
                    "steps": {},
                }
                try:
                    params = planner.render_params(rb, ctx)
                    target = planner.render_target(rb, {**ctx, "params": params})
                except planner.PlanError as exc:
                    self.log.error("schedule.unrenderable", runbook=rb.name, error=str(exc))
                    continue
                if await tx.active_run_for(rb.name, target) is not None:
                    self.log.warning(
                        "schedule.skipped_active", runbook=rb.name, target=target, fire_time=iso(fire)
                    )
                    continue
                await self._create_run(tx, rb, target, params, "schedule", None, {"schedule": sched}, fx)

    # ------------------------------------------------------------------ reads

    async def _view(self, tx: Tx, run_id: str, timeline: bool = True) -> dict[str, Any]:
        run = await tx.get_run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        events = await tx.events_of(run_id) if timeline else None
        return run_view(run, await tx.steps_of(run_id), await tx.approvals_of(run_id), events)

    async def get_run(self, run_id: str) -> dict[str, Any]:
        async with self.store.transaction() as tx:
            return await self._view(tx, run_id)

    async def list_runs(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        if state is not None and state not in {s.value for s in RunState}:
            raise InvalidRequest(f"unknown state {state!r} (one of {', '.join(s.value for s in RunState)})")
        async with self.store.transaction() as tx:
            runs = await tx.list_runs(state, limit)
            return [run_view(r, await tx.steps_of(r.id), await tx.approvals_of(r.id)) for r in runs]

    def runbook_list(self) -> list[dict[str, Any]]:
        out = []
        for lr in sorted(self.runbooks.values(), key=lambda x: x.runbook.name):
            rb = lr.runbook
            out.append(
                {
                    "name": rb.name,
                    "description": rb.description.strip(),
                    "file": str(lr.path),
                    "alerts": rb.alert_names,
                    "schedules": [t.schedule for t in rb.triggers if t.schedule],
                    "params": rb.params,
                    "approval": rb.approval.model_dump(mode="json"),
                    "policy": rb.policy.model_dump(mode="json"),
                    "steps": [
                        {
                            "id": s.id,
                            "action": s.action,
                            "mutating": not self.registry.get(s.action).read_only,  # type: ignore[union-attr]
                        }
                        for s in rb.steps
                    ],
                }
            )
        return out


__all__ = ["SYSTEM", "Engine"]
