"""The client commands of the CLI (design section 7) against a real ``runbookd serve``, and ``plan``.

Every command runs as a subprocess of the real console script, with RUNBOOKD_SERVER and RUNBOOKD_TOKEN in
its environment. Prometheus and Alertmanager point at closed loopback ports: nothing here needs them (the
walked runbook only uses notify.log).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.payloads import webhook_payload
from support.ports import closed_port
from support.procs import base_env
from support.runbookd import RunbookdProcess

REPO = Path(__file__).resolve().parent.parent
RUNBOOKD = str(Path(sys.executable).parent / "runbookd")

WALK_RUNBOOK = """
name: cli-walk
description: Two report steps, for walking a run with the CLI.
triggers:
  - alert: CliWalk
target: "{{ params.who }}"
params:
  who: "{{ alert.labels.who }}"
  greeting: hello
steps:
  - id: hello
    description: Say hello.
    action: notify.log
    with: {message: "{{ params.greeting }} {{ params.who }}"}
  - id: bye
    action: notify.log
    when: "{{ steps.hello.ok }}"
    with: {message: "{{ steps.hello.output.message }} and bye"}
"""


def make_config(tmp_path: Path) -> dict[str, Any]:
    rbdir = tmp_path / "test-runbooks"
    rbdir.mkdir(exist_ok=True)
    (rbdir / "cli-walk.yaml").write_text(textwrap.dedent(WALK_RUNBOOK).lstrip())
    return {
        "server": {"listen": "127.0.0.1:8080"},
        "state": {"path": str(tmp_path / "unused-state.db")},
        "runbooks": {"paths": [str(REPO / "runbooks"), str(rbdir)]},
        "dry_run": True,
        "timezone": "UTC",
        "prometheus": {"url": f"http://127.0.0.1:{closed_port()}", "timeout": "2s"},
        "alertmanager": {"url": f"http://127.0.0.1:{closed_port()}", "timeout": "2s"},
        "auth": {
            "webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"},
            "tokens": [
                {"name": "admin", "role": "admin", "secret": {"env": "RUNBOOKD_ADMIN_TOKEN"}},
                {"name": "viewer", "role": "viewer", "secret": {"env": "RUNBOOKD_VIEWER_TOKEN"}},
            ],
        },
        "approvers": {"sre": ["admin"]},
        "limits": {"max_concurrent_mutating_steps": 1, "max_unavailable_nodes": 1},
        "approval": {"auto_approve_read_only": False, "default_timeout": "30m"},
        "log": {"format": "json", "level": "info"},
    }


VIEWER_TOKEN = "test-viewer-token"


@pytest.fixture
def server(runbookd_factory: Callable[..., RunbookdProcess], tmp_path: Path) -> RunbookdProcess:
    return runbookd_factory(make_config(tmp_path), env={"RUNBOOKD_VIEWER_TOKEN": VIEWER_TOKEN})


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    return res.stdout


def fails(res: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert res.stdout == ""
    for f in fragments:
        assert f in res.stderr, res.stderr
    return res.stderr


def show(server: RunbookdProcess, run_id: str) -> dict[str, Any]:
    return json.loads(ok(server.cli("show", run_id, "--output", "json")))


def wait_run(
    server: RunbookdProcess, run_id: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = server.get(f"/api/v1/runs/{run_id}").json()
        if pred(run):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} never got there: {json.dumps(run, indent=1)[:3000]}")
        time.sleep(0.1)


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["id"] == step_id)


INSTANCE = "10.0.0.1:9100"


def scrape_failure_payload(job: str = "node", fingerprint: str = "fp-node", **extra: str) -> dict[str, Any]:
    labels = {
        "alertname": "PrometheusScrapeFailure",
        "job": job,
        "instance": INSTANCE,
        "severity": "warning",
        **extra,
    }
    return webhook_payload(
        labels,
        fingerprint=fingerprint,
        annotations={"summary": f"job {job} targets are down"},
        starts_at="2024-05-01T10:00:00Z",
    )


STEPS = [
    "target-down",
    "scrape-error",
    "down-since",
    "others-down",
    "report",
    "silence-target",
    "wait-for-recovery",
]


def alert_run(server: RunbookdProcess, job: str = "node") -> str:
    res = server.post_webhook(scrape_failure_payload(job, fingerprint=f"fp-{job}"))
    assert res.status == 200, res
    runs = server.get("/api/v1/runs").json()["runs"]
    (run,) = [r for r in runs if r["target"] == f"{job}/{INSTANCE}"]
    return str(run["id"])


def trigger(server: RunbookdProcess, who: str = "alice") -> str:
    run = json.loads(ok(server.cli("trigger", "cli-walk", "--param", f"who={who}", "--output", "json")))
    return str(run["id"])


# -- runs --------------------------------------------------------------------------------------------------


def test_runs_lists_in_table_and_json_and_filters_by_state(server: RunbookdProcess) -> None:
    assert ok(server.cli("runs")).strip() == "no runs"
    assert json.loads(ok(server.cli("runs", "--output", "json"))) == []

    run_id = alert_run(server, "node")
    table = ok(server.cli("runs")).splitlines()
    assert table[0].split() == ["RUN", "RUNBOOK", "TARGET", "STATE", "STEP", "CREATED"]
    (row,) = [line for line in table[1:] if run_id in line]
    assert row.split()[:5] == [
        run_id,
        "prometheus-scrape-failure",
        f"node/{INSTANCE}",
        "awaiting_approval",
        "target-down",
    ]

    runs = json.loads(ok(server.cli("runs", "--output", "json")))
    assert [(r["id"], r["runbook"], r["target"], r["state"]) for r in runs] == [
        (run_id, "prometheus-scrape-failure", f"node/{INSTANCE}", "awaiting_approval")
    ]

    # a second run, then rejected: the state filter tells them apart
    other = trigger(server, "bob")
    ok(server.cli("reject", other, "--reason", "not today"))
    waiting = json.loads(ok(server.cli("runs", "--state", "awaiting_approval", "--output", "json")))
    assert [r["id"] for r in waiting] == [run_id]
    rejected = json.loads(ok(server.cli("runs", "--state", "rejected", "--output", "json")))
    assert [r["id"] for r in rejected] == [other]
    assert ok(server.cli("runs", "--state", "succeeded")).strip() == "no runs"
    human = ok(server.cli("runs", "--state", "awaiting_approval"))
    assert run_id in human and other not in human


def test_hostile_labels_cannot_make_the_terminal_show_another_target(server: RunbookdProcess) -> None:
    # a carriage return and "erase line" (ESC[2K) would overwrite the real target on a terminal; a
    # right-to-left override reverses what follows it
    job = "payments-prod\r\x1b[2Kstaging-sandbox\u202e"
    res = server.post_webhook(scrape_failure_payload(job, fingerprint="fp-hostile"))
    assert res.status == 200, res
    (run,) = json.loads(ok(server.cli("runs", "--output", "json")))
    assert run["target"] == f"{job}/{INSTANCE}"  # JSON output: the value as it is
    for human in (ok(server.cli("runs")), ok(server.cli("show", run["id"]))):
        assert not any(c in human for c in "\r\x1b\u202e"), repr(human)
        assert "payments-prod\\u000d\\u001b[2Kstaging-s" in human, human  # (the table cuts at 40)


def test_runs_unknown_state_is_an_error(server: RunbookdProcess) -> None:
    fails(server.cli("runs", "--state", "sleeping"), "unknown state 'sleeping'", "awaiting_approval")


# -- show --------------------------------------------------------------------------------------------------


def test_show_human_and_json(server: RunbookdProcess) -> None:
    run_id = alert_run(server, "node")
    run = show(server, run_id)
    assert run["id"] == run_id
    assert run["runbook"] == "prometheus-scrape-failure"
    assert run["target"] == f"node/{INSTANCE}"
    assert run["state"] == "awaiting_approval"
    assert run["dry_run"] is True
    assert run["params"] == {"job": "node", "instance": INSTANCE, "recovery_wait": "25m", "cluster": ""}
    assert run["current_step"] == "target-down"
    assert [s["id"] for s in run["steps"]] == STEPS
    first = run["steps"][0]
    assert first["state"] == "awaiting_approval"
    assert first["plan"] == {"query": f'up{{job="node", instance="{INSTANCE}"}} == 0', "expect": "non_empty"}
    assert first["plan_hash"]
    assert first["mutating"] is False
    assert step(run, "silence-target")["mutating"] is True
    assert step(run, "silence-target")["undo"]["action"] == "alertmanager.expire_silence"
    assert all(s["state"] == "pending" and s["plan"] is None for s in run["steps"][1:])
    events = [e["event"] for e in run["timeline"]]
    assert "approval_requested" in events
    requested = next(e for e in run["timeline"] if e["event"] == "approval_requested")
    assert requested["step"] == "target-down"
    assert requested["plan_hash"] == first["plan_hash"]

    human = ok(server.cli("show", run_id))
    assert f"Run       {run_id}" in human
    assert "Runbook   prometheus-scrape-failure" in human
    assert f"Target    node/{INSTANCE}" in human
    assert "State     awaiting_approval" in human
    assert "Dry run   yes" in human
    for s in STEPS:
        assert s in human
    assert f"Awaiting approval: target-down (prometheus.query), plan {first['plan_hash']}" in human
    assert f'"query": "up{{job=\\"node\\", instance=\\"{INSTANCE}\\"}} == 0"' in human  # the plan, as JSON
    assert "Timeline:" in human
    assert "approval_requested" in human
    steps_table = [line for line in human.splitlines() if "silence-target" in line]
    assert "mutating" in steps_table[0] and "pending" in steps_table[0]


def test_show_unknown_run(server: RunbookdProcess) -> None:
    fails(server.cli("show", "no-such-run"), "404", "no-such-run")


# -- approve -----------------------------------------------------------------------------------------------


def test_approve_binds_the_plan_hash_shown_and_walks_the_run(server: RunbookdProcess) -> None:
    run_id = trigger(server, "alice")
    shown = show(server, run_id)
    hello = step(shown, "hello")
    assert hello["state"] == "awaiting_approval"
    assert hello["plan"] == {"message": "hello alice", "level": "info"}
    hash_shown = hello["plan_hash"]
    assert hash_shown in ok(server.cli("show", run_id))

    # approving a step the run is not at fails clearly
    fails(server.cli("approve", run_id, "--step", "bye"), "409", "bye")

    out = ok(server.cli("approve", run_id))
    assert out.startswith(f"approved hello of {run_id}")
    run = wait_run(server, run_id, lambda r: step(r, "bye")["state"] == "awaiting_approval")
    hello = step(run, "hello")
    assert hello["state"] == "succeeded"
    assert hello["output"]["message"] == "hello alice"
    assert [(a["by"], a["plan_hash"]) for a in hello["approvals"]] == [("admin", hash_shown)]
    bye = step(run, "bye")
    assert bye["plan"] == {"message": "hello alice and bye", "level": "info"}  # from hello's output
    assert bye["plan_hash"] != hash_shown

    # the second approval is of the next step, bound to its own plan
    approved = json.loads(ok(server.cli("approve", run_id, "--step", "bye", "--output", "json")))
    assert approved["id"] == run_id
    assert [a["plan_hash"] for a in step(approved, "bye")["approvals"]] == [bye["plan_hash"]]
    run = wait_run(server, run_id, lambda r: r["state"] == "succeeded")
    assert [s["state"] for s in run["steps"]] == ["succeeded", "succeeded"]
    approvals = [e for e in show(server, run_id)["timeline"] if e["event"] == "step_approved"]
    assert [(e["step"], e["by"], e["plan_hash"]) for e in approvals] == [
        ("hello", "admin", hash_shown),
        ("bye", "admin", bye["plan_hash"]),
    ]
    # nothing left to approve
    fails(server.cli("approve", run_id), run_id, "succeeded")


def test_viewer_cannot_approve(server: RunbookdProcess) -> None:
    run_id = trigger(server)
    fails(server.cli("approve", run_id, token=VIEWER_TOKEN), "403")
    assert step(show(server, run_id), "hello")["approvals"] == []
    # but a viewer may look
    assert run_id in ok(server.cli("runs", token=VIEWER_TOKEN))


# -- reject ------------------------------------------------------------------------------------------------


def test_reject_with_reason(server: RunbookdProcess) -> None:
    run_id = alert_run(server, "node")
    out = ok(server.cli("reject", run_id, "--reason", "known maintenance window"))
    assert out.startswith(f"rejected {run_id}:")
    assert "known maintenance window" in out
    run = show(server, run_id)
    assert run["state"] == "rejected"
    assert "known maintenance window" in run["outcome"]
    assert step(run, "target-down")["state"] == "rejected"
    assert all(s["state"] == "pending" for s in run["steps"][1:])
    assert any("known maintenance window" in json.dumps(e) for e in run["timeline"] if e["by"] == "admin"), (
        run["timeline"]
    )
    # a rejected run takes no approval, and no second rejection
    fails(server.cli("approve", run_id), "409")
    fails(server.cli("reject", run_id, "--reason", "again"), "409")


def test_reject_needs_a_reason(server: RunbookdProcess) -> None:
    run_id = trigger(server)
    res = server.cli("reject", run_id)
    assert res.returncode == 2 and "--reason" in res.stderr  # argparse usage error
    fails(server.cli("reject", run_id, "--reason", "   "), "400", "reason")
    assert show(server, run_id)["state"] == "awaiting_approval"


# -- trigger -----------------------------------------------------------------------------------------------


def test_trigger_with_params(server: RunbookdProcess) -> None:
    out = ok(server.cli("trigger", "cli-walk", "--param", "who=carol", "--param", "greeting=hi there"))
    assert "(cli-walk for carol): awaiting_approval" in out
    run_id = out.split()[1]
    run = show(server, run_id)
    assert run["trigger"] == "manual"
    assert run["requester"] == "admin"
    assert run["params"] == {"who": "carol", "greeting": "hi there"}
    assert step(run, "hello")["plan"]["message"] == "hi there carol"
    assert "by admin" in ok(server.cli("show", run_id))


def test_trigger_errors(server: RunbookdProcess) -> None:
    fails(
        server.cli("trigger", "cli-walk", "--param", "who=x", "--param", "nope=1"),
        "unknown param(s) nope",
        "who",
    )
    # a param with no default (it comes from an alert label) must be given by hand
    fails(server.cli("trigger", "cli-walk"), "param who")
    fails(server.cli("trigger", "no-such-runbook"), "404", "no-such-runbook")
    fails(server.cli("trigger", "cli-walk", "--param", "who"), "KEY=VALUE")
    fails(server.cli("trigger", "cli-walk", "--param", "=x"), "KEY=VALUE")
    fails(server.cli("trigger", "cli-walk", "--param", "who=a", "--param", "who=b"), "given twice", "'a'")
    assert json.loads(ok(server.cli("runs", "--output", "json"))) == []
    # one active run per (runbook, target)
    run_id = trigger(server, "dave")
    fails(server.cli("trigger", "cli-walk", "--param", "who=dave"), "409", run_id)
    assert len(json.loads(ok(server.cli("runs", "--output", "json")))) == 1


def test_viewer_cannot_trigger(server: RunbookdProcess) -> None:
    fails(server.cli("trigger", "cli-walk", "--param", "who=x", token=VIEWER_TOKEN), "403")


# -- pause / resume ----------------------------------------------------------------------------------------


def test_pause_holds_approved_steps_and_resume_releases_them(server: RunbookdProcess) -> None:
    assert server.get("/api/v1/status").json()["paused"] is False
    assert "paused" in ok(server.cli("pause"))
    assert server.get("/api/v1/status").json()["paused"] is True

    run_id = trigger(server)
    ok(server.cli("approve", run_id))
    run = show(server, run_id)
    assert step(run, "hello")["state"] == "approved"  # approved, but nothing starts while paused
    time.sleep(0.5)
    run = show(server, run_id)
    assert step(run, "hello")["state"] == "approved"
    assert step(run, "hello")["started_at"] is None

    assert "resumed" in ok(server.cli("resume"))
    assert server.get("/api/v1/status").json()["paused"] is False
    run = wait_run(server, run_id, lambda r: step(r, "hello")["state"] == "succeeded")
    assert step(run, "bye")["state"] == "awaiting_approval"


def test_viewer_cannot_pause(server: RunbookdProcess) -> None:
    fails(server.cli("pause", token=VIEWER_TOKEN), "403")
    assert server.get("/api/v1/status").json()["paused"] is False


# -- authentication and reachability -----------------------------------------------------------------------


@pytest.mark.parametrize("command", [["runs"], ["show", "x"], ["approve", "x"], ["pause"]])
def test_missing_token_exits_1_with_a_hint(server: RunbookdProcess, command: list[str]) -> None:
    err = fails(server.cli(*command, token=""), "401", "RUNBOOKD_TOKEN")
    assert err.startswith("runbookd: ")
    assert server.get("/api/v1/status").json()["paused"] is False


def test_wrong_token_exits_1(server: RunbookdProcess) -> None:
    err = fails(server.cli("runs", token="not-the-token"), "401")
    assert "not-the-token" not in err
    assert server.admin_token not in err


def client(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNBOOKD, *args],
        env=base_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "command", [["runs"], ["show", "r1"], ["approve", "r1"], ["trigger", "x"], ["resume"]]
)
def test_unreachable_server(command: list[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    res = client(*command, env={"RUNBOOKD_SERVER": url, "RUNBOOKD_TOKEN": "t"})
    fails(res, f"cannot reach runbookd at {url}")


def test_server_flag_overrides_the_environment(server: RunbookdProcess) -> None:
    env = {"RUNBOOKD_SERVER": f"http://127.0.0.1:{closed_port()}", "RUNBOOKD_TOKEN": server.admin_token}
    assert ok(client("runs", "--server", server.url, env=env)).strip() == "no runs"
    fails(client("runs", "--server", "ftp://127.0.0.1:21", env=env), "http(s) URL")


# -- plan --------------------------------------------------------------------------------------------------


@pytest.fixture
def plan_config(tmp_path: Path) -> Path:
    path = tmp_path / "plan-config.yaml"
    path.write_text(yaml.safe_dump(make_config(tmp_path), sort_keys=False))
    return path


def run_plan(config: Path, payload: Any, *args: str) -> subprocess.CompletedProcess[str]:
    alert = config.parent / "alert.json"
    alert.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return subprocess.run(
        [RUNBOOKD, "plan", "--config", str(config), "--alert", str(alert), *args],
        cwd=config.parent,
        env=base_env(),  # plan needs no secrets and no server
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_plan_json_renders_target_params_and_steps(plan_config: Path) -> None:
    payload = scrape_failure_payload("node-exporter")
    other = dict(payload["alerts"][0], labels={"alertname": "SomethingElse"}, fingerprint="fp2")
    resolved = dict(payload["alerts"][0], status="resolved", fingerprint="fp3")
    payload["alerts"] += [other, resolved]
    result = json.loads(ok(run_plan(plan_config, payload, "--output", "json")))

    assert result["unmatched_alerts"] == ["SomethingElse"]
    (run,) = result["runs"]  # the resolved alert starts nothing
    assert run["runbook"] == "prometheus-scrape-failure"
    assert run["alert"] == "PrometheusScrapeFailure"
    assert run["target"] == f"node-exporter/{INSTANCE}"
    assert run["params"] == {
        "job": "node-exporter",
        "instance": INSTANCE,
        "recovery_wait": "25m",
        "cluster": "",
    }
    steps = {s["id"]: s for s in run["steps"]}
    assert list(steps) == STEPS
    selector = f'up{{job="node-exporter", instance="{INSTANCE}"}}'
    assert steps["target-down"]["plan"] == {"query": f"{selector} == 0", "expect": "non_empty"}
    assert steps["target-down"]["mutating"] is False
    assert steps["down-since"]["plan"]["expect"] == "any"
    assert f"max_over_time(timestamp({selector} == 1)[6h:])" in steps["down-since"]["plan"]["query"]
    silence = steps["silence-target"]
    assert silence["mutating"] is True
    assert silence["plan"]["duration"] == "30m"
    assert silence["plan"]["matchers"] == [
        {"name": "job", "value": "node-exporter", "is_regex": False, "is_equal": True},
        {"name": "instance", "value": INSTANCE, "is_regex": False, "is_equal": True},
        {"name": "alertname", "value": "PrometheusScrapeFailure", "is_regex": False, "is_equal": False},
        {"name": "cluster", "value": "|", "is_regex": True, "is_equal": True},  # no cluster label: ""
    ]
    assert silence["plan"]["require"] == ["job", "instance"]
    assert silence["undo"]["action"] == "alertmanager.expire_silence"
    assert "node-exporter" in silence["plan"]["comment"]
    # the report uses earlier outputs: rendered later, not now
    assert steps["report"]["plan"] is None
    assert "rendered when the earlier steps it uses have run" in steps["report"]["note"]
    assert "error" not in steps["report"]
    # plan changes nothing: no state file appears
    assert not (plan_config.parent / "unused-state.db").exists()


def test_plan_human_output(plan_config: Path) -> None:
    out = ok(run_plan(plan_config, scrape_failure_payload("node-exporter")))
    lines = out.splitlines()
    assert lines[0] == (
        f"PrometheusScrapeFailure -> runbook prometheus-scrape-failure, target node-exporter/{INSTANCE}"
    )
    assert '"job": "node-exporter"' in lines[1] and '"recovery_wait": "25m"' in lines[1]
    assert lines[2].split() == ["STEP", "ACTION", "KIND", "PLAN"]
    rows = {line.split()[0]: line for line in lines[3:] if line.strip()}
    assert "read-only" in rows["target-down"]
    assert f'up{{job=\\"node-exporter\\", instance=\\"{INSTANCE}\\"}} == 0' in rows["target-down"]
    assert "mutating" in rows["silence-target"] and '"duration": "30m"' in rows["silence-target"]
    assert "alertmanager.expire_silence" in rows["silence-target.undo"]
    assert "rendered when the earlier steps it uses have run" in rows["report"]


def test_plan_escapes_a_hostile_job_label(plan_config: Path) -> None:
    job = 'x"} or vector(1) or up{job="'
    result = json.loads(ok(run_plan(plan_config, scrape_failure_payload(job), "--output", "json")))
    (run,) = result["runs"]
    steps = {s["id"]: s for s in run["steps"]}
    query = steps["target-down"]["plan"]["query"]
    assert query == f'up{{job="x\\"}} or vector(1) or up{{job=\\"", instance="{INSTANCE}"}} == 0'
    # the silence matcher takes the value as data
    assert steps["silence-target"]["plan"]["matchers"][0]["value"] == job


def test_plan_shows_why_a_run_would_not_start(plan_config: Path) -> None:
    payload = scrape_failure_payload()
    del payload["alerts"][0]["labels"]["job"]
    # A run that cannot be planned is an error (exit 1), said in the alert's words, not Jinja's.
    done = run_plan(plan_config, payload, "--output", "json")
    assert done.returncode == 1, done
    (run,) = json.loads(done.stdout)["runs"]
    assert "steps" not in run
    assert run["error"] == "the alert has no label `job` (needed by param job)"
    done = run_plan(plan_config, payload)
    assert done.returncode == 1 and "would not start: the alert has no label `job`" in done.stdout


def test_plan_for_a_hostile_silence_value(plan_config: Path) -> None:
    result = json.loads(ok(run_plan(plan_config, scrape_failure_payload("j" * 1100), "--output", "json")))
    (run,) = result["runs"]
    silence = next(s for s in run["steps"] if s["id"] == "silence-target")
    assert silence["plan"] is None
    assert "matchers.0.value" in silence["error"]


def test_plan_no_match(plan_config: Path) -> None:
    payload = scrape_failure_payload()
    payload["alerts"][0]["labels"] = {"alertname": "Unrelated"}
    out = ok(run_plan(plan_config, payload))
    assert "no runbook answers these alerts" in out
    assert "no runbook for: Unrelated" in out


@pytest.mark.parametrize(
    ("payload", "fragments"),
    [
        ("{not json", ("not valid JSON",)),
        ({"alerts": []}, ("status",)),
        (
            {"status": "firing", "alerts": [{"status": "firing", "labels": {}}]},
            ("alerts.0.labels", "alertname"),
        ),
        (
            {"status": "firing", "alerts": [{"status": "burning", "labels": {"alertname": "X"}}]},
            ("alerts.0.status",),
        ),
        ([1, 2], ()),
    ],
    ids=["not-json", "no-status", "no-alertname", "bad-alert-status", "not-an-object"],
)
def test_plan_invalid_payload(plan_config: Path, payload: Any, fragments: tuple[str, ...]) -> None:
    res = run_plan(plan_config, payload)
    err = fails(res, *fragments)
    assert err.startswith(str(plan_config.parent / "alert.json"))


def test_plan_missing_alert_file(plan_config: Path) -> None:
    res = subprocess.run(
        [RUNBOOKD, "plan", "--config", str(plan_config), "--alert", str(plan_config.parent / "nope.json")],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    fails(res, "nope.json", "cannot read")


def test_approve_shows_the_plan_it_approves_and_refuses_a_stale_hash(server: RunbookdProcess) -> None:
    run_id = trigger(server, "carl")
    hello = step(show(server, run_id), "hello")
    fails(server.cli("approve", run_id, "--plan-hash", "0000000000000000"), "409", "changed since you saw it")
    assert step(show(server, run_id), "hello")["approvals"] == []
    res = server.cli("approve", run_id, "--plan-hash", hello["plan_hash"])
    out = ok(res)
    assert out.startswith(f"approved hello of {run_id}")
    # what was approved is printed: the step, its action, kind, plan hash and the exact parameters
    assert "step hello: notify.log [read-only]" in res.stderr
    assert hello["plan_hash"] in res.stderr and '"message": "hello carl"' in res.stderr
