"""``runbookd serve``: load and check everything, then run until SIGTERM/SIGINT, draining on the way out."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import structlog
from aiohttp import web

from daemon import logs
from daemon.actions.registry import default_registry
from daemon.config import Config, load_config, parse_config, resolve_secrets
from daemon.errors import ConfigError, StoreUnavailable
from daemon.runbooks.loader import load_all
from daemon.server.app import app_runner, create_app
from daemon.store.lock import StateLock, StateLocked


def _overrides(config: Config, listen: str | None, state: Path | None, dry_run: bool) -> Config:
    data = config.model_dump()
    if listen:
        data["server"]["listen"] = listen
    if state:
        data["state"]["path"] = state
    if dry_run:
        data["dry_run"] = True
    # One line naming the flag (exit 2), never a traceback: `--listen bogus` is a typo, not a crash.
    return parse_config(data, "--listen/--state/--dry-run with the config")


def serve(config_path: Path, *, listen: str | None, state: Path | None, dry_run: bool) -> int:
    config = _overrides(load_config(config_path), listen, state, dry_run)
    logs.configure(config.log.format, config.log.level)
    secrets = resolve_secrets(config)
    logs.mask_values(secrets.values())  # in any line, whoever logs it (aiohttp quotes raw requests)
    runbooks = load_all(config.runbooks.paths, default_registry(config.plugins), list(config.approvers))
    try:
        lock = _state_lock(config)
    except StateLocked as exc:
        print(f"runbookd: {exc}", file=sys.stderr)
        return 2
    app = create_app(config, secrets, runbooks)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_run(app, config))
    except ConfigError:
        raise
    except StoreUnavailable as exc:  # the store cannot be opened or migrated: nothing can be served
        print(f"runbookd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"runbookd: cannot listen on {config.server.listen}: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        if lock is not None:
            lock.release()
    return 0


def _state_lock(config: Config) -> StateLock | None:
    """SQLite has one writer: hold ``<state>.lock`` for the process's life (PostgreSQL elects a leader)."""
    if getattr(config.state, "url", None):
        return None
    return StateLock.acquire(config.state.path)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (Linux, macOS): about a third less CPU per webhook request, mostly in
    socket reads and writes; the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


GC_THRESHOLDS = (20_000, 20, 50)
"""Collect the youngest generation every 20,000 allocations, not 700: a routing batch allocates ~100,000
objects, none in cycles, and each young collection also walks what the intake keeps for routing
(bench/routing.py: -15% routing CPU)."""


async def _run(app: web.Application, config: Config) -> None:
    log = structlog.get_logger("runbookd")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = app_runner(app, config)
    await runner.setup()
    # Everything loaded so far lives as long as the process: keep it out of the cyclic GC's full passes,
    # which otherwise stall the loop for tens of milliseconds walking the start-up heap.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port)
        await site.start()
        log.info("runbookd.listening", listen=config.server.listen, dry_run=config.dry_run)
        await stop.wait()
        log.info("runbookd.stopping")
    finally:
        await runner.cleanup()
