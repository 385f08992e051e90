"""Scheduled checks: a schedule trigger's read-only ``check:`` runs at each fire without approval, and a
run (with ``check`` in its context) starts only when its ``when:`` is true. Otherwise the result is only
recorded, so nobody is asked anything when there is nothing to do.

Restart rules are the schedules' own: the fire is noted as ``pending`` in the store in the same
transaction that advances the schedule, the check runs outside any transaction, and its result (and the
run it starts) is recorded in one transaction that also clears ``pending``. A daemon that dies while a
check runs finds it pending on start and runs it once more (it only reads); a result already recorded is
never recorded, nor its run started, twice.

Per-check state lives in the store's key-value records (namespace ``checks``, key ``<runbook>#<trigger
index>``), so the PostgreSQL store needs nothing new.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from daemon.engine import planner, schedules
from daemon.engine.context import Context
from daemon.engine.effects import Effects
from daemon.engine.executor import action_timeout, execute
from daemon.engine.starting import Starter
from daemon.errors import Conflict, InvalidRequest, LostLeadership, StoreUnavailable, TemplateError
from daemon.kits.clock import iso
from daemon.runbooks import templating
from daemon.runbooks.schema import Runbook, Trigger
from daemon.store.sqlite import Tx

NAMESPACE = "checks"
Outcome = Literal["ok", "work", "error"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "work", "error")
_MESSAGE_MAX = 500


@dataclass(frozen=True)
class CheckResult:
    """One evaluation of a check: what it found and whether that is work for a run."""

    outcome: Outcome
    findings: int
    message: str
    output: dict[str, Any]
    params: dict[str, Any]
    seconds: float

    def context(self, action: str, fire: float) -> dict[str, Any]:
        """What the run's templates see as ``check``."""
        return {
            "action": action,
            "ok": self.outcome != "error",
            "outcome": self.outcome,
            "findings": self.findings,
            "message": self.message,
            "fire_time": iso(fire),
            "output": self.output,
        }


def count_findings(output: dict[str, Any], work: bool) -> int:
    """The convention: an action reports ``findings``, the list of items needing action (indices,
    snapshots, volumes, rules) or their number. Without it: 1 when the check found work, else 0."""
    value = output.get("findings")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, list | tuple | dict):
        return len(value)
    return 1 if work else 0


def check_triggers(rb: Runbook) -> list[tuple[int, Trigger]]:
    return [(i, t) for i, t in enumerate(rb.triggers) if t.schedule is not None and t.check is not None]


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 3] + "..."


