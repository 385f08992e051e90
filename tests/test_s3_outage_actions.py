"""The actions s3-connectivity-loss relies on: s3.minio_health (against a local MinIO healthcheck server),
thanos.stream_shipped (moto), and kubernetes.patch_prometheus_retention / restore_prometheus_retention
(the Kubernetes API emulator with the real kubernetes-asyncio client, a real Prometheus scraping the
kubelet's volume stats from a test exporter, and moto for the shipped-backlog guard)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from support.action_memory import DictActionMemory
from support.kube_api import KubeApiEmulator, resource_for
from support.minio_health import FakeMinio, self_signed
from support.ports import closed_port
from support.prom import MetricsExporter, PrometheusServer, Scraped, scraped_exporter
from support.prometheus_crs import add_prometheus, volume_metrics
from support.s3 import MotoS3Server
from support.thanos_blocks import HOUR_MS, FakeThanosBucket, s3_client

from daemon.actions import minio
from daemon.actions.base import ActionContext, Clients
from daemon.actions.kubernetes import prometheus_retention as pr
from daemon.actions.thanos import shipped
from daemon.clients.kubernetes import KubernetesClient
from daemon.errors import GuardRefused
from daemon.kits.clock import FrozenClock, iso

NOW = time.time()
NOW_MS = int(NOW * 1000)
GI = 2**30
NS = "monitoring"
STREAM = {"cluster": "thanos-ha", "prometheus": "monitoring/k8s"}
PROM_PATH = f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/prometheuses/k8s"


def ctx(memory: DictActionMemory | None = None, *, step_id: str = "protect", **clients: Any) -> ActionContext:
    return ActionContext(
        run_id="run-1",
        step_id=step_id,
        runbook="s3-connectivity-loss",
        dry_run=False,
        clients=Clients(**clients),
        memory=memory if memory is not None else DictActionMemory(),
        clock=FrozenClock(NOW),
    )


# -- s3.minio_health ---------------------------------------------------------------------------------------


async def health(url: str, **cfg: Any) -> dict[str, Any]:
    client = s3_client(url, **cfg)
    try:
        return await minio.minio_health_check.run(ctx(s3=client), minio.MinioHealthParams())
    finally:
        await client.close()


async def test_minio_health_healthy_and_without_quorum() -> None:
    server = await FakeMinio("healthy").start()
    try:
        ok = await health(server.url)
        server.state = "no_write_quorum"
        lost = await health(server.url)
        server.state = "offline"
        offline = await health(server.url)
    finally:
        await server.stop()
    assert ok["ok"] is True and ok["write_quorum"] is True and ok["certificate"] is None
    assert "GET /minio/health/cluster" in server.requests
    assert lost["ok"] is False and lost["write_quorum"] is False and lost["read_quorum"] is True
    assert lost["findings"] == [
        "the MinIO cluster has no write quorum (/minio/health/cluster 503): drives or nodes are offline"
    ]
    assert "server status offline" in offline["message"] and "no read quorum either" in offline["message"]


async def test_minio_health_when_nothing_answers() -> None:
    out = await health(f"http://127.0.0.1:{closed_port()}")
    assert out["ok"] is False and out["checks"]["live"]["status"] is None
    assert out["findings"][0].startswith("MinIO does not answer its liveness check (")


async def test_minio_health_reports_an_expired_certificate(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    cert = self_signed(tmp_path, not_before=now - dt.timedelta(days=90), not_after=now - dt.timedelta(days=2))
    server = await FakeMinio("healthy", cert=cert).start()
    try:
        verified = await health(server.url)
        trusted = await health(server.url, verify_tls=False)
    finally:
        await server.stop()
    for out in (verified, trusted):
        assert out["certificate"]["expired"] is True
        assert out["certificate"]["not_after"] == iso((now - dt.timedelta(days=2)).timestamp())
        assert any("TLS certificate EXPIRED" in f for f in out["findings"])
    # Verified, the expired certificate is also why the checks got no answer.
    assert "TLS" in (verified["checks"]["live"]["error"] or "")
    assert trusted["checks"]["live"]["status"] == 200


# -- thanos.stream_shipped ---------------------------------------------------------------------------------


async def stream_status(moto: MotoS3Server, **params: Any) -> dict[str, Any]:
    client = s3_client(moto.endpoint_url)
    try:
        p = shipped.ShippedParams.model_validate({"bucket": "thanos", "labels": STREAM, **params})
        return await shipped.stream_shipped.run(ctx(s3=client), p)
    finally:
        await client.close()


async def test_stream_shipped_reads_the_newest_block_of_every_live_stream(moto_s3: MotoS3Server) -> None:
    bucket = FakeThanosBucket(moto_s3)
    a = {**STREAM, "prometheus_replica": "prometheus-k8s-0"}
    b = {**STREAM, "prometheus_replica": "prometheus-k8s-1"}
    for h in (30, 28, 26):  # the outage: nothing newer than 26h ago
        bucket.add(max_time=NOW_MS - h * HOUR_MS, labels=a)
        bucket.add(max_time=NOW_MS - h * HOUR_MS, labels=b)
    bucket.add(max_time=NOW_MS - 100 * 24 * HOUR_MS, labels={**STREAM, "prometheus_replica": "old-0"})
    bucket.add(max_time=NOW_MS - 1 * HOUR_MS, labels={"cluster": "thanos-ha", "prometheus": "other/k8s"})
    since = iso(NOW - 27 * 3600)
    behind = await stream_status(moto_s3, since=since)
    assert behind["shipped"] is False and "2 of 2 stream(s)" in behind["message"]
    # The backlog's first block lands: one replica is still behind.
    bucket.add(max_time=NOW_MS - 24 * HOUR_MS, labels=a, created=NOW_MS)
    bucket.add(max_time=NOW_MS - 3 * HOUR_MS, labels=b)
    partly = await stream_status(moto_s3, since=since)
    assert partly["shipped"] is False and "1 of 2 stream(s)" in partly["message"]
    bucket.add(max_time=NOW_MS - 2 * HOUR_MS, labels=a)
    done = await stream_status(moto_s3, since=since)
    assert done["shipped"] is True
    assert [s["retired"] for s in done["streams"]] == [True, False, False]  # old-0 sorts first


async def test_a_stream_has_not_shipped_until_a_block_past_the_outages_start_has(
    moto_s3: MotoS3Server,
) -> None:
    bucket = FakeThanosBucket(moto_s3)
    bucket.add(max_time=NOW_MS - HOUR_MS, labels={**STREAM, "prometheus_replica": "prometheus-k8s-0"})
    assert (await stream_status(moto_s3))["shipped"] is True  # within 4h; no outage start given
    during = await stream_status(moto_s3, since=iso(NOW - 1800))
    assert during["shipped"] is False and "past the outage's start" in during["message"]
    assert (await stream_status(moto_s3, since=iso(NOW - 2 * 3600)))["shipped"] is True


# -- kubernetes.patch_prometheus_retention / restore_prometheus_retention ---------------------------------


@pytest.fixture
async def kubelet(
    exporter_factory: Callable[..., MetricsExporter], prometheus_factory: Callable[..., PrometheusServer]
) -> AsyncIterator[Scraped]:
    """The kubelet's volume stats (a test exporter), the Prometheus scraping them, and its client."""
    async with scraped_exporter(exporter_factory, prometheus_factory, "kubelet") as scraped:
        yield scraped


