"""Wait, read-only, until a node is Ready, a pod is Ready, or a PVC resize has finished."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import model_validator

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.kubernetes import objects as o
from daemon.actions.kubernetes.storage import resize_state
from daemon.clients.kubernetes import KubeNotFound, KubernetesClient
from daemon.errors import TemporaryError
from daemon.kits.durations import Duration
from daemon.kits.names import DnsLabel, DnsSubdomain
from daemon.kits.quantities import format_bytes, parse_quantity

Until = Literal["node_ready", "pod_ready", "pvc_resized"]


class WaitParams(Params):
    until: Until
    node: DnsSubdomain | None = None
    """For node_ready."""
    namespace: DnsLabel | None = None
    """For pod_ready and pvc_resized."""
    name: DnsSubdomain | None = None
    """The pod (pod_ready) or the PVC (pvc_resized)."""
    timeout: Duration = 600.0
    interval: Duration = 5.0

    @model_validator(mode="after")
    def _target_given(self) -> WaitParams:
        if self.until == "node_ready":
            if self.node is None or self.namespace is not None or self.name is not None:
                raise ValueError("until: node_ready takes node (and no namespace or name)")
        elif self.namespace is None or self.name is None or self.node is not None:
            raise ValueError(f"until: {self.until} takes namespace and name (and no node)")
        if not 0 < self.timeout <= 24 * 3600:
            raise ValueError("timeout must be more than 0 and at most 24h")
        if not 0.01 <= self.interval <= 600:
            raise ValueError("interval must be between 10ms and 10m")
        return self

    @property
    def target(self) -> str:
        return self.node if self.node is not None else f"{self.namespace}/{self.name}"


Probe = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
"""One look: (condition met?, what was seen)."""


def _probe(client: KubernetesClient, p: WaitParams) -> Probe:
    async def node_ready() -> tuple[bool, dict[str, Any]]:
        assert p.node is not None
        node = await client.get_node(p.node)
        ready = o.node_ready(node)
        return ready == "True", {"ready": ready, "pressure": o.pressures(node)}

    async def pod_ready() -> tuple[bool, dict[str, Any]]:
        assert p.namespace is not None and p.name is not None
        pod = await client.get_pod(p.namespace, p.name)
        return o.pod_ready(pod), {"phase": o.status(pod).get("phase"), "ready": o.pod_ready(pod)}

    async def pvc_resized() -> tuple[bool, dict[str, Any]]:
        assert p.namespace is not None and p.name is not None
        pvc = await client.get_pvc(p.namespace, p.name)
        requested = parse_quantity(str(o.spec(pvc)["resources"]["requests"]["storage"]))
        capacity = parse_quantity(str((o.status(pvc).get("capacity") or {}).get("storage", "0")))
        state = resize_state(pvc)
        seen = {"requested": format_bytes(requested), "capacity": format_bytes(capacity), **state}
        return not state["resizing"], seen

    return {"node_ready": node_ready, "pod_ready": pod_ready, "pvc_resized": pvc_resized}[p.until]


@action(
    "kubernetes.wait",
    read_only=True,
    idempotent=True,
    permissions=("get nodes", "get pods", "get persistentvolumeclaims"),
)
async def wait(ctx: ActionContext, p: WaitParams) -> Output:
    """Poll until a node is Ready, a pod is Ready, or a PVC resize has finished; give up at the timeout.

    A missing object or a transient API error counts as not yet (a restarted pod may come back)."""
    client: KubernetesClient = ctx.need("kubernetes")
    probe = _probe(client, p)
    started = time.monotonic()
    attempts, seen = 0, dict[str, Any]()
    while True:
        attempts += 1
        try:
            met, seen = await probe()
        except KubeNotFound as exc:
            met, seen = False, {"error": str(exc)}
        except TemporaryError as exc:
            met, seen = False, {"error": str(exc)}
        waited = round(time.monotonic() - started, 3)
        out = {
            "until": p.until,
            "target": p.target,
            "attempts": attempts,
            "waited_seconds": waited,
            "seen": seen,
        }
        if met:
            return {"ok": True, **out, "message": f"{p.target}: {p.until} after {waited:.0f}s"}
        left = p.timeout - (time.monotonic() - started)
        if left <= 0:
            return {"ok": False, **out, "message": f"{p.target}: not {p.until} after {p.timeout:g}s: {seen}"}
        ctx.log.info("kubernetes.wait.pending", until=p.until, target=p.target, attempt=attempts)
        await asyncio.sleep(min(p.interval, left))


ACTIONS = [wait]
