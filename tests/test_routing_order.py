"""Routing behind a backlog (issue 11 §7): a notification that introduces a target with no run is routed
before the backlog of re-deliveries in front of it, while everything that shares an alert or a target
with an older unrouted notification keeps its order. Both store backends; the router is driven one
batch at a time (``Engine.route_batch``), so the order is observed, not timed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.engines import make_engine, open_test_store
from support.inproc import alert_payload

from daemon.clients.bundle import Clients
from daemon.engine.engine import Engine
from daemon.engine.events import WebhookPayload
from daemon.engine.identity import Identity
from daemon.kits.clock import FrozenClock

SCRAPE = """
name: scrape
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
approval: {approvers: [sre]}
steps:
  - id: say
    action: notify.log
    with: {message: "{{ params.job }}"}
"""
BACKLOG = 450
"""Re-deliveries stored in front: more than two routing batches."""


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    store = await open_test_store(request, tmp_path, request.param)
    eng = make_engine(tmp_path, store, {"scrape": SCRAPE})
    await eng.start(background=False)  # no background router: the test routes batch by batch
    yield eng
    await eng.stop()
    await store.close()


async def _store(engine: Engine, job: str, fingerprint: str, status: str = "firing") -> int:
    payload = WebhookPayload.model_validate(alert_payload(job=job, fingerprint=fingerprint, status=status))
    return await engine.submit(payload, payload.model_dump_json())


async def _routed(engine: Engine, receipt: int) -> bool:
    return (await engine.receipt(receipt))["routed_at"] is not None


async def test_a_new_target_is_routed_before_the_backlog_in_front_of_it(engine: Engine) -> None:
    first = await _store(engine, "busy", "fp-busy")
    await engine.route_batch()
    (busy_run,) = (await engine.receipt(first))["result"]["started"]
    backlog = [await _store(engine, "busy", "fp-busy") for _ in range(BACKLOG)]  # Alertmanager re-sending
    new = await _store(engine, "new", "fp-new")

    routed = await engine.route_batch()

    assert new in routed  # routed in the first batch, ahead of its turn
    started = (await engine.receipt(new))["result"]["started"]
    assert len(started) == 1
    run = await engine.get_run(started[0])
    assert run["target"] == "new" and run["state"] == "awaiting_approval"
    assert not await _routed(engine, backlog[-1])  # the re-deliveries wait their turn
    await engine.route_pending()
    assert all([await _routed(engine, r) for r in backlog])
    assert (await engine.receipt(backlog[-1]))["result"]["attached"] == [busy_run]


async def test_what_shares_a_target_or_an_alert_with_an_older_notification_keeps_its_order(
    engine: Engine,
) -> None:
    await _store(engine, "busy", "fp-busy")
    await engine.route_batch()
    for _ in range(BACKLOG):
        await _store(engine, "busy", "fp-busy")
    a = await _store(engine, "fresh", "fp-a")  # introduces target "fresh"
    b = await _store(engine, "fresh", "fp-b")  # same target, another alert: after a
    gone = await _store(engine, "other", "fp-gone", status="resolved")
    c = await _store(engine, "other", "fp-gone")  # the same alert firing again: after its resolution

    routed = await engine.route_batch()

    assert a in routed
    assert b not in routed and c not in routed and gone not in routed
    await engine.route_pending()
    (fresh_run,) = (await engine.receipt(a))["result"]["started"]
    assert (await engine.receipt(b))["result"]["attached"] == [fresh_run]  # one run for the target
    assert len((await engine.receipt(c))["result"]["started"]) == 1


async def test_notifications_stored_by_another_process_are_read_back_and_may_jump_too(engine: Engine) -> None:
    """Another replica (or this one before a restart) stored them: nothing parsed is kept in memory."""
    await _store(engine, "busy", "fp-busy")
    await engine.route_batch()
    other = Engine(
        config=engine.config,
        store=engine.store,
        registry=engine.registry,
        runbooks=engine.runbooks,
        clients=Clients(),
        clock=FrozenClock(),
    )
    backlog = [await _store(other, "busy", "fp-busy") for _ in range(BACKLOG)]
    new = await _store(other, "new", "fp-new")

    routed = await engine.route_batch()

    assert new in routed and backlog[0] in routed and backlog[-1] not in routed
    await engine.route_pending()
    assert len((await engine.receipt(new))["result"]["started"]) == 1
    assert all([await _routed(engine, r) for r in backlog])


async def test_the_receipt_says_what_was_held_back_and_what_no_runbook_answers(engine: Engine) -> None:
    first = await _store(engine, "x", "fp-x1")
    await engine.route_batch()
    (run_id,) = (await engine.receipt(first))["result"]["started"]
    await engine.reject(run_id, Identity(name="admin", role="admin"), "not now")  # the run ends: cooldown
    again = await _store(engine, "x", "fp-x2")
    twice = await _store(engine, "x", "fp-x3")  # the same target in the same batch: held back as well
    other = WebhookPayload.model_validate(alert_payload(alertname="Unanswered", fingerprint="fp-u", job="x"))
    unanswered = await engine.submit(other, other.model_dump_json())

    await engine.route_pending()

    for receipt in (again, twice):
        result = (await engine.receipt(receipt))["result"]
        assert result["started"] == [] and result["unmatched"] == []
        (held,) = result["suppressed"]
        assert held["runbook"] == "scrape" and held["target"] == "x"
        assert held["reason"].startswith("cooldown") and held["until"] is not None
    result = (await engine.receipt(unanswered))["result"]
    assert result["unmatched"] == [{"alert": "Unanswered", "fingerprint": "fp-u"}]
    assert result["suppressed"] == [] and result["started"] == []
