"""Routing CPU per notification, and how long a new target at the tail of a storm waits (issue 11 §7).

In one process (no HTTP, so only routing is measured): a fresh SQLite state file (or ``--pg URL``) is
filled with a storm of ``--notifications`` stored notifications, ``--alerts`` alerts each: ``--matched``
of the alerts match the benchmark runbook over ``--targets`` jobs (the first notification of each job
starts its run; the rest re-deliver or add instances: attachments), the rest match no runbook. Half of the
notifications re-deliver an earlier group (same fingerprints), half carry new fingerprints. Behind the
storm, one notification for a job never seen before is stored last. Then the engine's router routes the
backlog (as ``runbookd serve``'s background router does) and the script reports:

- CPU seconds (``time.process_time``: this process only, so other work on the machine does not count)
  per routed notification, and wall time;
- the time from the tail notification's receipt (its commit) to its run's ``approval_requested`` notice.

The notifications are stored through the engine's inbox as the webhook stores them (parsed once,
group-committed), all before routing starts; that part is not measured.

    .venv/bin/python bench/routing.py [--notifications 1000] [--alerts 10] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
from common import Check

from daemon import logs
from daemon.actions.registry import default_registry
from daemon.clients.bundle import Clients
from daemon.config import parse_config
from daemon.engine.engine import Engine
from daemon.engine.events import WebhookPayload
from daemon.engine.notifier import RunNotice
from daemon.runbooks.loader import load_all

try:
    from daemon.cli.serve import GC_THRESHOLDS  # what runbookd serve sets after start-up
except ImportError:  # a version before it did (measuring the "before" side)
    GC_THRESHOLDS = gc.get_threshold()


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``serve``: the event loop ``runbookd serve`` routes on (uvloop where installed); ``asyncio``: the
    standard one (what this script used before 2026-12-02: its figures are ~20% higher, see README)."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class Stamps:
    """A notifier that stamps when each run's approval request is sent."""

    name = "stamps"

    def __init__(self) -> None:
        self.requested: dict[str, float] = {}

    async def notify(self, notice: RunNotice) -> None:
        if notice.kind == "approval_requested":
            self.requested.setdefault(notice.run["target"], time.perf_counter())


def storm(n: int, per: int, targets: int, matched: float, seed: int) -> list[str]:
    rnd = random.Random(seed)
    sent: list[list[dict[str, Any]]] = []
    instance = 0
    bodies: list[str] = []
    for _ in range(n):
        if sent and rnd.random() < 0.5:
            group = rnd.choice(sent)
        else:
            group = []
            alertname = common.ALERTNAME if rnd.random() < matched else "KubePodNotReady"
            for _k in range(per):
                instance += 1
                job = f"job-{rnd.randrange(targets):04d}"
                group.append(
                    common.make_alert(job, f"10.1.{instance // 250}.{instance % 250}:9100", alertname)
                )
            sent.append(group)
        bodies.append(
            json.dumps(common.webhook_payload(group, {"alertname": group[0]["labels"]["alertname"]}))
        )
    return bodies


async def one_pass(args: argparse.Namespace, workdir: Path, bodies: list[str]) -> dict[str, float]:
    runbooks_dir = workdir / "runbooks"
    runbooks_dir.mkdir(parents=True, exist_ok=True)
    (runbooks_dir / "bench-scrape-failure.yaml").write_text(common.BENCH_RUNBOOK)
    cfg_dict = common.daemon_config(workdir, runbooks=runbooks_dir)
    if args.pg:
        cfg_dict["state"] = {"url": args.pg}
    cfg = parse_config(cfg_dict)
    registry = default_registry()
    runbooks = load_all(cfg.runbooks.paths, registry, list(cfg.approvers))
    from daemon.store.factory import open_store

    store = await open_store(cfg.state, None)
    stamps = Stamps()
    engine = Engine(
        config=cfg, store=store, registry=registry, runbooks=runbooks, clients=Clients(), notifiers=[stamps]
    )
    try:
        await engine.start(background=False)
        gc.freeze()  # as runbookd serve does after start-up
        gc.set_threshold(*GC_THRESHOLDS)
        tail = json.dumps(
            common.webhook_payload(
                [common.make_alert("tail-job", "10.9.9.9:9100")], {"alertname": common.ALERTNAME}
            )
        )
        half = len(bodies) // 2
        # phase 1: the first half of the storm starts a run for each target it names
        cpu1, _, _ = await route(engine, store, bodies[:half], args.profile)
        runs1 = len(stamps.requested)
        # phase 2: the second half re-delivers and adds instances to targets that have a run; a new target last
        cpu, wall, routed = await route(engine, store, [*bodies[half:], tail], args.profile)
        stored_tail = wall[1]
        await engine.wait_idle(30)
        async with store.transaction() as tx:
            left = len(await tx.unrouted(10))
        tail_wait = stamps.requested.get("tail-job", float("nan")) - stored_tail
        return {
            "cpu1": cpu1,
            "n1": half,
            "cpu": cpu,
            "n": len(bodies) - half + 1,
            "routed": routed,
            "wall": wall[0],
            "tail": tail_wait,
            "left": left,
            "runs": len(stamps.requested),
            "runs2": len(stamps.requested) - runs1,
        }
    finally:
        await engine.stop()
        await store.close()


