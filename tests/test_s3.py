"""The S3 client and s3.probe against real HTTP endpoints on loopback: moto's S3 server, a closed port, a
server that never answers, one that answers 503 SlowDown, and a TLS server with a self-signed
certificate. Plus the `s3:` config section and its secrets.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support.ports import closed_port, free_port
from support.s3 import MotoS3Server
from support.thanos_blocks import FakeThanosBucket, action_ctx, s3_client

from daemon.actions import s3 as s3_actions
from daemon.actions.base import Params
from daemon.clients.s3 import S3PermanentError, S3TemporaryError
from daemon.config import ConfigError, parse_config, resolve_secrets

# -- config ------------------------------------------------------------------------------------------------


def _config(s3: dict[str, Any]) -> dict[str, Any]:
    return {"auth": {"allow_unauthenticated_webhook": True}, "s3": s3}


def test_s3_config_defaults_are_path_style_verified_and_bounded() -> None:
    cfg = parse_config(_config({"endpoint_url": "https://minio.minio:9000/"})).s3
    assert cfg is not None
    assert cfg.endpoint_url == "https://minio.minio:9000"
    assert (cfg.addressing_style, cfg.verify_tls, cfg.ca_bundle, cfg.region) == (
        "path",
        True,
        None,
        "us-east-1",
    )
    assert (cfg.connect_timeout, cfg.timeout, cfg.retries) == (5.0, 15.0, 2)


@pytest.mark.parametrize(
    ("s3", "message"),
    [
        ({"endpoint_url": "minio:9000"}, "endpoint_url must be http(s)://host[:port]"),
        ({"endpoint_url": "https://u:p@minio:9000"}, "must not carry credentials"),
        ({"endpoint_url": "https://minio:9000/thanos"}, "must not have a path"),
        ({"endpoint_url": "https://m", "access_key": {"env": "A"}}, "give both access_key and secret_key"),
        (
            {"endpoint_url": "https://m", "ca_bundle": "/ca.pem", "verify_tls": False},
            "ca_bundle is for verifying",
        ),
        ({"endpoint_url": "https://m", "timeout": "soon"}, "invalid duration"),
        ({"endpoint_url": "https://m", "retries": 50}, "less than or equal to 10"),
        ({"endpoint_url": "https://m", "secret": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_s3_config_refuses_mistakes(s3: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="s3") as err:
        parse_config(_config(s3))
    assert message in str(err.value)


def test_s3_keys_resolve_from_env_and_file_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret").write_text("minio123\n")
    monkeypatch.setenv("S3_ACCESS", "minio")
    cfg = parse_config(
        _config(
            {
                "endpoint_url": "https://172.20.40.21:30001",
                "access_key": {"env": "S3_ACCESS"},
                "secret_key": {"file": str(tmp_path / "secret")},
            }
        )
    )
    secrets = resolve_secrets(cfg)
    assert secrets.s3_access_key is not None and secrets.s3_secret_key is not None
    assert (secrets.s3_access_key.get_secret_value(), secrets.s3_secret_key.get_secret_value()) == (
        "minio",
        "minio123",
    )
    assert "minio123" not in repr(secrets) and "minio123" not in str(cfg)

    monkeypatch.delenv("S3_ACCESS")
    with pytest.raises(ConfigError, match=r"s3\.access_key: environment variable S3_ACCESS is not set"):
        resolve_secrets(cfg)


def test_aiobotocore_is_not_imported_until_s3_is_used() -> None:
    """Cold start: botocore costs ~0.5 s and tens of MB, and most daemons never call S3."""
    code = (
        "import sys; import daemon.actions.registry as r, daemon.clients.factory; r.default_registry(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'aiobotocore')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- probe against moto ------------------------------------------------------------------------------------


async def test_probe_ok_reports_latency(moto_s3: MotoS3Server) -> None:
    bucket = FakeThanosBucket(moto_s3)
    bucket.put("some/object", b"x")
    client = s3_client(moto_s3.endpoint_url)
    try:
        out = await s3_actions.probe.run(action_ctx(client), s3_actions.ProbeParams(bucket="thanos"))
    finally:
        await client.close()
    assert out["ok"] is True and out["error"] is None
    assert out["endpoint"] == moto_s3.endpoint_url and out["bucket"] == "thanos"
    assert out["empty"] is False
    assert 0 < out["head_bucket_ms"] <= out["latency_ms"] and 0 < out["list_ms"] <= out["latency_ms"]
    assert out["message"].startswith(
        f"bucket thanos at {moto_s3.endpoint_url} answered HeadBucket and ListObjectsV2"
    )


async def test_probe_no_such_bucket(moto_s3: MotoS3Server) -> None:
    client = s3_client(moto_s3.endpoint_url)
    try:
        out = await s3_actions.probe.run(action_ctx(client), s3_actions.ProbeParams(bucket="thanos"))
    finally:
        await client.close()
    assert out["ok"] is False and out["operation"] == "HeadBucket"
    assert out["error"]["kind"] == "no_such_bucket" and out["error"]["status"] == 404
    assert "HeadBucket of bucket thanos" in out["message"] and "(no_such_bucket)" in out["message"]


async def test_probe_unreachable_endpoint_is_a_finding_not_a_crash() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    client = s3_client(endpoint)
    started = time.monotonic()
    try:
        out = await s3_actions.probe.run(action_ctx(client), s3_actions.ProbeParams(bucket="thanos"))
    finally:
        await client.close()
    assert time.monotonic() - started < 5
    assert out["ok"] is False and out["operation"] == "HeadBucket"
    assert out["error"] == {
        "kind": "unreachable",
        "code": None,
        "status": None,
        "message": f"S3 HeadBucket thanos: cannot connect to {endpoint}",
    }


async def test_client_errors_are_split_by_what_to_do_next(moto_s3: MotoS3Server) -> None:
    client = s3_client(moto_s3.endpoint_url)
    try:
        with pytest.raises(S3PermanentError) as missing:
            await client.put_object("nope", "k", b"x", content_type="text/plain")
        assert (missing.value.kind, missing.value.code, missing.value.status) == (
            "no_such_bucket",
            "NoSuchBucket",
            404,
        )
        from botocore.exceptions import ClientError

        assert isinstance(missing.value.__cause__, ClientError)  # the original is chained

        FakeThanosBucket(moto_s3)
        assert await client.get_object("thanos", "absent", max_bytes=10) is None
        await client.put_object("thanos", "big", b"x" * 100, content_type="text/plain")
        with pytest.raises(S3PermanentError, match="100 bytes, more than the 10 expected"):
            await client.get_object("thanos", "big", max_bytes=10)
    finally:
        await client.close()

    down = s3_client(f"http://127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(S3TemporaryError) as unreachable:
            await down.list_page("thanos")
        assert unreachable.value.kind == "unreachable"
        assert type(unreachable.value.__cause__).__name__ == "EndpointConnectionError"
    finally:
        await down.close()


# -- misbehaving endpoints ---------------------------------------------------------------------------------


async def test_a_server_that_never_answers_times_out() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(hold, "127.0.0.1", free_port())
    port = server.sockets[0].getsockname()[1]
    client = s3_client(f"http://127.0.0.1:{port}", timeout=0.5)
    started = time.monotonic()
    try:
        out = await s3_actions.probe.run(action_ctx(client), s3_actions.ProbeParams(bucket="thanos"))
    finally:
        await client.close()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
    assert out["ok"] is False and out["error"]["kind"] == "timeout", out
    assert time.monotonic() - started < 3
    assert accepted, "the request reached the server"


SLOW_DOWN = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    "<Message>Please reduce your request rate.</Message></Error>"
)


async def _recording_server(status: int, text: str = "") -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback HTTP server that answers every request with ``status`` and records it."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path_qs}")
        return web.Response(status=status, text=text, content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


@pytest.fixture
async def slow_down_server() -> AsyncIterator[tuple[str, list[str]]]:
    """Answers every request 503 SlowDown, counting them."""
    async for server in _recording_server(503, SLOW_DOWN):
        yield server


async def test_throttling_is_temporary_and_retried_a_bounded_number_of_times(
    slow_down_server: tuple[str, list[str]],
) -> None:
    endpoint, seen = slow_down_server
    client = s3_client(endpoint, retries=2)
    try:
        with pytest.raises(S3TemporaryError) as err:
            await client.list_page("thanos")
    finally:
        await client.close()
    assert (err.value.kind, err.value.code, err.value.status) == ("throttled", "SlowDown", 503)
    assert len(seen) == 3, seen  # one attempt and s3.retries (2) more


# -- TLS ---------------------------------------------------------------------------------------------------

EMPTY_LISTING = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>thanos</Name><Prefix></Prefix>'
    "<KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>"
)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "minio.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_s3(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A TLS server with a self-signed certificate (as the seed's MinIO) answering HeadBucket and an
    empty ListObjectsV2 for bucket thanos."""
    cert, key = _self_signed(tmp_path)

    async def handler(request: web.Request) -> web.Response:
        if request.path.rstrip("/") != "/thanos":
            return web.Response(status=404)
        if request.method == "HEAD":
            return web.Response(status=200)
        return web.Response(text=EMPTY_LISTING, content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    try:
        yield f"https://127.0.0.1:{port}", cert
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("settings", "kind"),
    [({}, "tls"), ({"ca_bundle": "CERT"}, None), ({"verify_tls": False}, None)],
    ids=["verified-refused", "ca-bundle", "verify-off"],
)
async def test_self_signed_certificate_needs_a_ca_bundle_or_verify_off(
    tls_s3: tuple[str, Path], settings: dict[str, Any], kind: str | None
) -> None:
    endpoint, cert = tls_s3
    if settings.get("ca_bundle") == "CERT":
        settings = {"ca_bundle": cert}
    client = s3_client(endpoint, **settings)
    try:
        out = await s3_actions.probe.run(action_ctx(client), s3_actions.ProbeParams(bucket="thanos"))
    finally:
        await client.close()
    if kind is None:
        assert out["ok"] is True, out
        assert out["empty"] is True
    else:
        assert out["ok"] is False and out["error"]["kind"] == kind
        assert "set s3.ca_bundle" in out["error"]["message"]


