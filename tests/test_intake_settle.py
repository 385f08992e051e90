"""Notifications no runbook acts on are routed as they are stored (issue 11 §8: intake cheap on its own).

Every alert firing and none matching a trigger: the inbox row is written routed, with its receipt, in the
intake's own commit; nothing is left for the router and no alert is recorded. Anything else (one matching
alert, one resolved alert) is stored with its payload and routed after, as before. Both store backends
(the ``engine`` fixture, ``store_backend`` for the in-process daemon, ``backend`` for the follower); the
engine is started without its background router, so "routed" is never a race with it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.engines import LOG_RUNBOOK, make_engine, open_test_store
from support.inproc import alert_payload, serve
from support.payloads import webhook_payload

from daemon.engine import routing
from daemon.engine.engine import Engine
from daemon.engine.events import WebhookPayload
from daemon.store.leadership import SoleLeader

SCRAPE = LOG_RUNBOOK.replace("name: log", "name: scrape")


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    store = await open_test_store(request, tmp_path, request.param)
    eng = make_engine(tmp_path, store, {"scrape": SCRAPE})
    await eng.start(background=False)  # no background router
    yield eng
    await eng.stop()
    await store.close()


def _payload(*alerts: tuple[str, str, str]) -> WebhookPayload:
    """(alertname, fingerprint, status) per alert, in one notification."""
    bodies = [alert_payload(name, status, fp, job=f"job-{fp}")["alerts"][0] for name, fp, status in alerts]
    return WebhookPayload.model_validate({**alert_payload(), "alerts": bodies})


async def _submit(engine: Engine, payload: WebhookPayload) -> int:
    return await engine.submit(payload, payload.model_dump_json())


async def _rows(engine: Engine, sql: str) -> list[Any]:
    async with engine.store.transaction() as tx:
        return list(await tx.db.execute_fetchall(sql))


async def test_firing_alerts_no_runbook_matches_are_routed_in_the_intake_commit(engine: Engine) -> None:
    receipt = await _submit(engine, _payload(("DiskFull", "fp-1", "firing"), ("Other", "fp-2", "firing")))

    found = await engine.receipt(receipt)
    assert found["routed_at"] is not None  # no router ran: the intake wrote it routed
    assert found["result"] == {
        "alerts": 2,
        "started": [],
        "attached": [],
        "cancelled": [],
        "suppressed": [],
        "unmatched": [
            {"alert": "DiskFull", "fingerprint": "fp-1"},
            {"alert": "Other", "fingerprint": "fp-2"},
        ],
    }
    assert await engine.routed(receipt, timeout=1) == found["result"]
    async with engine.store.transaction() as tx:
        assert await tx.unrouted(10) == []
    assert await _rows(engine, "SELECT fingerprint FROM alert_links") == []
    (row,) = await _rows(engine, f"SELECT payload FROM inbox WHERE seq = {receipt}")
    assert row[0] == ""  # the receipt is the record; routing never reads it
    assert await engine.list_runs() == []


async def test_a_matching_or_a_resolved_alert_leaves_the_notification_to_routing(engine: Engine) -> None:
    mixed = await _submit(
        engine, _payload(("DiskFull", "fp-1", "firing"), ("PrometheusScrapeFailure", "fp-2", "firing"))
    )
    resolved = await _submit(engine, _payload(("DiskFull", "fp-3", "resolved")))
    for receipt in (mixed, resolved):
        assert (await engine.receipt(receipt))["routed_at"] is None

    await engine.route_pending()

    result = (await engine.receipt(mixed))["result"]
    assert len(result["started"]) == 1
    assert result["unmatched"] == [{"alert": "DiskFull", "fingerprint": "fp-1"}]
    assert (await engine.receipt(resolved))["routed_at"] is not None
    linked = {r[0] for r in await _rows(engine, "SELECT fingerprint FROM alert_links")}
    assert linked == {"fp-2"}  # the matching alert, linked to its run; not the unmatched one
    # Routed: the receipt is kept, the payload is not (nothing reads it again).
    kept = await _rows(engine, f"SELECT payload FROM inbox WHERE seq IN ({mixed}, {resolved})")
    assert [row[0] for row in kept] == ["", ""]


async def test_receipts_stay_in_order_across_settled_and_routed_notifications(engine: Engine) -> None:
    receipts = []
    for i in range(6):
        name = "PrometheusScrapeFailure" if i % 2 else "DiskFull"
        receipts.append(await _submit(engine, _payload((name, f"fp-{i}", "firing"))))
    assert receipts == list(range(receipts[0], receipts[0] + 6))
    await engine.route_pending()
    started = [(await engine.receipt(r))["result"]["started"] for r in receipts]
    assert [len(s) for s in started] == [0, 1, 0, 1, 0, 1]


async def test_pruning_never_forgets_the_newest_receipt_so_numbers_are_not_reused(engine: Engine) -> None:
    first = await _submit(engine, _payload(("DiskFull", "fp-1", "firing")))
    last = await _submit(engine, _payload(("DiskFull", "fp-2", "firing")))
    async with engine.store.transaction() as tx:
        await tx.prune_inbox(before=engine.clock.now() + 1)  # both are routed and "old"
    assert [r[0] for r in await _rows(engine, "SELECT seq FROM inbox")] == [last]
    assert await _submit(engine, _payload(("DiskFull", "fp-3", "firing"))) == last + 1 > first


@pytest.mark.usefixtures("store_backend")  # on SQLite and on PostgreSQL
async def test_the_webhook_answers_with_the_settled_receipt(tmp_path: Path) -> None:
    async with serve(tmp_path, {"scrape": SCRAPE}) as d:
        status, body = await d.call(
            "POST",
            "/api/v1/alertmanager",
            token="webhook",
            json=alert_payload("DiskFull", fingerprint="fp-x"),
        )
        assert status == 200 and body == {"status": "stored", "alerts": 1, "receipt": body["receipt"]}
        _, receipt = await d.call("GET", f"/api/v1/receipts/{body['receipt']}")
        assert receipt["routed_at"] is not None
        assert receipt["result"]["unmatched"] == [{"alert": "DiskFull", "fingerprint": "fp-x"}]


_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(_text, st.text(st.characters(exclude_categories=("Cs",)), max_size=20)), max_size=5)
)
def test_the_settled_receipt_is_the_json_routing_would_write(alerts: list[tuple[str, str]]) -> None:
    """The intake writes the receipt from a template (hot path): the same text json.dumps gives."""
    payload = WebhookPayload.model_validate(
        webhook_payload({"alertname": "x"})
        | {
            "alerts": [
                webhook_payload({"alertname": name}, fingerprint=fp)["alerts"][0] for name, fp in alerts
            ]
        }
    )
    router = routing.Router.__new__(routing.Router)
    router._index = lambda: {}  # type: ignore[method-assign]  # no runbook: nothing matches
    expected = routing._summary(len(alerts))
    expected["unmatched"] = [{"alert": a.name, "fingerprint": a.key()} for a in payload.alerts]
    text = router._settled(payload)
    assert text == json.dumps(expected)
    assert json.loads(text or "") == expected


class _Follower(SoleLeader):
    """A replica that does not lead (a PostgreSQL follower, say): it stores, the leader routes."""

    @property
    def leading(self) -> bool:
        return False


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_follower_leaves_even_an_unmatched_notification_to_the_leader(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The leader's runbooks decide (a follower's may differ while the runbooks change)."""
    store = await open_test_store(request, tmp_path, backend)
    try:
        follower = make_engine(tmp_path, store, {"scrape": SCRAPE}, leadership=_Follower())
        receipt = await _submit(follower, _payload(("DiskFull", "fp-1", "firing")))
        assert (await follower.receipt(receipt))["routed_at"] is None
        async with store.transaction() as tx:
            assert [seq for seq, _ in await tx.unrouted(10)] == [receipt]  # payload kept for the leader
    finally:
        await store.close()
