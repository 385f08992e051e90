"""The test infrastructure in tests/support works against the real programs."""

from __future__ import annotations

import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from aiobotocore.session import get_session
from support import httpclient
from support.am import AlertmanagerServer, webhook_config
from support.ports import free_port, free_ports, is_listening
from support.procs import ManagedProcess, ProcessStartError
from support.prom import MetricsExporter, PrometheusServer, values
from support.runbookd import RunbookdProcess
from support.s3 import MotoS3Server


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert not any(is_listening(p) for p in ports)


def test_prometheus_scrapes_exporter_and_sees_it_go_down_and_up(
    prometheus_factory: Callable[..., PrometheusServer], test_exporter: MetricsExporter
) -> None:
    test_exporter.set("smoke_value", 42, {"kind": "a"})
    prom = prometheus_factory(targets=[test_exporter.target])

    prom.wait_for('up{job="test"}', lambda r: values(r) == [1.0], timeout=20)
    res = prom.wait_for("smoke_value", lambda r: values(r) == [42.0])
    assert res[0]["metric"]["kind"] == "a"
    assert res[0]["metric"]["instance"] == test_exporter.target

    test_exporter.set("smoke_value", 43, {"kind": "a"})
    prom.wait_for("smoke_value", lambda r: values(r) == [43.0], timeout=10)
    assert test_exporter.scrapes >= 2

    test_exporter.stop()
    assert not is_listening(test_exporter.port)
    prom.wait_for('up{job="test"}', lambda r: values(r) == [0.0], timeout=10)
    # the stale series disappears from instant queries once the target is down
    prom.wait_for("smoke_value", lambda r: r == [], timeout=10)

    test_exporter.start()  # same port again
    prom.wait_for('up{job="test"}', lambda r: values(r) == [1.0], timeout=10)


def test_prometheus_rule_fires_into_alertmanager(
    prometheus_factory: Callable[..., PrometheusServer],
    alertmanager_factory: Callable[..., AlertmanagerServer],
) -> None:
    am = alertmanager_factory()
    rule = {
        "groups": [
            {
                "name": "smoke",
                "rules": [
                    {
                        "alert": "SmokeAlwaysFiring",
                        "expr": "vector(1) > 0",
                        "labels": {"severity": "test"},
                        "annotations": {"summary": "always"},
                    }
                ],
            }
        ]
    }
    prom = prometheus_factory(rules={"smoke.yml": rule}, alertmanagers=[am.url])
    assert prom.wait_for_alert("SmokeAlwaysFiring", "firing", timeout=10)["labels"]["severity"] == "test"

    got = am.wait_for_alerts(filter=['alertname="SmokeAlwaysFiring"'], timeout=30)
    assert got[0]["labels"]["severity"] == "test"
    assert got[0]["annotations"]["summary"] == "always"
    assert got[0]["generatorURL"].startswith(prom.url)


async def test_prometheus_async_helpers_keep_the_loop_free(
    prometheus_factory: Callable[..., PrometheusServer],
) -> None:
    prom = prometheus_factory()
    res = await prom.wait_for_async("vector(7)", lambda r: values(r) == [7.0], timeout=5)
    assert values(res) == [7.0]
    assert values(await prom.query_async("1 + 1")) == [2.0]


def test_alertmanager_accepts_and_lists_an_alert(
    alertmanager_factory: Callable[..., AlertmanagerServer],
) -> None:
    am = alertmanager_factory()
    name = f"Smoke{uuid.uuid4().hex[:8]}"
    am.fire({"alertname": name, "instance": "node-1"}, {"summary": "hello"})

    alerts = am.wait_for_alerts(filter=[f'alertname="{name}"'], timeout=10)
    assert len(alerts) == 1
    a = alerts[0]
    assert a["labels"] == {"alertname": name, "instance": "node-1"}
    assert a["annotations"] == {"summary": "hello"}
    assert a["status"]["state"] == "active"
    assert a["fingerprint"]

    am.resolve({"alertname": name, "instance": "node-1"})
    am.wait_for_alerts(lambda got: got == [], filter=[f'alertname="{name}"'], timeout=10)


def test_alertmanager_silence_is_listed_and_silences(
    alertmanager_factory: Callable[..., AlertmanagerServer],
) -> None:
    am = alertmanager_factory()
    labels = {"alertname": "SmokeSilenced", "instance": "node-2"}
    am.fire(labels)
    sid = am.create_silence({"alertname": "SmokeSilenced"}, comment="smoke test")

    listed = {s["id"]: s for s in am.silences()}
    assert sid in listed
    assert listed[sid]["status"]["state"] == "active"
    assert listed[sid]["comment"] == "smoke test"
    assert listed[sid]["matchers"] == [
        {"name": "alertname", "value": "SmokeSilenced", "isRegex": False, "isEqual": True}
    ]
    got = am.wait_for_alerts(
        lambda a: bool(a) and a[0]["status"]["state"] == "suppressed",
        filter=['alertname="SmokeSilenced"'],
        timeout=10,
    )
    assert got[0]["status"]["silencedBy"] == [sid]

    am.expire_silence(sid)
    assert am.silence(sid)["status"]["state"] == "expired"


