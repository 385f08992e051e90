"""Restarting workloads: delete one pod of a controller, or roll a whole Deployment/StatefulSet/DaemonSet."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.kubernetes import objects as o
from daemon.clients.kubernetes import KubeNotFound, KubernetesClient
from daemon.errors import GuardRefused
from daemon.kits.clock import iso
from daemon.kits.names import DnsLabel, DnsSubdomain


class DeletePodParams(Params):
    namespace: DnsLabel
    name: DnsSubdomain
    grace_period_seconds: int | None = Field(None, ge=0, le=3600)


class RolloutRestartParams(Params):
    kind: Literal["Deployment", "StatefulSet", "DaemonSet"]
    namespace: DnsLabel
    name: DnsSubdomain


@action(
    "kubernetes.delete_pod",
    read_only=False,
    idempotent=False,
    permissions=("get pods", "delete pods"),
)
async def delete_pod(ctx: ActionContext, p: DeletePodParams) -> Output:
    """Restart a pod by deleting it, only when a controller will recreate it.

    Not idempotent: run again after a crash it would restart the replacement (a StatefulSet pod keeps
    its name), so a step interrupted mid-way asks a person."""
    return await delete_controlled_pod(ctx, p.namespace, p.name, p.grace_period_seconds)


async def delete_controlled_pod(
    ctx: ActionContext, namespace: str, name: str, grace_period_seconds: int | None
) -> Output:
    """Delete exactly the pod read (UID precondition), refusing mirror pods and pods without a controller."""
    client: KubernetesClient = ctx.need("kubernetes")
    pod = await client.get_pod(namespace, name)
    owner = o.controller_of(pod)
    if o.is_mirror(pod):
        raise GuardRefused(
            f"refusing to delete {namespace}/{name}: it is the mirror of a static pod; deleting it "
            "does not restart it (the kubelet owns it)"
        )
    if owner is None:
        raise GuardRefused(
            f"refusing to delete {namespace}/{name}: it has no controller, so nothing would recreate it"
        )
    uid = str(o.meta(pod).get("uid"))
    request = client.delete_pod(namespace, name, uid=uid, grace_period_seconds=grace_period_seconds)
    owner_out = {"kind": owner.get("kind"), "name": owner.get("name")}
    if ctx.dry_run:
        return ctx.would(request.describe(client.host), pod=f"{namespace}/{name}", owner=owner_out)
    try:
        await client.send(request)
    except KubeNotFound:
        # Gone already (or a retried DELETE whose first attempt succeeded): the restart is under way.
        ctx.log.info("kubernetes.delete_pod.already_gone", pod=f"{namespace}/{name}")
    return {
        "ok": True,
        "namespace": namespace,
        "name": name,
        "uid": uid,
        "owner": owner_out,
        "message": f"deleted {namespace}/{name}; its {owner.get('kind')} {owner.get('name')} recreates it",
    }


@action(
    "kubernetes.rollout_restart",
    read_only=False,
    idempotent=False,
    permissions=(
        "get apps/deployments",
        "patch apps/deployments",
        "get apps/statefulsets",
        "patch apps/statefulsets",
        "get apps/daemonsets",
        "patch apps/daemonsets",
    ),
)
async def rollout_restart(ctx: ActionContext, p: RolloutRestartParams) -> Output:
    """Restart every pod of a Deployment, StatefulSet or DaemonSet as kubectl rollout restart does.

    Sets the pod template's kubectl.kubernetes.io/restartedAt annotation to now (RFC 3339)."""
    client: KubernetesClient = ctx.need("kubernetes")
    current = await client.get_workload(p.kind, p.namespace, p.name)
    restarted_at = iso(ctx.clock.now())
    patch = {"spec": {"template": {"metadata": {"annotations": {o.RESTARTED_AT_ANNOTATION: restarted_at}}}}}
    request = client.patch_workload(p.kind, p.namespace, p.name, patch)
    target = f"{p.kind} {p.namespace}/{p.name}"
    if ctx.dry_run:
        return ctx.would(request.describe(client.host), target=target, restarted_at=restarted_at)
    updated = await client.send(request)
    generation = o.meta(updated).get("generation") if isinstance(updated, dict) else None
    return {
        "ok": True,
        "kind": p.kind,
        "namespace": p.namespace,
        "name": p.name,
        "restarted_at": restarted_at,
        "generation": generation,
        "previous_generation": o.meta(current).get("generation"),
        "message": f"restarted {target} at {restarted_at}",
    }


ACTIONS = [delete_pod, rollout_restart]
