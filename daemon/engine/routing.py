"""Intake and routing of Alertmanager notifications: stored first (see ``inbox``), then routed in
batches, in the order received. A firing alert starts a run of each runbook it matches (unless one is
active for the target, or policy holds it back); a resolved one may cancel or re-check its runs."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from daemon.engine import plankeys, planner
from daemon.engine.context import Context
from daemon.engine.effects import Effects
from daemon.engine.events import WebhookPayload
from daemon.engine.inbox import Inbox
from daemon.engine.lookahead import Lookahead
from daemon.engine.quickparse import AnyAlert, AnyPayload, QuickPayload
from daemon.engine.recorded import Recorded
from daemon.engine.runs import Runs
from daemon.engine.starting import Starter
from daemon.errors import NotFound, StoreUnavailable
from daemon.kits.clock import iso
from daemon.runbooks.schema import Runbook
from daemon.store.records import EventRecord, RunState
from daemon.store.sqlite import Tx

_ROUTE_BATCH = 100
"""Most notifications routed per transaction while webhooks are arriving."""
_ROUTE_BATCH_ALERTS = 500
"""Most alerts routed per transaction while webhooks are arriving (a batch holds at least one
notification, whatever its size): a webhook commit waits for at most one such transaction."""
_ROUTE_PART = 500
"""A notification of more alerts than this (up to 10,000) is routed this many alerts per transaction:
starting a run costs ~1 ms, and the store (every webhook commit, every approval) waits for a transaction."""
_ROUTE_BATCH_IDLE = 400
_ROUTE_BATCH_ALERTS_IDLE = 4000
"""The same when no webhook is arriving: fewer commits (~3 ms of CPU each, mostly the WAL write and
fsync) for a backlog."""
_ROUTE_COALESCE = 0.02
"""While notifications are arriving, a routing batch first waits this long: routing then commits (and
fsyncs, holding the store) at most ~20 times a second, each time for many notifications, instead of
once per arrival between the intake's own commits. Never longer: intake does not have to pause."""
_PLAN_CACHE = 8192
"""Rendered (params, target) kept per alert and runbook: re-deliveries of an alert render nothing."""
_PARSED_KEEP = 5000
"""Notifications parsed at intake kept for routing (so routing does not parse them again)."""
_LOOK_SCAN = 2000
"""Unrouted notifications behind the batch looked at per transaction, for ones that may jump the queue."""
_LOOK_PARSE = 500
"""Of those, most read back and parsed from the store (not kept from intake) per transaction."""
_LOOK_MAX = 50_000
"""Most unrouted notifications whose marks are kept (~1 kB each): behind that, nothing jumps."""
_EXPRESS = 50
"""Most notifications routed ahead of their turn per transaction."""


@dataclass(frozen=True, slots=True)
class Settled:
    """A notification no runbook acts on, parsed the quick way: stored routed, with this result (JSON)."""

    payload: QuickPayload
    result: str


_Plan = tuple[dict[str, Any], str] | str
"""(params, target), or why they could not be rendered."""
_Part = tuple[int, int, dict[str, Any]]
"""A notification routed in parts, as far as it went: (receipt, alerts routed, its receipt's result so far)."""


