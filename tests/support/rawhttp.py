"""Raw HTTP/1.1 over a socket, for requests no well-behaved client would send: broken encodings, bad
chunking, bodies cut short or sent slowly, header bytes that are not UTF-8."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawAnswer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def head(method: str, path: str, headers: dict[str, str | bytes] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        lines.append(k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()))
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def send(url: str, raw: bytes, *, timeout: float = 20.0) -> RawAnswer:
    """Send ``raw`` bytes and read one answer."""
    reader, writer = await open_partial(url, raw)
    try:
        return await read_answer(reader, timeout)
    finally:
        writer.close()


async def open_partial(url: str, raw: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection and send ``raw`` (headers, part of a body), leaving it open."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(raw)
    await writer.drain()
    return reader, writer


async def read_answer(reader: asyncio.StreamReader, timeout: float = 20.0) -> RawAnswer:
    async with asyncio.timeout(timeout):
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = await reader.readexactly(length)
    return RawAnswer(int(status_line.split()[1]), body)


async def until(probe: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Yield to the loop until ``probe()`` is truthy (the in-process server runs on the same loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not probe():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
