"""The run state machine: how a run moves from step to step, waits for people and the blast-radius
budget, executes its actions and ends.

Every transition is committed before it is acted on: an action starts only after its ``step_started``
is in the store (see ``Effects``)."""

from __future__ import annotations

from typing import Any

from daemon.engine import planner
from daemon.engine.context import DRY_RUN_HOLD, Context
from daemon.engine.effects import Effects
from daemon.engine.executor import action_timeout, execute
from daemon.engine.undoing import Undoing
from daemon.kits.clock import iso
from daemon.runbooks.schema import Runbook
from daemon.store.records import RunRecord, RunState, StepRecord, StepState
from daemon.store.sqlite import Tx

_DONE_STEP = (StepState.SUCCEEDED, StepState.SKIPPED)


class Runs:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._noted: set[tuple[str, int, str]] = set()
        self.stopping = False
        """Set by stop(): no step starts any more (one started while draining would be abandoned)."""
        self.undoing = Undoing(ctx, stopping=lambda: self.stopping, wake=self.advance_waiting)

    async def advance(
        self, tx: Tx, run: RunRecord, fx: Effects, steps: list[StepRecord] | None = None
    ) -> None:
        """Move a run forward as far as it can go without a person or an action. On a follower, only
        record the run and hand it to the leader, which plans and starts steps. ``steps``: the run's
        steps as this transaction wrote them (a new run's), instead of reading them back."""
        if not fx.leading:
            run.updated_at = self._ctx.clock.now()
            await tx.save_run(run)
            fx.wakes.append(run.id)
            return
        if steps is None:
            steps = await tx.steps_of(run.id)
        rb = self._ctx.definition(run)
        while run.state.active and run.state not in (RunState.NEEDS_ATTENTION, RunState.UNDOING):
            if run.current_step >= len(steps):
                await self.finish(tx, run, RunState.SUCCEEDED, f"all {len(steps)} steps done", fx)
                return
            st, spec = steps[run.current_step], rb.steps[run.current_step]
            if st.state in _DONE_STEP or (st.state == StepState.FAILED and spec.continue_on_failure):
                run.current_step += 1
                continue
            if st.state == StepState.FAILED:
                await self.finish(tx, run, RunState.FAILED, f"step {st.step_id} failed: {st.error}", fx)
                return
            if st.state == StepState.PENDING:
                if run.alert_resolved and rb.policy.on_resolved == "cancel" and not run.mutated:
                    await self.cancel_current(tx, run)
                    await self.finish(
                        tx, run, RunState.CANCELLED, "the alert resolved before anything was changed", fx
                    )
                    return
                await self._plan_step(tx, run, st, rb, steps, fx)
                continue
            if st.state == StepState.APPROVED and await self._may_start(tx, run, st):
                now = self._ctx.clock.now()
                st.state, st.started_at, st.attempts = StepState.RUNNING, now, st.attempts + 1
                run.state, run.mutated = RunState.RUNNING, run.mutated or st.mutating
                await tx.save_step(st)
                await self._ctx.event(
                    tx, run, "step_started", step=st.step_id, action=st.action, attempt=st.attempts
                )
                fx.execute(run.id, st.idx)
            elif st.state == StepState.RUNNING:
                run.state = RunState.RUNNING
            elif st.state in (StepState.AWAITING_APPROVAL, StepState.APPROVED):
                run.state = RunState.AWAITING_APPROVAL
            break
        run.updated_at = self._ctx.clock.now()
        await tx.save_run(run)

    async def _plan_step(
        self, tx: Tx, run: RunRecord, st: StepRecord, rb: Runbook, steps: list[StepRecord], fx: Effects
    ) -> None:
        spec = rb.steps[st.idx]
        action = self._ctx.registry.get(st.action)
        now = self._ctx.clock.now()
        if action is None:
            st.state, st.error = StepState.FAILED, f"action {st.action} is no longer known to this daemon"
            await tx.save_step(st)
            return
        ctx = planner.step_context(run, steps)
        try:
            if not planner.should_run(spec, ctx):
                st.state, st.finished_at = StepState.SKIPPED, now
                await tx.save_step(st)
                await self._ctx.event(tx, run, "step_skipped", step=st.step_id, when=spec.when)
                return
            st.plan = planner.render_plan(spec, action, ctx)
            undo = await self.undoing.plan(tx, run, st, spec, ctx)
        except planner.PlanError as exc:
            st.state, st.error, st.finished_at = StepState.FAILED, str(exc), now
            await tx.save_step(st)
            await self._ctx.event(tx, run, "step_failed", step=st.step_id, error=str(exc))
            return
        st.plan_hash = planner.plan_hash(run.id, st, st.plan, undo)
        if action.read_only and self._ctx.config.approval.auto_approve_read_only:
            st.state = StepState.APPROVED
            await tx.save_step(st)
            await self._ctx.event(tx, run, "step_auto_approved", step=st.step_id, plan_hash=st.plan_hash)
            return
        approval = self._ctx.config.approval
        timeout = rb.approval.timeout if rb.approval.timeout is not None else approval.default_timeout
        st.state, st.requested_at, st.deadline = StepState.AWAITING_APPROVAL, now, now + timeout
        run.state = RunState.AWAITING_APPROVAL
        await tx.save_step(st)
        await self._ctx.event(
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
        """Pause, a dry-run daemon (for a live run's mutating step) and the blast-radius budget hold an
        approved step back (noted once in the timeline)."""
        if self.stopping:
            return False  # stays approved; the next start runs it
        if not self._ctx.leadership.fresh():
            return False  # stays approved; the leader (this replica again or another) starts it
        reason = None
        budget = self._ctx.config.limits.max_concurrent_mutating_steps
        if await self._ctx.is_paused(tx):
            reason = "paused: runbookd resume lets it start"
        elif st.mutating and self._ctx.holds_changes_of(run):
            reason = DRY_RUN_HOLD
        elif st.mutating and await tx.running_mutating_steps() + await tx.running_undos() >= budget:
            reason = f"waiting for the blast-radius budget ({budget} mutating step(s) at a time)"
        if reason is None:
            return True
        key = (run.id, st.idx, reason.split(":")[0].split(" ")[0])
        if key not in self._noted:
            self._noted.add(key)
            await self._ctx.event(tx, run, "step_waiting", step=st.step_id, reason=reason)
        return False

    def forget_waits(self, reason: str) -> None:
        """Note a step held back for ``reason`` (e.g. ``paused``) again the next time it waits."""
        self._noted = {k for k in self._noted if k[2] != reason}

    async def execute(self, run_id: str, idx: int) -> None:
        async with self._ctx.store.transaction() as tx:
            run = await tx.get_run(run_id)
            steps = await tx.steps_of(run_id)
        if run is None or idx >= len(steps) or steps[idx].state != StepState.RUNNING:
            return
        st, rb, config = steps[idx], self._ctx.definition(run), self._ctx.config
        action = self._ctx.registry.get(st.action)
        assert action is not None and st.plan is not None
        log = self._ctx.log.bind(run_id=run.id, runbook=run.runbook, step=st.step_id, action=st.action)
        ctx = self._ctx.action_context(run.id, st.step_id, run.runbook, dry_run=run.dry_run, log=log)
        spec = rb.steps[idx]
        timeout = spec.timeout or action_timeout(config.limits.action_timeout, st.plan.get("timeout"))
        if not self._ctx.leadership.fresh():
            # committed `running` but not sent: the next leader treats it as interrupted
            log.warning("step.not_started", reason="this replica is no longer the leader")
            return
        log.info("step.executing", dry_run=run.dry_run, timeout=timeout)
        outcome = await execute(action, ctx, st.plan, timeout)
        result = "succeeded" if outcome.ok else "failed"
        self._ctx.metrics.step_duration.labels(action=st.action, outcome=result).observe(outcome.seconds)
        log.info("step.finished", outcome=result, seconds=round(outcome.seconds, 3), error=outcome.error)

        async def record(tx: Tx, fx: Effects) -> None:
            run2 = await tx.get_run(run_id)
            steps2 = await tx.steps_of(run_id)
            if run2 is None or steps2[idx].state != StepState.RUNNING:
                return
            st2 = steps2[idx]
            st2.state = StepState.SUCCEEDED if outcome.ok else StepState.FAILED
            st2.output, st2.error, st2.finished_at = outcome.output, outcome.error, self._ctx.clock.now()
            await tx.save_step(st2)
            detail: dict[str, Any] = {"step": st2.step_id, "seconds": round(outcome.seconds, 3)}
            if outcome.error:
                detail["error"] = outcome.error
            await self._ctx.event(tx, run2, f"step_{result}", **detail)
            fx.notice("step_finished", run2.id, st2.step_id)
            await self.advance(tx, run2, fx)
            if st2.mutating:
                await self.advance_waiting(tx, fx)

        await self._ctx.record_result(record, log=log, event="step.result_not_recorded", outcome=result)

    async def advance_waiting(self, tx: Tx, fx: Effects) -> None:
        """Move on what waits for the budget or pause, and re-check undos waiting for their ``when:``."""
        for undoing in await tx.runs_in_state(RunState.UNDOING):
            await self.undoing.advance(tx, undoing, fx)
        for st in await tx.steps_in_state(StepState.APPROVED):
            run = await tx.get_run(st.run_id)
            if run is not None and run.state.active and run.current_step == st.idx:
                await self.advance(tx, run, fx)

    async def finish(self, tx: Tx, run: RunRecord, state: RunState, outcome: str, fx: Effects) -> None:
        """The run's steps are over: undo what they changed (see ``undoing``), then it ends as ``state``."""
        await self.undoing.end(tx, run, state, outcome, fx)

    async def recheck_when(self, tx: Tx, run: RunRecord, fx: Effects) -> None:
        """The alert resolved under a run that goes on: a current step not started yet was planned
        while it still fired, so its ``when:`` (e.g. ``not run.alert_resolved``) is checked again, and
        the step is skipped instead of waiting for an approval that would run it anyway."""
        steps = await tx.steps_of(run.id)
        if run.state != RunState.AWAITING_APPROVAL or run.current_step >= len(steps):
            return
        st, spec = steps[run.current_step], self._ctx.definition(run).steps[run.current_step]
        if spec.when is None or st.state not in (StepState.AWAITING_APPROVAL, StepState.APPROVED):
            return
        try:
            if planner.should_run(spec, planner.step_context(run, steps)):
                return
        except planner.PlanError:
            return  # it rendered when planned; keep the step as the operator sees it
        st.state, st.finished_at = StepState.SKIPPED, self._ctx.clock.now()
        await tx.save_step(st)
        await self._ctx.event(
            tx, run, "step_skipped", step=st.step_id, when=spec.when, reason="alert resolved"
        )
        fx.notice("step_finished", run.id, st.step_id)
        await self.advance(tx, run, fx)

    async def cancel_current(self, tx: Tx, run: RunRecord) -> None:
        steps = await tx.steps_of(run.id)
        if run.current_step < len(steps):
            st = steps[run.current_step]
            if st.state in (StepState.AWAITING_APPROVAL, StepState.APPROVED, StepState.PENDING):
                st.state, st.finished_at = StepState.SKIPPED, self._ctx.clock.now()
                await tx.save_step(st)

    async def expire(self, tx: Tx, run: RunRecord, st: StepRecord, fx: Effects) -> None:
        st.state, st.finished_at = StepState.EXPIRED, self._ctx.clock.now()
        await tx.save_step(st)
        await self._ctx.event(tx, run, "step_expired", step=st.step_id)
        deadline = iso(st.deadline) if st.deadline else "?"
        await self.finish(tx, run, RunState.EXPIRED, f"step {st.step_id} was not approved by {deadline}", fx)
