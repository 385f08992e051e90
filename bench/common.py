"""Shared pieces of the benchmarks: payloads, a fixed-concurrency HTTP load client, process probes, a
results table, and the runbookd / Alertmanager process helpers from ``tests/support``.

Benchmarks are plain scripts (``python bench/ingest.py``), never collected by pytest. Everything they
start listens on 127.0.0.1 and every client they use ignores proxy settings.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from support.procs import PROXY_VARS  # noqa: E402

LOOPBACK = "127.0.0.1"
WEBHOOK_TOKEN = "bench-webhook-token"
ADMIN_TOKEN = "bench-admin-token"
ALERTNAME = "PrometheusScrapeFailure"
STARTS_AT = "2026-11-26T10:00:00Z"

for _var in PROXY_VARS:  # nothing here may leave loopback, whatever the shell exported
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

# The shipped prometheus-scrape-failure runbook (4 steps, the first awaits approval), embedded so that a
# benchmark measures the engine, not whatever runbooks/ holds on the day.
BENCH_RUNBOOK = """\
name: bench-scrape-failure
description: Benchmark copy of runbooks/prometheus-scrape-failure.yaml.
triggers:
  - alert: PrometheusScrapeFailure
target: "{{ params.job }}"
params:
  job: "{{ alert.labels.job }}"
  silence_for: 2h
policy:
  cooldown: 30m
  max_runs_per_day: 6
  on_resolved: cancel
approval:
  approvers: [sre]
  min_approvers: 1
  timeout: 30m
steps:
  - id: targets-down
    action: prometheus.query
    with:
      query: 'up{job="{{ params.job | promql }}"} == 0'
      expect: non_empty
  - id: down-since
    action: prometheus.query
    with:
      query: '(1 - avg_over_time(up{job="{{ params.job | promql }}"}[1h])) * 3600 > 0'
      expect: any
  - id: silence-follow-on
    action: alertmanager.silence
    with:
      matchers:
        - {name: job, value: "{{ params.job }}"}
        - {name: alertname, value: PrometheusScrapeFailure, is_equal: false}
      duration: "{{ params.silence_for }}"
      comment: "Follow-on alerts of job {{ params.job }} while its scrape failure is investigated"
  - id: report
    action: notify.log
    with:
      message: "Job {{ params.job }}: {{ steps['targets-down'].output.count }} target(s) down."
"""


def daemon_config(workdir: Path, *, port: int = 0, runbooks: Path | None = None) -> dict[str, Any]:
    """A production-like config: JSON logs at info, dry-run, loopback-only upstreams (never contacted:
    runs wait for approval)."""
    if runbooks is None:
        runbooks = workdir / "runbooks"
        runbooks.mkdir(parents=True, exist_ok=True)
        (runbooks / "bench-scrape-failure.yaml").write_text(BENCH_RUNBOOK)
    return {
        "server": {"listen": f"{LOOPBACK}:{port}"},
        "state": {"path": str(workdir / "state.db")},
        "runbooks": {"paths": [str(runbooks)]},
        "dry_run": True,
        "prometheus": {"url": f"http://{LOOPBACK}:9", "timeout": "2s"},
        "alertmanager": {"url": f"http://{LOOPBACK}:9", "timeout": "2s"},
        "auth": {
            "webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"},
            "tokens": [{"name": "admin", "role": "admin", "secret": {"env": "RUNBOOKD_ADMIN_TOKEN"}}],
        },
        "approvers": {"sre": ["admin"]},
        "log": {"format": "json", "level": "info"},
    }


def runbookd_process(workdir: Path, config: dict[str, Any] | None = None) -> Any:
    """``runbookd serve`` as a subprocess (support.runbookd), with normal bytecode caching."""
    from support.runbookd import RunbookdProcess

    proc = RunbookdProcess(
        workdir,
        config or daemon_config(workdir),
        webhook_token=WEBHOOK_TOKEN,
        admin_token=ADMIN_TOKEN,
        env={"PYTHONDONTWRITEBYTECODE": ""},
        ready_timeout=30.0,
    )
    return proc


# ---------------------------------------------------------------------------------------------- payloads


def fingerprint(labels: dict[str, str]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def make_alert(
    job: str, instance: str, alertname: str = ALERTNAME, starts_at: str = STARTS_AT
) -> dict[str, Any]:
    labels = {
        "alertname": alertname,
        "job": job,
        "instance": instance,
        "severity": "warning",
        "namespace": "monitoring",
        "prometheus": "monitoring/k8s",
    }
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {
            "summary": f"Prometheus cannot scrape {instance} of job {job}",
            "description": f"{instance} of job {job} has been down for more than 5 minutes.",
            "runbook_url": "https://runbooks.example.internal/prometheus-scrape-failure",
        },
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": f"http://prometheus.monitoring:9090/graph?g0.expr=up%7Bjob%3D%22{job}%22%7D+%3D%3D+0",
        "fingerprint": fingerprint(labels),
    }


def webhook_payload(alerts: Sequence[dict[str, Any]], group_labels: dict[str, str]) -> dict[str, Any]:
    """An Alertmanager v4 webhook notification for one aggregation group."""
    common = dict(alerts[0]["labels"])
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
    return {
        "version": "4",
        "groupKey": "{}:{" + ",".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "runbookd",
        "groupLabels": group_labels,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.monitoring:9093",
        "alerts": list(alerts),
    }


def postable_alerts(alerts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same alerts as Prometheus posts them to Alertmanager's POST /api/v2/alerts."""
    return [
        {
            "labels": a["labels"],
            "annotations": a["annotations"],
            "startsAt": a["startsAt"],
            "generatorURL": a["generatorURL"],
        }
        for a in alerts
    ]


