"""The approval rules of design section 4, through the HTTP API, with an injected clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.gates import Gates, wait_until
from support.inproc import Daemon, alert_payload, base_config, serve

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on SQLite and on PostgreSQL

TWO_STEPS = """
name: two-steps
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}", note: "none"}
policy: {cooldown: 0s, on_resolved: cancel}
approval: {approvers: [sre], min_approvers: MIN, timeout: 30m}
steps:
  - id: look
    action: notify.log
    with: {message: "looking at {{ params.job }} ({{ params.note }})"}
  - id: change
    action: test.gate
    with: {name: "{{ params.job }}"}
"""


def runbook(min_approvers: int = 1) -> dict[str, str]:
    return {"two-steps": TWO_STEPS.replace("MIN", str(min_approvers))}


async def start_run(d: Daemon, job: str = "node") -> dict[str, Any]:
    status, body = await d.webhook(alert_payload(job=job, fingerprint=f"fp-{job}"))
    assert status == 200, body
    return await d.run(body["started"][0])


async def test_roles_and_groups(tmp_path: Path) -> None:
    gates = Gates()
    async with serve(tmp_path, runbook(), registry=gates.registry()) as d:
        run = await start_run(d)
        assert run["state"] == "awaiting_approval" and run["current_step"] == "look"
        status, body = await d.approve(run["id"], "look", who="vic")  # viewer, though listed in sre
        assert status == 403 and "role viewer" in body["error"]
        status, body = await d.approve(run["id"], "look", who="carol")  # approver, but only in dba
        assert status == 403 and "not in an approver group" in body["error"]
        status, body = await d.approve(run["id"], "look", who="nobody-token")
        assert status == 401
        status, body = await d.approve(run["id"], "look", who="alice")
        assert status == 200, body
        await d.engine.wait_idle()
        run = await d.run(run["id"])
        assert run["steps"][0]["state"] == "succeeded"
        assert run["steps"][0]["approvals"][0]["by"] == "alice"
        assert run["current_step"] == "change" and run["state"] == "awaiting_approval"
        gates.open("node")


async def test_min_approvers_counts_distinct_people(tmp_path: Path) -> None:
    gates = Gates()
    gates.open("node")
    async with serve(tmp_path, runbook(min_approvers=2), registry=gates.registry()) as d:
        run = await start_run(d)
        assert (await d.approve(run["id"], "look", who="alice"))[0] == 200
        status, body = await d.approve(run["id"], "look", who="alice")
        assert status == 409 and "already approved" in body["error"]
        run = await d.run(run["id"])
        assert run["steps"][0]["state"] == "awaiting_approval"
        assert (await d.approve(run["id"], "look", who="bob"))[0] == 200
        await d.engine.wait_idle()
        run = await d.run(run["id"])
        assert run["steps"][0]["state"] == "succeeded"
        assert sorted(a["by"] for a in run["steps"][0]["approvals"]) == ["alice", "bob"]


async def test_requester_cannot_approve_own_mutating_step(tmp_path: Path) -> None:
    gates = Gates()
    gates.open("db")
    async with serve(tmp_path, runbook(), registry=gates.registry()) as d:
        status, run = await d.call(
            "POST", "/api/v1/runs", token="alice", json={"runbook": "two-steps", "params": {"job": "db"}}
        )
        assert status == 201, run
        assert run["trigger"] == "manual" and run["requester"] == "alice"
        assert (await d.approve(run["id"], "look", who="alice"))[0] == 200  # read-only: allowed
        await wait_until(lambda: _at(d, run["id"], "change"))
        status, body = await d.approve(run["id"], "change", who="alice")
        assert status == 403 and "separation of duties" in body["error"]
        assert (await d.approve(run["id"], "change", who="bob"))[0] == 200
        await d.engine.wait_idle()
        assert (await d.run(run["id"]))["state"] == "succeeded"


async def _at(d: Daemon, run_id: str, step: str) -> bool:
    run = await d.run(run_id)
    return bool(run["current_step"] == step and run["state"] == "awaiting_approval")


async def test_approval_is_bound_to_the_plan(tmp_path: Path) -> None:
    async with serve(tmp_path, runbook(), registry=Gates().registry()) as d:
        run = await start_run(d)
        shown = run["steps"][0]["plan_hash"]
        status, body = await d.approve(run["id"], "look", who="alice", plan_hash="0123456789abcdef")
        assert status == 409 and "changed since you saw it" in body["error"]
        assert (await d.run(run["id"]))["steps"][0]["approvals"] == []
        for bad in ("a" * 500_000, shown.upper(), shown + "0", "z" * 16):  # never echoed (500 kB was)
            status, body = await d.approve(run["id"], "look", who="alice", plan_hash=bad)
            assert status == 400 and "16 hex digits" in body["error"] and len(body["error"]) < 200, bad
        status, body = await d.approve(run["id"], "look", who="alice", plan_hash=shown)
        assert status == 200, body
        # another run of the same runbook has its own hashes: an approval cannot be replayed across runs
        other = await start_run(d, job="other")
        assert other["steps"][0]["plan_hash"] != shown
        status, _ = await d.approve(other["id"], "look", who="bob", plan_hash=shown)
        assert status == 409


async def test_unanswered_step_expires_the_run(tmp_path: Path) -> None:
    async with serve(tmp_path, runbook(), registry=Gates().registry()) as d:
        run = await start_run(d)
        assert run["steps"][0]["deadline"] is not None
        d.clock.advance(29 * 60)
        await d.engine.tick()
        assert (await d.run(run["id"]))["state"] == "awaiting_approval"
        d.clock.advance(61)
        await d.engine.tick()
        run = await d.run(run["id"])
        assert run["state"] == "expired"
        assert run["steps"][0]["state"] == "expired" and run["steps"][1]["state"] == "pending"
        assert "was not approved by" in run["outcome"]
        status, body = await d.approve(run["id"], "look", who="alice")
        assert status == 409 and "expired" in body["error"]


async def test_approval_after_deadline_expires_instead(tmp_path: Path) -> None:
    async with serve(tmp_path, runbook(), registry=Gates().registry()) as d:
        run = await start_run(d)
        d.clock.advance(31 * 60)  # no tick ran yet: the approval itself notices the deadline
        status, body = await d.approve(run["id"], "look", who="alice")
        assert status == 409 and "expired" in body["error"]
        assert (await d.run(run["id"]))["state"] == "expired"


async def test_reject_ends_the_run_with_its_reason(tmp_path: Path) -> None:
    async with serve(tmp_path, runbook(), registry=Gates().registry()) as d:
        run = await start_run(d)
        status, body = await d.call(
            "POST", f"/api/v1/runs/{run['id']}/reject", token="bob", json={"reason": " "}
        )
        assert status == 400 and "reason" in body["error"]
        status, body = await d.call(
            "POST", f"/api/v1/runs/{run['id']}/reject", token="vic", json={"reason": "no"}
        )
        assert status == 403
        status, body = await d.call(
            "POST", f"/api/v1/runs/{run['id']}/reject", token="bob", json={"reason": "known maintenance"}
        )
        assert status == 200 and body["state"] == "rejected"
        assert body["outcome"] == "rejected by bob: known maintenance"
        assert (await d.approve(run["id"], "look", who="alice"))[0] == 409
        assert [e["event"] for e in body["timeline"]][-2:] == ["step_rejected", "run_ended"]


async def test_resolved_alert_cancels_a_run_that_changed_nothing(tmp_path: Path) -> None:
    async with serve(tmp_path, runbook(), registry=Gates().registry()) as d:
        run = await start_run(d)
        status, body = await d.webhook(alert_payload(job="node", fingerprint="fp-node", status="resolved"))
        assert status == 200 and body["cancelled"] == [run["id"]]
        run = await d.run(run["id"])
        assert run["state"] == "cancelled" and run["alert_resolved"] is True


async def test_resolved_alert_does_not_cancel_after_a_change(tmp_path: Path) -> None:
    gates = Gates()
    async with serve(tmp_path, runbook(), registry=gates.registry()) as d:
        run = await start_run(d)
        await d.approve(run["id"], "look", who="alice")
        await wait_until(lambda: _at(d, run["id"], "change"))
        await d.approve(run["id"], "change", who="alice")
        await wait_until(lambda: gates.started == ["node"])
        status, body = await d.webhook(alert_payload(job="node", fingerprint="fp-node", status="resolved"))
        assert status == 200 and body["cancelled"] == []
        gates.open("node")
        await d.engine.wait_idle()
        run = await d.run(run["id"])
        assert run["state"] == "succeeded" and run["alert_resolved"] is True


WHEN_RESOLVED = """
name: when-resolved
triggers: [{alert: PrometheusScrapeFailure}]
target: "{{ params.job }}"
params: {job: "{{ alert.labels.job }}"}
policy: {cooldown: 0s, on_resolved: cancel}
steps:
  - id: change
    action: test.gate
    with: {name: "{{ params.job }}"}
  - id: only-while-firing
    action: notify.log
    when: "{{ not run.alert_resolved }}"
    with: {message: "still firing"}
  - id: always
    action: notify.log
    when: "{{ steps.change.ok }}"
    with: {message: "cleaning up"}
