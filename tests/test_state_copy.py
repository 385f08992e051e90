"""``runbookd state copy`` moves a real installation between stores: a SQLite daemon's runs, approvals and
timelines appear unchanged on a PostgreSQL daemon (which carries the run on), and copied back to a new
SQLite file they are still the same. A target that holds data is refused unless forced."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.payloads import webhook_payload
from support.polling import wait_until
from support.postgres import PostgresServer
from support.runbookd import RunbookdProcess, runbookd_bin

RUNBOOK = {
    "name": "copy-test",
    "triggers": [{"alert": "CopyTest"}],
    "target": "{{ params.name }}",
    "params": {"name": "{{ alert.labels.instance }}"},
    "policy": {"cooldown": "0s", "max_runs_per_day": 50, "on_resolved": "ignore"},
    "approval": {"approvers": ["sre"], "timeout": "30m"},
    "steps": [
        {"id": "one", "action": "notify.log", "with": {"message": "one {{ params.name }}"}},
        {"id": "two", "action": "notify.log", "with": {"message": "two {{ params.name }}"}},
    ],
}


def _config(tmp_path: Path, **state: Any) -> dict[str, Any]:
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir(exist_ok=True)
    (rb_dir / "copy-test.yaml").write_text(yaml.safe_dump(RUNBOOK, sort_keys=False))
    cfg: dict[str, Any] = {
        "runbooks": {"paths": [str(rb_dir)]},
        "dry_run": True,
        "auth": {
            "webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"},
            "tokens": [{"name": "admin", "role": "admin", "secret": {"env": "RUNBOOKD_ADMIN_TOKEN"}}],
        },
        "approvers": {"sre": ["admin"]},
        "log": {"format": "json"},
    }
    if state:
        cfg["state"] = state
    return cfg


def _kept(view: dict[str, Any]) -> dict[str, Any]:
    """A run's view without ``updated_at`` (a start re-advances active runs and stamps it)."""
    return {k: v for k, v in view.items() if k != "updated_at"}


