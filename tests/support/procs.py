"""Start, wait for, and reliably stop external processes in tests.

``ManagedProcess`` runs one command in its own session (process group) with stdout+stderr appended to a log
file, can wait until an HTTP URL answers, and stops with SIGTERM then SIGKILL after a grace period.
``ServerProcess`` adds a loopback port (picked free, retried on "address already in use") and a ready path.
Every started process is also killed at interpreter exit as a last resort; fixtures must still stop them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from . import httpclient
from .ports import LOOPBACK, free_port

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class ProcessStartError(RuntimeError):
    """A process exited early or did not become ready in time; the message ends with its log tail."""


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without proxy settings, with loopback exempted from any proxy, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    if extra:
        env.update(extra)
    return env


_LIVE: set[ManagedProcess] = set()


@atexit.register
def _kill_leftovers() -> None:  # pragma: no cover - last resort only
    for p in list(_LIVE):
        with contextlib.suppress(Exception):
            p.kill9()


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_url: str | None = None,
        ready_status: int = 200,
        ready_timeout: float = 30.0,
        stop_grace: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else base_env()
        self.cwd = cwd
        self.ready_url = ready_url
        self.ready_status = ready_status
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.startup_seconds: float | None = None  # how long the last start took until ready

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> Self:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # own process group: signals reach children, Ctrl-C does not
            )
        _LIVE.add(self)
        if self.ready_url:
            self.wait_ready(self.ready_url, self.ready_timeout)
        self.startup_seconds = time.monotonic() - t0
        return self

    def wait_ready(self, url: str, timeout: float | None = None) -> None:
        """Poll ``url`` until it answers ``ready_status``; on early exit or timeout stop and raise."""
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        last = "no answer yet"
        while True:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                self._forget()
                raise ProcessStartError(f"{self.name} exited with {rc} before {url} answered\n{self._tail()}")
            try:
                r = httpclient.get(url, timeout=1.0)
                if r.status == self.ready_status:
                    return
                last = f"HTTP {r.status}: {r.text[:200]}"
            except OSError as e:
                last = repr(e)
            if time.monotonic() > deadline:
                self.stop()
                raise ProcessStartError(
                    f"{self.name}: {url} not ready after {timeout}s (last: {last})\n{self._tail()}"
                )
            time.sleep(0.05)

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; return the exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                p.wait(self.stop_grace if grace is None else grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                p.wait()
        self._forget()
        return p.returncode

    def kill9(self) -> int | None:
        """SIGKILL the process group at once (a crash), and reap it."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            self._signal(signal.SIGKILL)
            p.wait()
        self._forget()
        return p.returncode

    def restart(self) -> Self:
        """Graceful stop, then start again with the same command line (same port)."""
        self.stop()
        return self.start()

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- internals -------------------------------------------------------------------------------------------
    def _tail(self) -> str:
        return f"--- last lines of {self.log_path} ---\n{self.log_tail()}"

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)  # pgid == pid thanks to start_new_session
        except ProcessLookupError:
            pass
        except PermissionError:
            self.proc.send_signal(sig)

    def _forget(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait()
        _LIVE.discard(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid} log={self.log_path}>"


class ServerProcess(ManagedProcess):
    """A server listening on ``127.0.0.1:port``. Subclasses implement ``build_argv()`` from ``self.port``.

    If no port was given, a free one is picked, and on a first start that fails with "address already in use"
    another port is tried (up to 3 times). ``restart()`` keeps the port.
    """

    ready_path = "/"
    log_name = "server.log"

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
        stop_grace: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._auto_port = port is None
        self.port = port if port is not None else free_port()
        super().__init__(
            name,
            [],
            log_path=self.workdir / self.log_name,
            env=env,
            cwd=self.workdir,
            ready_timeout=ready_timeout,
            stop_grace=stop_grace,
        )

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` (for scrape targets, --listen flags)."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def build_argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        attempts = 3 if (self._auto_port and self.starts == 0) else 1
        for attempt in range(attempts):
            self.argv = [str(a) for a in self.build_argv()]
            self.ready_url = self.url + self.ready_path
            try:
                return super().start()
            except ProcessStartError as e:
                if attempt + 1 < attempts and "address already in use" in str(e).lower():
                    self.port = free_port()
                    continue
                raise
        raise AssertionError("unreachable")
