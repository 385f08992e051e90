"""The shipped longhorn-backups, longhorn-backup-retention and s3-lifecycle-audit runbooks, end to end:
the real files from runbooks/, an in-process daemon (dry_run off) whose scheduled checks fire on a
frozen clock, the Kubernetes API emulator with Longhorn played by tests/support/longhorn.py, moto's S3
server, and runs walked through their approvals over the HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.inproc import Daemon, base_config, serve
from support.kube_api import KubeApiEmulator
from support.longhorn import Longhorn
from support.runs import states, steps_of, walk
from support.s3 import MotoS3Server
from support.s3_lifecycle import Buckets, abort_multipart, expire

from daemon.kits.clock import FrozenClock

REPO = Path(__file__).resolve().parent.parent
NAMES = ("longhorn-backups", "longhorn-backup-retention", "s3-lifecycle-audit")
RUNBOOKS = {n: (REPO / "runbooks" / f"{n}.yaml").read_text() for n in NAMES}
MONDAY_5AM = 1_800_248_400.0  # 2027-01-18T05:00:00Z, a Monday: the weekly audit fires at 06:00
S3_SECRETS = {"s3_access_key": MotoS3Server.access_key_id, "s3_secret_key": MotoS3Server.secret_access_key}


def config(tmp_path: Path, kube: KubeApiEmulator, moto: MotoS3Server) -> dict[str, Any]:
    s3 = {"endpoint_url": moto.endpoint_url, "retries": 0, "timeout": "5s", "connect_timeout": "2s"}
    return base_config(tmp_path, dry_run=False, kubernetes={"host": kube.url}, s3=s3)


async def fire(d: Daemon, clock: FrozenClock, hours: float) -> None:
    await d.engine.tick()  # first sight of the schedules: remembered, not fired
    clock.advance(hours * 3600)
    await d.engine.tick()
    await d.engine.wait_idle()


async def checks(d: Daemon) -> dict[str, dict[str, Any]]:
    status, body = await d.call("GET", "/api/v1/checks")
    assert status == 200, body
    return {c["runbook"]: c for c in body["checks"]}


async def active_runs(d: Daemon) -> list[dict[str, Any]]:
    return [r for r in (await d.call("GET", "/api/v1/runs"))[1]["runs"] if r["state"] == "awaiting_approval"]


async def test_a_healthy_night_starts_no_run_and_records_the_checks_ok(
    tmp_path: Path, kube_api: KubeApiEmulator, moto_s3: MotoS3Server
) -> None:
    clock = FrozenClock(MONDAY_5AM)
    Longhorn(kube_api, clock).seed(volumes=3, last_backup_hours=5, daily=10)
    buckets = Buckets(moto_s3)
    buckets.put_rules("thanos", [abort_multipart()])  # harmless: not a finding
    async with serve(
        tmp_path, RUNBOOKS, config=config(tmp_path, kube_api, moto_s3), secrets=S3_SECRETS, clock=clock
    ) as d:
        await fire(d, clock, 1.5)  # past 05:17, 05:45, 06:00 (Monday) and 06:17
        assert (await d.call("GET", "/api/v1/runs"))[1]["runs"] == []
        found = await checks(d)
    assert {n: (c["outcome"], c["findings"]) for n, c in found.items()} == {n: ("ok", 0) for n in NAMES}
    assert found["longhorn-backups"]["last_fire"] == "2027-01-18T05:17:00Z"  # the first one missed
    assert found["s3-lifecycle-audit"]["last_fire"] == "2027-01-18T06:00:00Z"
    assert "3 volume(s); 0 stale" in found["longhorn-backups"]["message"]
    assert [r for r in kube_api.mutations] == []


async def test_a_stuck_backup_is_found_hourly_cleared_after_approval_and_a_new_one_taken(
    tmp_path: Path, kube_api: KubeApiEmulator, moto_s3: MotoS3Server
) -> None:
    clock = FrozenClock(MONDAY_5AM)
    lh = Longhorn(kube_api, clock)
    vols = lh.seed(volumes=2, last_backup_hours=2, daily=3)
    stuck_vol = vols[0]
    for name in list(lh.backups(stuck_vol)):  # its recurring backups stopped 30h ago ...
        del kube_api.objects[("longhorn.io/backups", "longhorn-system", name)]
    lh.backup("backup-old", stuck_vol, hours_ago=30)
    lh.backup("backup-stuck", stuck_vol, hours_ago=29, state="InProgress")  # ... behind this one
    async with serve(
        tmp_path, RUNBOOKS, config=config(tmp_path, kube_api, moto_s3), secrets=S3_SECRETS, clock=clock
    ) as d:
        await fire(d, clock, 0.5)  # 05:17: the hourly check
        c = (await checks(d))["longhorn-backups"]
        assert c["outcome"] == "work" and c["findings"] == 2  # one stale volume, one stuck backup
        (run,) = await active_runs(d)
        assert (
            run["runbook"] == "longhorn-backups" and run["trigger"] == "schedule" and c["run_id"] == run["id"]
        )
        assert kube_api.mutations == []  # nothing changes before a person approves
        async with lh.running():
            run, approved = await walk(d, run["id"], timeout=120)
    assert run["state"] == "succeeded", run
    assert approved == ["report", "clear-stuck", "backup", "status"]
    steps = steps_of(run)
    assert steps["clear-stuck"]["plan"]["backups"] == ["backup-stuck"]
    assert steps["backup"]["plan"]["volumes"] == [stuck_vol]
    left = lh.backups(stuck_vol)
    assert "backup-stuck" not in left and "backup-old" in left
    (new,) = [b for n, b in left.items() if n.startswith("runbookd-")]
    assert new["status"]["state"] == "Completed"
    assert steps["status"]["output"]["stale"] == [] and steps["status"]["output"]["stuck"] == []
    deleted = [r.path.rsplit("/", 1)[1] for r in kube_api.mutations if r.method == "DELETE"]
    assert deleted == ["backup-stuck"]


async def test_retention_deletes_only_the_planned_backups_and_never_the_newest(
    tmp_path: Path, kube_api: KubeApiEmulator, moto_s3: MotoS3Server
) -> None:
    clock = FrozenClock(MONDAY_5AM)
    lh = Longhorn(kube_api, clock)
    lh.target()
    lh.volume("pvc-aaaa", "data-a")
    lh.volume("pvc-bbbb", "data-b")
    for d in range(10):
        lh.backup(f"a-{d:02d}", "pvc-aaaa", hours_ago=24 * (d * 5) + 1)  # 0, 5, ... 45 days
    lh.backup("b-only", "pvc-bbbb", hours_ago=24 * 300)
    async with serve(
        tmp_path, RUNBOOKS, config=config(tmp_path, kube_api, moto_s3), secrets=S3_SECRETS, clock=clock
    ) as d:
        await fire(d, clock, 0.9)  # 05:45: the daily retention check
        (run,) = [r for r in await active_runs(d) if r["runbook"] == "longhorn-backup-retention"]
        run, _approved = await walk(d, run["id"])
    assert run["state"] == "succeeded", run
    assert steps_of(run)["delete"]["plan"]["backups"] == ["a-07", "a-08", "a-09"]  # 35, 40, 45 days
    assert sorted(lh.backups()) == [*(f"a-{d:02d}" for d in range(7)), "b-only"]


async def test_a_lifecycle_expiration_on_longhorn_backups_is_flagged_and_removed(
    tmp_path: Path, kube_api: KubeApiEmulator, moto_s3: MotoS3Server
) -> None:
    clock = FrozenClock(MONDAY_5AM)
    Longhorn(kube_api, clock).seed(volumes=1, last_backup_hours=1, daily=2)
    buckets = Buckets(moto_s3)
    buckets.put_rules("longhorn-backups", [abort_multipart(), expire("expire-30d", 30)])
    async with serve(
        tmp_path, RUNBOOKS, config=config(tmp_path, kube_api, moto_s3), secrets=S3_SECRETS, clock=clock
    ) as d:
        await fire(d, clock, 1.1)  # 06:00 Monday: the weekly audit
        c = (await checks(d))["s3-lifecycle-audit"]
        assert c["outcome"] == "work" and c["findings"] == 1
        assert "longhorn-backups: expire-30d" in c["message"]
        (run,) = [r for r in await active_runs(d) if r["runbook"] == "s3-lifecycle-audit"]
        run, _approved = await walk(d, run["id"])
    assert run["state"] == "succeeded", run
    assert states(run) == {
        "remove-longhorn": "succeeded",
        "remove-opensearch": "skipped",
        "remove-thanos": "skipped",
        "audit": "succeeded",
    }
    assert steps_of(run)["remove-longhorn"]["plan"]["rule_ids"] == ["expire-30d"]
    assert [r["ID"] for r in buckets.rules("longhorn-backups") or []] == ["abort-multipart"]
    assert steps_of(run)["audit"]["output"]["findings"] == []