"""


async def test_resolved_alert_rechecks_the_when_of_a_step_awaiting_approval(tmp_path: Path) -> None:
    """A step planned while the alert fired is not run on an approval given after it resolved, when
    its `when:` says so; a step whose `when:` still holds keeps waiting for its approval."""
    gates = Gates()
    gates.open("node")
    async with serve(tmp_path, {"when-resolved": WHEN_RESOLVED}, registry=gates.registry()) as d:
        run = await start_run(d)
        await d.approve(run["id"], "change", who="alice")
        await wait_until(lambda: _at(d, run["id"], "only-while-firing"))
        status, body = await d.webhook(alert_payload(job="node", fingerprint="fp-node", status="resolved"))
        assert status == 200 and body["cancelled"] == []  # it changed something: it goes on
        run = await d.run(run["id"])
        assert run["alert_resolved"] is True
        assert [s["state"] for s in run["steps"]] == ["succeeded", "skipped", "awaiting_approval"]
        skipped = [e for e in run["timeline"] if e["event"] == "step_skipped"]
        assert skipped[-1]["step"] == "only-while-firing" and skipped[-1]["reason"] == "alert resolved"
        status, body = await d.approve(run["id"], "only-while-firing", who="alice")
        assert status == 409
        assert (await d.approve(run["id"], "always", who="alice"))[0] == 200
        await d.engine.wait_idle()
        assert (await d.run(run["id"]))["state"] == "succeeded"


async def test_unknown_run_and_step(tmp_path: Path) -> None:
    async with serve(tmp_path, runbook(), registry=Gates().registry()) as d:
        assert (await d.call("GET", "/api/v1/runs/nope"))[0] == 404
        run = await start_run(d)
        status, body = await d.approve(run["id"], "no-such-step")
        assert status == 404
        status, body = await d.approve(run["id"], "change")
        assert status == 409 and "the run is at step look" in body["error"]
        status, body = await d.call("GET", "/api/v1/runs?state=bogus")
        assert status == 400


async def test_one_person_with_two_identities_counts_once(tmp_path: Path) -> None:
    """people: maps identities to persons; min_approvers and separation of duties hold per person, so a
    person with a token and a Slack account (here: two tokens) cannot count as two approvers."""
    gates = Gates()
    gates.open("node")
    cfg = base_config(tmp_path, people={"ann": ["alice", "bob"]})
    async with serve(tmp_path, runbook(min_approvers=2), config=cfg, registry=gates.registry()) as d:
        run = await start_run(d)
        assert (await d.approve(run["id"], "look", who="alice"))[0] == 200
        status, body = await d.approve(run["id"], "look", who="bob")
        assert status == 409 and "(ann) already approved" in body["error"]
        assert (await d.run(run["id"]))["steps"][0]["state"] == "awaiting_approval"
        assert (await d.approve(run["id"], "look", who="admin"))[0] == 200
        await wait_until(lambda: _at(d, run["id"], "change"))

        status, manual = await d.call(
            "POST", "/api/v1/runs", token="alice", json={"runbook": "two-steps", "params": {"job": "db"}}
        )
        assert status == 201, manual
        await d.approve(manual["id"], "look", who="alice")
        await d.approve(manual["id"], "look", who="admin")
        await wait_until(lambda: _at(d, manual["id"], "change"))
        status, body = await d.approve(manual["id"], "change", who="bob")  # alice's other identity
        assert status == 403 and "separation of duties" in body["error"]


async def test_starting_a_run_by_hand_needs_an_approver_group_of_the_runbook(tmp_path: Path) -> None:
    async with serve(tmp_path, runbook(), registry=Gates().registry()) as d:
        body = {"runbook": "two-steps", "params": {"job": "x"}}
        status, answer = await d.call("POST", "/api/v1/runs", token="carol", json=body)  # approver, group dba
        assert status == 403 and "cannot start it" in answer["error"]
        status, answer = await d.call("POST", "/api/v1/runs", token="vic", json=body)  # viewer
        assert status == 403
        status, answer = await d.call("POST", "/api/v1/runs", token="admin", json=body)
        assert status == 201 and answer["requester"] == "admin"
        assert (await d.call("GET", "/api/v1/runs"))[1]["runs"][0]["id"] == answer["id"]


def test_people_config_is_checked(tmp_path: Path) -> None:
    from daemon.config import parse_config
    from daemon.errors import ConfigError

    with pytest.raises(ConfigError, match="'alice' is listed for both ann and al"):
        parse_config(base_config(tmp_path, people={"ann": ["alice"], "al": ["alice"]}))
    with pytest.raises(ConfigError, match=r"people\.ann: 'mallory' is neither a token name"):
        parse_config(base_config(tmp_path, people={"ann": ["alice", "mallory"]}))
    cfg = parse_config(base_config(tmp_path, people={"ann": ["alice", "slack:U0ANN"]}))
    assert cfg.person_of("slack:U0ANN") == cfg.person_of("alice") == "ann"
    assert cfg.person_of("bob") == "bob"
