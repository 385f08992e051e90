"""Adversarial review of the approval path: each test here fails on the code it was written against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from support.gates import wait_until
from support.inproc import Daemon, alert_payload, base_config, serve
from support.runs import steps_of
from support.undo_actions import UndoLedger


def _book(undo_action: str | None = "test.restore") -> str:
    book = yaml.safe_load(_BOOK.replace("UNDO", undo_action or "test.restore"))
    if undo_action is None:
        del book["steps"][1]["undo"]
    return yaml.safe_dump(book, sort_keys=False)


_BOOK = yaml.safe_dump(
        {
            "name": "rv",
            "triggers": [{"alert": "ReviewTest"}],
            "target": "{{ params.key }}",
            "params": {"key": "{{ alert.labels.instance }}"},
            "policy": {"cooldown": "0s", "max_runs_per_day": 50, "on_resolved": "ignore"},
            "approval": {"approvers": ["sre"], "timeout": "30m"},
            "steps": [
                {"id": "look", "action": "notify.log", "with": {"message": "look"}},
                {
                    "id": "change",
                    "action": "test.change",
                    "with": {"key": "{{ params.key }}", "value": "changed"},
                    "undo": {
                        "action": "UNDO",
                        "with": {"key": "{{ params.key }}", "value": "{{ steps['change'].output.before }}"},
                    },
                },
            ],
        },
        sort_keys=False,
    )


async def _start(d: Daemon, instance: str = "k") -> str:
    status, body = await d.webhook(alert_payload("ReviewTest", instance=instance, fingerprint=f"fp-{instance}"))
    assert status == 200 and len(body["started"]) == 1, body
    return str(body["started"][0])


async def _approve_when_asked(d: Daemon, run_id: str, step: str) -> dict[str, Any]:
    async def asks() -> bool:
        run = await d.run(run_id)
        return bool(run["current_step"] == step and steps_of(run)[step]["state"] == "awaiting_approval")

    await wait_until(asks)
    run = await d.run(run_id)
    status, body = await d.approve(run_id, step, who="alice", plan_hash=steps_of(run)[step]["plan_hash"])
    assert status == 200, body
    await d.engine.wait_idle()
    return await d.run(run_id)


async def test_undo_retry_ignores_the_plan_hash(tmp_path: Path) -> None:
    """A run whose undo failed waits in needs_attention; approving the step retries the undo. That
    approval carries a plan hash like every other, but the engine never compares it: a hash that names
    no plan at all (a stale button, a mistyped --plan-hash) still re-executes the undo."""
    ledger = UndoLedger()
    cfg = base_config(tmp_path, dry_run=False)
    async with serve(tmp_path, {"rv": _book("test.restore_fails")}, config=cfg, registry=ledger.registry()) as d:
        run_id = await _start(d)
        await _approve_when_asked(d, run_id, "look")
        run = await _approve_when_asked(d, run_id, "change")
        assert run["state"] == "needs_attention", run
        undo_calls = [c for c in ledger.calls if c[0] == "restore_fails"]
        assert len(undo_calls) == 1

        bogus = "0123456789abcdef"  # the hash of no plan anybody was shown
        assert bogus not in {s.get("plan_hash") for s in run["steps"]}
        status, body = await d.approve(run_id, "change", who="bob", plan_hash=bogus)
        await d.engine.wait_idle()
        # expected: refused (409) as on every other approval whose plan hash does not match
        assert status == 409, (status, body)
        assert len([c for c in ledger.calls if c[0] == "restore_fails"]) == 1


async def test_restart_in_dry_run_still_changes_things(tmp_path: Path) -> None:
    """`serve --dry-run` / dry_run: true promises that mutating actions change nothing. A run started
    before the daemon was restarted in dry-run keeps its own dry_run=false, and its mutating step, approved
    after the restart, changes the system for real."""
    ledger = UndoLedger()
    book = {"rv": _book(None)}  # no undo: what the step changed stays changed
    async with serve(tmp_path, book, config=base_config(tmp_path, dry_run=False), registry=ledger.registry()) as d:
        run_id = await _start(d)
        await _approve_when_asked(d, run_id, "look")
    # the operator restarts runbookd in dry-run (kill switch of another kind: "change nothing now")
    async with serve(tmp_path, book, config=base_config(tmp_path, dry_run=True), registry=ledger.registry()) as d:
        status, body = await d.call("GET", "/api/v1/status")
        assert body["dry_run"] is True
        await _approve_when_asked(d, run_id, "change")
        # expected: nothing changed (the daemon is in dry-run)
        run = await d.run(run_id)
        assert run["state"] == "succeeded", run
        assert run["dry_run"] is True and ledger.values == {}, (run["dry_run"], ledger.values)
