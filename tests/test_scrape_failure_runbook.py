"""The shipped prometheus-scrape-failure runbook against a real Prometheus and a real Alertmanager (issue 8,
point 2): one run per failing target, a silence of that target only (job AND instance), expired by its
undo whatever the end, the real time since the last successful scrape, and the target's last error.

The daemon runs in-process (real HTTP API, frozen clock started at the real time so that silences are
active now); the subprocess kill -9 case is in test_undo_restart.py."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from support.am import AlertmanagerServer
from support.gates import wait_until
from support.inproc import Daemon, alert_payload, base_config, serve
from support.ports import closed_port
from support.prom import MetricsExporter, PrometheusServer
from support.runs import steps_of

from daemon.actions.registry import default_registry
from daemon.kits.clock import FrozenClock

RUNBOOK = Path(__file__).resolve().parents[1] / "runbooks" / "prometheus-scrape-failure.yaml"
JOB = "scrape-test"
BEFORE_SILENCE = ["target-down", "scrape-error", "down-since", "others-down", "report"]


@pytest.fixture
def stack(
    prometheus_factory: Callable[..., PrometheusServer],
    alertmanager_factory: Callable[..., AlertmanagerServer],
    test_exporter: MetricsExporter,
) -> tuple[PrometheusServer, AlertmanagerServer, MetricsExporter, str]:
    """A job with one live target (the exporter) and one that never answers (a closed port)."""
    test_exporter.set("scrape_test_alive", 1)
    down = f"127.0.0.1:{closed_port()}"
    prom = prometheus_factory(
        scrape_configs=[{"job_name": JOB, "static_configs": [{"targets": [test_exporter.target, down]}]}]
    )
    prom.wait_for(f'up{{job="{JOB}"}}', lambda r: len(r) == 2, timeout=60)
    return prom, alertmanager_factory(), test_exporter, down


def _serve(tmp_path: Path, prom: PrometheusServer, am: AlertmanagerServer, *, dry_run: bool = False) -> Any:
    (tmp_path / "runbooks").mkdir(exist_ok=True)
    shutil.copy(RUNBOOK, tmp_path / "runbooks" / RUNBOOK.name)
    cfg = base_config(
        tmp_path,
        dry_run=dry_run,
        prometheus={"url": prom.url, "timeout": "5s"},
        alertmanager={"url": am.url, "timeout": "5s"},
    )
    return serve(tmp_path, {}, config=cfg, clock=FrozenClock(time.time()))


async def _fire(d: Daemon, instance: str, fingerprint: str = "fp-down", **labels: str) -> str:
    status, body = await d.webhook(
        alert_payload(job=JOB, instance=instance, fingerprint=fingerprint, **labels)
    )
    assert status == 200 and len(body["started"]) == 1, body
    return str(body["started"][0])


async def _approve(d: Daemon, run_id: str, *step_ids: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for sid in step_ids:

        async def asks(sid: str = sid) -> bool:
            found["run"] = run = await d.run(run_id)
            return bool(run["current_step"] == sid and steps_of(run)[sid]["state"] == "awaiting_approval")

        await wait_until(asks, timeout=30)
        status, body = await d.approve(run_id, sid, plan_hash=steps_of(found["run"])[sid]["plan_hash"])
        assert status == 200, body
    await d.engine.wait_idle(timeout=60)
    return await d.run(run_id)


def _silence_of(am: AlertmanagerServer, run: dict[str, Any]) -> dict[str, Any]:
    silence_id = steps_of(run)["silence-target"]["output"]["silence_id"]
    (silence,) = [s for s in am.silences() if s["id"] == silence_id]
    return silence


def _assert_target_only(silence: dict[str, Any], down: str, cluster: str = "") -> None:
    """The one target's other alerts, of this cluster only (an alert without a cluster label matches "")."""
    assert sorted((m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]) == [
        ("alertname", "PrometheusScrapeFailure", False, False),
        ("cluster", f"{re.escape(cluster)}|", True, True),
        ("instance", down, True, False),
        ("job", JOB, True, False),
    ]


async def _silenced_run(
    d: Daemon, am: AlertmanagerServer, down: str, cluster: str = ""
) -> tuple[str, dict[str, Any]]:
    """A run walked up to its silence, which is active and of the one target."""
    run_id = await (_fire(d, down, cluster=cluster) if cluster else _fire(d, down))
    run = await _approve(d, run_id, *BEFORE_SILENCE, "silence-target")
    silence = _silence_of(am, run)
    assert silence["status"]["state"] == "active"
    _assert_target_only(silence, down, cluster)
    return run_id, run


# ------------------------------------------------------------------------------------------ every end


