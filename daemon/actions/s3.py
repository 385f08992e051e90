"""S3 actions: is a bucket reachable from runbookd, and how fast.

S3 permissions are declared as the IAM actions a MinIO / S3 policy grants (``s3:ListBucket``); the
Kubernetes RBAC derivation ignores them (daemon/actions/rbac.py).
"""

from __future__ import annotations

import time

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.clients.s3 import S3Client, S3PermanentError, S3TemporaryError
from daemon.kits.names import S3BucketName


class ProbeParams(Params):
    bucket: S3BucketName


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


@action("s3.probe", read_only=True, idempotent=True, permissions=("s3:ListBucket",))
async def probe(ctx: ActionContext, p: ProbeParams) -> Output:
    """Is the bucket reachable from runbookd: HeadBucket, then one ListObjectsV2 of one key, timed.

    Never raises for an S3 failure: the answer ``ok: false`` with ``error.kind`` (unreachable, timeout,
    tls, credentials, access_denied, no_such_bucket, throttled, server_error, ...) is the finding."""
    client: S3Client = ctx.need("s3")
    where = {"endpoint": client.endpoint_url, "bucket": p.bucket}
    latency: dict[str, float] = {}
    operation = "HeadBucket"
    started = time.perf_counter()
    try:
        t = time.perf_counter()
        await client.head_bucket(p.bucket)
        latency["head_bucket_ms"] = _ms(t)
        operation = "ListObjectsV2"
        t = time.perf_counter()
        first = await client.list_page(p.bucket, max_keys=1)
        latency["list_ms"] = _ms(t)
    except (S3TemporaryError, S3PermanentError) as exc:
        ctx.log.info("s3.probe.failed", bucket=p.bucket, operation=operation, kind=exc.kind)
        return {
            "ok": False,
            **where,
            "operation": operation,
            "latency_ms": _ms(started),
            "error": {"kind": exc.kind, "code": exc.code, "status": exc.status, "message": str(exc)},
            "message": f"{operation} of bucket {p.bucket} at {client.endpoint_url} failed ({exc.kind}): {exc}",
        }
    total = _ms(started)
    return {
        "ok": True,
        **where,
        "latency_ms": total,
        **latency,
        "empty": not first,
        "error": None,
        "message": f"bucket {p.bucket} at {client.endpoint_url} answered HeadBucket and ListObjectsV2 "
        f"in {total:g} ms",
    }


ACTIONS = [probe]
