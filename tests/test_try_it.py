"""The README's try-it walk on a fresh machine, with config.example.yaml as shipped and the `demo` runbook:
an alert-started run and a manually triggered one both reach `succeeded` through the CLI, a resent alert
within the cooldown starts nothing and its receipt says why, and the CLI's rough edges seen on that walk
(a closed pipe, approving a finished run) answer cleanly."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.runbookd import RunbookdProcess

REPO = Path(__file__).resolve().parents[1]
DEMO_ALERT = REPO / "docs" / "examples" / "demo-alert.json"
ONCALL = "dev-oncall"


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    """`runbookd serve --config config.example.yaml` from the repository's root, as the README runs it
    (only the state file and the port are moved, so parallel tests do not collide)."""
    proc = RunbookdProcess(
        tmp_path / "rb",
        REPO / "config.example.yaml",
        cwd=REPO,
        state_path=tmp_path / "state.db",
        webhook_token="dev-webhook",
        admin_token="dev-admin",
        env={"RUNBOOKD_ONCALL_TOKEN": ONCALL},
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _run(d: RunbookdProcess, run_id: str) -> dict[str, Any]:
    got = d.cli("show", run_id, "--output", "json")
    assert got.returncode == 0, got.stderr
    return dict(json.loads(got.stdout))


def _wait_state(d: RunbookdProcess, run_id: str, wanted: set[str], timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = _run(d, run_id)
        if run["state"] in wanted:
            return run
        assert time.monotonic() < deadline, f"run {run_id} stayed {run['state']}"
        time.sleep(0.05)


def _approve_to_end(d: RunbookdProcess, run_id: str, approver_of: dict[str, str]) -> dict[str, Any]:
    """`runbookd approve RUN --yes` for each step as it becomes current, with the token given per step."""
    for _ in range(10):
        run = _wait_state(d, run_id, {"awaiting_approval", "succeeded", "failed"})
        if run["state"] != "awaiting_approval":
            return run
        step = run["current_step"]
        done = d.cli("approve", run_id, "--yes", token=approver_of.get(step, "dev-admin"))
        assert done.returncode == 0, (step, done.stderr)
    raise AssertionError("too many steps")


def test_plan_shows_the_demo_run_and_changes_nothing(daemon: RunbookdProcess) -> None:
    done = subprocess.run(
        [daemon.executable[0], "plan", "--alert", str(DEMO_ALERT), "--config", "config.example.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=daemon.env,
    )
    assert done.returncode == 0, done.stderr
    assert "demo" in done.stdout and "web" in done.stdout
    assert daemon.get("/api/v1/runs").json()["runs"] == []


def test_alert_started_walk_succeeds_and_a_resent_alert_says_why_nothing_started(
    daemon: RunbookdProcess,
) -> None:
    payload = json.loads(DEMO_ALERT.read_text())
    posted = daemon.post_webhook(payload)
    assert posted.status == 200
    receipt = daemon.get(f"/api/v1/receipts/{posted.json()['receipt']}").json()
    (run_id,) = receipt["result"]["started"]
    assert receipt["received_at"].endswith("Z") and receipt["routed_at"].endswith("Z"), "ISO times"

    run = _approve_to_end(daemon, run_id, {})
    assert run["state"] == "succeeded", run
    silence = next(s for s in run["steps"] if s["id"] == "silence")
    assert silence["output"]["dry_run"] is True and silence["output"]["requests"][0]["method"] == "POST"

    again = daemon.post_webhook(payload)
    result = daemon.get(f"/api/v1/receipts/{again.json()['receipt']}").json()["result"]
    assert result["started"] == [] and result["attached"] == []
    (why,) = result["suppressed"]
    assert why["runbook"] == "demo" and why["target"] == "web"
    assert why["reason"].startswith("cooldown: last run ended ") and why["reason"].endswith(" s ago")
    assert why["until"].endswith("Z")
    assert len(daemon.get("/api/v1/runs").json()["runs"]) == 1

    unmatched = json.loads(json.dumps(payload).replace("RunbookdDemo", "NobodyAnswersThis"))
    unmatched["alerts"][0]["fingerprint"] = "0000000000000bad"
    got = daemon.post_webhook(unmatched)
    result = daemon.get(f"/api/v1/receipts/{got.json()['receipt']}").json()["result"]
    assert result["unmatched"] == [{"alert": "NobodyAnswersThis", "fingerprint": "0000000000000bad"}]

    finished = daemon.cli("approve", run_id, "--step", "silence", "--yes")
    assert finished.returncode != 0
    assert "409" in finished.stderr and '"matchers"' not in finished.stderr, "no plan shown"


def test_manual_trigger_needs_a_second_person_for_the_mutating_step(daemon: RunbookdProcess) -> None:
    started = daemon.cli("trigger", "demo", "--param", "service=api", "--output", "json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["id"]

    _wait_state(daemon, run_id, {"awaiting_approval"})
    looked = daemon.cli("approve", run_id, "--yes")  # read-only: the requester may
    assert looked.returncode == 0, looked.stderr
    assert "[read-only] (dry-run: reads run for real)" in looked.stderr
    run = _wait_state(daemon, run_id, {"awaiting_approval"})
    assert run["current_step"] == "silence"
    refused = daemon.cli("approve", run_id, "--yes")
    assert refused.returncode != 0, "the requester approved its own mutating step"
    assert "[MUTATING] (dry-run: it only records its requests)" in refused.stderr

    run = _approve_to_end(daemon, run_id, {"silence": ONCALL})
    assert run["state"] == "succeeded", run


def test_runs_into_a_closed_pipe_prints_no_traceback(daemon: RunbookdProcess) -> None:
    """`runbookd runs | head -2`: the reader has gone before the table is written."""
    assert daemon.cli("trigger", "demo", "--param", "service=svc").returncode == 0
    env = {**daemon.env, "RUNBOOKD_SERVER": daemon.url, "RUNBOOKD_TOKEN": "dev-admin"}
    proc = subprocess.Popen(
        [daemon.executable[0], "runs"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the CLI has fetched the runs: its first write meets a closed pipe
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def _show(d: RunbookdProcess, run_id: str) -> str:
    got = d.cli("show", run_id)
    assert got.returncode == 0, got.stderr
    return got.stdout


def test_show_wraps_long_values_instead_of_cutting_them(daemon: RunbookdProcess) -> None:
    service = "svc-" + "x" * 50 + "-" + "y" * 50 + "-" + "z" * 60
    started = daemon.cli("trigger", "demo", "--param", f"service={service}", "--output", "json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["id"]
    lines = _show(daemon, run_id).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Params"))
    following = itertools.takewhile(lambda line: line.startswith(" " * 10), lines[start + 1 :])
    block = [lines[start], *following]
    text = "".join(line[10:] for line in block)
    assert json.dumps({"service": service}) in text, block
    assert "..." not in text and max(len(line) for line in block) <= 110


def test_show_says_not_run_after_a_rejection_and_approved_while_paused(daemon: RunbookdProcess) -> None:
    started = daemon.cli("trigger", "demo", "--param", "service=paused", "--output", "json")
    run_id = json.loads(started.stdout)["id"]
    _wait_state(daemon, run_id, {"awaiting_approval"})
    assert daemon.cli("pause").returncode == 0
    assert daemon.cli("approve", run_id, "--yes").returncode == 0
    shown = _show(daemon, run_id)
    assert "State     approved, waiting to start" in shown, shown
    runs = daemon.cli("runs").stdout
    assert "approved, waiting to start" in runs, runs
    assert daemon.cli("resume").returncode == 0

    run = _wait_state(daemon, run_id, {"awaiting_approval"})
    while run["current_step"] != "silence":
        run = _wait_state(daemon, run_id, {"awaiting_approval"})
    assert daemon.cli("reject", run_id, "--reason", "not today").returncode == 0
    rows = {
        line.split()[0]: line for line in _show(daemon, run_id).splitlines() if line.startswith(("  ", "->"))
    }
    assert "not run" in rows["report"] and "rejected" in rows.get("silence", rows.get("->", "")), rows