async def test_the_silence_and_the_target_are_of_the_alerts_cluster(tmp_path: Path, stack: Any) -> None:
    """An adversarial review: without a cluster matcher, an Alertmanager shared by several clusters had
    the same job/instance silenced in all of them, and their runs merged into one target."""
    prom, am, _, down = stack
    async with _serve(tmp_path, prom, am) as d:
        run_id, run = await _silenced_run(d, am, down, cluster="eu.1")  # '.': escaped in the regex
        assert run["target"] == f"eu.1/{JOB}/{down}"
        silence = _silence_of(am, run)
        assert ("cluster", "eu\\.1|") in [(m["name"], m["value"]) for m in silence["matchers"]]
        await d.call("POST", f"/api/v1/runs/{run_id}/reject", json={"reason": "test"})


async def test_rejected_after_the_silence_expires_it(tmp_path: Path, stack: Any) -> None:
    prom, am, _, down = stack
    async with _serve(tmp_path, prom, am) as d:
        run_id, run = await _silenced_run(d, am, down)
        assert run["target"] == f"{JOB}/{down}"
        status, body = await d.call(
            "POST", f"/api/v1/runs/{run_id}/reject", json={"reason": "handled elsewhere"}
        )
        assert status == 200, body
        await d.engine.wait_idle()
        run = await d.run(run_id)
        assert run["state"] == "rejected"
        assert _silence_of(am, run)["status"]["state"] == "expired"
        assert steps_of(run)["silence-target"]["undo"]["state"] == "succeeded"


async def test_expired_after_the_silence_expires_it(tmp_path: Path, stack: Any) -> None:
    prom, am, _, down = stack
    async with _serve(tmp_path, prom, am) as d:
        run_id, _ = await _silenced_run(d, am, down)
        d.clock.advance(31 * 60)  # nobody approves wait-for-recovery
        await d.engine.tick()
        await d.engine.wait_idle()
        run = await d.run(run_id)
        assert run["state"] == "expired"
        assert _silence_of(am, run)["status"]["state"] == "expired"


async def test_a_failing_step_after_the_silence_still_expires_it(tmp_path: Path, stack: Any) -> None:
    """The target stays down past recovery_wait: wait-for-recovery fails, the run fails, the silence goes."""
    prom, am, _, down = stack
    async with _serve(tmp_path, prom, am) as d:
        params = {"job": JOB, "instance": down, "recovery_wait": "1s"}
        status, body = await d.call(
            "POST",
            "/api/v1/runs",
            token="alice",
            json={"runbook": "prometheus-scrape-failure", "params": params},
        )
        assert status in (200, 201), body
        run = await _approve(d, body["id"], *BEFORE_SILENCE, "silence-target", "wait-for-recovery")
        assert run["state"] == "failed" and "wait-for-recovery failed" in run["outcome"], run
        silence = _silence_of(am, run)
        _assert_target_only(silence, down)
        assert silence["status"]["state"] == "expired"


async def test_an_alert_resolved_before_the_silence_cancels_and_silences_nothing(
    tmp_path: Path, stack: Any
) -> None:
    prom, am, _, down = stack
    async with _serve(tmp_path, prom, am) as d:
        run_id = await _fire(d, down)
        await _approve(d, run_id, "target-down")
        await d.webhook(alert_payload(status="resolved", job=JOB, instance=down, fingerprint="fp-down"))
        run = await d.run(run_id)
        assert run["state"] == "cancelled"
        assert steps_of(run)["silence-target"]["undo"]["state"] == "pending"  # never planned
        assert am.silences() == []


async def test_dry_run_records_the_silence_and_its_expiry_and_changes_nothing(
    tmp_path: Path, stack: Any
) -> None:
    prom, am, _, down = stack
    async with _serve(tmp_path, prom, am, dry_run=True) as d:
        run_id = await _fire(d, down)
        await _approve(d, run_id, *BEFORE_SILENCE, "silence-target")
        status, _ = await d.call("POST", f"/api/v1/runs/{run_id}/reject", json={"reason": "dry run"})
        assert status == 200
        await d.engine.wait_idle()
        run = await d.run(run_id)
        silence = steps_of(run)["silence-target"]
        (created,) = silence["output"]["requests"]
        assert created["method"] == "POST" and created["body"]["matchers"][1]["value"] == down
        (expired,) = silence["undo"]["output"]["requests"]
        assert expired["method"] == "DELETE" and silence["output"]["silence_id"] in expired["url"]
        assert am.silences() == []


# ------------------------------------------------------------------------------------------ what it reports


