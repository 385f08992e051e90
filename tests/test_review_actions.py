"""Review findings on the Alertmanager and Prometheus actions.

- A silence is reused by a re-run of *its own* step only: the step's origin must match exactly, not as a
  substring (step ``silence`` is a prefix of step ``silence-2``), checked against a real Alertmanager.
- ``prometheus.wait`` is bounded like ``kubernetes.wait``: a step cannot be made to wait for ever (a
  running step cannot be rejected) nor to hammer Prometheus with a zero interval.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from pydantic import ValidationError
from support.action_memory import DictActionMemory
from support.am import AlertmanagerServer

from daemon.actions import alertmanager, prometheus
from daemon.actions.base import ActionContext, Clients
from daemon.clients.alertmanager import AlertmanagerClient
from daemon.clients.http import JsonHttpClient
from daemon.kits.clock import FrozenClock

ACTIONS = {a.name: a for a in [*alertmanager.ACTIONS, *prometheus.ACTIONS]}


@pytest_asyncio.fixture
async def am_client(
    alertmanager_factory: Callable[..., AlertmanagerServer],
) -> AsyncIterator[AlertmanagerClient]:
    am = alertmanager_factory()
    client = AlertmanagerClient(JsonHttpClient(am.url, timeout=5.0, name="alertmanager"))
    try:
        yield client
    finally:
        await client.close()


def ctx_for(client: AlertmanagerClient, step_id: str) -> ActionContext:
    import time

    return ActionContext(
        run_id="20260101-000000-abcdef",
        step_id=step_id,
        runbook="test",
        dry_run=False,
        clients=Clients(alertmanager=client),
        memory=DictActionMemory(),
        clock=FrozenClock(time.time()),
    )


async def silence(client: AlertmanagerClient, step_id: str, job: str) -> dict[str, Any]:
    action = ACTIONS["alertmanager.silence"]
    params = action.params.model_validate(
        {"matchers": [{"name": "job", "value": job}], "duration": "1h", "comment": f"job {job}"}
    )
    return await action.run(ctx_for(client, step_id), params)


async def test_a_silence_is_reused_only_by_its_own_step(am_client: AlertmanagerClient) -> None:
    first = await silence(am_client, "silence-2", "db")
    assert first["reused"] is False
    # another step of the same run whose id is a prefix of the first one's: a silence of its own
    second = await silence(am_client, "silence", "web")
    assert second["reused"] is False, second
    assert second["silence_id"] != first["silence_id"]
    # the same step again (a re-run after a crash): its own silence, not a second one
    again = await silence(am_client, "silence", "web")
    assert again["reused"] is True and again["silence_id"] == second["silence_id"]
    by_id = {s["id"]: s for s in await am_client.silences()}
    assert {m["value"] for m in by_id[second["silence_id"]]["matchers"]} == {"web"}


@pytest.mark.parametrize(
    "params",
    [
        {"query": "up", "timeout": "3650d"},
        {"query": "up", "interval": "0s"},
        {"query": "up", "timeout": "0s"},
    ],
)
def test_prometheus_wait_is_bounded(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ACTIONS["prometheus.wait"].params.model_validate(params)


def test_prometheus_wait_accepts_what_the_shipped_runbooks_use() -> None:
    model = ACTIONS["prometheus.wait"].params
    model.model_validate({"query": "up", "timeout": "30m", "interval": "15s"})
    model.model_validate({"query": "up", "timeout": "24h", "interval": "5s"})
