"""S3 lifecycle rules on the seed's three stores, audited and, with approval, removed.

An expiration (or noncurrent-version expiration) on a bucket whose objects are shared between backups
deletes files that newer backups still use: Longhorn's incremental backups share blocks, OpenSearch
snapshots share segment files, and Thanos expects blocks to be retired by its compactor through deletion
marks. Each store has its own retention, through its own API; the bucket must have none. An
``AbortIncompleteMultipartUpload`` rule is harmless everywhere, and MinIO does not support it (it purges
stale multipart uploads itself), so its absence is not a finding.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.clients.s3 import S3Client, S3PermanentError
from daemon.kits.names import S3BucketName

REASONS = {
    "thanos": "Thanos retires blocks itself (compactor retention, deletion-mark.json): an expiration deletes "
    "block files behind the compactor and store gateway, leaving broken or half-deleted blocks",
    "opensearch": "OpenSearch snapshots share segment files: expiring old objects corrupts newer snapshots "
    "that still reference them; delete snapshots through the snapshot API (opensearch.delete_snapshots)",
    "longhorn": "Longhorn backups are incremental and share blocks, and Longhorn's docs forbid any retention "
    "rule on the backup store: an expiration corrupts newer backups; delete them through Backup objects "
    "(longhorn.delete_backups)",
}
RuleId = str


def _prefix(rule: dict[str, Any]) -> str:
    flt = rule.get("Filter") or {}
    return str(flt.get("Prefix") or (flt.get("And") or {}).get("Prefix") or rule.get("Prefix") or "")


def expires(rule: dict[str, Any]) -> list[str]:
    """What in an enabled rule deletes data: an Expiration by days or date, a noncurrent expiration."""
    if rule.get("Status") != "Enabled":
        return []
    out = []
    exp = rule.get("Expiration") or {}
    if exp.get("Days") is not None or exp.get("Date") is not None:
        out.append(
            f"Expiration after {exp['Days']} day(s)"
            if exp.get("Days") is not None
            else "Expiration on a date"
        )
    nce = rule.get("NoncurrentVersionExpiration") or {}
    if nce:
        out.append(f"NoncurrentVersionExpiration after {nce.get('NoncurrentDays', '?')} day(s)")
    return out


def _rule_view(rule: dict[str, Any], store: str | None) -> dict[str, Any]:
    deletes = expires(rule)
    dangerous = bool(deletes) and store is not None
    return {
        "id": rule.get("ID"),
        "status": rule.get("Status"),
        "prefix": _prefix(rule),
        "expiration": rule.get("Expiration"),
        "noncurrent_expiration": rule.get("NoncurrentVersionExpiration"),
        "abort_incomplete_multipart": rule.get("AbortIncompleteMultipartUpload"),
        "deletes": deletes,
        "dangerous": dangerous,
        "reason": f"{'; '.join(deletes)} on the {store} store: {REASONS[store]}"
        if dangerous and store
        else None,
    }


class AuditParams(Params):
    thanos: S3BucketName = "thanos"
    opensearch: S3BucketName = "opensearch-logs"
    longhorn: S3BucketName = "longhorn-backups"
    others: list[S3BucketName] = Field(default_factory=list, max_length=50)
    """Further buckets to list (their rules are reported, expirations on them are not findings)."""


@action("s3.lifecycle_audit", read_only=True, idempotent=True, permissions=("s3:GetLifecycleConfiguration",))
async def lifecycle_audit(ctx: ActionContext, p: AuditParams) -> Output:
    """Each lifecycle rule of the seed's buckets; an expiration or noncurrent-version expiration on the
    thanos, opensearch-logs or longhorn-backups bucket is flagged dangerous, with the reason for that store.

    ``findings``: the dangerous rules. A bucket that does not exist is reported, not a finding."""
    client: S3Client = ctx.need("s3")
    stores: dict[str, str | None] = {p.thanos: "thanos", p.opensearch: "opensearch", p.longhorn: "longhorn"}
    stores |= {b: None for b in p.others if b not in stores}
    buckets: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for bucket, store in stores.items():
        try:
            rules = await client.get_lifecycle_rules(bucket)
        except S3PermanentError as exc:
            if exc.kind != "no_such_bucket":
                raise
            buckets.append({"bucket": bucket, "store": store, "exists": False, "rules": []})
            continue
        views = [_rule_view(r, store) for r in rules]
        buckets.append({"bucket": bucket, "store": store, "exists": True, "rules": views})
        findings += [
            {"bucket": bucket, "store": store, "id": v["id"], "reason": v["reason"]}
            for v in views
            if v["dangerous"]
        ]
    by_bucket: dict[str, list[str]] = {}
    for f in findings:
        by_bucket.setdefault(f["bucket"], []).append(str(f["id"]))
    rules_count = sum(len(b["rules"]) for b in buckets)
    message = f"{len(buckets)} bucket(s), {rules_count} lifecycle rule(s), {len(findings)} dangerous"
    if findings:
        message += ": " + "; ".join(f"{b}: {', '.join(ids)}" for b, ids in by_bucket.items())
    return {
        "ok": True,
        "buckets": buckets,
        "dangerous": findings,
        "by_bucket": by_bucket,
        "findings": findings,
        "message": message,
    }


class RemoveParams(Params):
    bucket: S3BucketName
    rule_ids: list[RuleId] = Field(min_length=1, max_length=100)
    """The IDs of the dangerous rules the approved plan lists; every other rule is written back unchanged."""


@action(
    "s3.remove_lifecycle_rules",
    read_only=False,
    idempotent=True,
    permissions=("s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration"),
)
async def remove_lifecycle_rules(ctx: ActionContext, p: RemoveParams) -> Output:
    """Remove exactly the listed lifecycle rules from a bucket: read the configuration, drop those IDs,
    write every other rule back unchanged (PutBucketLifecycleConfiguration replaces the whole set), or
    delete the configuration when none remain.

    A listed rule that no longer deletes anything (changed since the plan) is refused and kept."""
    client: S3Client = ctx.need("s3")
    rules = await client.get_lifecycle_rules(p.bucket)
    wanted = set(p.rule_ids)
    present = {r.get("ID") for r in rules}
    refused = [
        {"id": r.get("ID"), "reason": "it no longer expires anything (changed since the plan): kept"}
        for r in rules
        if r.get("ID") in wanted and not expires(r)
    ]
    refused_ids = {x["id"] for x in refused}
    removed = [r for r in rules if r.get("ID") in wanted and r.get("ID") not in refused_ids]
    kept = [r for r in rules if r not in removed]
    gone = sorted(wanted - present)
    url = client.object_url(p.bucket) + "?lifecycle"
    if not removed:
        request = None
    elif kept:
        request = {"method": "PUT", "url": url, "operation": "PutBucketLifecycleConfiguration", "rules": kept}
    else:
        request = {"method": "DELETE", "url": url, "operation": "DeleteBucketLifecycle"}
    if ctx.dry_run:
        return ctx.would(
            *([request] if request else []), removed=[r.get("ID") for r in removed], refused=refused
        )
    if removed and kept:
        await client.put_lifecycle_rules(p.bucket, kept)
    elif removed:
        await client.delete_lifecycle(p.bucket)
    ids = [str(r.get("ID")) for r in removed]
    message = (
        f"{p.bucket}: removed {len(ids)} rule(s) ({', '.join(ids) or 'none'}), kept {len(kept)} unchanged"
    )
    if gone:
        message += f"; already gone: {', '.join(gone)}"
    if refused:
        message += f"; refused: {', '.join(str(x['id']) for x in refused)}"
    return {
        "ok": not refused,
        "bucket": p.bucket,
        "removed": ids,
        "kept": [r.get("ID") for r in kept],
        "already_gone": gone,
        "refused": refused,
        "configuration_deleted": bool(removed) and not kept,
        "message": message,
    }


ACTIONS = [lifecycle_audit, remove_lifecycle_rules]
