"""Drain a node as ``kubectl drain --ignore-daemonsets`` does, behind the blast-radius guards.

DaemonSet pods and mirror (static) pods are skipped; finished pods are evicted; a pod using emptyDir
needs ``delete_emptydir_data`` and a pod without a controller (or whose DaemonSet is gone) needs
``force_unmanaged``. Any pod needing an opt-in that was not given refuses the whole drain before
anything changes, as does a node holding the last copy of a Longhorn volume (``longhorn_replicas``) or
pods the other nodes cannot absorb (``capacity``). Pods are evicted through the Eviction API, all at
once; a pod a PodDisruptionBudget protects (429) is retried every ``poll_interval`` until ``timeout``; an evicted pod is waited for until
it is gone. Every pod's outcome is reported.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.kubernetes import capacity, guards, longhorn_replicas
from daemon.actions.kubernetes import objects as o
from daemon.clients.kubernetes import EvictionBlocked, KubeNotFound, KubernetesClient
from daemon.errors import ActionError, GuardRefused
from daemon.kits.durations import Duration
from daemon.kits.names import DnsSubdomain

Outcome = Literal["evicted", "already_gone", "skipped", "blocked", "not_gone_in_time", "failed"]


class DrainParams(Params):
    node: DnsSubdomain
    delete_emptydir_data: bool = False
    """Evict pods using emptyDir volumes too; their emptyDir data is lost."""
    force_unmanaged: bool = False
    """Evict pods with no controller (or an orphaned DaemonSet pod): nothing recreates them."""
    timeout: Duration = 300.0
    """How long to keep retrying evictions a PodDisruptionBudget blocks, and to wait for pods to go."""
    poll_interval: Duration = 5.0
    """Between eviction retries (kubectl's 5s) and between checks that evicted pods are gone."""
    grace_period_seconds: int | None = Field(None, ge=0, le=3600)
    """Overrides each pod's terminationGracePeriodSeconds when set."""
    check_capacity: bool = True
    """Refuse when the other Ready, schedulable nodes cannot absorb the evicted pods' requests
    (cpu, memory, pod slots): they would stay Pending. See daemon.actions.kubernetes.capacity."""
    check_longhorn_replicas: bool = True
    """Refuse when the node holds the last copy of a Longhorn volume (Longhorn's own drain rule, also
    under node-drain-policy always-allow; the eviction policies are left to Longhorn). See
    daemon.actions.kubernetes.longhorn_replicas; the output's ``longhorn`` says what was found."""

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float) -> float:
        if not 0 < v <= 6 * 3600:
            raise ValueError("timeout must be more than 0 and at most 6h")
        return v

    @field_validator("poll_interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if not 0.01 <= v <= 300:
            raise ValueError("poll_interval must be between 10ms and 5m")
        return v


@dataclass
class PodPlan:
    pod: o.Obj
    evict: bool
    reason: str
    needs: str | None = None
    """The opt-in this pod needs and was not given; the drain is refused when any pod has one."""

    @property
    def ref(self) -> str:
        return o.ref(self.pod)


@dataclass
class PodResult:
    namespace: str
    name: str
    outcome: Outcome
    reason: str
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "outcome": self.outcome,
            "reason": self.reason,
            "attempts": self.attempts,
        }


async def _existing_daemonsets(client: KubernetesClient, pods: list[o.Obj]) -> set[tuple[str, str]]:
    """The DaemonSets owning these pods that still exist (an orphaned DaemonSet pod is unmanaged)."""
    found: set[tuple[str, str]] = set()
    for pod in pods:
        owner = o.controller_of(pod)
        if owner is None or owner.get("kind") != "DaemonSet":
            continue
        key = (str(o.meta(pod).get("namespace")), str(owner.get("name")))
        if key in found:
            continue
        try:
            await client.get_workload("DaemonSet", *key)
            found.add(key)
        except KubeNotFound:
            pass
    return found


def plan_pod(pod: o.Obj, p: DrainParams, daemonsets: set[tuple[str, str]]) -> PodPlan:
    """kubectl's drain filters, in kubectl's order (k8s.io/kubectl/pkg/drain/filters.go)."""
    owner = o.controller_of(pod)
    finished = o.is_finished(pod)
    if owner is not None and owner.get("kind") == "DaemonSet" and not finished:
        if (str(o.meta(pod).get("namespace")), str(owner.get("name"))) in daemonsets:
            return PodPlan(pod, False, "DaemonSet-managed")
        if not p.force_unmanaged:
            return PodPlan(pod, False, "its DaemonSet no longer exists", needs="force_unmanaged")
        return PodPlan(pod, True, "orphaned DaemonSet pod (force_unmanaged)")
    if o.is_mirror(pod):
        return PodPlan(pod, False, "mirror pod of a static pod")
    if o.uses_empty_dir(pod) and not finished and not p.delete_emptydir_data:
        return PodPlan(pod, False, "uses emptyDir (its data would be lost)", needs="delete_emptydir_data")
    if finished:
        return PodPlan(pod, True, f"finished ({o.status(pod).get('phase')})")
    if owner is None:
        if not p.force_unmanaged:
            return PodPlan(
                pod, False, "has no controller (nothing would recreate it)", needs="force_unmanaged"
            )
        return PodPlan(pod, True, "unmanaged (force_unmanaged)")
    return PodPlan(pod, True, f"managed by {owner.get('kind')} {owner.get('name')}")


