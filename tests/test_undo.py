"""Undo steps (design §3): approved with their step, run by the engine when the run ends, whatever the end,
latest step first, without asking again; ``undoing`` while a ``when:`` is false; ``needs_attention`` when
an undo fails or times out.

In-process daemon over the real HTTP API, with a frozen clock and the test actions of
``support.undo_actions`` (a change and its inverse over a ledger). The store comes from the ``state``
fixture, so these tests can run against every store backend behind the same interface."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.gates import Gates, wait_until
from support.inproc import TOKENS, Daemon, alert_payload, base_config, serve
from support.runs import states, steps_of
from support.undo_actions import UndoLedger

from daemon.cli import render
from daemon.engine import planner
from daemon.notify import slack_messages as msgs
from daemon.store.records import StepRecord, StepState


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The ``state:`` config section of the store under test: the same tests run on both backends."""
    if request.param == "sqlite":
        yield {"path": str(tmp_path / "state.db"), "busy_timeout": "1s"}
        return
    yield {"url": request.getfixturevalue("postgres_server").fresh_database(), "busy_timeout": "1s"}


def _config(tmp_path: Path, state: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    cfg = base_config(tmp_path, **{"dry_run": False, **overrides})
    cfg["state"] = state
    return cfg


def _restore(step: str, key: str, action: str = "test.restore", **extra: Any) -> dict[str, Any]:
    return {
        "action": action,
        "with": {"key": key, "value": f"{{{{ steps['{step}'].output.before }}}}"},
        **extra,
    }


def runbook(
    middle: str = "notify.log", *, undo_b: dict[str, Any] | None = None, on_resolved: str = "ignore"
) -> str:
    """a (change, undo) -> b (change, undo) -> middle -> last; the target is the alert's instance."""
    steps: list[dict[str, Any]] = [
        {
            "id": "a",
            "action": "test.change",
            "with": {"key": "{{ params.key }}-a", "value": "changed"},
            "undo": _restore("a", "{{ params.key }}-a"),
        },
        {
            "id": "b",
            "action": "test.change",
            "with": {"key": "{{ params.key }}-b", "value": "changed"},
            "undo": undo_b or _restore("b", "{{ params.key }}-b"),
        },
        {
            "id": "middle",
            "action": middle,
            "with": {"message" if middle == "notify.log" else "name": "middle"},
        },
        {"id": "last", "action": "notify.log", "with": {"message": "done"}},
    ]
    return yaml.safe_dump(
        {
            "name": "undo-test",
            "triggers": [{"alert": "UndoTest"}],
            "target": "{{ params.key }}",
            "params": {"key": "{{ alert.labels.instance }}"},
            "policy": {"cooldown": "0s", "max_runs_per_day": 50, "on_resolved": on_resolved},
            "approval": {"approvers": ["sre"], "timeout": "30m"},
            "steps": steps,
        },
        sort_keys=False,
    )


async def start(d: Daemon, instance: str = "k") -> str:
    status, body = await d.webhook(alert_payload("UndoTest", instance=instance, fingerprint=f"fp-{instance}"))
    assert status == 200 and len(body["started"]) == 1, body
    return str(body["started"][0])


async def approve_through(d: Daemon, run_id: str, *step_ids: str) -> dict[str, Any]:
    """Approve the named steps in turn, each once it asks (bound to the plan hash shown)."""
    for sid in step_ids:
        run = await wait_for(d, run_id, lambda r, sid=sid: _asks(r, sid))
        status, body = await d.approve(run_id, sid, plan_hash=steps_of(run)[sid]["plan_hash"])
        assert status == 200, body
    await d.engine.wait_idle()
    return await d.run(run_id)


def _asks(run: dict[str, Any], step_id: str) -> bool:
    return run["current_step"] == step_id and steps_of(run)[step_id]["state"] == "awaiting_approval"


async def wait_for(d: Daemon, run_id: str, predicate: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def probe() -> bool:
        found["run"] = await d.run(run_id)
        return bool(predicate(found["run"]))

    await wait_until(probe)
    return found["run"]


def events(run: dict[str, Any]) -> list[str]:
    return [e["event"] for e in run["timeline"]]


def undo_states(run: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["undo"]["state"] for s in run["steps"] if s["undo"]}


def daemon(
    tmp_path: Path,
    state: dict[str, Any],
    ledger: UndoLedger,
    book: str | None = None,
    *,
    gates: Gates | None = None,
    more: Mapping[str, str] | None = None,
    **config: Any,
) -> contextlib.AbstractAsyncContextManager[Daemon]:
    """The daemon on the store under test with ``book`` (default ``runbook()``) as runbook ``u``, any
    ``more`` runbooks, and the ledger's test actions (and ``gates``'); ``config`` overrides the config."""
    runbooks = {"u": runbook() if book is None else book, **(more or {})}
    return serve(
        tmp_path, runbooks, config=_config(tmp_path, state, **config), registry=ledger.registry(gates)
    )


async def tick(d: Daemon, *, after: float | None = None) -> None:
    """Advance the frozen clock ``after`` seconds (if given), tick the engine and wait for what it started."""
    if after is not None:
        d.clock.advance(after)
    await d.engine.tick()
    await d.engine.wait_idle()


async def reject(d: Daemon, run_id: str, reason: str) -> tuple[int, Any]:
    return await d.call("POST", f"/api/v1/runs/{run_id}/reject", json={"reason": reason})


# ------------------------------------------------------------------------------------------ shown, approved


async def test_the_undo_is_shown_with_its_step_and_bound_into_its_plan_hash(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger) as d:
        run_id = await start(d)
        run = await wait_for(d, run_id, lambda r: _asks(r, "a"))
        undo = steps_of(run)["a"]["undo"]
        assert undo["action"] == "test.restore" and undo["state"] == "planned"
        # rendered now, except what reads the step's own output (rendered when the undo runs)
        assert undo["with"] == {"key": "k-a", "value": "{{ steps['a'].output.before }}"}
        assert undo["deferred"] == [["value"]]
        # the hash the approver binds to covers the undo: the same step without it hashes differently
        st = StepRecord(run_id, 0, "a", "test.change", StepState.AWAITING_APPROVAL, True, True)
        plan = steps_of(run)["a"]["plan"]
        approved = {k: undo[k] for k in ("action", "with", "deferred", "when", "timeout")}
        assert steps_of(run)["a"]["plan_hash"] == planner.plan_hash(run_id, st, plan, approved)
        assert planner.plan_hash(run_id, st, plan) != planner.plan_hash(run_id, st, plan, approved)
        other = {**approved, "with": {**approved["with"], "key": "k-other"}}
        assert planner.plan_hash(run_id, st, plan, other) != planner.plan_hash(run_id, st, plan, approved)


# ------------------------------------------------------------------------------------------ every end


async def test_a_succeeded_run_undoes_its_changes_latest_first_without_asking(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    ledger = UndoLedger()
    ledger.values["k-b"] = "original"
    async with daemon(tmp_path, state, ledger) as d:
        run_id = await start(d)
        run = await approve_through(d, run_id, "a", "b", "middle", "last")
        assert run["state"] == "succeeded", run
        assert ledger.values == {"k-b": "original"}  # k-a did not exist before: removed again
        assert ledger.restored() == ["k-b", "k-a"]
        origins = [origin for name, origin, _ in ledger.calls if name == "restore"]
        assert origins == [f"runbookd run {run_id} step b/undo", f"runbookd run {run_id} step a/undo"]
        assert undo_states(run) == {"a": "succeeded", "b": "succeeded"}
        assert steps_of(run)["b"]["undo"]["params"] == {"key": "k-b", "value": "original"}
        ev = events(run)
        assert ev.index("undoing") < ev.index("undo_started") < ev.index("run_ended")
        assert [e["step"] for e in run["timeline"] if e["event"] == "undo_succeeded"] == ["b", "a"]
        assert not [
            e for e in run["timeline"] if e["event"] == "step_approved" and "undo" in e.get("step", "")
        ]
        assert run["outcome"] == "all 4 steps done"


async def test_a_failed_middle_step_still_undoes_every_change(tmp_path: Path, state: dict[str, Any]) -> None:
    ledger, gates = UndoLedger(), Gates()
    async with daemon(tmp_path, state, ledger, runbook("test.fail"), gates=gates) as d:
        run_id = await start(d)
        run = await approve_through(d, run_id, "a", "b", "middle")
        assert run["state"] == "failed", run
        assert "middle failed" in run["outcome"]
        assert ledger.values == {} and ledger.restored() == ["k-b", "k-a"]
        assert states(run)["last"] == "pending"


async def test_a_rejected_run_undoes_only_the_steps_that_ran(tmp_path: Path, state: dict[str, Any]) -> None:
    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger) as d:
        run_id = await start(d)
        await approve_through(d, run_id, "a")
        await wait_for(d, run_id, lambda r: _asks(r, "b"))
        status, body = await reject(d, run_id, "not now")
        assert status == 200, body
        await d.engine.wait_idle()
        run = await d.run(run_id)
        assert run["state"] == "rejected" and "not now" in run["outcome"]
        assert ledger.restored() == ["k-a"] and ledger.values == {}
        assert undo_states(run) == {"a": "succeeded", "b": "skipped"}  # b never ran: nothing to undo


async def test_show_says_not_run_for_the_undo_of_a_step_an_ended_run_never_reached(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger) as d:
        run_id = await start(d)
        await wait_for(d, run_id, lambda r: _asks(r, "a"))
        assert "pending" in _undo_rows(await d.run(run_id))["b"]  # the run may still reach it
        status, body = await reject(d, run_id, "not now")
        assert status == 200, body
        await d.engine.wait_idle()
        run = await d.run(run_id)
    assert run["state"] == "rejected" and undo_states(run) == {"a": "skipped", "b": "pending"}
    rows = _undo_rows(run)
    assert "not run" in rows["b"] and "pending" not in rows["b"], rows


def _undo_rows(run: dict[str, Any]) -> dict[str, str]:
    """``runbookd show``'s undo table: step id -> its row."""
    shown = render.run_details(run).splitlines()
    return {line.split()[0]: line for line in shown if " test.restore " in f"{line} "}


async def test_an_expired_run_undoes_what_ran(tmp_path: Path, state: dict[str, Any]) -> None:
    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger) as d:
        run_id = await start(d)
        await approve_through(d, run_id, "a", "b")
        await wait_for(d, run_id, lambda r: _asks(r, "middle"))
        await tick(d, after=31 * 60)
        run = await d.run(run_id)
        assert run["state"] == "expired", run
        assert ledger.restored() == ["k-b", "k-a"] and ledger.values == {}


async def test_dry_run_undo_records_its_request(tmp_path: Path, state: dict[str, Any]) -> None:
    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger, dry_run=True) as d:
        run_id = await start(d)
        run = await approve_through(d, run_id, "a", "b", "middle", "last")
        assert run["state"] == "succeeded"
        out = steps_of(run)["a"]["undo"]["output"]
        assert out["dry_run"] is True and out["requests"] == [{"restore": "k-a", "to": None}]
        assert ledger.values == {}


