"""thanos-sidecar-upload-failure, made safe: it restarts a Prometheus pod only when a restart cures the
cause and another replica of the same set is Ready, scraping and shipping (re-checked inside the
restart action), and it shows why the sidecar fails first.

End to end: the real runbook file in an in-process daemon, moto's S3, the Kubernetes API emulator
(pods, the sidecar's log, the objstore Secret's managedFields), and a real Prometheus scraping one
test exporter per Prometheus replica (so ``up{pod=...}`` is real: a stopped exporter is a replica that
does not scrape). Plus the actions directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.action_memory import DictActionMemory
from support.inproc import Daemon, alert_payload, base_config, serve
from support.kube_api import KubeApiEmulator
from support.ports import closed_port
from support.procs import base_env
from support.prom import MetricsExporter, PrometheusServer
from support.runs import Hook, states, steps_of, walk
from support.s3 import MotoS3Server
from support.safety_seed import OBJSTORE_SECRET, objstore_secret, prometheus_replica
from support.thanos_blocks import FakeThanosBucket

from daemon.actions import kubernetes, thanos
from daemon.actions.base import ActionContext, Clients, Output
from daemon.clients.kubernetes import KubeInvalid, KubernetesClient
from daemon.kits.clock import FrozenClock

REPO = Path(__file__).resolve().parent.parent
RB = "thanos-sidecar-upload-failure"
RUNBOOKS = {RB: (REPO / "runbooks" / f"{RB}.yaml").read_text()}
NS, POD, OTHER = "monitoring", "prometheus-k8s-0", "prometheus-k8s-1"
S3_SECRETS = {"s3_access_key": MotoS3Server.access_key_id, "s3_secret_key": MotoS3Server.secret_access_key}
DELETE_POD = ("DELETE", f"/api/v1/namespaces/{NS}/pods/{POD}")
ACCESS_DENIED = (
    'level=error ts=2026-12-02T04:58:01Z caller=shipper.go:380 msg="shipping failed" '
    'block=01JEXAMPLE0000000000000000 err="upload chunks: Access Denied. access_key=AKIAIOSFODNN7EXAMPLE"'
)
HOUR = 3600.0
SECRET_LABELS = {"namespace": NS, "secret": OBJSTORE_SECRET}


class Replicas:
    """One exporter per Prometheus pod, scraped with the pod's labels as target labels (as a
    ServiceMonitor does): the failing pod's upload failures keep climbing, the other pod ships."""

    def __init__(self, factory: Callable[..., MetricsExporter]) -> None:
        self.exporters = {POD: factory(), OTHER: factory()}
        self.ksm = factory()  # kube-state-metrics: the objstore Secret's resourceVersion and creation time
        self.failures = 0.0
        self._task: asyncio.Task[None] | None = None
        now = time.time()
        other = self.exporters[OTHER]
        other.set("thanos_objstore_bucket_last_successful_upload_time", now - 1800, {"bucket": "thanos"})
        other.set("thanos_shipper_uploads_total", 12, type="counter")
        other.set(
            "thanos_objstore_bucket_operation_failures_total",
            0,
            {"bucket": "thanos", "operation": "upload"},
            type="counter",
        )
        self.exporters[POD].set("thanos_shipper_uploads_total", 3, type="counter")
        self.secret_version(1000)
        self.ksm.set("kube_secret_created", now - 400 * HOUR, SECRET_LABELS)

    def secret_version(self, rv: int) -> None:
        self.ksm.set("kube_secret_metadata_resource_version", rv, SECRET_LABELS)

    def scrape_configs(self) -> list[dict[str, Any]]:
        return [
            {
                "job_name": "thanos-sidecar",
                "static_configs": [
                    {"targets": [exp.target], "labels": {"namespace": NS, "pod": pod, "cluster": "thanos-ha"}}
                    for pod, exp in self.exporters.items()
                ],
            },
            {"job_name": "kube-state-metrics", "static_configs": [{"targets": [self.ksm.target]}]},
        ]

    def tick(self) -> None:
        self.failures += 1
        self.exporters[POD].set(
            "thanos_objstore_bucket_operation_failures_total",
            self.failures,
            {"bucket": "thanos", "operation": "upload"},
            type="counter",
        )

    async def _run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(0.25)

    @contextlib.asynccontextmanager
    async def moving(self) -> AsyncIterator[Replicas]:
        self._task = asyncio.create_task(self._run(), name="replicas")
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.fixture
def replicas(exporter_factory: Callable[..., MetricsExporter]) -> Replicas:
    return Replicas(exporter_factory)