def _refuse_opt_ins(node: str, plans: list[PodPlan]) -> None:
    blocked = [pl for pl in plans if pl.needs]
    if not blocked:
        return
    listed = "; ".join(f"{pl.ref} {pl.reason} (needs {pl.needs}: true)" for pl in blocked[:10])
    more = f"; and {len(blocked) - 10} more" if len(blocked) > 10 else ""
    raise GuardRefused(
        f"refusing to drain {node}: {len(blocked)} pod(s) need an explicit opt-in: {listed}{more}. "
        "Nothing was changed."
    )


async def _longhorn_check(client: KubernetesClient, nodes: list[o.Obj], node: str) -> dict[str, Any]:
    """Refuse when the drain would take away the last copy of a Longhorn volume; else what was found."""
    try:
        found = await longhorn_replicas.check(client, node, nodes)
    except ActionError as exc:
        raise GuardRefused(
            f"refusing to drain {node}: could not read Longhorn's replicas to check that no volume "
            f"keeps its last copy there ({exc}). Nothing was changed."
        ) from exc
    if found.outcome != "refused":
        return found.as_dict()
    raise GuardRefused(
        f"refusing to drain {node}: it holds the last copy of {len(found.last)} Longhorn volume(s): no "
        f"healthy replica on another Ready, schedulable node with a running instance manager: {found.listed()}. "
        f"Longhorn's node-drain-policy is {found.policy}. Let Longhorn rebuild a replica elsewhere (or evict "
        "the node's replicas), then drain. Nothing was changed."
    )


async def _refuse_without_room(
    client: KubernetesClient, nodes: list[o.Obj], node: str, pods: list[o.Obj]
) -> None:
    everywhere = await client.list_objects("/api/v1/pods")
    room = capacity.absorb(nodes, everywhere, node, [pod for pod in pods if capacity.moves(pod)])
    if not room.ok:
        raise GuardRefused(f"refusing to drain {node}: {room.message()}. Nothing was changed.")


