"""The shipped thanos-sidecar-upload-failure, s3-connectivity-loss and thanos-retention runbooks, end to end.

Each test loads the real files from runbooks/ into an in-process daemon (dry_run off unless said) talking
to moto's S3 server (or a closed port, for an S3 that is down), the Kubernetes API emulator, a real
Prometheus scraping a test exporter that plays the Thanos pods' metrics, and a real Alertmanager. Runs
start from an Alertmanager webhook payload (or the schedule) and are walked with approvals through the
HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from support.am import AlertmanagerServer
from support.inproc import Daemon, alert_payload, base_config, serve
from support.kube_api import KubeApiEmulator
from support.minio_health import FakeMinio
from support.ports import closed_port
from support.prom import MetricsExporter, PrometheusServer
from support.prometheus_crs import add_prometheus, volume_metrics
from support.runs import states, steps_of, walk
from support.s3 import MotoS3Server
from support.thanos_blocks import DAY_MS, SIDECAR_A, SIDECAR_B, FakeThanosBucket

from daemon.kits.clock import FrozenClock

REPO = Path(__file__).resolve().parent.parent
SIDECAR_RB, S3_RB, RETENTION_RB = "thanos-sidecar-upload-failure", "s3-connectivity-loss", "thanos-retention"
RUNBOOKS = {n: (REPO / "runbooks" / f"{n}.yaml").read_text() for n in (SIDECAR_RB, S3_RB, RETENTION_RB)}
NS, POD, OTHER = "monitoring", "prometheus-k8s-0", "prometheus-k8s-1"
S3_SECRETS = {"s3_access_key": MotoS3Server.access_key_id, "s3_secret_key": MotoS3Server.secret_access_key}
FAILURES = "thanos_objstore_bucket_operation_failures_total"
OPERATIONS = "thanos_objstore_bucket_operations_total"
UPLOADS = "thanos_shipper_uploads_total"


def config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """base_config with dry_run off and the given sections (s3=endpoint URL is expanded)."""
    if isinstance(sections.get("s3"), str):
        sections["s3"] = {
            "endpoint_url": sections["s3"],
            "retries": 0,
            "timeout": "5s",
            "connect_timeout": "2s",
        }
    return base_config(tmp_path, **{"dry_run": False, **sections})


def s3_down() -> str:
    return f"http://127.0.0.1:{closed_port()}"


async def start(d: Daemon, payload: dict[str, Any]) -> str:
    status, body = await d.webhook(payload)
    assert status == 200, body
    (run_id,) = body["started"]
    return str(run_id)


class ThanosPods:
    """Counters of Thanos pods as their /metrics show them, kept moving by a background task so that
    rate() and increase() see traffic: ``calls[pod] = (operation, failing)`` per tick."""

    def __init__(self, exporter: MetricsExporter, bucket: str = "thanos") -> None:
        self.exporter = exporter
        self.bucket = bucket
        self.calls: dict[str, list[tuple[str, bool]]] = {}
        self.totals: dict[tuple[str, str, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    def labels(self, pod: str, operation: str | None = None) -> dict[str, str]:
        out = {"namespace": NS, "pod": pod, "bucket": self.bucket, "cluster": "thanos-ha"}
        return out | ({"operation": operation} if operation else {})

    def tick(self) -> None:
        for pod, calls in self.calls.items():
            for operation, failing in calls:
                for name, inc in ((OPERATIONS, 1.0), (FAILURES, 1.0 if failing else 0.0)):
                    key = (name, pod, operation)
                    self.totals[key] = self.totals.get(key, 0.0) + inc
                    self.exporter.set(name, self.totals[key], self.labels(pod, operation), type="counter")

    def uploads(self, pod: str, value: float) -> None:
        labels = {"namespace": NS, "pod": pod, "cluster": "thanos-ha"}
        self.exporter.set(UPLOADS, value, labels, type="counter")

    async def _run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(0.25)

    @contextlib.asynccontextmanager
    async def moving(self) -> AsyncIterator[ThanosPods]:
        self._task = asyncio.create_task(self._run(), name="thanos-pods")
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.fixture
def pods(exporter_factory: Callable[..., MetricsExporter]) -> ThanosPods:
    return ThanosPods(exporter_factory())


@pytest.fixture
def sidecar_prometheus(
    prometheus_factory: Callable[..., PrometheusServer], pods: ThanosPods
) -> Callable[[], PrometheusServer]:
    """A Prometheus scraping the pods' exporter as job thanos-sidecar (the rules' and runbooks' job)."""
    return lambda: prometheus_factory(targets=[pods.exporter.target], job_name="thanos-sidecar")