class Router:
    def __init__(self, ctx: Context, runs: Runs, starter: Starter) -> None:
        self._ctx = ctx
        self._runs = runs
        self._starter = starter
        self._wanted = asyncio.Event()
        self.live = False
        """This leader has recovered, routed what waited, and routes (``runbookd_routing_live``)."""
        self.recovered = False
        """Recovery is done: notifications may be routed (the background loop waits for it)."""
        self._live = asyncio.Event()
        self._routed_seq = 0
        self._routed = asyncio.Condition()
        self.inbox = Inbox(ctx.store, ctx.clock, self._stored)
        self.look = Lookahead()
        self._look_plans: dict[int, list[list[tuple[Runbook, _Plan]]]] = {}
        """What each alert of a notification looked at plans to, kept for its routing."""
        self._look_payloads: dict[int, AnyPayload] = {}
        """Payloads of the notifications that may jump the queue (``Lookahead`` keeps only marks)."""
        self._routed_ahead: set[int] = set()
        """Receipts routed ahead of their turn, above ``_routed_seq``."""
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._plan_deps: dict[str, plankeys.Dependencies | None] = {}
        """Runbook name -> the alert fields its plan depends on (None: all of them); set with the index."""
        self._by_alertname: dict[str, list[Runbook]] | None = None
        self._indexed: object = None
        self._indexed_n = 0
        self._parsed: dict[int, AnyPayload] = {}
        """Receipt -> the payload as intake parsed it, until routed (in receipt order)."""
        self._recorded = Recorded(enabled=not ctx.store.shared)
        """Links committed: re-deliveries write nothing (one writer only)."""
        self._partial: _Part | None = None
        """A notification of more than _ROUTE_PART alerts being routed in parts: committed parts only;
        forgotten when leadership is."""
        self._batching = asyncio.Lock()
        """One routing transaction at a time (the loop, recovery, tools): they share ``_recorded``'s log."""

    async def submit(self, payload: WebhookPayload, raw: str) -> int:
        """Store an Alertmanager notification (group-committed with concurrent ones); returns its receipt
        number once committed. Routing follows in the background. Raises StoreUnavailable."""
        # Only the leader settles: its runbooks are the ones routing would use (a follower's may differ
        # during a rolling change of the runbooks; the leader then routes what the follower stored).
        settled = self._settled(payload) if self._ctx.leadership.leading else None
        return await self._store(payload, raw, settled)

    def settle_quick(self, payload: QuickPayload) -> Settled | None:
        """A notification parsed the quick way (``quickparse``), settled if no runbook acts on it; None for
        any other (or when not leading): ``submit_quick`` it."""
        if not self._ctx.leadership.leading:
            return None
        settled = self._settled(payload)
        return None if settled is None else Settled(payload, settled)

    async def submit_settled(self, settled: Settled) -> int:
        """Store a notification ``settle_quick`` settled; its receipt once committed (as ``submit``)."""
        return await self._store(settled.payload, "", settled.result)

    async def submit_quick(self, payload: QuickPayload, raw: str) -> int:
        """Store a notification parsed the quick way that ``settle_quick`` did not settle, to be routed
        from its structs (as ``submit``; they hold what pydantic would, ``quickparse``)."""
        return await self._store(payload, raw, None)

    async def _store(self, payload: AnyPayload, raw: str, settled: str | None) -> int:
        if payload.truncatedAlerts:
            self._ctx.log.warning(
                "webhook.truncated", truncated=payload.truncatedAlerts, group=payload.groupKey
            )
        # Settled: its receipt (alert names and fingerprints) is the record; routing never reads its payload.
        receipt = await self.inbox.submit(
            raw if settled is None else "", len(payload.alerts), payload, settled
        )
        firing = [alert.status for alert in payload.alerts].count("firing")
        self._ctx.metrics.count_received(firing, len(payload.alerts) - firing)
        return receipt

    def _settled(self, payload: AnyPayload) -> str | None:
        """What routing would record for a notification no runbook acts on (every alert firing, none
        matching a trigger), as JSON: it is stored routed (one row, nothing else written). None: route it.

        Nothing else can change what routing makes of such a notification: matching reads the alert and
        the runbooks only, and an alert no runbook matches starts, attaches to and cancels nothing. A
        resolved alert is always routed: a run may be linked to it (even one of a runbook since changed)."""
        by_name = self._index()
        # _plans_of()'s matching written out (the webhook's hot path); first, so that a notification to
        # route costs no alert keys (a hash each when Alertmanager sent no fingerprint).
        for alert in payload.alerts:
            if alert.status != "firing":
                return None
            labels = alert.labels
            runbooks = by_name.get(labels["alertname"])
            if runbooks and any(t.matches_alert(labels) for rb in runbooks for t in rb.triggers):
                return None
        unmatched = []
        for alert in payload.alerts:
            name, key = alert.labels["alertname"], alert.fingerprint or alert.key()
            unmatched.append(f'{{"alert": {_json_str(name)}, "fingerprint": {_json_str(key)}}}')
        # json.dumps(_summary(...)) with the list filled in, written out.
        return _SETTLED.format(alerts=len(payload.alerts), unmatched=", ".join(unmatched))

    def _stored(self, rows: list[tuple[int, Any]]) -> None:
        """The inbox committed these (receipt, parsed payload), in receipt order."""
        if self._ctx.leadership.leading:  # a follower does not route: nothing to keep
            for seq, item in rows:
                if item is not None and len(self._parsed) < _PARSED_KEEP:
                    self._parsed[seq] = item
        self._wanted.set()

    def set_live(self, live: bool) -> None:
        self.live = live
        self._ctx.metrics.routing_live.set(1 if live else 0)
        if live:
            self._live.set()
            self._wanted.set()
        else:
            self.recovered = False
            self._live.clear()
            self.look.reset()  # another leader may route meanwhile: look again from the oldest unrouted
            self._look_payloads.clear()
            self._parsed.clear()
            self._look_plans.clear()
            self._recorded.clear()
            self._partial = None  # the next leader routes it again from its first alert

    async def wait_live(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self._live.wait()

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
        found = await self.receipt(seq) if seq > self._routed_seq else None
        if found is None or found["routed_at"] is None:  # routed at intake, or not yet
            async with asyncio.timeout(timeout), self._routed:
                await self._routed.wait_for(lambda: self._routed_seq >= seq or seq in self._routed_ahead)
            found = await self.receipt(seq)
        result: dict[str, Any] = found["result"] or {}
        return result

    async def loop(self) -> None:
        """Route what the inbox stores, as it is stored (the engine's background ``engine.route`` task)."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            if not self._ctx.leadership.leading or not self.recovered:
                continue  # the leader routes what any replica stored, once it has recovered
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

        With ``yield_to_intake``, a batch taken while notifications are arriving waits _ROUTE_COALESCE
        first, so that it routes more of them per commit; it never waits for intake to stop."""
        while True:
            if yield_to_intake and self.inbox.busy():
                await asyncio.sleep(_ROUTE_COALESCE)
            await self._preplan()
            if not await self.route_batch() and self._partial is None:
                return

    async def _preplan(self) -> None:
        """Plan the next batch's alerts before taking the store: rendering and matching are CPU only,
        and the store (which every webhook commit needs) is then held for the SQL alone. Yields to the
        loop every few notifications, so requests are answered meanwhile."""
        alerts = 0
        for n, (seq, payload) in enumerate(list(itertools.islice(self._parsed.items(), _ROUTE_BATCH_IDLE))):
            if alerts >= _ROUTE_BATCH_ALERTS_IDLE:
                break
            alerts += len(payload.alerts)
            if len(payload.alerts) > _ROUTE_PART:
                continue  # routed in parts, each planned in its own transaction
            if seq not in self._look_plans:
                self._look_plans[seq] = self._plans_of(payload)
            if n % 10 == 9:
                await asyncio.sleep(0)

    def _plans_of(self, payload: AnyPayload) -> list[list[tuple[Runbook, _Plan]]]:
        """Each alert's (runbook, plan) for the runbooks it matches (a trigger for its name that matches
        its labels); the index is looked up once per notification: this runs for every alert routed."""
        by_name = self._index()
        out: list[list[tuple[Runbook, _Plan]]] = []
        for alert in payload.alerts:
            labels = alert.labels
            runbooks = by_name.get(labels["alertname"])
            if not runbooks:
                out.append([])
                continue
            out.append(
                [
                    (rb, self._plan(rb, alert))
                    for rb in runbooks
                    if any(t.matches_alert(labels) for t in rb.triggers)
                ]
            )
        return out

    async def route_batch(self) -> list[int]:
        """Route one batch: the oldest notifications, then those that may jump the queue; or the next
        part of a notification routed in parts. The receipts routed (none: nothing waits, unless a
        notification is being routed in parts: ``routing_in_parts``)."""
        async with self._batching:
            self._recorded.rollback_to(0)
            try:
                last, routed, partial = await self._ctx.transact(self._route_batch, leader_only=True)
            except BaseException:
                self._recorded.rollback_to(0)  # not committed: what it wrote is not known to be there
                raise
            self._recorded.commit()
            self._partial = partial  # committed: the next part starts after it
            if self._partial is not None:
                seq, done, summary = self._partial
                self._ctx.log.info(
                    "inbox.routing_in_parts", receipt=seq, routed=done, alerts=summary["alerts"]
                )
        if routed:
            self.look.routed(routed)
            for seq in routed:
                self._parsed.pop(seq, None)
                self._look_payloads.pop(seq, None)
                self._look_plans.pop(seq, None)
            while self._parsed and (oldest := next(iter(self._parsed))) <= last:  # routed elsewhere
                del self._parsed[oldest]
                self._look_plans.pop(oldest, None)
            async with self._routed:
                self._routed_seq = max(self._routed_seq, last)
                self._routed_ahead = {s for s in self._routed_ahead | set(routed) if s > self._routed_seq}
                self._routed.notify_all()
        return routed

    @property
    def routing_in_parts(self) -> bool:
        """A notification is part routed: more of it waits (tests, tools)."""
        return self._partial is not None

    async def _route_batch(self, tx: Tx, fx: Effects) -> tuple[int, list[int], _Part | None]:
        """Route a batch of notifications in one transaction: the oldest ones, then those that may jump
        the queue (``lookahead``); or the next part of one routed in parts. (The highest receipt routed in
        turn, every receipt routed, and how far a notification routed in parts went: None for none.)

        The batch is routed as a whole (one statement per kind of write); if one notification cannot be
        routed (a bug, a template the alert breaks), the batch is rolled back to its savepoint and routed
        again one notification at a time, so that one is set aside with its error and blocks nothing."""
        busy = self.inbox.busy()
        most, most_alerts = (
            (_ROUTE_BATCH, _ROUTE_BATCH_ALERTS) if busy else (_ROUTE_BATCH_IDLE, _ROUTE_BATCH_ALERTS_IDLE)
        )
        rows = await tx.unrouted_heads(most)
        if not rows:
            return 0, [], None
        if rows[0][1] > _ROUTE_PART:
            return await self._route_part(tx, fx, rows[0][0])
        chosen: list[int] = []
        alerts = 0
        for seq, count in rows:
            if chosen and (alerts + count > most_alerts or count > _ROUTE_PART):
                break  # (one of more than _ROUTE_PART alerts is routed in parts, once it is first)
            alerts += count
            chosen.append(seq)
        last = chosen[-1]
        missing = [seq for seq in chosen if seq not in self._parsed]
        raws = await tx.inbox_payloads(missing) if missing else {}
        batch: list[tuple[int, AnyPayload]] = []
        results: dict[int, dict[str, Any]] = {}
        for seq in chosen:
            parsed = self._parsed.get(seq)
            if parsed is not None:
                batch.append((seq, parsed))
                continue
            try:  # stored by another replica, or before this process started
                batch.append((seq, WebhookPayload.model_validate_json(raws.get(seq, ""))))
            except ValueError as exc:  # pydantic's ValidationError: stored by an older version, say
                self._ctx.log.warning("inbox.unroutable", receipt=seq, error=str(exc).splitlines()[0])
                results[seq] = {"error": f"could not be routed: {exc}"}
        if last < rows[-1][0] or len(rows) == most:  # more wait behind this batch
            batch += await self._ahead(tx, last)
        whole = Effects()
        rolled_back = self._recorded.mark()
        try:
            async with tx.savepoint("route_batch"):
                results.update(await self._route_many(tx, batch, whole))
            fx.merge(whole)
        except (StoreUnavailable, sqlite3.Error):  # PostgreSQL errors arrive as StoreUnavailable
            raise
        except Exception:  # one bad notification: route them one by one (below)
            self._recorded.rollback_to(rolled_back)
            for seq, payload in batch:
                one = Effects()
                rolled_back = self._recorded.mark()
                try:
                    async with tx.savepoint("route_one"):
                        results.update(await self._route_many(tx, [(seq, payload)], one))
                    fx.merge(one)
                except (StoreUnavailable, sqlite3.Error):
                    raise
                except Exception as exc:  # one bad notification must not block the inbox behind it
                    self._recorded.rollback_to(rolled_back)
                    self._ctx.log.exception("inbox.unroutable", receipt=seq)
                    results[seq] = {"error": f"could not be routed: {exc}"}
        now = self._ctx.clock.now()
        await tx.mark_routed_many([(seq, now, results[seq]) for seq in sorted(results)])
        return last, sorted(results), None

    async def _route_part(self, tx: Tx, fx: Effects, seq: int) -> tuple[int, list[int], _Part | None]:
        """Route the next _ROUTE_PART alerts of notification ``seq`` (the oldest unrouted); its receipt is
        marked routed, with the result of all its parts, once the last part is. Nothing jumps the queue
        meanwhile. If the process stops (or loses leadership) between parts, the notification is routed
        again from its first alert: what the parts done already started or linked is found and attached
        to (the receipt then lists those runs as attached), nothing is started twice."""
        payload: AnyPayload | None = self._parsed.get(seq)
        if payload is None:  # stored by another replica, or before this process started
            raw = (await tx.inbox_payloads([seq])).get(seq, "")
            try:
                payload = WebhookPayload.model_validate_json(raw)
            except ValueError as exc:
                self._ctx.log.warning("inbox.unroutable", receipt=seq, error=str(exc).splitlines()[0])
                await tx.mark_routed_many(
                    [(seq, self._ctx.clock.now(), {"error": f"could not be routed: {exc}"})]
                )
                return seq, [seq], None
        done, summary = 0, _summary(len(payload.alerts))
        if self._partial is not None and self._partial[0] == seq:
            done, summary = self._partial[1], copy.deepcopy(self._partial[2])
        part = _part(payload, done, done + _ROUTE_PART)
        self._look_plans.pop(seq, None)  # planned for the whole: this part is planned here
        whole = Effects()
        rolled_back = self._recorded.mark()
        try:
            async with tx.savepoint("route_part"):
                result = (await self._route_many(tx, [(seq, part)], whole))[seq]
            fx.merge(whole)
        except (StoreUnavailable, sqlite3.Error):
            raise
        except Exception as exc:  # as for one notification of a batch: set aside with its error
            self._recorded.rollback_to(rolled_back)
            self._ctx.log.exception("inbox.unroutable", receipt=seq)
            summary["error"] = f"could not be routed: {exc}"
            result, done = _summary(0), len(payload.alerts)
        for key in ("started", "attached", "cancelled", "suppressed", "unmatched"):
            summary[key] += result[key]
        done += len(part.alerts)
        if done < len(payload.alerts):
            return seq - 1, [], (seq, done, summary)
        await tx.mark_routed_many([(seq, self._ctx.clock.now(), summary)])
        return seq, [seq], None

    async def _ahead(self, tx: Tx, after: int) -> list[tuple[int, AnyPayload]]:
        """Notifications behind receipt ``after`` that may be routed now, ahead of their turn: each
        introduces a (runbook, target) with no active run, and no older unrouted notification touches
        anything it touches (``lookahead``). Looks at what was stored since the last time first."""
        look = self.look
        if look.seen_to < after:
            look.reset(after)
        room = min(_LOOK_SCAN, _LOOK_MAX - len(look))
        seqs = await tx.unrouted_after(look.seen_to, room) if room > 0 else []
        parsed_here = 0
        for seq in seqs:
            payload: AnyPayload | None = self._parsed.get(seq)
            if payload is not None:
                pass
            elif parsed_here >= _LOOK_PARSE:
                break  # the rest next time: nothing behind a notification not looked at may jump
            else:
                parsed_here += 1
                raw = await tx.inbox_payload(seq)
                try:
                    payload = WebhookPayload.model_validate_json(raw) if raw is not None else None
                except ValueError:
                    payload = None  # routed in turn, as an error; it touches nothing
            if payload is None:
                look.see(seq, [], set(), all_firing=False)
                continue
            if len(payload.alerts) > _ROUTE_PART:
                break  # routed in parts, in its turn; nothing behind it is looked at (nor jumps it)
            fingerprints, keys = self._marks(payload, seq)
            look.see(seq, fingerprints, keys, all(a.status == "firing" for a in payload.alerts))
            if look.is_clear(seq):
                self._look_payloads[seq] = payload
        candidates = look.candidates(after, _EXPRESS)
        if not candidates:
            return []
        active = await tx.active_run_refs({k for _, keys in candidates for k in keys})
        ahead: list[tuple[int, AnyPayload]] = []
        for seq, introduces in candidates:
            payload = self._look_payloads.get(seq)
            if payload is None or all(k in active for k in introduces):
                look.settle(seq)  # only re-deliveries to targets with a run: they wait their turn
                self._look_payloads.pop(seq, None)
                continue
            ahead.append((seq, payload))
        if ahead:
            self._ctx.log.info("inbox.routed_ahead", receipts=[seq for seq, _ in ahead], behind=after)
        return ahead

    def _marks(self, payload: AnyPayload, seq: int | None = None) -> tuple[list[str], set[tuple[str, str]]]:
        """What routing this notification touches: its fingerprints and the (runbook, target) keys its
        alerts plan to (a resolved alert's too: the runs it may cancel were started for those keys)."""
        keys: set[tuple[str, str]] = set()
        planned = self._look_plans.get(seq) if seq is not None else None
        if planned is None:
            planned = self._plans_of(payload)
        for each in planned:
            for rb, plan in each:
                if not isinstance(plan, str):
                    keys.add((rb.name, plan[1]))
        if seq is not None:
            self._look_plans[seq] = planned
        return [a.key() for a in payload.alerts], keys

    async def _route_many(
        self, tx: Tx, batch: list[tuple[int, AnyPayload]], fx: Effects
    ) -> dict[int, dict[str, Any]]:
        """Route notifications in order. Writes that only add (links, attach events) are
        collected and written together; the rest (starting runs, resolutions) as they come, after
        flushing what was collected, so every run's timeline keeps its order."""
        plans: list[list[tuple[Runbook, _Plan]]] = []
        for seq, payload in batch:
            ahead = self._look_plans.pop(seq, None)  # planned already, before the transaction
            if ahead is None:
                ahead = self._plans_of(payload)
            alerts: Sequence[AnyAlert] = payload.alerts
            plans += ([] if a.status != "firing" else p for a, p in zip(alerts, ahead, strict=True))
        keys = {(rb.name, plan[1]) for each in plans for rb, plan in each if not isinstance(plan, str)}
        w = _Writes(await tx.active_run_refs(keys) if keys else {}, keys)
        planned = iter(plans)
        results: dict[int, dict[str, Any]] = {}
        for seq, payload in batch:
            summary = _summary(len(payload.alerts))
            for alert in payload.alerts:
                each = next(planned)
                if alert.status == "firing":
                    if not self._attach_only(alert, each, summary, w):
                        await self._on_firing(tx, alert, each, fx, summary, w)
                else:
                    await self._flush(tx, w)
                    await self._on_resolved(tx, alert, fx, summary, w)
            results[seq] = summary
        await self._flush(tx, w)
        return results

    def _attach_only(
        self, alert: AnyAlert, plans: list[tuple[Runbook, _Plan]], summary: dict[str, Any], w: _Writes
    ) -> bool:
        """``_on_firing`` for the common case of a storm, without the store: the alert matches nothing,
        or only runbooks whose target has an active run this transaction already knows (firing): it
        attaches (a link to write, unless committed already). False, having changed nothing: anything
        else (a run to start, a render error, a run to look up or marked resolved) goes the long way."""
        if not plans:
            summary["unmatched"].append({"alert": alert.name, "fingerprint": alert.key()})
            return True
        runs: list[tuple[str, str]] = []
        for rb, plan in plans:
            if isinstance(plan, str):
                return False
            key = (rb.name, plan[1])
            active = w.active.get(key)
            if active is None or active[1] or key not in w.known:
                return False
            runs.append((rb.name, active[0]))
        fingerprint, linked, attached = alert.key(), self._recorded.linked, summary["attached"]
        for runbook, run_id in runs:
            if not linked(fingerprint, runbook, run_id):  # else: nothing to write
                w.links.setdefault((fingerprint, runbook, run_id), alert.name)
            attached.append(run_id)
        return True

    async def _flush(self, tx: Tx, w: _Writes) -> None:
        """Write the links collected; an alert newly linked to a run (or firing again) gets its
        ``alert_attached`` event, in the order the alerts came."""
        if not w.links:
            return
        changed = await tx.link_alerts(list(w.links))
        now = self._ctx.clock.now()
        events: list[EventRecord] = []
        for (fingerprint, runbook, run_id), name in w.links.items():
            self._recorded.link(fingerprint, runbook, run_id)
            if (fingerprint, runbook, run_id) in changed:
                detail = {"alert": name, "fingerprint": fingerprint}
                events.append(EventRecord(run_id, now, "alert_attached", "runbookd", detail))
                w.attached[(run_id, runbook)] = w.attached.get((run_id, runbook), 0) + 1
        await tx.add_events(events)
        if w.attached:  # the timeline has each one; the log one line per flush, not one per alert
            self._ctx.log.info(
                "run.alerts_attached",
                alerts=sum(w.attached.values()),
                runs=len(w.attached),
                run_ids=sorted({run_id for run_id, _ in w.attached})[:50],
            )
        w.links, w.attached = {}, {}

    def _index(self) -> dict[str, list[Runbook]]:
        """Alert name -> the runbooks with a trigger for it; rebuilt (with each runbook's plan
        dependencies, and an empty plan cache) when the runbooks change."""
        by_name = self._by_alertname
        if (
            by_name is None
            or self._indexed is not self._ctx.runbooks
            or len(self._ctx.runbooks) != self._indexed_n
        ):
            by_name = self._by_alertname = {}
            self._indexed, self._indexed_n = self._ctx.runbooks, len(self._ctx.runbooks)
            self._plans.clear()  # keyed by runbook name: a changed runbook plans anew
            self._plan_deps = {
                lr.runbook.name: plankeys.dependencies(lr.runbook) for lr in self._ctx.runbooks.values()
            }
            for lr in self._ctx.runbooks.values():
                for t in lr.runbook.triggers:
                    if t.alert is not None:
                        runbooks = by_name.setdefault(t.alert, [])
                        if lr.runbook not in runbooks:
                            runbooks.append(lr.runbook)
        return by_name

    def _plan(self, rb: Runbook, alert: AnyAlert) -> _Plan:
        """The params and target a runbook renders for an alert, cached by what they depend on
        (``plankeys``): re-deliveries, and new alerts of a target already seen, render nothing. Call
        ``_index`` first (it keeps the cache and each runbook's dependencies current)."""
        deps = self._plan_deps.get(rb.name)
        key = (rb.name, *(_alert_key(alert) if deps is None else plankeys.values(alert, deps)))
        plan = self._plans.get(key)
        if plan is None:
            ctx: dict[str, Any] = {"alert": alert.as_context(), "run": {"runbook": rb.name}, "steps": {}}
            ctx["schedule"] = {}
            try:
                params = planner.render_params(rb, ctx)
                plan = (params, planner.render_target(rb, {**ctx, "params": params}))
            except planner.PlanError as exc:
                plan = str(exc)
            if len(self._plans) >= _PLAN_CACHE:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    async def _on_firing(
        self,
        tx: Tx,
        alert: AnyAlert,
        plans: list[tuple[Runbook, _Plan]],
        fx: Effects,
        summary: dict[str, Any],
        w: _Writes,
    ) -> None:
        metrics, log = self._ctx.metrics, self._ctx.log
        if not plans:
            summary["unmatched"].append({"alert": alert.name, "fingerprint": alert.key()})
        for rb, plan in plans:
            if isinstance(plan, str):
                metrics.runs_suppressed.labels(runbook=rb.name, reason="render_error").inc()
                log.warning("alert.unroutable", runbook=rb.name, alert=alert.name, error=plan)
                summary["suppressed"].append(
                    {"runbook": rb.name, "target": None, "reason": f"render_error: {plan}", "until": None}
                )
                continue
            params, target = plan
            key = (rb.name, target)
            if key in w.known:
                active = w.active.get(key)
            else:
                active = await tx.active_run_ref(rb.name, target)
            if active is not None:
                run_id, resolved = active
                if not self._recorded.linked(alert.key(), rb.name, run_id):  # else: nothing to write
                    w.links.setdefault((alert.key(), rb.name, run_id), alert.name)
                if resolved:
                    await tx.set_alert_firing(run_id)
                    w.active[key] = (run_id, False)
                summary["attached"].append(run_id)
                continue
            if key in w.blocked:
                blocked = w.blocked[key]
            else:
                blocked = w.blocked[key] = await self._policy_blocks(tx, rb, target)
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
            await self._flush(tx, w)
            run = await self._starter.create_run(
                tx, rb, target, copy.deepcopy(params), "alert", None, {"alert": alert.as_context()}, fx
            )
            await tx.link_alert(alert.key(), rb.name, run.id)
            self._recorded.link(alert.key(), rb.name, run.id)
            w.known.add(key)
            w.blocked.pop(key, None)  # one more run today: the daily limit is counted again
            if run.state.active:
                w.active[key] = (run.id, run.alert_resolved)
            else:
                w.active.pop(key, None)
            summary["started"].append(run.id)

    async def _policy_blocks(self, tx: Tx, rb: Runbook, target: str) -> tuple[str, float | None] | None:
        """Why a new run for this target may not start now, and until when (None: not known)."""
        now = self._ctx.clock.now()
        last, n = await tx.run_history(rb.name, target, now - 86400)
        if last is not None and now - last < rb.policy.cooldown:
            return f"cooldown: last run ended {now - last:.0f} s ago", last + rb.policy.cooldown
        if n >= rb.policy.max_runs_per_day:
            reason = f"daily_limit: {n} runs for {target} in the last 24h (max_runs_per_day {rb.policy.max_runs_per_day})"
            return reason, None
        return None

    async def _on_resolved(
        self, tx: Tx, alert: AnyAlert, fx: Effects, summary: dict[str, Any], w: _Writes
    ) -> None:
        self._recorded.forget(alert.key())
        resolved_now = await tx.resolve_alert(alert.key())  # runs whose link was firing until now
        for run in await tx.runs_for_alert(alert.key()):
            if not run.state.active or run.alert_resolved:
                continue
            w.known.discard((run.runbook, run.target))  # its state changes here: look it up again
            w.blocked.pop((run.runbook, run.target), None)
            if await tx.firing_alerts_of(run.id):
                if run.id in resolved_now:  # not again for a resolution sent again
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


@dataclass
class _Writes:
    """What one routing transaction knows and has yet to write."""

    active: dict[tuple[str, str], tuple[str, bool]]
    """(runbook, target) -> (id, alert_resolved) of its active run, for the keys in ``known``."""
    known: set[tuple[str, str]]
    """Keys whose entry in ``active`` (or absence: no active run) is current in this transaction."""
    blocked: dict[tuple[str, str], tuple[str, float | None] | None] = field(default_factory=dict)
    """(runbook, target) -> why policy holds a new run back (None: it does not), once per transaction."""
    links: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """(fingerprint, runbook, run id) -> alertname: links to write (once each), in the order seen."""
    attached: dict[tuple[str, str], int] = field(default_factory=dict)
    """(run id, runbook) -> alerts newly attached, logged once per flush."""


_json_str = json.encoder.encode_basestring_ascii
"""A str as JSON, as json.dumps writes it."""
_SETTLED = (
    '{{"alerts": {alerts}, "started": [], "attached": [], "cancelled": [], "suppressed": [], '
    '"unmatched": [{unmatched}]}}'
)


def _summary(alerts: int) -> dict[str, Any]:
    """A notification's receipt result, before routing fills it in."""
    return {
        "alerts": alerts,
        "started": [],
        "attached": [],
        "cancelled": [],
        "suppressed": [],  # what it did not start, and why: [{runbook, target, reason, until}]
        "unmatched": [],  # alerts no runbook answers: [{alert, fingerprint}]
    }


def _part(payload: AnyPayload, start: int, end: int) -> AnyPayload:
    """``payload`` with its alerts ``start:end`` only (a part of a notification routed in parts)."""
    if isinstance(payload, QuickPayload):
        return msgspec.structs.replace(payload, alerts=payload.alerts[start:end])
    return payload.model_copy(update={"alerts": payload.alerts[start:end]})


def _alert_key(alert: AnyAlert) -> tuple[Any, ...]:
    """Everything of an alert a template can see (``Alert.as_context``), as a hashable key."""
    return (
        alert.key(),
        alert.status,
        alert.startsAt,
        alert.endsAt,
        alert.generatorURL,
        tuple(alert.labels.items()),
        tuple(alert.annotations.items()),
    )
