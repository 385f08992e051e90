"""An alert storm against `runbookd serve` (design.md §9): 10,000 distinct alerts, none lost, runs
deduplicated per target, peak RSS under 200 MB.

The alerts arrive as Alertmanager would deliver them: webhook notifications of one alertname each
(group_by: [alertname]), 10-50 alerts per notification, CONCURRENCY notifications in flight, a 5xx retried
after a pause as Alertmanager retries. 80% are PrometheusScrapeFailure alerts over TARGETS jobs (the
benchmark runbook's target is the job, so many alerts share a target and concurrent notifications race for
the same targets); 20% are alertnames no runbook answers (stored, never run). The webhook answers once a
notification is committed; routing follows, so the script then waits until every stored notification is
routed and reports how long that took. Afterwards, with the daemon stopped, the SQLite state file is opened
read-only and checked: every fingerprint linked to a run or listed unmatched in a receipt, one run per target, every matched alert linked
to its target's run. Peak RSS is the daemon's VmHWM, sampled until routing and two engine ticks are done.

    .venv/bin/python bench/storm.py [--alerts 10000] [--targets 500] [--concurrency 16] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import common
from common import Check

OTHER_ALERTS = ("KubePodCrashLooping", "NodeFilesystemSpaceFillingUp", "TargetDown", "KubeJobFailed")


def storm(
    n: int, targets: int, seed: int = 5, tail: int = 0, sizes: tuple[int, int] = (10, 50)
) -> tuple[list[bytes], set[str], dict[str, str]]:
    """Bodies, all fingerprints, and fingerprint -> job of the alerts a runbook answers. The last ``tail``
    bodies each introduce a new target (``tail-NNN``), one alert each: sent after the storm."""

    rnd = random.Random(seed)
    alerts: dict[str, list[dict[str, Any]]] = {}
    matched: dict[str, str] = {}
    fps: set[str] = set()
    for i in range(n):
        if rnd.random() < 0.8:
            name, job = common.ALERTNAME, f"job-{rnd.randrange(targets):04d}"
        else:
            name, job = rnd.choice(OTHER_ALERTS), f"other-{rnd.randrange(50):02d}"
        a = common.make_alert(job, f"10.{i // 62500}.{i // 250 % 250}.{i % 250}:9100", alertname=name)
        assert a["fingerprint"] not in fps
        fps.add(a["fingerprint"])
        if name == common.ALERTNAME:
            matched[a["fingerprint"]] = job
        alerts.setdefault(name, []).append(a)
    bodies: list[bytes] = []
    for name, group in alerts.items():
        rnd.shuffle(group)
        i = 0
        while i < len(group):
            k = rnd.randint(*sizes)
            bodies.append(json.dumps(common.webhook_payload(group[i : i + k], {"alertname": name})).encode())
            i += k
    rnd.shuffle(bodies)
    for k in range(tail):
        a = common.make_alert(f"tail-{k:03d}", "10.250.0.1:9100")
        fps.add(a["fingerprint"])
        matched[a["fingerprint"]] = f"tail-{k:03d}"
        bodies.append(json.dumps(common.webhook_payload([a], {"alertname": common.ALERTNAME})).encode())
    return bodies, fps, matched


async def deliver(url: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    hdrs = {"Authorization": f"Bearer {common.WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    stats: dict[str, Any] = {"statuses": {}, "retries": 0, "failed": 0, "latencies": []}
    it = iter(bodies)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), trust_env=False, timeout=timeout
    ) as session:

        async def worker() -> None:
            for body in it:
                for attempt in range(6):
                    t = time.perf_counter()
                    try:
                        async with session.post(url, data=body, headers=hdrs) as resp:
                            await resp.read()
                            status = resp.status
                    except (TimeoutError, aiohttp.ClientError, OSError):
                        status = 0
                    stats["latencies"].append(time.perf_counter() - t)
                    stats["statuses"][status] = stats["statuses"].get(status, 0) + 1
                    if 200 <= status < 300 or 400 <= status < 500:
                        break
                    stats["retries"] += 1
                    await asyncio.sleep(0.2 * (attempt + 1))
                else:
                    stats["failed"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, common.proc_status(self.pid)["VmRSS"])
            except OSError:
                return
            self.stop.wait(0.05)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alerts", type=int, default=10_000, help="distinct alerts (default 10000)")
    p.add_argument(
        "--targets", type=int, default=500, help="jobs (run targets) they spread over (default 500)"
    )
    p.add_argument("--concurrency", type=int, default=16, help="notifications in flight (default 16)")
    p.add_argument("--group", default="10-50", help="alerts per notification, N or MIN-MAX (default 10-50)")
    p.add_argument(
        "--tail", type=int, default=20, help="notifications for new targets sent after the storm (default 20)"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args()

    low, _, high = args.group.partition("-")
    bodies, fps, matched = storm(
        args.alerts, args.targets, tail=args.tail, sizes=(int(low), int(high or low))
    )
    targets = set(matched.values())
    print(
        f"storm: {len(fps)} distinct alerts in {len(bodies)} notifications, {len(matched)} answered by the "
        f"runbook over {len(targets)} targets, concurrency {args.concurrency}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp:
        rb = common.runbookd_process(Path(tmp)).start()
        try:
            assert rb.pid is not None
            idle = common.proc_status(rb.pid)
            sampler = RssSampler(rb.pid)
            sampler.start()
            t0 = time.perf_counter()
            stats = asyncio.run(deliver(rb.url + "/api/v1/alertmanager", bodies, args.concurrency))
            elapsed = time.perf_counter() - t0
            _, backlog = common.inbox_counts(rb.state_path)
            cpu0 = common.proc_cpu_seconds(rb.pid)
            routing, unrouted = common.wait_routed(rb.state_path)
            routing_cpu = common.proc_cpu_seconds(rb.pid) - cpu0
            print(f"routed a backlog of {backlog} notifications {routing:.1f}s after the last answer")
            time.sleep(2.5)  # two engine ticks over the new runs
            sampler.stop.set()
            sampler.join()
            status = common.proc_status(rb.pid)
        finally:
            code = rb.stop()
        db = sqlite3.connect(f"file:{rb.state_path}?mode=ro", uri=True)
        try:
            stored = {r[0] for r in db.execute("SELECT DISTINCT fingerprint FROM alert_links")}
            stored |= {r[0] for r in db.execute(common.UNMATCHED_FINGERPRINTS["sqlite"])}
            runs = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT runbook || '/' || target) FROM runs"
            ).fetchone()
            dupes = db.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM runs GROUP BY runbook, target HAVING COUNT(*) > 1)"
            ).fetchone()[0]
            run_targets = {r[0] for r in db.execute("SELECT target FROM runs")}
            links = dict(
                db.execute(
                    "SELECT alert_links.fingerprint, runs.target FROM alert_links JOIN runs ON runs.id = alert_links.run_id"
                ).fetchall()
            )
            awaiting = db.execute("SELECT COUNT(*) FROM runs WHERE state = 'awaiting_approval'").fetchone()[0]
            tail_waits = []
            for k in range(args.tail):
                # The receipt that started the tail target's run (a routed payload is not kept).
                received = db.execute(
                    "SELECT MIN(i.received_at) FROM inbox i JOIN runs r ON instr(i.result, '\"' || r.id || '\"') > 0"
                    " WHERE r.target = ?",
                    (f"tail-{k:03d}",),
                ).fetchone()
                requested = db.execute(
                    "SELECT MIN(t.at) FROM timeline t JOIN runs r ON r.id = t.run_id"
                    " WHERE r.target = ? AND t.event = 'approval_requested'",
                    (f"tail-{k:03d}",),
                ).fetchone()
                if received and received[0] is not None and requested and requested[0] is not None:
                    tail_waits.append(requested[0] - received[0])
        finally:
            db.close()

    lost = fps - stored
    mislinked = sum(1 for fp, job in matched.items() if links.get(fp) != job)
    lat = stats["latencies"]
    peak = max(status["VmHWM"], sampler.peak)
    checks = [
        Check("storm delivered in", f"{elapsed:.1f} s", "", None),
        Check("alerts/s accepted (committed)", f"{len(fps) / elapsed:.0f}", "", None),
        Check(
            "then routed: backlog after the last answer",
            f"{backlog} notifications in {routing:.1f} s ({routing_cpu:.1f} s CPU)",
            "",
            None,
        ),
        Check("notifications never routed", str(unrouted), "0", unrouted == 0),
        Check(
            f"new target after the storm: receipt -> approval request, p50 / p99 / max of {args.tail}",
            (
                f"{common.percentile(tail_waits, 50):.2f} / {common.percentile(tail_waits, 99):.2f} / "
                f"{max(tail_waits):.2f} s"
            )
            if tail_waits
            else "none",
            "p99 < 2 s",
            bool(tail_waits) and len(tail_waits) == args.tail and common.percentile(tail_waits, 99) < 2.0,
        ),
        Check(
            "notification latency p50 / p99",
            f"{common.percentile(lat, 50) * 1e3:.0f} / {common.percentile(lat, 99) * 1e3:.0f} ms",
            "",
            None,
        ),
        Check("answers by status", str(dict(sorted(stats["statuses"].items()))), "all 200", None),
        Check(
            "retried after 5xx / given up",
            f"{stats['retries']} / {stats['failed']}",
            "- / 0",
            stats["failed"] == 0,
        ),
        Check("alerts lost (fingerprint not stored)", str(len(lost)), "0", not lost),
        Check(
            "runs (one per target)",
            f"{runs[0]}",
            f"== {len(targets)}",
            runs[0] == len(targets) and run_targets == targets,
        ),
        Check("targets with more than one run", str(dupes), "0", dupes == 0),
        Check("runs awaiting approval", str(awaiting), f"== {len(targets)}", awaiting == len(targets)),
        Check("matched alerts not linked to their target's run", str(mislinked), "0", mislinked == 0),
        Check("daemon RSS idle before the storm", common.mb(idle["VmRSS"]), "", None),
        Check("daemon peak RSS (VmHWM)", common.mb(peak), "< 200 MB", peak < 200 * 1024),
        Check("daemon exit code after SIGTERM", str(code), "0", code == 0),
    ]
    passed = common.print_table(f"bench/storm.py: {len(fps)} distinct alerts", checks)
    return common.finish(passed, args.strict)


if __name__ == "__main__":
    sys.exit(main())
