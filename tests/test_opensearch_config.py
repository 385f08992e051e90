"""The ``opensearch:`` config section: validation, secrets, the client the factory builds from it, and TLS
(a CA bundle, or verify_tls: false) against the local OpenSearch server served over https."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.opensearch_server import FakeOpenSearch

from daemon.clients.factory import build_clients, close_clients
from daemon.clients.opensearch import OpenSearchClient, OpenSearchPermanentError
from daemon.config import ConfigError, parse_config, resolve_secrets


def _config(section: dict[str, Any]) -> dict[str, Any]:
    return {"auth": {"allow_unauthenticated_webhook": True}, "opensearch": section}


def test_defaults() -> None:
    cfg = parse_config(_config({"url": "https://opensearch.logging:9200/"})).opensearch
    assert cfg is not None and cfg.url == "https://opensearch.logging:9200"
    assert (cfg.verify_tls, cfg.ca_bundle, cfg.timeout, cfg.retries, cfg.token) == (True, None, 30.0, 3, None)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"url": "opensearch:9200"}, "url must be http(s)://host:port"),
        ({"url": "https://admin:admin@opensearch:9200"}, "must not carry credentials"),
        ({"url": "https://opensearch:9200/logs"}, "must not have a path"),
        ({"url": "https://o:9200", "username": {"env": "U"}}, "give both username and password"),
        (
            {
                "url": "https://o:9200",
                "username": {"env": "U"},
                "password": {"env": "P"},
                "token": {"env": "T"},
            },
            "not both",
        ),
        (
            {"url": "https://o:9200", "ca_bundle": "/ca.pem", "verify_tls": False},
            "ca_bundle is for verifying",
        ),
        ({"url": "https://o:9200", "retries": 11}, "less than or equal to 10"),
        ({"url": "https://o:9200", "password": "admin"}, "opensearch.password"),
    ],
)
def test_mistakes_are_refused(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="opensearch") as err:
        parse_config(_config(section))
    assert message in str(err.value)


def test_secrets_resolve_and_never_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("s3cr3t-pw\n")
    monkeypatch.setenv("OS_USER", "runbookd")
    cfg = parse_config(
        _config(
            {
                "url": "https://o:9200",
                "username": {"env": "OS_USER"},
                "password": {"file": str(tmp_path / "pw")},
            }
        )
    )
    secrets = resolve_secrets(cfg)
    assert secrets.opensearch_username is not None and secrets.opensearch_password is not None
    assert secrets.opensearch_password.get_secret_value() == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(secrets) and "s3cr3t-pw" not in str(cfg)
    monkeypatch.delenv("OS_USER")
    with pytest.raises(ConfigError, match=r"opensearch\.username: environment variable OS_USER is not set"):
        resolve_secrets(cfg)


async def test_the_factory_builds_an_authenticated_client(
    opensearch: FakeOpenSearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    opensearch.users = {"runbookd": "pw-1"}
    monkeypatch.setenv("OS_USER", "runbookd")
    monkeypatch.setenv("OS_PASSWORD", "pw-1")
    cfg = parse_config(
        _config({"url": opensearch.url, "username": {"env": "OS_USER"}, "password": {"env": "OS_PASSWORD"}})
    )
    clients = await build_clients(cfg, resolve_secrets(cfg))
    try:
        assert isinstance(clients.opensearch, OpenSearchClient)
        assert await clients.opensearch.get_repository("opensearch-logs") is not None
    finally:
        await close_clients(clients)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), made with openssl."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_tls_with_a_ca_bundle_or_verification_off(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = await FakeOpenSearch().start(ssl_context=ctx)
    made: list[Any] = []
    try:
        for section in ({"ca_bundle": str(cert)}, {"verify_tls": False}, {}):
            cfg = parse_config(_config({"url": server.url, "retries": 0, **section}))
            clients = await build_clients(cfg, resolve_secrets(cfg))
            made.append(clients)
            if section:
                assert await clients.opensearch.get_repository("opensearch-logs") is not None
            else:
                with pytest.raises(OpenSearchPermanentError) as err:
                    await clients.opensearch.get_repository("opensearch-logs")
                assert err.value.kind == "tls" and "opensearch.ca_bundle" in str(err.value)
    finally:
        for clients in made:
            await close_clients(clients)
        await server.stop()


async def test_an_unreadable_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    cfg = parse_config(_config({"url": "https://127.0.0.1:9200", "ca_bundle": str(tmp_path / "missing.pem")}))
    with pytest.raises(ConfigError, match=r"opensearch\.ca_bundle: cannot load"):
        await build_clients(cfg, resolve_secrets(cfg))
