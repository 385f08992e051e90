"""Keep unshipped Prometheus blocks through an S3 outage: raise spec.retention of the Prometheus custom
resources behind the failing pods, and restore the exact earlier values once the backlog has shipped.

With 2h local retention, an outage longer than that makes Prometheus delete blocks its sidecar never
uploaded. Raising ``spec.retention`` (and ``spec.retentionSize`` when set) keeps them; the Prometheus
Operator rolls the StatefulSet to pass the new flag, so the pods restart one at a time. Guards, re-read
inside the action right before the patch: every pod of the Prometheus has a PersistentVolumeClaim (a
restart empties an emptyDir, losing exactly the blocks to be kept), and every volume has room for the
growth over the added retention (prometheus_room.py). The earlier values are remembered (ctx.memory)
before the patch, so a step re-run after a crash restores the true originals, not its own values.

The restore patches back exactly those values (an unset field is removed again), only where the
resource still holds what the raise set (anything else is a person's change: refused), and only once the
bucket holds every live stream of that Prometheus up to within ``shipped_within`` of now (meta.json
maxTime, thanos/shipped.py); until then it answers "not yet" (``ok: false, not_yet: true``), which the
undo engine takes as "ask again later, until the undo's timeout" (daemon/engine/undoing.py).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, field_validator

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.actions.kubernetes import objects as o
from daemon.actions.kubernetes import prometheus_room as room
from daemon.actions.thanos.shipped import parse_time, streams_shipped
from daemon.clients.kubernetes import MERGE_PATCH, KubernetesClient, WriteRequest
from daemon.clients.prometheus import PrometheusClient
from daemon.clients.s3 import S3Client
from daemon.clients.thanos import ThanosBucket
from daemon.errors import GuardRefused, TemporaryError
from daemon.kits.clock import iso
from daemon.kits.durations import Duration
from daemon.kits.names import DnsLabel, DnsSubdomain, LabelName, LabelValue, S3BucketName, S3Prefix
from daemon.kits.promunits import (
    PromDuration,
    PromSize,
    format_prom_size,
    parse_prom_duration,
    parse_prom_size,
)

RECORDS = "kubernetes.prometheus_retention"
"""ctx.memory namespace: "namespace/name" -> the values before runbookd's raise (for crash-safe re-runs)."""
CR = ("get monitoring.coreos.com/prometheuses", "patch monitoring.coreos.com/prometheuses")
ROLLS = (
    "the Prometheus Operator rolls the StatefulSet to pass the new flag: its pods restart one by one "
    "(each replica is briefly down; the other keeps scraping)"
)


def _iso_time(v: str) -> str:
    parse_time(v)
    return v


class RaiseParams(Params):
    namespace: DnsLabel
    pods: list[DnsSubdomain] = Field(min_length=1, max_length=50)
    """The failing pods; their ``operator.prometheus.io/name`` label names the Prometheus resources."""
    retention: PromDuration
    """The new spec.retention (e.g. 24h); never lower than the current one."""
    outage_started: str
    """When the outage began (ISO 8601, e.g. the alert's startsAt): the growth since then is measured."""
    headroom: float = Field(1.5, ge=1.0, le=10.0)
    """The projected growth times this must fit in the volume's free bytes."""

    @field_validator("outage_started")
    @classmethod
    def _started(cls, v: str) -> str:
        return _iso_time(v)


def _current(cr: o.Obj) -> dict[str, str | None]:
    spec = o.spec(cr)
    size = spec.get("retentionSize")
    return {"retention": spec.get("retention") or None, "retention_size": str(size) if size else None}


