"""The shipped opensearch-snapshot and opensearch-retention runbooks, end to end: the real files from
runbooks/ in an in-process daemon (dry_run off) talking to the local OpenSearch server, started by hand
(``POST /api/v1/runs``, as ``runbookd trigger`` does) and walked with approvals through the HTTP API.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from support.inproc import Daemon, base_config, serve
from support.opensearch_server import FakeOpenSearch
from support.runs import states, steps_of, walk

from daemon.kits.clock import FrozenClock

REPO = Path(__file__).resolve().parent.parent
NAMES = ("opensearch-snapshot", "opensearch-retention")
RUNBOOKS = {n: (REPO / "runbooks" / f"{n}.yaml").read_text() for n in NAMES}


def config(tmp_path: Path, server: FakeOpenSearch, **overrides: Any) -> dict[str, Any]:
    section = {"url": server.url, "retries": 0, "timeout": "5s"}
    return base_config(tmp_path, **{"dry_run": False, "opensearch": section, **overrides})


async def trigger(d: Daemon, runbook: str, **params: Any) -> str:
    status, run = await d.call(
        "POST", "/api/v1/runs", token="alice", json={"runbook": runbook, "params": params}
    )
    assert status == 201, run
    return str(run["id"])


async def run_to_end(
    tmp_path: Path, opensearch: FakeOpenSearch, runbook: str, **overrides: Any
) -> tuple[dict[str, Any], list[str]]:
    """A daemon on ``opensearch`` runs ``runbook``, triggered by hand, every step approved as it comes:
    the run at its end and the steps approved, in order."""
    cfg = config(tmp_path, opensearch, **overrides)
    async with serve(tmp_path, RUNBOOKS, config=cfg, clock=FrozenClock(time.time())) as d:
        return await walk(d, await trigger(d, runbook))


def fast_polls(server: FakeOpenSearch, prefix: str, **control: Any) -> None:
    """The runbooks poll every 15s; the server ends the snapshot whose name starts with ``prefix`` (and
    today's date) at its first read instead."""
    server.outcomes[today(prefix)] = {"polls": 0, **control}


def today(prefix: str) -> str:
    return prefix + time.strftime("%Y.%m.%d", time.gmtime())


def taken(server: FakeOpenSearch, prefix: str) -> Any:
    """The one snapshot the run took: <prefix><date>-<end of the run id>."""
    (snap,) = [
        s for n, s in server.repositories["opensearch-logs"].snapshots.items() if n.startswith(today(prefix))
    ]
    return snap


def test_the_chart_ships_the_same_runbooks() -> None:
    for n in NAMES:
        assert (REPO / "deploy/helm/runbookd/files/runbooks" / f"{n}.yaml").read_text() == RUNBOOKS[n]
        assert RUNBOOKS[n].startswith("# Do NOT approve")


async def test_retention_blocks_late_writes_snapshots_then_deletes_only_verified_indices(
    tmp_path: Path, opensearch: FakeOpenSearch
) -> None:
    old = [
        opensearch.add_index(f"logs-2026.01.{d:02d}", age_days=a, docs=5).name for d, a in ((1, 20), (2, 16))
    ]
    young = opensearch.add_index("logs-2026.02.01", age_days=3).name
    opensearch.add_snapshot("logs-2025.06.01", ["logs-2025.05.31"], age_days=200)  # its index is long gone
    opensearch.add_snapshot("logs-2025.12.01", ["logs-2025.11.30"], age_days=60)
    fast_polls(opensearch, "retention-")
    late: dict[str, int] = {}

    def late_write_before_the_block() -> None:
        late["accepted"] = opensearch.write(old[0], 3)  # Fluent-bit flushing a backlog into an old index

    def late_write_after_the_block() -> None:
        late["refused"] = opensearch.write(old[0], 1)

    async with serve(
        tmp_path, RUNBOOKS, config=config(tmp_path, opensearch), clock=FrozenClock(time.time())
    ) as d:
        run_id = await trigger(d, "opensearch-retention")
        run, approved = await walk(
            d,
            run_id,
            before={"block": late_write_before_the_block, "final-snapshot": late_write_after_the_block},
        )
    assert run["state"] == "succeeded", run
    assert approved == [
        "repository",
        "plan-indices",
        "block",
        "final-snapshot",
        "delete-indices",
        "plan-snapshots",
        "delete-snapshots",
        "report",
    ]
    assert late == {"accepted": 201, "refused": 403}
    out = {k: s["output"] for k, s in steps_of(run).items()}
    assert out["plan-indices"]["indices"] == old and out["block"]["blocked"] == old
    snap = taken(opensearch, "retention-")
    assert snap.captured[old[0]] == 5 + 3  # the late write is in the final snapshot
    assert out["delete-indices"]["deleted"] == old
    assert set(opensearch.indices) == {young}
    calls = opensearch.calls()
    block = calls.index(("PUT", f"/{old[0]}/_settings"))
    start = calls.index(("PUT", f"/_snapshot/opensearch-logs/{snap.name}"))
    delete = calls.index(("DELETE", f"/{old[0]}"))
    assert block < start < delete
    assert out["plan-snapshots"]["delete"] == [
        {"snapshot": "logs-2025.06.01", "last_copy_of": ["logs-2025.05.31"]}
    ]
    assert set(opensearch.repositories["opensearch-logs"].snapshots) == {"logs-2025.12.01", snap.name}
    report = out["report"]["message"]
    assert "Indices: 2 index(es) deleted, 0 already gone, 0 refused." in report
    assert "deleting them loses 1 index(es) for good: logs-2025.05.31" in report


@pytest.mark.parametrize("state", ["PARTIAL", "FAILED"])
async def test_retention_deletes_nothing_when_the_final_snapshot_is_not_a_success(
    tmp_path: Path, opensearch: FakeOpenSearch, state: str
) -> None:
    old = opensearch.add_index("logs-2026.01.01", age_days=20).name
    fast_polls(opensearch, "retention-", outcome=state)
    run, approved = await run_to_end(tmp_path, opensearch, "opensearch-retention")
    assert run["state"] == "failed"
    assert approved[-1] == "final-snapshot" and states(run)["delete-indices"] == "pending"
    assert f"ended {state}" in steps_of(run)["final-snapshot"]["error"]
    assert old in opensearch.indices and opensearch.calls("DELETE") == []


async def test_snapshot_runbook_snapshots_yesterdays_indices_and_verifies(
    tmp_path: Path, opensearch: FakeOpenSearch
) -> None:
    held = opensearch.add_index("logs-held", age_days=3).name
    new = opensearch.add_index("logs-new", age_days=1.05).name
    opensearch.add_index("logs-today", age_days=0)  # not yet: created today
    opensearch.add_snapshot("logs-before", [held], age_days=2)
    fast_polls(opensearch, "logs-")
    run, approved = await run_to_end(tmp_path, opensearch, "opensearch-snapshot")
    assert run["state"] == "succeeded", run
    assert approved == ["repository", "status", "snapshot", "verify", "report"]
    out = {k: s["output"] for k, s in steps_of(run).items()}
    assert out["status"]["unsnapshotted"] == [new]
    assert taken(opensearch, "logs-").indices == [new]
    assert out["verify"]["ok"] is True and out["verify"]["problems"] == []
    assert "a verified copy of all 1 index(es)" in out["report"]["message"]


async def test_snapshot_runbook_with_a_pattern_matching_nothing_says_so(
    tmp_path: Path, opensearch: FakeOpenSearch
) -> None:
    opensearch.add_index("logstash-2026.01.01", age_days=2)
    run, _ = await run_to_end(tmp_path, opensearch, "opensearch-snapshot")
    assert run["state"] == "succeeded" and states(run)["snapshot"] == "skipped"
    assert "`logs-*` matches nothing" in steps_of(run)["report"]["output"]["message"]
    assert "logstash-" in steps_of(run)["report"]["output"]["message"]


async def _check(name: str, server: FakeOpenSearch, ctx: Any) -> tuple[bool, dict[str, Any]]:
    """Run a runbook's scheduled check as the check engine does: render its ``with`` over the default
    params, run the read-only action, render ``when`` over its output."""
    import yaml

    from daemon.actions.registry import default_registry
    from daemon.runbooks import templating
    from daemon.runbooks.schema import Runbook

    rb = Runbook.model_validate(yaml.safe_load(RUNBOOKS[name]))
    (trigger,) = rb.triggers
    assert trigger.check is not None and trigger.schedule is not None
    action = default_registry().get(trigger.check.action)
    assert action is not None and action.read_only
    params = templating.render(trigger.check.with_, {"params": rb.params, "schedule": {}, "check": {}})
    output = await action.run(ctx, action.params.model_validate(params))
    when = templating.render_value(
        trigger.check.when, {"params": rb.params, "schedule": {}, "check": {"output": output}}
    )
    return bool(when), output


@pytest.mark.parametrize("name", NAMES)
async def test_the_checks_ask_nobody_on_a_healthy_night_and_start_a_run_when_there_is_work(
    opensearch: FakeOpenSearch, os_ctx: Any, name: str
) -> None:
    done = opensearch.add_index("logs-2026.01.10", age_days=5).name
    opensearch.add_index("logs-today", age_days=0)
    opensearch.add_snapshot("logs-1", [done], age_days=4)
    work, output = await _check(name, opensearch, os_ctx())
    assert (work, output["findings"]) == (False, 0), output
    if name == "opensearch-snapshot":
        opensearch.add_index("logs-2026.01.11", age_days=1.5)  # yesterday's index, not snapshotted yet
    else:
        opensearch.add_snapshot("logs-0", ["logs-2025.01.01"], age_days=181)
    work, output = await _check(name, opensearch, os_ctx())
    assert (work, output["findings"]) == (True, 1), output


async def test_retention_in_dry_run_changes_nothing_and_records_the_requests(
    tmp_path: Path, opensearch: FakeOpenSearch
) -> None:
    old = opensearch.add_index("logs-2026.01.01", age_days=20).name
    opensearch.add_snapshot("logs-2025.06.01", ["logs-2025.05.31"], age_days=200)
    run, _ = await run_to_end(tmp_path, opensearch, "opensearch-retention", dry_run=True)
    assert run["state"] == "succeeded", run
    out = {k: s["output"] for k, s in steps_of(run).items()}
    assert [r["method"] for r in out["block"]["requests"]] == ["PUT"]
    assert [r["method"] for r in out["final-snapshot"]["requests"]] == ["PUT"]
    assert out["delete-indices"]["deleted"] == [] and out["delete-indices"]["refused"][0]["index"] == old
    assert out["delete-snapshots"]["requests"] == [
        {"method": "DELETE", "url": f"{opensearch.url}/_snapshot/opensearch-logs/logs-2025.06.01"}
    ]
    assert {m for m, _ in opensearch.calls()} == {"GET", "POST"}  # reads and _verify only
    assert old in opensearch.indices and not opensearch.indices[old].write_blocked
    assert "logs-2025.06.01" in opensearch.repositories["opensearch-logs"].snapshots


LATE = "logs-2025.06.01"
"""A daily index whose original (10M documents) is only in a 200-day-old snapshot, recreated since by a
late write (Fluent-bit flushing a backlog) with one document."""


def original_in_an_old_snapshot_then_recreated(server: FakeOpenSearch, *, recreated_days_ago: float) -> None:
    server.add_index(LATE, age_days=201, docs=10_000_000)
    server.add_snapshot("logs-2025.06.02", [LATE], age_days=200)
    server.delete_index(LATE)
    server.add_index(LATE, age_days=recreated_days_ago, docs=1)


async def _retention_up_to_the_snapshot_deletion(d: Daemon) -> tuple[str, dict[str, Any]]:
    """Walk a retention run up to its delete-snapshots step: the run and the parameters the approver is
    shown there."""
    run_id = await trigger(d, "opensearch-retention")
    run, _ = await walk(d, run_id, stop_at="delete-snapshots")
    return run_id, steps_of(run)["delete-snapshots"]["plan"]


async def test_retention_names_the_original_as_lost_though_a_late_write_recreated_its_index(
    tmp_path: Path, opensearch: FakeOpenSearch
) -> None:
    original_in_an_old_snapshot_then_recreated(opensearch, recreated_days_ago=5)
    async with serve(
        tmp_path, RUNBOOKS, config=config(tmp_path, opensearch), clock=FrozenClock(time.time())
    ) as d:
        run_id, shown = await _retention_up_to_the_snapshot_deletion(d)
        assert shown["snapshots"] == [{"snapshot": "logs-2025.06.02", "last_copy_of": [LATE]}]
        run, _ = await walk(d, run_id)
    assert run["state"] == "succeeded", run
    out = {k: s["output"] for k, s in steps_of(run).items()}
    assert out["plan-snapshots"]["delete"] == [{"snapshot": "logs-2025.06.02", "last_copy_of": [LATE]}]
    assert out["delete-snapshots"]["lost_for_good"] == [LATE]
    assert f"deleting them loses 1 index(es) for good: {LATE}" in out["report"]["message"]
    assert opensearch.indices[LATE].docs == 1  # the recreated index stays: it is 5 days old


async def test_retention_does_not_take_its_own_snapshot_of_the_recreated_index_for_the_original(
    tmp_path: Path, opensearch: FakeOpenSearch
) -> None:
    """The recreated index is past keep_days: the run blocks it, takes its final snapshot, deletes it, and
    then plans the old snapshot. That final snapshot lists the same name, but holds the one document."""
    original_in_an_old_snapshot_then_recreated(opensearch, recreated_days_ago=20)
    fast_polls(opensearch, "retention-")
    run, _ = await run_to_end(tmp_path, opensearch, "opensearch-retention")
    assert run["state"] == "succeeded", run
    out = {k: s["output"] for k, s in steps_of(run).items()}
    assert out["delete-indices"]["deleted"] == [LATE]
    assert taken(opensearch, "retention-").captured == {LATE: 1}
    assert out["plan-snapshots"]["delete"] == [{"snapshot": "logs-2025.06.02", "last_copy_of": [LATE]}]
    assert out["delete-snapshots"]["lost_for_good"] == [LATE]
