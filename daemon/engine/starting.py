"""Starting runs: by an alert (see ``routing``), by a runbook's schedule, or by hand.

A new run is stored with its definition and planned steps, then advanced as far as it goes."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daemon.engine import gate, planner, schedules
from daemon.engine.context import Context
from daemon.engine.effects import Effects
from daemon.engine.identity import Identity
from daemon.engine.runs import Runs
from daemon.engine.views import view_of
from daemon.errors import Conflict, Forbidden, InvalidRequest, NotFound
from daemon.kits.clock import iso
from daemon.runbooks.schema import Runbook
from daemon.store.records import RunRecord, RunState
from daemon.store.sqlite import Tx

if TYPE_CHECKING:
    from daemon.engine.checks import Checker


class Starter:
    def __init__(self, ctx: Context, runs: Runs) -> None:
        self._ctx = ctx
        self._runs = runs
        self.checks: Checker | None = None
        """Runs a runbook's scheduled check before a manual trigger (set by the engine)."""
        self._dumps: dict[str, tuple[Runbook, dict[str, Any]]] = {}

    async def create_run(
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
        now = self._ctx.clock.now()
        run = RunRecord(
            id=self._new_run_id(),
            runbook=rb.name,
            target=target,
            state=RunState.AWAITING_APPROVAL,
            trigger=trigger,
            requester=requester,
            params=params,
            context=context,
            definition=self._dumped(rb),
            created_at=now,
            updated_at=now,
            dry_run=self._ctx.config.dry_run,
        )
        self._ctx.remember_definition(run.id, rb)
        await tx.save_run(run)
        steps = planner.new_steps(run.id, rb, self._ctx.registry)
        await tx.save_steps(steps)
        await self._ctx.event(
            tx,
            run,
            "run_started",
            requester or "runbookd",
            trigger=trigger,
            target=target,
            dry_run=run.dry_run,
        )
        self._ctx.metrics.runs_started.labels(runbook=rb.name).inc()
        await self._runs.advance(tx, run, fx, steps)
        return run

    def _dumped(self, rb: Runbook) -> dict[str, Any]:
        """The runbook as a run stores it; one dict shared by the runs of one loaded runbook (read-only:
        the store serialises it once, see ``daemon.store.sqlite._dumps``)."""
        cached = self._dumps.get(rb.name)
        if cached is None or cached[0] is not rb:
            cached = self._dumps[rb.name] = (rb, rb.model_dump(mode="json", by_alias=True))
        return cached[1]

    def _new_run_id(self) -> str:
        stamp = datetime.fromtimestamp(self._ctx.clock.now(), UTC).strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{secrets.token_hex(3)}"

    async def trigger(self, name: str, params: dict[str, Any], identity: Identity) -> dict[str, Any]:
        """Start a run by hand. Cooldown and daily limits are for automation; a person may override them,
        but never start a second active run for the same target."""
        lr = self._ctx.runbooks.get(name)
        if lr is None:
            raise NotFound(f"no runbook named {name!r}")
        if not identity.at_least("approver"):
            raise Forbidden(
                f"{identity.name} has role {identity.role}; starting runs needs approver or admin"
            )
        rb = lr.runbook
        # Whoever may start a runbook by hand (and choose its params) must be one of its approvers, as
        # for approving it; an admin may start any runbook.
        if identity.role != "admin" and not gate.groups_of(identity, self._ctx.config.approvers) & set(
            rb.approval.approvers
        ):
            raise Forbidden(
                f"{identity.name} is not in an approver group of runbook {rb.name} "
                f"({', '.join(sorted(rb.approval.approvers))}) and cannot start it"
            )
        ctx: dict[str, Any] = {"alert": {}, "schedule": {}, "run": {"runbook": rb.name}, "steps": {}}
        try:
            rendered = planner.render_params(rb, ctx, params)
            target = planner.render_target(rb, {**ctx, "params": rendered})
            run_ctx = {**ctx, "params": rendered, "check": {}}
            run_ctx["run"] = {"runbook": rb.name, "target": target, "dry_run": self._ctx.config.dry_run}
            planner.check_given_params(rb, self._ctx.registry, run_ctx)
        except planner.PlanError as exc:
            raise InvalidRequest(str(exc)) from None
        # A runbook with a scheduled check runs it first; the run starts whatever its when: says.
        check = await self.checks.for_manual(rb, rendered, identity.name) if self.checks else None

        async def body(tx: Tx, fx: Effects) -> dict[str, Any]:
            active = await tx.active_run_for(rb.name, target)
            if active is not None:
                raise Conflict(f"run {active.id} of {rb.name} is already active for {target}")
            context = {"check": check.context()} if check else {}
            run = await self.create_run(tx, rb, target, rendered, "manual", identity.name, context, fx)
            if check:
                await check.record(tx, run.id)
            return await view_of(tx, run.id)

        if check:
            view = await self._ctx.transact(body)
            check.observe()
            return view

        return await self._ctx.transact(body)

    async def fire_schedules(self, tx: Tx, now: float, fx: Effects) -> None:
        for lr in self._ctx.runbooks.values():
            rb = lr.runbook
            for i, trig in enumerate(rb.triggers):
                if trig.schedule is None or trig.check is not None:
                    continue  # a schedule with a check fires through daemon.engine.checks
                key, tz = f"{rb.name}#{i}", self._ctx.config.timezone
                fire = await schedules.advance(tx, key, trig.schedule, tz, now, self._ctx.log, rb.name)
                if fire is not None:
                    await self._fire(tx, rb, trig.schedule, fire, fx)

    async def _fire(self, tx: Tx, rb: Runbook, cron: str, fire: float, fx: Effects) -> None:
        """Start the run a schedule fired, unless its target cannot be rendered or has an active run."""
        sched = {"fire_time": iso(fire), "cron": cron}
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
            self._ctx.log.error("schedule.unrenderable", runbook=rb.name, error=str(exc))
            return
        if await tx.active_run_for(rb.name, target) is not None:
            self._ctx.log.warning(
                "schedule.skipped_active", runbook=rb.name, target=target, fire_time=iso(fire)
            )
            return
        await self.create_run(tx, rb, target, params, "schedule", None, {"schedule": sched}, fx)
