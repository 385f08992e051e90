"""MinIO's unauthenticated healthcheck API and the endpoint's TLS certificate.

``GET /minio/health/live`` answers 200 while the server process is up; ``/minio/health/cluster`` 200 when
the cluster has write quorum, 503 otherwise; ``/minio/health/cluster/read`` the same for read quorum
(min.io docs, "Healthcheck API"; minio cmd/healthcheck-handler.go). The cluster checks set
``X-Minio-Write-Quorum``, ``X-Minio-Healing-Drives`` and, when the object layer is not up,
``X-Minio-Server-Status`` (offline, bucket-metadata-offline, iam-offline). No credentials are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from daemon.config import S3Config

CHECKS = {
    "live": "/minio/health/live",
    "cluster": "/minio/health/cluster",
    "cluster_read": "/minio/health/cluster/read",
}
_HEADERS = (
    "X-Minio-Write-Quorum",
    "X-Minio-Healing-Drives",
    "X-Minio-Server-Status",
    "X-Minio-Storage-Class-Defaults",
)


@dataclass(frozen=True)
class Answer:
    status: int | None
    """HTTP status, None when no answer came."""
    headers: dict[str, str]
    error: str | None = None
    """Why no answer came (connection refused, timeout, TLS)."""

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "ok": self.status == 200, "headers": self.headers, "error": self.error}


def _ssl_context(cfg: S3Config) -> ssl.SSLContext | bool:
    if cfg.ca_bundle is not None:
        return ssl.create_default_context(cafile=str(cfg.ca_bundle))
    return cfg.verify_tls


async def check_all(cfg: S3Config) -> dict[str, Answer]:
    """Each healthcheck endpoint's answer, with the S3 client's TLS settings and timeouts."""
    timeout = aiohttp.ClientTimeout(total=cfg.timeout, sock_connect=cfg.connect_timeout)
    base = cfg.endpoint_url.rstrip("/")
    out: dict[str, Answer] = {}
    async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "runbookd"}) as session:
        for name, path in CHECKS.items():
            try:
                async with session.get(base + path, ssl=_ssl_context(cfg), allow_redirects=False) as resp:
                    await resp.read()
                    headers = {h: resp.headers[h] for h in _HEADERS if h in resp.headers}
                    out[name] = Answer(resp.status, headers)
            except TimeoutError:
                out[name] = Answer(None, {}, f"no answer within {cfg.timeout:g}s")
            except aiohttp.ClientConnectorCertificateError as exc:
                out[name] = Answer(None, {}, f"TLS certificate refused: {exc.certificate_error}")
            except aiohttp.ClientError as exc:
                out[name] = Answer(None, {}, f"{type(exc).__name__}: {exc}"[:300])
    return out


async def peer_certificate(cfg: S3Config) -> bytes | None:
    """The DER certificate an https endpoint presents (not verified: its dates are what is wanted, also
    when it is expired), or None for http. Raises OSError/TimeoutError/ssl.SSLError."""
    parts = urlsplit(cfg.endpoint_url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with asyncio.timeout(cfg.connect_timeout):
        _, writer = await asyncio.open_connection(
            parts.hostname, parts.port or 443, ssl=ctx, server_hostname=parts.hostname
        )
    try:
        obj = writer.get_extra_info("ssl_object")
        der: bytes | None = obj.getpeercert(binary_form=True) if obj is not None else None
        return der
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(cfg.connect_timeout):
                await writer.wait_closed()
