"""Guards found missing by the acceptance audit of issues 8 and 9, each against the real components
(the Kubernetes API emulator with Longhorn's objects as its controller leaves them, ...)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.kube_api import KubeApiEmulator
from support.longhorn import Longhorn

from daemon.actions.base import ActionContext
from daemon.actions.longhorn.backups import DeleteParams, delete_backups
from daemon.actions.longhorn.status import RetentionParams, StatusParams, backup_status, plan_backup_retention
from daemon.errors import LostLeadership
from daemon.kits.clock import FrozenClock, iso

NOW = 1_800_000_000.0
START = 1_800_000_000.0  # 2027-01-15T08:00:00Z
VOL = "pvc-1111"
Ctx = Callable[..., ActionContext]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def lh(kube_api: KubeApiEmulator, clock: FrozenClock) -> Longhorn:
    lh = Longhorn(kube_api, clock)
    lh.target()
    lh.volume(VOL, "data-prometheus-0")
    return lh


def being_deleted(lh: Longhorn, name: str) -> None:
    """As Longhorn leaves a Backup someone deleted: its finalizer holds the object (status still
    Completed) until the backup is removed from the store, for as long as the target cannot be reached."""
    meta = lh.backups()[name]["metadata"]
    meta["deletionTimestamp"] = iso(NOW - 600)
    meta["finalizers"] = ["longhorn.io"]


async def test_a_backup_being_deleted_protects_no_other_from_retention(
    lh: Longhorn, kube_ctx: Ctx, kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    """The newest backup is being deleted (by a person, a RecurringJob's retain): the older one is now
    the volume's last copy and must stay, in the plan and in the delete's re-check."""
    lh.backup("b-new", VOL, hours_ago=24 * 40)
    lh.backup("b-old", VOL, hours_ago=24 * 50)
    being_deleted(lh, "b-new")
    plan = await plan_backup_retention.run(kube_ctx(clock=clock), RetentionParams(keep_last=1, keep_days=1))
    assert plan["backups"] == []
    out = await delete_backups.run(
        kube_ctx(clock=clock), DeleteParams(backups=["b-old", "b-new"], keep_last=1, keep_days=1)
    )
    assert [r.method for r in kube_api.mutations if r.method == "DELETE"] == []
    assert {r["backup"]: r["reason"] for r in out["refused"]} == {
        "b-old": "the newest Completed backup of its volume",
    }
    assert out["already_gone"] == ["b-new"]  # being deleted: what a re-run after a restart finds
    assert set(lh.backups()) == {"b-new", "b-old"}


async def test_a_backup_being_deleted_is_not_the_volume_s_last_backup(
    lh: Longhorn, kube_ctx: Ctx, clock: FrozenClock
) -> None:
    """The hourly check must not call a volume fresh on a backup that is going away."""
    lh.backup("b-old", VOL, hours_ago=40)
    lh.backup("b-new", VOL, hours_ago=1)
    being_deleted(lh, "b-new")
    out = await backup_status.run(kube_ctx(clock=clock), StatusParams())
    assert [v["volume"] for v in out["stale"]] == [VOL]


# -- redaction of container log lines (kubernetes.pod_logs, thanos.diagnose_sidecar) ----------------------


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("MINIO_ROOT_PASSWORD=supersecret", "supersecret"),
        ("OBJSTORE_SECRET_KEY=minio123", "minio123"),
        ("env S3_ACCESS_KEY=admin S3_SECRET_KEY=minio123", "minio123"),
        ('objstore config: {"minio_secret_key": "minio123"}', "minio123"),
        ("level=debug msg=config objstoreSecretKey=minio123", "minio123"),
    ],
)
def test_prefixed_credential_names_are_redacted(line: str, secret: str) -> None:
    """Environment-style names (a prefix joined by '_' or '.') hid the key from the word-boundary match."""
    from daemon.kits.redaction import MASK, redact

    out = redact(line)
    assert secret not in out and MASK in out, out


def test_redaction_keeps_what_is_not_a_credential() -> None:
    from daemon.kits.redaction import redact

    for line in ("password_file=/etc/thanos/pw", "tokens_total=5", 'msg="upload failed" err="Access Denied"'):
        assert redact(line) == line


# -- scheduled checks fire on the leader only (two replicas, one PostgreSQL) ------------------------------

NIGHTLY = """
name: nightly-look
triggers:
  - schedule: "0 3 * * *"
    check:
      action: test.look
      with: {what: volumes}
      when: "{{ check.output.stale | length > 0 }}"
target: nightly
approval: {timeout: 48h}
steps:
  - id: report
    action: notify.log
    with: {message: "{{ check.output.stale | join(',') }}"}
"""


async def follower_checks_tick(d: Any) -> None:
    """The follower's scheduled-check tick (its whole tick stops earlier, at the schedules, refused the
    same way): it must neither run the check nor record anything."""
    with contextlib.suppress(LostLeadership):
        await d.engine._checks.tick()


async def test_a_check_fires_on_the_leader_only_and_once(tmp_path: Path, postgres_url: str) -> None:
    """A follower's tick never runs a check (it would double every fire and every run it starts); the
    leader runs it once, and the follower then serves its recorded result."""
    from support.check_actions import Probe
    from support.inproc import base_config, serve

    on_leader, on_follower = Probe(), Probe()
    on_leader.items = on_follower.items = ["pvc-a"]
    clock = FrozenClock(START)
    config = base_config(tmp_path, state={"url": postgres_url})
    async with (
        serve(
            tmp_path, {"nightly": NIGHTLY}, config=config, registry=on_leader.registry(), clock=clock
        ) as leader,
        serve(
            tmp_path, {"nightly": NIGHTLY}, config=config, registry=on_follower.registry(), clock=clock
        ) as follower,
    ):
        assert leader.engine.leadership.leading and not follower.engine.leadership.leading
        await leader.engine.tick()  # the schedule is seen
        clock.advance(19.5 * 3600)  # past the next 03:00 UTC
        for _ in range(2):
            await follower_checks_tick(follower)
            await follower.engine.wait_idle()
        assert on_follower.calls == [] and on_leader.calls == []
        await leader.engine.tick()
        await leader.engine.wait_idle()
        await follower_checks_tick(follower)
        await leader.engine.tick()
        await leader.engine.wait_idle()
        assert on_follower.calls == [] and len(on_leader.calls) == 1
        status, body = await follower.call("GET", "/api/v1/checks")
        assert status == 200, body
        (c,) = body["checks"]
        assert c["outcome"] == "work" and c["findings"] == 1 and c["run_id"]
        status, listed = await follower.call("GET", "/api/v1/runs")
        assert [r["id"] for r in listed["runs"]] == [c["run_id"]]  # one run, started by the leader


# -- the other Prometheus replica: every target of it up, not just one -------------------------------------


async def test_the_other_replica_with_a_dead_sidecar_is_not_a_healthy_peer(
    kube_api: KubeApiEmulator,
    kube_client: Any,
    prometheus_factory: Callable[..., Any],
    exporter_factory: Callable[..., Any],
) -> None:
    """The other replica's Prometheus answers but its sidecar (what serves its recent data to Thanos Query)
    does not: restarting this replica would leave queries with no replica's recent data."""
    import time

    from support.ports import closed_port
    from support.safety_seed import prometheus_replica

    from daemon.actions.thanos.replicas import check_peers
    from daemon.clients.http import JsonHttpClient
    from daemon.clients.prometheus import PrometheusClient

    ns, pod, other = "monitoring", "prometheus-k8s-0", "prometheus-k8s-1"
    now = time.time()
    prometheus_replica(kube_api, pod, started_at=now - 7200)
    prometheus_replica(kube_api, other, node="node-197", started_at=now - 7200)
    live = exporter_factory()
    live.set("thanos_objstore_bucket_last_successful_upload_time", now - 1800, {"bucket": "thanos"})
    live.set("thanos_shipper_uploads_total", 12, type="counter")
    labels = {"namespace": ns, "pod": other}
    prom = prometheus_factory(
        scrape_configs=[
            {"job_name": "prometheus", "static_configs": [{"targets": [live.target], "labels": labels}]},
            {
                "job_name": "thanos-sidecar",
                "static_configs": [{"targets": [f"127.0.0.1:{closed_port()}"], "labels": labels}],
            },
        ]
    )
    await prom.wait_for_async(f'count(up{{pod="{other}"}}) == 2')
    await prom.wait_for_async(f'up{{pod="{other}", job="prometheus"}} == 1')
    client = PrometheusClient(JsonHttpClient(prom.url, timeout=10.0, name="prometheus"))
    try:
        report = await check_peers(kube_client, client, namespace=ns, pod=pod, bucket="thanos")
    finally:
        await client.close()
    (peer,) = report.peers
    assert peer.ready and not peer.up
    assert not report.ok and "not scraping" in report.reason


# -- issue 8, point 7: every runbook says when not to approve it and what can go wrong ---------------------

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "runbooks").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_each_runbook_starts_with_when_not_to_approve_and_its_doc_says_what_can_go_wrong(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and re.search(r"not (to )?approve", first.lower()), first
    page = REPO / "docs" / "runbooks" / f"{path.stem}.md"
    text = page.read_text() if page.exists() else (REPO / "docs" / "runbooks" / "README.md").read_text()
    section = text if page.exists() else text[text.find(f"`{path.stem}`") :]
    assert "what can go wrong" in section.lower(), page