def raise_params(**overrides: Any) -> pr.RaiseParams:
    return pr.RaiseParams.model_validate(
        {
            "namespace": NS,
            "pods": ["prometheus-k8s-0", "prometheus-k8s-1", "thanos-store-0"],
            "retention": "24h",
            "outage_started": iso(NOW - 3600),
            **overrides,
        }
    )


async def volumes_free(kubelet: Scraped, available: float) -> None:
    """Both Prometheus claims have ``available`` bytes free (2 GiB used), and Prometheus has seen it."""
    volume_metrics(kubelet.exporter, "k8s", available=available, used=2 * GI)
    await kubelet.prom.wait_for_async(f"min(kubelet_volume_stats_available_bytes) == {available}")


async def raise_retention(
    kube_client: KubernetesClient, kubelet: Scraped, memory: DictActionMemory | None = None
) -> dict[str, Any]:
    """``kubernetes.patch_prometheus_retention`` with ``raise_params()``."""
    return await pr.patch_prometheus_retention.run(
        ctx(memory, kubernetes=kube_client, prometheus=kubelet.client), raise_params()
    )


async def test_retention_raised_with_room_and_the_originals_recorded(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient, kubelet: Scraped
) -> None:
    add_prometheus(kube_api, retention="2h")
    await volumes_free(kubelet, 40 * GI)  # 1 GiB/h steady: 22 GiB x1.5 needed
    out = await raise_retention(kube_client, kubelet)
    assert out["changed"] is True
    assert kube_api.get("Prometheus", "k8s", NS)["spec"]["retention"] == "24h"
    assert [(r.method, r.path) for r in kube_api.mutations] == [("PATCH", PROM_PATH)]
    assert out["restore"] == [
        {
            "namespace": NS,
            "name": "k8s",
            "retention": "2h",
            "retention_size": None,
            "expect_retention": "24h",
            "expect_retention_size": None,
            "stream_labels": STREAM,
        }
    ]
    assert out["not_prometheus_pods"] == ["thanos-store-0"]
    assert "pods restart one by one" in out["restarts"] and "pods restart one by one" in out["message"]
    vols = out["prometheuses"][0]["volumes"]
    assert [v["room"] for v in vols] == [True, True] and vols[0]["needed"] == "33Gi"


