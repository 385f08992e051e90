"""p50/p99 from webhook receipt to "approval request sent" at a steady 200 requests/s (design.md §9).

runbookd's app (create_app, SQLite WAL state, 1 s engine tick, JSON logs to a file) is served in this
process the way `runbookd serve` serves it (the same event loop, uvloop where installed; gc.freeze() once
the app is set up) on a loopback port with one extra notifier, RecordingNotifier, that stamps
time.monotonic() when an ``approval_requested`` notice reaches it: the moment a Slack message would be
sent. A client subprocess (this script with --client) sends webhooks open-loop at RATE/s for DURATION s
(a request every 1/RATE s whatever the answers, so a slow daemon cannot slow the load down) and reports
when it sent each. Half of the requests open a new target (a new run, so an approval request); the other
half re-deliver an earlier group or add an alert to a running target (attach, no notice). Each notice is
matched to the request that created its run by target. CLOCK_MONOTONIC is system-wide, so the client's
and the server's stamps compare directly.

Reported: send -> notify (the target, p99 < 100 ms), and server receipt (first middleware) -> notify.

    .venv/bin/python bench/latency.py [--rate 200] [--duration 20] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import common
from common import Check


class RecordingNotifier:
    """Stamps when each approval request is handed to notifiers (where Slack's chat.postMessage starts)."""

    name = "bench-recorder"

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}  # target -> monotonic time of its first approval request
        self.kinds: dict[str, int] = {}

    async def notify(self, notice: Any) -> None:
        now = time.monotonic()
        self.kinds[notice.kind] = self.kinds.get(notice.kind, 0) + 1
        if notice.kind == "approval_requested":
            self.sent.setdefault(notice.run["target"], now)


# ------------------------------------------------------------------------------------------- client process


def client_requests(
    rate: float, duration: float, warmup: float, seed: int = 3
) -> list[tuple[float, str | None, bytes]]:
    """(offset in s, target the request creates or None, body) for every request of the run."""
    rnd = random.Random(seed)
    out: list[tuple[float, str | None, bytes]] = []
    groups: list[list[dict[str, Any]]] = []
    total = int(rate * (warmup + duration))
    for i in range(total):
        phase = "warm" if i < rate * warmup else "lat"
        creates: str | None = None
        if i % 2 == 0 or not groups:
            job = f"{phase}-{i:06d}"
            group = [common.make_alert(job, f"10.1.{i % 250}.{k}:9100") for k in range(rnd.randint(1, 3))]
            groups.append(group)
            creates = job if phase == "lat" else None
        elif rnd.random() < 0.5:
            group = rnd.choice(groups[-200:])  # Alertmanager re-sends a group every group_interval
        else:
            old = rnd.choice(groups[-200:])  # another instance of a job whose run is waiting
            job = old[0]["labels"]["job"]
            group = [common.make_alert(job, f"10.2.{i % 250}.{i % 97}:9100")]
        body = json.dumps(
            common.webhook_payload(group, {"alertname": common.ALERTNAME, "job": group[0]["labels"]["job"]})
        ).encode()
        out.append((i / rate, creates, body))
    return out