async def _assess(
    client: KubernetesClient, prom: PrometheusClient, p: RaiseParams, cr: o.Obj, elapsed: float
) -> dict[str, Any]:
    """What raising this Prometheus would do, with the numbers; ``room`` says whether it may."""
    ns, name = p.namespace, o.name_of(cr)
    before = _current(cr)
    current = parse_prom_duration(before["retention"] or room.DEFAULT_RETENTION)
    target = parse_prom_duration(p.retention)
    out: dict[str, Any] = {
        "namespace": ns,
        "name": name,
        "from": before,
        "stream_labels": room.stream_labels(cr),
    }
    if target <= current:
        return out | {
            "room": False,
            "reason": f"spec.retention is already {before['retention'] or 'unset (24h)'}",
        }
    claims, bare, not_ready = await room.claims_of(client, ns, name)
    if bare or not claims:
        why = f"pod(s) {', '.join(bare) or '(none found)'} keep their TSDB in no PersistentVolumeClaim"
        return out | {"room": False, "reason": f"{why}: the restart the patch causes would lose the blocks"}
    if not_ready:
        # The operator's rolling update restarts the pods one by one, highest ordinal first, whichever is
        # healthy: with one already down, restarting the other leaves no replica scraping or answering.
        return out | {
            "room": False,
            "reason": f"pod(s) {', '.join(not_ready)} not Ready: the patch restarts every pod one by one, "
            "and restarting a Ready one now may leave none running; bring them back first",
        }
    vols = [await room.volume(prom, ns, c, elapsed) for c in claims]
    needs = [v.needed(elapsed, current, target, p.headroom) for v in vols]
    out["volumes"] = [v.view(n) for v, n in zip(vols, needs, strict=True)]
    short = [v for v in out["volumes"] if not v["room"]]
    if short:
        v = short[0]
        reason = (
            f"volume {v['claim']} has no kubelet_volume_stats in Prometheus"
            if v["needed"] is None
            else f"volume {v['claim']} has {v['available']} free but needs {v['needed']} to keep "
            f"{p.retention} (growth over the outage so far x{p.headroom:g})"
        )
        return out | {"room": False, "reason": reason}
    to: dict[str, str | None] = {"retention": p.retention, "retention_size": before["retention_size"]}
    if before["retention_size"]:
        grown = parse_prom_size(before["retention_size"]) + math.ceil(max(n or 0 for n in needs))
        to["retention_size"] = format_prom_size(grown)
    return out | {"room": True, "to": to, "reason": None}


def _patch(cr: o.Obj, values: dict[str, str | None], *, size: bool) -> WriteRequest:
    spec: dict[str, Any] = {"retention": values["retention"]}
    if size:
        spec["retentionSize"] = values["retention_size"]
    body = {"metadata": {"resourceVersion": o.meta(cr).get("resourceVersion")}, "spec": spec}
    m = o.meta(cr)
    return WriteRequest(
        "PATCH", room.prometheus_path(str(m.get("namespace")), o.name_of(cr)), body, MERGE_PATCH
    )


def _restore_item(a: dict[str, Any]) -> dict[str, Any]:
    return {
        "namespace": a["namespace"],
        "name": a["name"],
        "retention": a["from"]["retention"],
        "retention_size": a["from"]["retention_size"],
        "expect_retention": a["to"]["retention"],
        "expect_retention_size": a["to"]["retention_size"],
        "stream_labels": a["stream_labels"],
    }


async def _rerun(ctx: ActionContext, cr: o.Obj) -> dict[str, Any] | None:
    """This very step already raised this Prometheus (a re-run after a crash): what it recorded before
    the patch, so the originals stay the true ones and not the values it set."""
    m = o.meta(cr)
    done = await ctx.memory.get(RECORDS, f"{m.get('namespace')}/{o.name_of(cr)}")
    if done is None or (done.get("run_id"), done.get("step_id")) != (ctx.run_id, ctx.step_id):
        return None
    return {
        "namespace": m.get("namespace"),
        "name": o.name_of(cr),
        "from": done["from"],
        "to": done["to"],
        "stream_labels": room.stream_labels(cr),
        "room": True,
        "reason": None,
        "rerun": True,
    }