def prometheus_pod(kube: KubeApiEmulator, name: str = POD) -> None:
    kube.add_workload("StatefulSet", "prometheus-k8s", NS)
    kube.add_pod(name, NS, node="node-196", owner=("StatefulSet", "prometheus-k8s"))


def sidecar_alert(pod: str = POD, **labels: str) -> dict[str, Any]:
    return alert_payload(
        "ThanosSidecarUploadFailure",
        fingerprint=f"fp-sidecar-{len(pod)}",
        **{"namespace": NS, "pod": pod, "bucket": "thanos", "cluster": "thanos-ha", **labels},
    )


def s3_alert(pod: str = POD, bucket: str = "thanos") -> dict[str, Any]:
    return alert_payload(
        "S3ConnectivityLoss",
        severity="critical",
        fingerprint=f"fp-s3-{len(pod)}",
        namespace=NS,
        pod=pod,
        bucket=bucket,
        cluster="thanos-ha",
    )


DELETE_POD = ("DELETE", f"/api/v1/namespaces/{NS}/pods/{POD}")


# thanos-sidecar-upload-failure: tests/test_sidecar_safety.py (the replica guard, the diagnosis).


# -- s3-connectivity-loss ----------------------------------------------------------------------------------


S3_STEPS = ["probe", "minio", "failing-operations", "bucket-pods"]


