"""Re-deliveries write nothing (issue 11 §7): an alert already linked, firing, to its active run is not
written again; the link says whether an alert is new for a run ("alert attached" once); a resolution and
a rolled-back batch never leave a link believed firing that the store says is not."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.engines import make_engine
from support.inproc import alert_payload

from daemon.engine.engine import Engine
from daemon.engine.events import WebhookPayload
from daemon.engine.recorded import Recorded
from daemon.store.sqlite import Store

SCRAPE = """
name: scrape
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
policy: {on_resolved: ignore}
steps:
  - id: say
    action: notify.log
    with: {message: "{{ params.job }}"}
"""
NO_LINK_WRITES = (
    "CREATE TRIGGER no_link_writes BEFORE INSERT ON alert_links "
    "BEGIN SELECT RAISE(ABORT, 'a link was written'); END"
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    store = await Store.open(tmp_path / "state.db")
    eng = make_engine(tmp_path, store, {"scrape": SCRAPE})
    await eng.start(background=False)
    yield eng
    await eng.stop()
    await store.close()


async def _route(
    engine: Engine, fingerprint: str, status: str = "firing", starts: str = "t1"
) -> dict[str, Any]:
    body = alert_payload(job="web", fingerprint=fingerprint, status=status)
    body["alerts"][0]["startsAt"] = starts
    payload = WebhookPayload.model_validate(body)
    receipt = await engine.submit(payload, payload.model_dump_json())
    await engine.route_pending()
    result: dict[str, Any] = (await engine.receipt(receipt))["result"]
    return result


def _sql(engine: Engine, statement: str) -> None:
    db = sqlite3.connect(engine.store.path)  # type: ignore[attr-defined]
    try:
        db.execute(statement)
        db.commit()
    finally:
        db.close()


async def _attached(engine: Engine, run_id: str) -> list[str]:
    run = await engine.get_run(run_id)
    return [e["fingerprint"] for e in run["timeline"] if e["event"] == "alert_attached"]


async def test_a_re_delivery_of_a_linked_alert_writes_no_link(engine: Engine) -> None:
    (run_id,) = (await _route(engine, "fp-1"))["started"]
    assert (await _route(engine, "fp-2"))["attached"] == [run_id]  # new for the run: linked, one event
    _sql(engine, NO_LINK_WRITES)  # any link write from here on fails routing

    for fingerprint in ("fp-1", "fp-2", "fp-2"):  # Alertmanager re-sending the group
        result = await _route(engine, fingerprint)
        assert result["attached"] == [run_id] and "error" not in result

    assert await _attached(engine, run_id) == ["fp-2"]  # once, not once per delivery


async def test_a_resolution_forgets_the_link_so_firing_again_writes_it(engine: Engine) -> None:
    (run_id,) = (await _route(engine, "fp-1"))["started"]
    await _route(engine, "fp-2")
    await _route(engine, "fp-2", status="resolved")
    run = await engine.get_run(run_id)
    assert [e["event"] for e in run["timeline"]].count("alert_resolved_partly") == 1
    await _route(engine, "fp-2", status="resolved")  # the resolution sent again: no second event
    run = await engine.get_run(run_id)
    assert [e["event"] for e in run["timeline"]].count("alert_resolved_partly") == 1

    await _route(engine, "fp-2", starts="t2")  # fires again: the link is written firing again
    assert await _attached(engine, run_id) == ["fp-2", "fp-2"]
    async with engine.store.transaction() as tx:
        assert await tx.firing_alerts_of(run_id) == 2


async def test_a_rolled_back_routing_transaction_leaves_nothing_believed_written(engine: Engine) -> None:
    (run_id,) = (await _route(engine, "fp-1"))["started"]
    _sql(
        engine,
        "CREATE TRIGGER fail_events BEFORE INSERT ON timeline "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    )
    body = alert_payload(job="web", fingerprint="fp-2")
    payload = WebhookPayload.model_validate(body)
    receipt = await engine.submit(payload, payload.model_dump_json())
    with pytest.raises(Exception, match="disk is full"):
        await engine.route_batch()  # the link is written, then the event fails: all rolled back
    _sql(engine, "DROP TRIGGER fail_events")

    await engine.route_pending()  # routed again: the link must be written again, and its event
    assert (await engine.receipt(receipt))["result"]["attached"] == [run_id]
    assert await _attached(engine, run_id) == ["fp-2"]
    async with engine.store.transaction() as tx:
        assert await tx.firing_alerts_of(run_id) == 2


def test_pending_links_count_only_once_committed() -> None:
    known = Recorded(enabled=True)
    known.link("fp", "rb", "r1")
    assert not known.linked("fp", "rb", "r1")  # not committed yet
    mark = known.mark()
    known.link("fp2", "rb", "r1")
    known.rollback_to(mark)  # its savepoint rolled back
    known.commit()
    assert known.linked("fp", "rb", "r1") and not known.linked("fp2", "rb", "r1")
    known.link("fp3", "rb", "r1")
    known.forget("fp3")  # resolved later in the same transaction
    known.forget("fp")
    known.commit()
    assert not known.linked("fp3", "rb", "r1") and not known.linked("fp", "rb", "r1")
    off = Recorded(enabled=False)  # a shared store: nothing remembered
    off.link("fp", "rb", "r1")
    off.commit()
    assert not off.linked("fp", "rb", "r1")


async def test_one_routing_call_never_resets_what_another_has_pending(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background loop, recovery and tools may all ask to route at once. They share the log of
    links pending commit: a call starting must not drop what one inside its transaction has pending
    (it could then not roll it back, and a rolled-back link would be believed written)."""
    import asyncio

    from daemon.engine import routing

    inner = routing.Router._route_batch
    kept: list[bool] = []

    async def probing(self: routing.Router, tx: Any, fx: Any) -> Any:
        mark = self._recorded.mark()
        self._recorded.link("probe", "scrape", "run")  # pending in this transaction
        await asyncio.sleep(0.01)  # the other calls get to run meanwhile
        kept.append(self._recorded.mark() == mark + 1)
        self._recorded.rollback_to(mark)
        return await inner(self, tx, fx)

    monkeypatch.setattr(routing.Router, "_route_batch", probing)
    for i in range(3):
        payload = WebhookPayload.model_validate(alert_payload(job=f"j{i}", fingerprint=f"fp-{i}"))
        await engine.submit(payload, payload.model_dump_json())
    first = asyncio.create_task(engine.route_batch())
    await asyncio.sleep(0.005)  # the first call is inside its transaction now
    await asyncio.gather(first, *(engine.route_batch() for _ in range(3)))
    assert kept == [True] * 4


async def test_a_run_marked_resolved_is_marked_firing_when_its_alert_fires_again(engine: Engine) -> None:
    # The run stays active after its only alert resolves (on_resolved: ignore) and is marked resolved; a
    # later delivery of the alert firing attaches to it and must mark it firing again (a step's `when:
    # "{{ not run.alert_resolved }}"` reads it), not take the attach-only shortcut of a storm.
    (run_id,) = (await _route(engine, "fp-1"))["started"]
    await _route(engine, "fp-1", status="resolved")
    assert (await engine.get_run(run_id))["alert_resolved"] is True

    assert (await _route(engine, "fp-1", starts="t2"))["attached"] == [run_id]
    assert (await engine.get_run(run_id))["alert_resolved"] is False
    assert (await _route(engine, "fp-1", starts="t2"))["attached"] == [run_id]  # a re-delivery: still firing
    assert (await engine.get_run(run_id))["alert_resolved"] is False