async def test_retention_refused_without_room_changes_nothing(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient, kubelet: Scraped
) -> None:
    add_prometheus(kube_api, retention="2h")
    await volumes_free(kubelet, 10 * GI)
    with pytest.raises(GuardRefused) as err:
        await raise_retention(kube_client, kubelet)
    assert (
        "retention NOT raised: k8s: volume prometheus-k8s-db-prometheus-k8s-0 has 10Gi free but needs 33Gi"
        in str(err.value)
    )
    assert kube_api.mutations == []
    assert kube_api.get("Prometheus", "k8s", NS)["spec"]["retention"] == "2h"


def _unready(kube_api: KubeApiEmulator, pod: str) -> None:
    for condition in kube_api.objects[(resource_for("Pod").key, NS, pod)]["status"]["conditions"]:
        if condition["type"] == "Ready":
            condition["status"] = "False"


async def test_retention_refused_while_a_replica_is_not_ready(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient, kubelet: Scraped, moto_s3: MotoS3Server
) -> None:
    """An adversarial review: the operator rolls the StatefulSet one pod at a time, highest ordinal first,
    whichever is healthy: with prometheus-k8s-0 already down, the patch restarted prometheus-k8s-1 too
    and left no replica. The raise refuses that Prometheus; the restore waits (not yet)."""
    add_prometheus(kube_api, retention="2h")
    await volumes_free(kubelet, 40 * GI)  # room enough: only the pod holds it back
    _unready(kube_api, "prometheus-k8s-0")
    with pytest.raises(GuardRefused, match=r"k8s: pod\(s\) prometheus-k8s-0 not Ready"):
        await raise_retention(kube_client, kubelet)
    assert kube_api.mutations == []
    kube_api.objects[(resource_for("Prometheus").key, NS, "k8s")]["spec"]["retention"] = "24h"
    FakeThanosBucket(moto_s3).add(max_time=NOW_MS - HOUR_MS, labels={**STREAM, "prometheus_replica": "x"})
    waiting = await restore(moto_s3, kube_client, [item()])
    assert waiting["not_yet"] is True and "prometheus-k8s-0 not Ready" in waiting["message"], waiting
    assert kube_api.mutations == []


async def test_retention_refused_for_a_tsdb_in_an_emptydir(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient, kubelet: Scraped
) -> None:
    """The patch restarts the pods: an emptyDir TSDB would lose exactly the blocks to be kept."""
    add_prometheus(kube_api, storage=False)
    with pytest.raises(GuardRefused, match="keep their TSDB in no PersistentVolumeClaim"):
        await raise_retention(kube_client, kubelet)
    assert kube_api.mutations == []


async def test_retention_size_is_raised_only_with_room_and_reported(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient, kubelet: Scraped
) -> None:
    add_prometheus(kube_api, retention="2h", retention_size="3GB")
    await volumes_free(kubelet, 40 * GI)
    out = await raise_retention(kube_client, kubelet)
    spec = kube_api.get("Prometheus", "k8s", NS)["spec"]
    assert spec["retention"] == "24h" and spec["retentionSize"] == f"{3 * 1024 + 33 * 1024}MB"
    assert out["restore"][0]["retention_size"] == "3GB"
    assert "still deletes the oldest blocks" in out["size_based_deletion"][0]


async def test_a_rerun_after_a_crash_keeps_the_true_originals(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient, kubelet: Scraped
) -> None:
    add_prometheus(kube_api, retention="2h")
    await volumes_free(kubelet, 40 * GI)
    memory = DictActionMemory()
    await raise_retention(kube_client, kubelet, memory)
    again = await raise_retention(kube_client, kubelet, memory.restart())
    assert again["restore"][0]["retention"] == "2h"  # not the 24h the first attempt set
    assert len(kube_api.mutations) == 1


async def restore(
    moto: MotoS3Server, kube_client: KubernetesClient, items: list[dict[str, Any]]
) -> dict[str, Any]:
    client = s3_client(moto.endpoint_url)
    try:
        p = pr.RestoreParams.model_validate(
            {"prometheuses": items, "bucket": "thanos", "since": iso(NOW - 3 * 3600)}
        )
        return await pr.restore_prometheus_retention.run(ctx(kubernetes=kube_client, s3=client), p)
    finally:
        await client.close()


