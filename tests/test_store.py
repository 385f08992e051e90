"""The store contract, run on both backends (SQLite file, real PostgreSQL): the same Tx methods give the
same answers, transactions commit or roll back whole, and migrations are versioned and idempotent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from support.postgres import PostgresServer

from daemon.engine.views import run_summary
from daemon.errors import StoreUnavailable
from daemon.kits.clock import iso
from daemon.store import migrations
from daemon.store.base import StateStore
from daemon.store.postgres import PgSettings, PgStore
from daemon.store.records import ApprovalRecord, EventRecord, RunRecord, RunState, StepRecord, StepState
from daemon.store.sqlite import Store


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    s: StateStore
    if request.param == "sqlite":
        s = await Store.open(tmp_path / "state.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        s = await PgStore.open(PgSettings(server.fresh_database()))
    yield s
    await s.close()


def _run(run_id: str = "r1", state: RunState = RunState.AWAITING_APPROVAL, **kw: object) -> RunRecord:
    base: dict[str, object] = {
        "id": run_id,
        "runbook": "rb",
        "target": "t1",
        "state": state,
        "trigger": "alert",
        "requester": None,
        "params": {"a": 1},
        "context": {"alert": {"labels": {"x": "y"}}},
        "definition": {"name": "rb"},
        "created_at": 100.0,
        "updated_at": 100.0,
        "dry_run": True,
    }
    base.update(kw)
    return RunRecord(**base)  # type: ignore[arg-type]


def _step(run_id: str = "r1", idx: int = 0, state: StepState = StepState.PENDING) -> StepRecord:
    return StepRecord(run_id, idx, f"s{idx}", "notify.log", state, mutating=True, idempotent=False)


async def test_runs_and_steps_round_trip_and_upsert(store: StateStore) -> None:
    async with store.transaction() as tx:
        await tx.save_run(_run())
        await tx.save_step(_step())
    async with store.transaction() as tx:
        run = await tx.get_run("r1")
        assert run == _run()
        run.state, run.current_step, run.mutated = RunState.RUNNING, 1, True
        await tx.save_run(run)  # whole-row replace
        st = (await tx.steps_of("r1"))[0]
        st.state, st.plan, st.output = StepState.RUNNING, {"k": [1, 2]}, {"ok": True}
        await tx.save_step(st)
    async with store.transaction() as tx:
        again = await tx.get_run("r1")
        assert again is not None and again.state == RunState.RUNNING and again.mutated is True
        assert await tx.active_run_ref("rb", "t1") == ("r1", False)
        assert (await tx.steps_of("r1"))[0].plan == {"k": [1, 2]}
        assert await tx.running_mutating_steps() == 1
        assert [s.step_id for s in await tx.steps_in_state(StepState.RUNNING)] == ["s0"]
        assert await tx.count_runs_by_state() == {"running": 1}
        assert [r.id for r in await tx.list_runs("running")] == ["r1"]


async def test_steps_saved_together_round_trip_and_upsert(store: StateStore) -> None:
    async with store.transaction() as tx:
        await tx.save_run(_run())
        await tx.save_steps([_step(idx=i) for i in range(3)])
        await tx.save_steps([])  # nothing to write
    async with store.transaction() as tx:
        steps = await tx.steps_of("r1")
        assert steps == [_step(idx=i) for i in range(3)]
        steps[1].state, steps[1].plan = StepState.AWAITING_APPROVAL, {"q": "up"}
        await tx.save_steps(steps[1:2])  # whole-row replace of one, the others untouched
    async with store.transaction() as tx:
        assert [s.state for s in await tx.steps_of("r1")] == [
            StepState.PENDING,
            StepState.AWAITING_APPROVAL,
            StepState.PENDING,
        ]
        assert (await tx.steps_of("r1"))[1].plan == {"q": "up"}


async def test_a_failed_transaction_leaves_nothing(store: StateStore) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.transaction() as tx:
            await tx.save_run(_run())
            raise Boom
    async with store.transaction() as tx:
        assert await tx.get_run("r1") is None


async def test_a_savepoint_undoes_only_its_part(store: StateStore) -> None:
    async with store.transaction() as tx:
        await tx.save_run(_run("keep"))
        with pytest.raises(ValueError):
            async with tx.savepoint("one"):
                await tx.save_run(_run("drop"))
                raise ValueError("bad notification")
    async with store.transaction() as tx:
        assert await tx.get_run("keep") is not None
        assert await tx.get_run("drop") is None


async def test_approvals_count_once_and_timeline_keeps_order(store: StateStore) -> None:
    a = ApprovalRecord("r1", "s0", "alice", "api", "h1", 5.0)
    async with store.transaction() as tx:
        await tx.save_run(_run())
        await tx.add_approval(a)
        await tx.add_approval(a)  # the same approval twice is recorded once
        for i in range(3):
            await tx.add_event(EventRecord("r1", float(i), f"e{i}", "runbookd", {"i": i}))
    async with store.transaction() as tx:
        assert await tx.approvals_of("r1") == [a]
        assert [(e.event, e.detail) for e in await tx.events_of("r1")] == [
            (f"e{i}", {"i": i}) for i in range(3)
        ]


async def test_alerts_links_and_inbox(store: StateStore) -> None:
    async with store.transaction() as tx:
        await tx.save_run(_run())
        await tx.link_alert("fp", "rb", "r1")
        await tx.link_alert("fp", "rb", "r1")
        assert await tx.firing_alerts_of("r1") == 1
        assert await tx.resolve_alert("fp") == {"r1"}
        assert await tx.resolve_alert("fp") == set()  # resolved already: nothing changed
        assert await tx.firing_alerts_of("r1") == 0
        # new, firing again, and already firing: only the first two changed anything
        assert await tx.link_alerts([("fp", "rb", "r1"), ("fp2", "rb", "r1")]) == {
            ("fp", "rb", "r1"),
            ("fp2", "rb", "r1"),
        }
        assert await tx.link_alerts([("fp", "rb", "r1"), ("fp3", "rb", "r1")]) == {("fp3", "rb", "r1")}
        assert await tx.firing_alerts_of("r1") == 3
        assert [r.id for r in await tx.runs_for_alert("fp")] == ["r1"]
        assert (
            await tx.append_inbox([(1.0, 2, '{"a": 1}', None, None), (1.5, 1, '{"b": "50%?"}', None, None)])
            == 1
        )
    async with store.transaction() as tx:
        assert await tx.last_inbox_seq() == 2
        assert await tx.unrouted(10) == [(1, '{"a": 1}'), (2, '{"b": "50%?"}')]
        await tx.mark_routed(1, 3.0, {"started": ["r1"]})
        assert await tx.unrouted(10) == [(2, '{"b": "50%?"}')]
        got = await tx.receipt(1)
        assert got == {
            "receipt": 1,
            "received_at": 1.0,
            "alerts": 2,
            "routed_at": 3.0,
            "result": {"started": ["r1"]},
        }


async def test_kv_and_deadlines(store: StateStore) -> None:
    async with store.transaction() as tx:
        await tx.kv_put("ns", "k", {"v": 1})
        await tx.kv_put("ns", "k", {"v": 2})
        await tx.kv_put("ns", "j", {"v": 3})
        await tx.save_run(_run())
        st = _step(state=StepState.AWAITING_APPROVAL)
        st.requested_at, st.deadline = 10.0, 50.0
        await tx.save_step(st)
    async with store.transaction() as tx:
        assert await tx.kv_get("ns", "k") == {"v": 2}
        assert await tx.kv_items("ns") == {"k": {"v": 2}, "j": {"v": 3}}
        await tx.kv_delete("ns", "k")
        assert await tx.kv_get("ns", "k") is None
        assert [s.step_id for s in await tx.steps_due_before(50.0)] == ["s0"]
        assert await tx.steps_due_before(49.0) == []
        assert await tx.oldest_awaiting_approval() == 10.0


async def test_migrations_are_recorded_and_not_applied_twice(store: StateStore, tmp_path: Path) -> None:
    async with store.transaction() as tx:
        rows = await tx._all("SELECT version FROM schema_migrations ORDER BY version")
    versions = [int(r["version"]) for r in rows]
    expected = [
        m.version for m in migrations.MIGRATIONS if store.backend == "postgresql" or not m.postgresql_only
    ]
    assert versions == ([1] if store.backend == "postgresql" else []) + expected
    if isinstance(store, PgStore):  # opening again applies nothing
        again = await PgStore.open(store.settings)
        await again.close()
    else:
        again2 = await Store.open(tmp_path / "state.db")
        await again2.close()
    async with store.transaction() as tx:
        rows = await tx._all("SELECT version FROM schema_migrations ORDER BY version")
    assert [int(r["version"]) for r in rows] == versions


async def test_postgresql_unreachable_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        await PgStore.open(
            PgSettings("postgresql://nobody@127.0.0.1:1/none", password="s3cret", connect_timeout=2)
        )


async def test_postgresql_inbox_commits_wake_other_replicas(postgres_server: PostgresServer) -> None:
    """A notification stored by one replica wakes the router of another at once (LISTEN/NOTIFY), not at
    its next tick."""
    import asyncio

    url = postgres_server.fresh_database()
    leader, follower = await PgStore.open(PgSettings(url)), await PgStore.open(PgSettings(url))
    woken = asyncio.Event()
    watcher = asyncio.create_task(leader.watch_inbox(lambda _what: woken.set()))
    try:
        await asyncio.wait_for(woken.wait(), 30)  # the first wake: "look for what was stored meanwhile"
        woken.clear()
        with pytest.raises(RuntimeError):
            async with follower.intake() as tx:
                await tx.append_inbox([(1.0, 1, "{}", None, None)])
                raise RuntimeError("not stored")
        async with follower.intake() as tx:
            await tx.append_inbox([(1.0, 1, "{}", None, None)])
        await asyncio.wait_for(woken.wait(), 30)
        async with leader.transaction() as tx:
            assert await tx.unrouted(10) == [(1, "{}")]
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await leader.close()
        await follower.close()


async def test_a_nul_character_in_text_never_makes_the_store_unavailable(store: StateStore) -> None:
    """Audit: PostgreSQL cannot store U+0000 in text; psycopg refused it with an error reported as "store
    unavailable" (retry), for ever. A NUL that still reaches the store (a remote system's error message)
    is kept on SQLite and replaced with U+FFFD on PostgreSQL."""
    step = _step()
    step.error = "remote said: a\x00b"
    async with store.transaction() as tx:
        await tx.save_run(_run(target="t\x00"))
        await tx.save_step(step)
    async with store.transaction() as tx:
        run = await tx.get_run("r1")
        steps = await tx.steps_of("r1")
    assert run is not None and run.target in ("t\x00", "t\ufffd")
    assert steps[0].error in ("remote said: a\x00b", "remote said: a\ufffdb")


async def test_a_lone_surrogate_in_text_never_fails_a_statement(store: StateStore) -> None:
    """Review: JSON from a remote system may escape a lone surrogate ("\\ud800"), which json.loads keeps
    and neither SQLite nor psycopg can encode: a step's result carrying such an error message could never
    be recorded (the same error on every try). It is stored with U+FFFD in its place, on both stores, in
    single statements, many-row statements and reads alike."""
    step = _step()
    step.error = "remote said: \ud800oops"
    async with store.transaction() as tx:
        await tx.save_run(_run(outcome="failed: \udfff"))
        await tx.save_step(step)
        await tx.add_events([EventRecord("r1", 1.0, "step_failed", "runbookd", {"error": "\ud800"})])
        await tx.kv_put("ns", "k\ud800", {"v": 1})
        assert await tx.kv_get("ns", "k\ud800") == {"v": 1}  # a read's parameters too
    async with store.transaction() as tx:
        run = await tx.get_run("r1")
        steps = await tx.steps_of("r1")
    assert run is not None and run.outcome == "failed: \ufffd"
    assert steps[0].error == "remote said: \ufffdoops"


async def test_commits_are_durable_on_disk_on_both_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Issue 10, point 1: SQLite commits with synchronous=FULL; PostgreSQL with synchronous_commit=on, even
    where the database's own default was turned off."""
    sqlite = await Store.open(tmp_path / "state.db")
    try:
        async with sqlite.transaction() as tx:
            assert [tuple(r) for r in await tx.db.execute_fetchall("PRAGMA synchronous")] == [(2,)]  # FULL
    finally:
        await sqlite.close()
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.fresh_database()
    dbname = url.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    pg = await PgStore.open(PgSettings(url))
    try:
        async with pg.transaction() as tx:
            rows = await tx.db.execute_fetchall("SHOW synchronous_commit")
            assert [r["synchronous_commit"] for r in rows] == ["on"]
    finally:
        await pg.close()


