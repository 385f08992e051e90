"""Which same-named copy of an index is a copy of that very index (daemon/actions/opensearch/copies.py), as
opensearch.plan_snapshot_retention and opensearch.delete_snapshots decide what deleting a snapshot loses.

An index name is no identity: a daily index deleted after its snapshot comes back under the same name when
a late write (Fluent-bit flushing a backlog) lands, as a new index with one document. OpenSearch's snapshot
API lists index names only, so a name match alone must never make a snapshot look like a spare copy of the
original: each test below that names a defect fails when a name match is taken as a copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from support.opensearch_server import FakeOpenSearch

from daemon.actions.base import Action, ActionContext
from daemon.actions.opensearch import blocks, indices, plans, snapshots, status

Ctx = Callable[..., ActionContext]
NAME = "logs-2025.06.01"
OLD = "logs-2025.06.02"
"""The nightly snapshot, 200 days ago, of the original index (10M documents)."""
DAY = 86_400.0


async def run(a: Action, ctx: ActionContext, **params: Any) -> dict[str, Any]:
    return await a.run(ctx, a.params.model_validate(params))


async def final_snapshot(ctx: ActionContext, names: list[str], name: str) -> dict[str, Any]:
    await run(blocks.block_writes, ctx, indices=names)
    return await run(
        snapshots.create_snapshot, ctx, indices=names, name=name, poll_interval="10ms", timeout="10s"
    )


def original_snapshotted_then_deleted(server: FakeOpenSearch) -> str:
    """The original index, its snapshot 200 days ago, and the index deleted since: its uuid."""
    original = server.add_index(NAME, age_days=201, docs=10_000_000)
    server.add_snapshot(OLD, [NAME], age_days=200)
    server.delete_index(NAME)
    return original.uuid


async def recorded(memory: Any, snap: Any, index: Any) -> None:
    """What runbookd notes when it takes ``snap`` of ``index`` (opensearch.create_snapshot)."""
    uuids = {index.name: index.uuid}
    record = {"indices": [index.name], "index_uuids": uuids, "copied": uuids, "uuid": snap.uuid}
    await memory.put(snapshots.MEMORY, f"opensearch-logs/{snap.name}", record)


def snapshots_left(server: FakeOpenSearch) -> set[str]:
    return set(server.repositories["opensearch-logs"].snapshots)


# -- the defect: a recreated index passes for the original ---------------------------------------------------


async def test_a_late_write_recreating_the_index_is_no_copy_of_the_original(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    original = original_snapshotted_then_deleted(opensearch)
    opensearch.add_index(NAME, age_days=5, docs=1)  # the late write
    assert opensearch.snapshot(OLD).copied == {NAME: original}
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [{"snapshot": OLD, "last_copy_of": [NAME]}]
    assert plan["lost_for_good"] == [NAME]
    assert f"deleting them loses 1 index(es) for good: {NAME}" in plan["message"]
    (doubt,) = plan["snapshots"][0]["unproven_copies"][NAME]
    assert doubt.startswith(f"live index {NAME} (uuid {opensearch.indices[NAME].uuid}, created ")
    assert doubt.endswith("runbookd has no record of that snapshot (ISM's, a person's, or a clone)")
    # A plan that named no loss (the old rule's) deletes nothing: the re-check before the delete refuses.
    stale = await run(snapshots.delete_snapshots, os_ctx(), snapshots=[{"snapshot": OLD, "last_copy_of": []}])
    assert stale["deleted"] == [] and f"would lose {NAME} for good" in stale["refused"][0]["reason"]
    assert OLD in snapshots_left(opensearch)
    # The plan as the approver saw it: deleted, and the output says what is gone.
    out = await run(snapshots.delete_snapshots, os_ctx(), snapshots=plan["delete"])
    assert out["deleted"] == [OLD] and out["lost_for_good"] == [NAME]


async def test_a_later_snapshot_of_the_recreated_index_does_not_cover_the_original(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    original_snapshotted_then_deleted(opensearch)
    recreated = opensearch.add_index(NAME, age_days=70, docs=1)
    later = opensearch.add_snapshot("logs-2025.10.10", [NAME], age_days=60)  # nightly, or ISM
    opensearch.delete_index(NAME)
    assert later.copied == {NAME: recreated.uuid} and later.captured == {NAME: 1}
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [{"snapshot": OLD, "last_copy_of": [NAME]}]
    assert plan["snapshots"][0]["unproven_copies"] == {
        NAME: [f"snapshot logs-2025.10.10 lists {NAME}, but nothing proves it copied the same index"]
    }
    stale = await run(snapshots.delete_snapshots, os_ctx(), snapshots=[{"snapshot": OLD, "last_copy_of": []}])
    assert stale["deleted"] == [] and OLD in snapshots_left(opensearch)


async def test_a_later_snapshot_runbookd_took_of_the_recreated_index_does_not_cover_the_original(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    original_snapshotted_then_deleted(opensearch)
    opensearch.add_index(NAME, age_days=20, docs=1)
    assert (await final_snapshot(os_ctx(), [NAME], name="final-x"))["ok"] is True
    deleted = await run(indices.delete_indices, os_ctx(), snapshot="final-x", indices=[NAME])
    assert deleted["deleted"] == [NAME]
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [{"snapshot": OLD, "last_copy_of": [NAME]}]


async def test_the_recheck_before_the_delete_sees_the_index_recreated_since_the_plan(
    opensearch: FakeOpenSearch, os_ctx: Ctx, os_memory: Any
) -> None:
    idx = opensearch.add_index(NAME, age_days=300, docs=10_000_000)
    await recorded(os_memory, opensearch.add_snapshot(OLD, [NAME], age_days=200), idx)
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [{"snapshot": OLD, "last_copy_of": []}]  # the index itself is still there
    opensearch.delete_index(NAME)  # then deleted, and a late write creates it again
    opensearch.add_index(NAME, docs=1)
    out = await run(snapshots.delete_snapshots, os_ctx(), snapshots=plan["delete"])
    assert out["deleted"] == [] and f"would lose {NAME} for good" in out["refused"][0]["reason"]
    assert OLD in snapshots_left(opensearch)


async def test_an_approved_loss_of_one_index_does_not_approve_another_of_the_same_name(
    opensearch: FakeOpenSearch, os_ctx: Ctx, os_memory: Any
) -> None:
    """The plan names NAME under the oldest snapshot (an index deleted long ago) and nothing under OLD
    (the index it copied is still there); that index goes before the delete step: deleting OLD now loses
    it, which nobody approved, though the plan named an index of that name elsewhere."""
    opensearch.add_index(NAME, age_days=401, docs=5)
    opensearch.add_snapshot("oldest", [NAME], age_days=400)
    opensearch.delete_index(NAME)
    idx = opensearch.add_index(NAME, age_days=300, docs=10_000_000)
    await recorded(os_memory, opensearch.add_snapshot(OLD, [NAME], age_days=200), idx)
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [
        {"snapshot": "oldest", "last_copy_of": [NAME]},
        {"snapshot": OLD, "last_copy_of": []},
    ]
    opensearch.delete_index(NAME)
    out = await run(snapshots.delete_snapshots, os_ctx(), snapshots=plan["delete"])
    assert out["deleted"] == ["oldest"] and out["lost_for_good"] == [NAME]
    assert out["refused"][0]["snapshot"] == OLD and f"would lose {NAME}" in out["refused"][0]["reason"]
    assert snapshots_left(opensearch) == {OLD}


async def test_an_old_snapshot_of_the_original_does_not_hold_the_recreated_index(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    """The nightly check would skip the recreated index (its name is in a snapshot), leaving the late
    write in the cluster only; the index plan would show the old snapshot as its verified copy."""
    original_snapshotted_then_deleted(opensearch)
    opensearch.add_index(NAME, age_days=15, docs=1)
    nightly = await run(status.snapshot_status, os_ctx(), indices="logs-*")
    assert nightly["unsnapshotted"] == [NAME] and nightly["findings"] == 1
    plan = await run(plans.plan_index_retention, os_ctx())
    assert plan["items"][0]["verified_snapshot"] is None and plan["unverified"] == [NAME]
    taken = await run(
        snapshots.create_snapshot, os_ctx(), indices=[NAME], name="nightly-x", poll_interval="10ms"
    )
    assert taken["ok"] is True
    nightly = await run(status.snapshot_status, os_ctx(), indices="logs-*")
    assert nightly["unsnapshotted"] == [] and nightly["findings"] == 0
    plan = await run(plans.plan_index_retention, os_ctx())
    assert plan["items"][0]["verified_snapshot"] == "nightly-x"


# -- the same index still counts ----------------------------------------------------------------------------


async def test_an_index_older_than_a_snapshot_runbookd_did_not_take_decides_no_deletion(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    """The live index was created long before the snapshot and is likely the one it copied; a creation
    date still proves nothing for a deletion (a clone looks the same, next test). The plan names the
    loss; the status check, which deletes nothing, takes the snapshot as the index's."""
    idx = opensearch.add_index(NAME, age_days=300)
    opensearch.add_snapshot(OLD, [NAME], age_days=200)
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [{"snapshot": OLD, "last_copy_of": [NAME]}]
    out = await run(snapshots.delete_snapshots, os_ctx(), snapshots=plan["delete"])
    assert out["deleted"] == [OLD] and out["lost_for_good"] == [NAME]
    assert opensearch.indices[NAME].uuid == idx.uuid  # the index itself is never touched
    opensearch.add_snapshot(OLD, [NAME], age_days=1)
    check = await run(status.snapshot_status, os_ctx(), indices="logs-*")
    assert check["unsnapshotted"] == []


