"""The opensearch.* actions against the local OpenSearch 2.x server (tests/support/opensearch_server.py).

The guards under test, each with a test that fails without it: a PARTIAL snapshot is no copy; a SUCCESS
snapshot that does not list the index is no copy; a snapshot re-read as FAILED right before the delete
stops it; an index not write-blocked when runbookd started its snapshot is never deleted (late writes);
a snapshot younger than snapshot_keep_days is never deleted; a pattern matching nothing is a finding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from support.opensearch_fixtures import client_for
from support.opensearch_server import FakeOpenSearch

from daemon.actions.base import Action, ActionContext, Clients
from daemon.actions.opensearch import blocks, indices, plans, snapshots, status
from daemon.actions.opensearch.snapshots import render_name
from daemon.clients.opensearch import OpenSearchClient, OpenSearchPermanentError, OpenSearchTemporaryError
from daemon.errors import PermanentError

Ctx = Callable[..., ActionContext]


async def run(a: Action, ctx: ActionContext, **params: Any) -> dict[str, Any]:
    return await a.run(ctx, a.params.model_validate(params))


def logs(server: FakeOpenSearch, *ages: float) -> list[str]:
    """Daily indices logs-2026.01.DD, one per age in days."""
    return [server.add_index(f"logs-2026.01.{n:02d}", age_days=age).name for n, age in enumerate(ages, 1)]


async def final_snapshot(ctx: ActionContext, names: list[str], name: str = "final-{date}") -> dict[str, Any]:
    await run(blocks.block_writes, ctx, indices=names)
    return await run(
        snapshots.create_snapshot, ctx, indices=names, name=name, poll_interval="10ms", timeout="10s"
    )


# -- client: errors and retries ----------------------------------------------------------------------------


async def test_429_and_503_are_retried_with_backoff_then_succeed(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    logs(opensearch, 1)
    opensearch.fail_next(429, times=1, match="_cat/indices", retry_after="0")
    opensearch.fail_next(503, times=1, match="_cat/indices")
    out = await run(status.snapshot_status, os_ctx(), indices="logs-*")
    assert out["matched"] == 1
    assert [p for _, p in opensearch.calls("GET")].count("/_cat/indices/logs-*") == 3


async def test_5xx_beyond_the_retries_is_a_temporary_error(
    opensearch: FakeOpenSearch, os_client: OpenSearchClient
) -> None:
    opensearch.fail_next(503, times=10, match="_snapshot", type_="cluster_manager_not_discovered_exception")
    with pytest.raises(OpenSearchTemporaryError) as err:
        await os_client.get_snapshots("opensearch-logs")
    assert err.value.status == 503 and err.value.kind == "unavailable"
    assert "cluster_manager_not_discovered_exception" in str(err.value)
    assert len(opensearch.requests) == 3  # the first attempt and two retries


async def test_500_is_not_retried(opensearch: FakeOpenSearch, os_client: OpenSearchClient) -> None:
    opensearch.fail_next(500, times=10, type_="exception", reason="boom")
    with pytest.raises(OpenSearchPermanentError) as err:
        await os_client.get_snapshots("opensearch-logs")
    assert err.value.kind == "server_error" and len(opensearch.requests) == 1


async def test_401_is_permanent_and_never_shows_the_password(opensearch: FakeOpenSearch) -> None:
    from pydantic import SecretStr

    opensearch.users = {"runbookd": "right-password"}
    bad = client_for(opensearch, username=SecretStr("runbookd"), password=SecretStr("wrong-password"))
    good = client_for(opensearch, username=SecretStr("runbookd"), password=SecretStr("right-password"))
    try:
        with pytest.raises(OpenSearchPermanentError) as err:
            await bad.get_snapshots("opensearch-logs")
        assert err.value.kind == "credentials" and err.value.status == 401
        assert "wrong-password" not in str(err.value) and "opensearch.username/password" in str(err.value)
        assert len(opensearch.requests) == 1
        assert await good.get_snapshots("opensearch-logs") == []
    finally:
        await bad.close()
        await good.close()


async def test_bearer_token(opensearch: FakeOpenSearch) -> None:
    from pydantic import SecretStr

    opensearch.tokens = {"jwt-1"}
    c = client_for(opensearch, token=SecretStr("jwt-1"))
    try:
        assert await c.get_repository("opensearch-logs") is not None
    finally:
        await c.close()


async def test_403_names_the_missing_permission(opensearch: FakeOpenSearch, os_ctx: Ctx) -> None:
    old = logs(opensearch, 20)
    opensearch.forbidden = {"PUT /logs-2026.01.01/_settings"}
    with pytest.raises(OpenSearchPermanentError) as err:
        await run(blocks.block_writes, os_ctx(), indices=old)
    assert err.value.kind == "forbidden" and "security_exception: no permissions" in str(err.value)


async def test_unreachable_is_temporary() -> None:
    from support.ports import closed_port

    c = OpenSearchClient(f"http://127.0.0.1:{closed_port()}", retries=0, timeout=2.0)
    try:
        with pytest.raises(OpenSearchTemporaryError) as err:
            await c.get_snapshots("opensearch-logs")
        assert err.value.kind == "unreachable"
    finally:
        await c.close()


async def test_without_the_config_section_the_steps_fail_clearly() -> None:
    from support.action_memory import DictActionMemory

    ctx = ActionContext("r", "s", "rb", False, Clients(), DictActionMemory())
    with pytest.raises(PermanentError, match="opensearch is not configured"):
        await run(plans.plan_index_retention, ctx)


# -- plans -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a", [plans.plan_index_retention, plans.retention_check, status.snapshot_status])
async def test_a_pattern_matching_nothing_is_a_finding(
    opensearch: FakeOpenSearch, os_ctx: Ctx, a: Action
) -> None:
    opensearch.add_index("logstash-2026.01.01", age_days=30)
    out = await run(a, os_ctx(), indices="logs-*")
    assert out["no_match"] is True and out["findings"] >= 1
    assert "`logs-*` matches nothing" in out["message"] and "`logstash-`" in out["message"]


async def test_index_plan_names_the_verified_snapshot_of_each_old_index(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    a, b, c, d, young = logs(opensearch, 30, 25, 20, 16, 3)
    opensearch.add_index("logs-closed", age_days=40, status="close")
    opensearch.add_index("logs-aliased", age_days=40, aliases={"logs-write": {"is_write_index": True}})
    ds = opensearch.add_data_stream("logs-app", 2, age_days=40)
    opensearch.add_snapshot("s-ok", [a, b], age_days=1)
    opensearch.add_snapshot("s-partial", [c], state="PARTIAL", failed_indices=[c])
    opensearch.add_snapshot("s-without-d", [a])  # SUCCESS, but d is not in it
    out = await run(plans.plan_index_retention, os_ctx(), indices="logs-*", keep_days=14)
    assert out["indices"] == [ds[0], a, b, c, d]
    verified = {i["index"]: i["verified_snapshot"] for i in out["items"]}
    assert verified == {ds[0]: None, a: "s-without-d", b: "s-ok", c: None, d: None}
    assert {i["index"]: i["note"] for i in out["items"]}[c] == "no verified snapshot"
    assert sorted(p["index"] for p in out["protected"]) == [ds[1], "logs-aliased"]
    assert young not in out["indices"] and "logs-closed" not in out["indices"]
    assert out["findings"] == 5


async def test_snapshot_plan_never_takes_a_young_or_running_one_and_names_the_last_copies(
    opensearch: FakeOpenSearch, os_ctx: Ctx, os_memory: Any
) -> None:
    live = logs(opensearch, 300)[0]  # still there, and runbookd recorded old-1 copying it: no last copy
    old1 = opensearch.add_snapshot("old-1", ["logs-a", "logs-b", live], age_days=200)
    uuids = {live: opensearch.indices[live].uuid}
    record = {"indices": old1.indices, "index_uuids": uuids, "copied": uuids, "uuid": old1.uuid}
    await os_memory.put(snapshots.MEMORY, "opensearch-logs/old-1", record)
    opensearch.add_snapshot("old-2", ["logs-b", "logs-c"], age_days=190)
    opensearch.add_snapshot("old-partial", ["logs-d"], age_days=185, state="PARTIAL")
    opensearch.add_snapshot("young", ["logs-c", "logs-e"], age_days=179)
    opensearch.add_snapshot("running", ["logs-f"], age_days=300, state="IN_PROGRESS")
    out = await run(plans.plan_snapshot_retention, os_ctx(), snapshot_keep_days=180)
    assert [s["snapshot"] for s in out["snapshots"]] == ["old-1", "old-2", "old-partial"]
    # logs-b in old-2 and logs-c in "young" share a name with old-1's and old-2's, but nothing recorded
    # proves they are the same indices (tests/test_opensearch_copies.py has the records that do).
    assert out["delete"] == [
        {"snapshot": "old-1", "last_copy_of": ["logs-a", "logs-b"]},
        {"snapshot": "old-2", "last_copy_of": ["logs-b", "logs-c"]},
        {"snapshot": "old-partial", "last_copy_of": ["logs-d"]},
    ]
    assert out["snapshots"][1]["unproven_copies"] == {
        "logs-c": ["snapshot young lists logs-c, but nothing proves it copied the same index"]
    }
    assert out["lost_for_good"] == ["logs-a", "logs-b", "logs-c", "logs-d"]
    assert out["in_progress"] == ["running"]
    assert "loses 4 index(es) for good: logs-a, logs-b, logs-c, logs-d" in out["message"]


# -- delete_snapshots --------------------------------------------------------------------------------------


async def test_a_snapshot_younger_than_keep_days_is_never_deleted(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    opensearch.add_snapshot("young", ["logs-x"], age_days=179)
    opensearch.add_snapshot("running", ["logs-y"], age_days=400, state="IN_PROGRESS")
    out = await run(
        snapshots.delete_snapshots,
        os_ctx(),
        snapshot_keep_days=180,
        snapshots=[
            {"snapshot": "young", "last_copy_of": ["logs-x"]},
            {"snapshot": "running", "last_copy_of": ["logs-y"]},
        ],
    )
    assert out["ok"] is False and out["deleted"] == []
    assert [r["snapshot"] for r in out["refused"]] == ["young", "running"]
    assert "within 180d" in out["refused"][0]["reason"] and "IN_PROGRESS" in out["refused"][1]["reason"]
    assert set(opensearch.repositories["opensearch-logs"].snapshots) == {"young", "running"}
    assert opensearch.calls("DELETE") == []


async def test_snapshot_deletion_refuses_a_loss_the_plan_did_not_name(
    opensearch: FakeOpenSearch, os_ctx: Ctx, os_memory: Any
) -> None:
    b = opensearch.add_index("logs-b", age_days=300)
    opensearch.add_snapshot("old-1", ["logs-a"], age_days=200)
    old2 = opensearch.add_snapshot("old-2", ["logs-b"], age_days=190)
    uuids = {"logs-b": b.uuid}  # runbookd took old-2: the live logs-b is its other copy
    record = {"indices": ["logs-b"], "index_uuids": uuids, "copied": uuids, "uuid": old2.uuid}
    await os_memory.put(snapshots.MEMORY, "opensearch-logs/old-2", record)
    plan = await run(plans.plan_snapshot_retention, os_ctx())
    assert plan["delete"] == [
        {"snapshot": "old-1", "last_copy_of": ["logs-a"]},
        {"snapshot": "old-2", "last_copy_of": []},
    ]
    opensearch.delete_index("logs-b")  # logs-b's other copy goes meanwhile
    out = await run(snapshots.delete_snapshots, os_ctx(), snapshots=plan["delete"])
    assert out["deleted"] == ["old-1"] and out["lost_for_good"] == ["logs-a"]
    assert out["refused"][0]["snapshot"] == "old-2" and "would lose logs-b" in out["refused"][0]["reason"]
    assert opensearch.calls("DELETE") == [("DELETE", "/_snapshot/opensearch-logs/old-1")]


# -- block_writes ------------------------------------------------------------------------------------------


async def test_block_writes_refuses_young_and_write_indices_and_its_undo_clears_only_its_own(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    old, done, young = logs(opensearch, 20, 21, 1)
    opensearch.indices[done].settings["index.blocks.write"] = "true"
    ds = opensearch.add_data_stream("logs-app", 1, age_days=30)
    out = await run(blocks.block_writes, os_ctx(), indices=[old, done, young, ds[0], "logs-gone"])
    assert out["blocked"] == [old] and out["already_blocked"] == [done] and out["gone"] == ["logs-gone"]
    assert {r["index"]: r["reason"] for r in out["refused"]} == {
        young: "created less than 14d ago",
        ds[0]: "current backing (write) index of data stream logs-app",
    }
    assert opensearch.write(old) == 403 and opensearch.write(young) == 201
    undo = await run(blocks.unblock_writes, os_ctx(), indices=out["blocked"])
    assert undo["unblocked"] == [old]
    assert opensearch.write(old) == 201 and opensearch.indices[done].write_blocked


# -- create_snapshot ---------------------------------------------------------------------------------------


async def test_create_snapshot_waits_for_success_and_records_the_blocks_at_its_start(
    opensearch: FakeOpenSearch, os_ctx: Ctx, os_memory: Any
) -> None:
    names = logs(opensearch, 20, 21)
    opensearch.outcomes["final-x"] = {"polls": 3}
    out = await final_snapshot(os_ctx(), names, name="final-x")
    assert out["ok"] is True and out["state"] == "SUCCESS" and out["write_blocked_at_start"] == sorted(names)
    (put,) = [r for r in opensearch.requests if r[0] == "PUT" and r[1].startswith("/_snapshot")]
    assert put[3] == {
        "indices": ",".join(names),
        "ignore_unavailable": False,
        "include_global_state": False,
        "partial": False,
    }
    assert ("GET", "/_snapshot/opensearch-logs/_current") in opensearch.calls()
    record = await os_memory.get(snapshots.MEMORY, "opensearch-logs/final-x")
    assert record["uuid"] == opensearch.snapshot("final-x").uuid


async def test_create_snapshot_records_the_uuid_of_each_index_it_copied(
    opensearch: FakeOpenSearch, os_ctx: Ctx, os_memory: Any
) -> None:
    a = opensearch.add_index("logs-2026.01.01", age_days=20)
    b = opensearch.add_index("logs-2026.01.02", age_days=21)
    start = opensearch._create_snapshot

    def b_recreated_just_before_the_start(*args: Any) -> Any:
        opensearch.delete_index(b.name)  # between runbookd's read of b and the snapshot's start
        opensearch.add_index(b.name, docs=1)
        return start(*args)

    opensearch._create_snapshot = b_recreated_just_before_the_start  # type: ignore[method-assign]
    out = await run(
        snapshots.create_snapshot, os_ctx(), indices=[a.name, b.name], name="final-x", poll_interval="10ms"
    )
    assert out["ok"] is True
    record = await os_memory.get(snapshots.MEMORY, "opensearch-logs/final-x")
    assert record["index_uuids"] == {a.name: a.uuid, b.name: b.uuid}  # read before the start
    assert record["copied"] == {a.name: a.uuid}  # b's uuid changed: which b it copied is not proven
    assert opensearch.snapshot("final-x").copied[b.name] != b.uuid


@pytest.mark.parametrize("state", ["PARTIAL", "FAILED"])
async def test_create_snapshot_reports_partial_and_failed_as_failure(
    opensearch: FakeOpenSearch, os_ctx: Ctx, state: str
) -> None:
    names = logs(opensearch, 20)
    opensearch.outcomes["final-x"] = {"outcome": state}
    out = await final_snapshot(os_ctx(), names, name="final-x")
    assert out["ok"] is False and out["state"] == state and f"ended {state}" in out["message"]


async def test_no_second_snapshot_of_the_same_indices_while_one_runs(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    a, b = logs(opensearch, 20, 21)
    opensearch.add_snapshot("nightly", [a], state="IN_PROGRESS")
    out = await run(snapshots.create_snapshot, os_ctx(), indices=[a, b], name="final-x", poll_interval="10ms")
    assert out["ok"] is False and "nightly (logs-2026.01.01)" in out["message"]
    assert "final-x" not in opensearch.repositories["opensearch-logs"].snapshots


async def test_over_the_concurrency_limit_opensearch_answers_503(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    a, b = logs(opensearch, 20, 21)
    opensearch.max_concurrent_operations = 1
    opensearch.add_snapshot("other", [a], state="IN_PROGRESS")
    with pytest.raises(OpenSearchTemporaryError) as err:
        await run(snapshots.create_snapshot, os_ctx(), indices=[b], name="final-x", poll_interval="10ms")
    assert err.value.kind == "concurrent_snapshots" and "current limit for concurrent snapshot" in str(
        err.value
    )


async def test_a_rerun_waits_for_the_snapshot_it_started_instead_of_starting_another(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    names = logs(opensearch, 20)
    opensearch.outcomes["final-x"] = {"held": True}
    first = await run(
        snapshots.create_snapshot,
        os_ctx(),
        indices=names,
        name="final-x",
        poll_interval="10ms",
        timeout="50ms",
    )
    assert first["ok"] is False and "still IN_PROGRESS" in first["message"]
    opensearch.finish("final-x")
    again = await run(
        snapshots.create_snapshot, os_ctx(), indices=names, name="final-x", poll_interval="10ms"
    )
    assert again["ok"] is True
    assert len([r for r in opensearch.requests if r[0] == "PUT" and "_snapshot" in r[1]]) == 1


def test_snapshot_names_come_from_the_template_and_the_utc_date() -> None:
    assert render_name("logs-{date}", 1_800_000_000) == "logs-2027.01.15"
    assert render_name("final-{date}-{time}", 1_800_000_000) == "final-2027.01.15-080000"
    with pytest.raises(ValueError, match="not a valid snapshot name template"):
        snapshots.CreateParams(indices=["a"], name="Logs-{date}")
    with pytest.raises(ValueError, match="not a valid snapshot name template"):
        snapshots.CreateParams(indices=["a"], name="logs-{year}")


# -- delete_indices ----------------------------------------------------------------------------------------


async def test_verified_indices_are_deleted_one_by_one_by_exact_name(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    names = logs(opensearch, 20, 21)
    snap = await final_snapshot(os_ctx(), names, name="final-x")
    out = await run(indices.delete_indices, os_ctx(), snapshot=snap["snapshot"], indices=names)
    assert out["ok"] is True and out["deleted"] == names
    assert opensearch.calls("DELETE") == [("DELETE", f"/{n}") for n in names]
    assert not set(names) & set(opensearch.indices)


async def test_partial_snapshot_means_the_index_is_not_deleted(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    a, b = logs(opensearch, 20, 21)
    opensearch.outcomes["final-x"] = {"outcome": "PARTIAL", "failed_indices": [b]}
    await final_snapshot(os_ctx(), [a, b], name="final-x")
    out = await run(indices.delete_indices, os_ctx(), snapshot="final-x", indices=[a, b])
    assert out["deleted"] == [] and {a, b} <= set(opensearch.indices)
    assert out["refused"][0]["reason"] == "snapshot final-x is PARTIAL, not SUCCESS"
    assert opensearch.calls("DELETE") == []


async def test_success_snapshot_that_does_not_list_the_index_means_not_deleted(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    a, b = logs(opensearch, 20, 21)
    opensearch.outcomes["final-x"] = {"omit": [b]}  # SUCCESS, yet b is not in it
    snap = await final_snapshot(os_ctx(), [a, b], name="final-x")
    assert snap["ok"] is False and snap["state"] == "SUCCESS"
    out = await run(indices.delete_indices, os_ctx(), snapshot="final-x", indices=[a, b])
    assert out["deleted"] == [a] and b in opensearch.indices
    assert out["refused"] == [{"index": b, "reason": f"snapshot final-x does not list index {b}"}]


async def test_snapshot_turned_failed_between_plan_and_delete_means_not_deleted(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    names = logs(opensearch, 20)
    snap = await final_snapshot(os_ctx(), names, name="final-x")
    assert snap["ok"] is True
    opensearch.set_state("final-x", "FAILED")
    out = await run(indices.delete_indices, os_ctx(), snapshot="final-x", indices=names)
    assert out["deleted"] == [] and names[0] in opensearch.indices
    assert "is FAILED, not SUCCESS" in out["refused"][0]["reason"]


async def test_an_index_not_write_blocked_when_its_snapshot_started_is_not_deleted(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    """A late write after an unblocked snapshot would be lost with the index."""
    a, b = logs(opensearch, 20, 21)
    snap = await run(
        snapshots.create_snapshot, os_ctx(), indices=[a, b], name="final-x", poll_interval="10ms"
    )
    assert snap["ok"] is True and snap["not_write_blocked_at_start"] == [a, b]
    assert opensearch.write(a) == 201  # the late write the snapshot does not hold
    await run(blocks.block_writes, os_ctx(), indices=[a, b])  # blocked only now, after the snapshot
    out = await run(indices.delete_indices, os_ctx(), snapshot="final-x", indices=[a, b])
    assert out["deleted"] == [] and {a, b} <= set(opensearch.indices)
    assert "was not started by runbookd while this index was write-blocked" in out["refused"][0]["reason"]


async def test_an_index_unblocked_after_its_snapshot_is_not_deleted(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    names = logs(opensearch, 20)
    await final_snapshot(os_ctx(), names, name="final-x")
    await run(blocks.unblock_writes, os_ctx(), indices=names)
    out = await run(indices.delete_indices, os_ctx(), snapshot="final-x", indices=names)
    assert out["deleted"] == [] and "not write-blocked now" in out["refused"][0]["reason"]


async def test_never_a_write_index_nor_a_young_one_nor_one_being_snapshotted(
    opensearch: FakeOpenSearch, os_ctx: Ctx, os_memory: Any
) -> None:
    a, b = logs(opensearch, 20, 21)
    await final_snapshot(os_ctx(), [a, b], name="final-x")
    opensearch.indices[a].aliases = {"logs-write": {}}  # its only index: OpenSearch writes there
    opensearch.add_snapshot("nightly", [b], state="IN_PROGRESS")
    out = await run(indices.delete_indices, os_ctx(), snapshot="final-x", indices=[a, b], keep_days=30)
    assert out["deleted"] == []
    assert [r["reason"] for r in out["refused"]] == ["created less than 30d ago"] * 2
    out = await run(indices.delete_indices, os_ctx(), snapshot="final-x", indices=[a, b])
    reasons = {r["index"]: r["reason"] for r in out["refused"]}
    assert reasons[a] == "only index (so the write index) of alias logs-write"
    assert "snapshot_in_progress_exception: Cannot delete indices that are being snapshotted" in reasons[b]
    assert {a, b} <= set(opensearch.indices)


@pytest.mark.parametrize("bad", ["logs-*", "logs-a,logs-b", "_all", ".kibana", "Logs", "../x", "logs a"])
def test_index_names_are_exact_and_never_wildcards(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a valid index name"):
        indices.DeleteIndicesParams(snapshot="s", indices=[bad])


async def test_dry_run_records_the_requests_and_changes_nothing(
    opensearch: FakeOpenSearch, os_ctx: Ctx
) -> None:
    names = logs(opensearch, 20)
    out = await run(blocks.block_writes, os_ctx(dry_run=True), indices=names)
    assert out["dry_run"] is True and out["requests"] == [
        {
            "method": "PUT",
            "url": f"{opensearch.url}/{names[0]}/_settings",
            "body": {"index.blocks.write": True},
        }
    ]
    assert not opensearch.indices[names[0]].write_blocked
    assert [m for m, _ in opensearch.calls()] == ["GET"] * len(opensearch.requests)


# -- repository_check --------------------------------------------------------------------------------------


async def test_repository_check(opensearch: FakeOpenSearch, os_ctx: Ctx) -> None:
    ok = await run(status.repository_check, os_ctx())
    assert ok["ok"] is True and ok["verified_nodes"] == ["node-1"]
    repo = opensearch.repositories["opensearch-logs"]
    repo.verify_error = "store location [s3://opensearch-logs] is not accessible on the node [node-1]"
    repo.settings["bucket"] = "thanos"
    bad = await run(status.repository_check, os_ctx())
    assert bad["ok"] is False and len(bad["problems"]) == 2
    assert "points at bucket 'thanos', not opensearch-logs" in bad["message"]
    assert "repository_verification_exception" in bad["message"]
    missing = await run(status.repository_check, os_ctx(), repository="nope")
    assert missing["problems"] == ["repository nope does not exist"]


@pytest.mark.parametrize(
    "name", ["opensearch.block_writes", "opensearch.create_snapshot", "opensearch.delete_indices"]
)
def test_a_mutating_step_names_each_index_once(name: str) -> None:
    from daemon.actions.registry import default_registry

    action = default_registry().get(name)
    assert action is not None
    params = {"indices": ["logs-2026.01.01", "logs-2026.01.01"], "repository": "opensearch-logs"}
    if name == "opensearch.delete_indices":
        params["snapshot"] = "final-2026.01.15"
    if name == "opensearch.block_writes":
        params.pop("repository")
    with pytest.raises(ValidationError, match="an index is listed more than once"):
        action.params.model_validate(params)
