"""Intake and routing of Alertmanager notifications: stored first (see ``inbox``), then routed in
batches, in the order received. A firing alert starts a run of each runbook it matches (unless one is
active for the target, or policy holds it back); a resolved one may cancel or re-check its runs."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from daemon.engine import planner
from daemon.engine.context import Context
from daemon.engine.effects import Effects
from daemon.engine.events import Alert, WebhookPayload
from daemon.engine.inbox import Inbox
from daemon.engine.runs import Runs
from daemon.engine.starting import Starter
from daemon.errors import NotFound, StoreUnavailable
from daemon.kits.clock import iso
from daemon.runbooks.schema import Runbook
from daemon.store.records import RunState
from daemon.store.sqlite import Tx

_ROUTE_BATCH = 10
"""Notifications routed per transaction: small, so the inbox writer gets the store between batches."""
_ROUTE_MAX_DEFER = 1.0
"""Longest a routing batch waits for intake to pause, so a steady stream still gets routed."""


class Router:
    def __init__(self, ctx: Context, runs: Runs, starter: Starter) -> None:
        self._ctx = ctx
        self._runs = runs
        self._starter = starter
        self._wanted = asyncio.Event()
        self._routed_seq = 0
        self._routed = asyncio.Condition()
        self.inbox = Inbox(ctx.store, ctx.clock, self._wanted.set)

    async def submit(self, payload: WebhookPayload, raw: str) -> int:
        """Store an Alertmanager notification (group-committed with concurrent ones); returns its receipt
        number once committed. Routing follows in the background. Raises StoreUnavailable."""
        if payload.truncatedAlerts:
            self._ctx.log.warning(
                "webhook.truncated", truncated=payload.truncatedAlerts, group=payload.groupKey
            )
        receipt = await self.inbox.submit(raw, len(payload.alerts))
        firing = sum(1 for alert in payload.alerts if alert.status == "firing")
        self._ctx.metrics.count_received(firing, len(payload.alerts) - firing)
        return receipt

    def wake(self) -> None:
        """Look for stored notifications (other replicas store them too)."""
        self._wanted.set()

    async def receipt(self, seq: int) -> dict[str, Any]:
        async with self._ctx.store.transaction() as tx:
            found = await tx.receipt(seq)
        if found is None:
            raise NotFound(f"no receipt {seq}")
        # ISO times, like every other timestamp of the API.
        for key in ("received_at", "routed_at"):
            if isinstance(found.get(key), int | float):
                found[key] = iso(float(found[key]))
        return found

    async def wait_routed(self, seq: int, timeout: float) -> dict[str, Any]:
        """Wait until the routing of a stored notification is committed; what it did."""
        async with asyncio.timeout(timeout), self._routed:
            await self._routed.wait_for(lambda: self._routed_seq >= seq)
        result: dict[str, Any] = (await self.receipt(seq))["result"] or {}
        return result

    async def loop(self) -> None:
        """Route what the inbox stores, as it is stored (the engine's background ``engine.route`` task)."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            if not self._ctx.leadership.leading:
                continue  # the leader routes what any replica stored; the tick wakes this loop
            try:
                await self.route_pending(yield_to_intake=True)
            except Exception as exc:  # never end the loop: stored notifications would wait for a restart
                if isinstance(exc, StoreUnavailable):
                    self._ctx.log.warning("inbox.route_failed", error=str(exc))
                else:
                    self._ctx.log.exception("inbox.route_crashed")
                await asyncio.sleep(1.0)
                self._wanted.set()

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
            last = await self._ctx.transact(self._route_batch, leader_only=True)
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
            except (StoreUnavailable, sqlite3.Error):  # PostgreSQL errors arrive as StoreUnavailable
                raise
            except Exception as exc:  # one bad notification must not block the inbox behind it
                self._ctx.log.exception("inbox.unroutable", receipt=seq)
                result = {"error": f"could not be routed: {exc}"}
            await tx.mark_routed(seq, self._ctx.clock.now(), result)
        return rows[-1][0] if rows else 0

    async def _route(self, tx: Tx, payload: WebhookPayload, fx: Effects) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "alerts": len(payload.alerts),
            "started": [],
            "attached": [],
            "cancelled": [],
            "suppressed": [],  # what it did not start, and why: [{runbook, target, reason, until}]
            "unmatched": [],  # alerts no runbook answers: [{alert, fingerprint}]
        }
        now = self._ctx.clock.now()
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
            for lr in self._ctx.runbooks.values()
            if any(t.matches_alert(alert.labels) for t in lr.runbook.triggers)
        ]

    async def _on_firing(self, tx: Tx, alert: Alert, new: bool, fx: Effects, summary: dict[str, Any]) -> None:
        metrics, log = self._ctx.metrics, self._ctx.log
        matching = self._matching(alert)
        if not matching:
            summary["unmatched"].append({"alert": alert.name, "fingerprint": alert.key()})
        for rb in matching:
            ctx: dict[str, Any] = {"alert": alert.as_context(), "run": {"runbook": rb.name}, "steps": {}}
            ctx["schedule"] = {}
            try:
                params = planner.render_params(rb, ctx)
                target = planner.render_target(rb, {**ctx, "params": params})
            except planner.PlanError as exc:
                metrics.runs_suppressed.labels(runbook=rb.name, reason="render_error").inc()
                log.warning("alert.unroutable", runbook=rb.name, alert=alert.name, error=str(exc))
                summary["suppressed"].append(
                    {"runbook": rb.name, "target": None, "reason": f"render_error: {exc}", "until": None}
                )
                continue
            active = await tx.active_run_ref(rb.name, target)
            if active is not None:
                run_id, resolved = active
                await tx.link_alert(alert.key(), rb.name, run_id)
                if new:
                    await self._ctx.event_ids(
                        tx, run_id, rb.name, "alert_attached", alert=alert.name, fingerprint=alert.key()
                    )
                if resolved:
                    await tx.set_alert_firing(run_id)
                summary["attached"].append(run_id)
                continue
            blocked = await self._policy_blocks(tx, rb, target)
            if blocked is not None:
                reason, until = blocked
                metrics.runs_suppressed.labels(runbook=rb.name, reason=reason.split(":")[0]).inc()
                log.warning("run.suppressed", runbook=rb.name, target=target, reason=reason)
                summary["suppressed"].append(
                    {
                        "runbook": rb.name,
                        "target": target,
                        "reason": reason,
                        "until": iso(until) if until is not None else None,
                    }
                )
                continue
            run = await self._starter.create_run(
                tx, rb, target, params, "alert", None, {"alert": alert.as_context()}, fx
            )
            await tx.link_alert(alert.key(), rb.name, run.id)
            summary["started"].append(run.id)

    async def _policy_blocks(self, tx: Tx, rb: Runbook, target: str) -> tuple[str, float | None] | None:
        """Why a new run for this target may not start now, and until when (None: not known)."""
        now = self._ctx.clock.now()
        last = await tx.last_ended_at(rb.name, target)
        if last is not None and now - last < rb.policy.cooldown:
            return f"cooldown: last run ended {now - last:.0f} s ago", last + rb.policy.cooldown
        n = await tx.count_runs_since(rb.name, target, now - 86400)
        if n >= rb.policy.max_runs_per_day:
            reason = f"daily_limit: {n} runs for {target} in the last 24h (max_runs_per_day {rb.policy.max_runs_per_day})"
            return reason, None
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
                    await self._ctx.event(
                        tx, run, "alert_resolved_partly", alert=alert.name, fingerprint=alert.key()
                    )
                continue
            run.alert_resolved = True
            await self._ctx.event(tx, run, "alert_resolved", alert=alert.name)
            rb = self._ctx.definition(run)
            if (
                rb.policy.on_resolved == "cancel"
                and not run.mutated
                and run.state == RunState.AWAITING_APPROVAL
            ):
                await self._runs.cancel_current(tx, run)
                await self._runs.finish(
                    tx, run, RunState.CANCELLED, "the alert resolved before anything was changed", fx
                )
                summary["cancelled"].append(run.id)
            else:
                await tx.save_run(run)
                await self._runs.recheck_when(tx, run, fx)