async def test_down_since_is_the_time_since_the_last_successful_scrape(tmp_path: Path, stack: Any) -> None:
    prom, am, exporter, down = stack
    async with _serve(tmp_path, prom, am) as d:
        # the live target goes down: its last up == 1 sample is a few seconds old
        prom.wait_for(f'up{{job="{JOB}", instance="{exporter.target}"}} == 1', bool, timeout=60)
        stopped = time.time()
        exporter.stop()
        prom.wait_for(f'up{{job="{JOB}", instance="{exporter.target}"}} == 0', bool, timeout=60)
        run_id = await _fire(d, exporter.target, fingerprint="fp-live")
        run = await _approve(d, run_id, *BEFORE_SILENCE)
        (sample,) = steps_of(run)["down-since"]["output"]["result"]
        assert 0 < sample["value"] <= time.time() - stopped + 60
        report = steps_of(run)["report"]["output"]["message"]
        assert "last successful scrape" in report and "whole 6h window" not in report
        (target,) = steps_of(run)["scrape-error"]["output"]["targets"]
        assert target["labels"] == {"job": JOB, "instance": exporter.target}
        assert target["health"] == "down" and target["last_error"]
        assert target["last_scrape_age_seconds"] is not None and target["last_scrape_age_seconds"] < 120

        # the never-scraped target: down for the whole window, with Prometheus' own error
        other = await _fire(d, down, fingerprint="fp-never")
        run = await _approve(d, other, *BEFORE_SILENCE)
        assert steps_of(run)["down-since"]["output"]["count"] == 0
        report = steps_of(run)["report"]["output"]["message"]
        assert "down for the whole 6h window" in report and "connection refused" in report


async def test_one_run_per_target(tmp_path: Path, stack: Any) -> None:
    prom, am, exporter, down = stack
    async with _serve(tmp_path, prom, am) as d:
        first = await _fire(d, down, fingerprint="fp-a")
        _, body = await d.webhook(alert_payload(job=JOB, instance=exporter.target, fingerprint="fp-b"))
        assert len(body["started"]) == 1 and body["started"][0] != first
        _, body = await d.webhook(alert_payload(job=JOB, instance=down, fingerprint="fp-a"))
        assert body["attached"] == [first] and body["started"] == []


# ------------------------------------------------------------------------------------------ the silence guard


async def test_an_instance_that_renders_empty_is_refused_before_anything_is_silenced(
    tmp_path: Path, stack: Any
) -> None:
    prom, am, _, _ = stack
    async with _serve(tmp_path, prom, am) as d:
        params = {"job": JOB, "instance": "", "recovery_wait": "1s"}
        status, body = await d.call(
            "POST",
            "/api/v1/runs",
            token="alice",
            json={"runbook": "prometheus-scrape-failure", "params": params},
        )
        assert status in (200, 201), body
        run = await _approve(d, body["id"], "target-down")  # up{job=..., instance=""}: no such target
        assert run["state"] == "failed", run
        assert steps_of(run)["silence-target"]["state"] == "pending"
        assert am.silences() == []


SILENCE = default_registry().get("alertmanager.silence")


@pytest.mark.parametrize(
    "matchers",
    [
        [{"name": "job", "value": JOB}],  # no instance: the whole job
        [{"name": "job", "value": JOB}, {"name": "instance", "value": ""}],  # empty: every alert without it
        [{"name": "job", "value": JOB}, {"name": "instance", "value": ".+", "is_regex": True}],
        [{"name": "job", "value": JOB}, {"name": "instance", "value": "a", "is_equal": False}],
        [
            {"name": "job", "value": JOB},
            {"name": "instance", "value": "a"},
            {"name": "instance", "value": "b.*", "is_regex": True},
        ],
    ],
)
def test_a_silence_wider_than_its_runbook_requires_is_refused(matchers: list[dict[str, Any]]) -> None:
    assert SILENCE is not None
    with pytest.raises(ValidationError):
        SILENCE.params.model_validate(
            {"matchers": matchers, "require": ["job", "instance"], "duration": "30m"}
        )
    exact = [{"name": "job", "value": JOB}, {"name": "instance", "value": "10.0.0.1:9100"}]
    SILENCE.params.model_validate({"matchers": exact, "require": ["job", "instance"], "duration": "30m"})


@pytest.mark.parametrize(
    "matchers",
    [
        [{"name": "instance", "value": ""}],
        [{"name": "alertname", "value": "X", "is_equal": False}],  # only negative: almost everything
        [{"name": "job", "value": "x"}, {"name": "pod", "value": ""}],
    ],
)
def test_any_silence_selecting_nothing_definite_is_refused(matchers: list[dict[str, Any]]) -> None:
    assert SILENCE is not None
    with pytest.raises(ValidationError):
        SILENCE.params.model_validate({"matchers": matchers})
