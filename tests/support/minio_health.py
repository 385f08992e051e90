"""A local stand-in for a MinIO server's healthcheck API (moto has none), answering as MinIO documents it.

``GET|HEAD /minio/health/live``: 200 while the process is up. ``/minio/health/cluster``: 200 with write
quorum, else 503; ``/minio/health/cluster/read``: the same for read quorum. The cluster checks set
``X-Minio-Write-Quorum`` and, when the object layer is not up, ``X-Minio-Server-Status: offline`` (minio
cmd/healthcheck-handler.go; min.io docs "Healthcheck API"). While not healthy, every S3 API request answers
what a MinIO without quorum answers: 503 with an S3 XML error; healthy, with a ``backend`` (moto's URL),
S3 requests are passed through to it unchanged, so "MinIO comes back" is one assignment. Optionally over TLS with a given (e.g. expired)
certificate, which ``self_signed()`` makes with the ``cryptography`` package moto already depends on.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiohttp import web

from .ports import free_port

State = Literal["healthy", "no_write_quorum", "no_quorum", "offline"]


@dataclass
class FakeMinio:
    state: State = "healthy"
    cert: tuple[Path, Path] | None = None
    """(certificate PEM, key PEM): serve https."""
    backend: str | None = None
    """moto's endpoint: S3 requests go there while the state is healthy."""
    port: int = field(default_factory=free_port)
    requests: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.cert else 'http'}://127.0.0.1:{self.port}"

    async def _health(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path}")
        kind = request.match_info["kind"]
        if kind == "live":
            return web.Response(status=200)
        headers = {"X-Minio-Write-Quorum": "3", "X-Minio-Storage-Class-Defaults": "true"}
        if self.state == "offline":
            return web.Response(status=503, headers={"X-Minio-Server-Status": "offline"})
        quorum = self.state == "healthy" or (kind == "cluster/read" and self.state == "no_write_quorum")
        return web.Response(status=200 if quorum else 503, headers=headers)

    async def _s3(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path}")
        if self.state == "healthy" and self.backend is not None:
            return await self._forward(request)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Error><Code>XMinioServerNotInitialized</Code>'
            "<Message>Server not initialized yet, please try again.</Message></Error>"
        )
        return web.Response(status=503, text=body, content_type="application/xml")

    async def _forward(self, request: web.Request) -> web.Response:
        import aiohttp

        assert self.backend is not None
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding")
        }
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                self.backend + request.path_qs,
                headers=headers,
                data=await request.read(),
                allow_redirects=False,
            ) as resp,
        ):
            body = await resp.read()
            keep = {
                k: v
                for k, v in resp.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")
            }
            return web.Response(status=resp.status, body=body, headers=keep)

    async def start(self) -> FakeMinio:
        app = web.Application()
        app.router.add_route("*", r"/minio/health/{kind:live|cluster|cluster/read}", self._health)
        app.router.add_route("*", "/{tail:.*}", self._s3)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        ctx = None
        if self.cert is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ctx).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def self_signed(folder: Path, *, not_before: dt.datetime, not_after: dt.datetime) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 valid between the two times (PEM files)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "minio.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "minio.crt", folder / "minio.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path
