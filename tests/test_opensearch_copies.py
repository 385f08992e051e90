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
    assert doubt.startswith(f"live index {NAME} (uuid {opensearch.indices[NAME].uuid}) was created ")
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
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    opensearch.add_index(NAME, age_days=300, docs=10_000_000)
    opensearch.add_snapshot(OLD, [NAME], age_days=200)
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [{"snapshot": OLD, "last_copy_of": []}]  # the index itself is still there
    opensearch.delete_index(NAME)  # then deleted, and a late write creates it again
    opensearch.add_index(NAME, docs=1)
    out = await run(snapshots.delete_snapshots, os_ctx(), snapshots=plan["delete"])
    assert out["deleted"] == [] and f"would lose {NAME} for good" in out["refused"][0]["reason"]
    assert OLD in snapshots_left(opensearch)


async def test_an_approved_loss_of_one_index_does_not_approve_another_of_the_same_name(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    """The plan names NAME under the oldest snapshot (an index deleted long ago) and nothing under OLD
    (the index it copied is still there); that index goes before the delete step: deleting OLD now loses
    it, which nobody approved, though the plan named an index of that name elsewhere."""
    opensearch.add_index(NAME, age_days=401, docs=5)
    opensearch.add_snapshot("oldest", [NAME], age_days=400)
    opensearch.delete_index(NAME)
    opensearch.add_index(NAME, age_days=300, docs=10_000_000)
    opensearch.add_snapshot(OLD, [NAME], age_days=200)
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


async def test_the_same_index_created_before_the_snapshot_and_still_there_is_a_copy(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    opensearch.add_index(NAME, age_days=300)
    opensearch.add_snapshot(OLD, [NAME], age_days=200)
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [{"snapshot": OLD, "last_copy_of": []}]
    assert "no index loses its last copy" in plan["message"]
    out = await run(snapshots.delete_snapshots, os_ctx(), snapshots=plan["delete"])
    assert out["deleted"] == [OLD] and out["lost_for_good"] == []
    assert NAME in opensearch.indices


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