async def test_s3_down_everywhere_silences_the_upload_alert_and_reports(
    tmp_path: Path,
    pods: ThanosPods,
    sidecar_prometheus: Callable[[], PrometheusServer],
    alertmanager_factory: Callable[..., AlertmanagerServer],
) -> None:
    pods.calls = {
        POD: [("upload", True), ("iter", True)],
        "thanos-store-0": [("get_range", True)],
    }
    prom = sidecar_prometheus()
    am = alertmanager_factory()
    async with pods.moving():
        await prom.wait_for_async(f'rate({FAILURES}{{pod="thanos-store-0"}}[5m]) > 0')
        cfg = config(tmp_path, s3=s3_down(), prometheus={"url": prom.url}, alertmanager={"url": am.url})
        clock = FrozenClock(time.time())  # the silence starts now in Alertmanager's eyes
        async with serve(tmp_path, RUNBOOKS, config=cfg, secrets=S3_SECRETS, clock=clock) as d:
            run_id = await start(d, s3_alert())
            run, approved = await walk(d, run_id)
    assert approved == [*S3_STEPS, "protect-blocks", "silence-upload-failure", "report"]
    assert states(run)["protect-blocks"] == "failed"  # no kubernetes section: the report says so
    out = {k: s["output"] for k, s in steps_of(run).items()}
    assert out["probe"]["ok"] is False and out["probe"]["error"]["kind"] == "unreachable"
    assert out["minio"]["down"] is True
    assert {r["labels"]["operation"]: r["value"] for r in out["failing-operations"]["result"]} == {
        "upload": 1.0,
        "iter": 1.0,
    }
    assert sorted(r["labels"]["pod"] for r in out["bucket-pods"]["result"]) == [POD, "thanos-store-0"]

    # The silence is of this bucket and this cluster only (MinIO is shared by all clusters), and the
    # run's end lifted it: upload failures after the outage must alert again (audit: it used to stay
    # for silence_for, 2h, after the run ended).
    (silence,) = [s for s in am.silences() if s["id"] == out["silence-upload-failure"]["silence_id"]]
    assert sorted((m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in silence["matchers"]) == [
        ("alertname", "ThanosSidecarUploadFailure", False, True),
        ("bucket", "thanos", False, True),
        ("cluster", "thanos\\-ha|", True, True),
    ]
    assert run["state"] not in ("undoing", "needs_attention"), run["state"]
    assert steps_of(run)["silence-upload-failure"]["undo"]["state"] == "succeeded"
    assert silence["status"]["state"] == "expired"
    assert not [s for s in am.silences() if s["status"]["state"] == "active"]
    message = out["report"]["message"]
    assert "2 Thanos pod(s) cannot reach bucket thanos (" in message and "; 0 still succeed." in message
    assert f"{NS}/{POD}" in message and f"{NS}/thanos-store-0" in message
    assert "iter 100%" in message and "upload 100%" in message
    assert "the bucket does NOT answer (unreachable:" in message
    assert "MinIO does not answer its liveness check" in message
    assert "Verdict: S3 itself is down or unreachable." in message
    assert f"silenced for 2h (silence {silence['id']})" in message
    assert "Retention was NOT raised" in message


async def test_s3_reachable_and_other_pods_fine_means_only_this_pod(
    tmp_path: Path,
    moto_s3: MotoS3Server,
    pods: ThanosPods,
    sidecar_prometheus: Callable[[], PrometheusServer],
    alertmanager_factory: Callable[..., AlertmanagerServer],
) -> None:
    FakeThanosBucket(moto_s3)
    pods.calls = {POD: [("upload", True)], OTHER: [("upload", False)], "thanos-store-0": [("get", False)]}
    prom = sidecar_prometheus()
    am = alertmanager_factory()
    async with pods.moving():
        await prom.wait_for_async(f'rate({OPERATIONS}{{pod="thanos-store-0"}}[5m]) > 0')
        await prom.wait_for_async(f'rate({FAILURES}{{pod="{POD}"}}[5m]) > 0')
        cfg = config(
            tmp_path, s3=moto_s3.endpoint_url, prometheus={"url": prom.url}, alertmanager={"url": am.url}
        )
        async with serve(tmp_path, RUNBOOKS, config=cfg, secrets=S3_SECRETS) as d:
            run_id = await start(d, s3_alert())
            run, approved = await walk(d, run_id)
    assert run["state"] == "succeeded", run
    assert approved == [*S3_STEPS, "report"]
    assert states(run)["silence-upload-failure"] == "skipped"
    assert states(run)["protect-blocks"] == "skipped"  # S3 answers: nothing to protect, no restart
    assert am.silences() == []
    message = steps_of(run)["report"]["output"]["message"]
    assert "From runbookd: the bucket answers (" in message
    assert f"1 Thanos pod(s) cannot reach bucket thanos ({NS}/{POD}); 2 still succeed." in message
    assert "no MinIO healthcheck API (404)" in message  # moto is not MinIO
    assert f"Verdict: only {NS}/{POD} fails." in message
    assert "Retention was not changed" in message


async def test_two_failing_pods_against_one_dead_minio_make_one_run_that_protects_the_blocks(
    tmp_path: Path,
    moto_s3: MotoS3Server,
    kube_api: KubeApiEmulator,
    pods: ThanosPods,
    sidecar_prometheus: Callable[[], PrometheusServer],
    alertmanager_factory: Callable[..., AlertmanagerServer],
) -> None:
    """MinIO lost write quorum: both Prometheus replicas' sidecars alert. One run for the bucket; the
    second alert attaches to it. Approved, retention goes from 2h to 24h on the Prometheus resource
    behind them (its volumes have room), and the plan said the pods restart one by one."""
    add_prometheus(kube_api, "k8s", NS, retention="2h")
    volume_metrics(pods.exporter, "k8s", NS, available=40 * 2**30, used=2 * 2**30)
    pods.calls = {POD: [("upload", True)], OTHER: [("upload", True)]}
    prom = sidecar_prometheus()
    am = alertmanager_factory()
    minio = await FakeMinio("no_write_quorum", backend=moto_s3.endpoint_url).start()
    try:
        async with pods.moving():
            await prom.wait_for_async(f'rate({FAILURES}{{pod="{OTHER}"}}[5m]) > 0')
            await prom.wait_for_async("kubelet_volume_stats_available_bytes")
            cfg = config(
                tmp_path,
                s3=minio.url,
                prometheus={"url": prom.url},
                alertmanager={"url": am.url},
                kubernetes={"host": kube_api.url},
            )
            clock = FrozenClock(time.time())
            async with serve(tmp_path, RUNBOOKS, config=cfg, secrets=S3_SECRETS, clock=clock) as d:
                run_id = await start(d, s3_alert(POD))
                status, second = await d.webhook(s3_alert(OTHER))
                assert status == 200 and second["started"] == [] and second["attached"] == [run_id]
                run, _ = await walk(d, run_id, stop_at="protect-blocks")
                plan = steps_of(run)["protect-blocks"]
                assert "RESTARTS THE PROMETHEUS PODS ONE BY ONE" in plan["description"]
                assert sorted(plan["plan"]["pods"]) == [POD, OTHER]
                run, _ = await walk(d, run_id)
                status, body = await d.call("GET", "/api/v1/runs")
    finally:
        await minio.stop()
    assert [r["id"] for r in body["runs"] if r["runbook"] == S3_RB] == [run_id]
    assert run["target"] == "thanos"
    assert states(run)["protect-blocks"] == "succeeded", steps_of(run)["protect-blocks"]
    out = steps_of(run)["protect-blocks"]["output"]
    assert out["restore"][0]["retention"] == "2h" and out["restore"][0]["expect_retention"] == "24h"
    assert kube_api.get("Prometheus", "k8s", NS)["spec"]["retention"] == "24h"
    assert steps_of(run)["minio"]["output"]["write_quorum"] is False
    message = steps_of(run)["report"]["output"]["message"]
    assert "the MinIO cluster has no write quorum" in message
    assert "retention raised: k8s 2h -> 24h" in message


async def test_the_silence_is_lifted_when_the_run_ends_while_the_retention_restore_waits(
    tmp_path: Path,
    kube_api: KubeApiEmulator,
    pods: ThanosPods,
    sidecar_prometheus: Callable[[], PrometheusServer],
    alertmanager_factory: Callable[..., AlertmanagerServer],
) -> None:
    """Both mutating steps ran; the run ends while S3 is still down. The retention restore waits for the
    backlog to ship (days, possibly); the silence's undo must not wait behind it: upload failures after
    the run must alert again. (Undos run latest step first: the silence used to come first, so its undo
    waited for the restore.)"""
    add_prometheus(kube_api, "k8s", NS, retention="2h")
    volume_metrics(pods.exporter, "k8s", NS, available=40 * 2**30, used=2 * 2**30)
    pods.calls = {POD: [("upload", True)]}
    prom = sidecar_prometheus()
    am = alertmanager_factory()
    async with pods.moving():
        await prom.wait_for_async(f'rate({FAILURES}{{pod="{POD}"}}[5m]) > 0')
        await prom.wait_for_async("kubelet_volume_stats_available_bytes")
        cfg = config(
            tmp_path,
            s3=s3_down(),
            prometheus={"url": prom.url},
            alertmanager={"url": am.url},
            kubernetes={"host": kube_api.url},
        )
        clock = FrozenClock(time.time())
        async with serve(tmp_path, RUNBOOKS, config=cfg, secrets=S3_SECRETS, clock=clock) as d:
            run_id = await start(d, s3_alert())
            run, approved = await walk(d, run_id, timeout=30)
    assert run["state"] == "undoing", run["state"]
    silence_id = steps_of(run)["silence-upload-failure"]["output"]["silence_id"]
    (silence,) = [s for s in am.silences() if s["id"] == silence_id]
    assert silence["status"]["state"] == "expired"
    undo = {k: (s.get("undo") or {}).get("state") for k, s in steps_of(run).items()}
    assert undo["silence-upload-failure"] == "succeeded"
    assert undo["protect-blocks"] == "waiting"  # the bucket cannot be read: nothing has shipped
    assert kube_api.get("Prometheus", "k8s", NS)["spec"]["retention"] == "24h"
    assert approved == [*S3_STEPS, "protect-blocks", "silence-upload-failure", "report"]


async def test_retention_not_raised_without_room_and_the_report_says_so(
    tmp_path: Path,
    kube_api: KubeApiEmulator,
    pods: ThanosPods,
    sidecar_prometheus: Callable[[], PrometheusServer],
) -> None:
    add_prometheus(kube_api, "k8s", NS, retention="2h")
    volume_metrics(pods.exporter, "k8s", NS, available=2**30, used=2 * 2**30)
    pods.calls = {POD: [("upload", True)]}
    prom = sidecar_prometheus()
    async with pods.moving():
        await prom.wait_for_async(f'rate({FAILURES}{{pod="{POD}"}}[5m]) > 0')
        await prom.wait_for_async("kubelet_volume_stats_available_bytes")
        cfg = config(tmp_path, s3=s3_down(), prometheus={"url": prom.url}, kubernetes={"host": kube_api.url})
        async with serve(tmp_path, RUNBOOKS, config=cfg, secrets=S3_SECRETS) as d:
            run_id = await start(d, s3_alert())
            run, _ = await walk(d, run_id)
    protect = steps_of(run)["protect-blocks"]
    assert protect["state"] == "failed" and "has 1Gi free but needs 33Gi" in protect["error"]
    assert kube_api.mutations == []
    assert "Retention was NOT raised" in steps_of(run)["report"]["output"]["message"]


@pytest.mark.parametrize("bucket", ["../../etc", "Thanos", 'thanos"}) or vector(1'])
async def test_s3_hostile_bucket_label_is_refused_and_escaped(
    tmp_path: Path, moto_s3: MotoS3Server, bucket: str
) -> None:
    """The probe refuses the bucket before any request; the queries still run, with the label escaped."""
    cfg = config(tmp_path, s3=moto_s3.endpoint_url)
    async with serve(tmp_path, RUNBOOKS, config=cfg, secrets=S3_SECRETS) as d:
        run_id = await start(d, s3_alert(bucket=bucket))
        run, _ = await walk(d, run_id)
    probe = steps_of(run)["probe"]
    assert probe["state"] == "failed" and "not a valid S3 bucket name" in probe["error"]
    assert not probe["output"]
    assert states(run)["silence-upload-failure"] == "skipped"  # nothing says S3 is down
    assert "the bucket could not be probed" in steps_of(run)["report"]["output"]["message"]
    escaped = bucket.replace("\\", "\\\\").replace('"', '\\"')
    assert f'bucket="{escaped}"' in steps_of(run)["failing-operations"]["plan"]["query"]


# -- thanos-retention --------------------------------------------------------------------------------------


def next_fire(after: float) -> float:
    """The next 04:30 UTC (the runbook's schedule) after ``after``."""
    t = dt.datetime.fromtimestamp(after, dt.UTC).replace(hour=4, minute=30, second=0, microsecond=0)
    if t.timestamp() <= after:
        t += dt.timedelta(days=1)
    return t.timestamp()


def retention_bucket(moto: MotoS3Server, fire: float) -> dict[str, list[str]]:
    """Blocks relative to the schedule's fire time: raw ones of two replicas over 40 days, 5m ones over
    200 days, a retired stream 60 days old, one block already marked, one partial upload. Every block past
    retention has its downsampled copy (a working compactor), so the old ones may go."""
    b = FakeThanosBucket(moto)
    now_ms = int(fire * 1000) + 6 * 3_600_000  # "d days ago" is d days minus 6h: no block on a cutoff
    made: dict[str, list[str]] = {"old": [], "young": [], "kept": []}
    for labels in (SIDECAR_A, SIDECAR_B):
        for d in range(1, 41):
            blk = b.add(max_time=now_ms - d * DAY_MS, labels=labels)
            made["old" if d > 30 else "young"].append(blk.ulid)
            if d > 30:
                b.cover([blk])
    for d in (30, 100, 170, 190, 200):
        blk = b.add(max_time=now_ms - d * DAY_MS, labels=SIDECAR_A, resolution=300_000)
        made["old" if d > 180 else "young"].append(blk.ulid)
        if d > 180:
            b.cover([blk])
    retired = [b.add(max_time=now_ms - d * DAY_MS, labels={"cluster": "retired"}) for d in (62, 61, 60)]
    b.cover(retired)
    made["old"] += [r.ulid for r in retired[:2]]
    made["kept"].append(retired[-1].ulid)
    made["kept"].append(b.add(max_time=now_ms - 50 * DAY_MS, labels=SIDECAR_A, marked=True).ulid)
    made["kept"].append(b.add(max_time=now_ms - 45 * DAY_MS, labels=SIDECAR_B, partial=True).ulid)
    return made


COMPACTOR = {"namespace": NS, "pod": "thanos-compact-0"}


@pytest.fixture
async def compactor(
    exporter_factory: Callable[..., MetricsExporter], prometheus_factory: Callable[..., PrometheusServer]
) -> PrometheusServer:
    """A real Prometheus scraping a working compactor: not halted, one iteration done since it started."""
    exporter = exporter_factory()
    exporter.set("thanos_compact_halted", 0, COMPACTOR)
    exporter.set("thanos_compact_iterations_total", 1, COMPACTOR, type="counter")
    prom = prometheus_factory(targets=[exporter.target], job_name="thanos-compact")
    await prom.wait_for_async("count_over_time(thanos_compact_iterations_total[1m]) >= 2")
    exporter.set("thanos_compact_iterations_total", 2, COMPACTOR, type="counter")
    await prom.wait_for_async("increase(thanos_compact_iterations_total[24h]) > 0")
    prom.exporter = exporter  # type: ignore[attr-defined]
    return prom


async def scheduled_run(d: Daemon, clock: FrozenClock, fire: float) -> str:
    await d.engine.tick()  # first sight of the schedule: remembered, not fired
    clock.advance(fire + 60 - clock.now())
    await d.engine.tick()
    status, body = await d.call("GET", "/api/v1/runs")
    assert status == 200, body
    (run,) = [r for r in body["runs"] if r["runbook"] == RETENTION_RB and r["state"] == "awaiting_approval"]
    assert run["trigger"] == "schedule" and run["target"] == "thanos"
    return str(run["id"])


async def run_retention(
    tmp_path: Path, moto_s3: MotoS3Server, compactor: PrometheusServer, fire: float, **settings: Any
) -> tuple[dict[str, Any], list[str]]:
    """One scheduled retention run against the bucket in ``moto_s3``, every step approved as it comes:
    the run at its end and the steps approved, in order."""
    clock = FrozenClock(start=time.time())
    cfg = config(tmp_path, s3=moto_s3.endpoint_url, prometheus={"url": compactor.url}, **settings)
    async with serve(tmp_path, RUNBOOKS, config=cfg, secrets=S3_SECRETS, clock=clock) as d:
        run_id = await scheduled_run(d, clock, fire)
        return await walk(d, run_id)


async def test_retention_plans_and_marks_with_approval(
    tmp_path: Path, moto_s3: MotoS3Server, compactor: PrometheusServer
) -> None:
    fire = next_fire(time.time())
    made = retention_bucket(moto_s3, fire)
    bucket = FakeThanosBucket(moto_s3, create=False)
    before = bucket.objects()
    clock = FrozenClock(start=time.time())
    cfg = config(tmp_path, s3=moto_s3.endpoint_url, prometheus={"url": compactor.url})
    async with serve(tmp_path, RUNBOOKS, config=cfg, secrets=S3_SECRETS, clock=clock) as d:
        run_id = await scheduled_run(d, clock, fire)
        run, approved = await walk(d, run_id, stop_at="mark")
        plan = steps_of(run)["plan"]["output"]
        mark_step = steps_of(run)["mark"]
        # What the approver is asked to approve is exactly the plan's list.
        assert mark_step["state"] == "awaiting_approval" and mark_step["plan"]["ulids"] == plan["ulids"]
        assert before == bucket.objects()  # nothing written before the mark is approved
        run, approved = await walk(d, run_id)
    assert run["state"] == "succeeded", run
    assert approved == ["mark", "report"]
    assert set(plan["ulids"]) == set(made["old"]) and plan["count"] == len(made["old"])
    assert plan["protected_count"] == 1 and plan["protected"][0]["ulid"] == made["kept"][0]
    assert plan["skipped"] == {"marked": 1, "partial": 1, "unreadable": 0}
    status_out = steps_of(run)["status"]["output"]
    assert status_out["partial"]["count"] == 1 and status_out["marked"]["count"] == 1
    marked = steps_of(run)["mark"]["output"]
    assert (marked["marked"], marked["already_marked"], marked["refused"]) == (len(made["old"]), 0, 0)
    after = bucket.objects()
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == sorted(f"{u}/deletion-mark.json" for u in made["old"])
    doc = bucket.read_json(f"{made['old'][0]}/deletion-mark.json")
    assert doc == {
        "id": made["old"][0],
        "version": 1,
        "details": f"runbookd run {run_id} step mark",
        "deletion_time": int(fire + 60),
    }
    report = steps_of(run)["report"]["output"]["message"]
    assert f"{len(made['old'])} block(s) marked, 0 already marked, 0 refused." in report


async def test_retention_keeps_a_late_block_inside_a_downsampled_range(
    tmp_path: Path, moto_s3: MotoS3Server, compactor: PrometheusServer
) -> None:
    """A raw block uploaded late (or backfilled) inside the time range of a 5m block built from other
    sources was never downsampled (Thanos tells downsampled blocks by compaction.sources,
    cmd/thanos/downsample.go): the run neither plans nor marks it, and the report says why."""
    fire = next_fire(time.time())
    made = retention_bucket(moto_s3, fire)
    bucket = FakeThanosBucket(moto_s3, create=False)
    now_ms = int(fire * 1000) + 6 * 3_600_000
    # Inside the range of replica A's 35-day-old raw block, whose 5m copy holds only that block's source.
    late = bucket.add(
        max_time=now_ms - 35 * DAY_MS - 30 * 60_000, labels=SIDECAR_A, hours=1, created=now_ms - DAY_MS
    )
    run, approved = await run_retention(tmp_path, moto_s3, compactor, fire)
    assert run["state"] == "succeeded", run
    assert approved == ["status", "plan", "mark", "report"]
    plan = steps_of(run)["plan"]["output"]
    assert set(plan["ulids"]) == set(made["old"]) and late.ulid not in plan["ulids"]
    assert [(b["ulid"], b["reason"]) for b in plan["not_downsampled"]] == [
        (
            late.ulid,
            "kept: not downsampled: 5m blocks of the same stream span its time range, but its source is "
            "in no 5m block (uploaded late or backfilled after those were built)",
        )
    ]
    marked = steps_of(run)["mark"]["output"]
    assert (marked["marked"], marked["refused"]) == (len(made["old"]), 0)
    assert f"{late.ulid}/deletion-mark.json" not in bucket.objects()
    report = steps_of(run)["report"]["output"]["message"]
    assert "1 of them inside the time range of coarser blocks built from other sources" in report
    assert f"Kept, not downsampled yet: 1 block(s) past retention (e.g. {late.ulid} raw" in report


async def test_retention_dry_run_writes_nothing_and_a_second_day_marks_nothing_new(
    tmp_path: Path, moto_s3: MotoS3Server, compactor: PrometheusServer
) -> None:
    fire = next_fire(time.time())
    made = retention_bucket(moto_s3, fire)
    bucket = FakeThanosBucket(moto_s3, create=False)
    before = bucket.objects()
    run, _ = await run_retention(tmp_path, moto_s3, compactor, fire, dry_run=True)
    assert run["state"] == "succeeded", run
    assert bucket.objects() == before
    mark_out = steps_of(run)["mark"]["output"]
    assert mark_out["dry_run"] is True and mark_out["would_mark"] == len(made["old"])
    assert sorted(r["key"] for r in mark_out["requests"]) == sorted(
        f"{u}/deletion-mark.json" for u in made["old"]
    )
    assert (
        f"Dry-run: {len(made['old'])} mark(s) recorded, none written."
        in steps_of(run)["report"]["output"]["message"]
    )


async def test_retention_with_nothing_past_retention_skips_the_mark(
    tmp_path: Path, moto_s3: MotoS3Server, compactor: PrometheusServer
) -> None:
    fire = next_fire(time.time())
    bucket = FakeThanosBucket(moto_s3)
    for d in range(1, 10):
        bucket.add(max_time=int(fire * 1000) - d * DAY_MS, labels=SIDECAR_A)
    run, approved = await run_retention(tmp_path, moto_s3, compactor, fire)
    assert approved == ["status", "plan", "report"]
    assert states(run)["mark"] == "skipped"
    assert "Nothing to mark." in steps_of(run)["report"]["output"]["message"]


async def test_retention_on_a_raw_only_bucket_marks_nothing_and_says_why(
    tmp_path: Path, moto_s3: MotoS3Server, compactor: PrometheusServer
) -> None:
    """The issue's case: only raw blocks (nothing downsampled yet), half of them past 30d. Today's
    retention marked them by age; the history they hold exists nowhere else."""
    fire = next_fire(time.time())
    bucket = FakeThanosBucket(moto_s3)
    now_ms = int(fire * 1000) + 6 * 3_600_000
    old = [
        bucket.add(max_time=now_ms - d * DAY_MS, labels=labels).ulid
        for labels in (SIDECAR_A, SIDECAR_B)
        for d in range(1, 61)
        if d > 30
    ]
    for labels in (SIDECAR_A, SIDECAR_B):
        for d in range(1, 31):
            bucket.add(max_time=now_ms - d * DAY_MS, labels=labels)
    before = bucket.objects()
    run, approved = await run_retention(tmp_path, moto_s3, compactor, fire)
    assert run["state"] == "succeeded", run
    assert approved == ["status", "plan", "report"]
    assert states(run)["mark"] == "skipped"
    plan = steps_of(run)["plan"]["output"]
    assert plan["count"] == 0 and plan["not_downsampled_count"] == len(old) == 60
    assert plan["compactor"]["healthy"] is True
    report = steps_of(run)["report"]["output"]["message"]
    assert "Kept, not downsampled yet: 60 block(s) past retention" in report
    assert "Nothing to mark." in report
    assert bucket.objects() == before


async def test_retention_with_a_halted_compactor_marks_nothing(
    tmp_path: Path, moto_s3: MotoS3Server, compactor: PrometheusServer
) -> None:
    fire = next_fire(time.time())
    made = retention_bucket(moto_s3, fire)
    bucket = FakeThanosBucket(moto_s3, create=False)
    before = bucket.objects()
    compactor.exporter.set("thanos_compact_halted", 1, COMPACTOR)  # type: ignore[attr-defined]
    await compactor.wait_for_async("thanos_compact_halted == 1")
    run, approved = await run_retention(tmp_path, moto_s3, compactor, fire)
    assert approved == ["status", "plan", "report"]
    assert states(run)["mark"] == "skipped"
    plan = steps_of(run)["plan"]["output"]
    assert plan["count"] == 0 and plan["held_by_compactor"] == len(made["old"])
    assert "the compactor is halted" in steps_of(run)["report"]["output"]["message"]
    assert bucket.objects() == before
