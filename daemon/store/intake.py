"""The SQLite inbox's writer, seen from the daemon: a child process (``intake_child``) with a connection
of its own, to which a batch of notifications is handed in one pipe write and which answers once the
batch is committed and fsynced.

Why a process: a thread doing the same had to take the GIL back from the busy event loop to answer, and
on a 2-vCPU node that wait halved the webhook rate (bench/README.md, "The inbox writer as a process").
A process answers on a pipe the event loop reads like any socket.

One batch at a time: the caller holds the store's lock until the answer, so the engine's own connection
never writes beside this one (SQLite has one writer). The process starts with the first batch, is
started again after it ends unexpectedly (that batch is a 503: Alertmanager retries), is killed when it
does not answer within ``busy_timeout`` plus ``_ANSWER_MARGIN`` (a 503 too, not a store held for ever),
and ends when its stdin is closed (``close``, or the daemon's death). It does not write a batch that
arrives after its daemon died: nobody could acknowledge it. Close the store before its event loop: a
writer whose loop is gone can only be killed.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
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

_CHILD = intake_child.__file__
_STOP_TIMEOUT = 10.0
"""Longest ``close`` waits for the process to finish its batch and exit before killing it."""
_ANSWER_MARGIN = 10.0
"""A batch's answer is waited for ``busy_timeout`` (SQLite's own wait for the file) plus this long (the
fsync); after that the process is killed and the batch is a 503."""
_KILL_WAIT = 5.0
"""How long a killed process is waited for: one stuck in an fsync ends only when the fsync returns."""
_PIPES_WAIT = 1.0
"""How long ``close`` waits, once the process has ended, for asyncio to close its pipes."""


class IntakeWriter:
    def __init__(self, path: Path, busy_timeout: float) -> None:
        self._path, self._busy_timeout = path, busy_timeout
        self._answer_timeout = busy_timeout + _ANSWER_MARGIN
        self._child: _Child | None = None
        self._ending: set[_Child] = set()
        """Replaced processes whose end asyncio has not finished seeing (killed, or abandoned): waited for
        by ``close``, so no pipe of theirs outlives the event loop."""
        self._finalizer: weakref.finalize[[], IntakeWriter] | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The writer process's pid while it runs (tests, diagnostics)."""
        child = self._child
        return None if child is None or child.ended else child.pid

    async def append(self, rows: Sequence[InboxRow]) -> int:
        """Store ``rows``; the first receipt once committed. Called holding the store's lock, which stays
        held until the process has answered (or was stopped for not answering) even if the caller is
        cancelled: the engine's connection must not find the file locked by this one."""
        if self._closed:
            raise StoreUnavailable("the state store is closed")
        child = await self._running()
        done = child.send(rows)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._answer_timeout
        cancelled = False
        while not done.done():  # however often the caller is cancelled, the lock waits for the answer
            remaining = deadline - loop.time()
            if remaining <= 0:  # a disk that no longer answers fsync, a frozen process: 503, not a hang
                await child.kill(
                    f"the intake writer process did not answer within {self._answer_timeout:g} s; stopped it"
                )
                break
            try:
                await asyncio.wait([done], timeout=remaining)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            if not done.cancelled():
                done.exception()  # read: its error is nobody's now (no "never retrieved" in the log)
            raise asyncio.CancelledError
        return done.result()

    async def _running(self) -> _Child:
        if self._child is not None and not self._child.ended:
            return self._child
        if self._child is not None and not self._child.closed.done():
            old = self._child
            self._ending.add(old)
            old.closed.add_done_callback(lambda _: self._ending.discard(old))
        loop = asyncio.get_running_loop()
        # The path as bytes: the child decodes its arguments in its own (UTF-8) mode, whatever our locale.
        argv = [sys.executable, "-I", "-S", _CHILD, os.fsencode(self._path), repr(self._busy_timeout)]
        try:
            _, child = await loop.subprocess_exec(
                _Child,
                *argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                env=_child_env(),
                # Its own session: a Ctrl-C or SIGTERM to our process group never reaches it, not even
                # while its interpreter starts (before it ignores them).
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:  # no process can be started now: 503
            raise StoreUnavailable(f"cannot start the intake writer process: {exc}") from exc
        # A store dropped without close() still ends its process (which exits when its stdin closes).
        if self._finalizer is not None:
            self._finalizer.detach()  # the previous process has ended: nothing to keep it for
        self._finalizer = weakref.finalize(self, child.abandon)
        self._child = child
        return child

    async def close(self) -> None:
        """Called holding the store's lock: no batch is in progress or can start after this. The process
        is told to end (its stdin closes) and waited for."""
        self._closed = True
        child, self._child = self._child, None
        if self._finalizer is not None:
            self._finalizer.detach()
        if child is not None:
            await child.stop(_STOP_TIMEOUT)
        for old in list(self._ending):
            await old.stop(_KILL_WAIT)


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
        self.closed = asyncio.get_running_loop().create_future()
        """Done once the process has ended and its pipes are closed (asyncio's ``connection_lost``)."""
        self.ended = False
        self.pid = 0
        self._reason = ""
        """Why the process was killed, for the batches it leaves unanswered."""

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
        frame = intake_child.encode_batch(rows)  # may raise (a value marshal cannot take): nothing queued
        self._waiting.append(done)
        self._stdin.write(frame)
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
        self._fail_waiting(
            self._reason or f"the intake writer process ended (exit status {status}) before answering"
        )
        if not self._exited.done():
            self._exited.set_result(None)
        if self._transport is not None:
            self._transport.close()  # its pipes: nothing more comes from a process that has ended

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail_waiting(self, reason: str) -> None:
        while self._waiting:
            done = self._waiting.popleft()
            if not done.done():
                done.set_exception(StoreUnavailable(reason))

    def abandon(self) -> None:
        """End the process without waiting: close its stdin, so it exits after any batch in progress."""
        self.ended = True
        if self._stdin is None:
            return
        try:
            self._stdin.close()
        except RuntimeError:  # its event loop is closed (the store was not closed first): nobody waits
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def kill(self, reason: str) -> None:
        """Kill the process and wait for it to end (at most ``_KILL_WAIT``: one stuck in an fsync ends only
        when the fsync returns); every batch waiting then fails with ``reason`` (a 503)."""
        self.ended = True
        self._reason = reason
        if self._transport is not None:
            with suppress(ProcessLookupError):
                self._transport.kill()
        await self._exit(_KILL_WAIT)
        self._fail_waiting(reason)

    async def stop(self, timeout: float) -> None:
        self.abandon()
        try:
            await self._exit(timeout)
        finally:
            if self._transport is not None:
                self._transport.close()  # kills it if it is still running
        # Its pipes close a loop iteration or two after it ends: a loop closed before that finds them open.
        with suppress(TimeoutError):
            async with asyncio.timeout(_PIPES_WAIT):
                await asyncio.shield(self.closed)

    async def _exit(self, timeout: float) -> None:
        """Wait for the process to end, at most ``timeout``."""
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._exited)
