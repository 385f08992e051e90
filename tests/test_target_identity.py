"""A run's identity is (runbook, target), and the target is rendered from alert labels: one active run,
one cooldown and one daily count per identity. Alerts with chosen labels must not render another
target's identity: not by splitting values across a ``/`` the target template joins them with (each
part goes through ``| target_part``), not by a ``cluster`` part present in one and absent in the other,
and not by differing only after the 512th character (``planner.bounded_target``). Found by an
adversarial review; each of these tests failed on the code before.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from support.inproc import Daemon, alert_payload, base_config, serve

RUNBOOKS = Path(__file__).resolve().parents[1] / "runbooks"
SCRAPE = RUNBOOKS / "prometheus-scrape-failure.yaml"


def _serve(tmp_path: Path) -> Any:
    (tmp_path / "runbooks").mkdir(exist_ok=True)
    shutil.copy(SCRAPE, tmp_path / "runbooks" / SCRAPE.name)
    return serve(tmp_path, {}, config=base_config(tmp_path))


async def _fire(d: Daemon, fingerprint: str, **labels: str) -> dict[str, Any]:
    status, body = await d.webhook(alert_payload(fingerprint=fingerprint, **labels))
    assert status == 200, body
    return dict(body)


async def test_scrape_failure_hostile_job_instance_split_does_not_take_a_real_targets_run(
    tmp_path: Path,
) -> None:
    """job="blackbox", instance="https://api.example.com/health" (a blackbox target) and the hostile
    job="blackbox/https:", instance="/api.example.com/health" are different targets, but both render
    the target "blackbox/https://api.example.com/health". Sent first, the hostile alert's run owns that
    identity and the real target's alert is only attached to it."""
    async with _serve(tmp_path) as d:
        hostile = await _fire(d, "fp-hostile", job="blackbox/https:", instance="/api.example.com/health")
        assert len(hostile["started"]) == 1, hostile
        hostile_run = await d.run(hostile["started"][0])
        assert hostile_run["params"]["job"] == "blackbox/https:"

        real = await _fire(d, "fp-real", job="blackbox", instance="https://api.example.com/health")
        # The real target must get its own run (its own query, its own silence), not ride on the
        # hostile one whose steps look at job="blackbox/https:".
        assert real["attached"] == [], f"real alert attached to the hostile run: {real}"
        assert len(real["started"]) == 1, real
        targets = [(await d.run(r))["target"] for r in (hostile["started"][0], real["started"][0])]
        assert targets == [
            "blackbox%2Fhttps:/%2Fapi.example.com%2Fhealth",
            "blackbox/https:%2F%2Fapi.example.com%2Fhealth",
        ]


async def test_scrape_failure_cluster_prefix_cannot_be_forged_by_job_and_instance(tmp_path: Path) -> None:
    """{cluster="prod", job="node", instance="n1:9100"} renders the target "prod/node/n1:9100"; so does
    an alert without a cluster label with job="prod", instance="node/n1:9100"."""
    async with _serve(tmp_path) as d:
        hostile = await _fire(d, "fp-hostile", job="prod", instance="node/n1:9100")
        assert len(hostile["started"]) == 1, hostile

        real = await _fire(d, "fp-real", cluster="prod", job="node", instance="n1:9100")
        assert real["attached"] == [], f"real alert attached to the hostile run: {real}"
        assert len(real["started"]) == 1, real


async def test_scrape_failure_hostile_run_does_not_put_a_real_target_in_cooldown(tmp_path: Path) -> None:
    """Once the hostile alert's run ended (rejected here; in practice its first query finds no series
    and it fails), the real target is held back by the cooldown the hostile run started: the attacker
    can keep a real target from ever getting a run (6 hostile runs a day also spend its daily limit)."""
    async with _serve(tmp_path) as d:
        hostile = await _fire(d, "fp-hostile", job="blackbox/https:", instance="/api.example.com/health")
        run_id = hostile["started"][0]
        status, body = await d.call(
            "POST", f"/api/v1/runs/{run_id}/reject", token="bob", json={"reason": "bogus"}
        )
        assert status == 200, body
        await d.engine.wait_idle()
        assert (await d.run(run_id))["state"] == "rejected"

        real = await _fire(d, "fp-real", job="blackbox", instance="https://api.example.com/health")
        assert real["suppressed"] == [], f"real target held back by the hostile run's cooldown: {real}"
        assert len(real["started"]) == 1, real


async def test_scrape_failure_long_labels_do_not_merge_two_targets(tmp_path: Path) -> None:
    """The target is cut at 512 characters (planner.render_target): two targets that differ only after
    that (the same long job, different instances) share one run."""
    job = "j" * 600
    async with _serve(tmp_path) as d:
        first = await _fire(d, "fp-a", job=job, instance="10.0.0.1:9100")
        assert len(first["started"]) == 1, first
        second = await _fire(d, "fp-b", job=job, instance="10.0.0.2:9100")
        assert second["attached"] == [], f"a different target attached to the first run: {second}"
        assert len(second["started"]) == 1, second
        a, b = [(await d.run(r["started"][0]))["target"] for r in (first, second)]
        assert len(a) == len(b) == 512 and a[:495] == b[:495] == job[:495] and a != b, (a, b)
        assert re.fullmatch(r"j{495}~[0-9a-f]{16}", a), a