def _state(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [runbookd_bin(), "state", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _approve(rb: RunbookdProcess, run_id: str, step_id: str) -> None:
    run = rb.get(f"/api/v1/runs/{run_id}").json()
    plan_hash = next(s for s in run["steps"] if s["id"] == step_id)["plan_hash"]
    r = rb.post(f"/api/v1/runs/{run_id}/steps/{step_id}/approve", json={"plan_hash": plan_hash})
    assert r.status == 200, r


def _wait(rb: RunbookdProcess, run_id: str, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        run: dict[str, Any] = rb.get(f"/api/v1/runs/{run_id}").json()
        return run if pred(run) else None

    return dict(wait_until(f"run {run_id}", probe, 30))


def test_copy_sqlite_to_postgresql_and_back(
    runbookd_factory: Callable[..., RunbookdProcess], tmp_path: Path, postgres_server: PostgresServer
) -> None:
    sqlite_state = tmp_path / "old" / "state.db"
    old = runbookd_factory(_config(tmp_path), state_path=sqlite_state)
    started = []
    for instance in ("node-a", "node-b"):
        r = old.post_webhook(
            webhook_payload({"alertname": "CopyTest", "instance": instance}, fingerprint=instance)
        )
        started.append(old.get(f"/api/v1/receipts/{r.json()['receipt']}").json()["result"]["started"][0])
    run_a, run_b = started
    _approve(old, run_a, "one")
    before_a = _wait(old, run_a, lambda r: r["current_step"] == "two" and r["state"] == "awaiting_approval")
    before_b = old.get(f"/api/v1/runs/{run_b}").json()
    assert [e["event"] for e in before_a["timeline"]].count("step_succeeded") == 1
    # copy refuses while the SQLite daemon holds its file
    url = postgres_server.fresh_database()
    busy = _state("copy", "--from", f"sqlite:{sqlite_state}", "--to", url)
    assert busy.returncode == 2 and f"pid {old.pid}" in busy.stderr, busy.stderr
    old.stop()

    res = _state("copy", "--from", f"sqlite:{sqlite_state}", "--to", url)
    assert res.returncode == 0, res.stderr
    assert "runs: 2" in res.stdout and "timeline: " in res.stdout, res.stdout

    new = runbookd_factory(_config(tmp_path, url=url))
    assert _kept(new.get(f"/api/v1/runs/{run_a}").json()) == _kept(before_a)
    assert _kept(new.get(f"/api/v1/runs/{run_b}").json()) == _kept(before_b)
    receipts = new.get("/api/v1/receipts/1")
    assert receipts.status == 200 and receipts.json()["result"]["started"] == [run_a]
    # the PostgreSQL daemon carries the run on where the SQLite one left it
    _approve(new, run_a, "two")
    done_a = _wait(new, run_a, lambda r: r["state"] == "succeeded")
    assert done_a["timeline"][: len(before_a["timeline"])] == before_a["timeline"]
    # a new event gets a timeline position after the copied ones (identity continued)
    r = new.post_webhook(
        webhook_payload({"alertname": "CopyTest", "instance": "node-c"}, fingerprint="node-c")
    )
    assert r.json()["receipt"] == 3
    new.stop()

    # never into a store a replica is serving, not even with --force
    serving = runbookd_factory(_config(tmp_path, url=url))
    busy = _state("copy", "--from", f"sqlite:{sqlite_state}", "--to", url, "--force")
    assert busy.returncode == 1 and "is serving the target store" in busy.stderr, busy.stderr
    serving.stop()

    # into a store that holds data: refused, unless forced
    again = _state("copy", "--from", f"sqlite:{sqlite_state}", "--to", url)
    assert again.returncode == 1 and "already holds data" in again.stderr, again.stderr

    # and back to a new SQLite file: the same installation
    back_state = tmp_path / "back" / "state.db"
    res = _state("copy", "--from", url, "--to", f"sqlite:{back_state}")
    assert res.returncode == 0, res.stderr
    back = runbookd_factory(_config(tmp_path), state_path=back_state)
    assert _kept(back.get(f"/api/v1/runs/{run_a}").json()) == _kept(done_a)
    assert _kept(back.get(f"/api/v1/runs/{run_b}").json()) == _kept(before_b)

    # --force replaces what the target holds with the source's installation
    forced = _state("copy", "--from", f"sqlite:{sqlite_state}", "--to", url, "--force")
    assert forced.returncode == 0, forced.stderr
    replaced = runbookd_factory(_config(tmp_path, url=url))
    assert _kept(replaced.get(f"/api/v1/runs/{run_a}").json()) == _kept(before_a)
    assert replaced.get("/api/v1/receipts/3").status == 404


def test_copy_rejects_bad_locations(tmp_path: Path) -> None:
    res = _state("copy", "--from", "mysql://x", "--to", f"sqlite:{tmp_path}/s.db")
    assert res.returncode == 2 and "expected sqlite:PATH or postgresql://" in res.stderr
    res = _state("copy", "--from", f"sqlite:{tmp_path}/s.db", "--to", "postgresql://u:pw@127.0.0.1/db")
    assert res.returncode == 2 and "must not contain a password" in res.stderr
    assert "pw" not in res.stderr.replace("password", "")
    # audit: a copy onto itself was refused only by the state lock, with a misleading "another serve"
    (tmp_path / "link.db").symlink_to(tmp_path / "s.db")
    for to in (f"sqlite:{tmp_path}/link.db", f"sqlite:{tmp_path}/../{tmp_path.name}/s.db"):
        res = _state("copy", "--from", f"sqlite:{tmp_path}/s.db", "--to", to, "--force")
        assert res.returncode == 2 and "the same store" in res.stderr, res.stderr
    res = _state("copy", "--from", "postgresql://u@127.0.0.1/db", "--to", "postgres://u@127.0.0.1/db")
    assert res.returncode == 2 and "the same store" in res.stderr, res.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_state_migrate(tmp_path: Path, postgres_server: PostgresServer, backend: str) -> None:
    state = (
        {"path": str(tmp_path / "m.db")} if backend == "sqlite" else {"url": postgres_server.fresh_database()}
    )
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(_config(tmp_path, **state)))
    for _ in range(2):  # idempotent
        res = _state("migrate", "--config", str(cfg))
        assert res.returncode == 0, res.stderr
        assert "schema version" in res.stdout


def test_serve_on_an_unreachable_postgresql_exits_1_without_the_password(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    state = {"url": "postgresql://runbookd@127.0.0.1:1/runbookd", "password": {"env": "RB_TEST_DB_PASSWORD"}}
    cfg.write_text(yaml.safe_dump(_config(tmp_path, **state)))
    env = {**os.environ, "RUNBOOKD_WEBHOOK_TOKEN": "w", "RUNBOOKD_ADMIN_TOKEN": "a"}
    env["RB_TEST_DB_PASSWORD"] = "sekrit-db-password"
    res = subprocess.run(
        [runbookd_bin(), "serve", "--config", str(cfg), "--listen", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 1, res.stderr
    assert "cannot connect to the PostgreSQL state store" in res.stderr
    assert "Traceback" not in res.stderr
    assert "sekrit-db-password" not in res.stderr + res.stdout
