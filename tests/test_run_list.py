"""GET /api/v1/runs lists summaries: what alerts carried stays in GET /api/v1/runs/{id}.

An adversarial pass: every run's view carried its alert's labels and annotations (up to 128 x 4 KiB each,
whatever a metric's exporter writes), so 80 such runs made the list 70 MB, ~1 s of event loop per GET,
and ``runbookd runs`` refused the answer (over its 64 MiB limit)."""

from __future__ import annotations

import json
from pathlib import Path

from support.engines import LOG_RUNBOOK
from support.inproc import alert_payload, serve


async def test_the_list_stays_small_whatever_the_alerts_carried(tmp_path: Path) -> None:
    big = {f"l{j:03d}": "v" * 4000 for j in range(60)}
    async with serve(tmp_path, {"log": LOG_RUNBOOK}) as d:
        for i in range(10):
            payload = alert_payload(job=f"job-{i}", fingerprint=f"fp-{i}", **big)
            payload["alerts"][0]["annotations"] = {f"a{j:03d}": "w" * 4000 for j in range(60)}
            status, body = await d.call("POST", "/api/v1/alertmanager", token="webhook", json=payload)
            assert status == 200, body
            assert (await d.engine.routed(body["receipt"]))["started"]
        status, listed = await d.call("GET", "/api/v1/runs")
        assert status == 200 and len(listed["runs"]) == 10
        assert len(json.dumps(listed)) < 10 * 1000  # ~5 MB as full views
        run = listed["runs"][0]
        assert set(run) >= {"id", "runbook", "target", "state", "current_step", "steps", "created_at"}
        assert run["steps"] == [
            {
                "id": "say",
                "index": 0,
                "action": "notify.log",
                "state": run["steps"][0]["state"],
                "mutating": False,
            }
        ]
        status, full = await d.call("GET", f"/api/v1/runs/{run['id']}")
        assert status == 200 and full["alert"]["labels"]["l000"] == "v" * 4000
        assert full["steps"][0]["plan"]["message"] == run["target"]
        # the same summary as the full view, for what both show
        for key in (
            "runbook",
            "target",
            "state",
            "trigger",
            "dry_run",
            "created_at",
            "current_step",
            "outcome",
        ):
            assert run[key] == full[key], key
