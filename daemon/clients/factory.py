"""Build the clients the config asks for, and close them again."""

from __future__ import annotations

from daemon.clients import kubernetes, s3
from daemon.clients.alertmanager import AlertmanagerClient
from daemon.clients.bundle import Clients
from daemon.clients.http import JsonHttpClient
from daemon.clients.prometheus import PrometheusClient
from daemon.config import Config, Secrets
from daemon.errors import ConfigError, PermanentError


async def build_clients(config: Config, secrets: Secrets) -> Clients:
    """Raises ConfigError when a configured system cannot be set up (e.g. no kubeconfig outside a pod)."""
    clients = Clients()
    if config.prometheus is not None:
        clients.prometheus = PrometheusClient(
            JsonHttpClient(
                config.prometheus.url,
                timeout=config.prometheus.timeout,
                token=secrets.prometheus_token,
                name="prometheus",
            )
        )
    if config.alertmanager is not None:
        clients.alertmanager = AlertmanagerClient(
            JsonHttpClient(
                config.alertmanager.url,
                timeout=config.alertmanager.timeout,
                token=secrets.alertmanager_token,
                name="alertmanager",
            )
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
    return clients


async def close_clients(clients: Clients) -> None:
    for name in ("prometheus", "alertmanager", "kubernetes", "s3", "opensearch"):
        client = getattr(clients, name, None)
        if client is not None and hasattr(client, "close"):
            await client.close()
