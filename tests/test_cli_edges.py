"""CLI and API edges seen by a new user (issue: from clone to cluster, points 8-10), each checked through
the public contract: a manual trigger's bad param is refused with 400 naming it, before any run exists;
template errors speak of the alert's labels; `plan` exits non-zero when a run cannot be planned."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.runbookd import RunbookdProcess, runbookd_bin

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    proc = RunbookdProcess(
        tmp_path / "rb",
        REPO / "config.example.yaml",
        cwd=REPO,
        state_path=tmp_path / "state.db",
        webhook_token="dev-webhook",
        admin_token="dev-admin",
        env={"RUNBOOKD_ONCALL_TOKEN": "dev-oncall"},
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_a_bad_manual_param_is_refused_naming_it_and_no_run_is_born_failed(daemon: RunbookdProcess) -> None:
    got = daemon.post(
        "/api/v1/runs",
        json={"runbook": "node-degradation", "params": {"node": "Not A Node!", "condition": "NotReady"}},
    )
    assert got.status == 400, got
    error = got.json()["error"]
    assert error.startswith("param node: ") and "node-status" in error, error
    assert daemon.get("/api/v1/runs").json()["runs"] == []

    done = daemon.cli(
        "trigger", "node-degradation", "--param", "node=Not A Node!", "--param", "condition=NotReady"
    )
    assert done.returncode != 0 and "param node" in done.stderr
    assert daemon.get("/api/v1/runs").json()["runs"] == []

    fine = daemon.post(
        "/api/v1/runs",
        json={"runbook": "node-degradation", "params": {"node": "node-1", "condition": "NotReady"}},
    )
    assert fine.status == 201, fine


def test_a_manual_trigger_without_a_needed_param_says_which_and_why(daemon: RunbookdProcess) -> None:
    got = daemon.post("/api/v1/runs", json={"runbook": "demo", "params": {}})
    assert got.status == 400, got
    error = got.json()["error"]
    assert "param service is needed" in error and "alert label `service`" in error, error
    assert "dict object" not in error


def _plan(payload: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(payload))
    return subprocess.run(
        [
            runbookd_bin(),
            "plan",
            "--alert",
            str(alert),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_plan_speaks_of_the_alert_and_fails_when_a_param_cannot_be_rendered(
    daemon: RunbookdProcess, tmp_path: Path
) -> None:
    payload = json.loads((REPO / "docs" / "examples" / "demo-alert.json").read_text())
    assert _plan(payload, tmp_path, daemon.env).returncode == 0
    del payload["alerts"][0]["labels"]["service"]
    done = _plan(payload, tmp_path, daemon.env)
    assert done.returncode == 1, done
    assert "the alert has no label `service` (needed by param service)" in done.stdout, done.stdout
    assert "dict object" not in done.stdout


def test_a_webhook_alert_without_the_label_is_suppressed_with_the_same_words(daemon: RunbookdProcess) -> None:
    payload = json.loads((REPO / "docs" / "examples" / "demo-alert.json").read_text())
    del payload["alerts"][0]["labels"]["service"]
    posted = daemon.post_webhook(payload)
    result = daemon.get(f"/api/v1/receipts/{posted.json()['receipt']}").json()["result"]
    (why,) = result["suppressed"]
    assert why["runbook"] == "demo" and why["target"] is None
    assert why["reason"] == "render_error: the alert has no label `service` (needed by param service)"