# ------------------------------------------------------------------------------------------ when:, timeout


def _guarded(timeout: str = "10m") -> str:
    undo = _restore("b", "{{ params.key }}-b", when="{{ run.alert_resolved }}", timeout=timeout)
    return runbook(undo_b=undo)


async def test_an_undo_waits_undoing_until_its_when_holds(tmp_path: Path, state: dict[str, Any]) -> None:
    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger, _guarded()) as d:
        run_id = await start(d)
        run = await approve_through(d, run_id, "a", "b", "middle", "last")
        assert run["state"] == "undoing", run
        assert undo_states(run) == {"a": "waiting", "b": "waiting"}  # b's guard holds a back too
        assert ledger.restored() == []
        d.clock.advance(60)
        await d.engine.tick()
        assert (await d.run(run_id))["state"] == "undoing"
        # an operator cannot approve or reject it meanwhile
        status, body = await reject(d, run_id, "x")
        assert status == 409 and "undoing" in body["error"]
        # a new alert for the target attaches to the open run instead of starting another
        status, body = await d.webhook(alert_payload("UndoTest", instance="k", fingerprint="fp-k2"))
        assert body["started"] == [] and body["attached"] == [run_id]

        for fp in ("fp-k", "fp-k2"):
            await d.webhook(alert_payload("UndoTest", status="resolved", instance="k", fingerprint=fp))
        await tick(d)
        run = await d.run(run_id)
        assert run["state"] == "succeeded", run
        assert ledger.restored() == ["k-b", "k-a"]
        assert events(run).count("undo_waiting") == 1