@pytest.fixture
def prom(prometheus_factory: Callable[..., PrometheusServer], replicas: Replicas) -> PrometheusServer:
    return prometheus_factory(scrape_configs=replicas.scrape_configs())


def seed(kube: KubeApiEmulator, *, other_ready: bool = True) -> None:
    """Both replicas (containers started 2h ago), the objstore Secret and the failing sidecar's log."""
    now = time.time()
    prometheus_replica(kube, POD, started_at=now - 2 * HOUR)
    prometheus_replica(kube, OTHER, node="node-197", started_at=now - 2 * HOUR, ready=other_ready)
    objstore_secret(kube, changed_at=now - 240 * HOUR, created_at=now - 400 * HOUR)
    kube.set_logs(
        NS,
        POD,
        "thanos-sidecar",
        ['level=info ts=2026-12-02T04:00:00Z msg="starting sidecar"', ACCESS_DENIED],
    )


def config(tmp_path: Path, s3: str, kube: KubeApiEmulator, prom: PrometheusServer | None) -> dict[str, Any]:
    sections: dict[str, Any] = {
        "dry_run": False,
        "s3": {"endpoint_url": s3, "retries": 0, "timeout": "5s", "connect_timeout": "2s"},
        "kubernetes": {"host": kube.url, "timeout": "5s", "retries": 1},
    }
    if prom is not None:
        sections["prometheus"] = {"url": prom.url}
    return base_config(tmp_path, **sections)


def sidecar_alert(pod: str = POD) -> dict[str, Any]:
    return alert_payload(
        "ThanosSidecarUploadFailure",
        fingerprint=f"fp-sidecar-{len(pod)}",
        namespace=NS,
        pod=pod,
        bucket="thanos",
        cluster="thanos-ha",
    )


async def start(d: Daemon, payload: dict[str, Any]) -> str:
    status, body = await d.webhook(payload)
    assert status == 200, body
    (run_id,) = body["started"]
    return str(run_id)


async def metrics_ready(prom: PrometheusServer) -> None:
    await prom.wait_for_async(f'up{{pod="{OTHER}"}} == 1')
    await prom.wait_for_async(
        f'increase(thanos_objstore_bucket_operation_failures_total{{pod="{POD}"}}[15m]) > 0'
    )
    await prom.wait_for_async("kube_secret_metadata_resource_version")


async def keys_rotated(replicas: Replicas, prom: PrometheusServer) -> None:
    """Someone updates the objstore Secret now, long after the containers started (kube-state-metrics
    sees its resourceVersion change)."""
    replicas.secret_version(1001)
    await prom.wait_for_async("changes(kube_secret_metadata_resource_version[5m]) > 0")


def clock() -> FrozenClock:
    return FrozenClock(time.time())


async def other_replica_stops_scraping(replicas: Replicas, prom: PrometheusServer) -> None:
    replicas.exporters[OTHER].stop()
    await prom.wait_for_async(f'up{{pod="{OTHER}"}} == 0')


def deletes(kube: KubeApiEmulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in kube.mutations]


