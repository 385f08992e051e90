"""thanos.diagnose_sidecar (read-only) and thanos.restart_prometheus_replica (mutating, guarded).

The diagnosis puts in front of the approver what an SRE would look at before restarting a Prometheus
pod whose sidecar does not upload: the sidecar's recent log lines (redacted), the bucket operations
that fail, the cause those point at (``sidecar_causes``), for credential errors whether the objstore
Secret changed after the container started, and whether another replica of the same Prometheus set is
Ready, scraping and shipping (``replicas``). Its ``verdict`` is ``restart`` only when a restart can cure
the cause *and* another replica carries the data meanwhile.

The restart re-checks the other replicas right before deleting the pod: a runbook step that said "fine"
thirty minutes ago, before the approval, is not trusted.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.kubernetes import objects as o
from daemon.actions.kubernetes.logs import PodLogsParams, read_log
from daemon.actions.kubernetes.workloads import delete_controlled_pod
from daemon.actions.thanos import replicas
from daemon.actions.thanos.sidecar_causes import classify, decide
from daemon.clients.kubernetes import KubernetesClient
from daemon.clients.prometheus import PrometheusClient
from daemon.kits.clock import iso, parse_iso
from daemon.kits.durations import Duration
from daemon.kits.names import DnsLabel, DnsSubdomain, LabelValue, S3BucketName


class SidecarParams(Params):
    namespace: DnsLabel
    pod: DnsSubdomain
    bucket: S3BucketName
    cluster: LabelValue = ""
    """The alert's external ``cluster`` label, when Prometheus is a Thanos Query over several clusters."""
    ship_window: Duration = 4 * 3600.0
    """Another replica counts as shipping when its sidecar uploaded a block within this long."""

    @field_validator("ship_window")
    @classmethod
    def _window(cls, v: float) -> float:
        if not 2 * 3600 <= v <= 24 * 3600:
            raise ValueError("ship_window is between 2h (one block) and 24h")
        return v


class DiagnoseParams(SidecarParams):
    container: DnsLabel = "thanos-sidecar"
    log_lines: int = Field(200, ge=10, le=2000)
    log_since: Duration = 3600.0


class RestartParams(SidecarParams):
    grace_period_seconds: int | None = Field(None, ge=0, le=3600)


def _prom(ctx: ActionContext) -> PrometheusClient | None:
    return ctx.clients.prometheus  # type: ignore[no-any-return]


def secret_names(pod: o.Obj, container: str) -> list[str]:
    """The Secrets a container reads: env valueFrom, envFrom, and volumes it mounts."""
    spec = o.spec(pod)
    c = next((c for c in spec.get("containers") or [] if c.get("name") == container), None)
    if c is None:
        return []
    names = {
        str(e["valueFrom"]["secretKeyRef"]["name"])
        for e in c.get("env") or []
        if isinstance((e.get("valueFrom") or {}).get("secretKeyRef"), dict)
    }
    names |= {
        str(e["secretRef"]["name"]) for e in c.get("envFrom") or [] if isinstance(e.get("secretRef"), dict)
    }
    mounted = {m.get("name") for m in c.get("volumeMounts") or []}
    for v in spec.get("volumes") or []:
        if v.get("name") in mounted and isinstance(v.get("secret"), dict):
            names.add(str(v["secret"].get("secretName")))
    return sorted(n for n in names if n)


def started_at(pod: o.Obj, container: str) -> float | None:
    for cs in o.status(pod).get("containerStatuses") or []:
        if cs.get("name") == container:
            running = (cs.get("state") or {}).get("running") or {}
            return parse_iso(running["startedAt"]) if running.get("startedAt") else None
    return None


async def _secrets_changed(
    prom: PrometheusClient | None, p: SidecarParams, pod: o.Obj, container: str, now: float
) -> tuple[bool | None, list[dict[str, Any]]]:
    """Whether a Secret the container reads changed after it started; None when it cannot be told.

    runbookd holds no permission on Secrets (the chart grants none, by design), so it does not read
    their ``managedFields[].time``. It asks kube-state-metrics' history instead: the Secret's
    ``kube_secret_metadata_resource_version`` (the object's resourceVersion, which every write bumps)
    changed within the container's lifetime, or ``kube_secret_created`` is after its start (the Secret
    was recreated). A series that is missing means "cannot tell"; history shorter than the container's
    lifetime can only hide a change, which errs towards reporting instead of restarting."""
    start = started_at(pod, container)
    names = secret_names(pod, container)
    if prom is None or start is None or not names:
        return None, [{"secret": n, "known": False} for n in names]
    window = max(60, int(now - start) + 60)
    seen: list[dict[str, Any]] = []
    for name in names:
        sel = (
            f'namespace="{replicas.q(p.namespace)}", secret="{replicas.q(name)}", '
            f'cluster=~"{replicas.re_any([p.cluster]) if p.cluster else ""}|"'
        )
        now_rv = await prom.query(f"max(kube_secret_metadata_resource_version{{{sel}}})")
        if not now_rv:
            seen.append({"secret": name, "known": False})
            continue
        changes = await prom.query(f"max(changes(kube_secret_metadata_resource_version{{{sel}}}[{window}s]))")
        created = await prom.query(f"max(kube_secret_created{{{sel}}})")
        recreated = bool(created) and created[0].value > start
        changed = recreated or (bool(changes) and changes[0].value > 0)
        seen.append({"secret": name, "known": True, "changed_after_start": changed, "recreated": recreated})
    if any(not s["known"] for s in seen):
        return (True if any(s.get("changed_after_start") for s in seen) else None), seen
    return any(s["changed_after_start"] for s in seen), seen


