"""Cold start and idle memory of `runbookd serve` (design.md §9): spawn -> GET /healthz 200 under 1.5 s
(median of RUNS), idle RSS under 100 MB.

Each run spawns a new process (the console script in the venv, fresh empty state directory, the shipped
runbooks/ folder, a production-like config: JSON logs, Prometheus/Alertmanager URLs set) and polls
/healthz every 5 ms from the moment of spawn. Idle RSS is VmRSS after IDLE seconds with no traffic (the
engine ticks every second meanwhile). Bytecode caches are used as in an installed image; the first run
is also shown on its own, since it may pay for cold file caches.

    .venv/bin/python bench/startup.py [--runs 5] [--idle 3] [--strict]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import yaml
from common import Check
from support.ports import free_port
from support.procs import base_env
from support.runbookd import runbookd_bin


def one_start(workdir: Path, idle: float) -> tuple[float, dict[str, int], float]:
    """(seconds to /healthz 200, /proc status after idle, seconds to /readyz 200)."""
    port = free_port()
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
            while time.monotonic() - t0 < 30:
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
                raise RuntimeError("runbookd did not become healthy/ready within 30 s")
            time.sleep(idle)
            status = common.proc_status(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return healthy, status, ready


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="starts to take the median of (default 5)")
    p.add_argument("--idle", type=float, default=3.0, help="seconds idle before reading RSS (default 3)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args()

    starts: list[float] = []
    readies: list[float] = []
    rss: list[int] = []
    hwm: list[int] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
            healthy, status, ready = one_start(Path(tmp), args.idle)
        starts.append(healthy)
        readies.append(ready)
        rss.append(status["VmRSS"])
        hwm.append(status["VmHWM"])
        print(
            f"  start {i + 1}: /healthz 200 after {healthy * 1000:.0f} ms, /readyz after {ready * 1000:.0f} ms, "
            f"idle VmRSS {common.mb(status['VmRSS'])} (VmHWM {common.mb(status['VmHWM'])}, threads {status['Threads']})"
        )
    med = statistics.median(starts)
    med_rss = statistics.median(rss)
    checks = [
        Check(
            f"cold start to /healthz 200, median of {args.runs}",
            f"{med * 1000:.0f} ms",
            "< 1500 ms",
            med < 1.5,
        ),
        Check(
            "cold start, first / min / max",
            f"{starts[0] * 1000:.0f} / {min(starts) * 1000:.0f} / {max(starts) * 1000:.0f} ms",
            "",
            None,
        ),
        Check("start to /readyz 200, median", f"{statistics.median(readies) * 1000:.0f} ms", "", None),
        Check(
            f"idle RSS after {args.idle:g} s, median",
            common.mb(int(med_rss)),
            "< 100 MB",
            med_rss < 100 * 1024,
        ),
        Check("idle RSS, max of runs", common.mb(max(rss)), "< 100 MB", max(rss) < 100 * 1024),
        Check("VmHWM at idle, max", common.mb(max(hwm)), "", None),
    ]
    passed = common.print_table("bench/startup.py: cold start and idle memory", checks)
    return common.finish(passed, args.strict)


if __name__ == "__main__":
    sys.exit(main())
