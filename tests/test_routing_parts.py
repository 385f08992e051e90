"""A notification of many alerts is routed a part at a time (an adversarial pass: one webhook of 10,000
alerts for 10,000 targets started every run in one transaction and held the store ~10 s, so every webhook
and approval behind it waited). Driven one transaction at a time (``Engine.route_batch``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.engines import LOG_RUNBOOK, make_engine
from support.inproc import alert_payload

from daemon.engine import quickparse, routing
from daemon.engine.engine import Engine
from daemon.engine.events import WebhookPayload
from daemon.store.sqlite import Store

LOG = LOG_RUNBOOK
PART = 20


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "_ROUTE_PART", PART)


def many(jobs: range) -> WebhookPayload:
    """One notification, an alert per job (each its own target)."""
    alerts = [alert_payload(job=f"job-{i}", fingerprint=f"fp-{i}")["alerts"][0] for i in jobs]
    return WebhookPayload.model_validate({**alert_payload(job="group"), "alerts": alerts})


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    store = await Store.open(tmp_path / "state.db")
    eng = make_engine(tmp_path, store, {"log": LOG})
    await eng.start(background=False)
    yield eng
    await eng.stop()
    await store.close()


async def _receipt(engine: Engine, seq: int) -> dict[str, Any]:
    return await engine.receipt(seq)


@pytest.mark.parametrize("parsed_by", ["pydantic", "quickparse"])
async def test_a_big_notification_is_routed_a_part_per_transaction(engine: Engine, parsed_by: str) -> None:
    payload = many(range(50))
    raw = payload.model_dump_json()
    if parsed_by == "pydantic":
        receipt = await engine.submit(payload, raw)
    else:  # as the webhook stores a body its quick parse took (its parts: msgspec.structs.replace)
        quick = quickparse.parse(raw)
        assert quick is not None and engine.settle_quick(quick) is None
        receipt = await engine.submit_quick(quick, raw)
    behind = WebhookPayload.model_validate(alert_payload(job="behind", fingerprint="fp-behind"))
    after = await engine.submit(behind, behind.model_dump_json())
    for runs in (20, 40):
        assert await engine.route_batch() == []  # a part: nothing routed whole yet
        assert len(await engine.list_runs()) == runs
        assert (await _receipt(engine, receipt))["routed_at"] is None
        assert engine._routing.routing_in_parts
    assert await engine.route_batch() == [receipt]
    assert not engine._routing.routing_in_parts
    result = (await _receipt(engine, receipt))["result"]
    assert result["alerts"] == 50 and len(set(result["started"])) == 50 and result["attached"] == []
    assert (await _receipt(engine, after))["routed_at"] is None  # in order: the next one after it
    await engine.route_pending()
    assert len((await _receipt(engine, after))["result"]["started"]) == 1
    targets = sorted(r["target"] for r in await engine.list_runs())
    assert targets == sorted([f"job-{i}" for i in range(50)] + ["behind"])


async def test_a_notification_stopped_between_parts_is_routed_again_without_a_second_run(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "state.db")
    first = make_engine(tmp_path, store, {"log": LOG})
    await first.start(background=False)
    try:
        payload = many(range(50))
        receipt = await first.submit(payload, payload.model_dump_json())
        assert await first.route_batch() == []  # one part routed and committed; the process "dies" here
        assert len(await first.list_runs()) == PART
    finally:
        await first.stop()
        await store.close()

    store = await Store.open(tmp_path / "state.db")
    second = make_engine(tmp_path, store, {"log": LOG})
    await second.start(background=False)  # recovery routes what waits, in parts
    try:
        result = (await second.receipt(receipt))["result"]
        runs = await second.list_runs()
        assert len(runs) == 50 and len({r["target"] for r in runs}) == 50  # none started twice
        assert len(result["attached"]) == PART and len(result["started"]) == 50 - PART
        assert set(result["attached"]) | set(result["started"]) == {r["id"] for r in runs}
    finally:
        await second.stop()
        await store.close()


async def test_a_big_notification_never_rides_along_with_others(engine: Engine) -> None:
    """Neither in turn (in a batch behind a small one) nor ahead of its turn (lookahead): the second
    adversarial pass got 10,000 alerts routed whole in the transaction of the one-alert notification
    in front of them."""
    small = WebhookPayload.model_validate(alert_payload(job="small", fingerprint="fp-small"))
    first = await engine.submit(small, small.model_dump_json())
    big = many(range(100, 125))  # all firing, all new targets: what lookahead would take ahead
    second = await engine.submit(big, big.model_dump_json())
    assert await engine.route_batch() == [first]
    assert len(await engine.list_runs()) == 1
    assert await engine.route_batch() == []  # its first part
    assert len(await engine.list_runs()) == 1 + PART
    assert await engine.route_batch() == [second]
    assert len((await _receipt(engine, second))["result"]["started"]) == 25