# -- hostile parameters ------------------------------------------------------------------------------------


@pytest.fixture
async def tripwire() -> AsyncIterator[tuple[str, list[str]]]:
    """An S3 endpoint that records every request; tests assert it saw none."""
    async for server in _recording_server(500):
        yield server


HOSTILE_BUCKETS = [
    "../etc",
    "Thanos",
    "th",
    "x" * 64,
    "192.168.101.194",
    'thanos"} or vector(1) or up{x="',
    "thanos/../other",
    "thanos..x",
    "xn--thanos",
    "-thanos",
    "thanos ",
    "thanos?list-type=2",
    "",
]


@pytest.mark.parametrize("bucket", HOSTILE_BUCKETS)
def test_probe_refuses_hostile_bucket_names(bucket: str) -> None:
    with pytest.raises(ValueError, match="not a valid S3 bucket name"):
        s3_actions.ProbeParams.model_validate({"bucket": bucket})


async def test_a_hostile_bucket_label_fails_the_step_before_any_request(
    tmp_path: Path, tripwire: tuple[str, list[str]]
) -> None:
    from support.inproc import alert_payload, base_config, serve

    endpoint, seen = tripwire
    runbook = (Path(__file__).parent.parent / "runbooks" / "s3-connectivity-loss.yaml").read_text()
    cfg = base_config(tmp_path, dry_run=False, s3={"endpoint_url": endpoint, "retries": 0})
    async with serve(
        tmp_path,
        {"s3-connectivity-loss": runbook},
        config=cfg,
        secrets={"s3_access_key": "k", "s3_secret_key": "s"},
    ) as d:
        payload = alert_payload(
            "S3ConnectivityLoss", namespace="monitoring", pod="prometheus-k8s-0", bucket="../../etc/passwd"
        )
        status, body = await d.webhook(payload)
        assert status == 200, body
        (run_id,) = body["started"]
        run = await d.run(run_id)
        probe = run["steps"][0]
        assert probe["id"] == "probe" and probe["state"] == "failed"
        assert "not a valid S3 bucket name" in probe["error"]
    assert seen == []
    assert json.dumps(run).count("../../etc/passwd") >= 1  # shown to the operator, never sent