def test_alertmanager_webhook_config_is_accepted(
    alertmanager_factory: Callable[..., AlertmanagerServer],
) -> None:
    am = alertmanager_factory(webhook_config(f"http://127.0.0.1:{free_port()}/hook", bearer_token="t0ken"))
    status = am.status()
    assert "t0ken" not in status["config"]["original"]  # secrets are masked by Alertmanager
    assert "/hook" in status["config"]["original"]
    assert status["cluster"]["status"] == "disabled"


async def test_moto_s3_with_aiobotocore_path_style(moto_s3: MotoS3Server) -> None:
    async with get_session().create_client("s3", **moto_s3.client_kwargs()) as s3:
        await s3.create_bucket(Bucket="smoke-bucket")
        await s3.put_object(Bucket="smoke-bucket", Key="a/b.txt", Body=b"hello")
        names = [b["Name"] for b in (await s3.list_buckets())["Buckets"]]
        assert names == ["smoke-bucket"]
        obj = await s3.get_object(Bucket="smoke-bucket", Key="a/b.txt")
        async with obj["Body"] as body:
            assert await body.read() == b"hello"
        # path-style: the bucket is in the path, not the host name
        assert obj["ResponseMetadata"]["HTTPStatusCode"] == 200

    moto_s3.reset()
    async with get_session().create_client("s3", **moto_s3.client_kwargs()) as s3:
        assert (await s3.list_buckets())["Buckets"] == []


def test_moto_path_style_over_plain_http(moto_s3: MotoS3Server) -> None:
    assert httpclient.request("PUT", moto_s3.endpoint_url + "/plain-bucket").status == 200
    listing = httpclient.get(moto_s3.endpoint_url + "/")
    assert b"<Name>plain-bucket</Name>" in listing.body


def test_moto_is_empty_for_each_test(moto_s3: MotoS3Server) -> None:
    # the previous test created plain-bucket; the fixture reset it
    assert b"<Name>" not in httpclient.get(moto_s3.endpoint_url + "/").body


STUB_RUNBOOKD = textwrap.dedent(
    """
    import argparse, json, os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    p = argparse.ArgumentParser()
    p.add_argument("cmd")
    p.add_argument("--config")
    p.add_argument("--state")
    p.add_argument("--listen")
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    with open(a.state, "a") as f:
        f.write("started\\n")

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({
                "argv": sys.argv[1:],
                "token": os.environ.get("RUNBOOKD_WEBHOOK_TOKEN"),
                "extra": os.environ.get("SMOKE_EXTRA"),
                "auth": self.headers.get("Authorization"),
                "starts": open(a.state).read().count("started"),
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass

    print("stub runbookd serving", a.listen, flush=True)
    ThreadingHTTPServer((host, int(port)), H).serve_forever()
    """
)


def test_runbookd_helper_lifecycle_with_a_stub_daemon(
    runbookd_factory: Callable[..., RunbookdProcess], tmp_path: Path
) -> None:
    """The real daemon is written elsewhere; prove the helper's contract handling with a stand-in."""
    stub = tmp_path / "stub_runbookd.py"
    stub.write_text(STUB_RUNBOOKD)
    rb = runbookd_factory(
        {"server": {"listen": "0.0.0.0:8080"}},
        env={"SMOKE_EXTRA": "yes"},
        executable=[sys.executable, str(stub)],
    )
    info = rb.get("/healthz").json()
    assert info["argv"] == [
        "serve",
        "--config",
        str(rb.config_path),
        "--state",
        str(rb.state_path),
        "--listen",
        rb.address,
    ]
    assert rb.config_path.read_text().startswith("server:")
    assert info["token"] == rb.webhook_token
    assert info["extra"] == "yes"
    assert info["auth"] == f"Bearer {rb.admin_token}"
    assert "stub runbookd serving" in rb.log_text()

    pid = rb.pid
    assert rb.kill9() == -9
    assert not is_listening(rb.port)
    rb.start()  # crash recovery: same port, same state file
    assert rb.pid != pid
    assert rb.get("/healthz").json()["starts"] == 2

    rb.restart()
    assert rb.get("/healthz").json()["starts"] == 3
    assert rb.stop() == -15
    assert rb.log_text().count("stub runbookd serving") == 3


def test_process_that_dies_at_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "dies",
        [sys.executable, "-c", "import sys; print('boom: bad config', flush=True); sys.exit(3)"],
        log_path=tmp_path / "dies.log",
        ready_url=f"http://127.0.0.1:{free_port()}/",
        ready_timeout=20,
    )
    t0 = time.monotonic()
    with pytest.raises(ProcessStartError, match=r"(?s)exited with 3.*boom: bad config"):
        proc.start()
    assert time.monotonic() - t0 < 5
    assert not proc.running


def test_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "stubborn",
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ign' + 'oring', flush=True); "
            "time.sleep(60)",
        ],
        log_path=tmp_path / "stubborn.log",
        stop_grace=0.5,
    )
    proc.start()
    deadline = time.monotonic() + 5
    while "ignoring" not in proc.log_text().splitlines() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.stop() == -9
    assert not proc.running