@dataclass
class _Evictor:
    client: KubernetesClient
    p: DrainParams
    deadline: float
    log: Any

    async def run(self, pod: o.Obj) -> PodResult:
        ns, name, uid = str(o.meta(pod).get("namespace")), o.name_of(pod), o.meta(pod).get("uid")
        request = self.client.evict_pod(ns, name, grace_period_seconds=self.p.grace_period_seconds)
        runs_replicas = self.p.check_longhorn_replicas and longhorn_replicas.is_instance_manager(pod)
        attempts, last_block = 0, ""
        while True:
            attempts += 1
            if runs_replicas and (why := await self._last_copy_here()):
                return PodResult(ns, name, "blocked", why, attempts)
            try:
                await self.client.send(request)
                break
            except KubeNotFound:
                return PodResult(ns, name, "already_gone", "the pod was gone before its eviction", attempts)
            except EvictionBlocked as exc:
                last_block = str(exc)
                self.log.info("kubernetes.drain.eviction_blocked", pod=f"{ns}/{name}", attempt=attempts)
            except ActionError as exc:
                return PodResult(ns, name, "failed", str(exc), attempts)
            if not await self._sleep():
                return PodResult(ns, name, "blocked", f"still refused at the timeout: {last_block}", attempts)
        return await self._wait_gone(ns, name, uid, attempts)

    async def _last_copy_here(self) -> str | None:
        """Why evicting the node's Longhorn instance manager now would stop the last copy of a volume
        (None: it would not). Checked again before every attempt: while its evictions are retried
        (Longhorn's budget holds them until the node's volumes are detached) a copy elsewhere may fail."""
        try:
            found = await longhorn_replicas.check(self.client, self.p.node, await self.client.list_nodes())
        except ActionError as exc:
            return f"not evicted: could not re-check Longhorn's replicas ({exc})"
        if found.outcome != "refused":
            return None
        return f"not evicted: it runs the last copy of {len(found.last)} Longhorn volume(s) now: {found.listed()}"

    async def _wait_gone(self, ns: str, name: str, uid: Any, attempts: int) -> PodResult:
        while True:
            try:
                pod = await self.client.get_pod(ns, name)
            except KubeNotFound:
                return PodResult(ns, name, "evicted", "evicted and gone", attempts)
            except ActionError as exc:
                return PodResult(ns, name, "failed", f"evicted, then could not check it: {exc}", attempts)
            if o.meta(pod).get("uid") != uid:
                return PodResult(ns, name, "evicted", "evicted; a new pod took its name", attempts)
            if not await self._sleep():
                return PodResult(ns, name, "not_gone_in_time", "evicted but still terminating", attempts)

    async def _sleep(self) -> bool:
        """Wait one poll interval; False when the deadline has passed (or would, before the next try)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(self.p.poll_interval, left))
        return True


async def _evict_all(
    ctx: ActionContext, client: KubernetesClient, p: DrainParams, pods: list[o.Obj]
) -> list[PodResult]:
    evictor = _Evictor(client, p, time.monotonic() + p.timeout, ctx.log)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(evictor.run(pod), name=f"drain {p.node}: {o.ref(pod)}") for pod in pods]
    return [t.result() for t in tasks]


def _report(node: str, cordoned: bool, plans: list[PodPlan], results: list[PodResult], took: float) -> Output:
    skipped = [
        PodResult(str(o.meta(pl.pod).get("namespace")), o.name_of(pl.pod), "skipped", pl.reason)
        for pl in plans
        if not pl.evict
    ]
    bad = [r for r in results if r.outcome in ("blocked", "not_gone_in_time", "failed")]
    counts: dict[str, int] = {}
    for r in [*results, *skipped]:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    if bad:
        message = f"drain of {node} incomplete after {took:.0f}s: " + "; ".join(
            f"{r.namespace}/{r.name} {r.outcome}: {r.reason}" for r in bad[:10]
        )
    else:
        message = f"drained {node}: {len(results)} pod(s) evicted or gone, {len(skipped)} skipped"
    return {
        "ok": not bad,
        "node": node,
        "cordoned_now": cordoned,
        "counts": counts,
        "pods": [r.as_dict() for r in [*results, *skipped]],
        "seconds": round(took, 3),
        "message": message,
    }


@action(
    "kubernetes.drain",
    read_only=False,
    idempotent=True,
    permissions=(
        "list nodes",
        "patch nodes",
        "list pods",
        "get pods",
        "create pods/eviction",
        "get apps/daemonsets",
        *longhorn_replicas.PERMISSIONS,
    ),
)
async def drain(ctx: ActionContext, p: DrainParams) -> Output:
    """Cordon and drain a node as kubectl drain does (Eviction API, PDB-aware), one node at a time."""
    client: KubernetesClient = ctx.need("kubernetes")
    async with AsyncExitStack() as held:
        # From the checks until the drain lock is taken and the cordon sent, no other node action of
        # this daemon may check or cordon: each must see the cluster as the other one left it.
        async with client.take_out_lock:
            await guards.check_drain_lock(ctx, p.node)
            nodes = await client.list_nodes()
            node = o.find_node(nodes, p.node)
            cluster = guards.ClusterNodes.from_objects(nodes)
            guards.check_take_out(cluster, p.node, "drain", ctx.limits.max_unavailable_nodes)
            pods = await client.pods_on_node(p.node)
            daemonsets = await _existing_daemonsets(client, pods)
            plans = [plan_pod(pod, p, daemonsets) for pod in pods]
            _refuse_opt_ins(p.node, plans)
            to_evict = [pl.pod for pl in plans if pl.evict]
            if p.check_capacity:
                await _refuse_without_room(client, nodes, p.node, to_evict)
            longhorn = await _longhorn_check(client, nodes, p.node) if p.check_longhorn_replicas else None
            cordon = (
                None
                if o.is_unschedulable(node)
                else client.patch_node(p.node, {"spec": {"unschedulable": True}})
            )
            if ctx.dry_run:
                requests = [] if cordon is None else [cordon.describe(client.host)]
                for pod in to_evict:
                    ns = str(o.meta(pod).get("namespace"))
                    evict = client.evict_pod(ns, o.name_of(pod), grace_period_seconds=p.grace_period_seconds)
                    requests.append(evict.describe(client.host))
                skipped = [{"pod": pl.ref, "reason": pl.reason} for pl in plans if not pl.evict]
                return ctx.would(*requests, node=p.node, skipped=skipped, longhorn=longhorn)
            started = time.monotonic()
            await held.enter_async_context(guards.drain_lock(ctx, p.node, hold_for=p.timeout))
            if cordon is not None:
                await guards.remember_cordon(ctx, p.node, f"drain ({ctx.origin})")
                await client.send(cordon)
        results = await _evict_all(ctx, client, p, to_evict)  # the drain lock is held until the end
    return _report(p.node, cordon is not None, plans, results, time.monotonic() - started) | {
        "longhorn": longhorn
    }


ACTIONS = [drain]
