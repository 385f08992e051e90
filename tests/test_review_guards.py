"""Review findings on the node guards and on validated names, against the Kubernetes API emulator.

With ``limits.max_concurrent_mutating_steps`` above 1 the engine lets two mutating steps run at once.
The blast-radius guards live in the actions, so they must hold then too: two cordons (or two drains) of
different nodes must not both pass the check on the same picture of the cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from support.kube_api import KubeApiEmulator
from support.kube_fixtures import seed_cluster

from daemon.actions import alertmanager, kubernetes
from daemon.actions.base import ActionContext, Output
from daemon.errors import GuardRefused

ACTIONS = {a.name: a for a in [*kubernetes.ACTIONS, *alertmanager.ACTIONS]}


async def run(action_name: str, ctx: ActionContext, /, **params: Any) -> Output:
    action = ACTIONS[action_name]
    return await action.run(ctx, action.params.model_validate(params))


def unschedulable(kube: KubeApiEmulator, *names: str) -> list[str]:
    return [n for n in names if kube.get("Node", n).get("spec", {}).get("unschedulable")]


async def test_two_cordons_at_once_cannot_both_pass_the_guard(
    kube_api: KubeApiEmulator, kube_ctx: Callable[..., ActionContext]
) -> None:
    seed_cluster(kube_api)
    kube_api.stall("GET", "/api/v1/nodes", seconds=0.1, times=2)  # both look before either cordons
    results = await asyncio.gather(
        run("kubernetes.cordon", kube_ctx(run_id="run-a"), node="node-194"),
        run("kubernetes.cordon", kube_ctx(run_id="run-b"), node="node-196"),
        return_exceptions=True,
    )
    assert unschedulable(kube_api, "node-194", "node-196") == ["node-194"]
    assert isinstance(results[1], GuardRefused), results
    assert "limits.max_unavailable_nodes=1" in str(results[1])


async def test_a_cordon_and_a_drain_at_once_cannot_both_pass_the_guard(
    kube_api: KubeApiEmulator, kube_ctx: Callable[..., ActionContext]
) -> None:
    seed_cluster(kube_api)
    kube_api.stall("GET", "/api/v1/nodes", seconds=0.1, times=2)
    results = await asyncio.gather(
        run("kubernetes.drain", kube_ctx(run_id="run-a"), node="node-194", poll_interval="10ms"),
        run("kubernetes.cordon", kube_ctx(run_id="run-b"), node="node-196"),
        return_exceptions=True,
    )
    assert unschedulable(kube_api, "node-194", "node-196") == ["node-194"]
    assert isinstance(results[1], GuardRefused), results


async def test_two_drains_at_once_never_run_together(
    kube_api: KubeApiEmulator, kube_ctx: Callable[..., ActionContext]
) -> None:
    """Even with a limit that allows two nodes out, only one drain runs at a time: the lock is checked
    and taken as one step."""
    seed_cluster(kube_api)
    kube_api.add_node("worker-1", control_plane=False)
    kube_api.add_node("worker-2", control_plane=False)
    # each drain takes a while: its pod's PodDisruptionBudget refuses the first evictions
    kube_api.add_pod("web-1", node="worker-1", pdb_blocks=5)
    kube_api.add_pod("web-2", node="worker-2", pdb_blocks=5)
    kube_api.stall("GET", "/api/v1/nodes", seconds=0.1, times=2)
    results = await asyncio.gather(
        run(
            "kubernetes.drain",
            kube_ctx(run_id="run-a", max_unavailable_nodes=2),
            node="worker-1",
            poll_interval="10ms",
        ),
        run(
            "kubernetes.drain",
            kube_ctx(run_id="run-b", max_unavailable_nodes=2),
            node="worker-2",
            poll_interval="10ms",
        ),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, GuardRefused)]
    assert len(refused) == 1 and "runbookd drains one node at a time" in str(refused[0]), results
    assert [r["ok"] for r in results if isinstance(r, dict)] == [True]
    assert len(unschedulable(kube_api, "worker-1", "worker-2")) == 1


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("kubernetes.node_status", {"node": "node-196\n"}),
        ("kubernetes.cordon", {"node": "node-196\n"}),
        ("kubernetes.delete_pod", {"namespace": "monitoring\n", "name": "prometheus-0"}),
        ("kubernetes.delete_pod", {"namespace": "monitoring", "name": "prometheus-0\n"}),
        ("alertmanager.silence", {"matchers": [{"name": "job\n", "value": "x"}]}),
    ],
)
def test_validated_names_refuse_a_trailing_newline(action: str, params: dict[str, Any]) -> None:
    """``re.match`` with ``$`` accepts a string that ends in a newline; an alert label can."""
    with pytest.raises(ValidationError):
        ACTIONS[action].params.model_validate(params)
