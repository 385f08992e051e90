"""Build the clients the config asks for, and close them again."""

from __future__ import annotations

from pydantic import SecretStr

from daemon.clients import kubernetes, opensearch, s3
from daemon.clients.alertmanager import AlertmanagerClient
from daemon.clients.bundle import Clients
from daemon.clients.http import JsonHttpClient
from daemon.clients.prometheus import PrometheusClient
from daemon.config import Config, HttpServiceConfig, Secrets
from daemon.errors import ConfigError, PermanentError


def _http(cfg: HttpServiceConfig, token: SecretStr | None, name: str) -> JsonHttpClient:
    return JsonHttpClient(cfg.url, timeout=cfg.timeout, token=token, name=name)


async def build_clients(config: Config, secrets: Secrets) -> Clients:
    """Raises ConfigError when a configured system cannot be set up (e.g. no kubeconfig outside a pod)."""
    clients = Clients()
    if config.prometheus is not None:
        clients.prometheus = PrometheusClient(
            _http(config.prometheus, secrets.prometheus_token, "prometheus")
        )
    if config.alertmanager is not None:
        clients.alertmanager = AlertmanagerClient(
            _http(config.alertmanager, secrets.alertmanager_token, "alertmanager")
        )
    if config.kubernetes is not None:
        try:
            clients.kubernetes = await kubernetes.from_config(config.kubernetes)
        except PermanentError as exc:
            await close_clients(clients)
            raise ConfigError(f"kubernetes: {exc}") from None
    if config.s3 is not None:
        clients.s3 = s3.from_config(
            config.s3, access_key=secrets.s3_access_key, secret_key=secrets.s3_secret_key
        )
    if config.opensearch is not None:
        try:
            clients.opensearch = opensearch.from_config(
                config.opensearch,
                username=secrets.opensearch_username,
                password=secrets.opensearch_password,
                token=secrets.opensearch_token,
            )
        except OSError as exc:  # ca_bundle unreadable or not PEM
            await close_clients(clients)
            raise ConfigError(f"opensearch.ca_bundle: cannot load: {exc.strerror or exc}") from None
    return clients


async def close_clients(clients: Clients) -> None:
    for name in ("prometheus", "alertmanager", "kubernetes", "s3", "opensearch"):
        client = getattr(clients, name, None)
        if client is not None and hasattr(client, "close"):
            await client.close()