def daemon(
    tmp_path: Path, s3: str, kube: KubeApiEmulator, prom: PrometheusServer | None
) -> contextlib.AbstractAsyncContextManager[Daemon]:
    """The in-process daemon with the real runbook, the S3 keys and a frozen clock."""
    return serve(
        tmp_path, RUNBOOKS, config=config(tmp_path, s3, kube, prom), secrets=S3_SECRETS, clock=clock()
    )


@dataclass
class Scene:
    """The end to end set-up: moto with the Thanos bucket, the emulator, both replicas' exporters and the
    Prometheus scraping them."""

    tmp_path: Path
    s3: MotoS3Server
    kube: KubeApiEmulator
    replicas: Replicas
    prom: PrometheusServer

    async def run(
        self,
        *,
        secret_rotated: bool,
        other_stops_scraping: bool = False,
        before: Mapping[str, Hook] | None = None,
        stop_at: str | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """With the replicas' metrics moving and seen by Prometheus (and the objstore Secret updated now if
        ``secret_rotated``), fire the alert and walk the run; returns the run and the steps approved."""
        async with self.replicas.moving():
            await metrics_ready(self.prom)
            if secret_rotated:
                await keys_rotated(self.replicas, self.prom)
            if other_stops_scraping:
                await other_replica_stops_scraping(self.replicas, self.prom)
            async with daemon(self.tmp_path, self.s3.endpoint_url, self.kube, self.prom) as d:
                return await walk(d, await start(d, sidecar_alert()), before=before, stop_at=stop_at)


@pytest.fixture
def scene(
    tmp_path: Path,
    moto_s3: MotoS3Server,
    kube_api: KubeApiEmulator,
    replicas: Replicas,
    prom: PrometheusServer,
) -> Scene:
    FakeThanosBucket(moto_s3)
    return Scene(tmp_path, moto_s3, kube_api, replicas, prom)


# -- end to end --------------------------------------------------------------------------------------------


async def test_other_replica_not_scraping_means_no_restart_and_the_report_says_why(scene: Scene) -> None:
    seed(scene.kube)
    # The Secret changed, so a restart would cure the cause: only the guard stops it.
    run, approved = await scene.run(secret_rotated=True, other_stops_scraping=True)
    assert approved == ["s3-reachable", "other-sidecars", "sidecar-logs", "diagnose", "not-restarted"]
    assert states(run)["restart"] == "skipped"
    diag = steps_of(run)["diagnose"]["output"]
    assert diag["verdict"] == "report" and diag["restart_cures"] is True
    (peer,) = diag["replicas"]["peers"]
    assert peer["pod"] == OTHER and peer["ready"] is True and peer["up"] is False
    message = steps_of(run)["not-restarted"]["output"]["message"]
    assert f"{NS}/{POD} was not restarted." in message
    assert (
        f"no other replica of Prometheus k8s is Ready, scraping and shipping ({OTHER}: not scraping"
        in message
    )
    assert deletes(scene.kube) == []


async def test_other_replica_not_ready_means_no_restart(scene: Scene) -> None:
    seed(scene.kube, other_ready=False)
    run, _ = await scene.run(secret_rotated=True)
    assert states(run)["restart"] == "skipped"
    assert f"{OTHER}: pod not Ready" in steps_of(run)["not-restarted"]["output"]["message"]
    assert deletes(scene.kube) == []


async def test_other_replica_not_shipping_for_4h_means_no_restart(scene: Scene) -> None:
    """Ready and scraping, but its last upload was 5h ago and its shipper counter is flat: with 2h local
    retention it is losing blocks itself, and must not be left alone."""
    seed(scene.kube)
    scene.replicas.exporters[OTHER].set(
        "thanos_objstore_bucket_last_successful_upload_time", time.time() - 5 * HOUR, {"bucket": "thanos"}
    )
    run, _ = await scene.run(secret_rotated=True)
    assert states(run)["restart"] == "skipped"
    (peer,) = steps_of(run)["diagnose"]["output"]["replicas"]["peers"]
    assert peer["ready"] is True and peer["up"] is True and peer["uploads_in_window"] == 0
    assert (
        f"{OTHER}: its sidecar shipped no block in the last 4h"
        in steps_of(run)["not-restarted"]["output"]["message"]
    )
    assert deletes(scene.kube) == []


@pytest.mark.parametrize(
    ("err", "cause", "said"),
    [
        ("NoSuchBucket: The specified bucket does not exist", "bucket_missing", "a restart cannot create it"),
        (
            "found overlap or error during sync, cannot upload compacted block",
            "overlap",
            "overlapping blocks",
        ),
        ("read meta.json: unexpected end of JSON input", "corrupt_block", "a block cannot be read"),
    ],
)
async def test_causes_a_restart_does_not_cure_are_reported_not_restarted(
    scene: Scene, err: str, cause: str, said: str
) -> None:
    seed(scene.kube)
    scene.kube.set_logs(NS, POD, "thanos-sidecar", [f'level=error msg="shipping failed" err="{err}"'])
    run, _ = await scene.run(secret_rotated=False)
    diag = steps_of(run)["diagnose"]["output"]
    assert (diag["cause"], diag["verdict"], diag["replicas"]["ok"]) == (cause, "report", True)
    message = steps_of(run)["not-restarted"]["output"]["message"]
    assert f"Cause: {cause} (failing operations: upload)." in message and said in message
    assert deletes(scene.kube) == []


async def test_access_denied_with_an_unchanged_secret_is_reported_not_restarted(scene: Scene) -> None:
    seed(scene.kube)
    run, _ = await scene.run(secret_rotated=False)
    out = {k: s["output"] for k, s in steps_of(run).items()}
    assert states(run)["restart"] == "skipped"
    logs = out["sidecar-logs"]
    assert logs["count"] == 2 and "Access Denied." in logs["lines"][-1]
    assert "AKIAIOSFODNN7EXAMPLE" not in str(run)  # redacted everywhere it is shown
    diag = out["diagnose"]
    assert diag["cause"] == "credentials" and diag["verdict"] == "report"
    assert diag["failing_operations"] == ["upload"]
    assert diag["secret_changed_after_start"] is False
    assert diag["secrets"][0]["secret"] == "thanos-objstore-config"
    assert diag["replicas"]["ok"] is True  # the other replica is fine: the cause alone stops the restart
    message = out["not-restarted"]["message"]
    assert "Cause: credentials (failing operations: upload)." in message
    assert "the keys themselves (or the bucket policy) are wrong" in message
    assert deletes(scene.kube) == []


async def test_access_denied_after_the_secret_changed_restarts_the_pod(scene: Scene) -> None:
    seed(scene.kube)
    run, approved = await scene.run(secret_rotated=True, stop_at="verify")
    assert approved == ["s3-reachable", "other-sidecars", "sidecar-logs", "diagnose", "restart"]
    diag = steps_of(run)["diagnose"]["output"]
    assert diag["cause"] == "credentials" and diag["secret_changed_after_start"] is True
    assert diag["verdict"] == "restart"
    restart = steps_of(run)["restart"]["output"]
    assert restart["owner"] == {"kind": "StatefulSet", "name": "prometheus-k8s"}
    assert restart["replicas"]["peers"][0]["healthy"] is True
    assert deletes(scene.kube) == [DELETE_POD]


async def test_the_restart_action_rechecks_the_other_replica_right_before_deleting(scene: Scene) -> None:
    """Healthy at the diagnosis, down by the time the restart is approved: nothing is deleted."""
    seed(scene.kube)
    run, _ = await scene.run(
        secret_rotated=True,
        before={"restart": lambda: other_replica_stops_scraping(scene.replicas, scene.prom)},
    )
    assert steps_of(run)["diagnose"]["output"]["verdict"] == "restart"
    assert states(run)["restart"] == "failed"
    message = steps_of(run)["not-restarted"]["output"]["message"]
    assert f"The restart was refused: refusing to restart {NS}/{POD}: no other replica" in message
    assert "Nothing was deleted." in message
    assert deletes(scene.kube) == []


async def test_s3_down_means_no_restart(tmp_path: Path, kube_api: KubeApiEmulator) -> None:
    seed(kube_api)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    async with daemon(tmp_path, endpoint, kube_api, None) as d:
        run, _ = await walk(d, await start(d, sidecar_alert()))
    assert states(run)["s3-reachable"] == "failed" and states(run)["restart"] == "skipped"
    message = steps_of(run)["not-restarted"]["output"]["message"]
    assert "S3 bucket thanos is not reachable from runbookd either (unreachable:" in message
    # No Prometheus configured: the diagnosis cannot check the other replica and refuses to vouch for it.
    assert steps_of(run)["diagnose"]["state"] == "failed"
    assert "could not\ntell" in message or "could not tell" in message
    assert deletes(kube_api) == []


async def test_hostile_pod_label_is_refused_before_any_request(
    tmp_path: Path, moto_s3: MotoS3Server, kube_api: KubeApiEmulator
) -> None:
    FakeThanosBucket(moto_s3)
    hostile = 'x"} or vector(1) or up{pod="'
    async with daemon(tmp_path, moto_s3.endpoint_url, kube_api, None) as d:
        run, _ = await walk(d, await start(d, sidecar_alert(pod=hostile)))
    for step in ("sidecar-logs", "diagnose"):
        assert steps_of(run)[step]["state"] == "failed"
        assert "is not a valid DNS-1123 subdomain" in steps_of(run)[step]["error"]
    assert states(run)["restart"] == "skipped"
    assert kube_api.requests == []


# -- the actions directly ----------------------------------------------------------------------------------


def ctx_with(kube_client: KubernetesClient, prom_client: Any, *, dry_run: bool = False) -> ActionContext:
    return ActionContext(
        run_id="run-1",
        step_id="restart",
        runbook=RB,
        dry_run=dry_run,
        clients=Clients(kubernetes=kube_client, prometheus=prom_client),
        memory=DictActionMemory(),
    )


async def run_action(name: str, ctx: ActionContext, **params: Any) -> Output:
    act = {a.name: a for a in [*thanos.ACTIONS, *kubernetes.ACTIONS]}[name]
    return await act.run(ctx, act.params.model_validate(params))


async def sidecar_logs(ctx: ActionContext, **params: Any) -> Output:
    """``kubernetes.pod_logs`` of the failing pod's thanos-sidecar container."""
    return await run_action(
        "kubernetes.pod_logs", ctx, namespace=NS, pod=POD, container="thanos-sidecar", **params
    )


async def test_restart_refuses_the_only_replica_of_a_set(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient
) -> None:
    prometheus_replica(kube_api, POD, started_at=time.time() - HOUR)
    out = await run_action(
        "thanos.restart_prometheus_replica",
        ctx_with(kube_client, None),
        namespace=NS,
        pod=POD,
        bucket="thanos",
    )
    assert out["ok"] is False and out["refused"] is True
    assert "is the only replica of Prometheus k8s: restarting it blinds the cluster" in out["message"]
    assert kube_api.mutations == []


async def test_pod_logs_are_bounded_and_redacted(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient
) -> None:
    prometheus_replica(kube_api, POD, started_at=time.time() - HOUR)
    lines = [(7200.0, "old line, outside since")] + [
        (10.0, f"line {i} secret_key=hunter{i}") for i in range(50)
    ]
    kube_api.set_logs(NS, POD, "thanos-sidecar", [*lines, (1.0, "x" * 5000)])
    ctx = ctx_with(kube_client, None)
    out = await sidecar_logs(ctx, tail_lines=30, since="1h", max_lines=10)
    assert out["count"] == 10 and out["truncated"] is True
    assert out["lines"][0] == "line 41 secret_key=[REDACTED]"
    assert out["lines"][-1].endswith(" [...cut]") and len(out["lines"][-1]) < 1100
    assert "hunter" not in str(out) and "old line" not in str(out)
    (req,) = [r for r in kube_api.requests if r.path.endswith("/log")]
    assert req.query == {
        "container": "thanos-sidecar",
        "tailLines": "30",
        "sinceSeconds": "3600",
        "limitBytes": "32768",
    }
    # limitBytes: a short limit cuts the log and the partial last line is dropped.
    out = await sidecar_logs(ctx, max_bytes=1024, tail_lines=2000)
    assert out["truncated"] is True and out["bytes_read"] <= 1024
    assert all(line.startswith(("old line", "line ")) for line in out["lines"])


async def test_pod_logs_needs_the_container_of_a_multi_container_pod(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient
) -> None:
    prometheus_replica(kube_api, POD, started_at=time.time() - HOUR)
    with pytest.raises(KubeInvalid, match="a container name must be specified"):
        await run_action("kubernetes.pod_logs", ctx_with(kube_client, None), namespace=NS, pod=POD)


# -- runbookd plan on the example payload ------------------------------------------------------------------


async def test_plan_shows_the_guard_steps_for_the_example_payload(
    tmp_path: Path, kube_api: KubeApiEmulator
) -> None:
    cfg = {
        "state": {"path": str(tmp_path / "never-created.db")},
        "runbooks": {"paths": [str(REPO / "runbooks")]},
        "prometheus": {"url": f"http://127.0.0.1:{closed_port()}"},
        "kubernetes": {"host": kube_api.url},
        "auth": {
            "webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"},
            "tokens": [{"name": "admin", "role": "admin", "secret": {"env": "RUNBOOKD_ADMIN_TOKEN"}}],
        },
        "approvers": {"sre": ["admin"]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**base_env(), "RUNBOOKD_WEBHOOK_TOKEN": "w", "RUNBOOKD_ADMIN_TOKEN": "a"}
    argv = [str(Path(sys.executable).parent / "runbookd"), "plan", "--config", str(tmp_path / "config.yaml")]
    argv += ["--alert", str(REPO / "docs" / "examples" / "sidecar-upload-failure.json"), "--output", "json"]
    res = await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    (run,) = json.loads(res.stdout)["runs"]
    steps = {s["id"]: s for s in run["steps"]}
    assert list(steps) == [
        "s3-reachable",
        "other-sidecars",
        "sidecar-logs",
        "diagnose",
        "restart",
        "verify",
        "not-restarted",
    ]
    assert [s["id"] for s in run["steps"] if s["mutating"]] == ["restart"]
    assert steps["sidecar-logs"]["plan"]["container"] == "thanos-sidecar"
    assert steps["diagnose"]["plan"]["ship_window"] == "4h" and steps["diagnose"]["plan"]["pod"] == POD
    assert steps["restart"]["action"] == "thanos.restart_prometheus_replica"
    assert "steps.diagnose.output.verdict == 'restart'" in steps["restart"]["when"]
    assert kube_api.requests == []


async def test_pod_logs_reads_a_large_log_up_to_its_byte_limit(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient
) -> None:
    """A log larger than one network chunk is read whole up to max_bytes, not just its first chunk."""
    prometheus_replica(kube_api, POD, started_at=time.time() - HOUR)
    lines = [f"{i:05d} " + "x" * 94 for i in range(3000)]  # 101 bytes a line with its newline
    kube_api.set_logs(NS, POD, "thanos-sidecar", lines)
    out = await sidecar_logs(ctx_with(kube_client, None), tail_lines=2000, max_bytes=256 * 1024)
    assert out["bytes_read"] == 2000 * 101
    assert out["lines"][-1] == lines[-1] and out["count"] == 100 and out["truncated"] is True
