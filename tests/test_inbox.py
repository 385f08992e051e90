"""Store first, route after: notifications survive a crash between the two, and a bad one blocks nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.engines import LOG_RUNBOOK, make_engine
from support.inproc import alert_payload, serve

from daemon.engine.events import WebhookPayload
from daemon.store.sqlite import Store

LOG = LOG_RUNBOOK


async def test_a_notification_stored_before_a_crash_is_routed_on_start(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    first = make_engine(tmp_path, store, {"log": LOG})
    payload = WebhookPayload.model_validate(alert_payload(job="node"))
    receipt = await first.submit(payload, payload.model_dump_json())  # stored; the process "dies" here
    assert (await first.receipt(receipt))["routed_at"] is None
    await store.close()

    store = await Store.open(tmp_path / "state.db")
    second = make_engine(tmp_path, store, {"log": LOG})
    await second.start(background=False)
    try:
        result = (await second.receipt(receipt))["result"]
        assert len(result["started"]) == 1
        run = await second.get_run(result["started"][0])
        assert run["state"] == "awaiting_approval" and run["target"] == "node"
        # routed exactly once: routing again changes nothing
        await second.route_pending()
        assert len(await second.list_runs()) == 1
    finally:
        await second.stop()
        await store.close()


@pytest.mark.usefixtures("store_backend")  # on SQLite and on PostgreSQL
async def test_an_unroutable_notification_does_not_block_the_ones_behind_it(tmp_path: Path) -> None:
    async with serve(tmp_path, {"log": LOG}) as d:
        async with d.engine.store.transaction() as tx:  # as if stored by an older version, now unreadable
            await tx.append_inbox(
                [(d.clock.now(), 1, json.dumps({"status": "firing", "alerts": "x"}), None, None)]
            )
        status, body = await d.webhook(alert_payload(job="after"))
        assert status == 200 and body["receipt"] == 2 and len(body["started"]) == 1
        status, bad = await d.call("GET", "/api/v1/receipts/1")
        assert status == 200 and bad["routed_at"] is not None
        assert bad["result"]["error"].startswith("could not be routed")
        async with d.engine.store.transaction() as tx:  # set aside with its payload, for a person to read
            assert await tx.inbox_payload(1) == json.dumps({"status": "firing", "alerts": "x"})
            assert await tx.inbox_payload(2) == ""  # a routed one keeps its receipt only


@pytest.mark.usefixtures("store_backend")
async def test_a_stored_label_with_a_nul_does_not_stall_routing(tmp_path: Path) -> None:
    """Audit: on PostgreSQL (which cannot store U+0000 in text) routing retried such a notification for ever
    as "store unavailable", and every notification behind it waited. The webhook now refuses it; one
    already in the inbox (stored by an older version) is routed, the NUL kept as U+FFFD there."""
    async with serve(tmp_path, {"log": LOG}) as d:
        poison = json.dumps(alert_payload(job="j\u0000"))
        async with d.engine.store.transaction() as tx:
            await tx.append_inbox([(d.clock.now(), 1, poison, None, None)])
        status, body = await d.webhook(alert_payload(job="after"))
        assert status == 200 and body["receipt"] == 2 and len(body["started"]) == 1, body
        status, first = await d.call("GET", "/api/v1/receipts/1")
        assert status == 200 and first["routed_at"] is not None and len(first["result"]["started"]) == 1
        run = await d.run(first["result"]["started"][0])
        assert run["target"] in ("j\u0000", "j\ufffd")


@pytest.mark.usefixtures("store_backend")
async def test_receipts_api(tmp_path: Path) -> None:
    async with serve(tmp_path, {"log": LOG}) as d:
        status, body = await d.webhook(alert_payload(job="a"))
        assert status == 200 and body["status"] == "stored" and body["alerts"] == 1
        status, receipt = await d.call("GET", f"/api/v1/receipts/{body['receipt']}")
        assert status == 200 and receipt["result"]["started"] == body["started"]
        assert (await d.call("GET", "/api/v1/receipts/999"))[0] == 404
        assert (await d.call("GET", "/api/v1/receipts/abc"))[0] == 400
        assert (await d.call("GET", "/api/v1/receipts/1", token=None))[0] == 401