async def _remember(ctx: ActionContext, a: dict[str, Any]) -> None:
    record = {"run_id": ctx.run_id, "step_id": ctx.step_id, "from": a["from"], "to": a["to"]}
    await ctx.memory.put(RECORDS, f"{a['namespace']}/{a['name']}", record)


@action(
    "kubernetes.patch_prometheus_retention",
    read_only=False,
    idempotent=True,
    permissions=(*CR, "list pods"),
)
async def patch_prometheus_retention(ctx: ActionContext, p: RaiseParams) -> Output:
    """Raise spec.retention (and spec.retentionSize when set) of the Prometheus resources behind the failing
    pods, only where every pod keeps its TSDB on a PersistentVolumeClaim with room for the growth over the
    added retention. Records the earlier values (``restore``) for the restore. Restarts the pods one by one.

    Refused, changing nothing, when no Prometheus qualifies."""
    client: KubernetesClient = ctx.need("kubernetes")
    prom: PrometheusClient = ctx.need("prometheus")
    names, other = await room.prometheus_names(client, p.namespace, list(p.pods))
    if not names:
        raise GuardRefused(f"none of {', '.join(p.pods)} is run by a Prometheus resource ({room.NAME_LABEL})")
    elapsed = max(60.0, ctx.clock.now() - parse_time(p.outage_started))
    crs = {n: await client.get(room.prometheus_path(p.namespace, n)) for n in sorted(names)}
    assessed = []
    for cr in crs.values():
        assessed.append(await _rerun(ctx, cr) or await _assess(client, prom, p, cr, elapsed))
    ok = [a for a in assessed if a["room"]]
    refused = [{"name": a["name"], "reason": a["reason"]} for a in assessed if not a["room"]]
    if not ok:
        raise GuardRefused(
            "retention NOT raised: " + "; ".join(f"{r['name']}: {r['reason']}" for r in refused)
        )
    requests = []
    for a in ok:
        cr = crs[a["name"]]
        if a.get("rerun") and _current(cr) == a["to"]:
            continue  # the patch went through before the crash
        if not ctx.dry_run and not a.get("rerun"):
            await _remember(ctx, a)  # before the patch: a crash after it still knows the originals
        requests.append(_patch(cr, a["to"], size=a["from"]["retention_size"] is not None))
    summary = {
        "namespace": p.namespace,
        "prometheuses": assessed,
        "refused": refused,
        "not_prometheus_pods": other,
        "restore": [_restore_item(a) for a in ok],
        "patched_at": iso(ctx.clock.now()),
        "restarts": ROLLS,
        "size_based_deletion": [
            f"{a['name']}: spec.retentionSize {a['to']['retention_size']} still deletes the oldest blocks "
            "once the TSDB is that large"
            for a in ok
            if a["to"]["retention_size"]
        ],
    }
    if ctx.dry_run:
        return ctx.would(*(r.describe(client.host) for r in requests), changed=False, **summary)
    for r in requests:
        await client.send(r)
    shown = ", ".join(
        f"{a['name']} {a['from']['retention'] or 'unset'} -> {a['to']['retention']}" for a in ok
    )
    return {"ok": True, "changed": True, **summary, "message": f"retention raised: {shown}; {ROLLS}"}


class RestoreItem(Params):
    namespace: DnsLabel
    name: DnsSubdomain
    retention: PromDuration | None
    """The value before the raise (None: the field was unset)."""
    retention_size: PromSize | None
    expect_retention: PromDuration
    """What the raise set: restored only while the resource still holds it."""
    expect_retention_size: PromSize | None
    stream_labels: dict[LabelName, LabelValue] = Field(min_length=1, max_length=20)


class RestoreParams(Params):
    prometheuses: list[RestoreItem] = Field(min_length=1, max_length=20)
    """A kubernetes.patch_prometheus_retention step's ``restore``."""
    bucket: S3BucketName
    prefix: S3Prefix = ""
    shipped_within: Duration = 4 * 3600.0
    """Restore once every live stream of the Prometheus is in the bucket up to within this of now."""
    since: str
    """The outage's start (ISO 8601): streams that ended a day before it are retired and not waited for."""

    @field_validator("since")
    @classmethod
    def _since(cls, v: str) -> str:
        return _iso_time(v)