@dataclass
class Workload:
    """Pre-built request bodies: each request is one Alertmanager group (alertname, job) of 1-5 alerts.

    ``repeat`` of the requests re-deliver a group sent before (same fingerprints and startsAt, as
    Alertmanager does every group_interval / repeat_interval); the rest add new instances to a job
    (new fingerprints). ``jobs`` jobs are the run targets, so most new alerts attach to an active run."""

    webhook: list[bytes]
    alertmanager: list[bytes]
    alerts: int
    distinct: int
    repeated_requests: int


def ingest_workload(n: int, *, jobs: int = 200, repeat: float = 0.5, seed: int = 7) -> Workload:
    rnd = random.Random(seed)
    sent: list[list[dict[str, Any]]] = []
    next_instance = [0] * jobs
    webhook: list[bytes] = []
    am: list[bytes] = []
    alerts = repeated = 0
    fps: set[str] = set()
    for _ in range(n):
        if sent and rnd.random() < repeat:
            group = rnd.choice(sent)
            repeated += 1
        else:
            j = rnd.randrange(jobs)
            group = []
            for _k in range(rnd.randint(1, 5)):
                next_instance[j] += 1
                group.append(make_alert(f"job-{j:04d}", f"10.0.{j % 250}.{next_instance[j]}:9100"))
            sent.append(group)
        alerts += len(group)
        fps.update(a["fingerprint"] for a in group)
        job = group[0]["labels"]["job"]
        webhook.append(json.dumps(webhook_payload(group, {"alertname": ALERTNAME, "job": job})).encode())
        am.append(json.dumps(postable_alerts(group)).encode())
    return Workload(webhook, am, alerts, len(fps), repeated)


# ---------------------------------------------------------------------------------------------- load client


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: dict[int, int]
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)


