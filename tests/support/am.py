"""A real Alertmanager (Debian's prometheus-alertmanager 0.25) on loopback, gossip disabled, and API v2 helpers."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from . import httpclient
from .ports import LOOPBACK
from .procs import ServerProcess

ALERTMANAGER_BIN = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL_BIN = shutil.which("amtool") or "/usr/bin/amtool"

NULL_CONFIG: dict[str, Any] = {
    "route": {"receiver": "null", "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"},
    "receivers": [{"name": "null"}],
}


def webhook_config(
    url: str,
    *,
    bearer_token: str | None = None,
    send_resolved: bool = True,
    max_alerts: int = 0,
    group_by: Sequence[str] = ("alertname",),
    group_wait: str = "0s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
    receiver: str = "runbookd",
) -> dict[str, Any]:
    """An Alertmanager config that sends every alert to one webhook, fast timers for tests.

    E.g. ``alertmanager_factory(webhook_config(rb.url + "/api/v1/alertmanager", bearer_token=rb.webhook_token))``.
    """
    wh: dict[str, Any] = {"url": url, "send_resolved": send_resolved, "max_alerts": max_alerts}
    if bearer_token is not None:
        wh["http_config"] = {"authorization": {"type": "Bearer", "credentials": bearer_token}}
    return {
        "route": {
            "receiver": receiver,
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [{"name": receiver, "webhook_configs": [wh]}],
    }


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def now() -> datetime:
    return datetime.now(UTC)


class AlertmanagerServer(ServerProcess):
    """Alertmanager with ``--cluster.listen-address=`` (no gossip), storage in workdir, config from ``config``.

    ``config`` is YAML text or a dict (default: everything to a receiver with no integrations).
    """

    ready_path = "/-/ready"
    log_name = "alertmanager.log"

    def __init__(
        self,
        workdir: Path,
        config: str | Mapping[str, Any] | None = None,
        *,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        super().__init__("alertmanager", workdir, port=port, ready_timeout=ready_timeout)
        self.config_path = self.workdir / "alertmanager.yml"
        self.extra_args = list(extra_args)
        self.write_config(NULL_CONFIG if config is None else config)

    def write_config(self, config: str | Mapping[str, Any]) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)
        self.config_path.write_text(text)

    def set_config(self, config: str | Mapping[str, Any]) -> None:
        """Replace the config file and reload."""
        self.write_config(config)
        self.reload()

    def reload(self) -> None:
        r = httpclient.post(self.url + "/-/reload")
        if r.status != 200:
            raise AssertionError(f"alertmanager reload failed: {r}\n{self.log_tail()}")

    def build_argv(self) -> list[str]:
        return [
            ALERTMANAGER_BIN,
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            f"--web.external-url=http://{LOOPBACK}:{self.port}",
            "--cluster.listen-address=",
            "--log.level=debug",
            *self.extra_args,
        ]

    @property
    def api_url(self) -> str:
        return self.url + "/api/v2"

    # -- alerts ----------------------------------------------------------------------------------------------
    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST /api/v2/alerts with raw postable alerts (``labels``, ``annotations``, ``startsAt``, ...).
        datetime values are converted to RFC3339."""
        body = [{k: rfc3339(v) if isinstance(v, datetime) else v for k, v in a.items()} for a in alerts]
        r = httpclient.post(self.api_url + "/alerts", json=body)
        if r.status != 200:
            raise AssertionError(f"alertmanager rejected alerts: {r}")

    def fire(
        self,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        *,
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
        generator_url: str | None = None,
    ) -> None:
        """Post one firing alert (no endsAt: Alertmanager resolves it after resolve_timeout, 5m)."""
        alert: dict[str, Any] = {"labels": dict(labels), "annotations": dict(annotations or {})}
        alert["startsAt"] = starts_at or now()
        if ends_at is not None:
            alert["endsAt"] = ends_at
        if generator_url:
            alert["generatorURL"] = generator_url
        self.post_alerts([alert])

    def resolve(self, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None) -> None:
        """Post the alert again with endsAt = now, which resolves it."""
        t = now()
        self.post_alerts(
            [
                {
                    "labels": dict(labels),
                    "annotations": dict(annotations or {}),
                    "startsAt": t - timedelta(seconds=1),
                    "endsAt": t,
                }
            ]
        )

    def alerts(
        self,
        filter: Sequence[str] = (),
        *,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        unprocessed: bool = True,
        receiver: str | None = None,
    ) -> list[dict[str, Any]]:
        """GET /api/v2/alerts; ``filter`` are matchers like ``'alertname="X"'``."""
        params: list[tuple[str, str]] = [
            ("active", str(active).lower()),
            ("silenced", str(silenced).lower()),
            ("inhibited", str(inhibited).lower()),
            ("unprocessed", str(unprocessed).lower()),
        ]
        params += [("filter", f) for f in filter]
        if receiver:
            params.append(("receiver", receiver))
        r = httpclient.get(self.api_url + "/alerts", params=params)
        if r.status != 200:
            raise AssertionError(f"list alerts failed: {r}")
        return list(r.json())

    def wait_for_alerts(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool] | None = None,
        filter: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll ``alerts(filter)`` until ``predicate(alerts)`` (default: non-empty); return them."""
        pred = predicate or bool
        deadline = time.monotonic() + timeout
        while True:
            got = self.alerts(filter)
            if pred(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for alerts {list(filter)}; last: {got}"
                )
            time.sleep(0.2)

    async def wait_for_alerts_async(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool] | None = None,
        filter: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.wait_for_alerts, predicate, filter, timeout)

    # -- silences --------------------------------------------------------------------------------------------
    def create_silence(
        self,
        matchers: Mapping[str, str] | Sequence[Mapping[str, Any]],
        *,
        duration: timedelta = timedelta(hours=1),
        starts_at: datetime | None = None,
        created_by: str = "tests",
        comment: str = "test silence",
    ) -> str:
        """POST /api/v2/silences; ``matchers`` is ``{"name": "value"}`` (equality) or raw matcher dicts.
        Returns the silence ID."""
        if isinstance(matchers, Mapping):
            ms = [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()]
        else:
            ms = [{"isRegex": False, "isEqual": True, **m} for m in matchers]
        start = starts_at or now()
        body = {
            "matchers": ms,
            "startsAt": rfc3339(start),
            "endsAt": rfc3339(start + duration),
            "createdBy": created_by,
            "comment": comment,
        }
        r = httpclient.post(self.api_url + "/silences", json=body)
        if r.status != 200:
            raise AssertionError(f"create silence failed: {r}")
        return str(r.json()["silenceID"])

    def silences(self, filter: Sequence[str] = ()) -> list[dict[str, Any]]:
        """GET /api/v2/silences (every state: active, pending, expired)."""
        r = httpclient.get(self.api_url + "/silences", params=[("filter", f) for f in filter])
        if r.status != 200:
            raise AssertionError(f"list silences failed: {r}")
        return list(r.json())

    def silence(self, silence_id: str) -> dict[str, Any]:
        r = httpclient.get(f"{self.api_url}/silence/{silence_id}")
        if r.status != 200:
            raise AssertionError(f"get silence {silence_id} failed: {r}")
        return dict(r.json())

    def expire_silence(self, silence_id: str) -> None:
        r = httpclient.delete(f"{self.api_url}/silence/{silence_id}")
        if r.status != 200:
            raise AssertionError(f"expire silence {silence_id} failed: {r}")

    def status(self) -> dict[str, Any]:
        return dict(httpclient.get(self.api_url + "/status").json())
