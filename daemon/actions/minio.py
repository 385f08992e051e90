"""s3.minio_health: the MinIO side of an S3 outage, from its own healthcheck API and TLS certificate.

Read-only and unauthenticated: nothing here can change MinIO. Used by s3-connectivity-loss to tell "MinIO
is down or lost quorum" from "the path to it is broken" and to spot an expired certificate.
"""

from __future__ import annotations

import ssl
from typing import Any

from pydantic import Field

from daemon.actions.base import ActionContext, Output, Params, action
from daemon.clients import minio_health
from daemon.clients.s3 import S3Client
from daemon.kits.clock import iso
from daemon.kits.x509 import CertificateError, validity


class MinioHealthParams(Params):
    cert_warn_days: int = Field(14, ge=0, le=365)
    """Report a certificate that expires within this many days."""


async def _certificate(ctx: ActionContext, s3: S3Client, warn_days: int) -> dict[str, Any] | None:
    try:
        der = await minio_health.peer_certificate(s3.cfg)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return {"error": f"no TLS handshake: {type(exc).__name__}: {exc}"[:300]}
    if der is None:
        return None
    try:
        not_before, not_after = validity(der)
    except CertificateError as exc:
        return {"error": str(exc)}
    now = ctx.clock.now()
    days = (not_after - now) / 86400
    return {
        "not_before": iso(not_before),
        "not_after": iso(not_after),
        "days_left": round(days, 1),
        "expired": now >= not_after,
        "not_yet_valid": now < not_before,
        "expires_soon": 0 <= days < warn_days,
    }


def _verdict(checks: dict[str, dict[str, Any]], cert: dict[str, Any] | None) -> list[str]:
    findings = []
    live, cluster, read = checks["live"], checks["cluster"], checks["cluster_read"]
    if live["status"] is None:
        findings.append(f"MinIO does not answer its liveness check ({live['error']})")
    elif live["status"] == 404:
        findings.append(
            "the endpoint has no MinIO healthcheck API (404): not a MinIO server, or behind a proxy"
        )
    elif live["status"] != 200:
        findings.append(f"MinIO's liveness check answers {live['status']}")
    if cluster["status"] == 503:
        status = cluster["headers"].get("X-Minio-Server-Status")
        findings.append(
            "the MinIO cluster has no write quorum (/minio/health/cluster 503"
            + (f", server status {status}" if status else "")
            + "): drives or nodes are offline"
        )
    if read["status"] == 503:
        findings.append("the MinIO cluster has no read quorum either")
    healing = cluster["headers"].get("X-Minio-Healing-Drives")
    if healing:
        findings.append(f"{healing} drive(s) are healing")
    if cert and cert.get("expired"):
        findings.append(f"the endpoint's TLS certificate EXPIRED at {cert['not_after']}")
    elif cert and cert.get("not_yet_valid"):
        findings.append(f"the endpoint's TLS certificate is not valid before {cert['not_before']}")
    elif cert and cert.get("expires_soon"):
        findings.append(f"the endpoint's TLS certificate expires in {cert['days_left']} days")
    return findings


@action("s3.minio_health", read_only=True, idempotent=True)
async def minio_health_check(ctx: ActionContext, p: MinioHealthParams) -> Output:
    """MinIO's healthcheck API on the configured S3 endpoint (live, cluster write quorum, cluster read
    quorum; no credentials) and, over https, the validity of the endpoint's TLS certificate.

    Never raises for what it finds: ``ok`` is false with ``findings`` when something is wrong; ``down``
    is true when MinIO does not answer at all or has lost quorum."""
    s3: S3Client = ctx.need("s3")
    answers = await minio_health.check_all(s3.cfg)
    checks = {name: a.as_dict() for name, a in answers.items()}
    cert = await _certificate(ctx, s3, p.cert_warn_days)
    findings = _verdict(checks, cert)
    down = (
        checks["live"]["status"] is None
        or checks["live"]["status"] >= 500
        or 503 in (checks["cluster"]["status"], checks["cluster_read"]["status"])
    )
    return {
        "ok": not findings,
        "down": down,
        "endpoint": s3.endpoint_url,
        "checks": checks,
        "write_quorum": checks["cluster"]["status"] == 200,
        "read_quorum": checks["cluster_read"]["status"] == 200,
        "certificate": cert,
        "findings": findings,
        "message": "; ".join(findings)
        if findings
        else f"MinIO at {s3.endpoint_url} is live with write quorum",
    }


ACTIONS = [minio_health_check]
