"""Cold start and idle memory of `runbookd serve` (design.md §9, issue 11 §9): spawn -> a webhook
stored (200) under 1.5 s whatever the store holds (median of RUNS; ``--active-runs 50000`` starts on a
state file holding that many active runs), idle RSS under 100 MB. Also shown: spawn -> /healthz,
/readyz, and routing live (``GET /api/v1/status``: recovery done; a version without it recovered
before it listened).

Each run spawns a new process (the console script in the venv, fresh empty state directory, the shipped
runbooks/ folder, a production-like config: JSON logs, Prometheus/Alertmanager URLs set) and polls
/healthz every 5 ms from the moment of spawn. Idle RSS is VmRSS after IDLE seconds with no traffic (the
engine ticks every second meanwhile). Bytecode caches are used as in an installed image; the first run
is also shown on its own, since it may pay for cold file caches.

    .venv/bin/python bench/startup.py [--runs 5] [--idle 3] [--active-runs 50000] [--strict]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import yaml
from common import Check
from support.ports import free_port
from support.procs import base_env
from support.runbookd import runbookd_bin

WEBHOOK = json.dumps(
    common.webhook_payload(
        [common.make_alert("startup-job", "10.0.0.1:9100")], {"alertname": common.ALERTNAME}
    )
).encode()


def post_webhook(port: int) -> int | None:
    """POST one notification; the status, or None when nothing listens yet."""
    conn = http.client.HTTPConnection(common.LOOPBACK, port, timeout=5)
    try:
        conn.request(
            "POST",
            "/api/v1/alertmanager",
            body=WEBHOOK,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {common.WEBHOOK_TOKEN}"},
        )
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def routing_live(port: int) -> bool | None:
    """/api/v1/status routing_live (None: a version without it)."""
    conn = http.client.HTTPConnection(common.LOOPBACK, port, timeout=5)
    try:
        conn.request("GET", "/api/v1/status", headers={"Authorization": f"Bearer {common.ADMIN_TOKEN}"})
        resp = conn.getresponse()
        body = json.loads(resp.read()) if resp.status == 200 else {}
        return body.get("routing_live") if "routing_live" in body else None
    except OSError:
        return False
    finally:
        conn.close()


def one_start(workdir: Path, idle: float, seeded: Path | None = None) -> dict[str, Any]:
    """Seconds from spawn to /healthz 200, to /readyz 200, to a stored webhook (200), to routing live;
    /proc status after idle."""
    port = free_port()
    if seeded is not None:
        shutil.copy(seeded, workdir / "state.db")
    config = common.daemon_config(workdir, port=port, runbooks=common.ROOT / "runbooks")
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = base_env(
        {"RUNBOOKD_WEBHOOK_TOKEN": common.WEBHOOK_TOKEN, "RUNBOOKD_ADMIN_TOKEN": common.ADMIN_TOKEN}
    )
    with open(workdir / "runbookd.log", "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [runbookd_bin(), "serve", "--config", str(workdir / "config.yaml")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
        try:
            healthy = ready = None
            while time.monotonic() - t0 < 600:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"runbookd exited with {proc.returncode}: {(workdir / 'runbookd.log').read_text()[-2000:]}"
                    )
                if healthy is None and common.http_status(common.LOOPBACK, port, "/healthz", 0.5) == 200:
                    healthy = time.monotonic() - t0
                if healthy is not None and common.http_status(common.LOOPBACK, port, "/readyz", 0.5) == 200:
                    ready = time.monotonic() - t0
                    break
                time.sleep(0.005)
            if healthy is None or ready is None:
                raise RuntimeError("runbookd did not become healthy/ready within 600 s")
            while post_webhook(port) != 200:
                time.sleep(0.005)
            stored = time.monotonic() - t0
            live: float | None = None
            while time.monotonic() - t0 < 600:
                got = routing_live(port)
                if got is None:
                    break  # a version without routing_live: it recovered before it listened
                if got:
                    live = time.monotonic() - t0
                    break
                time.sleep(0.02)
            time.sleep(idle)
            status = common.proc_status(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"healthy": healthy, "ready": ready, "stored": stored, "live": live, "status": status}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="starts to take the median of (default 5)")
    p.add_argument("--idle", type=float, default=3.0, help="seconds idle before reading RSS (default 3)")
    p.add_argument(
        "--active-runs",
        type=int,
        default=0,
        help="start on a state file holding this many active runs (e.g. 50000; default: empty state)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args()

    seeded: Path | None = None
    with tempfile.TemporaryDirectory(prefix="bench-startup-seed-") as seed_dir:
        if args.active_runs:
            from support.seeding import seed_active_runs

            seed_root = Path(seed_dir)
            (seed_root / "runbooks").mkdir()
            (seed_root / "runbooks" / "bench-scrape-failure.yaml").write_text(common.BENCH_RUNBOOK)
            seeded = seed_root / "seeded.db"
            t = time.monotonic()
            seed_active_runs(seed_root, seeded, args.active_runs, alertname=common.ALERTNAME)
            print(f"  seeded {args.active_runs} active runs in {time.monotonic() - t:.1f} s")
        starts = [one_start_in_tmp(args.idle, seeded) for _ in range(args.runs)]
    for i, st in enumerate(starts):
        status = st["status"]
        live = f"{st['live'] * 1000:.0f} ms" if st["live"] is not None else "n/a (before listening)"
        print(
            f"  start {i + 1}: /healthz {st['healthy'] * 1000:.0f} ms, /readyz {st['ready'] * 1000:.0f} ms, "
            f"webhook stored {st['stored'] * 1000:.0f} ms, routing live {live}; idle VmRSS "
            f"{common.mb(status['VmRSS'])} (VmHWM {common.mb(status['VmHWM'])}, threads {status['Threads']})"
        )
    stored = [st["stored"] for st in starts]
    healthy = [st["healthy"] for st in starts]
    lives = [st["live"] for st in starts if st["live"] is not None]
    rss = [st["status"]["VmRSS"] for st in starts]
    med_rss = statistics.median(rss)
    label = f"{args.active_runs} active runs" if args.active_runs else "empty state"
    checks = [
        Check(
            f"cold start to a stored webhook (200), {label}, median of {args.runs}",
            f"{statistics.median(stored) * 1000:.0f} ms ({min(stored) * 1000:.0f}-{max(stored) * 1000:.0f})",
            "< 1500 ms",
            statistics.median(stored) < 1.5,
        ),
        Check(
            "cold start to /healthz 200, median (min-max)",
            f"{statistics.median(healthy) * 1000:.0f} ms ({min(healthy) * 1000:.0f}-{max(healthy) * 1000:.0f})",
            "< 1500 ms",
            statistics.median(healthy) < 1.5,
        ),
        Check(
            "start to routing live (recovery done), median",
            f"{statistics.median(lives) * 1000:.0f} ms" if lives else "n/a (recovers before listening)",
            "",
            None,
        ),
        Check(
            f"idle RSS after {args.idle:g} s, median",
            common.mb(int(med_rss)),
            "< 100 MB" if not args.active_runs else "",
            med_rss < 100 * 1024 if not args.active_runs else None,
        ),
        Check("VmHWM at idle, max", common.mb(max(st["status"]["VmHWM"] for st in starts)), "", None),
    ]
    passed = common.print_table(f"bench/startup.py: cold start, {label}", checks)
    return common.finish(passed, args.strict)


def one_start_in_tmp(idle: float, seeded: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        return one_start(Path(tmp), idle, seeded)


if __name__ == "__main__":
    sys.exit(main())
