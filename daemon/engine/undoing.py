"""The undo phase of a run (docs/runbook-format.md, "Undo steps"): how a run ends.

A step's undo is rendered when the step is planned and approved with it (``plan``). When the run ends,
whatever the end, the undo of every step that changed something (a mutating step that started: it
succeeded, failed or was interrupted, so it may have changed state) becomes due (``end``). The run is
then ``undoing``: the due undos run one at a time, the latest step's first, without asking anyone. An
undo whose ``when:`` is false waits, re-checked on every tick, until it holds or its timeout passes; so does
an undo whose action answers "not yet" (``not_yet: true``: it re-checks its own guard right before acting),
asked again every ``NOT_YET_RETRY`` seconds.
Once none is left, the run gets the end it was going to have; if an undo failed, timed out, could not be
rendered or was interrupted without being idempotent, it goes to ``needs_attention`` instead, and a
person closes it (reject) or retries that undo (approve the step).

Undos count against the blast-radius budget like mutating steps, but a pause does not hold them back:
they restore the state from before the run, which is what an operator pausing wants.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from daemon.engine import gate, planner
from daemon.engine.context import DRY_RUN_UNDO_HOLD, Context
from daemon.engine.effects import Effects
from daemon.engine.executor import action_timeout, execute
from daemon.engine.identity import Identity
from daemon.errors import Conflict, NotFound
from daemon.kits.clock import iso
from daemon.runbooks.schema import Step
from daemon.store.records import RunRecord, RunState, StepRecord, StepState, UndoRecord, UndoState
from daemon.store.sqlite import Tx

NOT_YET_RETRY = 30.0
"""Seconds between attempts of an undo whose action answered "not yet" (``not_yet: true``)."""
RUN_ENDS = "run_ends"
"""kv namespace: the end (state, outcome) a run in its undo phase gets once its undos are done."""
_OVER = (UndoState.PLANNED, UndoState.SKIPPED, UndoState.SUCCEEDED, UndoState.FAILED)

Wake = Callable[[Tx, Effects], Awaitable[None]]


def changed_something(st: StepRecord) -> bool:
    """A mutating step that started (and may have changed state), whatever came of it, unless a guard
    refused it before it acted (``refused: true``, recorded by the executor for GuardRefused). A step that
    succeeded without a change (an idempotent re-run) still gets its undo: undos are no-ops then."""
    refused = isinstance(st.output, dict) and st.output.get("refused") is True
    return st.mutating and st.started_at is not None and not refused


class Undoing:
    def __init__(self, ctx: Context, *, stopping: Callable[[], bool], wake: Wake) -> None:
        self._ctx = ctx
        self._stopping = stopping
        self._wake = wake
        """Moves approved steps on once a running undo frees its budget slot."""
        self._noted: set[tuple[str, int, str]] = set()

    # ------------------------------------------------------------------ planning (with the step)

    async def plan(
        self, tx: Tx, run: RunRecord, st: StepRecord, spec: Step, ctx: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Render the step's undo for its approver and record it; None if the step has none.
        Raises PlanError like the step's own plan."""
        if spec.undo is None:
            return None
        action = self._ctx.registry.get(spec.undo.action)
        if action is None:
            raise planner.PlanError(f"step {st.step_id}: undo action {spec.undo.action} is no longer known")
        approved = planner.render_undo(spec, ctx)
        undo = UndoRecord(
            run.id, st.idx, st.step_id, action.name, UndoState.PLANNED, action.idempotent, approved
        )
        await tx.save_undo(undo)
        return approved

    async def approved_of(self, tx: Tx, st: StepRecord) -> dict[str, Any] | None:
        undo = next((u for u in await tx.undos_of(st.run_id) if u.idx == st.idx), None)
        return undo.approved if undo is not None else None

    # ------------------------------------------------------------------ the end of a run

    async def in_undo_phase(self, tx: Tx, run: RunRecord) -> bool:
        return await tx.kv_get(RUN_ENDS, run.id) is not None

    async def end(self, tx: Tx, run: RunRecord, state: RunState, outcome: str, fx: Effects) -> None:
        """End a run: first the undos of the steps that changed something, if any; then ``close``."""
        steps = {s.idx: s for s in await tx.steps_of(run.id)}
        now = self._ctx.clock.now()
        due: list[UndoRecord] = []
        for u in await tx.undos_of(run.id):
            if u.state != UndoState.PLANNED:
                continue
            if changed_something(steps[u.idx]):
                timeout = u.approved.get("timeout") or self._default_timeout(run)
                u.state, u.due_at, u.deadline = UndoState.WAITING, now, now + float(timeout)
                due.append(u)
            else:
                u.state, u.finished_at = UndoState.SKIPPED, now
            await tx.save_undo(u)
        if not due:
            await self.close(tx, run, state, outcome, fx)
            return
        await tx.kv_put(RUN_ENDS, run.id, {"state": str(state), "outcome": outcome})
        run.state, run.outcome, run.updated_at = RunState.UNDOING, outcome, now
        await tx.save_run(run)
        order = [u.step_id for u in sorted(due, key=lambda u: -u.idx)]
        await self._ctx.event(tx, run, "undoing", then=str(state), outcome=outcome, undos=order)
        fx.notice("step_finished", run.id)
        await self.advance(tx, run, fx)

    def _default_timeout(self, run: RunRecord) -> float:
        rb = self._ctx.definition(run)
        return (
            rb.approval.timeout
            if rb.approval.timeout is not None
            else self._ctx.config.approval.default_timeout
        )

    async def close(self, tx: Tx, run: RunRecord, state: RunState, outcome: str, fx: Effects) -> None:
        """The run has ended, for good."""
        now = self._ctx.clock.now()
        run.state, run.ended_at, run.outcome, run.updated_at = state, now, outcome, now
        await tx.save_run(run)
        await self._ctx.event(tx, run, "run_ended", state=str(state), outcome=outcome)
        fx.notice("run_ended", run.id)
        fx.ended.append((run.runbook, str(state)))
        self._ctx.forget_definition(run.id)

    async def advance(self, tx: Tx, run: RunRecord, fx: Effects) -> None:
        """Run the due undos one at a time, the latest step's first; settle the run when none is left.
        An undo waiting for its ``when:`` holds back the undos of earlier steps; a failed one does not."""
        if run.state != RunState.UNDOING:
            return
        if not fx.leading:  # a follower ended the run (a rejection): the leader runs its undos
            fx.wakes.append(run.id)
            return
        steps = await tx.steps_of(run.id)
        ctx = planner.step_context(run, steps)
        now = self._ctx.clock.now()
        for u in sorted(await tx.undos_of(run.id), key=lambda u: -u.idx):
            if u.state in _OVER:
                continue
            if u.state == UndoState.RUNNING:
                return
            if u.state == UndoState.WAITING:
                try:
                    due = planner.undo_due(u.approved, ctx)
                except planner.PlanError as exc:
                    await self._fail(tx, run, u, str(exc), fx)
                    continue
                if due and u.attempts and u.finished_at is not None and now - u.finished_at < NOT_YET_RETRY:
                    due = False  # its action said "not yet": ask it again a little later
                if not due:
                    if u.deadline is not None and now >= u.deadline:
                        why = f"its when: ({u.approved.get('when')}) was still false at {iso(u.deadline)}"
                        if u.attempts and u.error:
                            why = f"its action still answered not yet at {iso(u.deadline)}: {u.error}"
                        await self._fail(tx, run, u, why, fx, event="undo_timed_out")
                        continue
                    await self._note(
                        tx, run, u, "when", when=u.approved.get("when"), deadline=iso(u.deadline or now)
                    )
                    return
                u.state = UndoState.READY
                await tx.save_undo(u)
            if await self._may_start(tx, run, u):
                await self._start(tx, run, u, ctx, fx)
            return
        await self._settle(tx, run, fx)

    async def _may_start(self, tx: Tx, run: RunRecord, u: UndoRecord) -> bool:
        if self._stopping():
            return False  # stays ready; the next start runs it
        if self._ctx.holds_changes_of(run):
            await self._note(tx, run, u, "dry-run", reason=DRY_RUN_UNDO_HOLD)
            return False
        budget = self._ctx.config.limits.max_concurrent_mutating_steps
        if await tx.running_mutating_steps() + await tx.running_undos() < budget:
            return True
        await self._note(
            tx, run, u, "budget", reason=f"waiting for the blast-radius budget ({budget} at a time)"
        )
        return False

    async def _note(self, tx: Tx, run: RunRecord, u: UndoRecord, why: str, **detail: Any) -> None:
        """Say once in the timeline why an undo waits."""
        key = (run.id, u.idx, why)
        if key not in self._noted:
            self._noted.add(key)
            await self._ctx.event(tx, run, "undo_waiting", step=u.step_id, **detail)

    async def _start(self, tx: Tx, run: RunRecord, u: UndoRecord, ctx: dict[str, Any], fx: Effects) -> None:
        action = self._ctx.registry.get(u.action)
        if action is None:
            await self._fail(tx, run, u, f"action {u.action} is no longer known to this daemon", fx)
            await self.advance(tx, run, fx)
            return
        try:
            u.params = planner.undo_params(u.approved, action, ctx)
        except planner.PlanError as exc:
            await self._fail(
                tx, run, u, f"{exc}; check by hand whether step {u.step_id} changed anything", fx
            )
            await self.advance(tx, run, fx)
            return
        u.state, u.started_at, u.attempts = UndoState.RUNNING, self._ctx.clock.now(), u.attempts + 1
        await tx.save_undo(u)
        await self._ctx.event(tx, run, "undo_started", step=u.step_id, action=u.action, attempt=u.attempts)
        fx.execute_undo(run.id, u.idx)

    async def _fail(
        self, tx: Tx, run: RunRecord, u: UndoRecord, error: str, fx: Effects, event: str = "undo_failed"
    ) -> None:
        u.state, u.error, u.finished_at = UndoState.FAILED, error, self._ctx.clock.now()
        await tx.save_undo(u)
        await self._ctx.event(tx, run, event, step=u.step_id, error=error)
        fx.notice("step_finished", run.id)  # the top message shows the undo

    async def _settle(self, tx: Tx, run: RunRecord, fx: Effects) -> None:
        end = await tx.kv_get(RUN_ENDS, run.id) or {"state": "failed", "outcome": "(end not recorded)"}
        failed = [u for u in await tx.undos_of(run.id) if u.state == UndoState.FAILED]
        if not failed:
            await tx.kv_delete(RUN_ENDS, run.id)
            await self.close(tx, run, RunState(end["state"]), str(end["outcome"]), fx)
            return
        names = ", ".join(u.step_id for u in failed)
        run.state, run.updated_at = RunState.NEEDS_ATTENTION, self._ctx.clock.now()
        run.outcome = (
            f"{end['outcome']}; the undo of {names} did not complete: {failed[0].error}. Verify by hand, "
            "then approve the step to retry its undo or reject to close the run"
        )[:2000]
        await tx.save_run(run)
        await self._ctx.event(
            tx, run, "needs_attention", undos=[u.step_id for u in failed], reason=run.outcome
        )
        fx.notice("run_attention", run.id, failed[0].step_id)

    # ------------------------------------------------------------------ a person after a failed undo

    async def retry(
        self,
        tx: Tx,
        run: RunRecord,
        step_id: str | None,
        identity: Identity,
        fx: Effects,
        retry_hash: str | None = None,
    ) -> None:
        """Approve the retry of a failed undo: it waits for its ``when:`` again, with a new deadline.
        ``retry_hash``, when given, must be the failed undo's (``planner.undo_retry_hash``, shown as the
        undo's ``retry_hash``): the step's own plan hash, or one noted at an earlier failure, is refused."""
        failed = [u for u in await tx.undos_of(run.id) if u.state == UndoState.FAILED]
        u = next((u for u in failed if step_id in (None, u.step_id)), None)
        if u is None:
            raise NotFound(f"run {run.id} has no failed undo of step {step_id!r}")
        st = next(s for s in await tx.steps_of(run.id) if s.idx == u.idx)
        config = self._ctx.config
        gate.check_may_approve(
            identity, self._ctx.definition(run), run, st, config.approvers, config.person_of
        )
        expected = planner.undo_retry_hash(u)
        if retry_hash is not None and retry_hash != expected:
            raise Conflict(
                f"the undo of step {u.step_id} failed: approving it now retries that undo ({u.action}), "
                f"whose retry hash is {expected}, not {retry_hash}: review the undo and its error, then "
                "approve that"
            )
        now = self._ctx.clock.now()
        timeout = u.approved.get("timeout") or self._default_timeout(run)
        u.state, u.error, u.due_at, u.deadline = UndoState.WAITING, None, now, now + float(timeout)
        u.finished_at = None
        await tx.save_undo(u)
        self._noted = {k for k in self._noted if k[:2] != (run.id, u.idx)}
        run.state = RunState.UNDOING
        await tx.save_run(run)
        await self._ctx.event(tx, run, "undo_retry_approved", identity.name, step=u.step_id, via=identity.via)
        await self.advance(tx, run, fx)

    async def close_by_person(
        self, tx: Tx, run: RunRecord, identity: Identity, reason: str, fx: Effects
    ) -> None:
        """Reject in the undo phase: the person has checked the failed undos; the run ends as it would have."""
        if run.state != RunState.NEEDS_ATTENTION:
            raise Conflict(
                f"run {run.id} is undoing the changes of its steps; it ends once they are undone "
                "(or an undo's timeout passes)"
            )
        config = self._ctx.config
        gate.check_may_approve(
            identity, self._ctx.definition(run), run, _as_read_only(run), config.approvers, config.person_of
        )
        end = await tx.kv_get(RUN_ENDS, run.id) or {"state": "failed", "outcome": ""}
        await tx.kv_delete(RUN_ENDS, run.id)
        await self._ctx.event(tx, run, "undo_abandoned", identity.name, via=identity.via, reason=reason)
        outcome = f"{end['outcome']}; undo left to {identity.name}: {reason}"[:2000]
        await self.close(tx, run, RunState(end["state"]), outcome, fx)

    # ------------------------------------------------------------------ execution and recovery

    async def execute(self, run_id: str, idx: int) -> None:
        async with self._ctx.store.transaction() as tx:
            run = await tx.get_run(run_id)
            u = next((x for x in await tx.undos_of(run_id) if x.idx == idx), None)
        if run is None or u is None or u.state != UndoState.RUNNING:
            return
        action = self._ctx.registry.get(u.action)
        assert action is not None and u.params is not None
        config = self._ctx.config
        log = self._ctx.log.bind(run_id=run.id, runbook=run.runbook, step=u.step_id, undo=u.action)
        ctx = self._ctx.action_context(run.id, f"{u.step_id}/undo", run.runbook, dry_run=run.dry_run, log=log)
        timeout = action_timeout(config.limits.action_timeout, u.params.get("timeout"))
        if not self._ctx.leadership.fresh():
            # committed `running` but not sent: the next leader treats it as interrupted
            log.warning("undo.not_started", reason="this replica is no longer the leader")
            return
        log.info("undo.executing", dry_run=run.dry_run, timeout=timeout)
        outcome = await execute(action, ctx, u.params, timeout)
        result = "succeeded" if outcome.ok else "failed"
        log.info("undo.finished", outcome=result, seconds=round(outcome.seconds, 3), error=outcome.error)

        async def record(tx: Tx, fx: Effects) -> None:
            run2 = await tx.get_run(run_id)
            u2 = next((x for x in await tx.undos_of(run_id) if x.idx == idx), None)
            if run2 is None or u2 is None or u2.state != UndoState.RUNNING:
                return
            not_yet = not outcome.ok and outcome.output.get("not_yet") is True
            # A dry run changed nothing, so its undo has nothing to wait for: record what it would wait
            # for and let the run end, instead of holding the target for the undo's whole timeout.
            dry_wait = not_yet and run2.dry_run
            ok, not_yet = outcome.ok or dry_wait, not_yet and not dry_wait
            said_before = u2.error
            if not_yet:  # the action re-checked its own guard: try again until the undo's timeout
                u2.state = UndoState.WAITING
            else:
                u2.state = UndoState.SUCCEEDED if ok else UndoState.FAILED
            u2.output, u2.error, u2.finished_at = outcome.output, outcome.error, self._ctx.clock.now()
            await tx.save_undo(u2)
            detail: dict[str, Any] = {"step": u2.step_id, "seconds": round(outcome.seconds, 3)}
            if outcome.error:
                detail["error"] = outcome.error
            if dry_wait:
                detail["dry_run"] = "the undo would wait: " + str(outcome.error)
            if not not_yet:
                await self._ctx.event(tx, run2, "undo_succeeded" if ok else "undo_failed", **detail)
            elif outcome.error != said_before:  # once per reason, not every attempt
                await self._ctx.event(tx, run2, "undo_not_yet", **detail)
            fx.notice("step_finished", run2.id)
            await self.advance(tx, run2, fx)
            await self._wake(tx, fx)

        await self._ctx.record_result(record, log=log, event="undo.result_not_recorded", outcome=result)

    async def interrupted(self, tx: Tx, u: UndoRecord) -> None:
        """An undo found running after a restart: re-run if idempotent, otherwise a person checks."""
        run = await tx.get_run(u.run_id)
        if run is None:
            return
        if u.idempotent:
            u.state = UndoState.READY
            await tx.save_undo(u)
            await self._ctx.event(tx, run, "undo_interrupted", step=u.step_id, then="re-run (idempotent)")
            return
        u.state, u.finished_at = UndoState.FAILED, self._ctx.clock.now()
        u.error = (
            "runbookd stopped while this undo ran; its outcome is unknown. Verify the system by hand, then "
            "approve the step to run the undo again or reject to close the run"
        )
        await tx.save_undo(u)
        await self._ctx.event(tx, run, "undo_interrupted", step=u.step_id, then="needs attention")


def _as_read_only(run: RunRecord) -> StepRecord:
    """Who may close a run after its undo failed: its approvers, the requester included (as a reject)."""
    return StepRecord(run.id, 0, "undo", "undo", StepState.FAILED, mutating=False, idempotent=True)