async def test_active_run_refs_finds_each_runbooks_active_run_per_target(store: StateStore) -> None:
    async with store.transaction() as tx:
        await tx.save_run(_run("a1", runbook="rb-a", target="t1"))
        await tx.save_run(_run("a2", runbook="rb-a", target="t2", state=RunState.SUCCEEDED))
        await tx.save_run(
            _run("b1", runbook="rb-b", target="t1", state=RunState.RUNNING, alert_resolved=True)
        )
        await tx.save_run(_run("b2", runbook="rb-b", target="t3", state=RunState.CANCELLED))
        many = [("rb-c", f"t{i}") for i in range(250)]  # over one statement's worth of targets
        for i, (rb, target) in enumerate(many):
            await tx.save_run(_run(f"c{i}", runbook=rb, target=target))
        keys = {("rb-a", "t1"), ("rb-a", "t2"), ("rb-b", "t1"), ("rb-b", "t3"), ("rb-a", "t9"), *many}
        found = await tx.active_run_refs(keys)
    assert {k: v for k, v in found.items() if k[0] != "rb-c"} == {
        ("rb-a", "t1"): ("a1", False),  # ended runs (a2, b2) and unknown keys are absent
        ("rb-b", "t1"): ("b1", True),  # the same target under another runbook is its own key
    }
    assert {k: v[0] for k, v in found.items() if k[0] == "rb-c"} == {k: f"c{i}" for i, k in enumerate(many)}