async def route(
    engine: Engine, store: Any, bodies: list[str], profile: bool
) -> tuple[float, tuple[float, float], int]:
    """Store the notifications, then route them; (CPU s, (wall s, stored at), how many the router
    routed: the rest were settled at intake)."""
    # stored through the inbox as the webhook stores them (parsed, group-committed); not measured
    await asyncio.gather(*(engine.submit(WebhookPayload.model_validate_json(b), b) for b in bodies))
    stored = time.perf_counter()
    async with store.transaction() as tx:  # the rest were settled at intake: no runbook acts on them
        to_route = len(await tx.unrouted_heads(len(bodies) + 1))  # (receipt, alerts): no payload read
    profiler: Any = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu0, main0 = time.process_time(), time.thread_time()
    await engine.route_pending()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - stored
    print(
        f"    routing: {cpu:.3f} s CPU, of which the event loop's thread {time.thread_time() - main0:.3f} s"
    )
    if profiler is not None:
        profiler.disable()
        import pstats

        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(45)
    return cpu, (wall, stored), to_route


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notifications", type=int, default=1000, help="stored before routing (default 1000)")
    p.add_argument("--alerts", type=int, default=10, help="alerts per notification (default 10)")
    p.add_argument("--targets", type=int, default=500, help="jobs the matched alerts spread over")
    p.add_argument("--matched", type=float, default=0.8, help="share of groups matching the runbook")
    p.add_argument("--repeat", type=int, default=3, help="passes, each on a fresh store (default 3)")
    p.add_argument(
        "--pg",
        default="",
        help="an empty PostgreSQL database (URL) instead of a SQLite file; with --repeat 1 (not emptied)",
    )
    p.add_argument(
        "--loop",
        choices=("serve", "asyncio"),
        default="serve",
        help="event loop: serve's (uvloop where installed, the default) or the standard one",
    )
    p.add_argument("--profile", action="store_true", help="print a cProfile of routing (one pass)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args()
    logs.configure("json", "info")  # as runbookd serve logs in production
    bodies = storm(args.notifications, args.alerts, args.targets, args.matched, seed=11)
    results = []
    probes: list[float] = []
    for i in range(args.repeat):
        probes.append(common.speed_probe())
        with (
            tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp,
            contextlib.redirect_stdout(sys.stderr),
            asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner,
        ):
            r = runner.run(one_pass(args, Path(tmp), bodies))
        results.append(r)
        print(
            f"  pass {i + 1}: storm's first half {int(r['n1'])} notifications (starting runs) "
            f"{r['cpu1'] / r['n1'] * 1e3:.3f} ms CPU each; second half {int(r['n'])} notifications (attaching, "
            f"no match) {r['cpu'] / r['n'] * 1e3:.3f} ms CPU each, {r['wall']:.2f} s; tail target's approval "
            f"request {r['tail']:.2f} s after its receipt; {int(r['runs'])} runs, {int(r['runs2'])} of them "
            f"started in the second half (its new targets, the tail's included); speed probe {probes[-1]:.0f} ms"
        )
    per = [r["cpu"] / r["n"] * 1e3 for r in results]
    per1 = [r["cpu1"] / r["n1"] * 1e3 for r in results]
    per_routed = [r["cpu"] / r["routed"] * 1e3 for r in results]
    tails = [r["tail"] for r in results]
    checks = [
        Check(
            f"routing CPU per notification ({args.alerts} alerts, targets have runs), median (min-max)",
            f"{statistics.median(per):.3f} ms ({min(per):.3f}-{max(per):.3f})",
            "<= 0.25 ms",
            statistics.median(per) <= 0.25,
        ),
        Check(
            f"  the same per notification the router routed ({min(int(r['routed']) for r in results)} of "
            f"{int(results[0]['n'])}; the others matched no runbook and were settled at intake)",
            f"{statistics.median(per_routed):.3f} ms ({min(per_routed):.3f}-{max(per_routed):.3f})",
            "",
            None,
        ),
        Check(
            "the same while starting a run for each new target, median (min-max)",
            f"{statistics.median(per1):.3f} ms ({min(per1):.3f}-{max(per1):.3f})",
            "",
            None,
        ),
        Check(
            "tail new target: receipt -> approval request, max of passes",
            f"{max(tails):.2f} s ({min(tails):.2f}-{max(tails):.2f})",
            "< 2 s",
            max(tails) < 2.0,
        ),
        Check(
            "machine speed probe before each pass (common.speed_probe: larger is slower)",
            f"{statistics.median(probes):.0f} ms ({min(probes):.0f}-{max(probes):.0f})",
            "",
            None,
        ),
        Check(
            "left unrouted",
            str(max(int(r["left"]) for r in results)),
            "0",
            all(r["left"] == 0 for r in results),
        ),
    ]
    passed = common.print_table(
        f"bench/routing.py: {len(bodies)} notifications x {args.alerts} alerts, {args.repeat} passes, "
        f"{'uvloop' if loop_factory(args.loop) else 'asyncio'} loop",
        checks,
    )
    return common.finish(passed, args.strict)


if __name__ == "__main__":
    sys.exit(main())