async def _shipped(ctx: ActionContext, p: RestoreParams) -> tuple[list[dict[str, Any]], list[str]]:
    """Per Prometheus, how far the bucket holds its streams; and which are still behind (restoring now
    would let Prometheus delete blocks its sidecar has not uploaded)."""
    s3: S3Client = ctx.need("s3")
    tb = ThanosBucket(s3, p.bucket, p.prefix)
    now, since = ctx.clock.now(), parse_time(p.since)
    try:
        found = [
            await streams_shipped(tb, dict(i.stream_labels), p.shipped_within, since, now)
            for i in p.prometheuses
        ]
    except TemporaryError as exc:  # the bucket cannot be read yet (the outage goes on): nothing has shipped
        return [], [f"the bucket {p.bucket} cannot be read yet ({exc})"]
    behind = [
        f"{i.name}: {f['message']}" for i, f in zip(p.prometheuses, found, strict=True) if not f["shipped"]
    ]
    return found, behind


@action(
    "kubernetes.restore_prometheus_retention",
    read_only=False,
    idempotent=True,
    permissions=(*CR, "list pods", "s3:ListBucket", "s3:GetObject"),
)
async def restore_prometheus_retention(ctx: ActionContext, p: RestoreParams) -> Output:
    """Put back exactly the spec.retention / spec.retentionSize a raise recorded, once the bucket holds
    every live stream of each Prometheus up to within ``shipped_within`` of now (read from meta.json).
    Refuses a resource someone changed since the raise."""
    client: KubernetesClient = ctx.need("kubernetes")
    shipped, behind = await _shipped(ctx, p)
    if behind:
        return {
            "ok": False,
            "not_yet": True,
            "changed": False,
            "shipped": shipped,
            "message": "retention not restored yet, the backlog has not shipped: " + "; ".join(behind),
        }
    for item in p.prometheuses:
        not_ready = (await room.claims_of(client, item.namespace, item.name))[2]
        if not_ready:  # as for the raise: the restore's patch restarts every pod one by one too
            return {
                "ok": False,
                "not_yet": True,
                "changed": False,
                "shipped": shipped,
                "message": f"retention not restored yet: {item.name}'s pod(s) {', '.join(not_ready)} not "
                "Ready, and the patch restarts every pod one by one",
            }
    done, requests = [], []
    for item in p.prometheuses:
        cr = await client.get(room.prometheus_path(item.namespace, item.name))
        now_values = _current(cr)
        original = {"retention": item.retention, "retention_size": item.retention_size}
        size = item.expect_retention_size is not None or item.retention_size is not None
        if now_values == original or (not size and now_values["retention"] == item.retention):
            done.append({"name": item.name, "restored": False, "reason": "already at the recorded value"})
            continue
        expected = {"retention": item.expect_retention, "retention_size": item.expect_retention_size}
        if now_values["retention"] != expected["retention"] or (size and now_values != expected):
            raise GuardRefused(
                f"{item.namespace}/{item.name} changed since the raise (now {now_values}, the raise set "
                f"{expected}): not restoring over a person's change; restore {original} by hand if right"
            )
        requests.append(_patch(cr, original, size=size))
        done.append({"name": item.name, "restored": True, "to": original})
    if ctx.dry_run:
        return ctx.would(*(r.describe(client.host) for r in requests), prometheuses=done, shipped=shipped)
    for r in requests:
        await client.send(r)
    return {
        "ok": True,
        "changed": bool(requests),
        "prometheuses": done,
        "shipped": shipped,
        "restarts": ROLLS if requests else None,
        "message": f"retention restored on {sum(1 for d in done if d['restored'])} Prometheus resource(s)",
    }


ACTIONS = [patch_prometheus_retention, restore_prometheus_retention]
