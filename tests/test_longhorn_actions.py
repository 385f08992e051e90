"""The longhorn.* actions against the Kubernetes API emulator, through the real kubernetes-asyncio client,
with Longhorn's objects and controller played by tests/support/longhorn.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support.kube_api import KubeApiEmulator
from support.longhorn import Longhorn

from daemon.actions.base import ActionContext
from daemon.actions.longhorn.backups import (
    ClearParams,
    CreateParams,
    DeleteParams,
    clear_stuck_backup,
    create_backup,
    delete_backups,
)
from daemon.actions.longhorn.status import RetentionParams, StatusParams, backup_status, plan_backup_retention
from daemon.errors import GuardRefused
from daemon.kits.clock import FrozenClock

NOW = 1_800_000_000.0
VOL, OTHER = "pvc-1111", "pvc-2222"
Ctx = Callable[..., ActionContext]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def lh(kube_api: KubeApiEmulator, clock: FrozenClock) -> Longhorn:
    lh = Longhorn(kube_api, clock)
    lh.target()
    lh.volume(VOL, "data-prometheus-0")
    lh.volume(OTHER, "data-grafana")
    return lh


def deletes(kube: KubeApiEmulator) -> list[str]:
    return [r.path.rsplit("/", 1)[1] for r in kube.mutations if r.method == "DELETE"]


# -- backup_status ------------------------------------------------------------------------------------


async def test_status_finds_stale_volumes_stuck_and_error_backups(
    lh: Longhorn, kube_ctx: Ctx, clock: FrozenClock
) -> None:
    lh.backup("b-old", VOL, hours_ago=30)
    lh.backup("b-stuck", VOL, hours_ago=8, state="InProgress")
    lh.backup("b-young-running", OTHER, hours_ago=1, state="InProgress")
    lh.backup("b-fresh", OTHER, hours_ago=2)
    lh.backup("b-err", OTHER, hours_ago=3, state="Error", error="cannot reach s3")
    lh.volume("pvc-3333", "scratch")
    lh.volume("pvc-4444", "being-backed-up")
    lh.backup("b-4-old", "pvc-4444", hours_ago=40)
    lh.backup("b-4-now", "pvc-4444", hours_ago=1, state="InProgress")  # under way: not stale yet
    out = await backup_status.run(kube_ctx(clock=clock), StatusParams())
    assert [s["volume"] for s in out["stale"]] == [VOL]
    assert out["stale"][0]["pvc"] == "data-prometheus-0" and out["stale"][0]["age_hours"] == 30.0
    assert [s["backup"] for s in out["stuck"]] == ["b-stuck"]  # 1h InProgress is not stuck yet
    assert out["stuck"][0]["running_hours"] == 8.0
    assert [e["backup"] for e in out["errors"]] == ["b-err"] and out["errors"][0][
        "error"
    ] == "cannot reach s3"
    assert out["no_backup"] == ["pvc-3333"]
    assert out["target_available"] is True
    assert [f["kind"] for f in out["findings"]] == ["stale", "stuck"]


async def test_status_reports_an_unavailable_backup_target(
    kube_api: KubeApiEmulator, kube_ctx: Ctx, clock: FrozenClock
) -> None:
    lh = Longhorn(kube_api, clock)
    lh.target(available=False)
    lh.volume(VOL, "data")
    lh.backup("b1", VOL, hours_ago=1)
    out = await backup_status.run(kube_ctx(clock=clock), StatusParams())
    assert out["target_available"] is False
    assert out["findings"] == [
        {"kind": "backup_target_unavailable", "name": "default", "message": "cannot reach s3 endpoint"}
    ]


# -- retention ----------------------------------------------------------------------------------------


async def test_plan_keeps_the_newest_and_the_only_backup(
    lh: Longhorn, kube_ctx: Ctx, clock: FrozenClock
) -> None:
    for d in range(10):  # VOL: ten daily backups, 40..49 days old
        lh.backup(f"b-{d}", VOL, hours_ago=24 * (40 + d))
    lh.backup("only", OTHER, hours_ago=24 * 400)  # OTHER: one backup, very old
    out = await plan_backup_retention.run(kube_ctx(clock=clock), RetentionParams(keep_last=1, keep_days=0))
    assert out["backups"] == [f"b-{d}" for d in range(1, 10)]  # everything but the newest of VOL
    reasons = {b["backup"]: b["reason"] for bs in out["volumes"].values() for b in bs}
    assert reasons["b-0"] == "the newest Completed backup of its volume"
    assert reasons["only"] == "the newest Completed backup of its volume"


async def test_plan_applies_keep_last_and_keep_days_together(
    lh: Longhorn, kube_ctx: Ctx, clock: FrozenClock
) -> None:
    for d in range(12):
        lh.backup(f"b-{d:02d}", VOL, hours_ago=24 * d * 4 + 1)  # 0, 4, 8, ... 44 days old
    lh.backup("b-running", VOL, hours_ago=24 * 90, state="InProgress")
    out = await plan_backup_retention.run(kube_ctx(clock=clock), RetentionParams())  # 7, 30 days
    assert out["backups"] == ["b-08", "b-09", "b-10", "b-11"]  # beyond 7 AND older than 30 days
    assert "b-running" not in out["backups"]


async def test_delete_never_deletes_the_newest_completed_backup(
    lh: Longhorn, kube_ctx: Ctx, kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    lh.backup("b-new", VOL, hours_ago=24 * 40)
    lh.backup("b-old", VOL, hours_ago=24 * 50)
    lh.backup("only", OTHER, hours_ago=24 * 60)
    # An approved list that (wrongly, or since outdated) names the newest backup and an only backup:
    params = DeleteParams(backups=["b-new", "b-old", "only"], keep_last=1, keep_days=0)
    out = await delete_backups.run(kube_ctx(clock=clock), params)
    assert deletes(kube_api) == ["b-old"]
    assert out["ok"] is False
    assert {r["backup"]: r["reason"] for r in out["refused"]} == {
        "b-new": "the newest Completed backup of its volume",
        "only": "the newest Completed backup of its volume",
    }
    assert set(lh.backups()) == {"b-new", "only"}


async def test_delete_rechecks_right_before_acting(
    lh: Longhorn, kube_ctx: Ctx, kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    """Planned when two backups existed; by the time of the delete, the newer one was removed by someone
    else: the planned one is now the only (newest) backup and is kept."""
    lh.backup("b-new", VOL, hours_ago=24 * 40)
    lh.backup("b-old", VOL, hours_ago=24 * 50)
    plan = await plan_backup_retention.run(kube_ctx(clock=clock), RetentionParams(keep_last=1, keep_days=0))
    assert plan["backups"] == ["b-old"]
    del kube_api.objects[("longhorn.io/backups", "longhorn-system", "b-new")]
    out = await delete_backups.run(
        kube_ctx(clock=clock), DeleteParams(backups=plan["backups"], keep_last=1, keep_days=0)
    )
    assert deletes(kube_api) == [] and out["refused"][0]["backup"] == "b-old"


def backup_lists(kube: KubeApiEmulator) -> list[str]:
    """The labelSelector of each LIST of Backups ("" for every Backup)."""
    return [
        r.query.get("labelSelector", "")
        for r in kube.requests
        if r.method == "GET" and r.path.endswith("/backups")
    ]


async def test_delete_rereads_only_the_volume_of_each_backup(
    lh: Longhorn, kube_ctx: Ctx, kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    """Each deletion re-reads its backup and the backups of its volume, not every Backup: 500 approved
    deletions among 10,000 backups would otherwise list all 10,000 five hundred times."""
    for d in range(4):
        lh.backup(f"v-{d}", VOL, hours_ago=24 * (40 + d))
        lh.backup(f"o-{d}", OTHER, hours_ago=24 * (40 + d))
    out = await delete_backups.run(
        kube_ctx(clock=clock), DeleteParams(backups=["v-2", "v-3", "o-3"], keep_last=1, keep_days=0)
    )
    assert out["ok"] is True and deletes(kube_api) == ["v-2", "v-3", "o-3"]
    assert backup_lists(kube_api) == [
        f"backup-volume={VOL}",
        f"backup-volume={VOL}",
        f"backup-volume={OTHER}",
    ]


async def test_delete_of_an_unlabelled_backup_reads_every_backup(
    lh: Longhorn, kube_ctx: Ctx, kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    """A Backup without the backup-volume label (its volume only in status.volumeName) cannot be found
    by label: its deletion reads every Backup, and the rules still keep its volume's newest."""
    lh.backup("b-new", VOL, hours_ago=24 * 40)
    lh.backup("b-old", VOL, hours_ago=24 * 50)
    for name in ("b-new", "b-old"):
        del kube_api.objects[("longhorn.io/backups", "longhorn-system", name)]["metadata"]["labels"][
            "backup-volume"
        ]
    out = await delete_backups.run(
        kube_ctx(clock=clock), DeleteParams(backups=["b-new", "b-old"], keep_last=1, keep_days=0)
    )
    assert deletes(kube_api) == ["b-old"]
    assert out["refused"] == [
        {"backup": "b-new", "volume": VOL, "reason": "the newest Completed backup of its volume"}
    ]
    assert backup_lists(kube_api) == ["", ""]


