"""pytest fixtures for the Kubernetes API emulator and for running Kubernetes actions against it.

Import them into a conftest (``from support.kube_fixtures import *``) or a test module:

- ``kube_api``: a started ``KubeApiEmulator`` (``.url``, ``.add_node/add_pod/add_pvc/...``,
  ``.requests``, ``.mutations``, ``.get(kind, name, namespace)``, ``.fail(...)``).
- ``kube_client``: runbookd's ``KubernetesClient`` on the real kubernetes-asyncio ApiClient, pointed at
  the emulator, with tiny retry delays.
- ``action_memory``: a dict-backed ``ActionMemory``.
- ``kube_ctx``: a factory ``kube_ctx(dry_run=False, run_id="run-1", max_unavailable_nodes=1, ...)``
  returning an ``ActionContext`` wired to the two above.
- ``seed_cluster(kube_api)``: the seed's four control-plane nodes, all Ready.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client as k8s

from daemon.actions.base import ActionContext, Clients
from daemon.clients.kubernetes import KubernetesClient, RetryPolicy, connect
from daemon.config import LimitsConfig
from daemon.kits.clock import FrozenClock

from .action_memory import DictActionMemory
from .kube_api import KubeApiEmulator

SEED_NODES = ("node-194", "node-196", "node-197", "node-198")


def api_client_for(url: str) -> Any:
    """A bare kubernetes_asyncio ApiClient for the emulator (close it with ``await c.close()``)."""
    configuration = k8s.Configuration()
    configuration.host = url
    return k8s.ApiClient(configuration)


def seed_cluster(kube: KubeApiEmulator, names: tuple[str, ...] = SEED_NODES) -> None:
    for name in names:
        kube.add_node(name, control_plane=True)


@pytest_asyncio.fixture
async def kube_api() -> AsyncIterator[KubeApiEmulator]:
    emulator = KubeApiEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest_asyncio.fixture
async def kube_client(kube_api: KubeApiEmulator) -> AsyncIterator[KubernetesClient]:
    client = await connect(
        host=kube_api.url, timeout=5.0, retry=RetryPolicy(attempts=3, backoff=0.01, max_delay=0.05)
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def action_memory() -> DictActionMemory:
    return DictActionMemory()


@pytest.fixture
def kube_ctx(kube_client: KubernetesClient, action_memory: DictActionMemory) -> Callable[..., ActionContext]:
    def make(
        *,
        dry_run: bool = False,
        run_id: str = "run-1",
        step_id: str = "step",
        max_unavailable_nodes: int = 1,
        memory: Any = None,
        clock: FrozenClock | None = None,
        client: KubernetesClient | None = None,
    ) -> ActionContext:
        return ActionContext(
            run_id=run_id,
            step_id=step_id,
            runbook="test-runbook",
            dry_run=dry_run,
            clients=Clients(kubernetes=client or kube_client),
            memory=memory if memory is not None else action_memory,
            limits=LimitsConfig(max_unavailable_nodes=max_unavailable_nodes),
            clock=clock or FrozenClock(1_800_000_000.0),
        )

    return make