async def test_run_history_gives_the_last_end_and_the_runs_since_in_one_answer(store: StateStore) -> None:
    """What policy reads before a new run (cooldown, max_runs_per_day), on both backends."""
    async with store.transaction() as tx:
        assert await tx.run_history("rb", "t1", 0.0) == (None, 0)
        await tx.save_run(_run("r1", RunState.SUCCEEDED, created_at=100.0, ended_at=150.0))
        await tx.save_run(_run("r2", RunState.FAILED, created_at=200.0, ended_at=260.5))
        await tx.save_run(_run("r3", created_at=300.0))  # active: no end yet
        await tx.save_run(_run("r4", RunState.SUCCEEDED, target="t2", created_at=400.0, ended_at=999.0))
        await tx.save_run(_run("r5", RunState.SUCCEEDED, runbook="other", created_at=500.0, ended_at=998.0))
    async with store.transaction() as tx:
        assert await tx.run_history("rb", "t1", 0.0) == (260.5, 3)
        assert await tx.run_history("rb", "t1", 200.0) == (260.5, 2)  # created at `since` counts
        assert await tx.run_history("rb", "t1", 301.0) == (260.5, 0)
        assert await tx.run_history("rb", "t2", 0.0) == (999.0, 1)
        assert await tx.run_history("rb", "t3", 0.0) == (None, 0)