async def test_delete_in_dry_run_sends_nothing(
    lh: Longhorn, kube_ctx: Ctx, kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    lh.backup("b-new", VOL, hours_ago=24 * 40)
    lh.backup("b-old", VOL, hours_ago=24 * 50)
    out = await delete_backups.run(
        kube_ctx(clock=clock, dry_run=True), DeleteParams(backups=["b-old"], keep_last=1, keep_days=0)
    )
    assert kube_api.mutations == []
    (req,) = out["requests"]
    assert req["method"] == "DELETE" and req["path"].endswith("/backups/b-old")
    assert req["body"]["preconditions"]["uid"]


# -- stuck backups and new backups ----------------------------------------------------------------------


async def test_clear_stuck_backup_deletes_only_a_stuck_one(
    lh: Longhorn, kube_ctx: Ctx, kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    lh.backup("b-stuck", VOL, hours_ago=9, state="InProgress")
    lh.backup("b-young", OTHER, hours_ago=1, state="InProgress")
    lh.backup("b-done", OTHER, hours_ago=20)
    out = await clear_stuck_backup.run(
        kube_ctx(clock=clock), ClearParams(backups=["b-stuck", "b-young", "b-done"])
    )
    assert deletes(kube_api) == ["b-stuck"]
    assert [c["backup"] for c in out["cleared"]] == ["b-stuck"]
    assert {r["backup"] for r in out["refused"]} == {"b-young", "b-done"}
    assert out["ok"] is False


async def test_a_backup_synced_from_the_store_is_never_stuck(
    lh: Longhorn, kube_ctx: Ctx, kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    """Longhorn makes a Backup (no snapshot name, state "") for each backup it finds in the store and
    fills it in once read; one that waits longer is finished data, not a stuck backup: deleting the
    object would delete the backup from the store."""
    lh.backup("b-synced", VOL, hours_ago=8, state="", synced=True)
    lh.backup("b-asked", OTHER, hours_ago=8, state="")  # asked for, never picked up: stuck
    status = await backup_status.run(kube_ctx(clock=clock), StatusParams())
    assert [s["backup"] for s in status["stuck"]] == ["b-asked"]
    out = await clear_stuck_backup.run(kube_ctx(clock=clock), ClearParams(backups=["b-synced", "b-asked"]))
    assert deletes(kube_api) == ["b-asked"]
    (refused,) = out["refused"]
    assert refused["backup"] == "b-synced" and "synced from the backup store" in refused["reason"]


async def test_retention_counts_each_backup_target_apart(
    lh: Longhorn, kube_ctx: Ctx, kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    """Longhorn 1.8+: a volume backed up to two targets. Ten recent backups on the default target are
    no copy of the data on the offsite one: the offsite target's newest backup, and its only ones within
    keep_last, stay."""
    for d in range(10):
        lh.backup(f"b-{d}", VOL, hours_ago=24 * (1 + d))
    lh.backup("offsite-new", VOL, hours_ago=24 * 40, target="offsite")
    lh.backup("offsite-old", VOL, hours_ago=24 * 47, target="offsite")
    plan = await plan_backup_retention.run(kube_ctx(clock=clock), RetentionParams())
    assert plan["backups"] == []
    reasons = {b["backup"]: b["reason"] for b in plan["volumes"][VOL]}
    assert reasons["offsite-new"] == "the newest Completed backup of its volume (backup target offsite)"
    assert reasons["offsite-old"] == "among the newest 7 Completed backups (backup target offsite)"
    out = await delete_backups.run(
        kube_ctx(clock=clock), DeleteParams(backups=["offsite-new", "offsite-old"])
    )
    assert deletes(kube_api) == [] and {r["backup"] for r in out["refused"]} == {"offsite-new", "offsite-old"}
    # Per target the rules still apply: with keep_last 1, the older offsite backup goes.
    plan = await plan_backup_retention.run(kube_ctx(clock=clock), RetentionParams(keep_last=1))
    assert plan["backups"] == ["offsite-old"]


async def test_a_plan_lists_at_most_500_backups_the_oldest_first(
    lh: Longhorn, kube_ctx: Ctx, clock: FrozenClock
) -> None:
    """A first run over a large backlog: the plan takes the 500 oldest (the delete step takes no more)
    and says how many wait for a later run."""
    for d in range(520):
        lh.backup(f"b-{d:03d}", VOL, hours_ago=24 * (40 + d))
    plan = await plan_backup_retention.run(kube_ctx(clock=clock), RetentionParams(keep_last=1, keep_days=0))
    assert plan["truncated"] is True and len(plan["backups"]) == 500
    assert set(plan["backups"]) == {f"b-{d:03d}" for d in range(20, 520)}
    assert "19 more beyond retention are left to a later run" in plan["message"]
    DeleteParams(backups=plan["backups"], keep_last=1, keep_days=0)  # what the runbook passes on


async def test_create_backup_takes_a_snapshot_then_a_backup_and_waits(
    lh: Longhorn, kube_ctx: Ctx, kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    async with lh.running():
        out = await create_backup.run(
            kube_ctx(clock=clock), CreateParams(volumes=[VOL], interval=0.02, timeout=30)
        )
    assert out["ok"] is True, out
    (result,) = out["results"]
    created = [(r.method, r.path.rsplit("/", 1)[1]) for r in kube_api.mutations]
    assert created == [("POST", "snapshots"), ("POST", "backups")]
    backup = lh.backups(VOL)[result["backup"]]
    assert backup["status"]["state"] == "Completed"
    assert backup["metadata"]["labels"] == {"backup-volume": VOL, "backup-target": "default"}
    assert backup["spec"]["snapshotName"] == result["snapshot"]


async def test_create_backup_reports_error_and_timeout(
    lh: Longhorn, kube_ctx: Ctx, clock: FrozenClock
) -> None:
    lh.fail_new = "failed to upload: connection refused"
    async with lh.running():
        out = await create_backup.run(
            kube_ctx(clock=clock, step_id="a"), CreateParams(volumes=[VOL], interval=0.02, timeout=30)
        )
        assert out["ok"] is False and "Error: failed to upload" in out["message"]
        lh.fail_new = None
        lh.stick_new = True
        out = await create_backup.run(
            kube_ctx(clock=clock, step_id="b"), CreateParams(volumes=[OTHER], interval=0.02, timeout=0.5)
        )
    assert out["ok"] is False and "did not complete in time" in out["message"]


async def test_create_backup_refuses_while_a_backup_runs(
    lh: Longhorn, kube_ctx: Ctx, kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    lh.backup("b-stuck", VOL, hours_ago=9, state="InProgress")
    with pytest.raises(GuardRefused, match=r"b-stuck .* still InProgress"):
        await create_backup.run(kube_ctx(clock=clock), CreateParams(volumes=[VOL]))
    assert kube_api.mutations == []


def test_the_newest_completed_backup_is_kept_whatever_keep_last_says() -> None:
    """The rule holds in the model itself, not only through keep_last >= 1 (which params enforce too)."""
    from pydantic import ValidationError

    from daemon.actions.longhorn.model import Backup, retention_verdicts

    def completed(name: str, days: float) -> Backup:
        at = NOW - days * 86400
        return Backup(name, "uid-" + name, VOL, "default", "Completed", at, at, "", "")

    backups = [completed("new", 40), completed("old", 50)]
    verdicts = retention_verdicts(backups, keep_last=0, keep_days=0, now=NOW)
    assert verdicts["new"].delete is False and verdicts["old"].delete is True
    assert (
        retention_verdicts([completed("only", 400)], keep_last=0, keep_days=0, now=NOW)["only"].delete
        is False
    )
    with pytest.raises(ValidationError):
        RetentionParams(keep_last=0)


async def test_the_longhorn_namespace_comes_from_the_config(
    kube_api: KubeApiEmulator, clock: FrozenClock
) -> None:
    from support.action_memory import DictActionMemory

    from daemon.actions.base import Clients
    from daemon.clients.kubernetes import from_config
    from daemon.config import KubernetesConfig

    lh = Longhorn(kube_api, clock, namespace="storage")
    lh.target()
    lh.volume(VOL, "data")
    lh.backup("b1", VOL, hours_ago=1)
    client = await from_config(KubernetesConfig(host=kube_api.url, longhorn_namespace="storage"))
    try:
        ctx = ActionContext(
            run_id="r",
            step_id="s",
            runbook="rb",
            dry_run=False,
            clients=Clients(kubernetes=client),
            memory=DictActionMemory(),
            clock=clock,
        )
        out = await backup_status.run(ctx, StatusParams())
    finally:
        await client.close()
    assert out["namespace"] == "storage" and out["volumes"][0]["last_completed"] == "b1"
    assert {r.path.split("/")[5] for r in kube_api.requests} == {"storage"}
