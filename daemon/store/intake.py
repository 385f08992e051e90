"""The SQLite inbox's writer, seen from the daemon: a child process (``intake_child``) with a connection
of its own, to which a batch of notifications is handed in one pipe write and which answers once the
batch is committed and fsynced.

Why a process: a thread doing the same had to take the GIL back from the busy event loop to answer, and
on a 2-vCPU node that wait halved the webhook rate (bench/README.md, "The inbox writer as a process").
A process answers on a pipe the event loop reads like any socket.

One batch at a time: the caller holds the store's lock until the answer, so the engine's own connection
never writes beside this one (SQLite has one writer). The process starts with the first batch, is
started again after it ends unexpectedly (that batch is a 503: Alertmanager retries), and ends when its
stdin is closed (``close``, or the daemon's death). It does not write a batch that arrives after its
daemon died: nobody could acknowledge it.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import weakref
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import cast

from daemon.errors import StoreUnavailable
from daemon.store import intake_child
from daemon.store.base import InboxRow

_CHILD = Path(intake_child.__file__)
_STOP_TIMEOUT = 10.0
"""Longest ``close`` waits for the process to finish its batch and exit before killing it."""


class IntakeWriter:
    def __init__(self, path: Path, busy_timeout: float) -> None:
        self._path, self._busy_timeout = path, busy_timeout
        self._child: _Child | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The writer process's pid while it runs (tests, diagnostics)."""
        child = self._child
        return None if child is None or child.ended else child.pid

    async def append(self, rows: Sequence[InboxRow]) -> int:
        """Store ``rows``; the first receipt once committed. Called holding the store's lock, which stays
        held until the process has answered even if the caller is cancelled: the engine's connection
        must not find the file locked by this one."""
        if self._closed:
            raise StoreUnavailable("the state store is closed")
        child = await self._running()
        done = child.send(rows)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            while not done.done():  # however often the caller is cancelled, the lock waits for the answer
                with suppress(asyncio.CancelledError):
                    await asyncio.wait([done])
            raise

    async def _running(self) -> _Child:
        if self._child is not None and not self._child.ended:
            return self._child
        loop = asyncio.get_running_loop()
        argv = [sys.executable, "-I", "-S", str(_CHILD), str(self._path), repr(self._busy_timeout)]
        try:
            _, child = await loop.subprocess_exec(
                _Child, *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=_child_env()
            )
        except (OSError, subprocess.SubprocessError) as exc:  # no process can be started now: 503
            raise StoreUnavailable(f"cannot start the intake writer process: {exc}") from exc
        # A store dropped without close() still ends its process (which exits when its stdin closes).
        weakref.finalize(self, child.abandon)
        self._child = child
        return child

    async def close(self) -> None:
        """Called holding the store's lock: no batch is in progress or can start after this. The process
        is told to end (its stdin closes) and waited for."""
        self._closed = True
        child, self._child = self._child, None
        if child is not None:
            await child.stop(_STOP_TIMEOUT)


def _child_env() -> dict[str, str]:
    """The daemon's environment may hold secrets (tokens given as variables): the writer gets only where
    SQLite may put temporary files."""
    return {k: v for k, v in os.environ.items() if k in ("TMPDIR", "SQLITE_TMPDIR")}


class _Child(asyncio.SubprocessProtocol):
    """The pipes of one writer process: batches out, answers in, in order."""

    def __init__(self) -> None:
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._waiting: collections.deque[asyncio.Future[int]] = collections.deque()
        self._buffer = bytearray()
        self._exited = asyncio.get_running_loop().create_future()
        self.ended = False
        self.pid = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have these methods without subclassing asyncio's classes: no isinstance.
        self._transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self._transport.get_pid()
        self._stdin = cast(asyncio.WriteTransport, self._transport.get_pipe_transport(0))

    def send(self, rows: Sequence[InboxRow]) -> asyncio.Future[int]:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self.ended or self._stdin is None or self._stdin.is_closing():
            done.set_exception(StoreUnavailable("the intake writer process has ended"))
            return done
        self._waiting.append(done)
        self._stdin.write(intake_child.encode_batch(rows))
        return done

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd != 1:
            return
        self._buffer += data
        head = intake_child.ANSWER.size
        while len(self._buffer) >= head:
            kind, value = intake_child.ANSWER.unpack_from(self._buffer)
            if kind == intake_child.OK:
                del self._buffer[:head]
                self._settle(value, None)
                continue
            if len(self._buffer) < head + value:
                return
            message = self._buffer[head : head + value].decode("utf-8", "replace")
            del self._buffer[: head + value]
            self._settle(0, StoreUnavailable(f"state store could not store the notifications: {message}"))

    def _settle(self, first: int, error: StoreUnavailable | None) -> None:
        if not self._waiting:  # an answer nobody asked for: the process is not ours to trust any more
            self.abandon()
            return
        done = self._waiting.popleft()
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(first)

    def process_exited(self) -> None:
        self.ended = True
        status = self._transport.get_returncode() if self._transport is not None else None
        while self._waiting:
            done = self._waiting.popleft()
            if not done.done():
                done.set_exception(
                    StoreUnavailable(
                        f"the intake writer process ended (exit status {status}) before answering"
                    )
                )
        if not self._exited.done():
            self._exited.set_result(None)
        if self._transport is not None:
            self._transport.close()  # its pipes: nothing more comes from a process that has ended

    def abandon(self) -> None:
        """End the process without waiting: close its stdin, so it exits after any batch in progress."""
        self.ended = True
        if self._stdin is not None:
            with suppress(RuntimeError):  # the loop is closed: the process saw its pipe close anyway
                self._stdin.close()

    async def stop(self, timeout: float) -> None:
        self.abandon()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._exited)
        except TimeoutError:
            pass
        finally:
            if self._transport is not None:
                self._transport.close()  # kills it if it is still running
