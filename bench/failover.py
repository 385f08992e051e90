"""Failover time on PostgreSQL (design.md §9): the leader is killed with ``kill -9``; how long until the
standby starts the next step?

Two `runbookd serve` replicas share one PostgreSQL database (Debian's server, started here with fsync on
and synchronous_commit on, as in production). Each repetition: a webhook posted to the standby starts a
run (the leader routes it); the run waits for approval of its first step. The leader is killed with
SIGKILL, and at once the step is approved on the standby (which, not leading yet, only records it). The
figure is the time from the kill to the standby's ``step.executing`` log line for that step (both clocks
are this machine's wall clock; the log stamps microseconds). The killed replica is started again as the
new standby, so the next repetition kills the other one.

Expected: the kill falls at a random point of the leader's renewal period, so the lease runs out
``lease - renew`` to ``lease`` seconds after it; the standby sees that at its next try (every ``renew``
seconds) and recovers on its next tick (1 s). Target: within the lease plus one tick.

    .venv/bin/python bench/failover.py [--runs 10] [--lease 15s] [--renew 5s] [--strict]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import common
import yaml
from support.payloads import webhook_payload
from support.polling import wait_until
from support.postgres import PostgresServer, pg_bindir
from support.runbookd import RunbookdProcess

RUNBOOK = {
    "name": "failover-bench",
    "triggers": [{"alert": "FailoverBench"}],
    "target": "{{ params.name }}",
    "params": {"name": "{{ alert.labels.instance }}"},
    "policy": {"cooldown": "0s", "max_runs_per_day": 1000, "on_resolved": "ignore"},
    "approval": {"approvers": ["sre"], "timeout": "30m"},
    "steps": [
        {"id": "next", "action": "notify.log", "with": {"message": "next step of {{ params.name }}"}},
        {"id": "after", "action": "notify.log", "with": {"message": "after {{ params.name }}"}},
    ],
}


def _config(url: str, rb_dir: Path, lease: str, renew: str) -> dict[str, Any]:
    return {
        "state": {"url": url},
        "ha": {"lease": lease, "renew": renew},
        "runbooks": {"paths": [str(rb_dir)]},
        "dry_run": True,
        "auth": {
            "webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"},
            "tokens": [{"name": "admin", "role": "admin", "secret": {"env": "RUNBOOKD_ADMIN_TOKEN"}}],
        },
        "approvers": {"sre": ["admin"]},
        "log": {"format": "json", "level": "info"},
    }


def _leader(rb: RunbookdProcess) -> bool:
    return rb.metric("runbookd_leader") == 1.0


def _executing_at(rb: RunbookdProcess, run_id: str) -> float | None:
    for line in rb.log_text().splitlines():
        if '"step.executing"' in line and run_id in line:
            stamp = json.loads(line)["timestamp"]
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return None


def one_failover(leader: RunbookdProcess, standby: RunbookdProcess, n: int, renew: float) -> float:
    payload = webhook_payload(
        {"alertname": "FailoverBench", "instance": f"i{n}"}, fingerprint=uuid.uuid4().hex[:16]
    )
    r = standby.post_webhook(payload, wait_routed=False)
    assert r.status == 200, r
    run_id = standby.wait_routed(r.json()["receipt"], timeout=60)["result"]["started"][0]
    plan_hash = wait_until(
        "approval requested",
        lambda: next(
            (
                s["plan_hash"]
                for s in standby.get(f"/api/v1/runs/{run_id}").json()["steps"]
                if s["id"] == "next" and s["state"] == "awaiting_approval"
            ),
            None,
        ),
        60,
    )
    time.sleep(random.uniform(0, renew))  # a random point of the leader's renewal period
    killed_at = time.time()
    leader.kill9()
    a = standby.post(f"/api/v1/runs/{run_id}/steps/next/approve", json={"plan_hash": plan_hash})
    assert a.status == 200, a
    started = wait_until("the standby starts the step", lambda: _executing_at(standby, run_id), 120, 0.02)
    return float(started) - killed_at


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="failovers to measure (default 10)")
    p.add_argument("--lease", default="15s", help="ha.lease (default 15s, the default config)")
    p.add_argument("--renew", default="5s", help="ha.renew (default 5s)")
    p.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = p.parse_args()
    from daemon.kits.durations import parse_duration

    lease, renew = parse_duration(args.lease), parse_duration(args.renew)
    bindir = pg_bindir()
    if bindir is None:
        print("PostgreSQL is not installed (apt-get install postgresql)", file=sys.stderr)
        return 2
    pg = PostgresServer(bindir, durable=True).start()
    work = Path(tempfile.mkdtemp(prefix="runbookd-failover-"))
    replicas: list[RunbookdProcess] = []
    try:
        rb_dir = work / "runbooks"
        rb_dir.mkdir()
        (rb_dir / "failover-bench.yaml").write_text(yaml.safe_dump(RUNBOOK, sort_keys=False))
        config = _config(pg.fresh_database("failover"), rb_dir, args.lease, args.renew)
        replicas = [common.runbookd_process(work / f"r{i}", config) for i in range(2)]
        for rb in replicas:
            rb.start()
        times: list[float] = []
        for n in range(args.runs):
            leader = next(rb for rb in replicas if rb.running and _leader(rb))
            standby = next(rb for rb in replicas if rb is not leader)
            took = one_failover(leader, standby, n, renew)
            times.append(took)
            print(f"  failover {n + 1}/{args.runs}: standby started the next step {took:.2f} s after kill -9")
            leader.start()  # back as the standby
        target = lease + 1.0
        q = statistics.quantiles(times, n=10) if len(times) >= 2 else times
        print()
        print(
            f"lease {lease:g} s, renew {renew:g} s, {len(times)} failovers (leader kill -9 -> next step started):"
        )
        print(
            f"  min {min(times):.2f} s, median {statistics.median(times):.2f} s, p90 {q[-1]:.2f} s, "
            f"max {max(times):.2f} s; target <= lease + 1 tick = {target:g} s: "
            + ("PASS" if max(times) <= target else "FAIL")
        )
        ok = max(times) <= target
    finally:
        for rb in replicas:
            rb.stop()
        pg.stop()
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