class Checker:
    def __init__(self, ctx: Context, starter: Starter) -> None:
        self._ctx = ctx
        self._starter = starter
        self._inflight: set[str] = set()
        self._restored = False

    def _all(self) -> list[tuple[str, Runbook, int, Trigger]]:
        out = []
        for lr in self._ctx.runbooks.values():
            for i, trig in check_triggers(lr.runbook):
                out.append((f"{lr.runbook.name}#{i}", lr.runbook, i, trig))
        return out

    # ------------------------------------------------------------------ firing

    async def tick(self) -> None:
        """Note the checks whose schedule is due as pending, then start every pending one not running."""

        async def body(tx: Tx, fx: Effects) -> list[tuple[str, Runbook, int, float]]:
            now = self._ctx.clock.now()
            if not self._restored:
                await self._restore_gauges(tx)
            due = []
            for key, rb, idx, trig in self._all():
                assert trig.schedule is not None
                tz = self._ctx.config.timezone
                fire = await schedules.advance(tx, key, trig.schedule, tz, now, self._ctx.log, rb.name)
                if fire is not None:
                    noted = await tx.kv_get(NAMESPACE, key) or {}
                    await tx.kv_put(NAMESPACE, key, {**noted, "pending": fire})
                rec = await tx.kv_get(NAMESPACE, key)
                if rec and rec.get("pending") is not None and key not in self._inflight:
                    due.append((key, rb, idx, float(rec["pending"])))
            return due

        epoch = self._ctx.leadership.epoch
        for key, rb, idx, fire in await self._ctx.transact(body, leader_only=True):
            self._inflight.add(key)
            self._ctx.tasks.spawn(self._run_scheduled(key, rb, idx, fire, epoch), f"check.{key}")

    async def _run_scheduled(self, key: str, rb: Runbook, idx: int, fire: float, epoch: int | None) -> None:
        try:
            trig = rb.triggers[idx]
            sched = {"fire_time": iso(fire), "cron": trig.schedule}
            result = await self.evaluate(rb, trig, sched, None)

            async def record(tx: Tx, fx: Effects) -> bool:
                if self._ctx.leadership.epoch != epoch:
                    # Started under a leadership since lost (even if this replica leads again): the
                    # leader of the moment owns the pending fire and may have recorded it already.
                    return False
                rec = await tx.kv_get(NAMESPACE, key)
                pending = rec.get("pending") if rec else None
                if pending is None or float(pending) < fire:
                    return False  # recorded already (or the state was reset): never twice
                run_id = None
                message = result.message
                if result.outcome == "work":
                    run_id, message = await self._start(tx, rb, trig, sched, fire, result, fx)
                await self.save(tx, key, rb, trig, fire, result, message, run_id, pending=None)
                return True

            if await self._ctx.transact(record, leader_only=True):
                self.observe(rb.name, fire, result)
        except (
            StoreUnavailable,
            LostLeadership,
        ) as exc:  # still pending in the store: the leader runs it again
            self._ctx.log.warning("check.not_recorded", check=key, error=str(exc))
        finally:
            self._inflight.discard(key)

    async def _start(
        self,
        tx: Tx,
        rb: Runbook,
        trig: Trigger,
        sched: dict[str, Any],
        fire: float,
        result: CheckResult,
        fx: Effects,
    ) -> tuple[str | None, str]:
        assert trig.check is not None
        check = result.context(trig.check.action, fire)
        ctx = {"alert": {}, "schedule": sched, "run": {"runbook": rb.name}, "steps": {}, "check": check}
        try:
            target = planner.render_target(rb, {**ctx, "params": result.params})
        except planner.PlanError as exc:
            return None, _short(f"{result.message}; no run started: {exc}")
        active = await tx.active_run_for(rb.name, target)
        if active is not None:
            return active.id, _short(f"{result.message}; run {active.id} is still active: not started again")
        context = {"schedule": sched, "check": check}
        run = await self._starter.create_run(tx, rb, target, result.params, "schedule", None, context, fx)
        return run.id, _short(f"{result.message}; started run {run.id}")

    # ------------------------------------------------------------------ evaluating

    async def evaluate(
        self, rb: Runbook, trig: Trigger, sched: dict[str, Any], given: dict[str, Any] | None
    ) -> CheckResult:
        """Run the check's action (read-only, no approval, with a timeout) and decide ``when:``."""
        assert trig.check is not None
        check = trig.check
        started = time.monotonic()

        def error(message: str, params: dict[str, Any], output: dict[str, Any] | None = None) -> CheckResult:
            return CheckResult("error", 0, _short(message), output or {}, params, time.monotonic() - started)

        base: dict[str, Any] = {"alert": {}, "schedule": sched, "run": {"runbook": rb.name}, "steps": {}}
        try:
            params = given if given is not None else planner.render_params(rb, base)
        except planner.PlanError as exc:
            return error(f"params: {exc}", {})
        action = self._ctx.registry.get(check.action)
        if action is None or not action.read_only:
            return error(f"check action {check.action} is not a read-only action of this daemon", params)
        try:
            plan = templating.render(check.with_, {"params": params, "schedule": sched, "check": {}})
        except TemplateError as exc:
            return error(f"check with: {exc}", params)
        config = self._ctx.config
        log = self._ctx.log.bind(runbook=rb.name, check=check.action)
        actx = self._ctx.action_context(f"check-{rb.name}", "check", rb.name, dry_run=config.dry_run, log=log)
        planned = plan.get("timeout") if isinstance(plan, dict) else None
        timeout = check.timeout or action_timeout(config.limits.action_timeout, planned)
        outcome = await execute(action, actx, plan if isinstance(plan, dict) else {}, timeout)
        if not outcome.ok:
            return error(f"{check.action} failed: {outcome.error}", params, outcome.output)
        output = outcome.output
        seen = {
            "output": output,
            "ok": True,
            "findings": count_findings(output, False),
            "action": check.action,
        }
        try:
            work = bool(templating.render(check.when, {"params": params, "schedule": sched, "check": seen}))
        except TemplateError as exc:
            return error(f"check when: {exc}", params, output)
        findings = count_findings(output, work)
        said = str(output.get("message") or f"{findings} finding(s)")
        log.info("check.evaluated", work=work, findings=findings, seconds=round(outcome.seconds, 3))
        return CheckResult(
            "work" if work else "ok", findings, _short(said), output, params, time.monotonic() - started
        )

    # ------------------------------------------------------------------ manual trigger

    async def for_manual(self, rb: Runbook, params: dict[str, Any], requester: str) -> ManualCheck | None:
        """A manual trigger of a runbook with a check runs the check first; its run starts whatever
        ``when:`` says. A check that fails is recorded and refuses the trigger (its run would plan on
        nothing)."""
        found = check_triggers(rb)
        if not found:
            return None
        idx, trig = found[0]
        assert trig.check is not None
        key, fire = f"{rb.name}#{idx}", self._ctx.clock.now()
        sched = {"fire_time": iso(fire), "cron": trig.schedule}
        self._refuse_bad_params(trig, sched, params)
        result = await self.evaluate(rb, trig, sched, params)
        manual = ManualCheck(self, key, rb, trig, fire, result, requester)
        if result.outcome == "error":
            await self._ctx.transact(lambda tx, fx: manual.record(tx, None))
            manual.observe()
            raise Conflict(f"the check of {rb.name} failed, so no run was started: {result.message}")
        return manual

    def _refuse_bad_params(self, trig: Trigger, sched: dict[str, Any], params: dict[str, Any]) -> None:
        """A value the check's action refuses is the caller's mistake, not a failing check: InvalidRequest
        (400) before the check runs, and nothing recorded (the check's last result, its metrics and the
        alert on them stay as the schedule left them). What cannot be rendered yet is left to ``evaluate``."""
        assert trig.check is not None
        action = self._ctx.registry.get(trig.check.action)
        if action is None:
            return
        try:
            plan = templating.render(trig.check.with_, {"params": params, "schedule": sched, "check": {}})
        except TemplateError:
            return
        try:
            planner.validate_with(action, trig.check.with_, plan, "check")
        except planner.PlanError as exc:
            raise InvalidRequest(str(exc)) from None

    # ------------------------------------------------------------------ state

    async def save(
        self,
        tx: Tx,
        key: str,
        rb: Runbook,
        trig: Trigger,
        fire: float,
        result: CheckResult,
        message: str,
        run_id: str | None,
        *,
        pending: float | None,
    ) -> None:
        rec = await tx.kv_get(NAMESPACE, key) or {}
        if rec.get("pending") is not None and rec.get("pending") != fire:
            pending = rec["pending"]  # a later fire is queued behind this one: keep it
        await tx.kv_put(
            NAMESPACE,
            key,
            {
                "runbook": rb.name,
                "schedule": trig.schedule,
                "last_fire": fire,
                "outcome": result.outcome,
                "findings": result.findings,
                "message": message,
                "run_id": run_id,
                "seconds": round(result.seconds, 3),
                "pending": pending,
            },
        )

    def leadership_changed(self, leading: bool) -> None:
        """The check gauges are the leader's: a replica that stops leading drops them (the leader's
        replace them; an alert taking ``max`` over replicas would otherwise keep a cleared error), and
        one that leads again restores them from the store at its first tick."""
        self._restored = False
        if not leading:
            m = self._ctx.metrics
            for gauge in (m.check_last_fire, m.check_last_outcome, m.check_findings):
                gauge.clear()

    def observe(self, runbook: str, fire: float, result: CheckResult) -> None:
        m = self._ctx.metrics
        m.check_last_fire.labels(runbook=runbook).set(fire)
        m.check_outcomes.labels(runbook=runbook, outcome=result.outcome).inc()
        m.check_findings.labels(runbook=runbook).set(result.findings)
        for outcome in OUTCOMES:
            m.check_last_outcome.labels(runbook=runbook, outcome=outcome).set(int(outcome == result.outcome))

    async def _restore_gauges(self, tx: Tx) -> None:
        """After a start, the gauges show the last recorded results, not zero."""
        recs = await tx.kv_items(NAMESPACE)
        m = self._ctx.metrics
        for key, rb, _idx, _trig in self._all():
            for outcome in OUTCOMES:
                m.check_outcomes.labels(runbook=rb.name, outcome=outcome)
            rec = recs.get(key)
            if rec and rec.get("last_fire") is not None:
                m.check_last_fire.labels(runbook=rb.name).set(float(rec["last_fire"]))
                m.check_findings.labels(runbook=rb.name).set(float(rec.get("findings") or 0))
                for outcome in OUTCOMES:
                    last = int(outcome == rec.get("outcome"))
                    m.check_last_outcome.labels(runbook=rb.name, outcome=outcome).set(last)
        self._restored = True

    async def list(self) -> list[dict[str, Any]]:
        """Per check: runbook, schedule, last fire, outcome, findings, message (GET /api/v1/checks)."""
        async with self._ctx.store.transaction() as tx:
            recs = await tx.kv_items(NAMESPACE)
        out = []
        for key, rb, idx, trig in sorted(self._all(), key=lambda c: c[0]):
            assert trig.check is not None
            rec = recs.get(key) or {}
            last = rec.get("last_fire")
            out.append(
                {
                    "runbook": rb.name,
                    "trigger": idx,
                    "schedule": trig.schedule,
                    "action": trig.check.action,
                    "last_fire": iso(float(last)) if last is not None else None,
                    "outcome": rec.get("outcome"),
                    "findings": rec.get("findings"),
                    "message": rec.get("message") or ("never fired yet" if last is None else ""),
                    "run_id": rec.get("run_id"),
                    "pending": rec.get("pending") is not None,
                }
            )
        return out


@dataclass
class ManualCheck:
    """The check a manual trigger ran: recorded, and put in the run's context, with the run it starts."""

    checker: Checker
    key: str
    runbook: Runbook
    trigger: Trigger
    fire: float
    result: CheckResult
    requester: str

    def context(self) -> dict[str, Any]:
        assert self.trigger.check is not None
        return self.result.context(self.trigger.check.action, self.fire)

    async def record(self, tx: Tx, run_id: str | None) -> None:
        said = f"manual trigger by {self.requester}: {self.result.message}"
        if run_id is not None:
            said += f"; started run {run_id}"
        rec = await tx.kv_get(NAMESPACE, self.key) or {}
        pending = rec.get("pending")
        await self.checker.save(
            tx,
            self.key,
            self.runbook,
            self.trigger,
            self.fire,
            self.result,
            _short(said),
            run_id,
            pending=float(pending) if pending is not None else None,
        )

    def observe(self) -> None:
        self.checker.observe(self.runbook.name, self.fire, self.result)
