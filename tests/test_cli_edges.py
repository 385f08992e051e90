"""CLI and API edges seen by a new user (issue: from clone to cluster, points 8-10), each checked through
the public contract: a manual trigger's bad param is refused with 400 naming it, before any run exists;
template errors speak of the alert's labels; `plan` exits non-zero when a run cannot be planned."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.runbookd import RunbookdProcess, runbookd_bin

from daemon.config import load_config

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


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [runbookd_bin(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env
    )


def _config(tokens: list[dict[str, Any]], webhook_env: str = "T_WEBHOOK") -> dict[str, Any]:
    return {
        "state": {"path": "./state/state.db"},
        "runbooks": {"paths": ["./runbooks"]},
        "auth": {"webhook_token": {"env": webhook_env}, "tokens": tokens},
        "approvers": {"sre": [t["name"] for t in tokens]},
    }


def _write(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "runbooks").mkdir()
    shutil.copy(REPO / "runbooks" / "demo.yaml", folder / "runbooks" / "demo.yaml")
    return folder / "config.yaml"


def test_validate_reports_every_unset_variable_at_once(tmp_path: Path) -> None:
    tokens = [
        {"name": "a", "role": "admin", "secret": {"env": "T_A"}},
        {"name": "b", "role": "approver", "secret": {"env": "T_B"}},
    ]
    config = _write(tmp_path / "conf", _config(tokens))
    env = {k: v for k, v in os.environ.items() if not k.startswith("T_")}
    done = _cli("validate", "--config", str(config), cwd=tmp_path, env=env)
    assert done.returncode == 1, done
    for variable in ("T_WEBHOOK", "T_A", "T_B"):
        assert f"environment variable {variable} is not set" in done.stderr, done.stderr


def test_validate_refuses_what_serve_refuses_one_secret_for_two_tokens(tmp_path: Path) -> None:
    tokens = [
        {"name": "a", "role": "admin", "secret": {"env": "T_A"}},
        {"name": "b", "role": "approver", "secret": {"env": "T_B"}},
    ]
    config = _write(tmp_path / "conf", _config(tokens))
    env = {**os.environ, "T_WEBHOOK": "w", "T_A": "same", "T_B": "same"}
    done = _cli("validate", "--config", str(config), cwd=tmp_path, env=env)
    assert done.returncode == 1 and "tokens 'a' and 'b' have the same secret" in done.stderr, done
    env["T_B"] = "other"
    ok = _cli("validate", "--config", str(config), cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr


def test_relative_paths_are_read_from_the_config_files_folder(tmp_path: Path) -> None:
    tokens = [{"name": "a", "role": "admin", "secret": {"file": "secrets/a"}}]
    config = _write(tmp_path / "conf", _config(tokens))
    (tmp_path / "conf" / "secrets").mkdir()
    (tmp_path / "conf" / "secrets" / "a").write_text("token-a\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "T_WEBHOOK": "w"}
    done = _cli("validate", "--config", str(config), cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    assert "1 runbook(s)" in done.stdout

    loaded = load_config(config)
    assert loaded.state.path == tmp_path / "conf" / "state" / "state.db"
    assert loaded.runbooks.paths == [tmp_path / "conf" / "runbooks"]
    assert loaded.auth.tokens[0].secret.file == tmp_path / "conf" / "secrets" / "a"


def test_a_bad_serve_flag_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A contract audit: `serve --listen bogus` printed a pydantic traceback (exit 1)."""
    config = _write(tmp_path / "conf", _config([{"name": "a", "role": "admin", "secret": {"env": "T_A"}}]))
    env = {**os.environ, "T_WEBHOOK": "w", "T_A": "a"}
    done = _cli("serve", "--config", str(config), "--listen", "bogus", cwd=tmp_path, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "server.listen: listen must be HOST:PORT" in done.stderr, (
        done.stderr
    )
    assert len(done.stderr.strip().splitlines()) <= 2, done.stderr


def test_help_names_the_default_config() -> None:
    for command in (["serve"], ["plan"], ["state", "migrate"]):  # audit: state migrate did not say
        done = subprocess.run(
            [runbookd_bin(), *command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert "default: config.example.yaml" in done.stdout, (command, done.stdout)
