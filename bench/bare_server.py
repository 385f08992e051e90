"""The baseline of bench/ingest.py: a bare aiohttp handler that only parses the webhook JSON and answers 200.

Run by ingest.py as ``python bench/bare_server.py PORT`` (its own process, like runbookd and Alertmanager).
Served the way ``runbookd serve`` serves: AppRunner + TCPSite, no access log, same body size limit.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from aiohttp import web


async def webhook(request: web.Request) -> web.Response:
    data = json.loads(await request.read())
    return web.json_response({"status": "ok", "alerts": len(data.get("alerts", ()))})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def main(port: int) -> None:
    app = web.Application(client_max_size=1_048_576)
    app.router.add_post("/api/v1/alertmanager", webhook)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    # The same event loop runbookd serves with (uvloop where installed), so the comparison is like for like.
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(int(sys.argv[1])))
