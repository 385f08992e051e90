"""pytest fixtures for the local OpenSearch server and for running the opensearch.* actions against it.

Import them into a test module (``from support.opensearch_fixtures import opensearch, os_client, os_ctx``):

- ``opensearch``: a started ``FakeOpenSearch`` (``.url``, ``.add_index/add_snapshot/add_data_stream``,
  ``.outcomes[name] = {...}``, ``.finish``, ``.set_state``, ``.fail_next``, ``.write``, ``.requests``);
- ``os_client``: runbookd's ``OpenSearchClient`` pointed at it, with tiny retry delays;
- ``os_ctx``: a factory ``os_ctx(dry_run=False, memory=None, now=None)`` -> ``ActionContext``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from daemon.actions.base import ActionContext, Clients
from daemon.clients.opensearch import Backoff, OpenSearchClient
from daemon.kits.clock import FrozenClock

from .action_memory import DictActionMemory
from .opensearch_server import FakeOpenSearch

FAST = Backoff(base=0.01, max_delay=0.05)


@pytest_asyncio.fixture
async def opensearch() -> AsyncIterator[FakeOpenSearch]:
    server = FakeOpenSearch()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def client_for(server: FakeOpenSearch, **kwargs: Any) -> OpenSearchClient:
    return OpenSearchClient(server.url, **{"timeout": 5.0, "retries": 2, "backoff": FAST, **kwargs})


@pytest_asyncio.fixture
async def os_client(opensearch: FakeOpenSearch) -> AsyncIterator[OpenSearchClient]:
    client = client_for(opensearch)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def os_memory() -> DictActionMemory:
    return DictActionMemory()


@pytest.fixture
def os_ctx(os_client: OpenSearchClient, os_memory: DictActionMemory) -> Callable[..., ActionContext]:
    def make(
        *,
        dry_run: bool = False,
        memory: Any = None,
        now: float | None = None,
        step_id: str = "step",
        client: OpenSearchClient | None = None,
    ) -> ActionContext:
        return ActionContext(
            run_id="run-1",
            step_id=step_id,
            runbook="test-runbook",
            dry_run=dry_run,
            clients=Clients(opensearch=client or os_client),
            memory=memory if memory is not None else os_memory,
            clock=FrozenClock(time.time() if now is None else now),
        )

    return make