async def test_an_undo_whose_when_stays_false_past_its_timeout_needs_attention(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger, _guarded()) as d:
        run_id = await start(d)
        await approve_through(d, run_id, "a", "b", "middle", "last")
        d.clock.advance(9 * 60)
        await d.engine.tick()
        assert (await d.run(run_id))["state"] == "undoing"
        await tick(d, after=2 * 60)
        run = await d.run(run_id)
        assert run["state"] == "needs_attention", run
        assert undo_states(run) == {"a": "succeeded", "b": "failed"}  # a's undo still ran
        assert "still false" in steps_of(run)["b"]["undo"]["error"]
        assert "undo_timed_out" in events(run)
        assert ledger.restored() == ["k-a"] and ledger.values == {"k-b": "changed"}

        # a person retries it (the guard again, with a new deadline) once the alert has resolved
        await d.webhook(alert_payload("UndoTest", status="resolved", instance="k", fingerprint="fp-k"))
        status, body = await d.approve(run_id, "b")
        assert status == 200, body
        await d.engine.wait_idle()
        run = await d.run(run_id)
        assert run["state"] == "succeeded", run
        assert ledger.values == {} and "undo_retry_approved" in events(run)


async def test_a_failed_undo_needs_attention_and_a_person_closes_the_run(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    ledger = UndoLedger()
    book = runbook(undo_b=_restore("b", "{{ params.key }}-b", action="test.restore_fails"))
    async with daemon(tmp_path, state, ledger, book) as d:
        run_id = await start(d)
        run = await approve_through(d, run_id, "a", "b", "middle", "last")
        assert run["state"] == "needs_attention", run
        assert undo_states(run) == {"a": "succeeded", "b": "failed"}
        assert "the system refused" in run["outcome"]
        assert ledger.restored() == ["k-a"]
        reply = msgs.attention_reply(run, steps_of(run)["b"]).blocks[0]["text"]["text"]
        assert "The undo of step `b` (test.restore_fails) did not complete" in reply

        status, body = await reject(d, run_id, "restored by hand")
        assert status == 200, body
        run = await d.run(run_id)
        assert run["state"] == "succeeded" and "restored by hand" in run["outcome"]
        assert "undo_abandoned" in events(run)


async def test_an_undo_retry_is_bound_to_the_failure_it_retries(
    tmp_path: Path, state: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Approving the step of a failed undo retries that undo, bound to that failure's retry hash: the
    step's own plan hash (a stale Approve button, a hash noted when the step was approved), a hash of no
    plan, or the retry hash of an earlier failure retries nothing (409). The CLI shows the undo and sends
    the retry hash it showed."""
    from daemon.cli.main import main as cli

    ledger = UndoLedger()
    book = runbook(undo_b=_restore("b", "{{ params.key }}-b", action="test.restore_fails"))

    def tries() -> int:
        return len([c for c in ledger.calls if c[0] == "restore_fails"])

    async with daemon(tmp_path, state, ledger, book) as d:
        run_id = await start(d)
        run = await approve_through(d, run_id, "a", "b", "middle", "last")
        assert run["state"] == "needs_attention" and tries() == 1, run
        first = steps_of(run)["b"]["undo"]["retry_hash"]
        assert re.fullmatch(r"[0-9a-f]{16}", first), first
        assert f"retry `{first}`" in msgs.attention_reply(run, steps_of(run)["b"]).blocks[0]["text"]["text"]
        for stale in (steps_of(run)["b"]["plan_hash"], "0123456789abcdef"):
            status, body = await d.approve(run_id, "b", plan_hash=stale)
            assert status == 409 and f"retry hash is {first}" in body["error"], (status, body)
        await d.engine.wait_idle()
        assert tries() == 1 and (await d.run(run_id))["state"] == "needs_attention"

        status, body = await d.approve(run_id, "b", plan_hash=first)
        assert status == 200, body
        run = await wait_for(d, run_id, lambda r: r["state"] == "needs_attention" and tries() == 2)
        second = steps_of(run)["b"]["undo"]["retry_hash"]
        assert second != first  # a new failure: the hash noted for the first one retries nothing
        status, body = await d.approve(run_id, "b", plan_hash=first)
        assert status == 409, body
        assert f"retry {second}" in render.run_details(await d.run(run_id))

        monkeypatch.setenv("RUNBOOKD_TOKEN", TOKENS["alice"])
        code = await asyncio.to_thread(cli, ["approve", run_id, "--step", "b", "--yes", "--server", d.url])
        shown = capsys.readouterr()
        assert code == 0, shown
        assert "its undo test.restore_fails failed" in shown.err and f"retry {second}" in shown.err
        run = await wait_for(d, run_id, lambda r: r["state"] == "needs_attention" and tries() == 3)
        retried = [e for e in run["timeline"] if e["event"] == "undo_retry_approved"]
        assert [e["by"] for e in retried] == ["admin", "alice"], retried


async def test_an_undo_that_cannot_be_rendered_needs_attention(tmp_path: Path, state: dict[str, Any]) -> None:
    """The step failed before it reported what it changed: the undo cannot be rendered, so a person checks."""
    ledger, gates = UndoLedger(), Gates()
    book = yaml.safe_load(runbook())  # b: a failing mutating step, whose output has no `before`
    book["steps"][1]["action"] = "test.fail"
    book["steps"][1]["with"] = {"name": "b"}
    async with daemon(tmp_path, state, ledger, yaml.safe_dump(book), gates=gates) as d:
        run_id = await start(d)
        run = await approve_through(d, run_id, "a", "b")
        assert run["state"] == "needs_attention", run
        assert undo_states(run) == {"a": "succeeded", "b": "failed"}
        assert "check by hand whether step b changed anything" in steps_of(run)["b"]["undo"]["error"]


# ------------------------------------------------------------------------------------------ budget, pause


async def test_an_undo_waits_for_the_budget_but_not_for_pause(tmp_path: Path, state: dict[str, Any]) -> None:
    ledger, gates = UndoLedger(), Gates()
    hold = yaml.safe_dump(
        {
            "name": "hold",
            "triggers": [{"alert": "Hold"}],
            "target": "one",
            "policy": {"cooldown": "0s", "on_resolved": "ignore"},
            "steps": [{"id": "hold", "action": "test.gate", "with": {"name": "h"}}],
        }
    )
    async with daemon(tmp_path, state, ledger, gates=gates, more={"h": hold}) as d:
        run_id = await start(d)
        await approve_through(d, run_id, "a", "b", "middle")
        await wait_for(d, run_id, lambda r: _asks(r, "last"))
        status, body = await d.webhook(alert_payload("Hold", fingerprint="fp-hold"))
        hold_id = body["started"][0]
        await wait_for(d, hold_id, lambda r: _asks(r, "hold"))
        assert (await d.approve(hold_id, "hold"))[0] == 200
        await wait_until(lambda: gates.started == ["h"])  # the one budget slot is taken

        assert (await d.approve(run_id, "last"))[0] == 200  # read-only: the budget does not hold it
        run = await wait_for(d, run_id, lambda r: r["state"] == "undoing")
        assert undo_states(run)["b"] == "ready"
        assert any(e["event"] == "undo_waiting" and "budget" in e.get("reason", "") for e in run["timeline"])
        assert ledger.restored() == []

        status, _ = await d.call("POST", "/api/v1/pause")  # a pause does not hold an undo back
        assert status == 200
        gates.open("h")
        run = await wait_for(d, run_id, lambda r: r["state"] == "succeeded")
        assert ledger.restored() == ["k-b", "k-a"]
        assert await d.engine.is_paused()
        assert gates.finished == ["h"]


async def test_a_daemon_restarted_in_dry_run_holds_the_changes_of_a_live_run(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    """``dry_run`` promises that nothing changes. A run started live keeps ``dry_run: false`` (fixed at its
    start); under a daemon restarted in dry-run its approved mutating step waits, and so do its undos,
    each said once in the timeline, until runbookd runs live again. Read-only steps still run."""
    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger) as d:
        run_id = await start(d)
        await approve_through(d, run_id, "a")
        await wait_for(d, run_id, lambda r: _asks(r, "b"))
    assert ledger.values == {"k-a": "changed"}

    async with daemon(tmp_path, state, ledger, dry_run=True) as d:
        run = await d.run(run_id)
        status, body = await d.approve(run_id, "b", plan_hash=steps_of(run)["b"]["plan_hash"])
        assert status == 200, body
        await tick(d)
        await tick(d)
        run = await d.run(run_id)
        assert run["dry_run"] is False and states(run)["b"] == "approved", run
        waits = [e for e in run["timeline"] if e["event"] == "step_waiting"]
        assert [(e["step"], e["reason"].split(":")[0]) for e in waits] == [("b", "dry-run")], waits
        assert ledger.values == {"k-a": "changed"}

    async with daemon(tmp_path, state, ledger) as d:  # live again: the approved step runs
        await tick(d)
        await approve_through(d, run_id, "middle")
        await wait_for(d, run_id, lambda r: _asks(r, "last"))
    assert ledger.values == {"k-a": "changed", "k-b": "changed"}

    async with daemon(tmp_path, state, ledger, dry_run=True) as d:  # the run ends: its undos wait
        await approve_through(d, run_id, "last")
        await tick(d)
        run = await d.run(run_id)
        assert run["state"] == "undoing" and undo_states(run) == {"a": "waiting", "b": "ready"}, run
        assert any(
            e["event"] == "undo_waiting" and e["reason"].startswith("dry-run:") for e in run["timeline"]
        ), run["timeline"]
        assert ledger.values == {"k-a": "changed", "k-b": "changed"}

    async with daemon(tmp_path, state, ledger) as d:
        await tick(d)
        run = await wait_for(d, run_id, lambda r: r["state"] == "succeeded")
    assert ledger.restored() == ["k-b", "k-a"] and ledger.values == {}


async def test_the_approver_sees_the_undo_in_slack_and_the_cli(tmp_path: Path, state: dict[str, Any]) -> None:

    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger) as d:
        run_id = await start(d)
        run = await wait_for(d, run_id, lambda r: _asks(r, "a"))
        blocks = msgs.step_request(run, steps_of(run)["a"])
        text = "\n".join(b["text"]["text"] for b in blocks if b.get("text"))
        assert "Undo, approved with this step:* `test.restore`" in text
        assert "k-a" in text and "filled in when the undo runs" in text
        shown = render.run_details(run)
        assert "Undo (approved with this step; runs when the run ends): test.restore" in shown
        assert "(value: rendered from this step's output when the undo runs)" in shown
        assert "Undos (run when the run ends, latest step first):" in shown


def _not_yet_until_ready(timeout: str) -> str:
    """b's undo is ``test.restore_when_ready``: it answers "not yet" until ``ledger.ready``."""
    undo = _restore("b", "{{ params.key }}-b", action="test.restore_when_ready", timeout=timeout)
    return runbook(undo_b=undo)


def _when_ready_calls(ledger: UndoLedger) -> list[Any]:
    return [c for c in ledger.calls if c[0] == "restore_when_ready"]


async def test_an_undo_whose_action_says_not_yet_waits_and_is_asked_again(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger, _not_yet_until_ready(timeout="10m")) as d:
        run_id = await start(d)
        run = await approve_through(d, run_id, "a", "b", "middle", "last")
        assert run["state"] == "undoing", run
        assert steps_of(run)["b"]["undo"]["state"] == "waiting"
        assert "not shipped yet" in steps_of(run)["b"]["undo"]["error"]
        asked = _when_ready_calls(ledger)
        await d.engine.tick()  # too soon: not asked again
        assert _when_ready_calls(ledger) == asked
        await tick(d, after=31)
        assert len(_when_ready_calls(ledger)) == 2
        assert (await d.run(run_id))["state"] == "undoing"

        ledger.ready = True
        await tick(d, after=31)
        run = await d.run(run_id)
        assert run["state"] == "succeeded", run
        assert ledger.values == {} and events(run).count("undo_not_yet") == 1


async def test_an_undo_saying_not_yet_past_its_timeout_needs_attention(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger, _not_yet_until_ready(timeout="2m")) as d:
        run_id = await start(d)
        await approve_through(d, run_id, "a", "b", "middle", "last")
        for _ in range(5):
            await tick(d, after=31)
        run = await d.run(run_id)
        assert run["state"] == "needs_attention", run
        error = steps_of(run)["b"]["undo"]["error"]
        assert "still answered not yet" in error and "not shipped yet" in error
        assert ledger.values == {"k-b": "changed"}


async def test_a_rejection_on_the_follower_has_the_leader_run_the_undo(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two replicas on one PostgreSQL: the follower records the rejection and ends the run's steps; only
    the leader runs the undo of what step a changed (a follower never starts an action)."""
    ledger = UndoLedger()
    config = _config(tmp_path, {"url": postgres_url, "busy_timeout": "1s"})
    async with (
        serve(tmp_path, {"u": runbook()}, config=config, registry=ledger.registry()) as leader,
        serve(tmp_path, {"u": runbook()}, config=config, registry=ledger.registry()) as follower,
    ):
        assert leader.engine.leadership.leading and not follower.engine.leadership.leading
        run_id = await start(leader)
        await approve_through(leader, run_id, "a")
        await wait_for(leader, run_id, lambda r: _asks(r, "b"))
        status, body = await reject(follower, run_id, "stop")
        assert status == 200, body
        await follower.engine.wait_idle()
        assert ledger.restored() == []  # the follower started nothing
        assert (await follower.run(run_id))["state"] == "undoing"
        await tick(leader)
        run = await wait_for(leader, run_id, lambda r: r["state"] == "rejected")
        assert ledger.restored() == ["k-a"] and ledger.values == {}
        assert undo_states(run) == {"a": "succeeded", "b": "skipped"}


async def test_recovery_advances_an_undoing_run_by_itself(tmp_path: Path, state: dict[str, Any]) -> None:
    """Recovery pages through the runs to advance (``Tx.runs_to_advance``): an ``undoing`` run is among
    them, so its undo's timeout is seen by recovery alone, before any tick."""
    ledger = UndoLedger()
    async with daemon(tmp_path, state, ledger, _guarded()) as d:
        run_id = await start(d)
        await approve_through(d, run_id, "a", "b", "middle", "last")
        assert (await d.run(run_id))["state"] == "undoing"
        d.clock.advance(11 * 60)
        await d.engine.recover()  # not tick(): only what recovery advances moves
        await d.engine.wait_idle()
        run = await d.run(run_id)
        assert run["state"] == "needs_attention", run
        assert "undo_timed_out" in events(run)