async def test_run_summaries_read_no_alert_params_or_plans_on_both_backends(store: StateStore) -> None:
    """What GET /api/v1/runs lists (views.run_summary): newest first, filtered by state, steps in order."""
    async with store.transaction() as tx:
        await tx.save_run(_run("r1", RunState.SUCCEEDED, created_at=100.0, ended_at=150.0, outcome="done"))
        await tx.save_run(_run("r2", created_at=200.0, current_step=1))
        for run_id in ("r1", "r2"):
            for idx in (1, 0):
                await tx.save_step(_step(run_id, idx))
    async with store.transaction() as tx:
        found = await tx.run_summaries()
        waiting = await tx.run_summaries(str(RunState.AWAITING_APPROVAL))
        one = await tx.run_summaries(limit=1)
    views = [run_summary(run, steps) for run, steps in found]
    assert [v["id"] for v in views] == ["r2", "r1"] and [w[0]["id"] for w in waiting] == ["r2"]
    assert [r["id"] for r, _ in one] == ["r2"]
    assert views[0]["current_step"] == "s1" and views[0]["ended_at"] is None
    assert views[0]["dry_run"] is True and views[0]["alert_resolved"] is False
    assert views[1]["outcome"] == "done" and views[1]["ended_at"] == iso(150.0)
    assert views[1]["steps"] == [
        {"id": "s0", "index": 0, "action": "notify.log", "state": "pending", "mutating": True},
        {"id": "s1", "index": 1, "action": "notify.log", "state": "pending", "mutating": True},
    ]
    assert not {"params", "alert", "plan", "output"} & ({*views[0]} | {*views[0]["steps"][0]})
