"""runbookd as a real subprocess: ``<venv>/bin/runbookd serve --config PATH --state PATH --listen 127.0.0.1:PORT``.

Contract (design.md §7): ``serve`` takes ``--config``, ``--state``, ``--listen`` (flags override the config)
and ``GET /healthz`` answers 200 once it serves. Tokens come from the environment
(``RUNBOOKD_WEBHOOK_TOKEN``, ``RUNBOOKD_ADMIN_TOKEN`` by default, see ``config.example.yaml``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from . import httpclient
from .procs import ServerProcess, base_env

DEFAULT_WEBHOOK_TOKEN = "test-webhook-token"
DEFAULT_ADMIN_TOKEN = "test-admin-token"


def daemon_config(
    runbooks: str | os.PathLike[str], *, prometheus: str, alertmanager: str, dry_run: bool
) -> dict[str, Any]:
    """A runbookd config for a subprocess daemon talking to a test Prometheus and Alertmanager, with the
    webhook token and an admin token (group sre) from the environment, as config.example.yaml does."""
    return {
        "runbooks": {"paths": [str(runbooks)]},
        "dry_run": dry_run,
        "prometheus": {"url": prometheus, "timeout": "5s"},
        "alertmanager": {"url": alertmanager, "timeout": "5s"},
        "auth": {
            "webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"},
            "tokens": [{"name": "admin", "role": "admin", "secret": {"env": "RUNBOOKD_ADMIN_TOKEN"}}],
        },
        "approvers": {"sre": ["admin"]},
        "log": {"format": "json"},
    }


def runbookd_bin() -> str:
    """The ``runbookd`` console script next to the running interpreter (the venv's bin/)."""
    return str(Path(sys.executable).parent / "runbookd")


class RunbookdProcess(ServerProcess):
    """One runbookd daemon.

    config:     a path to an existing YAML file, or a dict / YAML text written to workdir/config.yaml
    state_path: SQLite state file (default workdir/state.db; kept across restart() and kill9()+start())
    env:        extra environment (wins over the defaults below); proxies are always removed
    executable: argv prefix replacing ``[<venv>/bin/runbookd]`` (e.g. ``[sys.executable, "-m", "daemon"]``)
    cwd:        working directory (default workdir): relative paths in the config resolve against it
    """

    ready_path = "/healthz"
    log_name = "runbookd.log"

    def __init__(
        self,
        workdir: Path,
        config: str | os.PathLike[str] | Mapping[str, Any],
        *,
        state_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        webhook_token: str = DEFAULT_WEBHOOK_TOKEN,
        admin_token: str = DEFAULT_ADMIN_TOKEN,
        extra_args: Sequence[str] = (),
        executable: Sequence[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        port: int | None = None,
        ready_timeout: float = 30.0,
        stop_grace: float = 10.0,
    ) -> None:
        self.webhook_token = webhook_token
        self.admin_token = admin_token
        full_env = base_env(
            {
                "RUNBOOKD_WEBHOOK_TOKEN": webhook_token,
                "RUNBOOKD_ADMIN_TOKEN": admin_token,
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        full_env.update(env or {})
        super().__init__(
            "runbookd", workdir, port=port, env=full_env, ready_timeout=ready_timeout, stop_grace=stop_grace
        )
        if isinstance(config, os.PathLike):
            self.config_path = Path(config)
        else:
            self.config_path = self.workdir / "config.yaml"
            text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)
            self.config_path.write_text(text)
        self.state_path = Path(state_path) if state_path is not None else self.workdir / "state.db"
        self.extra_args = list(extra_args)
        self.executable = list(executable) if executable else [runbookd_bin()]
        if cwd is not None:
            self.cwd = Path(cwd)

    def build_argv(self) -> list[str]:
        return [
            *self.executable,
            "serve",
            "--config",
            str(self.config_path),
            "--state",
            str(self.state_path),
            "--listen",
            self.address,
            *self.extra_args,
        ]

    # -- HTTP ------------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> httpclient.Response:
        """``method`` ``self.url + path`` with ``Authorization: Bearer <token>`` (default: the admin token;
        pass ``token=""`` for none)."""
        tok = self.admin_token if token is None else token
        return httpclient.request(method, self.url + path, token=tok or None, **kw)

    def get(self, path: str, **kw: Any) -> httpclient.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpclient.Response:
        return self.request("POST", path, **kw)

    def post_webhook(
        self, payload: Any, *, token: str | None = None, wait_routed: bool = True
    ) -> httpclient.Response:
        """POST an Alertmanager webhook payload to /api/v1/alertmanager with the webhook token.

        The daemon answers once the notification is stored and routes it right after; by default this
        also waits until it is routed (GET /api/v1/receipts/N), so its runs can be looked up at once."""
        tok = self.webhook_token if token is None else token
        resp = httpclient.request("POST", self.url + "/api/v1/alertmanager", json=payload, token=tok or None)
        if wait_routed and resp.status == 200:
            self.wait_routed(resp.json()["receipt"])
        return resp

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the daemon's /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        r = self.get("/metrics", token="")
        assert r.status == 200, r
        for family in text_string_to_metric_families(r.text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def wait_routed(self, receipt: int, timeout: float = 20.0) -> dict[str, Any]:
        """Poll a receipt until its notification is routed; returns the receipt."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.get(f"/api/v1/receipts/{receipt}")
            if got.status == 200 and got.json()["routed_at"] is not None:
                return dict(got.json())
            if time.monotonic() > deadline:
                raise AssertionError(f"receipt {receipt} not routed in {timeout}s: {got}")
            time.sleep(0.02)

    # -- CLI -------------------------------------------------------------------------------------------------
    def cli(
        self,
        *args: str,
        token: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a client command (``runbookd runs --output json``...) against this server:
        RUNBOOKD_SERVER=self.url, RUNBOOKD_TOKEN=token (default admin). Does not raise on non-zero exit."""
        e = dict(self.env)
        e["RUNBOOKD_SERVER"] = self.url
        e["RUNBOOKD_TOKEN"] = self.admin_token if token is None else token
        e.update(env or {})
        return subprocess.run(
            [*self.executable, *args],
            env=e,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