def item(**overrides: Any) -> dict[str, Any]:
    return {
        "namespace": NS,
        "name": "k8s",
        "retention": "2h",
        "retention_size": None,
        "expect_retention": "24h",
        "expect_retention_size": None,
        "stream_labels": STREAM,
        **overrides,
    }


async def test_restore_waits_for_the_backlog_then_writes_the_exact_earlier_value(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient, moto_s3: MotoS3Server
) -> None:
    add_prometheus(kube_api, retention="24h")  # as the raise left it
    bucket = FakeThanosBucket(moto_s3)
    replica = {**STREAM, "prometheus_replica": "prometheus-k8s-0"}
    bucket.add(max_time=NOW_MS - 5 * HOUR_MS, labels=replica)
    bucket.add(max_time=NOW_MS - 1 * HOUR_MS, labels={"cluster": "thanos-ha", "prometheus": "other/k8s"})
    waiting = await restore(moto_s3, kube_client, [item()])
    assert waiting["ok"] is False and waiting["not_yet"] is True and waiting["changed"] is False
    assert "the backlog has not shipped" in waiting["message"]
    assert kube_api.mutations == []
    bucket.add(max_time=NOW_MS - 2 * HOUR_MS, labels=replica)
    out = await restore(moto_s3, kube_client, [item()])
    assert out["changed"] is True and out["prometheuses"] == [
        {"name": "k8s", "restored": True, "to": {"retention": "2h", "retention_size": None}}
    ]
    assert kube_api.get("Prometheus", "k8s", NS)["spec"]["retention"] == "2h"
    again = await restore(moto_s3, kube_client, [item()])  # idempotent
    assert again["changed"] is False and len(kube_api.mutations) == 1


async def test_restore_waits_for_a_block_cut_after_the_outage_began(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient, moto_s3: MotoS3Server
) -> None:
    """Adversarial review: at an outage's start the last block shipped before it (ended 1-3 h earlier)
    is "within 4h of now"; the undo, which runs as soon as the run ends, lowered retention back minutes
    after the raise while the sidecars still could not upload. Shipped means past the outage's start."""
    add_prometheus(kube_api, retention="24h")  # as the raise left it
    bucket = FakeThanosBucket(moto_s3)
    replica = {**STREAM, "prometheus_replica": "prometheus-k8s-0"}
    bucket.add(max_time=NOW_MS - int(1.5 * HOUR_MS), labels=replica)  # shipped before the outage
    client = s3_client(moto_s3.endpoint_url)
    try:
        p = pr.RestoreParams.model_validate(
            {"prometheuses": [item()], "bucket": "thanos", "since": iso(NOW - 600)}  # began 10 min ago
        )
        waiting = await pr.restore_prometheus_retention.run(ctx(kubernetes=kube_client, s3=client), p)
        assert waiting["not_yet"] is True and "past the outage's start" in waiting["message"], waiting
        assert kube_api.mutations == []
        bucket.add(max_time=NOW_MS - 60_000, labels=replica)  # a block holding samples after the start
        out = await pr.restore_prometheus_retention.run(ctx(kubernetes=kube_client, s3=client), p)
    finally:
        await client.close()
    assert out["changed"] is True
    assert kube_api.get("Prometheus", "k8s", NS)["spec"]["retention"] == "2h"


async def test_restore_of_an_unset_value_removes_the_field_and_a_persons_change_is_refused(
    kube_api: KubeApiEmulator, kube_client: KubernetesClient, moto_s3: MotoS3Server
) -> None:
    add_prometheus(kube_api, retention="24h", retention_size="36GB")
    FakeThanosBucket(moto_s3).add(max_time=NOW_MS - HOUR_MS, labels=STREAM)
    unset = item(retention=None, retention_size="3GB", expect_retention_size="36GB")
    await restore(moto_s3, kube_client, [unset])
    spec = kube_api.get("Prometheus", "k8s", NS)["spec"]
    assert "retention" not in spec and spec["retentionSize"] == "3GB"
    # Someone sets 48h by hand: the restore does not overwrite it.
    kube_api.put({**kube_api.get("Prometheus", "k8s", NS), "spec": {**spec, "retention": "48h"}})
    with pytest.raises(GuardRefused, match="changed since the raise"):
        await restore(moto_s3, kube_client, [item(retention="2h", expect_retention="24h")])
    assert kube_api.get("Prometheus", "k8s", NS)["spec"]["retention"] == "48h"
