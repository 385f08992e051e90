"""Webhook ingest rate, side by side in one run (design.md §9):

  (a) bare   a bare aiohttp handler that only parses the same JSON and answers 200 (bench/bare_server.py)
  (b) runbookd  `runbookd serve` (subprocess, SQLite WAL state, JSON logs at info) on POST /api/v1/alertmanager.
               The webhook answers 200 once the notification is committed to the inbox (concurrent requests
               share one commit); routing (record the alerts, start or attach to runs of a runbook that
               matches every alert) follows in the background and waits while notifications keep arriving
  (c) alertmanager  Debian's prometheus-alertmanager 0.25 accepting the same alerts on POST /api/v2/alerts

The rate is of accepted-and-committed notifications. After runbookd's burst the script waits until the
backlog is routed and prints how long that took, how many notifications per second it routed and the
server CPU per notification; then it checks the state file (one run per target, every fingerprint recorded or listed unmatched in a receipt).

Same client for all three (aiohttp, keep-alive, CONCURRENCY requests in flight, the same N pre-built
bodies), one server at a time, each after a warm-up on other targets. Each server runs in its own
process; the client is this process. Each server gets PASSES passes over the bodies and the median
counts: bare and Alertmanager in one process, runbookd on a fresh process and state file per pass (with
its warm-up routed before the pass). Server CPU (from /proc) is shown per server: when the bare server
stays well under 100%, the client is the ceiling and the bare rate is a lower bound (so runbookd/bare is,
if anything, flattering).
Targets: runbookd >= 0.5 x bare and runbookd >= Alertmanager.

    .venv/bin/python bench/ingest.py [--requests 8000] [--passes 3] [--concurrency 32] [--strict]
    .venv/bin/python bench/ingest.py --store postgresql   # (b) on a local PostgreSQL (fsync on), a fresh
                                                          # database per pass, instead of the SQLite file
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
from common import Check, LoadResult
from support.am import AlertmanagerServer
from support.ports import free_port
from support.postgres import PostgresServer, pg_bindir
from support.procs import ManagedProcess, base_env

NO_MATCH = "KubePodCrashLooping"
"""An alertname no runbook of the benchmark answers (issue 11 §8: "alerts matching no runbook")."""


def issue_workload(n: int, per: int = 10, jobs: int = 200, first: int = 0) -> common.Workload:
    """Issue 11 §8's shape: ``per`` alerts a request, every alert new (new fingerprints), none matching a
    runbook."""
    webhook: list[bytes] = []
    am: list[bytes] = []
    instance = first
    for i in range(n):
        job = f"job-{i % jobs:04d}"
        group = []
        for _ in range(per):
            instance += 1
            group.append(
                common.make_alert(
                    job, f"10.{instance // 62500}.{instance // 250 % 250}.{instance % 250}:9100", NO_MATCH
                )
            )
        webhook.append(
            json.dumps(common.webhook_payload(group, {"alertname": NO_MATCH, "job": job})).encode()
        )
        am.append(json.dumps(common.postable_alerts(group)).encode())
    return common.Workload(webhook, am, n * per, n * per, 0)


class QuietAlertmanager(AlertmanagerServer):
    """support.am's Alertmanager, but logging at info as in production (the test fixture uses debug)."""

    def build_argv(self) -> list[str]:
        return [a if not a.startswith("--log.level=") else "--log.level=info" for a in super().build_argv()]


def start_bare(workdir: Path) -> ManagedProcess:
    port = free_port()
    proc = ManagedProcess(
        "bare",
        [sys.executable, str(Path(__file__).parent / "bare_server.py"), str(port)],
        log_path=workdir / "bare.log",
        env=base_env(),
        ready_url=f"http://127.0.0.1:{port}/healthz",
    )
    proc.port = port  # type: ignore[attr-defined]
    return proc.start()


async def warm_up(name: str, url: str, bodies: list[bytes], headers: dict[str, str], args: Any) -> None:
    warm = await common.closed_loop(url, bodies, headers=headers, concurrency=args.concurrency)
    if warm.ok != warm.requests:
        print(f"  {name}: warm-up got {warm.statuses} {warm.errors[:3]}")


@dataclass
class Pass:
    """One measured pass of one server: what the client saw, the server's CPU, the machine's steal."""

    result: LoadResult
    cpu: float  # server CPU seconds (all its threads and children)
    steal: float  # share of the machine's CPU time the hypervisor took meanwhile (/proc/stat)