async def closed_loop(
    url: str,
    bodies: Sequence[bytes],
    *,
    headers: dict[str, str] | None = None,
    concurrency: int = 32,
    time_cap: float = 60.0,
) -> LoadResult:
    """POST every body once with ``concurrency`` requests in flight (keep-alive connections); stop early
    after ``time_cap`` seconds (then ``requests`` is what completed)."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    errors: list[str] = []
    it = iter(bodies)
    done = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        t0 = time.perf_counter()
        deadline = t0 + time_cap

        async def worker() -> None:
            nonlocal done
            for body in it:
                if time.perf_counter() > deadline:
                    return
                s = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=hdrs) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                except (aiohttp.ClientError, OSError) as exc:
                    errors.append(repr(exc))
                    statuses[0] = statuses.get(0, 0) + 1
                latencies.append(time.perf_counter() - s)
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return LoadResult(done, elapsed, statuses, latencies, errors)


# ---------------------------------------------------------------------------------------------- probes


def proc_status(pid: int, *, children: bool = True) -> dict[str, int]:
    """VmRSS / VmHWM / VmSize (kB) and Threads of a live process, each summed with its live children's
    (runbookd's SQLite intake writer) unless ``children`` is false: memory shared between them is counted
    twice, so it errs high."""
    out: dict[str, int] = {}
    for p in [pid, *(_children(pid) if children else [])]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM", "VmSize", "Threads"):
                        out[key] = out.get(key, 0) + int(value.split()[0])
        except FileNotFoundError:  # a child that ended meanwhile
            continue
    return out


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) and of its running children (runbookd's SQLite intake
    writer), in seconds."""
    ticks = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a child that ended meanwhile
            continue
        ticks += int(rest[11]) + int(rest[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> list[int]:
    """The machine's CPU time counters (the ``cpu`` line of /proc/stat: user, nice, system, idle, iowait,
    irq, softirq, steal, ...), in clock ticks."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


def steal_share(before: list[int], after: list[int]) -> float:
    """The share of the machine's CPU time the hypervisor gave to others between two ``machine_ticks``:
    on a VM, what the figures measured meanwhile lost to its neighbours (guest time counts in user)."""
    delta = [b - a for a, b in zip(before[:8], after[:8], strict=True)]
    total = sum(delta)
    return delta[7] / total if total > 0 else 0.0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except FileNotFoundError:
            continue
        for kid in kids:
            found += [kid, *_children(kid)]
    return found


def http_status(host: str, port: int, path: str, timeout: float = 1.0) -> int | None:
    """One GET with the stdlib (no proxies); None when nothing answers."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "?"
    return f"{os.cpu_count()} CPU ({model}), Python {platform.python_version()}, {platform.system()}"


_PROBE_ALERT = {"alertname": "X", "job": "job-1", "instance": "10.0.0.1:9100", "severity": "warning"}


def speed_probe(rounds: int = 50_000) -> float:
    """CPU milliseconds of a fixed loop of the kind of work the daemon does (JSON, dicts, sorting): how fast
    the machine is right now. A VM's speed drifts by tens of percent within minutes (its neighbours), so
    a CPU figure in ms is only comparable with another taken at a similar probe."""
    t0 = time.process_time()
    for _ in range(rounds):
        json.dumps(_PROBE_ALERT, sort_keys=True)
        sorted(_PROBE_ALERT.items())
    return (time.process_time() - t0) * 1e3


def git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "daemon"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    if not rev:  # e.g. a `git archive` export
        return "?"
    return rev + (" + uncommitted changes in daemon/" if dirty else "")


# ---------------------------------------------------------------------------------------------- report


@dataclass
class Check:
    name: str
    measured: str
    target: str
    ok: bool | None  # None: informational


def print_table(title: str, checks: Iterable[Check]) -> bool:
    """Print a table of results; return True when no check failed."""
    rows = list(checks)
    head = ("measurement", "measured", "target", "result")
    cells = [
        (c.name, c.measured, c.target, "-" if c.ok is None else ("PASS" if c.ok else "FAIL")) for c in rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(head)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(f"== {title}  [{machine()}; runbookd {git_rev()}]")
    print(line.format(*head))
    print(line.format(*("-" * w for w in widths)))
    for r in cells:
        print(line.format(*r))
    print()
    return all(c.ok is not False for c in rows)


def finish(passed: bool, strict: bool) -> int:
    if not passed:
        print("some targets were missed" + ("" if strict else " (exit 0; pass --strict to fail)"))
    return 1 if (strict and not passed) else 0


def mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"


def state_scalars(state: Path | str, *queries: str) -> list[Any]:
    """One value per query from a runbookd store, read-only: a SQLite state file, or a ``postgresql://``
    URL (the PostgreSQL store)."""
    if isinstance(state, str) and state.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(state, autocommit=True, connect_timeout=5) as conn:
            return [conn.execute(q).fetchone()[0] for q in queries]  # type: ignore[arg-type,index]
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
    try:
        return [db.execute(q).fetchone()[0] for q in queries]
    finally:
        db.close()


UNMATCHED_FINGERPRINTS = {
    "sqlite": "SELECT json_extract(u.value, '$.fingerprint') FROM inbox, json_each(inbox.result, '$.unmatched') AS u",
    "postgresql": "SELECT u->>'fingerprint' FROM inbox, jsonb_array_elements(inbox.result::jsonb->'unmatched') AS u",
}
"""Fingerprints of the alerts no runbook answered, from the receipts (routing links the alerts it acts on
to their runs in ``alert_links``; a notification with nothing to act on is routed at intake, its receipt
the record)."""


def fingerprints_query(state: Path | str) -> str:
    """Distinct fingerprints runbookd accounted for: linked to a run, or listed unmatched in a receipt."""
    backend = "postgresql" if isinstance(state, str) and state.startswith("postgresql://") else "sqlite"
    return (
        "SELECT COUNT(*) FROM (SELECT fingerprint FROM alert_links UNION "
        + UNMATCHED_FINGERPRINTS[backend]
        + ") AS fps"
    )


def inbox_counts(state_path: Path | str) -> tuple[int, int]:
    """(notifications stored, of which not routed yet) in a runbookd store, read-only. Cheap enough to
    poll: MAX of the primary key and a count over the partial index of unrouted rows."""
    stored, left = state_scalars(
        state_path,
        "SELECT COALESCE(MAX(seq), 0) FROM inbox",
        "SELECT COUNT(*) FROM inbox WHERE routed_at IS NULL",
    )
    return int(stored), int(left)


def wait_routed(state_path: Path | str, timeout: float = 120.0) -> tuple[float, int]:
    """Wait until runbookd has routed every stored notification (the webhook answers once a notification
    is stored; routing follows). Returns (seconds waited, notifications still not routed: 0 unless the
    timeout passed)."""
    t0 = time.perf_counter()
    while True:
        _, left = inbox_counts(state_path)
        waited = time.perf_counter() - t0
        if left == 0 or waited > timeout:
            return waited, left
        time.sleep(0.02)