async def _failing_operations(prom: PrometheusClient | None, p: SidecarParams) -> list[str]:
    if prom is None:
        return []
    sel = (
        f'namespace="{replicas.q(p.namespace)}", pod="{replicas.q(p.pod)}", bucket="{replicas.q(p.bucket)}", '
        f'cluster=~"{replicas.re_any([p.cluster]) if p.cluster else ""}|"'
    )
    expr = f"sum by (operation) (increase(thanos_objstore_bucket_operation_failures_total{{{sel}}}[15m])) > 0"
    return sorted(s.labels.get("operation", "?") for s in await prom.query(expr))


@action(
    "thanos.diagnose_sidecar",
    read_only=True,
    idempotent=True,
    permissions=("get pods", "list pods", "get pods/log"),
)
async def diagnose_sidecar(ctx: ActionContext, p: DiagnoseParams) -> Output:
    """Why a Thanos sidecar fails to upload (log lines, failing operations, cause), whether a restart
    cures that, and whether another replica of the same Prometheus is healthy."""
    client: KubernetesClient = ctx.need("kubernetes")
    prom = _prom(ctx)
    pod = await client.get_pod(p.namespace, p.pod)
    log = await read_log(
        client,
        PodLogsParams(
            namespace=p.namespace, pod=p.pod, container=p.container, tail_lines=p.log_lines, since=p.log_since
        ),
    )
    diagnosis = classify(log.lines, await _failing_operations(prom, p))
    changed: bool | None = None
    secrets: list[dict[str, Any]] = []
    if diagnosis.cause == "credentials":
        changed, secrets = await _secrets_changed(prom, p, pod, p.container, ctx.clock.now())
    decision = decide(diagnosis, changed)
    peers = await replicas.check_peers(
        client,
        prom,
        namespace=p.namespace,
        pod=p.pod,
        bucket=p.bucket,
        cluster=p.cluster,
        ship_window=p.ship_window,
    )
    verdict = "restart" if decision.verdict == "restart" and peers.ok else "report"
    reasons = [decision.reason] + ([] if peers.ok else [peers.reason])
    return {
        "ok": True,
        "verdict": verdict,
        "cause": diagnosis.cause,
        "restart_cures": decision.verdict == "restart",
        "reasons": reasons,
        "evidence": diagnosis.evidence,
        "failing_operations": diagnosis.failing_operations,
        "log_lines": log.lines[-20:],
        "secrets": secrets,
        "secret_changed_after_start": changed,
        "container_started_at": iso(s) if (s := started_at(pod, p.container)) else None,
        "replicas": peers.as_dict(),
        "message": f"{p.namespace}/{p.pod}: cause {diagnosis.cause}; "
        + ("restart" if verdict == "restart" else "do not restart")
        + ": "
        + "; ".join(reasons),
    }


@action(
    "thanos.restart_prometheus_replica",
    read_only=False,
    idempotent=False,
    permissions=("get pods", "list pods", "delete pods"),
)
async def restart_prometheus_replica(ctx: ActionContext, p: RestartParams) -> Output:
    """Delete a Prometheus pod (sidecar included) so its StatefulSet recreates it, only while another
    replica of the same set is Ready, scraping and shipping (re-checked right before the delete).

    Not idempotent: run again after a crash it would restart the replacement."""
    client: KubernetesClient = ctx.need("kubernetes")
    peers = await replicas.check_peers(
        client,
        _prom(ctx),
        namespace=p.namespace,
        pod=p.pod,
        bucket=p.bucket,
        cluster=p.cluster,
        ship_window=p.ship_window,
    )
    if not peers.ok:
        # A refusal the run can report (ok: false with the reason in the output), not an exception.
        return {
            "ok": False,
            "refused": True,
            "replicas": peers.as_dict(),
            "message": f"refusing to restart {p.namespace}/{p.pod}: {peers.reason}. Nothing was deleted.",
        }
    out = await delete_controlled_pod(ctx, p.namespace, p.pod, p.grace_period_seconds)
    return {**out, "replicas": peers.as_dict()}


ACTIONS = [diagnose_sidecar, restart_prometheus_replica]