def cloned_after_a_late_write(server: FakeOpenSearch) -> str:
    """The original index snapshotted 300 days ago and deleted; a late write recreates the name 250 days
    ago (1 document); 200 days ago the snapshot is renamed: cloned (start time: the cloning's; indices:
    the source's, SnapshotsService.cloneSnapshot) and the source deleted. The clone's uuid."""
    original = server.add_index(NAME, age_days=301, docs=10_000_000)
    source = server.add_snapshot("nightly-2025.06.02", [NAME], age_days=300)
    server.delete_index(NAME)
    server.add_index(NAME, age_days=250, docs=1)  # the late write
    clone = server.add_snapshot("keep-2025.06", [NAME], age_days=200)
    clone.copied, clone.captured = {NAME: original.uuid}, dict(source.captured)
    del server.repositories["opensearch-logs"].snapshots[source.name]
    return clone.uuid


async def test_a_clone_is_the_last_copy_though_the_live_index_is_older_than_it(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    cloned_after_a_late_write(opensearch)
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [{"snapshot": "keep-2025.06", "last_copy_of": [NAME]}]
    refused = await run(
        snapshots.delete_snapshots, os_ctx(), snapshots=[{"snapshot": "keep-2025.06", "last_copy_of": []}]
    )
    assert refused["deleted"] == [] and f"would lose {NAME} for good" in refused["refused"][0]["reason"]
    assert "keep-2025.06" in snapshots_left(opensearch)


async def test_a_red_live_index_is_no_copy_of_the_snapshot(opensearch: FakeOpenSearch, os_ctx: Ctx) -> None:
    """A red index (a primary shard unassigned: a node's disk died, logs kept with 0 replicas) is still
    listed with its uuid; the snapshot may be the only copy of that shard's documents. Even runbookd's
    own record of the uuid does not make it a copy then."""
    t0 = time.time()
    name = opensearch.add_index(NAME, age_days=2).name
    assert (await final_snapshot(os_ctx(now=t0), [name], name=OLD))["ok"] is True
    later = t0 + 200 * DAY
    assert (await run(plans.plan_snapshot_retention, os_ctx(now=later)))["delete"] == [
        {"snapshot": OLD, "last_copy_of": []}
    ]
    opensearch.indices[NAME].health = "red"
    plan = await run(plans.plan_snapshot_retention, os_ctx(now=later))
    assert plan["delete"] == [{"snapshot": OLD, "last_copy_of": [NAME]}]
    assert plan["snapshots"][0]["unproven_copies"][NAME] == [
        f"live index {NAME} is red: a primary shard is unassigned, so it is no full copy"
    ]
    refused = await run(
        snapshots.delete_snapshots, os_ctx(now=later), snapshots=[{"snapshot": OLD, "last_copy_of": []}]
    )
    assert refused["deleted"] == [] and OLD in snapshots_left(opensearch)


async def test_unproven_copies_names_a_few_later_snapshots_and_counts_the_rest(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    """Hourly snapshots of one long-lived index would otherwise list thousands of lines per snapshot."""
    opensearch.add_index(NAME, age_days=400)
    for h in range(8):
        opensearch.add_snapshot(f"hourly-{h}", [NAME], age_days=200 - h / 24)
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    by_name = {s["snapshot"]: s for s in plan["snapshots"]}
    doubts = by_name["hourly-0"]["unproven_copies"]
    assert len(doubts[NAME]) == 5  # the live index, three snapshots named, the rest counted
    assert doubts[NAME][-1] == f"4 later snapshot(s) list {NAME} too, none proven to copy it"


async def test_runbookd_snapshots_of_the_same_index_cover_each_other(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    """The seed's lifecycle: the nightly snapshot copies yesterday's index, the retention's final snapshot
    copies it again 13 days later, then the index is deleted. Past 180 days, the nightly snapshot is no
    last copy (the final one holds that very index: runbookd recorded its uuid for both); once both are
    past 180 days, the final one is."""
    t0 = time.time()
    clock = {"ms": int(t0 * 1000)}
    opensearch.now_ms = lambda: clock["ms"]
    name = opensearch.add_index(NAME, age_days=2).name
    nightly = await run(
        snapshots.create_snapshot, os_ctx(now=t0), indices=[name], name="nightly-x", poll_interval="10ms"
    )
    assert nightly["ok"] is True
    clock["ms"] += int(13 * DAY * 1000)
    at = t0 + 13 * DAY
    assert (await final_snapshot(os_ctx(now=at), [name], name="final-x"))["ok"] is True
    deleted = await run(indices.delete_indices, os_ctx(now=at), snapshot="final-x", indices=[name])
    assert deleted["deleted"] == [name]
    plan = await run(plans.plan_snapshot_retention, os_ctx(now=t0 + 190 * DAY))
    assert plan["delete"] == [{"snapshot": "nightly-x", "last_copy_of": []}]
    plan = await run(plans.plan_snapshot_retention, os_ctx(now=t0 + 200 * DAY))
    assert plan["delete"] == [
        {"snapshot": "nightly-x", "last_copy_of": []},
        {"snapshot": "final-x", "last_copy_of": [name]},
    ]
    out = await run(snapshots.delete_snapshots, os_ctx(now=t0 + 200 * DAY), snapshots=plan["delete"])
    assert out["deleted"] == ["nightly-x", "final-x"] and out["lost_for_good"] == [name]


# -- what runbookd recorded -------------------------------------------------------------------------------


async def test_a_record_says_which_index_even_when_creation_dates_would_not(
    opensearch: FakeOpenSearch, os_ctx: Ctx, os_memory: Any
) -> None:
    """A record from before runbookd confirmed uuids (``write_blocked`` only) proves a live index with
    that uuid; a live index with another uuid is not the copy, whatever its creation date says (an index
    restored from a snapshot keeps the creation date of the one snapshotted)."""
    idx = opensearch.add_index(NAME, age_days=300)
    snap = opensearch.add_snapshot(OLD, [NAME], age_days=200)
    record = {"indices": [NAME], "write_blocked": {NAME: idx.uuid}, "uuid": snap.uuid}
    await os_memory.put(snapshots.MEMORY, f"opensearch-logs/{OLD}", record)
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [{"snapshot": OLD, "last_copy_of": []}]
    opensearch.delete_index(NAME)
    restored = opensearch.add_index(NAME, age_days=300)  # same creation date, another index
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [{"snapshot": OLD, "last_copy_of": [NAME]}]
    assert plan["snapshots"][0]["unproven_copies"][NAME] == [
        f"live index {NAME} (uuid {restored.uuid}) is not the one runbookd recorded for {OLD} ({idx.uuid})"
    ]


async def test_a_record_of_another_snapshot_once_of_that_name_proves_nothing(
    opensearch: FakeOpenSearch, os_ctx: Ctx, os_memory: Any
) -> None:
    snap = opensearch.add_snapshot(OLD, [NAME], age_days=200)
    live = opensearch.add_index(NAME, age_days=100)
    record = {"indices": [NAME], "index_uuids": {NAME: live.uuid}, "copied": {NAME: live.uuid}}
    await os_memory.put(snapshots.MEMORY, f"opensearch-logs/{OLD}", {**record, "uuid": "not-" + snap.uuid})
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [{"snapshot": OLD, "last_copy_of": [NAME]}]