async def one_pass(
    name: str, url: str, pid: int, wl: list[bytes], headers: dict[str, str], args: Any
) -> Pass:
    """POST ``wl`` once (at most ``args.time_cap`` seconds) and print the pass's line."""
    cpu0, machine0 = common.proc_cpu_seconds(pid), common.machine_ticks()
    res = await common.closed_loop(
        url, wl, headers=headers, concurrency=args.concurrency, time_cap=args.time_cap
    )
    cpu, steal = common.proc_cpu_seconds(pid) - cpu0, common.steal_share(machine0, common.machine_ticks())
    p50, p99 = common.percentile(res.latencies, 50) * 1000, common.percentile(res.latencies, 99) * 1000
    print(
        f"  {name:<13} {res.rate:8.0f} req/s  {res.requests} requests in {res.seconds:.1f}s  "
        f"statuses {res.statuses}  latency p50 {p50:.1f} ms p99 {p99:.1f} ms  "
        f"server CPU {cpu / res.seconds * 100:.0f}% ({cpu / max(res.requests, 1) * 1e3:.3f} ms/request)  "
        f"steal {steal * 100:.0f}%"
    )
    if res.errors:
        print(f"    errors: {res.errors[:3]}")
    return Pass(res, cpu, steal)


def median_pass(passes: list[Pass]) -> Pass:
    return sorted(passes, key=lambda p: p.result.rate)[len(passes) // 2]


@dataclass
class RunbookdPass:
    """One measured pass of runbookd on a fresh state file, and what routing did with it afterwards."""

    measured: Pass  # the measured requests (answered when committed)
    stored: int  # measured notifications stored (committed)
    routed_during: int  # of them routed before the last answer
    backlog: int  # of them routed after the last answer
    routing_seconds: float  # last answer -> last notification routed
    routing_cpu: float  # server CPU seconds meanwhile
    left: int  # still not routed when wait_routed gave up (0 unless it timed out)
    runs: int
    targets: int
    fingerprints: int
    expected_fingerprints: int


async def measure_runbookd(
    workdir: Path, warm: list[bytes], wl: list[bytes], args: Any, pg: PostgresServer | None = None
) -> RunbookdPass:
    """A fresh `runbookd serve`: warm up, wait until the warm-up is routed, POST ``wl`` once (the
    webhook answers when a notification is committed), then time the routing of the backlog and check
    the state: one run per target, every fingerprint stored. With ``pg``, the store is a fresh database
    on that PostgreSQL server (state.url) instead of a SQLite file."""
    config = common.daemon_config(workdir)
    state: Path | str = workdir / "state.db"
    if pg is not None:
        state = pg.fresh_database("ingest")
        config["state"] = {"url": state}
    rb = common.runbookd_process(workdir, config).start()
    try:
        assert rb.pid is not None
        url = rb.url + "/api/v1/alertmanager"
        hdrs = {"Authorization": f"Bearer {common.WEBHOOK_TOKEN}"}
        res = await common.closed_loop(url, warm, headers=hdrs, concurrency=args.concurrency)
        if res.ok != res.requests:
            print(f"  runbookd: warm-up got {res.statuses} {res.errors[:3]}")
        common.wait_routed(state)  # the measured requests start with nothing left to route
        before, _ = common.inbox_counts(state)
        measured = await one_pass("runbookd", url, rb.pid, wl, hdrs, args)
        res = measured.result
        stored, backlog = common.inbox_counts(state)
        cpu0 = common.proc_cpu_seconds(rb.pid)
        routing_seconds, left = common.wait_routed(state, timeout=args.route_timeout)
        routing_cpu = common.proc_cpu_seconds(rb.pid) - cpu0
    finally:
        rb.stop()
    stored -= before
    routed = backlog - left
    print(
        f"  {'':<13} stored {stored} notifications; {stored - backlog} routed during the burst, "
        f"{backlog} after it in {routing_seconds:.1f} s ({routed / max(routing_seconds, 1e-9):.0f}/s, "
        f"server CPU {routing_cpu / max(routed, 1) * 1e3:.2f} ms per notification)"
        + (f"; {left} NOT ROUTED after {args.route_timeout:.0f} s" if left else "")
    )
    runs, got = common.state_scalars(state, "SELECT COUNT(*) FROM runs", common.fingerprints_query(state))
    sent = warm + wl[: res.requests]
    targets = {
        a["labels"]["job"]
        for b in sent
        for a in json.loads(b)["alerts"][:1]
        if a["labels"]["alertname"] == common.ALERTNAME
    }
    fps = {a["fingerprint"] for b in sent for a in json.loads(b)["alerts"]}
    return RunbookdPass(
        measured,
        stored,
        stored - backlog,
        backlog,
        routing_seconds,
        routing_cpu,
        left,
        runs,
        len(targets),
        got,
        len(fps),
    )


async def measure_alertmanager(
    workdir: Path, warm: list[bytes], wl: common.Workload, args: Any
) -> tuple[Pass, int | None]:
    """A fresh Alertmanager: warm up, one pass; (the pass, how many alerts it holds then: None if listing
    them timed out)."""
    am = QuietAlertmanager(workdir).start()
    try:
        url = am.api_url + "/alerts"
        assert am.pid is not None
        await warm_up("alertmanager", url, warm, {}, args)
        measured = await one_pass("alertmanager", url, am.pid, wl.alertmanager, {}, args)
        try:
            held: int | None = len(am.alerts())
        except (TimeoutError, OSError):  # listing ~100,000 alerts can outlast the client's timeout
            held = None
    finally:
        am.stop()
    return measured, held


SHAPES = {
    "mixed": "1-5 alerts a request, half re-delivered, all matching the runbook (this script's own shape)",
    "issue": "10 alerts a request, all new fingerprints, none matching a runbook, 16 in flight, 5 s (issue 11 §8)",
}


async def run(args: argparse.Namespace) -> bool:
    passed = True
    for shape in args.shape.split(","):
        sub = argparse.Namespace(**vars(args))
        if shape == "issue":
            sub.concurrency, sub.time_cap = args.issue_concurrency, args.issue_seconds
            wl, warm = issue_workload(args.issue_requests), issue_workload(args.warmup, first=10_000_000)
        else:
            wl, warm = (
                common.ingest_workload(args.requests, seed=7),
                common.ingest_workload(args.warmup, seed=11),
            )
        print(f"\n== shape {shape}: {SHAPES[shape]}")
        passed &= await run_shape(sub, shape, wl, warm)
    return passed


async def run_shape(args: argparse.Namespace, shape: str, wl: common.Workload, warm: common.Workload) -> bool:
    # the warm-up uses other jobs (targets) than the measured requests
    warm_hook = [b.replace(b'"job-', b'"warm-') for b in warm.webhook]
    warm_am = [b.replace(b'"job-', b'"warm-') for b in warm.alertmanager]
    print(
        f"workload: {args.requests} requests, {wl.alerts} alerts ({wl.distinct} distinct fingerprints, "
        f"{wl.repeated_requests} re-delivered groups), 200 jobs (run targets), concurrency {args.concurrency}, "
        f"at most {args.time_cap:g} s a pass"
    )
    bare_passes: list[Pass] = []
    rb_passes: list[RunbookdPass] = []
    am_passes: list[Pass] = []
    sanity: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        base = Path(tmp)
        # Rounds, not blocks: bare, runbookd and Alertmanager one pass each, side by side, round after round.
        # The VM's speed drifts by tens of percent within minutes; a ratio of passes taken seconds apart is
        # what can be compared, and the rounds' spread shows how much the machine moved.
        # Alertmanager keeps working on what it was sent for a while after a pass (it groups and dispatches
        # the alerts): left running, it takes the CPU the next pass of another server needs. So, like
        # runbookd, it runs fresh for each of its passes (warm-up, pass, stop); the bare server does nothing
        # between requests and runs throughout.
        bare = start_bare(base / "bare")
        pg = None
        held: int | None = None
        try:
            bare_url = f"http://127.0.0.1:{bare.port}/api/v1/alertmanager"  # type: ignore[attr-defined]
            assert bare.pid is not None
            await warm_up("bare aiohttp", bare_url, warm_hook, {}, args)
            if args.store == "postgresql":
                bindir = pg_bindir()
                if bindir is None:
                    raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
                pg = PostgresServer(bindir, durable=True).start()  # fsync and synchronous_commit on
            probes: list[float] = []
            for i in range(args.passes):
                probes.append(common.speed_probe())
                print(f"  round {i + 1} (speed probe {probes[-1]:.0f} ms)")
                bare_passes.append(await one_pass("bare aiohttp", bare_url, bare.pid, wl.webhook, {}, args))
                rb_passes.append(
                    await measure_runbookd(base / f"runbookd-{i}", warm_hook, wl.webhook, args, pg)
                )
                am_pass, held = await measure_alertmanager(base / f"alertmanager-{i}", warm_am, wl, args)
                am_passes.append(am_pass)
        finally:
            if pg is not None:
                pg.stop()
            bare.stop()
    sanity += [
        Check(
            "runbookd: runs created (one per target), per pass",
            " / ".join(str(p.runs) for p in rb_passes),
            f"== {' / '.join(str(p.targets) for p in rb_passes)}",
            all(p.runs == p.targets for p in rb_passes),
        ),
        Check(
            "runbookd: fingerprints stored, per pass",
            " / ".join(str(p.fingerprints) for p in rb_passes),
            f"== {' / '.join(str(p.expected_fingerprints) for p in rb_passes)}",
            all(p.fingerprints == p.expected_fingerprints for p in rb_passes),
        ),
        Check(
            "runbookd: notifications left unrouted",
            " / ".join(str(p.left) for p in rb_passes),
            "0",
            all(p.left == 0 for p in rb_passes),
        ),
    ]
    fps_am = {
        json.dumps(a["labels"], sort_keys=True)
        for b in warm_am + wl.alertmanager[: am_passes[-1].result.requests]
        for a in json.loads(b)
    }
    sanity.append(
        Check(
            "alertmanager: alerts held after its last pass",
            str(held) if held is not None else "could not list them (timed out)",
            f"== {len(fps_am)}",
            held == len(fps_am) if held is not None else None,
        )
    )
    median = sorted(rb_passes, key=lambda p: p.measured.result.rate)[len(rb_passes) // 2]
    medians = {
        "bare": median_pass(bare_passes),
        "runbookd": median.measured,
        "alertmanager": median_pass(am_passes),
    }
    all_ok = all(p.measured.result.ok == p.measured.result.requests for p in rb_passes)
    vs_bare = sorted(
        r.measured.result.rate / b.result.rate for r, b in zip(rb_passes, bare_passes, strict=True)
    )
    vs_am = sorted(r.measured.result.rate / a.result.rate for r, a in zip(rb_passes, am_passes, strict=True))

    def rate(name: str) -> str:
        p = medians[name]
        r = p.result
        return f"{r.rate:.0f} req/s (server CPU {p.cpu / r.seconds * 100:.0f}%, {p.cpu / max(r.requests, 1) * 1e3:.2f} ms/req)"

    def ratio(values: list[float]) -> str:
        rounds = ", ".join(f"{v:.2f}" for v in values)
        return f"{values[len(values) // 2]:.2f}x (rounds, sorted: {rounds})"

    steal = max(p.steal for p in [*bare_passes, *(r.measured for r in rb_passes), *am_passes])
    checks = [
        Check("(a) bare aiohttp (parse JSON, 200), median pass", rate("bare"), "baseline", None),
        Check(
            "(b) runbookd webhook ("
            + ("PostgreSQL commit" if args.store == "postgresql" else "SQLite WAL commit, synchronous=FULL")
            + "), median pass",
            rate("runbookd"),
            "",
            None,
        ),
        Check(
            "    then routed: backlog after the last answer",
            f"{median.backlog} notifications in {median.routing_seconds:.1f} s "
            f"({(median.backlog - median.left) / max(median.routing_seconds, 1e-9):.0f}/s, "
            f"{median.routing_cpu / max(median.backlog - median.left, 1) * 1e3:.2f} ms CPU each)",
            "",
            None,
        ),
        Check("(c) alertmanager POST /api/v2/alerts, median pass", rate("alertmanager"), "", None),
        Check(
            "runbookd / bare, median of rounds",
            ratio(vs_bare),
            ">= 0.50x",
            vs_bare[len(vs_bare) // 2] >= 0.5 and all_ok,
        ),
        Check(
            "runbookd / alertmanager, median of rounds",
            ratio(vs_am),
            ">= 1.00x",
            vs_am[len(vs_am) // 2] >= 1.0 and all_ok,
        ),
        Check("machine: CPU stolen by the hypervisor, worst pass", f"{steal * 100:.0f}%", "", None),
        Check(
            "machine: speed probe before each round (larger is slower)",
            " / ".join(f"{p:.0f} ms" for p in probes),
            "",
            None,
        ),
        Check(
            "runbookd non-2xx answers",
            str(sum(p.measured.result.requests - p.measured.result.ok for p in rb_passes)),
            "0",
            all_ok,
        ),
        *sanity,
    ]
    return common.print_table(f"bench/ingest.py: webhook ingest, shape {shape}", checks)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=8000, help="measured requests per server (default 8000)")
    p.add_argument("--warmup", type=int, default=300, help="warm-up requests per server (default 300)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    p.add_argument(
        "--passes",
        type=int,
        default=3,
        help="passes over the bodies per server, runbookd on a fresh state file each (median; default 3)",
    )
    p.add_argument("--time-cap", type=float, default=30.0, help="stop a phase after this many seconds")
    p.add_argument(
        "--store",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="runbookd's store: a SQLite file (default) or a local PostgreSQL (fsync on) started here",
    )
    p.add_argument(
        "--route-timeout",
        type=float,
        default=120.0,
        help="longest to wait for runbookd to route its backlog (default 120 s)",
    )
    p.add_argument(
        "--shape",
        default="mixed,issue",
        help="comma-separated: " + "; ".join(f"{k}: {v}" for k, v in SHAPES.items()),
    )
    p.add_argument("--issue-requests", type=int, default=30000, help="bodies built for the issue shape")
    p.add_argument("--issue-concurrency", type=int, default=16, help="in flight, issue shape (default 16)")
    p.add_argument("--issue-seconds", type=float, default=5.0, help="seconds a pass, issue shape (default 5)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args()
    t0 = time.monotonic()
    passed = asyncio.run(run(args))
    print(f"total {time.monotonic() - t0:.0f}s")
    return common.finish(passed, args.strict)


if __name__ == "__main__":
    sys.exit(main())