async def client_main(url: str, rate: float, duration: float, warmup: float) -> None:
    plan = client_requests(rate, duration, warmup)
    sent: dict[str, float] = {}
    answers: list[tuple[float, int]] = []  # (response time, status)
    hdrs = {"Authorization": f"Bearer {common.WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

        async def one(creates: str | None, body: bytes) -> None:
            h = dict(hdrs)
            if creates:
                h["X-Bench-Target"] = creates
            t = time.monotonic()
            if creates:
                sent[creates] = t
            try:
                async with session.post(url, data=body, headers=h) as resp:
                    await resp.read()
                    answers.append((time.monotonic() - t, resp.status))
            except (aiohttp.ClientError, OSError):
                answers.append((time.monotonic() - t, 0))

        tasks = []
        t0 = time.monotonic() + 0.2
        for offset, creates, body in plan:
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(creates, body)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
    json.dump({"sent": sent, "answers": answers, "elapsed": elapsed, "requests": len(plan)}, sys.stdout)


# ------------------------------------------------------------------------------------------- server side


async def serve_and_measure(args: argparse.Namespace) -> bool:
    import structlog
    from aiohttp import web
    from pydantic import SecretStr
    from support.ports import free_port

    from daemon import logs
    from daemon.actions.registry import default_registry
    from daemon.config import Secrets, parse_config
    from daemon.runbooks.loader import load_all
    from daemon.server.app import create_app
    from daemon.server.keys import SLOT

    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(tmp)
        config = parse_config(common.daemon_config(workdir))
        log_file = open(workdir / "runbookd.log", "w")  # noqa: SIM115
        logs.configure("json", "info")  # as `runbookd serve` does, but into a file
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=log_file))
        logging.getLogger().handlers[:] = [logging.StreamHandler(log_file)]
        registry = default_registry(config.plugins)
        runbooks = load_all(config.runbooks.paths, registry, list(config.approvers))
        secrets = Secrets(
            webhook_token=SecretStr(common.WEBHOOK_TOKEN), tokens={"admin": SecretStr(common.ADMIN_TOKEN)}
        )
        recorder = RecordingNotifier()
        app = create_app(
            config, secrets, runbooks, registry=registry, notifiers=[recorder], tick_interval=1.0
        )
        received: dict[str, float] = {}

        @web.middleware
        async def stamp(request: web.Request, handler: Any) -> web.StreamResponse:
            target = request.headers.get("X-Bench-Target")
            if target:
                received[target] = time.monotonic()
            return await handler(request)

        app.middlewares.insert(0, stamp)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        gc.freeze()  # as `runbookd serve` does once start-up is done (daemon/cli/serve.py, _run)
        port = free_port()
        await web.TCPSite(runner, common.LOOPBACK, port).start()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--client",
                f"http://{common.LOOPBACK}:{port}/api/v1/alertmanager",
                "--rate",
                str(args.rate),
                "--duration",
                str(args.duration),
                "--warmup",
                str(args.warmup),
                stdout=subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            await asyncio.sleep(0.5)  # let the last notices through
            engine = app[SLOT].get()
            await engine.wait_idle(timeout=10)
        finally:
            await runner.cleanup()
            log_file.close()

    result = json.loads(out)
    sent: dict[str, float] = result["sent"]
    answers = result["answers"]
    send_to_notify = [(recorder.sent[t] - s) * 1000 for t, s in sent.items() if t in recorder.sent]
    recv_to_notify = [
        (recorder.sent[t] - received[t]) * 1000 for t in sent if t in recorder.sent and t in received
    ]
    missing = [t for t in sent if t not in recorder.sent]
    resp_ms = [a[0] * 1000 for a in answers]
    non_2xx = sum(1 for a in answers if not 200 <= a[1] < 300)
    achieved = result["requests"] / result["elapsed"]

    def p(values: list[float], q: float) -> str:
        return f"{common.percentile(values, q):.1f} ms"

    p99 = common.percentile(send_to_notify, 99)
    checks = [
        Check("offered rate (open loop)", f"{achieved:.0f} req/s", f"{args.rate:.0f} req/s", None),
        Check("runs created (approval requests expected)", str(len(sent)), "", None),
        Check("approval requests recorded", str(len(send_to_notify)), f"== {len(sent)}", not missing),
        Check("webhook answers not 2xx", str(non_2xx), "0", non_2xx == 0),
        Check("send -> approval request sent, p50", p(send_to_notify, 50), "", None),
        Check("send -> approval request sent, p99", p(send_to_notify, 99), "< 100 ms", p99 < 100),
        Check("send -> approval request sent, max", p(send_to_notify, 100), "", None),
        Check("receipt -> approval request sent, p50", p(recv_to_notify, 50), "", None),
        Check(
            "receipt -> approval request sent, p99",
            p(recv_to_notify, 99),
            "< 100 ms",
            common.percentile(recv_to_notify, 99) < 100,
        ),
        Check(
            "webhook response time p50 / p99 (all requests)", f"{p(resp_ms, 50)} / {p(resp_ms, 99)}", "", None
        ),
    ]
    return common.print_table(
        f"bench/latency.py: webhook -> approval request at {args.rate:.0f} req/s for {args.duration:.0f} s",
        checks,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=200.0, help="webhook requests per second (default 200)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds (default 20)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before measuring (default 2)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        asyncio.run(client_main(args.client, args.rate, args.duration, args.warmup))
        return 0
    from daemon.cli.serve import _loop_factory  # the event loop `runbookd serve` runs on

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        passed = runner.run(serve_and_measure(args))
    return common.finish(passed, args.strict)


if __name__ == "__main__":
    sys.exit(main())
