"""Issue 11, point 6: the record of seen Slack signatures is in the store, so a signed request replayed
after a restart, inside its 5-minute window, is refused; records leave the store with their window."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.postgres import PostgresServer
from support.slack_api import ALICE, RUNBOOKS, FakeSlack, command_body, serve_slack, signed_headers

from daemon.store.base import StateStore
from daemon.store.postgres import PgSettings, PgStore
from daemon.store.sqlite import Store


@pytest.mark.usefixtures("store_backend")  # on SQLite and on PostgreSQL, as the issue asks
async def test_a_signed_pause_replayed_after_a_restart_is_refused(tmp_path: Path) -> None:
    slack = await FakeSlack().start()
    try:
        async with serve_slack(tmp_path, RUNBOOKS, slack=slack) as sd:
            body = command_body("pause", ALICE, slack.response_url())
            headers = signed_headers(body, int(sd.d.clock.now()))
            status, _ = await sd.post("/slack/commands", body, headers=headers)
            assert status == 200
            await sd.settle()
            assert (await sd.d.call("GET", "/api/v1/status"))[1]["paused"] is True
            assert (await sd.d.call("POST", "/api/v1/resume"))[0] == 200

        async with serve_slack(tmp_path, RUNBOOKS, slack=slack) as sd:  # same store, same moment
            sd.d.clock.advance(120)  # well inside the window of the signed request
            status, text = await sd.post("/slack/commands", body, headers=headers)
            assert status == 401 and "replayed" in json.loads(text)["error"], text
            await sd.settle()
            assert (await sd.d.call("GET", "/api/v1/status"))[1]["paused"] is False
    finally:
        await slack.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_seen_signatures_are_pruned_once_their_window_has_passed(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store: StateStore
    if backend == "sqlite":
        store = await Store.open(tmp_path / "state.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        store = await PgStore.open(PgSettings(server.fresh_database()))
    try:
        async with store.transaction() as tx:
            assert await tx.first_slack_delivery("v0=aa", expires_at=1_000.0, now=700.0)
            assert not await tx.first_slack_delivery("v0=aa", expires_at=1_000.0, now=900.0)
            assert await tx.first_slack_delivery("v0=bb", expires_at=1_400.0, now=1_000.0)
        async with store.transaction() as tx:  # later: the first record's window is over
            assert await tx.first_slack_delivery("v0=cc", expires_at=1_700.0, now=1_001.0)
            rows = await tx.db.execute_fetchall("SELECT signature FROM slack_signatures ORDER BY 1")
            assert [r[0] for r in rows] == ["v0=bb", "v0=cc"]
    finally:
        await store.close()