# -- permissions -------------------------------------------------------------------------------------------


class _NoParams(Params):
    pass


def test_s3_permissions_are_declared_and_kept_out_of_the_cluster_role() -> None:
    from daemon.actions.base import action
    from daemon.actions.rbac import object_storage_permissions, rules_for
    from daemon.actions.registry import default_registry

    registry = default_registry()
    assert object_storage_permissions(registry) == {
        "s3:GetObject": ("thanos.bucket_status", "thanos.mark_for_deletion", "thanos.plan_retention"),
        "s3:ListBucket": (
            "s3.probe",
            "thanos.bucket_status",
            "thanos.mark_for_deletion",
            "thanos.plan_retention",
        ),
        "s3:PutObject": ("thanos.mark_for_deletion",),
    }
    assert not any("s3" in r.resource for r in rules_for(registry))
    # docs/thanos.md shows the same table and a policy without s3:DeleteObject (its text moved out of the
    # README waits in docs/_moved/thanos.md until the integrator merges it there)
    repo = Path(__file__).parent.parent
    pages = [repo / "docs" / "thanos.md", repo / "docs" / "_moved" / "thanos.md"]
    docs = "".join(p.read_text() for p in pages if p.exists())
    assert "| `thanos.mark_for_deletion` | `s3:ListBucket`, `s3:GetObject`, `s3:PutObject` |" in docs
    assert '"Action": ["s3:GetObject", "s3:PutObject"]' in docs

    async def fn(ctx: Any, p: _NoParams) -> dict[str, Any]:
        return {}

    wild = action("x.y", read_only=True, idempotent=True, permissions=("s3:*",))(fn)
    with pytest.raises(ValueError, match=r"action x\.y: permission 's3:\*': expected s3:Action"):
        object_storage_permissions([wild])
