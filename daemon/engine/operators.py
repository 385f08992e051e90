"""What operators do to runs: approve or reject the current step, pause and resume the engine.

Who may do it is ``gate``'s rule; an approval counts only for the plan the approver saw (its hash)."""

from __future__ import annotations

from typing import Any

from daemon.engine import gate
from daemon.engine.context import Context
from daemon.engine.effects import Effects
from daemon.engine.identity import Identity
from daemon.engine.runs import Runs
from daemon.engine.views import view_of
from daemon.errors import Conflict, Forbidden, InvalidRequest, NotFound
from daemon.kits.clock import iso
from daemon.runbooks.schema import Runbook
from daemon.store.records import ApprovalRecord, RunRecord, RunState, StepRecord, StepState
from daemon.store.sqlite import Tx

REASON_MAX = 1000
"""Longest rejection reason (as Slack's reason dialog allows)."""


class Operators:
    def __init__(self, ctx: Context, runs: Runs) -> None:
        self._ctx = ctx
        self._runs = runs

    async def _current(self, tx: Tx, run_id: str, step_id: str | None) -> tuple[RunRecord, StepRecord]:
        run = await tx.get_run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        if not run.state.active:
            raise Conflict(f"run {run.id} is {run.state}: {run.outcome or 'it has ended'}")
        if run.state == RunState.UNDOING:
            raise Conflict(
                f"run {run.id} is undoing the changes of its steps ({run.outcome}); it ends once they are "
                "undone or an undo's timeout passes"
            )
        steps = await tx.steps_of(run.id)
        cur = steps[run.current_step]
        if step_id is not None and step_id != cur.step_id:
            other = next((s for s in steps if s.step_id == step_id), None)
            if other is None:
                raise NotFound(f"run {run.id} has no step {step_id!r}")
            raise Conflict(f"step {step_id} is {other.state}; the run is at step {cur.step_id} ({cur.state})")
        return run, cur

    async def _undo_phase(self, tx: Tx, run_id: str) -> RunRecord | None:
        """The run, if it waits for a person after one of its undos failed."""
        run = await tx.get_run(run_id)
        if run is None or run.state != RunState.NEEDS_ATTENTION:
            return None
        return run if await self._runs.undoing.in_undo_phase(tx, run) else None

    async def approve(
        self, run_id: str, step_id: str | None, identity: Identity, plan_hash: str | None = None
    ) -> dict[str, Any]:
        expired: list[str] = []

        async def body(tx: Tx, fx: Effects) -> dict[str, Any]:
            undo_phase = await self._undo_phase(tx, run_id)
            if undo_phase is not None:  # an undo failed: approving its step retries that undo
                await self._runs.undoing.retry(tx, undo_phase, step_id, identity, fx, plan_hash)
                return await view_of(tx, run_id)
            run, cur = await self._current(tx, run_id, step_id)
            rb = self._ctx.definition(run)
            if cur.state != StepState.AWAITING_APPROVAL:
                raise Conflict(f"step {cur.step_id} is {cur.state}, not awaiting approval")
            config = self._ctx.config
            gate.check_may_approve(identity, rb, run, cur, config.approvers, config.person_of)
            now = self._ctx.clock.now()
            if cur.deadline is not None and now >= cur.deadline:
                await self._runs.expire(tx, run, cur, fx)
                expired.append(f"step {cur.step_id} expired at {iso(cur.deadline)}; the run has ended")
                return {}
            if plan_hash is not None and plan_hash != cur.plan_hash:
                raise Conflict(
                    f"the plan of step {cur.step_id} changed since you saw it (yours {plan_hash}, "
                    f"now {cur.plan_hash}): review it again"
                )
            await self._add_approval(tx, run, cur, rb, identity, now, fx)
            return await view_of(tx, run.id)

        result = await self._ctx.transact(body)
        if expired:
            raise Conflict(expired[0])
        return result

    async def _add_approval(
        self,
        tx: Tx,
        run: RunRecord,
        cur: StepRecord,
        rb: Runbook,
        identity: Identity,
        now: float,
        fx: Effects,
    ) -> None:
        """Record one approver's approval; with enough distinct approvers the step is approved."""
        approvals = await tx.approvals_of(run.id)
        person_of = self._ctx.config.person_of
        already = gate.approvers_of(cur, approvals, person_of)
        if person_of(identity.name) in already:
            raise Conflict(
                f"{identity.name} ({person_of(identity.name)}) already approved step {cur.step_id}; it needs "
                f"{rb.approval.min_approvers} distinct people"
            )
        assert cur.plan_hash is not None
        await tx.add_approval(
            ApprovalRecord(run.id, cur.step_id, identity.name, identity.via, cur.plan_hash, now)
        )
        count = len(already) + 1
        await self._ctx.event(
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
            await self._runs.advance(tx, run, fx)

    async def reject(self, run_id: str, identity: Identity, reason: str) -> dict[str, Any]:
        reason = reason.strip()
        if not reason:
            raise InvalidRequest("a rejection needs a reason")
        if len(reason) > REASON_MAX:  # it goes to the timeline, the log and Slack whole
            raise InvalidRequest(
                f"a rejection reason is at most {REASON_MAX} characters (this one has {len(reason)})"
            )

        async def body(tx: Tx, fx: Effects) -> dict[str, Any]:
            undo_phase = await self._undo_phase(tx, run_id)
            if undo_phase is not None:  # an undo failed and a person has checked: close the run
                await self._runs.undoing.close_by_person(tx, undo_phase, identity, reason, fx)
                return await view_of(tx, run_id)
            run, cur = await self._current(tx, run_id, None)
            rb = self._ctx.definition(run)
            if cur.state == StepState.RUNNING:
                raise Conflict(
                    f"step {cur.step_id} is running and cannot be stopped mid-way; reject after it ends"
                )
            check = StepRecord(**{**cur.__dict__, "mutating": False})  # a requester may abort their own run
            config = self._ctx.config
            gate.check_may_approve(identity, rb, run, check, config.approvers, config.person_of)
            cur.state, cur.finished_at = StepState.REJECTED, self._ctx.clock.now()
            await tx.save_step(cur)
            await self._ctx.event(
                tx, run, "step_rejected", identity.name, step=cur.step_id, via=identity.via, reason=reason
            )
            await self._runs.finish(
                tx, run, RunState.REJECTED, f"rejected by {identity.name}: {reason[:1000]}", fx
            )
            return await view_of(tx, run.id)

        return await self._ctx.transact(body)

    async def set_paused(self, paused: bool, identity: Identity) -> dict[str, Any]:
        if not identity.at_least("approver"):
            raise Forbidden(f"{identity.name} has role {identity.role}; pause/resume needs approver or admin")

        async def body(tx: Tx, fx: Effects) -> dict[str, Any]:
            now = self._ctx.clock.now()
            await tx.kv_put("engine", "paused", {"paused": paused, "by": identity.name, "at": now})
            if not paused:
                self._runs.forget_waits("paused")
                await self._runs.advance_waiting(tx, fx)
            return {"paused": paused, "by": identity.name, "at": iso(now)}

        self._ctx.log.warning("engine.paused" if paused else "engine.resumed", by=identity.name)
        result = await self._ctx.transact(body)
        self._ctx.metrics.paused.set(1 if paused else 0)
        return result
