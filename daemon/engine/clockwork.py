"""Work that time drives: recovering runs after a restart, and the tick (expiry of overdue approvals,
reminders, schedules, pruning, gauges)."""

from __future__ import annotations

from daemon.engine import planner
from daemon.engine.context import Context
from daemon.engine.effects import Effects
from daemon.engine.runs import Runs
from daemon.engine.starting import Starter
from daemon.kits.clock import iso
from daemon.store.records import RunState, StepRecord, StepState, UndoState
from daemon.store.sqlite import Tx

_KEEP_INTAKE = 7 * 86400
_RECOVER_PAGE = 200
"""Runs advanced per recovery transaction."""


class Clockwork:
    def __init__(self, ctx: Context, runs: Runs, starter: Starter) -> None:
        self._ctx = ctx
        self._runs = runs
        self._starter = starter
        self._pruned_at = 0.0

    async def recover(self) -> None:
        """After a restart: a step or undo found running re-runs if idempotent, else a person checks it.
        Then every run that may move without a person is advanced, a page per transaction, so the
        webhook (open meanwhile) stores between pages however many runs are active."""

        async def interrupted(tx: Tx, fx: Effects) -> None:
            for st in await tx.steps_in_state(StepState.RUNNING):
                if self._ctx.tasks.executing(f"step.{st.run_id}.{st.idx}"):
                    continue  # still running here (this replica led before): it records its own result
                await self._interrupted(tx, st, fx)
            for undo in await tx.undos_in_state(UndoState.RUNNING):
                await self._runs.undoing.interrupted(tx, undo)

        await self._ctx.transact(interrupted, leader_only=True)
        after = ""
        while True:

            async def page(tx: Tx, fx: Effects, after: str = after) -> str | None:
                runs = await tx.runs_to_advance(after, _RECOVER_PAGE)
                for run in runs:
                    if run.state == RunState.UNDOING:
                        await self._runs.undoing.advance(tx, run, fx)
                    else:
                        await self._runs.advance(tx, run, fx)
                return runs[-1].id if runs else None

            last = await self._ctx.transact(page, leader_only=True)
            if last is None:
                break
            after = last
        self._ctx.metrics.paused.set(1 if await self._ctx.is_paused() else 0)

    async def _interrupted(self, tx: Tx, st: StepRecord, fx: Effects) -> None:
        run = await tx.get_run(st.run_id)
        if run is None:
            return
        if st.idempotent:
            st.state = StepState.APPROVED
            await tx.save_step(st)
            await self._ctx.event(tx, run, "step_interrupted", step=st.step_id, then="re-run (idempotent)")
            return
        now = self._ctx.clock.now()
        st.state, st.requested_at, st.deadline = StepState.AWAITING_APPROVAL, now, None
        st.error = (
            "runbookd stopped while this step ran; its outcome is unknown. Verify the system by hand, "
            "then approve to run it again or reject to abort."
        )
        assert st.plan is not None
        st.plan_hash = planner.plan_hash(run.id, st, st.plan, await self._runs.undoing.approved_of(tx, st))
        run.state, run.updated_at = RunState.NEEDS_ATTENTION, now
        await tx.save_step(st)
        await tx.save_run(run)
        await self._ctx.event(tx, run, "needs_attention", step=st.step_id, reason=st.error)
        fx.notice("run_attention", run.id, st.step_id)

    async def tick(self) -> None:
        """Expire overdue approvals, fire due schedules, refresh gauges."""

        async def body(tx: Tx, fx: Effects) -> None:
            now = self._ctx.clock.now()
            if self._ctx.store.shared:
                await self._take_handoffs(tx, fx)
            for st in await tx.steps_due_before(now):
                run = await tx.get_run(st.run_id)
                if run is not None and run.state.active:
                    await self._runs.expire(tx, run, st, fx)
            await self._remind(tx, now, fx)
            await self._starter.fire_schedules(tx, now, fx)
            if now - self._pruned_at > 3600:
                # Routed notifications and seen-alert records are kept a week, for audit and dedup.
                await tx.prune_inbox(now - _KEEP_INTAKE)
                await tx.prune_alerts(now - _KEEP_INTAKE)
                self._pruned_at = now
            await self._runs.advance_waiting(tx, fx)
            oldest = await tx.oldest_awaiting_approval()
            metrics = self._ctx.metrics
            metrics.oldest_pending_approval.set(now - oldest if oldest else 0)
            metrics.set_active(await tx.count_runs_by_state())

        await self._ctx.transact(body, leader_only=True)

    async def _take_handoffs(self, tx: Tx, fx: Effects) -> None:
        """What followers recorded for the leader: runs to advance (an approval, a manual start) and
        notices to send (a rejection), oldest first."""
        for key, rec in sorted((await tx.kv_items("handoff")).items()):
            for run_id in rec.get("wake", []):
                run = await tx.get_run(str(run_id))
                if run is not None and run.state == RunState.UNDOING:
                    await self._runs.undoing.advance(tx, run, fx)
                elif run is not None and run.state.active and run.state != RunState.NEEDS_ATTENTION:
                    await self._runs.advance(tx, run, fx)
            for kind, run_id, step_id, detail in rec.get("notices", []):
                fx.notice(kind, run_id, step_id, **detail)
            await tx.kv_delete("handoff", key)

    async def _remind(self, tx: Tx, now: float, fx: Effects) -> None:
        """Once per approval request, ``slack.reminder_before`` ahead of its deadline: a ``reminder`` notice."""
        slack = self._ctx.config.slack
        before = slack.reminder_before if slack else None
        if not before:
            return
        for st in await tx.steps_due_before(now + before):
            if st.deadline is None or st.deadline <= now:
                continue
            key = f"{st.run_id}/{st.step_id}/{st.requested_at}"
            if await tx.kv_get("reminders", key) is None:
                await tx.kv_put("reminders", key, {"at": now})
                fx.notice("reminder", st.run_id, st.step_id, deadline=iso(st.deadline))
