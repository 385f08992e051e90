"""A real Prometheus (Debian's /usr/bin/prometheus) on loopback, and a test exporter whose metrics tests change.

Prometheus applies new scrape targets and Alertmanager targets only every ~5 s, so the first samples of a
target appear 5-6 s after start: always ``wait_for`` (polls the query API), never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from aiohttp import web

from daemon.clients.http import JsonHttpClient
from daemon.clients.prometheus import PrometheusClient

from . import httpclient
from .ports import LOOPBACK, free_port
from .procs import ServerProcess

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL_BIN = shutil.which("promtool") or "/usr/bin/promtool"

Result = list[dict[str, Any]]


def values(result: Result) -> list[float]:
    """Sample values of an instant-vector result, e.g. ``values(prom.query("up")) == [1.0]``."""
    return [float(s["value"][1]) for s in result]


def _dump(content: str | Mapping[str, Any]) -> str:
    return content if isinstance(content, str) else yaml.safe_dump(dict(content), sort_keys=False)


def _hostport(url_or_addr: str) -> tuple[str, str]:
    """'http://127.0.0.1:9093/prefix' -> ('127.0.0.1:9093', '/prefix'); '127.0.0.1:9093' -> (.., '/')."""
    s = url_or_addr.split("://", 1)[-1]
    host, _, path = s.partition("/")
    return host, "/" + path


class PrometheusServer(ServerProcess):
    """Prometheus with 1 s scrape/evaluation intervals, ``--rules.alert.resend-delay=1s``, lifecycle API on.

    targets:        ``["127.0.0.1:PORT", ...]`` scraped as job ``job_name`` (default "test")
    scrape_configs: extra raw scrape_config dicts (relabelling, several jobs, a closed port that must look down)
    rules:          ``{"file.yml": yaml_text_or_dict}`` written under workdir/rules/
    rule_files:     existing rule files (e.g. the repo's rules/*.yml), referenced by absolute path
    alertmanagers:  Alertmanager URLs ``["http://127.0.0.1:PORT"]`` (API v2)
    """

    ready_path = "/-/ready"
    log_name = "prometheus.log"

    def __init__(
        self,
        workdir: Path,
        *,
        targets: Sequence[str] = (),
        job_name: str = "test",
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        rules: Mapping[str, str | Mapping[str, Any]] | None = None,
        rule_files: Sequence[str | Path] = (),
        alertmanagers: Sequence[str] = (),
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        external_labels: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        super().__init__("prometheus", workdir, port=port, ready_timeout=ready_timeout)
        self.targets = list(targets)
        self.job_name = job_name
        self.scrape_configs = [dict(c) for c in scrape_configs]
        self.rule_files = [str(Path(p).resolve()) for p in rule_files]
        self.alertmanagers = list(alertmanagers)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.external_labels = dict(external_labels or {})
        self.extra_args = list(extra_args)
        self.config_path = self.workdir / "prometheus.yml"
        self.rules_dir = self.workdir / "rules"
        self.rules_dir.mkdir(exist_ok=True)
        for name, content in (rules or {}).items():
            (self.rules_dir / name).write_text(_dump(content))
        self.write_config()

    # -- configuration ---------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        glob: dict[str, Any] = {
            "scrape_interval": self.scrape_interval,
            "scrape_timeout": self.scrape_interval,
            "evaluation_interval": self.evaluation_interval,
        }
        if self.external_labels:
            glob["external_labels"] = self.external_labels
        scrape: list[dict[str, Any]] = []
        if self.targets:
            scrape.append({"job_name": self.job_name, "static_configs": [{"targets": self.targets}]})
        scrape.extend(self.scrape_configs)
        cfg: dict[str, Any] = {
            "global": glob,
            "rule_files": [str(self.rules_dir / "*.yml"), str(self.rules_dir / "*.yaml"), *self.rule_files],
            "scrape_configs": scrape,
        }
        if self.alertmanagers:
            ams = []
            for u in self.alertmanagers:
                hostport, prefix = _hostport(u)
                ams.append(
                    {
                        "api_version": "v2",
                        "scheme": "http",
                        "path_prefix": prefix,
                        "timeout": "5s",
                        "static_configs": [{"targets": [hostport]}],
                    }
                )
            cfg["alerting"] = {"alertmanagers": ams}
        return cfg

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def set_rules(self, name: str, content: str | Mapping[str, Any], *, reload: bool = True) -> None:
        """Write (or replace) rule file ``name`` and reload Prometheus."""
        (self.rules_dir / name).write_text(_dump(content))
        if reload:
            self.reload()

    def set_targets(self, targets: Sequence[str], *, reload: bool = True) -> None:
        self.targets = list(targets)
        self.write_config()
        if reload:
            self.reload()

    def reload(self) -> None:
        """POST /-/reload (needs --web.enable-lifecycle, which is always on); raises if the config is bad."""
        r = httpclient.post(self.url + "/-/reload")
        if r.status != 200:
            raise AssertionError(f"prometheus reload failed: {r}\n{self.log_tail()}")

    def check_rules(self, *paths: str | Path) -> str:
        """Run ``promtool check rules``; raise with its output on failure."""
        res = subprocess.run(
            [PROMTOOL_BIN, "check", "rules", *map(str, paths)], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise AssertionError(res.stdout + res.stderr)
        return res.stdout

    def build_argv(self) -> list[str]:
        return [
            PROMETHEUS_BIN,
            f"--config.file={self.config_path}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            f"--web.external-url=http://{LOOPBACK}:{self.port}/",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            "--rules.alert.resend-delay=1s",
            "--web.enable-lifecycle",
            "--web.enable-admin-api",
            *self.extra_args,
        ]

    # -- HTTP API --------------------------------------------------------------------------------------------
    def api(self, path: str, **params: str) -> Any:
        r = httpclient.get(f"{self.url}/api/v1/{path}", params=params or None)
        body = r.json()
        if r.status != 200 or body.get("status") != "success":
            raise AssertionError(f"prometheus /api/v1/{path} {params}: {r}")
        return body["data"]

    def query(self, expr: str) -> Result:
        """Instant query; returns the result list (vector: ``[{"metric": {...}, "value": [ts, "1"]}]``)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[Result], bool] | None = None,
        timeout: float = 30.0,
        interval: float = 0.25,
    ) -> Result:
        """Poll ``query(expr)`` until ``predicate(result)`` (default: non-empty); return that result.

        Example: ``prom.wait_for('up{job="test"}', lambda r: values(r) == [1.0], timeout=20)``.
        """
        pred = predicate or bool
        deadline = time.monotonic() + timeout
        last: Result | str = "no query yet"
        while True:
            try:
                last = self.query(expr)
                if pred(last):
                    return last
            except (OSError, AssertionError, ValueError) as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {expr!r}; last result: {last}")
            time.sleep(interval)

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v1/alerts: pending and firing alerts of the rule manager."""
        return list(self.api("alerts")["alerts"])

    def wait_for_alert(self, alertname: str, state: str = "firing", timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for a in self.alerts():
                if a["labels"].get("alertname") == alertname and a["state"] == state:
                    return a
            if time.monotonic() > deadline:
                raise AssertionError(f"alert {alertname} not {state} after {timeout}s: {self.alerts()}")
            time.sleep(0.25)

    def rules(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    # async variants: run the blocking poll in a worker thread so the test's event loop stays free
    async def query_async(self, expr: str) -> Result:
        return await asyncio.to_thread(self.query, expr)

    async def wait_for_async(
        self, expr: str, predicate: Callable[[Result], bool] | None = None, timeout: float = 30.0
    ) -> Result:
        return await asyncio.to_thread(self.wait_for, expr, predicate, timeout)

    async def wait_for_alert_async(self, alertname: str, state: str = "firing", timeout: float = 30.0) -> Any:
        return await asyncio.to_thread(self.wait_for_alert, alertname, state, timeout)


# ------------------------------------------------------------------------------------------------------------
# Test exporter
# ------------------------------------------------------------------------------------------------------------


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class MetricsExporter:
    """A loopback HTTP server answering ``GET /metrics`` with text the test sets at run time.

    Runs an aiohttp server on its own event loop in a background thread, so it works the same from sync and
    async tests (whatever pytest-asyncio's loop does). ``stop()`` closes the port (Prometheus sees ``up`` 0);
    ``start()`` serves again on the same port. Use ``set()``/``remove()`` for samples or ``set_text()`` for raw
    exposition text (which then replaces the samples).
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._types: dict[str, str] = {}
        self._raw: str | None = None
        self.scrapes = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"exporter-{self.port}", daemon=True
        )
        self._thread.start()
        self._runner: web.AppRunner | None = None

    # -- content ---------------------------------------------------------------------------------------------
    def set(
        self, name: str, value: float, labels: Mapping[str, str] | None = None, type: str = "gauge"
    ) -> None:
        key = (name, tuple(sorted((labels or {}).items())))
        with self._lock:
            self._raw = None
            self._types[name] = type
            self._samples[key] = float(value)

    def remove(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Remove one sample (``labels`` given) or every sample of ``name``."""
        with self._lock:
            for key in list(self._samples):
                if key[0] == name and (labels is None or key[1] == tuple(sorted(labels.items()))):
                    del self._samples[key]

    def set_text(self, text: str) -> None:
        """Serve exactly ``text`` (Prometheus text format) from now on."""
        with self._lock:
            self._raw = text

    def clear(self) -> None:
        with self._lock:
            self._raw = None
            self._samples.clear()

    def render(self) -> str:
        with self._lock:
            if self._raw is not None:
                return self._raw
            out: list[str] = []
            typed: set[str] = set()
            for (name, labels), value in sorted(self._samples.items()):
                if name not in typed:
                    typed.add(name)
                    out.append(f"# TYPE {name} {self._types.get(name, 'gauge')}")
                lbl = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                out.append(f"{name}{{{lbl}}} {value!r}" if lbl else f"{name} {value!r}")
            return "\n".join(out) + "\n"

    # -- server ----------------------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        """``127.0.0.1:PORT``, for a Prometheus static target."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/metrics"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def _handle(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(text=self.render(), content_type="text/plain", charset="utf-8")

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner

    def start(self) -> MetricsExporter:
        if self._runner is None:
            self._runner = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Close the listening socket and open connections: scrapes fail, ``up`` becomes 0."""
        runner, self._runner = self._runner, None
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(10)

    def close(self) -> None:
        """Stop serving and end the background thread and its loop."""
        self.stop()
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> MetricsExporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------------------
# An exporter, the Prometheus scraping it, and runbookd's client of that Prometheus
# ------------------------------------------------------------------------------------------------------------


class Scraped(NamedTuple):
    exporter: MetricsExporter
    prom: PrometheusServer
    client: PrometheusClient


@contextlib.asynccontextmanager
async def scraped_exporter(
    exporter_factory: Callable[..., MetricsExporter],
    prometheus_factory: Callable[..., PrometheusServer],
    job_name: str,
) -> AsyncIterator[Scraped]:
    """One test exporter scraped by a real Prometheus as ``job_name``, and a ``PrometheusClient`` of that
    Prometheus (closed on exit), for tests of actions that query it. Use it from a fixture:
    ``async with scraped_exporter(exporter_factory, prometheus_factory, "kubelet") as s: yield s``."""
    exporter = exporter_factory()
    prom = prometheus_factory(targets=[exporter.target], job_name=job_name)
    client = PrometheusClient(JsonHttpClient(prom.url, timeout=10.0, name="prometheus"))
    try:
        yield Scraped(exporter, prom, client)
    finally:
        await client.close()
