"""Shared fixtures: real Prometheus, Alertmanager, moto S3, runbookd and a test exporter, all on loopback.

Factories start a process when called and stop it at teardown (SIGTERM, then SIGKILL). When a test fails,
the last lines of every process it started are appended to the report.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS_DIR = str(Path(__file__).parent)
if _TESTS_DIR not in sys.path:  # make ``import support`` work whatever the import mode
    sys.path.insert(0, _TESTS_DIR)

from support import inproc, writer_pipes  # noqa: E402
from support.am import AlertmanagerServer  # noqa: E402
from support.kube_fixtures import action_memory, kube_api, kube_client, kube_ctx  # noqa: E402, F401
from support.opensearch_fixtures import opensearch, os_client, os_ctx, os_memory  # noqa: E402, F401
from support.postgres import PostgresServer, pg_bindir  # noqa: E402
from support.procs import PROXY_VARS, ManagedProcess  # noqa: E402
from support.prom import MetricsExporter, PrometheusServer  # noqa: E402
from support.runbookd import RunbookdProcess  # noqa: E402
from support.s3 import MotoS3Server  # noqa: E402

writer_pipes.install()


@pytest.fixture(autouse=True)
def _writer_pipes_closed(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for line in writer_pipes.close_leaked(request.node.nodeid):
        _leaked_pipes.append(line)
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:  # not captured, unlike a fixture's stderr: seen in a passing CI log
            reporter.write_line(line, yellow=True)


_leaked_pipes: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _leaked_pipes:
        terminalreporter.section("intake writer pipes left open (closed by the suite)", yellow=True)
        for line in _leaked_pipes:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session", autouse=True)
def _loopback_only_environment() -> Iterator[None]:
    """No proxies, no cloud metadata look-ups: nothing a test starts may leave 127.0.0.1."""
    with pytest.MonkeyPatch.context() as mp:
        for var in PROXY_VARS:
            mp.delenv(var, raising=False)
        mp.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
        mp.setenv("no_proxy", "127.0.0.1,localhost,::1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        for proc in getattr(item, "_support_procs", []):
            report.sections.append((f"{proc.name} log: {proc.log_path}", proc.log_tail(60)))
    return report


def _track(request: pytest.FixtureRequest, proc: ManagedProcess) -> None:
    procs = getattr(request.node, "_support_procs", None)
    if procs is None:
        procs = []
        request.node._support_procs = procs
    procs.append(proc)


_ids = itertools.count(1)


def _workdir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / f"{name}-{next(_ids)}"
    d.mkdir(parents=True)
    return d


@pytest.fixture
def prometheus_factory(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    exporter_factory: Callable[..., MetricsExporter],
) -> Iterator[Callable[..., PrometheusServer]]:
    """``prometheus_factory(targets=[...], rules={...}, alertmanagers=[...], scrape_configs=[...]) -> started``.

    Set up after ``exporter_factory`` so torn down before it: an exporter closing while Prometheus still
    scrapes it can accept a connection it then never closes (a ResourceWarning in a later test)."""
    started: list[PrometheusServer] = []

    def make(**kwargs: Any) -> PrometheusServer:
        prom = PrometheusServer(_workdir(tmp_path, "prometheus"), **kwargs)
        started.append(prom)
        _track(request, prom)
        return prom.start()

    yield make
    for prom in reversed(started):
        prom.stop()


@pytest.fixture
def alertmanager_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., AlertmanagerServer]]:
    """``alertmanager_factory(config=None | yaml_text | dict, extra_args=()) -> started AlertmanagerServer``."""
    started: list[AlertmanagerServer] = []

    def make(config: Any = None, **kwargs: Any) -> AlertmanagerServer:
        am = AlertmanagerServer(_workdir(tmp_path, "alertmanager"), config, **kwargs)
        started.append(am)
        _track(request, am)
        return am.start()

    yield make
    for am in reversed(started):
        am.stop()


@pytest.fixture
def runbookd_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., RunbookdProcess]]:
    """``runbookd_factory(config, env={...}, state_path=None, start=True, ...) -> RunbookdProcess``."""
    started: list[RunbookdProcess] = []

    def make(config: Any, *, start: bool = True, **kwargs: Any) -> RunbookdProcess:
        rb = RunbookdProcess(_workdir(tmp_path, "runbookd"), config, **kwargs)
        started.append(rb)
        _track(request, rb)
        return rb.start() if start else rb

    yield make
    for rb in reversed(started):
        rb.stop()


@pytest.fixture
def exporter_factory() -> Iterator[Callable[..., MetricsExporter]]:
    """``exporter_factory(port=None) -> started MetricsExporter`` (closed at teardown)."""
    made: list[MetricsExporter] = []

    def make(port: int | None = None) -> MetricsExporter:
        exp = MetricsExporter(port)
        made.append(exp)
        return exp.start()

    yield make
    for exp in made:
        exp.close()


@pytest.fixture
def test_exporter(exporter_factory: Callable[..., MetricsExporter]) -> MetricsExporter:
    """One started test exporter: ``.set(name, value, labels)``, ``.stop()``/``.start()``, ``.target``."""
    return exporter_factory()


@pytest.fixture(scope="session")
def moto_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3Server]:
    """One moto_server for the whole session (it takes ~1 s to start); use ``moto_s3`` in tests."""
    server = MotoS3Server(tmp_path_factory.mktemp("moto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def moto_s3(moto_s3_server: MotoS3Server) -> MotoS3Server:
    """The session's moto S3 server, reset (empty) for this test."""
    if not moto_s3_server.running:  # a test killed it: start again on the same port
        moto_s3_server.start()
    moto_s3_server.reset()
    return moto_s3_server


# --- PostgreSQL: one real server per session, a fresh database per test (tests/support/postgres.py) --------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = pg_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)")
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new empty database on the session's PostgreSQL."""
    return postgres_server.fresh_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test on both stores: with ``postgresql``, ``support.inproc.serve`` puts the daemon on a fresh
    PostgreSQL database (state.url) instead of the SQLite file. Use it with
    ``pytestmark = pytest.mark.usefixtures("store_backend")``."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    url = request.getfixturevalue("postgres_server").fresh_database()
    inproc.STATE_URL = url
    try:
        yield url
    finally:
        inproc.STATE_URL = None
